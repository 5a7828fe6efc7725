/**
 * The plaintext round end started ahead of its last record statement (RoundLoop.startRoundEnd):
 * when a group commit's updates complete the round, they are folded and the next model is
 * aggregated (and its digest computed) while the statement commits, then written once it
 * accepted; the aggregation is used only if the statement recorded exactly them. On the embedded database (PGlite, a real store and blob store) with fake time; the
 * store and blob store are wrapped to see (and hold) the final statement and the model write.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSeededRng } from '@veil/privacy';
import { float32ToBytes } from '@veil/protocol/codec';
import type { BlobStore } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import { createLogger } from '../logger.js';
import type { Database } from '../persistence/database.js';
import type { FederationStore } from './ports.js';
import { createFakeTime } from './clock.js';
import { RoundEngine } from './engine.js';
import type { Client, Task } from './model.js';
import { closeEmbeddedStore, openEmbeddedStore, type EmbeddedStore } from '../../test/embedded-store.js';

const DEADLINE_MS = 10_000;
const PARAMETERS = 4;
let dir: string;
let db: Database;
let store: FederationStore;
let blobs: BlobStore;

let opened: EmbeddedStore | undefined;

beforeAll(async () => {
  opened = await openEmbeddedStore('veil-round-end-');
  ({ dir, db, store, blobs } = opened);
}, 240_000);

afterAll(() => closeEmbeddedStore(opened));

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const training = { epochs: 1, batchSize: 1, learningRate: 0.1 };

/**
 * What the engine does with the store and blob store, in order: each record statement's start and
 * end (with its batch size), each model blob write (and whether its digest came with it, i.e. was
 * computed before), each list of a round's updates. A statement that completes its round runs
 * through `hold.then` (default: the statement as it is).
 */
function instrumented(hold: { then?: (run: () => Promise<unknown[]>) => Promise<unknown[]> } = {}) {
  const log: string[] = [];
  const wrap = <T extends object>(inner: T, methods: Record<string, (target: T, args: unknown[]) => unknown>): T =>
    new Proxy(inner, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        const method = methods[prop as string];
        if (method !== undefined) return (...args: unknown[]) => method(target, args);
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  const wrappedStore = wrap(store, {
    recordSubmissions: async (target, args) => {
      const n = (args[1] as unknown[]).length;
      log.push(`record> ${n}`);
      const run = () => (target.recordSubmissions as (...a: unknown[]) => Promise<unknown[]>).apply(target, args);
      const results = hold.then !== undefined && (await completes(args[0] as string, n)) ? await hold.then(run) : await run();
      log.push(`record< ${n}`);
      return results;
    },
    listSubmissions: (target, args) => {
      log.push('list');
      return (target.listSubmissions as (...a: unknown[]) => unknown).apply(target, args);
    },
  });
  const write = (target: BlobStore, args: unknown[]) => {
    // (Not version 0: the task's initial model.)
    if (String(args[0]).endsWith('.bin') && !String(args[0]).endsWith('/0.bin')) {
      log.push(`model> ${String(args[0]).split('/').at(-1)}${args[2] === undefined ? '' : ' (digest given)'}`);
    }
    return (target.write ?? target.put).apply(target, args as Parameters<BlobStore['put']>);
  };
  const wrappedBlobs = wrap(blobs, { write, put: write });
  return { store: wrappedStore, blobs: wrappedBlobs, log };
}

/** True when `n` more updates complete the round `roundId` (the store's count). */
async function completes(roundId: string, n: number): Promise<boolean> {
  const rows = await db.prisma.round.findUnique({ where: { id: roundId } });
  return rows !== null && rows.receivedCount + n >= rows.targetCount;
}

async function startEngine(wrapped: { store: FederationStore; blobs: BlobStore }, seed: number) {
  const time = createFakeTime();
  const engine = new RoundEngine({ store: wrapped.store, blobs: wrapped.blobs, logger: createLogger({ level: (process.env['T_LOG'] ?? 'silent') as 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(seed) });
  await engine.start();
  return { engine, time };
}

async function setup(wrapped: { store: FederationStore; blobs: BlobStore }, seed: number, rounds: number, minClients: number) {
  const { engine, time } = await startEngine(wrapped, seed);
  const task = await engine.createTask(
    { name: `round-end-${seed}`, rounds, minClients, clientsPerRound: 3, minAvailableClients: 3, roundDeadlineMs: DEADLINE_MS, training },
    { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [PARAMETERS], dtype: 'float32' }], weights: new Float32Array(PARAMETERS) },
  );
  const clients: Client[] = [];
  for (let k = 0; k < 3; k++) clients.push(await store.createClient({ id: randomUUID(), taskId: task.id, name: `d${k}`, credentialHash: sha256(Buffer.from(randomUUID())) }));
  await engine.startTask(task.id);
  await assigned(engine, clients);
  return { engine, time, task, clients };
}

async function assigned(engine: RoundEngine, clients: readonly Client[]): Promise<void> {
  const assignments = await Promise.all(clients.map((c) => engine.waitForAssignment(c, 60_000)));
  expect(assignments.map((x) => x.kind)).toEqual(clients.map(() => 'assignment'));
}

/** An update whose every value is `value`, for round `round`. */
function update(round: number, value: number, exampleCount: number) {
  const payload = float32ToBytes(new Float32Array(PARAMETERS).fill(value));
  const sha = sha256(payload);
  return { payload, sha, header: { roundNumber: round, modelVersion: round - 1, exampleCount, encoding: 'float32-le' as const, payloadSizeBytes: payload.byteLength, sha256: sha } };
}

const send = (engine: RoundEngine, c: Client, u: ReturnType<typeof update>) => engine.submitUpdate(c, u.header, u.payload, u.sha);

/** The model version `version` of `task`: its values, and whether the file at its key is the one the database recorded. */
async function modelOf(engine: RoundEngine, task: Task, version: number): Promise<{ values: number[]; fileMatchesRecord: boolean }> {
  const model = await engine.readModelVersion(task.id, version);
  const meta = await store.getModelVersion(task.id, version);
  const onDisk = await readFile(join(dir, 'blobs', 'models', task.id, `${version}.bin`));
  return { values: Array.from(new Float32Array(model.bytes.buffer, model.bytes.byteOffset, PARAMETERS)), fileMatchesRecord: meta !== null && sha256(onDisk) === meta.sha256 };
}

/** Sends round 1's first two updates (values 1 and 2, weighted 10 and 20): both accepted, the round not complete. */
async function sendFirstTwo(engine: RoundEngine, c0: Client, c1: Client): Promise<void> {
  expect(await send(engine, c0, update(1, 1, 10))).toEqual({ acceptedCount: 1 });
  expect(await send(engine, c1, update(1, 2, 20))).toEqual({ acceptedCount: 2 });
}

/**
 * Waits (up to 20 s: a failure is answered before the aggregate is rebuilt and the round closed)
 * until round 1 of `task` leaves COLLECTING, then checks it CLOSED with the three updates the tests
 * send (values 1, 2, 3 weighted 10, 20, 30): their exact FedAvg as model version 1, its file the one recorded.
 */
async function expectClosedExactly(engine: RoundEngine, task: Task): Promise<void> {
  const until = Date.now() + 20_000;
  while ((await store.getRound(task.id, 1))?.state === 'COLLECTING' && Date.now() < until) await new Promise((r) => setTimeout(r, 5));
  const round = await store.getRound(task.id, 1);
  expect(round?.state).toBe('CLOSED');
  expect(round?.summary).toMatchObject({ participants: 3, examples: 60, modelVersion: 1 });
  expect(await modelOf(engine, task, 1)).toEqual({ values: new Array(PARAMETERS).fill(Math.fround(140 / 60)), fileMatchesRecord: true });
}

describe('plaintext round end started ahead of the last record statement (PGlite, fake time)', () => {
  it('aggregates the next model while the last update is recorded, writes it once recorded, and closes with the exact FedAvg without listing the round\'s updates', async () => {
    const w = instrumented();
    const { engine, task, clients } = await setup(w, 31, 1, 3);
    try {
      for (const [k, c] of clients.entries()) expect(await send(engine, c, update(1, k + 1, 10 * (k + 1)))).toEqual({ acceptedCount: k + 1 });
      // Written after the statement, with the digest computed ahead (only the aggregation started
      // before the statement's answer passes one); no list of the round's updates.
      expect(w.log.slice(-3)).toEqual(['record> 1', 'record< 1', 'model> 1.bin (digest given)']);
      expect(w.log).not.toContain('list');
      const round = await store.getRound(task.id, 1);
      expect(round?.state).toBe('CLOSED');
      expect(round?.summary).toMatchObject({ participants: 3, dropped: 0, examples: 60, uploadBytes: 3 * 4 * PARAMETERS, modelVersion: 1 });
      expect((await store.listRoundEvents(round!.id)).map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
      // (10·1 + 20·2 + 30·3) / 60
      expect(await modelOf(engine, task, 1)).toEqual({ values: new Array(PARAMETERS).fill(Math.fround(140 / 60)), fileMatchesRecord: true });
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('a replay refused in the final batch: the model aggregated ahead is dropped, nothing is written, the aggregate holds the recorded updates only, and the round closes exactly with the fresh update', async () => {
    const w = instrumented({ then: (run) => run() });
    const { engine, task, clients } = await setup(w, 32, 2, 2);
    const [c0, c1, c2] = clients as [Client, Client, Client];
    try {
      const replayed = update(1, 3, 30);
      await sendFirstTwo(engine, c0, c1);
      expect(await send(engine, c2, replayed)).toEqual({ acceptedCount: 3 });
      await assigned(engine, clients);
      const w1 = (await modelOf(engine, task, 1)).values[0]!;
      expect(w1).toBe(Math.fround(140 / 60));
      w.log.length = 0;
      expect(await send(engine, c0, update(2, 4, 10))).toEqual({ acceptedCount: 1 });
      expect(await send(engine, c1, update(2, 5, 10))).toEqual({ acceptedCount: 2 });
      // Device 2 sends its round-1 update again: the statement refuses it (replay), after the round's end started ahead.
      await expect(send(engine, c2, { ...replayed, header: { ...replayed.header, roundNumber: 2, modelVersion: 1 } })).rejects.toMatchObject({ code: 'invalid_argument', message: expect.stringMatching(/replay/) });
      // Aggregated ahead, then dropped: the aggregate rebuilt from the store (a list), no model written.
      expect(w.log).toEqual(['record> 1', 'record< 1', 'record> 1', 'record< 1', 'record> 1', 'record< 1', 'list']);
      expect(existsSync(join(dir, 'blobs', 'models', task.id, '2.bin'))).toBe(false);
      // Not closed: two updates recorded, and only those two are in the aggregate.
      const open = await store.getRound(task.id, 2);
      expect(open).toMatchObject({ state: 'COLLECTING', receivedCount: 2 });
      expect(await send(engine, c2, update(2, 6, 20))).toEqual({ acceptedCount: 3 });
      expect(w.log.slice(-3)).toEqual(['record> 1', 'record< 1', 'model> 2.bin (digest given)']);
      const round = await store.getRound(task.id, 2);
      expect(round?.state).toBe('CLOSED');
      expect(round?.summary).toMatchObject({ participants: 3, dropped: 0, examples: 40, modelVersion: 2 });
      // w1 + (10·4 + 10·5 + 20·6) / 40: the replayed update counted nowhere, none twice; the file rewritten.
      const v2 = await modelOf(engine, task, 2);
      expect(v2.fileMatchesRecord).toBe(true);
      for (const x of v2.values) expect(x).toBeCloseTo(w1 + 210 / 40, 5);
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('the final statement fails after the model was aggregated ahead (nothing recorded): the submitter hears a failure, nothing is written, and after a restart its retry closes the round exactly', async () => {
    const w = instrumented({
      then: async () => {
        throw new Error('injected: the database went away');
      },
    });
    const { engine, task, clients } = await setup(w, 33, 1, 3);
    const [c0, c1, c2] = clients as [Client, Client, Client];
    const u2 = update(1, 3, 30);
    try {
      await sendFirstTwo(engine, c0, c1);
      await expect(send(engine, c2, u2)).rejects.toMatchObject({ code: 'internal' });
      // ... and the aggregate was rebuilt from the store (a list of the round's updates).
      expect(w.log.slice(-2)).toEqual(['record> 1', 'list']);
      expect(existsSync(join(dir, 'blobs', 'models', task.id, '1.bin'))).toBe(false);
      expect(await store.getRound(task.id, 1)).toMatchObject({ state: 'COLLECTING', receivedCount: 2 });
    } finally {
      await engine.close();
    }
    // The coordinator restarts on the same database and blobs.
    const restarted = await startEngine({ store, blobs }, 34);
    try {
      await assigned(restarted.engine, [c2]);
      expect(await send(restarted.engine, c2, u2)).toEqual({ acceptedCount: 3 });
      await expectClosedExactly(restarted.engine, task);
    } finally {
      await restarted.engine.close();
    }
  }, 120_000);

  it('the final statement commits but its answer is lost: the aggregate is rebuilt from the store and the round closes exactly, the update counted once', async () => {
    const w = instrumented({
      then: async (run) => {
        await run();
        throw new Error('injected: the answer was lost after the commit');
      },
    });
    const { engine, task, clients } = await setup(w, 35, 1, 3);
    const [c0, c1, c2] = clients as [Client, Client, Client];
    const u2 = update(1, 3, 30);
    try {
      await sendFirstTwo(engine, c0, c1);
      await expect(send(engine, c2, u2)).rejects.toMatchObject({ code: 'internal' });
      // (The failure is answered first; the aggregate is rebuilt and the round closed after.)
      await expectClosedExactly(engine, task);
      // Its retry is not counted again (the round is closed).
      await expect(send(engine, c2, u2)).rejects.toMatchObject({ code: 'failed_precondition' });
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('the final statement is refused by a busy database (nothing recorded): the submitter hears UNAVAILABLE (retry later), and its retry closes the round exactly', async () => {
    let busy = true;
    const w = instrumented({
      then: async (run) => {
        if (!busy) return run();
        busy = false;
        throw new VeilError('unavailable', 'the database is busy; retry later');
      },
    });
    const { engine, task, clients } = await setup(w, 37, 1, 3);
    const [c0, c1, c2] = clients as [Client, Client, Client];
    const u2 = update(1, 3, 30);
    try {
      await sendFirstTwo(engine, c0, c1);
      await expect(send(engine, c2, u2)).rejects.toMatchObject({ code: 'unavailable' });
      expect(await store.getRound(task.id, 1)).toMatchObject({ state: 'COLLECTING', receivedCount: 2 });
      expect(await send(engine, c2, u2)).toEqual({ acceptedCount: 3 });
      await expectClosedExactly(engine, task);
    } finally {
      await engine.close();
    }
  }, 120_000);

  it('a statement that does not complete the round commits but its answer is lost: the update keeps its blob, is counted once, and the round closes exactly', async () => {
    // The first record statement commits, then its answer is lost (as with a connection dropped after the commit).
    let lose = true;
    const lossy = new Proxy(store, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (typeof value !== 'function') return value;
        if (prop !== 'recordSubmissions') return (value as (...a: unknown[]) => unknown).bind(target);
        return async (...args: unknown[]) => {
          const results = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args);
          if (lose) {
            lose = false;
            throw new Error('injected: the connection was lost after the commit');
          }
          return results;
        };
      },
    });
    const { engine, task, clients } = await setup({ store: lossy, blobs }, 36, 1, 3);
    const [c0, c1, c2] = clients as [Client, Client, Client];
    const u0 = update(1, 1, 10);
    try {
      await expect(send(engine, c0, u0)).rejects.toMatchObject({ code: 'internal' });
      // The store counted it: its retry is told so, and not counted again.
      await expect(send(engine, c0, u0)).rejects.toMatchObject({ code: 'already_accepted' });
      expect(await send(engine, c1, update(1, 2, 20))).toEqual({ acceptedCount: 2 });
      expect(await send(engine, c2, update(1, 3, 30))).toEqual({ acceptedCount: 3 });
      await expectClosedExactly(engine, task);
    } finally {
      await engine.close();
    }
  }, 120_000);
});
