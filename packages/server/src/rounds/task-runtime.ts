import type { StrategyState } from '../aggregation/strategy.js';
import { decodeStrategyState } from '../aggregation/strategy-state.js';
import { committeeRounds, encryptedRounds, plaintextRounds, withPoissonSampling, type RoundStrategy } from '../aggregation/round-strategy.js';
import { dropRoundBuffers, type CommitteeTask } from '../aggregation/committee-aggregator.js';
import { createEncryptedAggregator, type RoundAggregator } from '../aggregation/round-aggregator.js';
import { strategyStateBlobKey } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import { createHeContext, descriptorHash as hashDescriptor, parseCoordinatorKeyMaterial, type HeContext, type TaskDescriptor } from '@veil/crypto';
import type { Task } from './model.js';
import { updateValueCount } from './sizes.js';
import { createMutex, type Mutex } from './mutex.js';
import type { EngineContext } from './engine-context.js';
import type { OpenRound } from './open-round.js';
import { calibrationStage, encryptedValueCount } from './calibration.js';
import { createStatisticsAggregator } from '../aggregation/statistics.js';
import type { PendingRecord } from './intake.js';

/** Per-task state held in memory; always rebuildable from the store and the blob store. */
export interface TaskRuntime {
  task: Task;
  mutex: Mutex;
  /** The task's open round and its in-memory state, or null (none open, or not loaded). */
  open: OpenRound | null;
  presence: Map<string, number>;
  /** Clients with an open long-poll (count of their open polls): present whatever their last stamp. */
  polling: Map<string, number>;
  /** A selection is queued on the mutex and has not started yet (selections are coalesced). */
  selectQueued: boolean;
  /** Submissions that arrived before the deadline and are still validating/storing outside the lock. */
  inflight: Set<Promise<unknown>>;
  waiters: Set<() => void>;
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

/** Every task's runtime, made on first use from the store. */
export class TaskRuntimes {
  private readonly byId = new Map<string, TaskRuntime>();

  constructor(private readonly ctx: EngineContext) {}

  get(taskId: string): TaskRuntime | undefined {
    return this.byId.get(taskId);
  }

  values(): IterableIterator<TaskRuntime> {
    return this.byId.values();
  }

  /** The runtime of `task`, made (with `task` as its state) if there is none yet. */
  forTask(task: Task): TaskRuntime {
    let rt = this.byId.get(task.id);
    if (rt === undefined) {
      rt = {
        task,
        mutex: createMutex(),
        open: null,
        presence: new Map(),
        polling: new Map(),
        selectQueued: false,
        inflight: new Set(),
        waiters: new Set(),
        he: null,
        strategy: null,
        strategyState: null,
        committee: null,
        pendingRecords: [],
      };
      this.byId.set(task.id, rt);
    }
    return rt;
  }

  /** The runtime of task `taskId`, loading the task from the store if needed; `not_found` if it does not exist. */
  async load(taskId: string): Promise<TaskRuntime> {
    const existing = this.byId.get(taskId);
    if (existing) return existing;
    const task = await this.ctx.store.getTask(taskId);
    if (task === null) throw new VeilError('not_found', `task ${taskId} does not exist`);
    return this.forTask(task);
  }
}

/** Wakes every long-poll waiting on the task (they re-read its state). */
export function wake(rt: TaskRuntime): void {
  for (const waiter of [...rt.waiters]) waiter();
}

/** A committee task's descriptor and custodian client, or null for other tasks. */
export function committeeTask(ctx: EngineContext, rt: TaskRuntime): CommitteeTask | null {
  const settings = rt.task.settings.committee;
  if (settings == null) return null;
  if (rt.committee === null) {
    if (ctx.committeeConnector === null) throw new VeilError('failed_precondition', 'committee task, but no committee connector is configured (VEIL_COMMITTEE_REQUEST_KEY)');
    const bytes = Buffer.from(settings.descriptor, 'base64');
    const descriptor = JSON.parse(bytes.toString('utf8')) as TaskDescriptor;
    const client = ctx.committeeConnector.open(bytes, Buffer.from(settings.descriptorSignature, 'base64'));
    const task: CommitteeTask = { descriptor, descriptorHash: hashDescriptor(descriptor), collect: client.collect, ...(client.stage !== undefined && { stage: client.stage }), ...(client.decrypt !== undefined && { decrypt: client.decrypt }), ...(client.derivePublicPolynomials !== undefined && { derivePublicPolynomials: client.derivePublicPolynomials }), clock: () => ctx.clock.now() };
    rt.committee = {
      task,
      close: async () => {
        dropRoundBuffers(task);
        await client.close();
      },
    };
  }
  return rt.committee.task;
}

export async function heContext(rt: TaskRuntime): Promise<HeContext | null> {
  if (rt.task.encryption === null) return null;
  rt.he ??= await createHeContext(parseCoordinatorKeyMaterial(Buffer.from(rt.task.encryption.coordinatorKey)));
  return rt.he;
}

/** The task's strategy, wrapped for its mode: Poisson selection for DP, homomorphic sums for encryption. */
export async function roundStrategy(ctx: EngineContext, rt: TaskRuntime): Promise<RoundStrategy> {
  if (rt.strategy !== null) return rt.strategy;
  const strategy = withPoissonSampling(ctx.strategies.create(rt.task.settings.strategy));
  const committee = committeeTask(ctx, rt);
  if (committee !== null) {
    rt.strategy = committeeRounds(strategy, committee, rt.task.parameterCount);
    return rt.strategy;
  }
  const he = await heContext(rt);
  rt.strategy = he === null ? plaintextRounds(strategy, rt.task.settings.updateBound) : encryptedRounds(strategy, he, updateValueCount(rt.task));
  return rt.strategy;
}

export async function newAggregator(ctx: EngineContext, rt: TaskRuntime, round: number): Promise<RoundAggregator> {
  const stage = calibrationStage(round, rt.task.settings);
  if (stage !== null) {
    // A calibration round sums statistics reports (aggregation/statistics.ts), not the strategy's updates;
    // a shared-key task's reports are ciphertexts (unpadded, or of d DDG residues), summed as they are (rounds/calibration.ts).
    const he = await heContext(rt);
    if (he !== null) return createEncryptedAggregator(he, encryptedValueCount(stage, rt.task.settings.calibration!, rt.task.settings.privacy));
    const committee = committeeTask(ctx, rt);
    return createStatisticsAggregator(committee === null ? { kind: 'plaintext' } : { kind: 'committee', task: committee }, round, rt.task.parameterCount);
  }
  const strategy = await roundStrategy(ctx, rt);
  return strategy.createRoundAggregator({ round, parameterCount: rt.task.parameterCount, state: await loadStrategyState(ctx, rt) });
}

/** The strategy state stored with the task's current model version (null: none). */
export async function loadStrategyState(ctx: EngineContext, rt: TaskRuntime): Promise<StrategyState | null> {
  const version = rt.task.currentModelVersion;
  if (rt.strategyState?.version === version) return rt.strategyState.state;
  const meta = await ctx.store.getModelVersion(rt.task.id, version);
  if (meta === null) throw new VeilError('internal', `task ${rt.task.id} model version ${version} is missing`);
  const state =
    meta.strategyState === null
      ? null
      : decodeStrategyState(await ctx.blobs.get({ key: strategyStateBlobKey(rt.task.id, version), sha256: meta.strategyState.sha256 }));
  rt.strategyState = { version, state };
  return state;
}
