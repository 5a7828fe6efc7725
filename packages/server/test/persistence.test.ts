/**
 * Durability on PostgreSQL: a coordinator restarted mid-round loses no accepted
 * update and counts none twice; migrations are recorded the way Prisma does.
 * (The SIGKILL variant of the restart is an e2e test.)
 */
import { createHash, randomBytes } from 'node:crypto';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import { MIGRATIONS_DIR, applyMigrations, type SqlSession } from '../src/persistence/migrate.js';
import {
  TINY_PARAMETERS,
  createTestStorage,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  grpcStatusOf,
  joinDevices,
  listRounds,
  maxAbsDiff,
  pattern,
  resumeDevice,
  startTestCoordinator,
  storedUpdateFiles,
  waitForRounds,
} from './helpers.js';

describe('restart without loss (PostgreSQL)', () => {
  test('a round interrupted by a restart resumes with its accepted updates, each counted once', async () => {
    await using storage = await createTestStorage('postgres');
    const secrets = { adminToken: randomBytes(24).toString('hex'), enrolmentSecret: randomBytes(24).toString('hex') };
    const first = await startTestCoordinator({ storage, ...secrets });
    const { id: taskId, base } = await createTinyTask(first.rest, { rounds: 2 });
    const devices = await joinDevices(first.coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const updates = [
      { delta: pattern(TINY_PARAMETERS, 21), n: 4 },
      { delta: pattern(TINY_PARAMETERS, 22), n: 16 },
      { delta: pattern(TINY_PARAMETERS, 23), n: 25 },
    ];
    expect(await devices[0]!.submit(assignments[0]!, updates[0]!.delta, updates[0]!.n)).toEqual({ acceptedCount: 1 });
    expect(await devices[1]!.submit(assignments[1]!, updates[1]!.delta, updates[1]!.n)).toEqual({ acceptedCount: 2 });
    devices[Symbol.dispose]();
    await first.close();

    await using second = await startTestCoordinator({ storage, ...secrets });
    const rounds = await listRounds(second.rest, taskId);
    expect(rounds).toHaveLength(1);
    expect(rounds[0]).toMatchObject({ number: 1, state: 'COLLECTING', selected: 3, received: 2 });

    // Devices come back with their stored credentials.
    const [d1, , d3] = await Promise.all(devices.map((d) => resumeDevice(second.coordinator, d)));
    try {
      // d1's update survived the restart: it has nothing left to do, and a retry is refused.
      expect((await d1!.transport.waitForAssignment(d1!.credential, 10)).kind).toBe('idle');
      expect((await grpcStatusOf(d1!.submit(assignments[0]!, updates[0]!.delta, updates[0]!.n))).code).toBe(status.ALREADY_EXISTS);
      // d3 still has its assignment: same round, same model, same deadline.
      const again = await d3!.nextAssignment();
      expect(again).toMatchObject({
        roundId: assignments[2]!.roundId,
        roundNumber: 1,
        modelVersion: 0,
        modelSha256: assignments[2]!.modelSha256,
        deadlineUnixMs: assignments[2]!.deadlineUnixMs,
      });
      expect(await d3!.submit(again, updates[2]!.delta, updates[2]!.n)).toEqual({ acceptedCount: 3 });
    } finally {
      for (const d of [d1, d3]) d?.close();
    }

    const closed = await waitForRounds(second.rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(closed[0]).toMatchObject({ received: 3, summary: { participants: 3, dropped: 0, examples: 45, modelVersion: 1 } });
    expect(maxAbsDiff(await fetchWeights(second.rest, taskId), expectedFedAvg(base, updates))).toBeLessThan(1e-6);
    const rows = await storage.sql<{ status: string; n: string }>(
      'SELECT status, count(*) AS n FROM "Participation" WHERE "roundId" = $1 GROUP BY status',
      [assignments[0]!.roundId],
    );
    expect(rows).toEqual([{ status: 'SUBMITTED', n: '3' }]);
    // Round 1's three updates, the task's only ones so far (no device has been asked for round 2).
    expect((await storedUpdateFiles(storage.dataDir)).filter((f) => f.startsWith(`tasks/${taskId}/`))).toHaveLength(3);
  });

  test("a paused task's open round goes on after a restart; no new round opens until the task is started", async () => {
    await using storage = await createTestStorage('postgres');
    const secrets = { adminToken: randomBytes(24).toString('hex'), enrolmentSecret: randomBytes(24).toString('hex') };
    const first = await startTestCoordinator({ storage, ...secrets });
    const { id: taskId, base } = await createTinyTask(first.rest, { rounds: 2 });
    const devices = await joinDevices(first.coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const updates = [26, 27, 28].map((seed, k) => ({ delta: pattern(TINY_PARAMETERS, seed), n: 3 + k }));
    expect((await first.rest.request('POST', `/v1/tasks/${taskId}/pause`)).status).toBe(200);
    expect(await devices[0]!.submit(assignments[0]!, updates[0]!.delta, updates[0]!.n)).toEqual({ acceptedCount: 1 });
    devices[Symbol.dispose]();
    await first.close();

    await using second = await startTestCoordinator({ storage, ...secrets });
    expect((await second.rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ status: 'PAUSED' });
    const resumed = await Promise.all(devices.map((d) => resumeDevice(second.coordinator, d)));
    try {
      // The other two still hold their assignments of round 1 and their updates are accepted.
      for (const k of [1, 2]) {
        const again = await resumed[k]!.nextAssignment();
        expect(again).toMatchObject({ roundId: assignments[k]!.roundId, roundNumber: 1, deadlineUnixMs: assignments[k]!.deadlineUnixMs });
        expect(await resumed[k]!.submit(again, updates[k]!.delta, updates[k]!.n)).toEqual({ acceptedCount: k + 1 });
      }
      const closed = await waitForRounds(second.rest, taskId, (r) => r[0]?.state === 'CLOSED');
      expect(closed[0]).toMatchObject({ received: 3, summary: { participants: 3, modelVersion: 1 } });
      expect(maxAbsDiff(await fetchWeights(second.rest, taskId), expectedFedAvg(base, updates))).toBeLessThan(1e-6);
      // Still paused: no round 2 (give a wrongly opened one time to appear).
      expect((await resumed[0]!.transport.waitForAssignment(resumed[0]!.credential, 300)).kind).toBe('idle');
      expect((await listRounds(second.rest, taskId)).map((r) => [r.number, r.state])).toEqual([[1, 'CLOSED']]);
      expect((await second.rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ status: 'PAUSED', currentModelVersion: 1 });
      expect((await second.rest.request('POST', `/v1/tasks/${taskId}/start`)).status).toBe(200);
      const next = await Promise.all(resumed.map((d) => d!.nextAssignment()));
      expect(next.map((a) => [a.roundNumber, a.modelVersion])).toEqual([[2, 1], [2, 1], [2, 1]]);
    } finally {
      for (const d of resumed) d?.close();
    }
  });

  test('a round whose deadline passed while the coordinator was down is settled on start', async () => {
    await using storage = await createTestStorage('postgres');
    const first = await startTestCoordinator({ storage });
    const { id: taskId, base } = await createTinyTask(first.rest, { rounds: 1, minClients: 2, roundDeadlineMs: 1000 });
    const updates = [
      { delta: pattern(TINY_PARAMETERS, 24), n: 2 },
      { delta: pattern(TINY_PARAMETERS, 25), n: 6 },
    ];
    {
      using devices = await joinDevices(first.coordinator, taskId, 3);
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      for (const [k, u] of updates.entries()) await devices[k]!.submit(assignments[k]!, u.delta, u.n);
      await first.close();
      const downUntil = assignments[0]!.deadlineUnixMs + 200;
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, downUntil - Date.now())));
    }
    await using second = await startTestCoordinator({ storage });
    const rounds = await waitForRounds(second.rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ summary: { participants: 2, dropped: 1, modelVersion: 1 } });
    expect(maxAbsDiff(await fetchWeights(second.rest, taskId), expectedFedAvg(base, updates))).toBeLessThan(1e-6);
    expect((await second.rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ status: 'COMPLETED' });
  });
});

describe('graceful shutdown', () => {
  test('closing the coordinator answers long-polling devices and does not wait for their polls to expire', async () => {
    await using env = await startTestCoordinator({ database: 'postgres' });
    const { id: taskId } = await createTinyTask(env.rest, { rounds: 1 });
    using devices = await joinDevices(env.coordinator, taskId, 1);
    const device = devices[0]!;
    const poll = device.transport.waitForAssignment(device.credential, 30_000);
    await new Promise((resolve) => setTimeout(resolve, 300));
    const started = performance.now();
    await env.close();
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(await poll).toMatchObject({ kind: 'idle', currentRound: 1 });
  });
});

describe('migrations (PostgreSQL)', () => {
  const session = (client: pg.Client): SqlSession => ({
    query: async (sql, params) => ({ rows: (await client.query(sql, params)).rows }),
    exec: async (sql) => {
      await client.query(sql);
    },
  });

  test('a fresh database gets the schema and Prisma-compatible _prisma_migrations rows; a second run applies nothing', async () => {
    await using storage = await createTestStorage('postgres');
    const shipped = (await readdir(MIGRATIONS_DIR, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name).sort();
    const client = new pg.Client({ connectionString: storage.databaseUrl });
    await client.connect();
    try {
      expect(shipped[0]).toBe('20261127000000_init');
      expect(await applyMigrations(session(client))).toEqual(shipped);

      const tables = await storage.sql<{ table_name: string }>("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'");
      expect(tables.map((t) => t.table_name)).toEqual(
        expect.arrayContaining(['Client', 'ModelVersion', 'Participation', 'Round', 'RoundEvent', 'Task', '_prisma_migrations']),
      );
      const recorded = await storage.sql(
        'SELECT migration_name, checksum, finished_at, rolled_back_at, applied_steps_count FROM "_prisma_migrations" ORDER BY migration_name',
      );
      expect(recorded).toEqual(
        await Promise.all(
          shipped.map(async (name) => ({
            migration_name: name,
            checksum: createHash('sha256').update(await readFile(join(MIGRATIONS_DIR, name, 'migration.sql'))).digest('hex'),
            finished_at: expect.any(Date),
            rolled_back_at: null,
            applied_steps_count: 1,
          })),
        ),
      );

      expect(await applyMigrations(session(client))).toEqual([]);
      expect(await storage.sql('SELECT count(*)::int AS n FROM "_prisma_migrations"')).toEqual([{ n: shipped.length }]);
    } finally {
      await client.end();
    }

    // A coordinator starting on the migrated database applies nothing and serves it.
    await using env = await startTestCoordinator({ storage });
    expect((await env.rest.request('GET', '/v1/ready')).status).toBe(200);
    expect(await storage.sql('SELECT count(*)::int AS n FROM "_prisma_migrations"')).toEqual([{ n: shipped.length }]);
  });

  test('a migration edited after it was applied stops the migrator', async () => {
    await using storage = await createTestStorage('postgres');
    const dir = await mkdtemp(join(tmpdir(), 'veil-migrations-'));
    const client = new pg.Client({ connectionString: storage.databaseUrl });
    await client.connect();
    try {
      await cp(MIGRATIONS_DIR, dir, { recursive: true });
      await applyMigrations(session(client), dir);
      const file = join(dir, '20261127000000_init', 'migration.sql');
      await writeFile(file, (await readFile(file, 'utf8')) + '\n-- edited\n');
      await expect(applyMigrations(session(client), dir)).rejects.toThrow(/20261127000000_init was modified after it was applied/);
    } finally {
      await client.end();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
