/**
 * The store's hot statements (update records, the round boundary, a round's submissions) run on
 * node-postgres directly on PostgreSQL, outside Prisma's query engine. Their answers must be
 * exactly what the same store gives through Prisma: the same rounds (dates, JSON, counts), the
 * same submissions, the same refusals.
 */
import { createHash, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createLogger } from '../src/logger.js';
import { openDatabase } from '../src/persistence/database.js';
import { createPrismaStore } from '../src/persistence/prisma-store.js';
import { DEFAULT_STRATEGY } from '../src/aggregation/registry.js';
import type { TaskSettings } from '../src/rounds/model.js';
import { DEFAULT_MAX_DEVICES } from '../src/rounds/task-settings.js';
import { createTestStorage } from './helpers.js';

const sha = (s: string): string => createHash('sha256').update(s).digest('hex');

describe('direct SQL on PostgreSQL', () => {
  it('records updates, lists them and moves rounds exactly as through Prisma', async () => {
    await using storage = await createTestStorage('postgres');
    const db = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, logger: createLogger({ level: 'silent' }) });
    try {
      await db.migrate();
      expect(db.directSql).not.toBeNull();
      const viaPrisma = createPrismaStore(db.prisma);
      const direct = createPrismaStore(db.prisma, { directSql: db.directSql });
      const taskId = randomUUID();
      const settings: TaskSettings = {
        rounds: 5,
        selection: { kind: 'count', count: 3 },
        minClients: 1,
        minAvailableClients: 1,
        roundDeadlineMs: 60_000,
        maxExampleCount: 1_000,
        training: { epochs: 1, batchSize: 32, learningRate: 0.05 },
        updateEncoding: 'float32-le',
        updateBound: null,
        privacy: null,
        strategy: DEFAULT_STRATEGY,
        maxDevices: DEFAULT_MAX_DEVICES,
      };
      await viaPrisma.createTask({
        id: taskId,
        name: 'direct-sql',
        settings,
        modelTopology: { class_name: 'Sequential', config: { name: 't', layers: [] } },
        weightSpecs: [{ name: 'w', shape: [10], dtype: 'float32' }],
        parameterCount: 10,
        encryption: null,
        initialModel: { sha256: sha('v0'), sizeBytes: 40, encoding: 'float32-le' },
      });
      const clients = [];
      for (let i = 0; i < 4; i++) clients.push(await viaPrisma.createClient({ id: randomUUID(), taskId, name: `d${i}`, credentialHash: sha(randomUUID()) }));
      const [a, b, c, outsider] = clients.map((x) => x.id) as [string, string, string, string];
      const round = await viaPrisma.openRound({ id: randomUUID(), taskId, number: 1, baseModelVersion: 0, minClients: 1, config: settings.training });
      const deadlineAt = new Date(Date.now() + 60_000);
      expect(await viaPrisma.startCollecting(round.id, [a, b, c], deadlineAt, { fitConfig: { lr: 0.05 } })).not.toBeNull();
      const update = (clientId: string, k: number, loss: number | null) => ({
        clientId,
        exampleCount: 10 + k,
        trainedExamples: k === 0 ? null : 100 + k,
        trainingLoss: loss,
        encoding: 'float32-le' as const,
        sha256: sha(`u${k}`),
        sizeBytes: 40,
        blobKey: `updates/${round.id}/s.seg#${k * 88}`,
      });
      // Accepted, accepted, not selected: numbered in batch order.
      expect(await direct.recordSubmissions(round.id, [update(a, 0, 0.25), update(b, 1, null), update(outsider, 2, 1)], { refuseClientReplays: true })).toEqual([
        { kind: 'accepted', receivedCount: 1 },
        { kind: 'accepted', receivedCount: 2 },
        { kind: 'not_selected' },
      ]);
      // A second update of a device that was accepted: a duplicate carrying the accepted digest.
      expect(await direct.recordSubmissions(round.id, [update(a, 3, 0.5)], { refuseClientReplays: true })).toEqual([{ kind: 'duplicate', sha256: sha('u0') }]);
      const listed = await direct.listSubmissions(round.id);
      expect(listed).toEqual(await viaPrisma.listSubmissions(round.id));
      expect(listed.map((s) => [s.clientId, s.exampleCount, s.trainingLoss, s.sha256, s.sizeBytes])).toEqual([
        [a, 10, 0.25, sha('u0'), 40],
        [b, 11, null, sha('u1'), 40],
      ]);
      const nextId = randomUUID();
      const moved = await direct.closeAndOpen({
        roundId: round.id,
        from: 'COLLECTING',
        aggregatingReason: 'all selected clients submitted',
        model: { version: 1, sha256: sha('v1'), sizeBytes: 40, encoding: 'float32-le', strategyState: null },
        summary: { participants: 2, dropped: 1, examples: 21, uploadBytes: 80, modelVersion: 1, aggregationMs: 3 },
        next: {
          id: nextId,
          number: 2,
          baseModelVersion: 1,
          minClients: 1,
          config: settings.training,
          collecting: { clientIds: [a, c], deadlineAt, fitConfig: { lr: 0.04 } },
        },
      });
      expect(moved).not.toBeNull();
      // The rounds as the direct statement returned them are the rounds Prisma reads back.
      expect(moved!.closed).toEqual(await viaPrisma.getRound(taskId, 1));
      expect(moved!.opened).toEqual(await viaPrisma.getRound(taskId, 2));
      expect(moved!.closed.state).toBe('CLOSED');
      expect(moved!.closed.closedAt).toBeInstanceOf(Date);
      expect(moved!.opened!.deadlineAt.getTime()).toBe(deadlineAt.getTime());
      expect(moved!.opened!.fitConfig).toEqual({ lr: 0.04 });
      // The closed round takes no more updates (the refusal explains why).
      expect(await direct.recordSubmissions(round.id, [update(c, 4, null)], { refuseClientReplays: true })).toEqual([{ kind: 'round_closed', state: 'CLOSED' }]);
      // A plaintext replay: the device's update of round 1, again in round 2.
      expect(await direct.recordSubmissions(nextId, [update(a, 0, 0.25), update(c, 5, null)], { refuseClientReplays: true })).toEqual([
        { kind: 'replay' },
        { kind: 'accepted', receivedCount: 1 },
      ]);
      // Ciphertexts (refuseDigestReplays): the same bytes from any device anywhere in the task are a
      // replay; the device's own update of this round again is its retry (a duplicate).
      expect(await direct.recordSubmissions(nextId, [update(a, 1, null)], { refuseDigestReplays: true })).toEqual([{ kind: 'replay' }]);
      expect(await direct.recordSubmissions(nextId, [update(c, 5, null)], { refuseDigestReplays: true })).toEqual([{ kind: 'duplicate', sha256: sha('u5') }]);
      const thirdId = randomUUID();
      expect(
        await direct.closeAndOpen({
          roundId: nextId,
          from: 'COLLECTING',
          aggregatingReason: 'deadline',
          model: { version: 2, sha256: sha('v2'), sizeBytes: 40, encoding: 'float32-le', strategyState: null },
          summary: { participants: 1, dropped: 1, examples: 15, uploadBytes: 40, modelVersion: 2, aggregationMs: 1 },
          next: { id: thirdId, number: 3, baseModelVersion: 2, minClients: 1, config: settings.training, collecting: { clientIds: [a, b, c], deadlineAt, fitConfig: {} } },
        }),
      ).not.toBeNull();
      // Within one batch: the second device sending the same bytes is refused, the others count.
      expect(await direct.recordSubmissions(thirdId, [update(a, 7, null), update(b, 7, null), update(c, 8, null)], { refuseDigestReplays: true })).toEqual([
        { kind: 'accepted', receivedCount: 1 },
        { kind: 'replay' },
        { kind: 'accepted', receivedCount: 2 },
      ]);
      expect(await direct.recordSubmissions(thirdId, [update(a, 7, null)], { refuseDigestReplays: true })).toEqual([{ kind: 'duplicate', sha256: sha('u7') }]);
      // Plaintext rules on the same rows: equal bytes from another device are no replay.
      expect(await direct.recordSubmissions(thirdId, [update(b, 7, null)], { refuseClientReplays: true })).toEqual([{ kind: 'accepted', receivedCount: 3 }]);
      // A move from a state the round is not in changes nothing.
      expect(
        await direct.closeAndOpen({
          roundId: round.id,
          from: 'COLLECTING',
          aggregatingReason: 'again',
          model: null,
          summary: { participants: 0, dropped: 0, examples: 0, uploadBytes: 0, modelVersion: null, aggregationMs: 0 },
          next: null,
        }),
      ).toBeNull();
    } finally {
      await db.close();
    }
  });
});
