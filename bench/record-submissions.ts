/**
 * The recording statement alone (store.recordSubmissions on PostgreSQL, direct SQL): a committee
 * task's group commit (with the ciphertext replay check, `refuseDigestReplays`) against a plaintext
 * task's (`refuseClientReplays`), batch by batch interleaved, `--clients` devices per round for
 * `--rounds` rounds (later rounds check against the earlier rounds' digests). Nothing else runs in
 * the process, so the figures are the database's, without the coordinator's event-loop delay that
 * bench:rounds' own timing of the same call includes.
 *
 *   VEIL_TEST_DATABASE_URL=postgresql://... npx tsx bench/record-submissions.ts [--clients 1000] [--rounds 3] [--batch 9]
 *
 * Prints one JSON object on stdout. Uses a scratch database, dropped at the end.
 */
import { createHash, randomUUID } from 'node:crypto';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { createLogger } from '../packages/server/src/logger.js';
import { openDatabase } from '../packages/server/src/persistence/database.js';
import { createPrismaStore } from '../packages/server/src/persistence/prisma-store.js';
import { resolveTaskSettings } from '../packages/server/src/rounds/task-settings.js';
import { createTestStorage } from '../packages/server/test/helpers.js';

const { values: args } = parseArgs({ options: { clients: { type: 'string' }, rounds: { type: 'string' }, batch: { type: 'string' } } });
const clientCount = Number(args.clients ?? 1000);
const roundCount = Number(args.rounds ?? 3);
const batchSize = Number(args.batch ?? 9);
const sha = (s: string): string => createHash('sha256').update(s).digest('hex');
const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const mean = (xs: readonly number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const round2 = (x: number): number => Math.round(x * 100) / 100;

await using storage = await createTestStorage('postgres');
const db = await openDatabase({ databaseUrl: storage.databaseUrl, dataDir: storage.dataDir, logger: createLogger({ level: 'silent' }) });
try {
  await db.migrate();
  if (db.directSql === null) throw new Error('PostgreSQL only');
  const store = createPrismaStore(db.prisma, { directSql: db.directSql });
  // The store keeps the settings as given; the recording statement does not read them.
  const settings = resolveTaskSettings({
    name: 'record-submissions',
    rounds: roundCount,
    clientsPerRound: clientCount,
    minAvailableClients: 1,
    roundDeadlineMs: 600_000,
    maxExampleCount: 1_000,
    training: { epochs: 1, batchSize: 32, learningRate: 0.05 },
  });
  const createTask = async (name: string): Promise<{ taskId: string; clients: string[] }> => {
    const taskId = randomUUID();
    await store.createTask({
      id: taskId,
      name,
      settings,
      modelTopology: { class_name: 'Sequential', config: { name, layers: [] } },
      weightSpecs: [{ name: 'w', shape: [10], dtype: 'float32' }],
      parameterCount: 10,
      encryption: null,
      initialModel: { sha256: sha(name), sizeBytes: 40, encoding: 'float32-le' },
    });
    const clients: string[] = [];
    for (let i = 0; i < clientCount; i++) clients.push((await store.createClient({ id: randomUUID(), taskId, name: `${name}-${i}`, credentialHash: sha(randomUUID()) })).id);
    return { taskId, clients };
  };
  const paths = { plaintext: await createTask('plaintext'), committee: await createTask('committee') };
  const ms: Record<keyof typeof paths, number[]> = { plaintext: [], committee: [] };
  const loadAtStart = loadavg().map((x) => Math.round(x * 10) / 10);
  for (let number = 1; number <= roundCount; number++) {
    const roundIds = { plaintext: '', committee: '' };
    for (const path of ['plaintext', 'committee'] as const) {
      const round = await store.openRound({ id: randomUUID(), taskId: paths[path].taskId, number, baseModelVersion: 0, minClients: 1, config: settings.training });
      await store.startCollecting(round.id, paths[path].clients, new Date(Date.now() + 600_000), { fitConfig: {} });
      roundIds[path] = round.id;
    }
    for (let b = 0; b * batchSize < clientCount; b++) {
      // Alternate which path goes first.
      for (const path of b % 2 === 0 ? (['plaintext', 'committee'] as const) : (['committee', 'plaintext'] as const)) {
        const submissions = paths[path].clients.slice(b * batchSize, (b + 1) * batchSize).map((clientId, j) => ({
          clientId,
          exampleCount: 1,
          trainedExamples: null,
          trainingLoss: null,
          encoding: 'float32-le' as const,
          sha256: sha(`${path}/${number}/${clientId}`),
          sizeBytes: 40,
          blobKey: `updates/${roundIds[path]}/0.seg#${(b * batchSize + j) * 40}`,
        }));
        const t0 = performance.now();
        const results = await store.recordSubmissions(roundIds[path], submissions, path === 'committee' ? { refuseDigestReplays: true } : { refuseClientReplays: true });
        ms[path].push(performance.now() - t0);
        if (results.some((r) => r.kind !== 'accepted')) throw new Error(`${path}: a submission was not accepted`);
      }
    }
  }
  process.stdout.write(
    `${JSON.stringify(
      {
        benchmark: 'bench/record-submissions.ts',
        clients: clientCount,
        rounds: roundCount,
        batch: batchSize,
        loadAvgAtStart: loadAtStart,
        loadAvgAtEnd: loadavg().map((x) => Math.round(x * 10) / 10),
        commitMs: Object.fromEntries(Object.entries(ms).map(([path, xs]) => [path, { commits: xs.length, median: round2(median(xs)), mean: round2(mean(xs)) }])),
      },
      null,
      2,
    )}\n`,
  );
} finally {
  await db.close();
}
