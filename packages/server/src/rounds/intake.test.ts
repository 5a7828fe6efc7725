/**
 * Update intake on its own: an in-memory store and blob store behind the
 * ports (`FederationStore`, `BlobStore`) and fake time, no database. Checks
 * what a device notices: which updates are accepted and with which count,
 * which are refused and how, that a refused one leaves nothing stored, that
 * updates arriving during a store write are recorded by the next write and
 * acknowledged in arrival order, and that no update is ever counted twice.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { beforeEach, describe, expect, it } from 'vitest';
import { createSeededRng } from '@veil/privacy';
import { float32ToBytes } from '@veil/protocol/codec';
import { createStrategyRegistry } from '../aggregation/registry.js';
import type { RoundAggregator } from '../aggregation/round-aggregator.js';
import type { BlobRef, BlobStore } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import { createLogger } from '../logger.js';
import { createFakeTime, type FakeTime } from './clock.js';
import type { EngineContext, EngineEvents } from './engine-context.js';
import { Intake, type IntakeLoop, type UpdateHeaderInput } from './intake.js';
import type { Client, Round, Submission, Task } from './model.js';
import { createModelCache } from './model-cache.js';
import { createPrivacyBudget } from './privacy-budget.js';
import { OpenRound } from './open-round.js';
import type { FederationStore, RecordSubmissionResult } from './ports.js';
import { TaskRuntimes, type TaskRuntime } from './task-runtime.js';
import { resolveTaskSettings } from './task-settings.js';

const PARAMETERS = 4;
const DEADLINE_MS = 10_000;
const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** The store as the intake sees it: rounds with participants and submissions, recorded atomically per call. */
class MemoryStore {
  readonly tasks = new Map<string, Task>();
  /** roundId -> participants (clientId -> submission once submitted). */
  readonly rounds = new Map<string, { taskId: string; state: Round['state']; participants: Map<string, Submission | null> }>();
  /** Sizes of the `recordSubmissions` calls, in call order. */
  readonly writes: number[] = [];
  private hold: Promise<void> | null = null;

  /** The next `recordSubmissions` waits until the returned function is called. */
  holdNextWrite(): () => void {
    let release!: () => void;
    this.hold = new Promise((resolve) => (release = resolve));
    return release;
  }

  async getTask(id: string): Promise<Task | null> {
    return this.tasks.get(id) ?? null;
  }

  async recordSubmissions(
    roundId: string,
    submissions: readonly Submission[],
    options: { refuseClientReplays?: boolean; refuseDigestReplays?: boolean } = {},
  ): Promise<RecordSubmissionResult[]> {
    this.writes.push(submissions.length);
    const held = this.hold;
    this.hold = null;
    if (held !== null) await held;
    const round = this.rounds.get(roundId)!;
    const replayed = (s: Submission): boolean =>
      [...this.rounds].some(([id, other]) => id !== roundId && other.taskId === round.taskId && other.participants.get(s.clientId)?.sha256 === s.sha256);
    // Ciphertexts: the digest anywhere in the task (before this call) except this client's own in this round, or earlier in the call.
    const digestReplayed = (s: Submission, k: number): boolean =>
      [...this.rounds].some(([id, other]) =>
        other.taskId === round.taskId && [...other.participants].some(([clientId, x]) => x?.sha256 === s.sha256 && !(id === roundId && clientId === s.clientId)),
      ) || submissions.slice(0, k).some((x) => x.sha256 === s.sha256);
    const digestReplays = submissions.map((s, k) => options.refuseDigestReplays === true && digestReplayed(s, k));
    return submissions.map((s, k) => {
      if (options.refuseClientReplays === true && replayed(s)) return { kind: 'replay' };
      if (digestReplays[k]) return { kind: 'replay' };
      if (round.state !== 'COLLECTING') return { kind: 'round_closed', state: round.state };
      if (!round.participants.has(s.clientId)) return { kind: 'not_selected' };
      const earlier = round.participants.get(s.clientId);
      if (earlier != null) return { kind: 'duplicate', sha256: earlier.sha256 };
      round.participants.set(s.clientId, s);
      return { kind: 'accepted', receivedCount: [...round.participants.values()].filter((x) => x !== null).length };
    });
  }

  async listSubmissions(roundId: string): Promise<Submission[]> {
    return [...this.rounds.get(roundId)!.participants.values()].filter((s): s is Submission => s !== null);
  }

  /** Only the methods above exist: any other call fails the test. */
  asPort(): FederationStore {
    return new Proxy(this, {
      get(target, key, receiver) {
        const value: unknown = Reflect.get(target, key, receiver);
        if (value === undefined && typeof key === 'string') throw new Error(`intake called store.${key}, which the fake does not provide`);
        return typeof value === 'function' ? value.bind(target) : value;
      },
    }) as unknown as FederationStore;
  }
}

class MemoryBlobs implements BlobStore {
  readonly records = new Map<string, Uint8Array>();
  private seq = 0;
  async put(key: string, data: Uint8Array): Promise<BlobRef> {
    this.records.set(key, data);
    return { key, sha256: sha256(data), sizeBytes: data.byteLength };
  }
  async append(dir: string, data: Uint8Array, digest?: string): Promise<BlobRef> {
    const key = `${dir}/${this.seq++}`;
    this.records.set(key, data);
    return { key, sha256: digest ?? sha256(data), sizeBytes: data.byteLength };
  }
  async get(ref: { key: string }): Promise<Buffer> {
    const data = this.records.get(ref.key);
    if (data === undefined) throw new VeilError('internal', 'missing blob');
    return Buffer.from(data);
  }
  async delete(key: string): Promise<void> {
    this.records.delete(key);
  }
  async close(): Promise<void> {}
}

/** An aggregate that remembers what was folded into it, in order. */
interface Folded {
  clientId: string;
  exampleCount: number;
  first: number;
  trainingLoss?: number;
}

function recordingAggregator(): RoundAggregator & { added: Folded[] } {
  const added: Folded[] = [];
  return {
    added,
    add(clientId, exampleCount, update, trainingLoss = null) {
      const bytes = update instanceof Uint8Array ? update : update.payload;
      const first = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 4))[0]!;
      added.push({ clientId, exampleCount, first, ...(trainingLoss !== null && { trainingLoss }) });
    },
    get count() {
      return added.length;
    },
    finish: () => null,
    dispose() {},
  };
}

interface Fixture {
  store: MemoryStore;
  blobs: MemoryBlobs;
  time: FakeTime;
  intake: Intake;
  rt: TaskRuntime;
  round: Round;
  aggregator: ReturnType<typeof recordingAggregator>;
  loopCalls: string[];
  accepted: EngineEvents['update-accepted'][0][];
  clients: Client[];
}

/** A running plaintext task whose round 2 (training model version 1) collects from `selected` of 5 devices. */
function setup(options: { selected?: number; previousRound?: { clientId: number; delta: Float32Array } } = {}): Fixture {
  const store = new MemoryStore();
  const blobs = new MemoryBlobs();
  const time = createFakeTime();
  const events = new EventEmitter<EngineEvents>();
  const accepted: Fixture['accepted'] = [];
  events.on('update-accepted', (e) => accepted.push(e));
  const ctx: EngineContext = {
    store: store.asPort(),
    blobs,
    log: createLogger({ level: 'silent' }),
    strategies: createStrategyRegistry(),
    models: createModelCache({ store: store.asPort(), blobs }),
    budget: createPrivacyBudget({ store: store.asPort(), clock: time.clock }),
    clock: time.clock,
    timer: time.timer,
    rng: createSeededRng(1),
    defaultKey: null,
    committeeConnector: null,
    events,
    closed: false,
  };
  const settings = resolveTaskSettings({ name: 't', rounds: 5, clientsPerRound: 5, minClients: 1, maxExampleCount: 100, training: { epochs: 1, batchSize: 8, learningRate: 0.1 } });
  const now = new Date(time.clock.now());
  const task: Task = {
    id: 'task-1', name: 't', status: 'RUNNING', statusReason: null, settings, modelTopology: {}, weightSpecs: [{ name: 'w', shape: [PARAMETERS], dtype: 'float32' }],
    parameterCount: PARAMETERS, encryption: null, currentModelVersion: 1, createdAt: now, updatedAt: now,
  };
  store.tasks.set(task.id, task);
  const clients: Client[] = Array.from({ length: 5 }, (_, k) => ({ id: `client-${k}`, taskId: task.id, name: `d${k}` }));
  const selected = clients.slice(0, options.selected ?? 4).map((c) => c.id);
  if (options.previousRound !== undefined) {
    const { clientId, delta } = options.previousRound;
    const payload = float32ToBytes(delta);
    const id = clients[clientId]!.id;
    const s: Submission = { clientId: id, exampleCount: 1, encoding: 'float32-le', sha256: sha256(payload), sizeBytes: payload.byteLength, blobKey: 'updates/round-1/0' };
    store.rounds.set('round-1', { taskId: task.id, state: 'CLOSED', participants: new Map([[id, s]]) });
  }
  store.rounds.set('round-2', { taskId: task.id, state: 'COLLECTING', participants: new Map(selected.map((id) => [id, null])) });
  const round: Round = {
    id: 'round-2', taskId: task.id, number: 2, state: 'COLLECTING', failureReason: null, baseModelVersion: 1, targetCount: selected.length, minClients: 1,
    receivedCount: 0, deadlineAt: new Date(time.clock.now() + DEADLINE_MS), config: settings.training, fitConfig: {}, summary: null, openedAt: now, closedAt: null,
  };
  const runtimes = new TaskRuntimes(ctx);
  const rt = runtimes.forTask(task);
  const aggregator = recordingAggregator();
  rt.open = new OpenRound(round, { selected, aggregator });
  const loopCalls: string[] = [];
  const loop: IntakeLoop = {
    async aggregate(_rt, reason) {
      // Aggregation takes a while (store writes): devices must not hear back before it ends.
      await new Promise((resolve) => setImmediate(resolve));
      loopCalls.push(`aggregate: ${reason}`);
    },
    async rebuildAggregate() {
      loopCalls.push('rebuild');
    },
    async recoverTask(_rt, error) {
      loopCalls.push(`recover: ${String(error)}`);
    },
  };
  return { store, blobs, time, intake: new Intake(ctx, runtimes, loop), rt, round, aggregator, loopCalls, accepted, clients };
}

function update(delta: Float32Array, options: Partial<UpdateHeaderInput> = {}): { header: UpdateHeaderInput; payload: Uint8Array; sha: string } {
  const payload = float32ToBytes(delta);
  const sha = sha256(payload);
  return {
    payload,
    sha,
    header: { roundNumber: 2, modelVersion: 1, exampleCount: 3, encoding: 'float32-le', payloadSizeBytes: payload.byteLength, sha256: sha, ...options },
  };
}

const delta = (first: number): Float32Array => new Float32Array([first, 0.5, -0.25, 0.125]);

async function refusal(promise: Promise<unknown>): Promise<VeilError> {
  const error = await promise.then(
    () => null,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(VeilError);
  return error as VeilError;
}

let f: Fixture;
beforeEach(() => {
  f = setup();
});

describe('update intake (in-memory store, fake time)', () => {
  it('accepts an on-time update of a selected device: stored, recorded, folded once, announced', async () => {
    const u = update(delta(1), { exampleCount: 7 });
    expect(await f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, u.sha)).toEqual({ acceptedCount: 1 });
    expect(f.store.writes).toEqual([1]);
    expect(await f.store.listSubmissions('round-2')).toMatchObject([{ clientId: 'client-0', exampleCount: 7, sha256: u.sha, sizeBytes: 16 }]);
    expect([...f.blobs.records.values()]).toEqual([u.payload]);
    expect(f.aggregator.added).toEqual([{ clientId: 'client-0', exampleCount: 7, first: 1 }]);
    expect(f.rt.open!.folded.get('client-0')).toEqual({ sha256: u.sha, exampleCount: 7, sizeBytes: 16 });
    expect(f.round.receivedCount).toBe(1);
    expect(f.accepted).toEqual([{ taskId: 'task-1', roundNumber: 2, clientId: 'client-0', receivedCount: 1, targetCount: 4 }]);
    expect(f.loopCalls).toEqual([]);
  });

  it('refuses updates for another round or model, from an unselected device, or after the deadline; nothing is stored', async () => {
    const cases: Array<{ client: Client; header: Partial<UpdateHeaderInput>; code: VeilError['code']; message: RegExp; advanceMs?: number }> = [
      { client: f.clients[0]!, header: { roundNumber: 1 }, code: 'failed_precondition', message: /update is for round 1, the open round is 2/ },
      { client: f.clients[0]!, header: { roundNumber: 3 }, code: 'failed_precondition', message: /open round is 2/ },
      { client: f.clients[0]!, header: { modelVersion: 0 }, code: 'failed_precondition', message: /based on model 0, round 2 trains model 1/ },
      { client: f.clients[4]!, header: {}, code: 'permission_denied', message: /not selected for round 2/ },
      { client: f.clients[1]!, header: {}, code: 'failed_precondition', message: /deadline has passed/, advanceMs: DEADLINE_MS },
    ];
    for (const c of cases) {
      if (c.advanceMs !== undefined) await f.time.advance(c.advanceMs);
      const u = update(delta(2), c.header);
      const error = await refusal(f.intake.submitUpdate(c.client, u.header, u.payload, u.sha));
      expect(error.code).toBe(c.code);
      expect(error.message).toMatch(c.message);
    }
    expect(f.store.writes).toEqual([]);
    expect(f.blobs.records.size).toBe(0);
    expect(f.aggregator.added).toEqual([]);
  });

  it('refuses an oversized update before reading it, and one whose size or digest disagrees with its header', async () => {
    const big = update(delta(1), { payloadSizeBytes: PARAMETERS * 4 + 4 });
    const header = await refusal(f.intake.checkUpdateHeader(f.clients[0]!, big.header));
    expect(header.code).toBe('resource_exhausted');
    expect(header.message).toMatch(/update of 20 bytes exceeds the task's 16/);
    const oversized = float32ToBytes(new Float32Array(PARAMETERS + 1));
    const sha = sha256(oversized);
    const sent = await refusal(f.intake.submitUpdate(f.clients[0]!, { ...big.header, sha256: sha }, oversized, sha));
    expect(sent.code).toBe('resource_exhausted');
    const short = update(new Float32Array(PARAMETERS - 1));
    expect((await refusal(f.intake.submitUpdate(f.clients[0]!, short.header, short.payload, short.sha))).message).toMatch(/must be 16 bytes for 4 parameters/);
    const u = update(delta(1));
    expect((await refusal(f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, sha256(Buffer.from('other'))))).message).toMatch(/SHA-256 does not match/);
    // Not hashed by the transport (null, as over gRPC): intake hashes it, with the same refusal.
    const misdeclared = await refusal(f.intake.submitUpdate(f.clients[0]!, { ...u.header, sha256: sha256(Buffer.from('other')) }, u.payload, null));
    expect([misdeclared.code, misdeclared.message]).toEqual(['invalid_argument', 'payload SHA-256 does not match the header']);
    expect(f.store.writes).toEqual([]);
    expect(f.blobs.records.size).toBe(0);
    // Still open for the same device's proper update, hashed by intake.
    expect(await f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, null)).toEqual({ acceptedCount: 1 });
  });

  it('refuses non-finite values and out-of-range example counts; nothing is stored', async () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      const u = update(new Float32Array([0.1, bad, 0.2, 0.3]));
      const error = await refusal(f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, u.sha));
      expect(error.code).toBe('invalid_argument');
      expect(error.message).toMatch(/finite/);
    }
    for (const exampleCount of [0, 101, 1.5]) {
      const u = update(delta(1), { exampleCount });
      expect((await refusal(f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, u.sha))).message).toMatch(/exampleCount must be from 1 to 100/);
    }
    expect(f.store.writes).toEqual([]);
    expect(f.blobs.records.size).toBe(0);
    expect(f.aggregator.added).toEqual([]);
  });

  it('when the round asks for the training loss (q-FedAvg), refuses an update without a valid one and folds the loss with the update', async () => {
    f.round.fitConfig = { reportTrainingLoss: true };
    const u = update(delta(1));
    expect((await refusal(f.intake.submitUpdate(f.clients[0]!, u.header, u.payload, u.sha))).message).toMatch(/asks for the training loss/);
    for (const trainingLoss of [-0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
      const bad = update(delta(1), { trainingLoss });
      expect((await refusal(f.intake.submitUpdate(f.clients[0]!, bad.header, bad.payload, bad.sha))).message).toMatch(/trainingLoss must be a finite number >= 0/);
    }
    expect(f.store.writes).toEqual([]);
    expect(f.blobs.records.size).toBe(0);
    const good = update(delta(1), { trainingLoss: 0.75 });
    expect(await f.intake.submitUpdate(f.clients[0]!, good.header, good.payload, good.sha)).toEqual({ acceptedCount: 1 });
    expect((await f.store.listSubmissions('round-2'))[0]!.trainingLoss).toBe(0.75);
    expect(f.aggregator.added).toEqual([{ clientId: 'client-0', exampleCount: 3, first: 1, trainingLoss: 0.75 }]);
  });

  it('refuses a plaintext update its device already had accepted in an earlier round (replay), and erases its stored copy', async () => {
    f = setup({ previousRound: { clientId: 0, delta: delta(9) } });
    const replay = update(delta(9));
    const error = await refusal(f.intake.submitUpdate(f.clients[0]!, replay.header, replay.payload, replay.sha));
    expect(error.code).toBe('invalid_argument');
    expect(error.message).toMatch(/already submitted \(replay\)/);
    expect(f.blobs.records.size).toBe(0);
    expect(await f.store.listSubmissions('round-2')).toEqual([]);
    // Another device may send equal bytes (e.g. the same synthetic delta): not a replay.
    expect(await f.intake.submitUpdate(f.clients[1]!, replay.header, replay.payload, replay.sha)).toEqual({ acceptedCount: 1 });
  });

  it('records updates that arrive during a store write with the next write, and acknowledges them in arrival order', async () => {
    const release = f.store.holdNextWrite();
    const acks: string[] = [];
    const submit = (k: number) => {
      const u = update(delta(10 + k), { exampleCount: k + 1 });
      return f.intake.submitUpdate(f.clients[k]!, u.header, u.payload, u.sha).then((r) => {
        acks.push(`client-${k}:${r.acceptedCount}`);
        f.loopCalls.push(`ack client-${k}`);
        return r;
      });
    };
    const first = submit(0);
    await until(() => f.store.writes.length === 1);
    const later = [submit(2), submit(1), submit(3)];
    await until(() => f.rt.pendingRecords.length === 3);
    // Nothing is acknowledged while the write that records it has not returned.
    expect(acks).toEqual([]);
    release();
    await Promise.all([first, ...later]);
    expect(f.store.writes).toEqual([1, 3]);
    expect(acks).toEqual(['client-0:1', 'client-2:2', 'client-1:3', 'client-3:4']);
    expect(f.aggregator.added.map((a) => a.clientId)).toEqual(['client-0', 'client-2', 'client-1', 'client-3']);
    expect(f.accepted.map((e) => e.receivedCount)).toEqual([1, 2, 3, 4]);
    // The last update completed the round: it aggregates once, before that batch is answered.
    expect(f.loopCalls).toEqual(['ack client-0', 'aggregate: all selected clients submitted', 'ack client-2', 'ack client-1', 'ack client-3']);
  });

  it('counts every device once: concurrent second updates, retries and updates the store already holds are never folded again', async () => {
    const release = f.store.holdNextWrite();
    const a = update(delta(1));
    const first = f.intake.submitUpdate(f.clients[0]!, a.header, a.payload, a.sha);
    await until(() => f.store.writes.length === 1);
    // During the write: device 1 sends two different updates, device 2 the same one twice.
    const b1 = update(delta(2));
    const b2 = update(delta(3));
    const c = update(delta(4));
    const during = [
      f.intake.submitUpdate(f.clients[1]!, b1.header, b1.payload, b1.sha),
      f.intake.submitUpdate(f.clients[1]!, b2.header, b2.payload, b2.sha),
      f.intake.submitUpdate(f.clients[2]!, c.header, c.payload, c.sha),
      f.intake.submitUpdate(f.clients[2]!, c.header, c.payload, c.sha),
    ];
    await until(() => f.rt.pendingRecords.length === 4);
    release();
    const results = await Promise.allSettled([first, ...during]);
    expect(results.map((r) => (r.status === 'fulfilled' ? r.value.acceptedCount : (r.reason as VeilError).code))).toEqual([1, 2, 'already_exists', 3, 'already_accepted']);
    // A retry after acceptance (e.g. a lost acknowledgement) is "already accepted", a different update "already exists".
    expect((await refusal(f.intake.submitUpdate(f.clients[0]!, a.header, a.payload, a.sha))).code).toBe('already_accepted');
    expect((await refusal(f.intake.submitUpdate(f.clients[0]!, b2.header, b2.payload, b2.sha))).code).toBe('already_exists');
    // An update the store recorded but memory does not know (e.g. recorded before a restart) is not folded again.
    const d = update(delta(5));
    const recorded: Submission = { clientId: 'client-3', exampleCount: 1, encoding: 'float32-le', sha256: d.sha, sizeBytes: 16, blobKey: 'elsewhere' };
    f.store.rounds.get('round-2')!.participants.set('client-3', recorded);
    expect((await refusal(f.intake.submitUpdate(f.clients[3]!, d.header, d.payload, d.sha))).code).toBe('already_accepted');

    expect(f.aggregator.added.map((x) => [x.clientId, x.first])).toEqual([['client-0', 1], ['client-1', 2], ['client-2', 4]]);
    expect((await f.store.listSubmissions('round-2')).map((s) => s.clientId)).toEqual(['client-0', 'client-1', 'client-2', 'client-3']);
    // Only the recorded updates' bytes remain stored.
    expect([...f.blobs.records.values()].map((bytes) => sha256(bytes)).sort()).toEqual([a.sha, b1.sha, c.sha].sort());
    expect(f.accepted.map((e) => e.clientId)).toEqual(['client-0', 'client-1', 'client-2']);
  });
});

/** Lets the intake's promises run until `condition` holds (no timers: the fakes resolve at once). */
async function until(condition: () => boolean): Promise<void> {
  for (let i = 0; i < 1_000 && !condition(); i++) await new Promise((resolve) => setImmediate(resolve));
  expect(condition()).toBe(true);
}
