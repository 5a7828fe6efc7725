/**
 * The round loop and update intake on the embedded database (PGlite, a real
 * store and blob store) with fake time: deadlines and long-poll timeouts run
 * through the injected timer, so a 10-second deadline passes instantly and
 * exactly when the test says.
 */
import { createHash, randomUUID } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSeededRng } from '@veil/privacy';
import { float32ToBytes } from '@veil/protocol/codec';
import { updateBlobDir, type BlobStore } from '../blobs/blob-store.js';
import { createLogger } from '../logger.js';
import type { FederationStore } from './ports.js';
import { createFakeTime } from './clock.js';
import { RoundEngine } from './engine.js';
import type { Client } from './model.js';
import type { RoundAggregator } from '../aggregation/round-aggregator.js';
import type { RoundStrategy } from '../aggregation/round-strategy.js';
import type { RoundLoop } from './round-loop.js';
import type { TaskRuntimes } from './task-runtime.js';
import { VeilError } from '../errors.js';
import { closeEmbeddedStore, openEmbeddedStore, type EmbeddedStore } from '../../test/embedded-store.js';

const DEADLINE_MS = 10_000;
let dir: string;
let store: FederationStore;
let blobs: BlobStore;
let opened: EmbeddedStore | undefined;

beforeAll(async () => {
  opened = await openEmbeddedStore('veil-loop-');
  ({ dir, store, blobs } = opened);
}, 240_000);

afterAll(() => closeEmbeddedStore(opened));

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

async function client(taskId: string, name: string): Promise<Client> {
  return store.createClient({ id: randomUUID(), taskId, name, credentialHash: sha256(Buffer.from(randomUUID())) });
}

function header(round: number, delta: Float32Array, exampleCount: number) {
  const payload = float32ToBytes(delta);
  return {
    payload,
    sha: sha256(payload),
    header: { roundNumber: round, modelVersion: round - 1, exampleCount, encoding: 'float32-le' as const, payloadSizeBytes: payload.byteLength, sha256: sha256(payload) },
  };
}

/** Waits (in real time, at most 20 s) until `condition` holds: the engine's store writes are real. */
async function eventually(condition: () => boolean | Promise<boolean>): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error('condition not reached');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (error) {
    return (error as VeilError).code + ': ' + (error as VeilError).message;
  }
  return 'resolved';
}

describe('round loop with fake time (PGlite)', () => {
  it('closes a round at its deadline with the updates in, fails one without, and refuses late and duplicate updates', async () => {
    const time = createFakeTime();
    const engine = new RoundEngine({ store, blobs, logger: createLogger({ level: 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(3) });
    await engine.start();
    try {
      const weights = Float32Array.from([1, 2, 3]);
      const task = await engine.createTask(
        { name: 'loop', rounds: 2, clientsPerRound: 2, minClients: 1, minAvailableClients: 2, roundDeadlineMs: DEADLINE_MS, training: { epochs: 1, batchSize: 1, learningRate: 0.1 } },
        { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [3], dtype: 'float32' }], weights },
      );
      const [a, b] = [await client(task.id, 'a'), await client(task.id, 'b')];
      await engine.startTask(task.id);
      // Both long-poll; the second poll makes two available: both are selected without time passing.
      const [assignA, assignB] = await Promise.all([engine.waitForAssignment(a, 60_000), engine.waitForAssignment(b, 60_000)]);
      expect(assignA.kind).toBe('assignment');
      expect(assignB.kind).toBe('assignment');
      const round1 = (await store.getLatestRound(task.id))!;
      expect(round1).toMatchObject({ number: 1, state: 'COLLECTING', targetCount: 2 });
      expect(round1.deadlineAt.getTime()).toBe(time.clock.now() + DEADLINE_MS);

      const upA = header(1, Float32Array.from([0.5, -1, 2]), 4);
      expect(await engine.submitUpdate(a, upA.header, upA.payload, upA.sha)).toEqual({ acceptedCount: 1 });
      expect(await codeOf(engine.submitUpdate(a, upA.header, upA.payload, upA.sha))).toMatch(/^already_accepted: .*round 1 \(same payload\)/);

      // One millisecond before the deadline nothing happens; at the deadline the round closes with A's update.
      await time.advance(DEADLINE_MS - 1);
      expect((await store.getLatestRound(task.id))!.state).toBe('COLLECTING');
      const upB = header(1, Float32Array.from([9, 9, 9]), 1);
      const closing = new Promise((resolve) => engine.once('round-closed', resolve));
      await time.advance(1);
      expect(await codeOf(engine.submitUpdate(b, upB.header, upB.payload, upB.sha))).toMatch(/^failed_precondition: /);
      await closing;
      const closed = (await store.getRound(task.id, 1))!;
      expect(closed).toMatchObject({ state: 'CLOSED', receivedCount: 1, summary: { participants: 1, dropped: 1, modelVersion: 1 } });
      const model = await engine.readModel(task.id);
      expect(Array.from(new Float32Array(model.bytes.buffer, model.bytes.byteOffset, 3))).toEqual([1.5, 1, 5]);

      // Round 2 selected the present devices at once; nobody submits, so its deadline fails it and the task ends.
      await eventually(async () => (await store.getLatestRound(task.id))?.state === 'COLLECTING');
      expect((await store.getLatestRound(task.id))!.number).toBe(2);
      const ended = new Promise((resolve) => engine.once('task-ended', resolve));
      await time.advance(DEADLINE_MS);
      await ended;
      expect((await store.getRound(task.id, 2))!).toMatchObject({
        state: 'FAILED',
        failureReason: 'deadline passed with 0 updates, fewer than the minimum of 1',
      });
      expect((await engine.getTask(task.id)).status).toBe('COMPLETED');
      expect((await engine.waitForAssignment(a, 5_000)).kind).toBe('ended');
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('a long-poll after round n waits through round n and answers with round n+1 when it opens', async () => {
    const time = createFakeTime();
    const engine = new RoundEngine({ store, blobs, logger: createLogger({ level: 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(5) });
    await engine.start();
    try {
      const task = await engine.createTask(
        { name: 'ahead', rounds: 2, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, roundDeadlineMs: DEADLINE_MS, training: { epochs: 1, batchSize: 1, learningRate: 0.1 } },
        { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [2], dtype: 'float32' }], weights: Float32Array.from([0, 0]) },
      );
      const a = await client(task.id, 'a');
      await engine.startTask(task.id);
      const first = await engine.waitForAssignment(a, 60_000);
      expect(first).toMatchObject({ kind: 'assignment', round: { number: 1 } });
      // Before its update is in, a plain poll answers round 1 again; a poll after round 1 waits.
      expect(await engine.waitForAssignment(a, 60_000)).toMatchObject({ kind: 'assignment', round: { number: 1 } });
      let answer: unknown = null;
      const ahead = engine.waitForAssignment(a, 60_000, undefined, { afterRoundNumber: 1 }).then((r) => (answer = r));
      await eventually(() => time.pending > 1); // the round's deadline and this poll's wait
      expect(answer).toBeNull();
      // The update closes round 1 (one client per round); round 2 opens, selects the polling device and answers it, no time passing.
      const up = header(1, Float32Array.from([1, 1]), 1);
      expect(await engine.submitUpdate(a, up.header, up.payload, up.sha)).toEqual({ acceptedCount: 1 });
      await ahead;
      expect(answer).toMatchObject({ kind: 'assignment', round: { number: 2 }, model: { version: 1 } });
      // Polls after the last round the task runs see it end.
      const up2 = header(2, Float32Array.from([2, 2]), 1);
      const ended = new Promise((resolve) => engine.once('task-ended', resolve));
      const last = engine.waitForAssignment(a, 60_000, undefined, { afterRoundNumber: 2 });
      await engine.submitUpdate(a, up2.header, up2.payload, up2.sha);
      await ended;
      expect(await last).toMatchObject({ kind: 'ended', taskStatus: 'COMPLETED' });
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('a long-poll with nothing to do answers idle exactly when its wait has passed on the injected timer', async () => {
    const time = createFakeTime();
    const engine = new RoundEngine({ store, blobs, logger: createLogger({ level: 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(4) });
    await engine.start();
    try {
      const task = await engine.createTask(
        { name: 'idle', rounds: 1, clientsPerRound: 3, minClients: 3, minAvailableClients: 3, roundDeadlineMs: DEADLINE_MS, training: { epochs: 1, batchSize: 1, learningRate: 0.1 } },
        { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [2], dtype: 'float32' }], weights: Float32Array.from([0, 0]) },
      );
      const a = await client(task.id, 'a');
      await engine.startTask(task.id);
      let answer: unknown = null;
      const poll = engine.waitForAssignment(a, 30_000).then((r) => (answer = r));
      await eventually(() => time.pending > 0);
      await time.advance(29_999);
      expect(answer).toBeNull();
      await time.advance(1);
      await poll;
      expect(answer).toMatchObject({ kind: 'idle', currentRound: 1 });
    } finally {
      await engine.close();
    }
  }, 120_000);
});

const training = { epochs: 1, batchSize: 1, learningRate: 0.1 };

/** An engine on the shared PGlite store with fake time (and `blobStore`, default the shared one); closed on dispose. */
async function startEngine(seed: number, blobStore: BlobStore = blobs) {
  const time = createFakeTime();
  const engine = new RoundEngine({ store, blobs: blobStore, logger: createLogger({ level: 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(seed) });
  await engine.start();
  return { time, engine, [Symbol.asyncDispose]: () => engine.close() };
}

/** A task with `weights` whose `devices` devices all long-poll and are selected for round 1 (selection waits for all of them). */
async function runningTask(engine: RoundEngine, settings: { name: string; rounds: number; minClients: number }, weights: Float32Array, devices: number) {
  const task = await engine.createTask(
    { ...settings, clientsPerRound: devices, minAvailableClients: devices, roundDeadlineMs: DEADLINE_MS, training },
    { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [weights.length], dtype: 'float32' }], weights },
  );
  const clients: Client[] = [];
  for (let k = 0; k < devices; k++) clients.push(await client(task.id, `d${k}`));
  await engine.startTask(task.id);
  const assignments = await Promise.all(clients.map((c) => engine.waitForAssignment(c, 60_000)));
  expect(assignments.map((x) => x.kind)).toEqual(clients.map(() => 'assignment'));
  return { task, clients };
}

/** The first `count` values of a model version's float32 bytes. */
const valuesOf = (model: { bytes: Buffer }, count: number): number[] => Array.from(new Float32Array(model.bytes.buffer, model.bytes.byteOffset, count));

/** The engine's blob store with reads of chosen keys failing (a stored update lost or unreadable). */
function failingReads(inner: BlobStore): BlobStore & { failing: Set<string> } {
  const failing = new Set<string>();
  return {
    failing,
    put: (key, data, digest) => inner.put(key, data, digest),
    append: (dir, data, digest) => inner.append(dir, data, digest),
    get: async (ref) => {
      if (failing.has(ref.key)) throw new VeilError('internal', `blob ${ref.key} unreadable`);
      return inner.get(ref);
    },
    delete: (key) => inner.delete(key),
    close: async () => {},
  };
}

/** The engine's parts, white-box (private fields at runtime). */
const partsOf = (engine: RoundEngine) => engine as unknown as { runtimes: TaskRuntimes; loop: RoundLoop };

describe('round loop: early close, too few updates, a failed rebuild (PGlite, fake time)', () => {
  it('closes a round as soon as every selected device has submitted, without waiting for the deadline, and cancels it', async () => {
    await using fixture = await startEngine(5);
    const { engine, time } = fixture;
    const { task, clients: [a, b] } = await runningTask(engine, { name: 'early', rounds: 1, minClients: 2 }, Float32Array.from([0, 0]), 2);
    const upA = header(1, Float32Array.from([1, 2]), 1);
    const upB = header(1, Float32Array.from([3, 4]), 3);
    expect(await engine.submitUpdate(a!, upA.header, upA.payload, upA.sha)).toEqual({ acceptedCount: 1 });
    const ended = new Promise((resolve) => engine.once('task-ended', resolve));
    expect(await engine.submitUpdate(b!, upB.header, upB.payload, upB.sha)).toEqual({ acceptedCount: 2 });
    await ended;
    // No time passed: the round closed on the last update, with both (example-weighted mean 2.5, 3.5).
    expect(await store.getRound(task.id, 1)).toMatchObject({ state: 'CLOSED', receivedCount: 2, summary: { participants: 2, dropped: 0, modelVersion: 1 } });
    expect((await engine.getTask(task.id)).status).toBe('COMPLETED');
    expect(valuesOf(await engine.readModel(task.id), 2)).toEqual([2.5, 3.5]);
    // The deadline was cancelled with the round: nothing is left on the timer.
    expect(time.pending).toBe(0);
  }, 120_000);

  it('fails a round at its deadline with fewer updates than its minimum: the model stays, the next round opens', async () => {
    await using fixture = await startEngine(6);
    const { engine, time } = fixture;
    const { task, clients } = await runningTask(engine, { name: 'too-few', rounds: 3, minClients: 2 }, Float32Array.from([1, 1]), 3);
    const up = header(1, Float32Array.from([5, 5]), 1);
    expect(await engine.submitUpdate(clients[0]!, up.header, up.payload, up.sha)).toEqual({ acceptedCount: 1 });
    const failed = new Promise((resolve) => engine.once('round-failed', resolve));
    const opened = new Promise((resolve) => engine.once('round-opened', resolve));
    await time.advance(DEADLINE_MS);
    await Promise.all([failed, opened]);
    expect(await store.getRound(task.id, 1)).toMatchObject({ state: 'FAILED', receivedCount: 1, failureReason: 'deadline passed with 1 updates, fewer than the minimum of 2' });
    expect((await engine.getTask(task.id)).currentModelVersion).toBe(0);
    expect(valuesOf(await engine.readModel(task.id), 2)).toEqual([1, 1]);
    expect(await store.getLatestRound(task.id)).toMatchObject({ number: 2, baseModelVersion: 0 });
  }, 120_000);

  it('a rebuild that cannot read a stored update frees the partial aggregate; the round then fails at its deadline and the task goes on', async () => {
    const flaky = failingReads(blobs);
    await using fixture = await startEngine(7, flaky);
    const { engine, time } = fixture;
    const { task, clients } = await runningTask(engine, { name: 'rebuild', rounds: 2, minClients: 2 }, Float32Array.from([0, 0, 0]), 3);
    for (const [k, d] of clients.slice(0, 2).entries()) {
      const up = header(1, Float32Array.from([k, k, k]), 1);
      await engine.submitUpdate(d, up.header, up.payload, up.sha);
    }
    const round = (await store.getLatestRound(task.id))!;
    const submissions = await store.listSubmissions(round.id);
    expect(submissions).toHaveLength(2);
    flaky.failing.add(submissions[1]!.blobKey);

    // Count the aggregates the rebuild makes and frees (the task's strategy, wrapped).
    const { runtimes, loop } = partsOf(engine);
    const rt = runtimes.get(task.id)!;
    const made: { disposed: number }[] = [];
    const inner = rt.strategy!;
    rt.strategy = {
      ...inner,
      createRoundAggregator(input): RoundAggregator {
        const aggregator = inner.createRoundAggregator(input);
        const record = { disposed: 0 };
        made.push(record);
        return Object.assign(Object.create(aggregator) as RoundAggregator, {
          dispose: () => {
            record.disposed++;
            aggregator.dispose();
          },
        });
      },
    } satisfies RoundStrategy;
    const open = rt.open!;
    await expect(rt.mutex.run(() => loop.rebuildAggregate(rt, open))).rejects.toThrow(/unreadable/);
    expect(made).toEqual([{ disposed: 1 }]);
    expect(open.aggregator).toBeNull();
    expect(open.folded.size).toBe(0);

    // At the deadline the round cannot be aggregated (its update is unreadable): it fails, the task goes on.
    const failed = new Promise((resolve) => engine.once('round-failed', resolve));
    await time.advance(DEADLINE_MS);
    await failed;
    expect(await store.getRound(task.id, 1)).toMatchObject({ state: 'FAILED', failureReason: expect.stringMatching(/^could not resume round 1: internal error/) });
    await eventually(async () => (await store.getLatestRound(task.id))?.number === 2);
    // The deadline's own rebuild failed the same way and freed its aggregate too (a third, if any, is round 2's).
    expect(made.slice(0, 2)).toEqual([{ disposed: 1 }, { disposed: 1 }]);
    expect((await engine.getTask(task.id)).status).toBe('RUNNING');
  }, 120_000);
});

describe('plaintext round end when the store holds an update the aggregate lacks (PGlite, fake time)', () => {
  // A recording whose answer was lost: the round must close with every recorded update, exact
  // FedAvg and summary. (d368405 closed from the aggregate in memory without listing the store's
  // updates and failed this check: 2 of 3 counted. It was reverted; this test stays.)
  it('the round closes from the store\'s list with every recorded update', async () => {
    await using fixture = await startEngine(22);
    const { engine, time } = fixture;
    const { task, clients } = await runningTask(engine, { name: 'round-end-lost-answer', rounds: 1, minClients: 2 }, new Float32Array(4), 3);
    // Device k's update: every value k + 1, weight 10·(k+1).
    const [u0, u1, u2] = [0, 1, 2].map((k) => header(1, new Float32Array(4).fill(k + 1), 10 * (k + 1))) as [ReturnType<typeof header>, ReturnType<typeof header>, ReturnType<typeof header>];
    expect(await engine.submitUpdate(clients[0]!, u0.header, u0.payload, u0.sha)).toEqual({ acceptedCount: 1 });
    expect(await engine.submitUpdate(clients[1]!, u1.header, u1.payload, u1.sha)).toEqual({ acceptedCount: 2 });
    // Device 2's update recorded in the store behind the engine's back: its aggregate holds two updates, the store three.
    const open = await store.getLatestRound(task.id);
    const ref = await blobs.append(updateBlobDir(task.id), u2.payload, u2.sha);
    const [recorded] = await store.recordSubmissions(open!.id, [
      { clientId: clients[2]!.id, exampleCount: 30, trainedExamples: null, trainingLoss: null, encoding: 'float32-le', sha256: ref.sha256, sizeBytes: ref.sizeBytes, blobKey: ref.key },
    ]);
    expect(recorded).toMatchObject({ kind: 'accepted', receivedCount: 3 });
    // The deadline closes the round (two updates in memory reach the minimum).
    await time.advance(DEADLINE_MS + 1);
    await eventually(async () => (await store.getRound(task.id, 1))?.state === 'CLOSED');
    const round = await store.getRound(task.id, 1);
    expect(round?.summary).toMatchObject({ participants: 3, dropped: 0, examples: 60, modelVersion: 1 });
    // (10·1 + 20·2 + 30·3) / 60 = 140/60
    expect(valuesOf(await engine.readModelVersion(task.id, 1), 4)).toEqual(new Array(4).fill(Math.fround(140 / 60)));
    const events = await store.listRoundEvents(round!.id);
    expect(events.map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
  }, 120_000);
});

describe('update storage across rounds (PGlite, fake time)', () => {
  it("a task's rounds append their updates to one segment: only its first round creates a file", async () => {
    await using fixture = await startEngine(23);
    const { engine } = fixture;
    const { task, clients: [device] } = await runningTask(engine, { name: 'shared-segment', rounds: 3, minClients: 1 }, Float32Array.from([0, 0]), 1);
    for (let number = 1; number <= 3; number++) {
      if (number > 1) expect((await engine.waitForAssignment(device!, 60_000)).kind).toBe('assignment');
      const up = header(number, Float32Array.from([number, number]), 1);
      const closed = new Promise((resolve) => engine.once(number === 3 ? 'task-ended' : 'round-opened', resolve));
      expect(await engine.submitUpdate(device!, up.header, up.payload, up.sha)).toEqual({ acceptedCount: 1 });
      await closed;
    }
    const keys: string[] = [];
    for (let number = 1; number <= 3; number++) {
      const round = await store.getRound(task.id, number);
      expect(round).toMatchObject({ state: 'CLOSED', receivedCount: 1 });
      keys.push(...(await store.listSubmissions(round!.id)).map((s) => s.blobKey));
    }
    expect(keys).toHaveLength(3);
    const segments = new Set(keys.map((k) => k.split('#')[0]));
    expect(segments.size).toBe(1);
    expect([...segments][0]).toMatch(new RegExp(`^${updateBlobDir(task.id)}/[0-9a-f-]{36}\\.seg$`));
    expect(await readdir(join(dir, 'blobs', updateBlobDir(task.id)))).toEqual([[...segments][0]!.split('/').at(-1)]);
    // Each round's mean update (1, 2, 3) applied in turn to the zero model, each read back from the shared segment.
    expect(valuesOf(await engine.readModel(task.id), 2)).toEqual([6, 6]);
  }, 120_000);
});
