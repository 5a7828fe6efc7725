import type { CalibrationInput } from './calibration.js';
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { createCryptoRng } from '@veil/privacy';
import type { Rng, StrategyDefinition } from '../aggregation/strategy.js';
import { createStrategyRegistry } from '../aggregation/registry.js';
import type { BlobStore } from '../blobs/blob-store.js';
import type { CoordinatorKeyMaterial } from '@veil/crypto';
import type { Client, Task, TaskStatus } from './model.js';
import type { FederationStore } from './ports.js';
import { createModelCache, type StoredModel } from './model-cache.js';
import { VeilError } from '../errors.js';
import { systemClock, systemTimer, type Clock, type Timer } from './clock.js';
import type { CommitteeConnector, EngineContext, EngineEvents } from './engine-context.js';
import { TaskRuntimes, wake } from './task-runtime.js';
import { TaskService, type CommitteeInput, type EncryptionInput } from './task-service.js';
import { Presence, type AssignmentResult, type WaitOptions } from './presence.js';
import { Intake, type UpdateHeaderInput } from './intake.js';
import { RoundLoop } from './round-loop.js';
import { createPrivacyBudget } from './privacy-budget.js';
import type { TaskInput } from './task-settings.js';

export type { StoredModel } from './model-cache.js';
export type { Clock, Timer } from './clock.js';
export type { CommitteeConnector, EngineEvents } from './engine-context.js';
export type { CommitteeInput, EncryptionInput } from './task-service.js';
export type { AssignmentResult, WaitOptions } from './presence.js';
export type { UpdateHeaderInput } from './intake.js';

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

/**
 * The round engine: runs federated rounds for every task as a persisted state
 * machine (SELECTING -> COLLECTING -> AGGREGATING -> CLOSED, or FAILED with a
 * reason). All state changes of a task are serialized by a per-task mutex and
 * written to the store before they take effect; after a crash `start()`
 * rebuilds the in-memory state from the store and the blob store, so an
 * accepted update is never lost nor counted twice.
 *
 * A facade over its parts: the task service (`task-service.ts`), presence
 * (`presence.ts`), update intake (`intake.ts`) and the round loop
 * (`round-loop.ts`, one `OpenRound` per round), sharing an `EngineContext`.
 */
export class RoundEngine extends EventEmitter<EngineEvents> {
  private readonly ctx: EngineContext;
  // `store`, `blobs` and `runtimes` are fields of their own so benchmarks and white-box tests can instrument them.
  private readonly store: FederationStore;
  private readonly blobs: BlobStore;
  private readonly runtimes: TaskRuntimes;
  private readonly tasks: TaskService;
  private readonly presence: Presence;
  private readonly intake: Intake;
  private readonly loop: RoundLoop;

  constructor(options: RoundEngineOptions) {
    super();
    const presenceTtlMs = options.presenceTtlMs ?? 30_000;
    if (!(presenceTtlMs > 0)) throw new RangeError('presenceTtlMs must be positive');
    this.store = options.store;
    this.blobs = options.blobs;
    this.ctx = {
      store: options.store,
      blobs: options.blobs,
      log: options.logger.child({ component: 'round-engine' }),
      strategies: createStrategyRegistry(options.strategies),
      models: createModelCache({ store: options.store, blobs: options.blobs }),
      budget: createPrivacyBudget({ store: options.store, clock: options.clock ?? systemClock }),
      clock: options.clock ?? systemClock,
      timer: options.timer ?? systemTimer,
      rng: options.rng ?? createCryptoRng(),
      defaultKey: options.defaultKey ?? null,
      committeeConnector: options.committee ?? null,
      events: this,
      closed: false,
    };
    this.runtimes = new TaskRuntimes(this.ctx);
    this.presence = new Presence(this.ctx, this.runtimes, presenceTtlMs, (rt) => this.loop.maybeSelect(rt));
    this.loop = new RoundLoop(this.ctx, this.presence);
    this.intake = new Intake(this.ctx, this.runtimes, this.loop);
    this.tasks = new TaskService(this.ctx, this.runtimes, this.loop);
  }

  /** Told by the transport when a device has received a whole model version; emits `model-downloaded`. */
  noteModelDownloaded(download: { taskId: string; clientId: string; modelVersion: number }): void {
    this.emit('model-downloaded', download);
  }

  /** The engine's clock (e.g. to stamp when an upload arrived). */
  now(): number {
    return this.ctx.clock.now();
  }

  /** Loads every task and resumes the running ones where they stopped. */
  async start(): Promise<void> {
    for (const task of await this.store.listTasks()) {
      const rt = this.runtimes.forTask(task);
      // A paused task's open round goes on as it would have without the restart (it finishes; no new one opens).
      if (task.status !== 'RUNNING' && task.status !== 'PAUSED') continue;
      // One bad round or task never stops the others from being served: it is failed instead.
      await rt.mutex.run(() => this.loop.resume(rt).catch((error: unknown) => this.loop.recoverTask(rt, error)));
    }
  }

  /** Stops timers and wakes every waiting long-poll. */
  async close(): Promise<void> {
    this.ctx.closed = true;
    for (const rt of this.runtimes.values()) {
      rt.open?.setDeadline(null);
      wake(rt);
      await rt.mutex.run(async () => {
        rt.open?.setAggregator(null);
        rt.he?.dispose();
        rt.he = null;
        await rt.committee?.close();
        rt.committee = null;
      });
    }
  }

  // ------------------------------------------------------------------ tasks

  createTask(
    input: TaskInput & { encryption?: EncryptionInput; strategy?: unknown; committee?: CommitteeInput; calibration?: CalibrationInput },
    model: { topology: Record<string, unknown>; weightSpecs: unknown; weights: Float32Array },
  ): Promise<Task> {
    return this.tasks.createTask(input, model);
  }

  startTask(taskId: string): Promise<Task> {
    return this.tasks.startTask(taskId);
  }

  pauseTask(taskId: string): Promise<Task> {
    return this.tasks.pauseTask(taskId);
  }

  /** Adds calibration rounds after the task's last training round (see TaskService.requestCalibration). */
  requestCalibration(taskId: string, input: CalibrationInput): Promise<Task> {
    return this.tasks.requestCalibration(taskId, input);
  }

  getTask(taskId: string): Promise<Task> {
    return this.tasks.getTask(taskId);
  }

  // ------------------------------------------------------------------ devices

  /**
   * Long-poll for work: resolves with an assignment as soon as the client is
   * selected (for a round after `options.afterRoundNumber`), or `idle` after
   * `waitMs`, or `ended` when the task is over.
   */
  waitForAssignment(client: Client, waitMs: number, signal?: AbortSignal, options?: WaitOptions): Promise<AssignmentResult> {
    return this.presence.waitForAssignment(client, waitMs, signal, options);
  }

  /** Checks an update's header before its payload is read, so bad uploads fail fast. */
  checkUpdateHeader(client: Client, header: UpdateHeaderInput): Promise<{ maxBytes: number }> {
    return this.intake.checkUpdateHeader(client, header);
  }

  /**
   * Accepts an update: validates it, stores its payload, records it and folds
   * it into the round's aggregate. Rejections leave nothing behind. `sha256`: the payload's hex
   * SHA-256 if the transport computed it, else null (see Intake.submitUpdate).
   */
  submitUpdate(client: Client, header: UpdateHeaderInput, payload: Uint8Array, sha256: string | null, arrivedAt: number = this.ctx.clock.now()): Promise<{ acceptedCount: number }> {
    return this.intake.submitUpdate(client, header, payload, sha256, arrivedAt);
  }

  reportEvaluation(
    client: Client,
    report: { roundNumber: number; modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<void> {
    return this.intake.reportEvaluation(client, report);
  }

  /** Reads a model version (0 = current, as in the protocol's DownloadModel) and verifies its digest. */
  async readModel(taskId: string, version = 0): Promise<StoredModel> {
    const rt = await this.runtimes.load(taskId);
    return this.readModelVersion(taskId, version === 0 ? rt.task.currentModelVersion : version);
  }

  /**
   * Reads exactly model version `v` (0 = the initial model) and verifies its digest.
   * The task's current model and recently read versions are served from memory
   * by the model cache (they were hashed when written or verified when read).
   */
  async readModelVersion(taskId: string, v: number): Promise<StoredModel> {
    const rt = await this.runtimes.load(taskId);
    // Only a committed version: the cache may briefly hold the next one before its round closes.
    if (v > rt.task.currentModelVersion) throw new VeilError('not_found', `task ${taskId} has no model version ${v}`);
    return this.ctx.models.read(taskId, v);
  }
}

/** Round-trips a task status from the store to the protocol's naming. */
export type { TaskStatus };
