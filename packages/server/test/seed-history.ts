/**
 * Seeds a finished task with a long history directly into the database: the
 * task and its devices through the store, then (in bulk, one transaction) the
 * rows the round engine's store calls would have written round by round:
 * rounds with their transitions, participations with accepted updates and
 * evaluation reports, model versions and, for a DP task, a hash-chained
 * ledger whose ε the real accountant computed. For the dashboard's and the rounds route's tests at
 * 1,000 rounds without training 1,000 rounds.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createLogger } from '../src/logger.js';
import { openDatabase, type Database } from '../src/persistence/database.js';
import { createPrismaStore } from '../src/persistence/prisma-store.js';
import { epsilonIfRoundRuns, ledgerParams } from '../src/privacy/accounting.js';
import { GENESIS_HASH, hashLedgerEntry, ledgerNumber, type LedgerEntry, type LedgerFields } from '../src/privacy/ledger.js';
import { resolvePrivacySettings } from '../src/privacy/settings.js';
import type { TaskSettings } from '../src/rounds/model.js';
import type { FederationStore } from '../src/rounds/ports.js';
import type { Client } from '../src/rounds/model.js';
import type { Prisma, PrismaClient } from '../src/gen/prisma/client.js';
import { DEFAULT_STRATEGY } from '../src/aggregation/registry.js';
import { DEFAULT_MAX_DEVICES } from '../src/rounds/task-settings.js';

/** A second connection to a coordinator's PostgreSQL database. */
export async function openStore(databaseUrl: string, dataDir: string): Promise<{ store: FederationStore; db: Database } & AsyncDisposable> {
  const db = await openDatabase({ databaseUrl, dataDir, logger: createLogger({ level: 'silent' }) });
  return { store: createPrismaStore(db.prisma), db, [Symbol.asyncDispose]: () => db.close() };
}

export interface SeedOptions {
  name?: string;
  rounds: number;
  devices: number;
  /** Run with local DP (samplingRate 1, so every device takes part in every round). Default false. */
  dp?: { epsilonCap: number; noiseMultiplier: number; delta: number };
}

export interface SeededRound {
  number: number;
  participants: number;
  dropped: number;
  uploadBytes: number;
  accuracy: number;
  loss: number;
}

/** Deterministic, plausible learning curves: accuracy rises, loss falls, with a wobble. */
export const seededAccuracy = (round: number): number => Number((0.95 - 0.6 * Math.exp(-round / 40) + 0.01 * Math.sin(round)).toFixed(6));
export const seededLoss = (round: number): number => Number((0.15 + 1.8 * Math.exp(-round / 35) + 0.02 * Math.cos(round)).toFixed(6));

export async function seedHistory({ store, prisma }: { store: FederationStore; prisma: PrismaClient }, options: SeedOptions): Promise<{ taskId: string; rounds: SeededRound[]; deviceNames: string[]; ledger: LedgerEntry[] }> {
  const taskId = randomUUID();
  const privacy = options.dp === undefined ? null : resolvePrivacySettings({ mode: 'local', epsilonCap: options.dp.epsilonCap, delta: options.dp.delta, noiseMultiplier: options.dp.noiseMultiplier, clipNorm: 1, samplingRate: 1 }, 1);
  const settings: TaskSettings = {
    rounds: options.rounds,
    selection: privacy === null ? { kind: 'count', count: options.devices } : { kind: 'poisson', samplingRate: 1, maxCount: options.devices },
    minClients: 1,
    minAvailableClients: 1,
    roundDeadlineMs: 60_000,
    maxExampleCount: privacy === null ? 1_000_000 : 1,
    training: { epochs: 1, batchSize: 32, learningRate: 0.05 },
    updateEncoding: 'float32-le',
    updateBound: null,
    privacy,
    strategy: DEFAULT_STRATEGY,
    maxDevices: DEFAULT_MAX_DEVICES,
  };
  const sha = (s: string) => createHash('sha256').update(s).digest('hex');
  await store.createTask({
    id: taskId,
    name: options.name ?? `seeded-${options.rounds}`,
    settings,
    modelTopology: { class_name: 'Sequential', config: { name: 'seeded', layers: [] } },
    weightSpecs: [{ name: 'w', shape: [10], dtype: 'float32' }],
    parameterCount: 10,
    encryption: null,
    initialModel: { sha256: sha('v0'), sizeBytes: 40, encoding: 'float32-le' },
  });
  const deviceNames = Array.from({ length: options.devices }, (_, i) => `phone-${String(i + 1).padStart(2, '0')}`);
  const clients: Client[] = [];
  for (const name of deviceNames) clients.push(await store.createClient({ id: randomUUID(), taskId, name, credentialHash: sha(randomUUID()) }));
  const rounds: SeededRound[] = [];
  const ledger: LedgerEntry[] = [];
  // Bulk rows, written in one transaction below: the same rows the engine's store calls write
  // round by round (RoundEvent per transition, Participation per device, ModelVersion per round).
  const roundRows: Prisma.RoundCreateManyInput[] = [];
  const eventRows: Prisma.RoundEventCreateManyInput[] = [];
  const participationRows: Prisma.ParticipationCreateManyInput[] = [];
  const modelRows: Prisma.ModelVersionCreateManyInput[] = [];
  const t0 = Date.now() - options.rounds * 10_000;
  for (let n = 1; n <= options.rounds; n++) {
    const roundId = randomUUID();
    const openedAt = new Date(t0 + (n - 1) * 10_000);
    const collectingAt = new Date(openedAt.getTime() + 500);
    const aggregatingAt = new Date(openedAt.getTime() + 4_000 + (n % 7) * 300);
    const closedAt = new Date(aggregatingAt.getTime() + 200);
    // Every fifth round the first device drops out.
    const dropped = n % 5 === 0 ? 1 : 0;
    const ids = clients.map((c) => c.id);
    if (privacy !== null) {
      const e = epsilonIfRoundRuns(ledger, privacy);
      const fields: LedgerFields = {
        taskId,
        sequence: n,
        roundNumber: n,
        ...ledgerParams(privacy),
        participants: ids.length,
        participantIds: ids,
        epsilon: ledgerNumber(e.epsilon),
        delta: privacy.delta,
        order: e.order,
        createdAt: collectingAt.toISOString(),
      };
      const prevHash = ledger.at(-1)?.hash ?? GENESIS_HASH;
      ledger.push({ ...fields, prevHash, hash: hashLedgerEntry(fields, prevHash) });
    }
    const submitters = clients.slice(dropped);
    const updateBytes = 40;
    const accuracy = seededAccuracy(n - 1);
    const loss = seededLoss(n - 1);
    roundRows.push({
      id: roundId,
      taskId,
      number: n,
      state: 'CLOSED' as const,
      baseModelVersion: n - 1,
      targetCount: ids.length,
      minClients: 1,
      receivedCount: submitters.length,
      deadlineAt: new Date(collectingAt.getTime() + 60_000),
      config: settings.training as unknown as object,
      summary: { participants: submitters.length, dropped, examples: privacy === null ? submitters.reduce((a, _c, j) => a + 400 + 50 * (j + dropped), 0) : submitters.length, uploadBytes: updateBytes * submitters.length, modelVersion: n, aggregationMs: 1 },
      openedAt,
      closedAt,
    });
    eventRows.push(
      { roundId, from: null, to: 'SELECTING' as const, reason: null, at: openedAt },
      { roundId, from: 'SELECTING' as const, to: 'COLLECTING' as const, reason: `${ids.length} clients selected`, at: collectingAt },
      { roundId, from: 'COLLECTING' as const, to: 'AGGREGATING' as const, reason: dropped ? 'deadline' : 'all selected clients submitted', at: aggregatingAt },
      { roundId, from: 'AGGREGATING' as const, to: 'CLOSED' as const, reason: null, at: closedAt },
    );
    clients.forEach((c, k) => {
      const submitted = k >= dropped;
      participationRows.push({
        roundId,
        clientId: c.id,
        status: submitted ? ('SUBMITTED' as const) : ('DROPPED' as const),
        ...(submitted && {
          exampleCount: privacy === null ? 400 + 50 * k : 1,
          // What the device trained on, reported apart from the weight (1 under DP).
          trainedExamples: 400 + 50 * k,
          encoding: 'float32-le',
          updateDigest: sha(`${roundId}/${c.id}`),
          updateBytes,
          updateBlobKey: `seed/${n}/${c.id}`,
          submittedAt: new Date(collectingAt.getTime() + 1_000 + k * 100),
          // Devices of round n evaluate the model they received (version n - 1).
          evalMetrics: { accuracy, loss },
          evalExampleCount: 100,
          evalModelVersion: n - 1,
        }),
      });
    });
    modelRows.push({ taskId, version: n, digest: sha(`v${n}`), sizeBytes: 40, encoding: 'float32-le', roundNumber: n, createdAt: closedAt });
    rounds.push({ number: n, participants: submitters.length, dropped, uploadBytes: updateBytes * submitters.length, accuracy, loss });
  }
  await prisma.$transaction(async (tx) => {
    await tx.round.createMany({ data: roundRows });
    await tx.roundEvent.createMany({ data: eventRows });
    await tx.participation.createMany({ data: participationRows });
    await tx.modelVersion.createMany({ data: modelRows });
    await tx.privacyLedgerEntry.createMany({
      data: ledger.map(({ ddg: _ddg, decryption: _decryption, participantIds, createdAt, ...rest }) => ({ ...rest, participantIds, createdAt: new Date(createdAt) })),
    });
    await tx.task.update({ where: { id: taskId }, data: { currentModelVersion: options.rounds } });
    // After the last round the devices evaluated the final model (version `rounds`).
    await tx.modelEvaluation.createMany({
      data: clients.map((c) => ({ taskId, modelVersion: options.rounds, clientId: c.id, exampleCount: 100, metrics: { accuracy: seededAccuracy(options.rounds), loss: seededLoss(options.rounds) } })),
    });
  }, { timeout: 120_000 });
  await store.setTaskStatus(taskId, 'COMPLETED', ['DRAFT'], 'seeded');
  return { taskId, rounds, deviceNames, ledger };
}
