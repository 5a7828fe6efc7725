/**
 * The plaintext round end when the store holds an update the aggregate in memory lacks (a
 * recording whose answer was lost): the round must close with every recorded update, exact
 * FedAvg and summary. On the embedded database (PGlite, a real store and blob store) with fake
 * time. (Written for d368405, which closed without listing the store's updates and failed this
 * check: the round closed with 2 of 3; d368405 is reverted, this test stays.)
 */
import { createHash, randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSeededRng } from '@veil/privacy';
import { float32ToBytes } from '@veil/protocol/codec';
import { createBlobStore, updateBlobDir, type BlobStore } from '../blobs/blob-store.js';
import { createLogger } from '../logger.js';
import { openDatabase, type Database } from '../persistence/database.js';
import { createPrismaStore } from '../persistence/prisma-store.js';
import type { FederationStore } from './ports.js';
import { createFakeTime } from './clock.js';
import { RoundEngine } from './engine.js';
import type { Client } from './model.js';

const DEADLINE_MS = 10_000;
let dir: string;
let db: Database;
let store: FederationStore;
let blobs: BlobStore;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'veil-round-end-'));
  db = await openDatabase({ databaseUrl: undefined, dataDir: dir, logger: createLogger({ level: 'silent' }) });
  await db.migrate();
  store = createPrismaStore(db.prisma);
  blobs = createBlobStore({ dir: join(dir, 'blobs') });
}, 240_000);

afterAll(async () => {
  await blobs?.close();
  await db?.close();
  await rm(dir, { recursive: true, force: true });
});

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

/** The store, with its calls to `listSubmissions` counted. */
function counting(inner: FederationStore): { store: FederationStore; lists: () => number } {
  let lists = 0;
  const store = new Proxy(inner, {
    get(target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown;
      if (prop === 'listSubmissions') {
        return (...args: unknown[]) => {
          lists++;
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { store, lists: () => lists };
}

const training = { epochs: 1, batchSize: 1, learningRate: 0.1 };

async function setup(seed: number, devices: number, minClients: number) {
  const time = createFakeTime();
  const counted = counting(store);
  const engine = new RoundEngine({ store: counted.store, blobs, logger: createLogger({ level: 'silent' }), clock: time.clock, timer: time.timer, rng: createSeededRng(seed) });
  await engine.start();
  const weights = new Float32Array([0, 0, 0, 0]);
  const task = await engine.createTask(
    { name: `round-end-${seed}`, rounds: 1, minClients, clientsPerRound: devices, minAvailableClients: devices, roundDeadlineMs: DEADLINE_MS, training },
    { topology: { class_name: 'Sequential' }, weightSpecs: [{ name: 'w', shape: [weights.length], dtype: 'float32' }], weights },
  );
  const clients: Client[] = [];
  for (let k = 0; k < devices; k++) {
    clients.push(await store.createClient({ id: randomUUID(), taskId: task.id, name: `d${k}`, credentialHash: sha256(Buffer.from(randomUUID())) }));
  }
  await engine.startTask(task.id);
  const assignments = await Promise.all(clients.map((c) => engine.waitForAssignment(c, 60_000)));
  expect(assignments.map((x) => x.kind)).toEqual(clients.map(() => 'assignment'));
  return { time, engine, task, clients, lists: counted.lists };
}

/** Device k's update (every value k + 1) and its header for round 1. */
function update(k: number, exampleCount: number) {
  const payload = float32ToBytes(new Float32Array(4).fill(k + 1));
  const sha = sha256(payload);
  return { payload, sha, header: { roundNumber: 1, modelVersion: 0, exampleCount, encoding: 'float32-le' as const, payloadSizeBytes: payload.byteLength, sha256: sha } };
}

async function eventually(condition: () => Promise<boolean>): Promise<void> {
  const until = Date.now() + 20_000;
  while (!(await condition())) {
    if (Date.now() > until) throw new Error('condition not reached');
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

describe('plaintext round end from the aggregate in memory (PGlite, fake time)', () => {
  it('an update the store recorded but the aggregate lacks (a recording whose answer was lost): the round closes from the store\'s list with every recorded update', async () => {
    const { time, engine, task, clients } = await setup(22, 3, 2);
    try {
      const [c0, c1, c2] = clients as [Client, Client, Client];
      const u0 = update(0, 10);
      const u1 = update(1, 20);
      expect(await engine.submitUpdate(c0, u0.header, u0.payload, u0.sha)).toEqual({ acceptedCount: 1 });
      expect(await engine.submitUpdate(c1, u1.header, u1.payload, u1.sha)).toEqual({ acceptedCount: 2 });
      // Device 2's update recorded in the store behind the engine's back: its aggregate holds two updates, the store three.
      const open = await store.getLatestRound(task.id);
      const u2 = update(2, 30);
      const ref = await blobs.append(updateBlobDir(open!.id), u2.payload, u2.sha);
      const [recorded] = await store.recordSubmissions(open!.id, [
        { clientId: c2.id, exampleCount: 30, trainedExamples: null, trainingLoss: null, encoding: 'float32-le', sha256: ref.sha256, sizeBytes: ref.sizeBytes, blobKey: ref.key },
      ]);
      expect(recorded).toMatchObject({ kind: 'accepted', receivedCount: 3 });
      // The deadline closes the round (two updates in memory reach the minimum).
      await time.advance(DEADLINE_MS + 1);
      await eventually(async () => (await store.getRound(task.id, 1))?.state === 'CLOSED');
      const round = await store.getRound(task.id, 1);
      expect(round?.summary).toMatchObject({ participants: 3, dropped: 0, examples: 60, modelVersion: 1 });
      const model = await engine.readModelVersion(task.id, 1);
      expect(Array.from(new Float32Array(model.bytes.buffer, model.bytes.byteOffset, 4))).toEqual(new Array(4).fill(Math.fround(140 / 60)));
      const events = await store.listRoundEvents(round!.id);
      expect(events.map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
    } finally {
      await engine.close();
    }
  }, 120_000);
});
