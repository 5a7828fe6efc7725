import { randomUUID } from 'node:crypto';
import { createCryptoRng } from '@veil/privacy';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { FitFailure, Rng, StrategyDefinition, StrategyState } from '../aggregation/strategy.js';
import { decodeStrategyState, encodeStrategyState } from '../aggregation/strategy-state.js';
import { checkFitConfig, createStrategyRegistry, type StrategyRegistry } from '../aggregation/registry.js';
import { committeeRounds, encryptedRounds, plaintextRounds, withPoissonSampling, type RoundStrategy } from '../aggregation/round-strategy.js';
import { checkCommitteeUpload, type CommitteeCollect, type CommitteeTask } from '../aggregation/committee-aggregator.js';
import type { BlobStore } from '../blobs/blob-store.js';
import { modelBlobKey, strategyStateBlobKey, updateBlobDir } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import type { Client, CommitteeSettings, ModelEncoding, Round, RoundSummary, Task, TaskEncryption, TaskSettings, TaskStatus, UpdateEncoding } from './model.js';
import type { FederationStore, RecordSubmissionResult } from './ports.js';
import { assertFinite, resolveTaskSettings, validateWeightSpecs, type TaskInput } from './task-settings.js';
import { maxUpdateBytes, updateValueCount } from './sizes.js';
import { createModelCache, type ModelCache, type StoredModel } from './model-cache.js';
import { systemClock, systemTimer, type Clock, type Timer } from './clock.js';
import { createMutex, type Mutex } from './mutex.js';
import { checkRoundBudget, decryptionLedgerEntry, roundLedgerEntry } from '../privacy/budget.js';
import { completeDistributedSettings, type PrivacySettings } from '../privacy/settings.js';
import type { LedgerEntry } from '../privacy/ledger.js';
import { float32ToBytes as encodeFloat32 } from '@veil/protocol/codec';
import {
  CryptoError,
  checkHeadroom,
  createHeContext,
  descriptorHash as hashDescriptor,
  encodeDescriptor,
  validateDescriptor,
  verifyDescriptorSignature,
  type TaskDescriptor,
  parseCoordinatorKeyMaterial,
  serializeKeyMaterial,
  type CoordinatorKeyMaterial,
  type HeContext,
} from '@veil/crypto';
import {
  checkEncryptedUpdate,
  checkPlaintextUpdate,
  payloadError,
  releaseChecked,
  type CheckedUpdate,
  type ModelBlob,
  type RoundAggregator,
  type RoundResult,
} from '../aggregation/round-aggregator.js';

export type { StoredModel } from './model-cache.js';

export type { Clock, Timer } from './clock.js';

export interface RoundEngineOptions {
  store: FederationStore;
  blobs: BlobStore;
  logger: Logger;
  /** Strategies tasks may name besides the built-in ones (`BUILTIN_STRATEGIES`); same name replaces. Default none. */
  strategies?: readonly StrategyDefinition[];
  /** Default `Date.now`. */
  clock?: Clock;
  /** Schedules round deadlines and long-poll timeouts; use with `clock` (e.g. `createFakeTime()`). Default `setTimeout`. */
  timer?: Timer;
  /** Randomness for client selection. Default: a CSPRNG (node:crypto). */
  rng?: Rng;
  /** A client counts as available for selection this long after its last poll, in ms. Default 30 000. */
  presenceTtlMs?: number;
  /**
   * Coordinator key material loaded at start (VEIL_KEYS_DIR): tasks created
   * without explicit encryption settings use it. Public material only.
   */
  defaultKey?: CoordinatorKeyMaterial | null;
  /**
   * Opens a committee task's client to its custodians (issue 11; in production @veil/custodian's
   * committee client with the coordinator's request key, see app.ts). Default none: committee
   * tasks are refused at creation and fail their rounds.
   */
  committee?: CommitteeConnector;
}

/** Connects the engine to a committee task's custodians. */
export interface CommitteeConnector {
  open(descriptor: Uint8Array, descriptorSignature: Uint8Array): { collect: CommitteeCollect; close(): Promise<void> };
}

/** Committee mode requested at task creation: the authority-signed descriptor (base64 canonical bytes, or the object). */
export interface CommitteeInput {
  descriptor: unknown;
  descriptorSignature: unknown;
}

/** Encryption requested at task creation. */
export type EncryptionInput =
  | { mode: 'none' }
  | { mode: 'bfv'; keyId?: string; coordinatorKey?: unknown };

/** What a device gets when it asks for work. */
export type AssignmentResult =
  | {
      kind: 'assignment';
      round: Round;
      model: { version: number; sha256: string; sizeBytes: number };
      maxUpdateBytes: number;
      maxExampleCount: number;
      updateEncoding: UpdateEncoding;
      privacy: PrivacySettings | null;
    }
  | { kind: 'idle'; taskStatus: TaskStatus; currentRound: number }
  | { kind: 'ended'; taskStatus: TaskStatus; reason: string; finalModelVersion: number };

export interface UpdateHeaderInput {
  roundNumber: number;
  modelVersion: number;
  exampleCount: number;
  /** Local examples the device reports it trained on (not a weight); null when not reported. */
  trainedExamples?: number | null;
  encoding: UpdateEncoding | 'unspecified';
  payloadSizeBytes: number;
  /** Hex SHA-256 of the payload as the client computed it. */
  sha256: string;
}

export interface EngineEvents {
  'round-opened': [{ taskId: string; round: Round }];
  'round-collecting': [{ taskId: string; round: Round }];
  'update-accepted': [{ taskId: string; roundNumber: number; clientId: string; receivedCount: number; targetCount: number }];
  'round-closed': [{ taskId: string; round: Round }];
  'round-failed': [{ taskId: string; round: Round }];
  'task-ended': [{ taskId: string; status: TaskStatus; reason: string | null }];
  /** A device received a whole model version (the dashboard's live "downloaded" count). */
  'model-downloaded': [{ taskId: string; clientId: string; modelVersion: number }];
}

/** Per-task state held in memory; always rebuildable from the store and the blob store. */
interface TaskRuntime {
  task: Task;
  mutex: Mutex;
  round: Round | null;
  /** Participants of the open round. */
  selected: Set<string>;
  /** Clients whose accepted update is folded into `aggregator`, with that update's SHA-256. */
  folded: Map<string, string>;
  aggregator: RoundAggregator | null;
  /** Cancels the open round's deadline, or null. */
  deadlineTimer: (() => void) | null;
  presence: Map<string, number>;
  /** Clients with an open long-poll (count of their open polls): present whatever their last stamp. */
  polling: Map<string, number>;
  /** A selection is queued on the mutex and has not started yet (selections are coalesced). */
  selectQueued: boolean;
  /** Submissions that arrived before the deadline and are still validating/storing outside the lock. */
  inflight: Set<Promise<unknown>>;
  waiters: Set<() => void>;
  model: { version: number; bytes: Uint8Array; encoding: ModelEncoding; sha256: string; sizeBytes: number } | null;
  /** Homomorphic-encryption context of an encrypted task (public parameters, no key). */
  he: HeContext | null;
  /** The task's strategy with its mode's wrappers (made on first use). */
  strategy: RoundStrategy | null;
  /** The strategy state that goes with model `version` (read from the blob store on first use). */
  strategyState: { version: number; state: StrategyState | null } | null;
  /** A committee task's descriptor and custodian client (made on first use). */
  committee: { task: CommitteeTask; close(): Promise<void> } | null;
  /** Validated, stored updates waiting to be recorded by the next group commit (`flushRecords`). */
  pendingRecords: PendingRecord[];
}

/** An update ready to be recorded: checked and stored outside the lock. */
interface PendingRecord {
  client: Client;
  header: UpdateHeaderInput;
  arrivedAt: number;
  /** The round the update was checked against before the lock. */
  roundId: string;
  /** SHA-256 of the payload as sent. */
  sha256: string;
  update: CheckedUpdate;
  key: string;
  blobSha256: string;
  sizeBytes: number;
  log: Logger;
  done: (outcome: { ok: true; acceptedCount: number } | { ok: false; error: unknown; recorded: boolean }) => void;
}



/**
 * The round engine: runs federated rounds for every task as a persisted state
 * machine (SELECTING -> COLLECTING -> AGGREGATING -> CLOSED, or FAILED with a
 * reason). All state changes of a task are serialized by a per-task mutex and
 * written to the store before they take effect; after a crash `start()`
 * rebuilds the in-memory state from the store and the blob store, so an
 * accepted update is never lost nor counted twice.
 */
export class RoundEngine extends EventEmitter<EngineEvents> {
  private readonly store: FederationStore;
  private readonly blobs: BlobStore;
  private readonly log: Logger;
  private readonly strategies: StrategyRegistry;
  private readonly clock: Clock;
  private readonly timer: Timer;
  private readonly rng: Rng;
  private readonly presenceTtlMs: number;
  private readonly defaultKey: CoordinatorKeyMaterial | null;
  private readonly committeeConnector: CommitteeConnector | null;
  private readonly runtimes = new Map<string, TaskRuntime>();
  /** Recently read model versions, besides each task's current one (`rt.model`). */
  private readonly models: ModelCache;
  private closed = false;

  constructor(options: RoundEngineOptions) {
    super();
    this.store = options.store;
    this.blobs = options.blobs;
    this.log = options.logger.child({ component: 'round-engine' });
    this.strategies = createStrategyRegistry(options.strategies);
    this.models = createModelCache({ store: this.store, blobs: this.blobs });
    this.clock = options.clock ?? systemClock;
    this.timer = options.timer ?? systemTimer;
    this.rng = options.rng ?? createCryptoRng();
    this.presenceTtlMs = options.presenceTtlMs ?? 30_000;
    this.defaultKey = options.defaultKey ?? null;
    this.committeeConnector = options.committee ?? null;
    if (!(this.presenceTtlMs > 0)) throw new RangeError('presenceTtlMs must be positive');
  }

  /** Told by the transport when a device has received a whole model version; emits `model-downloaded`. */
  noteModelDownloaded(download: { taskId: string; clientId: string; modelVersion: number }): void {
    this.emit('model-downloaded', download);
  }

  /** The engine's clock (e.g. to stamp when an upload arrived). */
  now(): number {
    return this.clock.now();
  }

  /** Loads every task and resumes the running ones where they stopped. */
  async start(): Promise<void> {
    for (const task of await this.store.listTasks()) {
      const rt = this.runtimeFor(task);
      // A paused task's open round goes on as it would have without the restart (it finishes; no new one opens).
      if (task.status !== 'RUNNING' && task.status !== 'PAUSED') continue;
      // One bad round or task never stops the others from being served: it is failed instead.
      await rt.mutex.run(() => this.resume(rt).catch((error: unknown) => this.recoverTask(rt, error)));
    }
  }

  /** Stops timers and wakes every waiting long-poll. */
  async close(): Promise<void> {
    this.closed = true;
    for (const rt of this.runtimes.values()) {
      rt.deadlineTimer?.();
      rt.deadlineTimer = null;
      this.wake(rt);
      await rt.mutex.run(async () => {
        rt.aggregator?.dispose();
        rt.aggregator = null;
        rt.he?.dispose();
        rt.he = null;
        await rt.committee?.close();
        rt.committee = null;
      });
    }
  }

  // ------------------------------------------------------------------ tasks

  async createTask(
    input: TaskInput & { encryption?: EncryptionInput; strategy?: unknown; committee?: CommitteeInput },
    model: { topology: Record<string, unknown>; weightSpecs: unknown; weights: Float32Array },
  ): Promise<Task> {
    if (typeof input.name !== 'string' || input.name.trim() === '' || input.name.length > 200) {
      throw new VeilError('invalid_argument', 'name must be 1 to 200 characters');
    }
    const settings = resolveTaskSettings(input);
    const { specs, parameterCount } = validateWeightSpecs(model.weightSpecs);
    if (typeof model.topology !== 'object' || model.topology === null || Array.isArray(model.topology)) {
      throw new VeilError('invalid_argument', 'model.topology must be a TensorFlow.js layers topology object');
    }
    if (model.weights.length !== parameterCount) {
      throw new VeilError(
        'invalid_argument',
        `model weights have ${model.weights.length} values but weightSpecs describe ${parameterCount}`,
      );
    }
    assertFinite(model.weights, 'model weights');
    const committee = input.committee === undefined ? null : this.resolveCommittee(input.committee, input.encryption);
    const { encryption, plainModulus } =
      committee === null ? await this.resolveEncryption(input.encryption, settings) : { encryption: null, plainModulus: null };
    if (committee !== null) {
      if (input.updateBound !== undefined) throw new VeilError('invalid_argument', "updateBound applies to plaintext tasks; committee updates are clipped by the descriptor's encoding");
      if (settings.privacy !== null && settings.privacy.mode !== 'local') {
        throw new VeilError('invalid_argument', 'distributed differential privacy is not yet available in committee mode (local DP is)');
      }
      const selection = settings.selection;
      const most = selection.kind === 'count' ? selection.count : selection.kind === 'poisson' ? selection.maxCount : null;
      if (most === null) throw new VeilError('invalid_argument', 'committee tasks need clientsPerRound (a fixed count) so |D| stays within the descriptor');
      if (most > committee.descriptor.maxDevices) {
        throw new VeilError('invalid_argument', `clientsPerRound ${most} exceeds the descriptor's maxDevices ${committee.descriptor.maxDevices}`);
      }
      if (settings.minClients < committee.descriptor.minDevices) {
        throw new VeilError('invalid_argument', `minClients ${settings.minClients} is below the descriptor's minDevices ${committee.descriptor.minDevices}: such rounds could never be decrypted`);
      }
      if (settings.rounds > committee.descriptor.maxRounds) {
        throw new VeilError('invalid_argument', `rounds ${settings.rounds} exceeds the descriptor's maxRounds ${committee.descriptor.maxRounds}`);
      }
      if (await this.store.getTask(committee.descriptor.taskId) !== null) {
        throw new VeilError('already_exists', `task ${committee.descriptor.taskId} already exists; a descriptor names exactly one task`);
      }
      settings.updateEncoding = 'committee-v1';
      settings.updateBound = null;
      settings.committee = committee.settings;
    }
    if (encryption !== null) {
      if (input.updateBound !== undefined) {
        throw new VeilError('invalid_argument', 'updateBound applies to plaintext tasks; encrypted updates are clipped by the key\'s quantisation (clipMaxAbs)');
      }
      settings.updateEncoding = 'bfv-v1';
      settings.updateBound = null;
    }
    // DP tasks select by Poisson sampling, capped at maxCount: the most updates one sum can hold.
    if (settings.privacy !== null && settings.selection.kind === 'poisson') {
      completeDistributedSettings(settings.privacy, { parameterCount, plainModulus, maxClients: settings.selection.maxCount });
    }
    const strategy = this.strategies.resolve(input.strategy, {
      parameterCount,
      encrypted: encryption !== null || committee !== null,
      privacy: settings.privacy?.mode ?? null,
      selection: settings.selection,
      minClients: settings.minClients,
    });
    settings.strategy = { name: strategy.name, params: strategy.params };
    // A committee task's id is the one its descriptor (and every device certificate) names.
    const id = committee?.descriptor.taskId ?? randomUUID();
    const ref = await this.blobs.put(modelBlobKey(id, 0), encodeFloat32(model.weights));
    let task: Task;
    try {
      task = await this.store.createTask({
        id,
        name: input.name.trim(),
        settings,
        modelTopology: model.topology,
        weightSpecs: specs,
        parameterCount,
        encryption,
        initialModel: { sha256: ref.sha256, sizeBytes: ref.sizeBytes, encoding: 'float32-le' },
      });
    } catch (error) {
      // No orphan blob: the initial model goes unless a task of this id exists (a repeated committee descriptor).
      if ((await this.store.getTask(id).catch(() => null)) === null) {
        await this.blobs.delete(modelBlobKey(id, 0)).catch((err) => this.log.warn({ err, taskId: id }, 'could not delete the initial model of a failed task creation'));
      }
      throw error;
    }
    const rt = this.runtimeFor(task);
    rt.model = { version: 0, bytes: encodeFloat32(model.weights), encoding: 'float32-le', sha256: ref.sha256, sizeBytes: ref.sizeBytes };
    this.log.info({ taskId: id, parameterCount, rounds: settings.rounds, encrypted: encryption !== null, keyId: encryption?.keyId }, 'task created');
    return task;
  }

  /**
   * Turns the requested encryption into the task's settings, refusing secret
   * key material, keys already used by another task, and settings whose sums
   * could overflow the plaintext modulus or exhaust the noise budget.
   */
  private async resolveEncryption(
    input: EncryptionInput | undefined,
    settings: TaskSettings,
  ): Promise<{ encryption: TaskEncryption | null; plainModulus: number | null }> {
    if (input?.mode === 'none' || (input === undefined && this.defaultKey === null)) return { encryption: null, plainModulus: null };
    let material: CoordinatorKeyMaterial;
    if (input === undefined || (input.coordinatorKey === undefined && input.keyId === undefined)) {
      if (this.defaultKey === null) throw new VeilError('invalid_argument', 'encryption needs a coordinatorKey (no key is configured in VEIL_KEYS_DIR)');
      material = this.defaultKey;
    } else if (input.coordinatorKey !== undefined) {
      try {
        const bytes = Buffer.from(typeof input.coordinatorKey === 'string' ? input.coordinatorKey : JSON.stringify(input.coordinatorKey));
        material = parseCoordinatorKeyMaterial(bytes);
      } catch (error) {
        throw payloadError(error);
      }
    } else {
      if (this.defaultKey === null || this.defaultKey.keyId !== input.keyId) {
        throw new VeilError('invalid_argument', `key ${input.keyId} is not configured on this coordinator (VEIL_KEYS_DIR)`);
      }
      material = this.defaultKey;
    }
    const usedBy = await this.store.findTaskByKeyId(material.keyId);
    if (usedBy !== null) throw new VeilError('already_exists', `key ${material.keyId} already belongs to task ${usedBy}; generate a new key bundle`);
    const selection = settings.selection;
    if (selection.kind === 'fraction') {
      throw new VeilError('invalid_argument', 'encrypted tasks need clientsPerRound (a fixed count) so the sum headroom can be checked');
    }
    const maxClients = selection.kind === 'count' ? selection.count : selection.maxCount;
    const ctx = await createHeContext(material);
    const plainModulus = Number(ctx.parameters.plainModulus);
    try {
      checkHeadroom({
        plainModulus: ctx.parameters.plainModulus,
        maxClients,
        weightCap: Math.min(ctx.quantization.weightCap, settings.maxExampleCount),
        clipMaxAbs: ctx.quantization.clipMaxAbs,
        step: ctx.quantization.step,
      });
      if (maxClients > ctx.maxClients) {
        throw new VeilError(
          'invalid_argument',
          `clientsPerRound ${maxClients} exceeds the ${ctx.maxClients} updates one encrypted sum can hold with these parameters`,
        );
      }
    } catch (error) {
      throw error instanceof VeilError ? error : new VeilError('invalid_argument', (error as Error).message, { cause: error });
    } finally {
      ctx.dispose();
    }
    settings.maxExampleCount = Math.min(settings.maxExampleCount, material.quantization.weightCap);
    const encryption: TaskEncryption = {
      keyId: material.keyId,
      fingerprint: material.fingerprint,
      preset: material.preset,
      weightCap: material.quantization.weightCap,
      clipMaxAbs: material.quantization.clipMaxAbs,
      step: material.quantization.step,
      coordinatorKey: Buffer.from(serializeKeyMaterial(material)).toString('utf8'),
    };
    return { encryption, plainModulus };
  }

  /**
   * Checks a committee task's descriptor: canonical bytes, the protocol's structural and security
   * checks (validateDescriptor with the weakest floors: custodians and devices apply their own),
   * the enrolment authority's signature, and that a committee connector is configured.
   */
  private resolveCommittee(input: CommitteeInput, encryption: EncryptionInput | undefined): { descriptor: TaskDescriptor; settings: CommitteeSettings } {
    if (encryption !== undefined && encryption.mode !== 'none') throw new VeilError('invalid_argument', 'a task uses either committee aggregation or a shared key, not both');
    if (this.committeeConnector === null) {
      throw new VeilError('failed_precondition', 'committee tasks need the coordinator request key (VEIL_COMMITTEE_REQUEST_KEY) to ask custodians');
    }
    let descriptor: TaskDescriptor;
    let bytes: Uint8Array;
    try {
      descriptor = (typeof input.descriptor === 'string' ? JSON.parse(Buffer.from(input.descriptor, 'base64').toString('utf8')) : input.descriptor) as TaskDescriptor;
      bytes = encodeDescriptor(descriptor);
    } catch (error) {
      throw new VeilError('invalid_argument', `committee.descriptor is not a task descriptor: ${CryptoError.from(error).message}`);
    }
    try {
      validateDescriptor(descriptor, { minDevices: 1 });
    } catch (error) {
      throw new VeilError('invalid_argument', CryptoError.from(error).message);
    }
    if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/.test(descriptor.taskId)) {
      throw new VeilError('invalid_argument', `the descriptor's taskId must be a lower-case UUID (it becomes the task's id), got ${JSON.stringify(descriptor.taskId)}`);
    }
    if (typeof input.descriptorSignature !== 'string' || !verifyDescriptorSignature({ descriptor, signature: input.descriptorSignature })) {
      throw new VeilError('invalid_argument', 'committee.descriptorSignature is not the enrolment authority\'s signature of the descriptor');
    }
    return { descriptor, settings: { descriptor: Buffer.from(bytes).toString('base64'), descriptorSignature: input.descriptorSignature } };
  }

  /** A committee task's descriptor and custodian client, or null for other tasks. */
  private committeeTask(rt: TaskRuntime): CommitteeTask | null {
    const settings = rt.task.settings.committee;
    if (settings == null) return null;
    if (rt.committee === null) {
      if (this.committeeConnector === null) throw new VeilError('failed_precondition', 'committee task, but no committee connector is configured (VEIL_COMMITTEE_REQUEST_KEY)');
      const bytes = Buffer.from(settings.descriptor, 'base64');
      const descriptor = JSON.parse(bytes.toString('utf8')) as TaskDescriptor;
      const client = this.committeeConnector.open(bytes, Buffer.from(settings.descriptorSignature, 'base64'));
      rt.committee = {
        task: { descriptor, descriptorHash: hashDescriptor(descriptor), collect: client.collect, clock: () => this.clock.now() },
        close: client.close,
      };
    }
    return rt.committee.task;
  }

  private async heContext(rt: TaskRuntime): Promise<HeContext | null> {
    if (rt.task.encryption === null) return null;
    rt.he ??= await createHeContext(parseCoordinatorKeyMaterial(Buffer.from(rt.task.encryption.coordinatorKey)));
    return rt.he;
  }

  /** The task's strategy, wrapped for its mode: Poisson selection for DP, homomorphic sums for encryption. */
  private async roundStrategy(rt: TaskRuntime): Promise<RoundStrategy> {
    if (rt.strategy !== null) return rt.strategy;
    const strategy = withPoissonSampling(this.strategies.create(rt.task.settings.strategy));
    const committee = this.committeeTask(rt);
    if (committee !== null) {
      rt.strategy = committeeRounds(strategy, committee, rt.task.parameterCount);
      return rt.strategy;
    }
    const he = await this.heContext(rt);
    rt.strategy = he === null ? plaintextRounds(strategy, rt.task.settings.updateBound) : encryptedRounds(strategy, he, updateValueCount(rt.task));
    return rt.strategy;
  }

  private async newAggregator(rt: TaskRuntime, round: number): Promise<RoundAggregator> {
    const strategy = await this.roundStrategy(rt);
    return strategy.createRoundAggregator({ round, parameterCount: rt.task.parameterCount, state: await this.loadStrategyState(rt) });
  }

  /** The strategy state stored with the task's current model version (null: none). */
  private async loadStrategyState(rt: TaskRuntime): Promise<StrategyState | null> {
    const version = rt.task.currentModelVersion;
    if (rt.strategyState?.version === version) return rt.strategyState.state;
    const meta = await this.store.getModelVersion(rt.task.id, version);
    if (meta === null) throw new VeilError('internal', `task ${rt.task.id} model version ${version} is missing`);
    const state =
      meta.strategyState === null
        ? null
        : decodeStrategyState(await this.blobs.get({ key: strategyStateBlobKey(rt.task.id, version), sha256: meta.strategyState.sha256 }));
    rt.strategyState = { version, state };
    return state;
  }

  async startTask(taskId: string): Promise<Task> {
    const rt = await this.runtime(taskId);
    return rt.mutex.run(async () => {
      const task = await this.store.setTaskStatus(taskId, 'RUNNING', ['DRAFT', 'PAUSED']);
      if (task === null) {
        throw new VeilError('failed_precondition', `task ${taskId} is ${rt.task.status} and cannot be started`);
      }
      rt.task = task;
      this.log.info({ taskId }, 'task started');
      await this.resume(rt);
      return rt.task;
    });
  }

  async pauseTask(taskId: string): Promise<Task> {
    const rt = await this.runtime(taskId);
    return rt.mutex.run(async () => {
      const task = await this.store.setTaskStatus(taskId, 'PAUSED', ['RUNNING']);
      if (task === null) throw new VeilError('failed_precondition', `task ${taskId} is ${rt.task.status}, not RUNNING`);
      rt.task = task;
      this.log.info({ taskId }, 'task paused');
      this.wake(rt);
      return task;
    });
  }

  async getTask(taskId: string): Promise<Task> {
    return (await this.runtime(taskId)).task;
  }

  // ------------------------------------------------------------------ devices

  /**
   * Long-poll for work: resolves with an assignment as soon as the client is
   * selected, or `idle` after `waitMs`, or `ended` when the task is over.
   */
  async waitForAssignment(client: Client, waitMs: number, signal?: AbortSignal): Promise<AssignmentResult> {
    const rt = await this.runtime(client.taskId);
    const until = this.clock.now() + waitMs;
    // An open long-poll makes the client present for as long as it is open.
    rt.presence.set(client.id, this.clock.now());
    rt.polling.set(client.id, (rt.polling.get(client.id) ?? 0) + 1);
    try {
      this.requestSelection(rt);
      for (;;) {
        const result = this.currentAssignment(rt, client);
        if (result !== null) return result;
        const remaining = until - this.clock.now();
        if (remaining <= 0 || this.closed || signal?.aborted) {
          return { kind: 'idle', taskStatus: rt.task.status, currentRound: rt.round?.number ?? 0 };
        }
        await new Promise<void>((resolve) => {
          const done = (): void => {
            cancel();
            rt.waiters.delete(done);
            signal?.removeEventListener('abort', done);
            resolve();
          };
          const cancel = this.timer.schedule(done, remaining);
          rt.waiters.add(done);
          signal?.addEventListener('abort', done);
        });
      }
    } finally {
      const open = (rt.polling.get(client.id) ?? 1) - 1;
      if (open > 0) rt.polling.set(client.id, open);
      else {
        rt.polling.delete(client.id);
        // A cancelled poll means the device went away; otherwise it stays present for the TTL.
        if (signal?.aborted && !this.closed) rt.presence.delete(client.id);
        else rt.presence.set(client.id, this.clock.now());
      }
    }
  }

  /**
   * Queues a selection when one could succeed: the round is SELECTING and
   * enough clients are present. At most one selection waits on the mutex.
   */
  private requestSelection(rt: TaskRuntime): void {
    if (rt.selectQueued || this.closed || rt.task.status !== 'RUNNING' || rt.round?.state !== 'SELECTING') return;
    if (this.availableClients(rt).length < rt.task.settings.minAvailableClients) return;
    rt.selectQueued = true;
    void rt.mutex
      .run(() => {
        rt.selectQueued = false;
        return this.maybeSelect(rt);
      })
      .catch((error) => this.log.error({ err: error, taskId: rt.task.id }, 'selection failed'));
  }

  private currentAssignment(rt: TaskRuntime, client: Client): AssignmentResult | null {
    const { task } = rt;
    if (task.status === 'COMPLETED' || task.status === 'FAILED' || task.status === 'BUDGET_EXHAUSTED') {
      return { kind: 'ended', taskStatus: task.status, reason: task.statusReason ?? '', finalModelVersion: task.currentModelVersion };
    }
    const round = rt.round;
    if (
      round !== null &&
      round.state === 'COLLECTING' &&
      rt.selected.has(client.id) &&
      !rt.folded.has(client.id) &&
      rt.model !== null &&
      round.deadlineAt.getTime() > this.clock.now()
    ) {
      return {
        kind: 'assignment',
        round,
        model: { version: rt.model.version, sha256: rt.model.sha256, sizeBytes: rt.model.sizeBytes },
        maxUpdateBytes: maxUpdateBytes(task),
        maxExampleCount: task.settings.maxExampleCount,
        updateEncoding: task.settings.updateEncoding,
        privacy: task.settings.privacy,
      };
    }
    return null;
  }

  /** Checks an update's header before its payload is read, so bad uploads fail fast. */
  async checkUpdateHeader(client: Client, header: UpdateHeaderInput): Promise<{ maxBytes: number }> {
    const rt = await this.runtime(client.taskId);
    this.validateHeader(rt, client, header);
    return { maxBytes: maxUpdateBytes(rt.task) };
  }

  /**
   * Accepts an update: validates it, stores its payload, records it and folds
   * it into the round's aggregate. Rejections leave nothing behind.
   */
  async submitUpdate(
    client: Client,
    header: UpdateHeaderInput,
    payload: Uint8Array,
    sha256: string,
    arrivedAt: number = this.clock.now(),
  ): Promise<{ acceptedCount: number }> {
    const rt = await this.runtime(client.taskId);
    const log = this.log.child({ taskId: client.taskId, clientId: client.id, roundNumber: header.roundNumber });
    if (sha256 !== header.sha256) throw new VeilError('invalid_argument', 'payload SHA-256 does not match the header');
    if (payload.byteLength !== header.payloadSizeBytes) {
      throw new VeilError('invalid_argument', `payload has ${payload.byteLength} bytes, header declared ${header.payloadSizeBytes}`);
    }
    // Outside the lock (uploads proceed in parallel): fail fast on a bad header, validate the payload
    // fully (decoded once; the decoded form is what gets folded), and store it durably.
    const early = this.validateHeader(rt, client, header, arrivedAt);
    let prepared: { update: CheckedUpdate; key: string; blobSha256: string; sizeBytes: number };
    const pre = (async () => {
      const committee = this.committeeTask(rt);
      const he = committee === null ? await this.heContext(rt) : null;
      const update: CheckedUpdate =
        committee !== null
          ? checkCommitteeUpload(committee, early.number, rt.task.parameterCount, client.id, payload)
          : he === null
            ? checkPlaintextUpdate(payload, rt.task.parameterCount, rt.task.settings.updateBound)
            : checkEncryptedUpdate(he, updateValueCount(rt.task), payload, header.exampleCount);
      try {
        // A record of its own in the round's segment (concurrent uploads write disjoint ranges); a rejected one is erased.
        // The transport hashed these bytes as they arrived (`sha256`, checked against the header above).
        const ref = await this.blobs.append(updateBlobDir(early.id), payload, sha256);
        prepared = { update, key: ref.key, blobSha256: ref.sha256, sizeBytes: ref.sizeBytes };
      } catch (error) {
        releaseChecked(update);
        throw error;
      }
    })();
    // The deadline handler waits for on-time uploads still being stored, so they can still be recorded.
    rt.inflight.add(pre);
    try {
      await pre;
    } finally {
      rt.inflight.delete(pre);
    }
    const { update, key, blobSha256, sizeBytes } = prepared!;
    const outcome = await new Promise<Parameters<PendingRecord['done']>[0]>((done) => {
      rt.pendingRecords.push({ client, header, arrivedAt, roundId: early.id, sha256, update, key, blobSha256, sizeBytes, log, done });
      // The first update since the last commit started queues the next one; later ones join it.
      // (The mutex is FIFO: an update stored before the deadline's section is queued ahead of it.)
      if (rt.pendingRecords.length === 1) {
        void rt.mutex.run(() => this.flushRecords(rt)).catch((err: unknown) => this.log.error({ err, taskId: rt.task.id }, 'recording updates failed'));
      }
    });
    // Folded (the aggregate took what the check loaded) or refused: either way nothing is left to hold.
    releaseChecked(update);
    if (outcome.ok) return { acceptedCount: outcome.acceptedCount };
    // Rejections leave nothing behind. (A failure after recording keeps the blob: the store references it.)
    if (!outcome.recorded) await this.blobs.delete(key).catch((err) => log.warn({ err }, 'could not delete a rejected update blob'));
    throw outcome.error;
  }

  /**
   * Group commit (mutex held): records every update waiting in
   * `rt.pendingRecords` with one store write, folds the accepted ones into
   * the aggregate in arrival order, and answers each submitter. Under load
   * uploads arrive faster than one write per update, so the batch grows and
   * the database cost per update shrinks.
   */
  private async flushRecords(rt: TaskRuntime): Promise<void> {
    const batch = rt.pendingRecords.splice(0);
    if (batch.length === 0) return;
    try {
      await this.recordBatch(rt, batch);
    } catch (error) {
      // Not expected (refusals are answered inside; the sum's headroom is checked at task creation).
      // Still, no submitter may wait forever: answers are idempotent, so the ones already given stand.
      // `recorded`: the store may reference the blob, so it is kept. The aggregate may now lack an
      // update the store recorded: rebuild it from the store, as after a restart.
      this.log.error({ err: error, taskId: rt.task.id }, 'recording updates failed; rebuilding the round aggregate from the store');
      const failure = new VeilError('internal', 'recording the update failed', { cause: error });
      for (const item of batch) item.done({ ok: false, error: failure, recorded: true });
      const round = rt.round;
      if (round !== null && round.state === 'COLLECTING') {
        try {
          await this.rebuildAggregate(rt, round);
          if (round.receivedCount >= round.targetCount) await this.aggregate(rt, 'all selected clients submitted');
        } catch (err) {
          this.log.error({ err, taskId: rt.task.id }, 'rebuilding the round aggregate failed');
        }
      }
    }
  }

  private async recordBatch(rt: TaskRuntime, batch: PendingRecord[]): Promise<void> {
    const reject = (item: PendingRecord, error: unknown, recorded = false): void => item.done({ ok: false, error, recorded });
    const candidates: PendingRecord[] = [];
    const seenClients = new Map<string, string>();
    for (const item of batch) {
      try {
        const round = this.validateHeader(rt, item.client, item.header, item.arrivedAt);
        if (round.id !== item.roundId) {
          throw new VeilError('failed_precondition', `update is for round ${item.header.roundNumber}, the open round is ${round.number}`);
        }
        const earlier = seenClients.get(item.client.id);
        if (earlier !== undefined) throw rejection({ kind: 'duplicate', sha256: earlier }, round.number, item.sha256);
        seenClients.set(item.client.id, item.sha256);
        candidates.push(item);
      } catch (error) {
        reject(item, error);
      }
    }
    // Candidates passed validateHeader, so the lock holder's rt.round is the open round they belong to.
    const open = rt.round;
    if (candidates.length === 0 || open === null) return;
    let toRecord = candidates;
    {
      // Ciphertexts are randomized: the same bytes twice means a replayed submission (also within the
      // batch, from any device). A plaintext update is a replay when the same device had the same bytes
      // accepted in an earlier round (each round's update is computed from a new model); devices may
      // legitimately send equal plaintext updates (e.g. the same synthetic delta).
      const encrypted = rt.task.encryption !== null;
      let known: Set<string>;
      // A device resending its own update of this round is a retry (answered "already accepted"), not a replay.
      let ownInRound = new Map<string, string>();
      try {
        if (encrypted) known = await this.store.knownUpdateDigests(rt.task.id, candidates.map((c) => c.sha256));
        else {
          known = new Set();
          // One query in the common case (no digest seen before); a client-filtered one per hit.
          const seen = await this.store.knownUpdateDigests(rt.task.id, candidates.map((c) => c.sha256));
          for (const c of candidates.filter((x) => seen.has(x.sha256))) {
            const mine = await this.store.knownUpdateDigests(rt.task.id, [c.sha256], { clientId: c.client.id });
            if (mine.size > 0) known.add(`${c.client.id}/${c.sha256}`);
          }
        }
        if (known.size > 0) ownInRound = new Map((await this.store.listSubmissions(open.id)).map((s) => [s.clientId, s.sha256]));
      } catch (error) {
        for (const item of candidates) reject(item, error);
        return;
      }
      const keyOf = (item: (typeof candidates)[number]): string => (encrypted ? item.sha256 : `${item.client.id}/${item.sha256}`);
      toRecord = [];
      for (const item of candidates) {
        if (known.has(keyOf(item)) && ownInRound.get(item.client.id) !== item.sha256) {
          const what = encrypted ? 'this encrypted update was' : 'this device already had an identical update accepted in this task: it was';
          reject(item, new VeilError('invalid_argument', `${what} already submitted (replay)`));
        } else {
          known.add(keyOf(item));
          toRecord.push(item);
        }
      }
      if (toRecord.length === 0) return;
    }
    let results: Awaited<ReturnType<FederationStore['recordSubmissions']>>;
    try {
      results = await this.store.recordSubmissions(
        open.id,
        toRecord.map((item) => ({
          clientId: item.client.id,
          exampleCount: item.header.exampleCount,
          trainedExamples: item.header.trainedExamples ?? null,
          encoding: rt.task.settings.updateEncoding,
          sha256: item.blobSha256,
          sizeBytes: item.sizeBytes,
          blobKey: item.key,
        })),
      );
    } catch (error) {
      for (const item of toRecord) reject(item, error);
      return;
    }
    const accepted: Array<{ item: PendingRecord; receivedCount: number }> = [];
    for (const [k, item] of toRecord.entries()) {
      const result = results[k]!;
      if (result.kind !== 'accepted') {
        reject(item, rejection(result, open.number, item.sha256));
        continue;
      }
      rt.folded.set(item.client.id, item.sha256);
      rt.aggregator?.add(item.client.id, item.header.exampleCount, item.update);
      open.receivedCount = result.receivedCount;
      accepted.push({ item, receivedCount: result.receivedCount });
      item.log.info({ receivedCount: result.receivedCount, targetCount: open.targetCount, exampleCount: item.header.exampleCount }, 'update accepted');
      this.emit('update-accepted', {
        taskId: rt.task.id,
        roundNumber: open.number,
        clientId: item.client.id,
        receivedCount: result.receivedCount,
        targetCount: open.targetCount,
      });
    }
    try {
      if (accepted.length > 0 && open.receivedCount >= open.targetCount) await this.aggregate(rt, 'all selected clients submitted');
    } catch (error) {
      await this.recoverTask(rt, error);
    }
    // Recorded means accepted: the submitters hear so whatever happened to the round (answered after
    // the aggregation, so a device that completed a round finds the next one open).
    for (const { item, receivedCount } of accepted) item.done({ ok: true, acceptedCount: receivedCount });
  }

  /** `at`: when the update arrived (an upload that arrived before the deadline is on time, however long it waited for the lock). */
  private validateHeader(rt: TaskRuntime, client: Client, header: UpdateHeaderInput, at: number = this.clock.now()): Round {
    const task = rt.task;
    if (header.encoding !== task.settings.updateEncoding) {
      throw new VeilError('invalid_argument', `task expects update encoding ${task.settings.updateEncoding}, got ${header.encoding}`);
    }
    const max = maxUpdateBytes(task);
    if (header.payloadSizeBytes > max) {
      throw new VeilError('resource_exhausted', `update of ${header.payloadSizeBytes} bytes exceeds the task's ${max}`);
    }
    if (task.encryption === null && task.settings.committee == null && header.payloadSizeBytes !== max) {
      throw new VeilError('invalid_argument', `update must be ${max} bytes for ${task.parameterCount} parameters, got ${header.payloadSizeBytes}`);
    }
    if (!Number.isInteger(header.exampleCount) || header.exampleCount < 1 || header.exampleCount > task.settings.maxExampleCount) {
      throw new VeilError('invalid_argument', `exampleCount must be from 1 to ${task.settings.maxExampleCount}`);
    }
    const trained = header.trainedExamples;
    if (trained !== undefined && trained !== null && (!Number.isInteger(trained) || trained < 1 || trained > 2_147_483_647)) {
      throw new VeilError('invalid_argument', 'trainedExamples must be an integer from 1 to 2147483647 (or 0: not reported)');
    }
    if (!/^[0-9a-f]{64}$/.test(header.sha256)) throw new VeilError('invalid_argument', 'payload_sha256 must be 32 bytes');
    const round = rt.round;
    if (round === null || round.state !== 'COLLECTING') {
      throw new VeilError('failed_precondition', `no round is collecting updates (round ${header.roundNumber} is not open)`);
    }
    if (header.roundNumber !== round.number) {
      throw new VeilError('failed_precondition', `update is for round ${header.roundNumber}, the open round is ${round.number}`);
    }
    if (header.modelVersion !== round.baseModelVersion) {
      throw new VeilError('failed_precondition', `update is based on model ${header.modelVersion}, round ${round.number} trains model ${round.baseModelVersion}`);
    }
    if (!rt.selected.has(client.id)) throw new VeilError('permission_denied', `client is not selected for round ${round.number}`);
    const accepted = rt.folded.get(client.id);
    if (accepted !== undefined) {
      // `already_accepted` (the same payload) lets a device that lost the acknowledgement (e.g. a coordinator restart) know it was counted.
      throw duplicateUpdate(round.number, accepted === header.sha256);
    }
    if (round.deadlineAt.getTime() <= at) {
      throw new VeilError('failed_precondition', `round ${round.number} deadline has passed`);
    }
    return round;
  }

  async reportEvaluation(
    client: Client,
    report: { roundNumber: number; modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<void> {
    if (report.roundNumber === 0) {
      // Round 0: the final model, which no round distributes, evaluated by a device of the task after it ended.
      const task = await this.store.getTask(client.taskId);
      if (task === null) throw new VeilError('not_found', `task ${client.taskId} does not exist`);
      if (task.status !== 'COMPLETED' && task.status !== 'BUDGET_EXHAUSTED') {
        throw new VeilError('failed_precondition', `the final model is evaluated once the task has ended; it is ${task.status}`);
      }
      if (report.modelVersion !== task.currentModelVersion) {
        throw new VeilError('failed_precondition', `the final model is version ${task.currentModelVersion}, not ${report.modelVersion}`);
      }
      await this.store.recordModelEvaluation(task.id, client.id, report);
      return;
    }
    const round = await this.store.getRound(client.taskId, report.roundNumber);
    if (round === null) throw new VeilError('not_found', `round ${report.roundNumber} does not exist`);
    if (report.modelVersion !== round.baseModelVersion) {
      throw new VeilError('failed_precondition', `round ${round.number} distributed model ${round.baseModelVersion}, not ${report.modelVersion}`);
    }
    const ok = await this.store.recordEvaluation(round.id, client.id, report);
    if (!ok) throw new VeilError('permission_denied', `client was not selected for round ${round.number}`);
  }

  /** Reads a model version (0 = current, as in the protocol's DownloadModel) and verifies its digest. */
  async readModel(taskId: string, version = 0): Promise<StoredModel> {
    const rt = await this.runtime(taskId);
    return this.readModelVersion(taskId, version === 0 ? rt.task.currentModelVersion : version);
  }

  /**
   * Reads exactly model version `v` (0 = the initial model) and verifies its digest.
   * The task's current model and recently read versions are served from memory
   * (they were hashed when written or verified when read).
   */
  async readModelVersion(taskId: string, v: number): Promise<StoredModel> {
    const rt = await this.runtime(taskId);
    const m = rt.model;
    // Only a committed version: `rt.model` may briefly hold the next one before its round closes.
    if (m !== null && m.version === v && v <= rt.task.currentModelVersion) {
      const bytes = Buffer.isBuffer(m.bytes) ? m.bytes : Buffer.from(m.bytes.buffer, m.bytes.byteOffset, m.bytes.byteLength);
      return { version: v, bytes, sha256: m.sha256, encoding: m.encoding };
    }
    return this.models.read(taskId, v);
  }

  // ------------------------------------------------------------------ the state machine (mutex held)

  /**
   * Picks a task up from the store: its open round resumes where it was (selection, collection with
   * its deadline, or aggregation), or the next round opens. For a PAUSED task the open round
   * resumes too, but selection waits and no new round opens (`maybeSelect`, `openNextRound`).
   */
  private async resume(rt: TaskRuntime): Promise<void> {
    if (rt.task.status !== 'RUNNING' && rt.task.status !== 'PAUSED') return;
    await this.loadModel(rt);
    const latest = await this.store.getLatestRound(rt.task.id);
    if (latest === null || latest.state === 'CLOSED' || latest.state === 'FAILED') {
      await this.openNextRound(rt, latest);
      return;
    }
    rt.round = latest;
    const log = this.log.child({ taskId: rt.task.id, roundNumber: latest.number });
    if (latest.state === 'SELECTING') {
      log.info('resuming round in selection');
      await this.maybeSelect(rt);
      return;
    }
    await this.rebuildAggregate(rt, latest);
    if (latest.state === 'AGGREGATING') {
      log.info('resuming interrupted aggregation');
      await this.finishAggregation(rt, latest);
      return;
    }
    log.info({ receivedCount: latest.receivedCount, targetCount: latest.targetCount }, 'resuming collection');
    if (latest.receivedCount >= latest.targetCount) await this.aggregate(rt, 'all selected clients submitted');
    else this.armDeadline(rt, latest);
  }

  /** Rebuilds the aggregate of a round from its recorded submissions (digests verified). */
  private async rebuildAggregate(rt: TaskRuntime, round: Round): Promise<void> {
    const submissions = await this.store.listSubmissions(round.id);
    rt.aggregator?.dispose();
    rt.aggregator = null;
    const aggregator = await this.newAggregator(rt, round.number);
    rt.folded = new Map();
    for (const s of submissions) {
      const bytes = await this.blobs.get({ key: s.blobKey, sha256: s.sha256 });
      aggregator.add(s.clientId, s.exampleCount, bytes);
      rt.folded.set(s.clientId, s.sha256);
    }
    round.receivedCount = submissions.length;
    rt.aggregator = aggregator;
    rt.selected = new Set(await this.store.listParticipants(round.id));
  }


  private async openNextRound(rt: TaskRuntime, previous: Round | null): Promise<void> {
    // A paused task lets its open round finish but opens no new one; `startTask` resumes from the store.
    if (rt.task.status !== 'RUNNING') {
      rt.round = null;
      return;
    }
    const number = (previous?.number ?? 0) + 1;
    if (number > rt.task.settings.rounds) {
      await this.endTask(rt, 'COMPLETED', `all ${rt.task.settings.rounds} rounds ran`);
      return;
    }
    const privacy = rt.task.settings.privacy;
    if (privacy !== null) {
      // Budget enforcement: refuse to open a round whose spend would take ε past the cap.
      const decision = checkRoundBudget(await this.store.listLedger(rt.task.id), privacy, number);
      if (!decision.allowed) {
        await this.endTask(rt, 'BUDGET_EXHAUSTED', decision.reason);
        return;
      }
    }
    const round = await this.store.openRound({
      id: randomUUID(),
      taskId: rt.task.id,
      number,
      baseModelVersion: rt.task.currentModelVersion,
      minClients: rt.task.settings.minClients,
      config: rt.task.settings.training,
    });
    this.installRound(rt, round);
    this.log.info({ taskId: rt.task.id, roundNumber: number }, 'round opened');
    this.emit('round-opened', { taskId: rt.task.id, round });
    await this.maybeSelect(rt);
  }

  private availableClients(rt: TaskRuntime): string[] {
    const cutoff = this.clock.now() - this.presenceTtlMs;
    const out: string[] = [];
    for (const [id, seen] of rt.presence) {
      if (seen >= cutoff || rt.polling.has(id)) out.push(id);
      else rt.presence.delete(id);
    }
    return out;
  }

  private async maybeSelect(rt: TaskRuntime): Promise<void> {
    const round = rt.round;
    if (this.closed || rt.task.status !== 'RUNNING' || round === null || round.state !== 'SELECTING') return;
    const available = this.availableClients(rt);
    if (available.length < rt.task.settings.minAvailableClients) return;
    const strategy = await this.roundStrategy(rt);
    const fit = strategy.configureFit({
      round: round.number,
      available,
      selection: rt.task.settings.selection,
      minClients: rt.task.settings.minClients,
      training: round.config,
      state: await this.loadStrategyState(rt),
      rng: this.rng,
    });
    if (fit.kind === 'wait') return;
    if (fit.kind === 'fail') {
      await this.failOpenRound(rt, round, fit.reason);
      return;
    }
    checkFitConfig(fit.config, strategy.name);
    if (fit.clientIds.length < rt.task.settings.minClients) {
      throw new VeilError('internal', `strategy ${strategy.name} selected ${fit.clientIds.length} clients, fewer than the round's minimum ${rt.task.settings.minClients}`);
    }
    const ledgerEntry = await this.privacySpend(rt, round, fit.clientIds);
    if (ledgerEntry === 'exhausted') return;
    const deadlineAt = new Date(this.clock.now() + rt.task.settings.roundDeadlineMs);
    const collecting = await this.store.startCollecting(round.id, fit.clientIds, deadlineAt, {
      fitConfig: fit.config,
      ...(ledgerEntry !== null && { ledgerEntry }),
    });
    if (collecting === null) throw new VeilError('aborted', `round ${round.number} left SELECTING concurrently`);
    this.installRound(rt, collecting, { selected: fit.clientIds, aggregator: await this.newAggregator(rt, round.number) });
    this.armDeadline(rt, collecting);
    this.log.info(
      { taskId: rt.task.id, roundNumber: round.number, selected: fit.clientIds.length, available: available.length, deadlineAt },
      'round collecting',
    );
    this.emit('round-collecting', { taskId: rt.task.id, round: collecting });
    this.wake(rt);
  }

  /**
   * The ledger entry of a round about to start (DP tasks), or 'exhausted' (the
   * round fails and the task ends) when the budget no longer allows it.
   */
  private async privacySpend(rt: TaskRuntime, round: Round, clientIds: readonly string[]): Promise<LedgerEntry | null | 'exhausted'> {
    const privacy = rt.task.settings.privacy;
    if (privacy === null) return null;
    const spent = await this.store.listLedger(rt.task.id);
    const decision = checkRoundBudget(spent, privacy, round.number);
    if (!decision.allowed) {
      this.settleRound(rt);
      await this.store.failRound(round.id, 'privacy budget exhausted');
      await this.endTask(rt, 'BUDGET_EXHAUSTED', decision.reason);
      return 'exhausted';
    }
    return roundLedgerEntry({ taskId: rt.task.id, roundNumber: round.number, privacy, spent, decision, clientIds, at: new Date(this.clock.now()) });
  }

  private armDeadline(rt: TaskRuntime, round: Round): void {
    rt.deadlineTimer?.();
    const delay = Math.max(0, round.deadlineAt.getTime() - this.clock.now());
    rt.deadlineTimer = this.timer.schedule(() => {
      rt.deadlineTimer = null;
      // Uploads that arrived before the deadline and are still being stored get queued ahead of the
      // deadline's section (the mutex is FIFO); later ones are refused on their arrival time.
      void Promise.allSettled([...rt.inflight])
        .then(() => rt.mutex.run(() => this.onDeadline(rt, round.id).catch((error: unknown) => this.recoverTask(rt, error))))
        .catch((error) => this.log.error({ err: error, taskId: rt.task.id }, 'deadline handling failed'));
    }, delay);
  }

  private async onDeadline(rt: TaskRuntime, roundId: string): Promise<void> {
    const round = rt.round;
    if (this.closed || round === null || round.id !== roundId || round.state !== 'COLLECTING') return;
    if (round.receivedCount >= round.minClients) {
      await this.aggregate(rt, `deadline reached with ${round.receivedCount} of ${round.targetCount} updates`);
      return;
    }
    const reason = `deadline passed with ${round.receivedCount} updates, fewer than the minimum of ${round.minClients}`;
    const failed = await this.store.failRound(round.id, reason);
    if (failed === null) return;
    this.log.warn({ taskId: rt.task.id, roundNumber: round.number, reason }, 'round failed');
    this.settleRound(rt);
    this.emit('round-failed', { taskId: rt.task.id, round: failed });
    await this.openNextRound(rt, failed);
  }

  private async aggregate(rt: TaskRuntime, reason: string): Promise<void> {
    const round = rt.round;
    if (round === null || round.state !== 'COLLECTING') return;
    const aggregating = await this.store.beginAggregation(round.id, reason);
    if (aggregating === null) return;
    rt.round = aggregating;
    await this.finishAggregation(rt, aggregating);
  }

  private async finishAggregation(rt: TaskRuntime, round: Round): Promise<void> {
    const started = performance.now();
    const submissions = await this.store.listSubmissions(round.id);
    const recorded = new Set(submissions.map((s) => s.clientId));
    // The aggregate must hold exactly the recorded updates: rebuild it if memory and store disagree.
    if (rt.aggregator === null || recorded.size !== rt.folded.size || [...recorded].some((id) => !rt.folded.has(id))) {
      this.log.warn({ taskId: rt.task.id, roundNumber: round.number }, 'rebuilding aggregate from the store');
      await this.rebuildAggregate(rt, round);
    }
    const model = await this.loadModel(rt);
    const failures: FitFailure[] = [...rt.selected].filter((id) => !recorded.has(id)).map((clientId) => ({ clientId, reason: 'no update' }));
    const state = await this.loadStrategyState(rt);
    let result: Awaited<ReturnType<RoundAggregator['finish']>>;
    try {
      // Committee rounds ask the custodians here (asynchronous); the others return at once.
      result = await rt.aggregator!.finish({ bytes: model.bytes, encoding: model.encoding }, failures, state);
    } catch (error) {
      // No model comes out of this round (e.g. a non-finite aggregate): it fails, the model is kept.
      await this.failOpenRound(rt, round, `aggregation failed: ${safeReason(error)}`, error);
      return;
    }
    const next: ModelBlob | null = result?.model ?? null;
    let newModel: Parameters<FederationStore['closeRound']>[1] = null;
    if (result !== null && next !== null) {
      const version = rt.task.currentModelVersion + 1;
      const ref = await this.blobs.put(modelBlobKey(rt.task.id, version), next.bytes);
      // The state is written before the round closes and referenced by the same transaction that
      // records the version: a crash in between re-aggregates and writes both again.
      const stateRef = result.state === null ? null : await this.blobs.put(strategyStateBlobKey(rt.task.id, version), encodeStrategyState(result.state));
      rt.strategyState = { version, state: result.state };
      newModel = {
        version,
        sha256: ref.sha256,
        sizeBytes: ref.sizeBytes,
        encoding: next.encoding,
        strategyState: stateRef === null ? null : { sha256: stateRef.sha256, sizeBytes: stateRef.sizeBytes },
      };
      rt.model = { version, bytes: next.bytes, encoding: next.encoding, sha256: ref.sha256, sizeBytes: ref.sizeBytes };
    }
    const summary: RoundSummary = {
      participants: submissions.length,
      dropped: failures.length,
      examples: submissions.reduce((a, s) => a + s.exampleCount, 0),
      uploadBytes: submissions.reduce((a, s) => a + s.sizeBytes, 0),
      modelVersion: newModel?.version ?? null,
      aggregationMs: Math.round(performance.now() - started),
      ...(result?.committee !== undefined && { committee: result.committee }),
    };
    const ledgerEntry = await this.decryptionRecord(rt, round, result?.decryption);
    const closed = await this.store.closeRound(round.id, newModel, summary, ledgerEntry === null ? undefined : { ledgerEntry });
    if (closed === null) throw new VeilError('aborted', `round ${round.number} left AGGREGATING concurrently`);
    if (newModel !== null) rt.task = { ...rt.task, currentModelVersion: newModel.version };
    this.log.info({ taskId: rt.task.id, roundNumber: round.number, ...summary }, 'round closed');
    this.settleRound(rt);
    this.emit('round-closed', { taskId: rt.task.id, round: closed });
    await this.openNextRound(rt, closed);
  }

  /** A DP committee round's decryption record for the privacy ledger (issue 11), or null. */
  private async decryptionRecord(rt: TaskRuntime, round: Round, decryption: RoundResult['decryption']): Promise<LedgerEntry | null> {
    const privacy = rt.task.settings.privacy;
    if (privacy === null || decryption === undefined) return null;
    const last = await this.store.lastLedgerEntry(rt.task.id);
    return decryptionLedgerEntry({ taskId: rt.task.id, roundNumber: round.number, privacy, last, decryption: decryption.record, clientIds: decryption.clientIds, at: new Date(this.clock.now()) });
  }

  /** Fails `round` (any open state) with `reason` and opens the next one. */
  private async failOpenRound(rt: TaskRuntime, round: Round, reason: string, cause?: unknown): Promise<void> {
    this.settleRound(rt);
    const failed = await this.store.failRound(round.id, reason);
    this.log.warn({ taskId: rt.task.id, roundNumber: round.number, reason, err: cause }, 'round failed');
    if (failed !== null) this.emit('round-failed', { taskId: rt.task.id, round: failed });
    await this.openNextRound(rt, failed ?? round);
  }

  /**
   * (mutex held) After an unexpected error in a task's state machine (at start, aggregation, a
   * deadline): fails the task's open round with the reason and resumes (the next round opens); if
   * that fails too, the task is FAILED with the reason. Never throws: the other tasks go on.
   */
  private async recoverTask(rt: TaskRuntime, error: unknown): Promise<void> {
    const taskId = rt.task.id;
    this.log.error({ err: error, taskId }, 'task state machine failed; failing its open round');
    let again: unknown;
    try {
      this.settleRound(rt);
      const latest = await this.store.getLatestRound(taskId);
      if (latest !== null && latest.state !== 'CLOSED' && latest.state !== 'FAILED') {
        const failed = await this.store.failRound(latest.id, `could not resume round ${latest.number}: ${safeReason(error)}`);
        if (failed !== null) this.emit('round-failed', { taskId, round: failed });
      }
      await this.resume(rt);
      return;
    } catch (err) {
      again = err;
    }
    this.log.error({ err: again, taskId }, 'task could not resume; failing the task');
    try {
      this.settleRound(rt);
      const reason = `could not resume: ${safeReason(again)}`;
      const task = await this.store.setTaskStatus(taskId, 'FAILED', ['RUNNING', 'PAUSED'], reason);
      if (task !== null) {
        rt.task = task;
        this.emit('task-ended', { taskId, status: 'FAILED', reason });
      }
    } catch (err) {
      this.log.error({ err, taskId }, 'could not record the task as failed');
    }
    this.wake(rt);
  }

  /** The one round reset: stops the deadline, frees the aggregate, forgets the participants. */
  private settleRound(rt: TaskRuntime): void {
    rt.deadlineTimer?.();
    rt.deadlineTimer = null;
    rt.aggregator?.dispose();
    rt.aggregator = null;
    rt.selected = new Set();
    rt.folded = new Map();
    rt.round = null;
  }

  /** Makes `round` the task's open round, after the reset of the previous one. */
  private installRound(rt: TaskRuntime, round: Round, with_: { selected?: readonly string[]; aggregator?: RoundAggregator } = {}): void {
    this.settleRound(rt);
    rt.round = round;
    rt.selected = new Set(with_.selected ?? []);
    rt.aggregator = with_.aggregator ?? null;
  }

  private async endTask(rt: TaskRuntime, status: 'COMPLETED' | 'FAILED' | 'BUDGET_EXHAUSTED', reason: string): Promise<void> {
    const task = await this.store.setTaskStatus(rt.task.id, status, ['RUNNING'], reason);
    if (task !== null) rt.task = task;
    this.settleRound(rt);
    this.log.info({ taskId: rt.task.id, status, reason }, 'task ended');
    this.emit('task-ended', { taskId: rt.task.id, status, reason });
    this.wake(rt);
  }

  private async loadModel(rt: TaskRuntime): Promise<NonNullable<TaskRuntime['model']>> {
    const version = rt.task.currentModelVersion;
    if (rt.model !== null && rt.model.version === version) return rt.model;
    let stored: StoredModel;
    try {
      stored = await this.models.read(rt.task.id, version);
    } catch (error) {
      // The task's own current version must exist: its absence is a broken store, not a bad request.
      throw error instanceof VeilError && error.code === 'not_found' ? new VeilError('internal', `task ${rt.task.id} model version ${version} is missing`) : error;
    }
    rt.model = { version, bytes: stored.bytes, encoding: stored.encoding, sha256: stored.sha256, sizeBytes: stored.bytes.byteLength };
    return rt.model;
  }

  private wake(rt: TaskRuntime): void {
    for (const waiter of [...rt.waiters]) waiter();
  }

  private runtimeFor(task: Task): TaskRuntime {
    let rt = this.runtimes.get(task.id);
    if (rt === undefined) {
      rt = {
        task,
        mutex: createMutex(),
        round: null,
        selected: new Set(),
        folded: new Map(),
        aggregator: null,
        deadlineTimer: null,
        presence: new Map(),
        polling: new Map(),
        selectQueued: false,
        inflight: new Set(),
        waiters: new Set(),
        model: null,
        he: null,
        strategy: null,
        strategyState: null,
        committee: null,
        pendingRecords: [],
      };
      this.runtimes.set(task.id, rt);
    }
    return rt;
  }

  private async runtime(taskId: string): Promise<TaskRuntime> {
    const existing = this.runtimes.get(taskId);
    if (existing) return existing;
    const task = await this.store.getTask(taskId);
    if (task === null) throw new VeilError('not_found', `task ${taskId} does not exist`);
    return this.runtimeFor(task);
  }
}

/** An error as a round or task reason: a coordinator error's text, never an internal one (it may hold paths). */
function safeReason(error: unknown): string {
  return error instanceof VeilError && error.code !== 'internal' ? error.message : 'internal error (see the coordinator log)';
}

/** A second update from a device in a round: `already_accepted` when it is the accepted one again, else `already_exists`. */
function duplicateUpdate(roundNumber: number, samePayload: boolean): VeilError {
  return samePayload
    ? new VeilError('already_accepted', `an update from this client was already accepted for round ${roundNumber} (same payload)`)
    : new VeilError('already_exists', `an update from this client was already accepted for round ${roundNumber}`);
}

function rejection(result: Exclude<RecordSubmissionResult, { kind: 'accepted' }>, roundNumber: number, sha256: string): VeilError {
  switch (result.kind) {
    case 'duplicate':
      return duplicateUpdate(roundNumber, result.sha256 === sha256);
    case 'not_selected':
      return new VeilError('permission_denied', `client is not selected for round ${roundNumber}`);
    case 'round_closed':
      return new VeilError('failed_precondition', `round ${roundNumber} is ${result.state}, no longer collecting`);
  }
}

/** Round-trips a task status from the store to the protocol's naming. */
export type { TaskStatus };
