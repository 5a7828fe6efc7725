import type { PrismaClient } from '../gen/prisma/client.js';
import type { Prisma } from '../gen/prisma/client.js';
import type {
  Client,
  ModelVersion,
  Round,
  RoundEvaluation,
  RoundEvent,
  RoundState,
  RoundSummary,
  Submission,
  Task,
  TaskEncryption,
  TaskSettings,
  RoundConfig,
  WeightSpecJson,
} from '../rounds/model.js';
import type { DeviceRecord, FederationStore, ModelEvaluationRecord, RecordSubmissionResult, RoundRecord } from '../rounds/ports.js';
import type { LedgerDecryption, LedgerEntry } from '../privacy/ledger.js';
import { DEFAULT_STRATEGY } from '../aggregation/registry.js';
import { DEFAULT_UPDATE_BOUND } from '../aggregation/update-bound.js';
import type { FitConfig } from '../aggregation/strategy.js';
import { DEFAULT_MAX_DEVICES } from '../rounds/task-settings.js';
import { withBusyTranslation } from './busy.js';

type TaskRow = Prisma.TaskGetPayload<object>;
type RoundRow = Prisma.RoundGetPayload<object>;

const json = (value: unknown): Prisma.InputJsonValue => value as Prisma.InputJsonValue;

/**
 * Task settings as stored. Tasks created before distributed DP have no `privacy.ddg` (local mode,
 * null), tasks created before strategies were selectable have no `strategy` (FedAvg), tasks created
 * before update bounds have no `updateBound`: plaintext ones get the default bound (so a stored
 * update beyond it can no longer enter a model), encrypted ones none.
 */
function taskSettings(spec: unknown): TaskSettings {
  const stored = spec as Omit<TaskSettings, 'strategy' | 'updateBound' | 'maxDevices'> & {
    strategy?: TaskSettings['strategy'];
    updateBound?: TaskSettings['updateBound'];
    maxDevices?: number;
  };
  const updateBound = stored.updateBound !== undefined ? stored.updateBound : stored.updateEncoding === 'float32-le' ? { ...DEFAULT_UPDATE_BOUND } : null;
  // Tasks created before the device cap have none stored: the default applies.
  const settings: TaskSettings = { ...stored, strategy: stored.strategy ?? DEFAULT_STRATEGY, updateBound, maxDevices: stored.maxDevices ?? DEFAULT_MAX_DEVICES };
  if (settings.privacy === null || settings.privacy.ddg !== undefined) return settings;
  return { ...settings, privacy: { ...settings.privacy, ddg: null } };
}

function toTask(row: TaskRow): Task {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    statusReason: row.statusReason,
    settings: taskSettings(row.spec),
    modelTopology: row.modelTopology as Record<string, unknown>,
    weightSpecs: row.weightSpecs as unknown as WeightSpecJson[],
    parameterCount: row.parameterCount,
    encryption: (row.encryption as unknown as TaskEncryption | null) ?? null,
    currentModelVersion: row.currentModelVersion,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
  };
}

function toRound(row: RoundRow): Round {
  return {
    id: row.id,
    taskId: row.taskId,
    number: row.number,
    state: row.state,
    failureReason: row.failureReason,
    baseModelVersion: row.baseModelVersion,
    targetCount: row.targetCount,
    minClients: row.minClients,
    receivedCount: row.receivedCount,
    deadlineAt: row.deadlineAt,
    config: row.config as unknown as RoundConfig,
    fitConfig: (row.fitConfig as FitConfig | null) ?? {},
    summary: (row.summary as unknown as RoundSummary | null) ?? null,
    openedAt: row.openedAt,
    closedAt: row.closedAt,
  };
}

function toLedgerEntry(row: Prisma.PrivacyLedgerEntryGetPayload<object>): LedgerEntry {
  return {
    taskId: row.taskId,
    sequence: row.sequence,
    roundNumber: row.roundNumber,
    mechanism: row.mechanism,
    samplingRate: row.samplingRate,
    noiseMultiplier: row.noiseMultiplier,
    clipNorm: row.clipNorm,
    participants: row.participants,
    participantIds: row.participantIds as string[],
    epsilon: row.epsilon,
    delta: row.delta,
    order: row.order,
    createdAt: row.createdAt.toISOString(),
    ddg:
      row.ddgNoiseClients === null
        ? null
        : {
            noiseClients: row.ddgNoiseClients,
            scale: row.ddgScale!,
            localStddev: row.ddgLocalStddev!,
            dimension: row.ddgDimension!,
            roundingBeta: row.ddgRoundingBeta!,
          },
    ...(row.decryption !== null && { decryption: row.decryption as unknown as LedgerDecryption }),
    ...(row.epsilonCoordinator !== null && { epsilonCoordinator: row.epsilonCoordinator }),
    prevHash: row.prevHash,
    hash: row.hash,
  };
}

/** The ledger entry's columns. */
function ledgerRow(entry: LedgerEntry) {
  const { ddg, participantIds, createdAt, decryption, epsilonCoordinator, ...rest } = entry;
  return {
    ...rest,
    ...(decryption != null && { decryption: json(decryption) }),
    epsilonCoordinator: epsilonCoordinator ?? null,
    participantIds: json(participantIds),
    createdAt: new Date(createdAt),
    ddgNoiseClients: ddg?.noiseClients ?? null,
    ddgScale: ddg?.scale ?? null,
    ddgLocalStddev: ddg?.localStddev ?? null,
    ddgDimension: ddg?.dimension ?? null,
    ddgRoundingBeta: ddg?.roundingBeta ?? null,
  };
}

/** Metrics reported by devices, weighted by their example counts; null when none reported. */
function weightedEvaluation(
  rows: ReadonlyArray<{ evalMetrics: unknown; evalExampleCount: number | null; evalModelVersion: number | null }>,
): RoundEvaluation | null {
  if (rows.length === 0) return null;
  const sums: Record<string, number> = {};
  let examples = 0;
  for (const r of rows) {
    const n = r.evalExampleCount ?? 0;
    examples += n;
    for (const [name, value] of Object.entries((r.evalMetrics ?? {}) as Record<string, number>)) {
      sums[name] = (sums[name] ?? 0) + n * value;
    }
  }
  const metrics: Record<string, number> = {};
  for (const [name, sum] of Object.entries(sums)) metrics[name] = examples > 0 ? sum / examples : 0;
  return { modelVersion: rows[0]!.evalModelVersion ?? 0, clients: rows.length, examples, metrics };
}

/** Columns a transition may set besides the state. */
interface TransitionData {
  targetCount?: number;
  deadlineAt?: Date;
  summary?: RoundSummary;
  closedAt?: Date;
  failureReason?: string;
  fitConfig?: FitConfig;
}

/** What runs raw statements: the client, an interactive transaction, or {@link DirectSql}. */
interface Sql {
  $queryRawUnsafe<T = unknown>(query: string, ...values: unknown[]): PromiseLike<T>;
}

/**
 * Runs one SQL statement on the database's driver directly (node-postgres), outside Prisma's
 * query engine: the statements of every update and round boundary. Through Prisma a raw statement
 * costs ~0.75 ms more CPU than on the driver (its query compiler and interpreter; 40 parameters,
 * measured on PostgreSQL 2026-12-06), and a round runs one per group commit plus two at its close.
 * Rows come back as node-postgres parses them: the statements that use it return only int4, float8,
 * bool, text, jsonb and timestamptz columns, which both parse alike.
 */
export interface DirectSql {
  query<T>(text: string, values: readonly unknown[]): Promise<T[]>;
}

/** Options of {@link createPrismaStore}. */
export interface PrismaStoreOptions {
  /** Runs the hot statements (update records, round moves outside a transaction, a round's submissions). Default: Prisma's `$queryRawUnsafe`. */
  directSql?: DirectSql | null;
}

/** A statement's parameters: `add` appends one and returns its cast placeholder. */
class Params {
  readonly values: unknown[] = [];
  add(value: unknown, cast: string): string {
    this.values.push(value);
    return `$${this.values.length}::${cast}`;
  }
}

/** A Round row's columns as a raw statement returns them (the shape Prisma's client gives `toRound`). */
const ROUND_COLUMNS = `id::text AS id, "taskId"::text AS "taskId", number, state::text AS state, "failureReason", "baseModelVersion",
  "targetCount", "minClients", "receivedCount", "deadlineAt", config, "fitConfig", summary, "openedAt", "closedAt"`;

/**
 * A round transition guarded by the expected states, in ONE statement (one round trip, atomic
 * without an interactive transaction): row lock, old state, UPDATE, the RoundEvent, and the
 * statements `extra` adds (CTE bodies that act only when the round moved: they refer to `upd`,
 * the moved round's new row). Returns the moved round, or null when it was in none of `from`.
 */
async function transition(
  db: Sql,
  roundId: string,
  from: readonly RoundState[],
  to: RoundState,
  data: TransitionData,
  reason: string | null,
  extra?: (p: Params) => string[],
): Promise<RoundRow | null> {
  const p = new Params();
  const id = p.add(roundId, 'uuid');
  const toState = p.add(to, '"RoundState"');
  const fromStates = p.add([...from], 'text[]');
  const why = p.add(reason, 'text');
  const sets: string[] = [`state = ${toState}`];
  const set = (column: string, value: unknown, cast: string): void => {
    sets.push(`"${column}" = ${p.add(value, cast)}`);
  };
  if (data.targetCount !== undefined) set('targetCount', data.targetCount, 'int');
  if (data.deadlineAt !== undefined) set('deadlineAt', data.deadlineAt.toISOString(), 'timestamptz');
  if (data.summary !== undefined) set('summary', JSON.stringify(data.summary), 'jsonb');
  if (data.closedAt !== undefined) set('closedAt', data.closedAt.toISOString(), 'timestamptz');
  if (data.failureReason !== undefined) set('failureReason', data.failureReason, 'text');
  if (data.fitConfig !== undefined) set('fitConfig', JSON.stringify(data.fitConfig), 'jsonb');
  const extras = (extra?.(p) ?? []).map((body, k) => `, x${k} AS (${body})`).join('');
  const moved = await db.$queryRawUnsafe<RoundRow[]>(
    `WITH old AS (
       SELECT id, state FROM "Round" WHERE id = ${id} FOR UPDATE
     ), upd AS (
       UPDATE "Round" SET ${sets.join(', ')}
       FROM old WHERE "Round".id = old.id AND old.state::text = ANY(${fromStates})
       RETURNING "Round".*, old.state AS "fromState"
     ), ev AS (
       INSERT INTO "RoundEvent" ("roundId", "from", "to", reason)
       SELECT id, "fromState", ${toState}, ${why} FROM upd
       RETURNING 1
     )${extras}
     SELECT ${ROUND_COLUMNS} FROM upd`,
    ...p.values,
  );
  return moved.length === 1 ? moved[0]! : null;
}

/** CTE body for `transition`: the round's participants still SELECTED become DROPPED. */
/**
 * Runs a round move: alone (one statement) without a privacy-ledger entry; with one, in a
 * transaction that writes the entry only if the move happened, so both commit or neither.
 */
async function moveWithLedgerEntry<T>(
  prisma: PrismaClient,
  direct: Sql,
  move: (db: Sql) => Promise<T | null>,
  entry: LedgerEntry | undefined,
): Promise<T | null> {
  if (entry === undefined) return move(direct);
  return prisma.$transaction(async (tx) => {
    const moved = await move(tx);
    if (moved !== null) await tx.privacyLedgerEntry.create({ data: ledgerRow(entry) });
    return moved;
  });
}

const dropUnsubmitted = (p: Params, roundId: string): string =>
  `UPDATE "Participation" SET status = 'DROPPED' WHERE "roundId" = ${p.add(roundId, 'uuid')} AND status = 'SELECTED' AND EXISTS (SELECT 1 FROM upd)`;

/** FederationStore on Prisma (PostgreSQL or PGlite); a busy database surfaces as `unavailable` (see busy.ts). */
export function createPrismaStore(prisma: PrismaClient, options: PrismaStoreOptions = {}): FederationStore {
  const directSql = options.directSql ?? null;
  const direct: Sql =
    directSql === null ? prisma : { $queryRawUnsafe: <T>(query: string, ...values: unknown[]) => directSql.query(query, values) as Promise<T> };
  return withBusyTranslation<FederationStore>({
    async createTask(task) {
      const row = await prisma.$transaction(async (tx) => {
        const created = await tx.task.create({
          data: {
            id: task.id,
            name: task.name,
            spec: json(task.settings),
            modelTopology: json(task.modelTopology),
            weightSpecs: json(task.weightSpecs),
            parameterCount: task.parameterCount,
            ...(task.encryption !== null && { encryption: json(task.encryption) }),
            currentModelVersion: 0,
          },
        });
        await tx.modelVersion.create({
          data: {
            taskId: task.id,
            version: 0,
            digest: task.initialModel.sha256,
            sizeBytes: task.initialModel.sizeBytes,
            encoding: task.initialModel.encoding,
          },
        });
        return created;
      });
      return toTask(row);
    },

    async getTask(id) {
      const row = await prisma.task.findUnique({ where: { id } });
      return row === null ? null : toTask(row);
    },

    async listTasks() {
      return (await prisma.task.findMany({ orderBy: { createdAt: 'asc' } })).map(toTask);
    },

    async setTaskStatus(id, to, from, reason = null) {
      const { count } = await prisma.task.updateMany({
        where: { id, status: { in: [...from] } },
        data: { status: to, statusReason: reason },
      });
      if (count !== 1) return null;
      return toTask(await prisma.task.findUniqueOrThrow({ where: { id } }));
    },

    async updateTaskSettings(id, settings, from, status) {
      const { count } = await prisma.task.updateMany({
        where: { id, status: { in: [...from] } },
        data: { spec: json(settings), ...(status !== undefined && { status: status.to, statusReason: status.reason }) },
      });
      if (count !== 1) return null;
      return toTask(await prisma.task.findUniqueOrThrow({ where: { id } }));
    },

    async createClient(client) {
      const row = await prisma.client.create({ data: client });
      return { id: row.id, taskId: row.taskId, name: row.name };
    },

    async findClientByCredentialHash(hash) {
      const row = await prisma.client.findUnique({ where: { credentialHash: hash } });
      // A revoked credential is unknown from then on.
      return row === null || row.revokedAt !== null ? null : { id: row.id, taskId: row.taskId, name: row.name };
    },

    async openRound(round) {
      // One statement: the round and its first event (one round trip, atomic).
      const p = new Params();
      const rows = await prisma.$queryRawUnsafe<RoundRow[]>(
        `WITH r AS (
           INSERT INTO "Round" (id, "taskId", number, state, "baseModelVersion", "targetCount", "minClients", "deadlineAt", config)
           VALUES (${p.add(round.id, 'uuid')}, ${p.add(round.taskId, 'uuid')}, ${p.add(round.number, 'int')}, 'SELECTING', ${p.add(round.baseModelVersion, 'int')},
             0, ${p.add(round.minClients, 'int')}, ${p.add(new Date(0).toISOString(), 'timestamptz')}, ${p.add(JSON.stringify(round.config), 'jsonb')})
           RETURNING *
         ), ev AS (
           INSERT INTO "RoundEvent" ("roundId", "from", "to", reason) SELECT id, NULL, 'SELECTING', NULL FROM r
         )
         SELECT ${ROUND_COLUMNS} FROM r`,
        ...p.values,
      );
      return toRound(rows[0]!);
    },

    async startCollecting(roundId, clientIds, deadlineAt, { fitConfig, ledgerEntry }) {
      const move = (db: Sql): Promise<RoundRow | null> =>
        transition(
          db,
          roundId,
          ['SELECTING'],
          'COLLECTING',
          { targetCount: clientIds.length, deadlineAt, fitConfig },
          `${clientIds.length} clients selected`,
          (p) => [
            `INSERT INTO "Participation" ("roundId", "clientId", status)
             SELECT ${p.add(roundId, 'uuid')}, c, 'SELECTED' FROM unnest(${p.add([...clientIds], 'uuid[]')}) AS c WHERE EXISTS (SELECT 1 FROM upd)`,
          ],
        );
      // Without a privacy spend: one statement. With one, the ledger entry joins it in a transaction.
      const row = await moveWithLedgerEntry(prisma, direct, move, ledgerEntry);
      return row === null ? null : toRound(row);
    },

    async recordSubmissions(roundId, submissions, options): Promise<RecordSubmissionResult[]> {
      if (submissions.length === 0) return [];
      // One statement, one round trip, atomic, for a batch (group commit): lock the round row
      // (serializes with state transitions), mark each participant SUBMITTED only if the round is
      // COLLECTING and the participant is SELECTED, bump receivedCount by the number that moved.
      // The join outside the data-modifying CTEs sees the statement's snapshot, i.e. the state
      // before this batch: it explains a refusal. Client ids must be distinct within a batch.
      const params: unknown[] = [roundId, new Date().toISOString(), options?.refuseClientReplays === true, options?.refuseDigestReplays === true];
      const rows = submissions.map((x, k) => {
        const at = params.length;
        params.push(x.clientId, x.exampleCount, x.encoding, x.sha256, x.sizeBytes, x.blobKey, x.trainedExamples ?? null, x.trainingLoss ?? null);
        return `(${k}, $${at + 1}::uuid, $${at + 2}::int, $${at + 3}::text, $${at + 4}::text, $${at + 5}::int, $${at + 6}::text, $${at + 7}::int, $${at + 8}::float8)`;
      });
      const result = await direct.$queryRawUnsafe<
        Array<{ ord: number; roundState: RoundState | null; accepted: boolean; replay: boolean; receivedCount: number | null; status: string | null; updateDigest: string | null }>
      >(
        `WITH r AS (
          SELECT id, state FROM "Round" WHERE id = $1::uuid FOR UPDATE
        ), i (ord, "clientId", "exampleCount", encoding, digest, bytes, "blobKey", "trainedExamples", "trainingLoss") AS (
          VALUES ${rows.join(', ')}
        ), rp AS (
          -- Replays ($3, plaintext): the same client's same digest accepted in another round of the
          -- task (digest index).
          SELECT DISTINCT i.ord FROM i
          JOIN "Participation" q ON q."updateDigest" = i.digest AND q."clientId" = i."clientId" AND q."roundId" <> $1::uuid
          JOIN "Round" qr ON qr.id = q."roundId"
          WHERE $3::boolean AND qr."taskId" = (SELECT "taskId" FROM "Round" WHERE id = $1::uuid)
          UNION
          -- Replays ($4, ciphertexts, which are randomized): the same digest from any device anywhere
          -- in the task, except the client's own update of this round (its retry: a duplicate), or
          -- earlier in this batch.
          SELECT i.ord FROM i
          WHERE $4::boolean AND (
            EXISTS (
              SELECT 1 FROM "Participation" q JOIN "Round" qr ON qr.id = q."roundId"
              WHERE q."updateDigest" = i.digest AND qr."taskId" = (SELECT "taskId" FROM "Round" WHERE id = $1::uuid)
                AND NOT (q."roundId" = $1::uuid AND q."clientId" = i."clientId")
            )
            OR EXISTS (SELECT 1 FROM i j WHERE j.digest = i.digest AND j.ord < i.ord)
          )
        ), p AS (
          UPDATE "Participation" pa SET
            status = 'SUBMITTED',
            "exampleCount" = i."exampleCount",
            "trainedExamples" = i."trainedExamples",
            "trainingLoss" = i."trainingLoss",
            encoding = i.encoding,
            "updateDigest" = i.digest,
            "updateBytes" = i.bytes,
            "updateBlobKey" = i."blobKey",
            "submittedAt" = $2::timestamptz
          FROM i
          WHERE pa."roundId" = $1::uuid AND pa."clientId" = i."clientId" AND pa.status = 'SELECTED'
            AND EXISTS (SELECT 1 FROM r WHERE r.state = 'COLLECTING') AND NOT EXISTS (SELECT 1 FROM rp WHERE rp.ord = i.ord)
          RETURNING pa."clientId"
        ), b AS (
          UPDATE "Round" SET "receivedCount" = "receivedCount" + (SELECT count(*) FROM p)::int
          WHERE id = $1::uuid AND EXISTS (SELECT 1 FROM p)
          RETURNING "receivedCount"
        )
        SELECT
          i.ord,
          (SELECT state::text FROM r) AS "roundState",
          EXISTS (SELECT 1 FROM p WHERE p."clientId" = i."clientId") AS accepted,
          EXISTS (SELECT 1 FROM rp WHERE rp.ord = i.ord) AS replay,
          (SELECT "receivedCount" FROM b) AS "receivedCount",
          pa.status::text AS status,
          pa."updateDigest" AS "updateDigest"
        FROM i LEFT JOIN "Participation" pa ON pa."roundId" = $1::uuid AND pa."clientId" = i."clientId"
        ORDER BY i.ord`,
        ...params,
      );
      if (result.length !== submissions.length) throw new Error(`recordSubmissions returned ${result.length} rows for ${submissions.length}`);
      // Accepted ones are numbered in batch order, ending at the round's new count.
      // (receivedCount, the round's count after the batch, is the same on every row; null if none moved.)
      const acceptedTotal = result.filter((row) => row.accepted).length;
      let next = Number(result[0]?.receivedCount ?? 0) - acceptedTotal;
      return result.map((row): RecordSubmissionResult => {
        if (row.accepted) return { kind: 'accepted', receivedCount: ++next };
        if (row.replay) return { kind: 'replay' };
        if (row.roundState !== 'COLLECTING') return { kind: 'round_closed', state: row.roundState ?? 'FAILED' };
        if (row.status === null) return { kind: 'not_selected' };
        if (row.status === 'SUBMITTED') return { kind: 'duplicate', sha256: row.updateDigest };
        return { kind: 'round_closed', state: 'COLLECTING' };
      });
    },

    async beginAggregation(roundId, reason) {
      const row = await transition(prisma, roundId, ['COLLECTING'], 'AGGREGATING', {}, reason, (p) => [dropUnsubmitted(p, roundId)]);
      return row === null ? null : toRound(row);
    },

    async closeRound(roundId, model, summary, extra) {
      const move = (db: Sql): Promise<RoundRow | null> =>
        transition(db, roundId, ['AGGREGATING'], 'CLOSED', { summary, closedAt: new Date() }, null, (p) =>
          model === null
            ? []
            : [
                `INSERT INTO "ModelVersion" ("taskId", version, digest, "sizeBytes", encoding, "roundNumber", "strategyStateDigest", "strategyStateBytes")
                 SELECT "taskId", ${p.add(model.version, 'int')}, ${p.add(model.sha256, 'text')}, ${p.add(model.sizeBytes, 'int')}, ${p.add(model.encoding, 'text')},
                   number, ${p.add(model.strategyState?.sha256 ?? null, 'text')}, ${p.add(model.strategyState?.sizeBytes ?? null, 'int')} FROM upd`,
                `UPDATE "Task" SET "currentModelVersion" = ${p.add(model.version, 'int')}, "updatedAt" = ${p.add(new Date().toISOString(), 'timestamptz')}
                 FROM upd WHERE "Task".id = upd."taskId"`,
              ],
        );
      // Without a ledger entry: one statement. A committee decryption's entry commits with the round it closes (or not at all).
      const ledgerEntry = extra?.ledgerEntry;
      const row = await moveWithLedgerEntry(prisma, direct, move, ledgerEntry);
      return row === null ? null : toRound(row);
    },

    async closeAndOpen({ roundId, from, aggregatingReason, model, summary, ledgerEntry, next }) {
      const run = async (db: Sql): Promise<{ closed: RoundRow; opened: RoundRow | null } | null> => {
        const p = new Params();
        const id = p.add(roundId, 'uuid');
        const ctes: string[] = [
          `old AS (SELECT id, state FROM "Round" WHERE id = ${id} FOR UPDATE)`,
          `upd AS (
             UPDATE "Round" SET state = 'CLOSED', summary = ${p.add(JSON.stringify(summary), 'jsonb')}, "closedAt" = ${p.add(new Date().toISOString(), 'timestamptz')}
             FROM old WHERE "Round".id = old.id AND old.state::text = ${p.add(from, 'text')}
             RETURNING "Round".*
           )`,
          `dropped AS (UPDATE "Participation" SET status = 'DROPPED' WHERE "roundId" = ${id} AND status = 'SELECTED' AND EXISTS (SELECT 1 FROM upd))`,
        ];
        // Every transition of both rounds, in order (one INSERT, so the ids follow `k`).
        const events: string[] = [];
        if (from === 'COLLECTING') events.push(`SELECT upd.id, 'COLLECTING', 'AGGREGATING', ${p.add(aggregatingReason, 'text')}, 1 FROM upd`);
        events.push(`SELECT upd.id, 'AGGREGATING', 'CLOSED', NULL, 2 FROM upd`);
        if (model !== null) {
          ctes.push(
            `mv AS (
               INSERT INTO "ModelVersion" ("taskId", version, digest, "sizeBytes", encoding, "roundNumber", "strategyStateDigest", "strategyStateBytes")
               SELECT "taskId", ${p.add(model.version, 'int')}, ${p.add(model.sha256, 'text')}, ${p.add(model.sizeBytes, 'int')}, ${p.add(model.encoding, 'text')},
                 number, ${p.add(model.strategyState?.sha256 ?? null, 'text')}, ${p.add(model.strategyState?.sizeBytes ?? null, 'int')} FROM upd
             )`,
            `tv AS (
               UPDATE "Task" SET "currentModelVersion" = ${p.add(model.version, 'int')}, "updatedAt" = ${p.add(new Date().toISOString(), 'timestamptz')}
               FROM upd WHERE "Task".id = upd."taskId"
             )`,
          );
        }
        let opened = '';
        if (next !== null) {
          const c = next.collecting;
          ctes.push(
            `nr AS (
               INSERT INTO "Round" (id, "taskId", number, state, "baseModelVersion", "targetCount", "minClients", "deadlineAt", config, "fitConfig")
               SELECT ${p.add(next.id, 'uuid')}, upd."taskId", ${p.add(next.number, 'int')}, ${p.add(c === null ? 'SELECTING' : 'COLLECTING', '"RoundState"')},
                 ${p.add(next.baseModelVersion, 'int')}, ${p.add(c?.clientIds.length ?? 0, 'int')}, ${p.add(next.minClients, 'int')},
                 ${p.add((c?.deadlineAt ?? new Date(0)).toISOString(), 'timestamptz')}, ${p.add(JSON.stringify(next.config), 'jsonb')},
                 ${p.add(c === null ? null : JSON.stringify(c.fitConfig), 'jsonb')}
               FROM upd
               RETURNING *
             )`,
          );
          events.push(`SELECT nr.id, NULL, 'SELECTING', NULL, 3 FROM nr`);
          if (c !== null) {
            events.push(`SELECT nr.id, 'SELECTING', 'COLLECTING', ${p.add(`${c.clientIds.length} clients selected`, 'text')}, 4 FROM nr`);
            ctes.push(
              `np AS (
                 INSERT INTO "Participation" ("roundId", "clientId", status)
                 SELECT nr.id, pc, 'SELECTED' FROM nr CROSS JOIN unnest(${p.add([...c.clientIds], 'uuid[]')}) AS pc
               )`,
            );
          }
          opened = ` UNION ALL SELECT 'opened' AS which, ${ROUND_COLUMNS} FROM nr`;
        }
        ctes.push(
          `ev AS (
             INSERT INTO "RoundEvent" ("roundId", "from", "to", reason)
             SELECT e.rid, e.f::"RoundState", e.t::"RoundState", e.r FROM (${events.join(' UNION ALL ')}) AS e(rid, f, t, r, k) ORDER BY e.k
           )`,
        );
        const rows = await db.$queryRawUnsafe<Array<RoundRow & { which: 'closed' | 'opened' }>>(
          `WITH ${ctes.join(',\n')}
           SELECT 'closed' AS which, ${ROUND_COLUMNS} FROM upd${opened}`,
          ...p.values,
        );
        const closed = rows.find((r) => r.which === 'closed');
        if (closed === undefined) return null;
        return { closed, opened: rows.find((r) => r.which === 'opened') ?? null };
      };
      // Without a ledger entry: one statement. A committee decryption's entry commits with the round it closes (or not at all).
      const result = await moveWithLedgerEntry(prisma, direct, run, ledgerEntry);
      return result === null ? null : { closed: toRound(result.closed), opened: result.opened === null ? null : toRound(result.opened) };
    },

    async failRound(roundId, reason) {
      const row = await transition(
        prisma,
        roundId,
        ['SELECTING', 'COLLECTING', 'AGGREGATING'],
        'FAILED',
        { failureReason: reason, closedAt: new Date() },
        reason,
        (p) => [dropUnsubmitted(p, roundId)],
      );
      return row === null ? null : toRound(row);
    },

    async getLatestRound(taskId) {
      const row = await prisma.round.findFirst({ where: { taskId }, orderBy: { number: 'desc' } });
      return row === null ? null : toRound(row);
    },

    async getRound(taskId, number) {
      const row = await prisma.round.findUnique({ where: { taskId_number: { taskId, number } } });
      return row === null ? null : toRound(row);
    },

    async listRounds(taskId, { offset, limit }) {
      const rows = await prisma.round.findMany({ where: { taskId }, orderBy: { number: 'asc' }, skip: offset, take: limit });
      return rows.map(toRound);
    },

    async listRoundEvents(roundId): Promise<RoundEvent[]> {
      const rows = await prisma.roundEvent.findMany({ where: { roundId }, orderBy: { id: 'asc' } });
      return rows.map((r) => ({ from: r.from, to: r.to, reason: r.reason, at: r.at }));
    },

    async listSubmissions(roundId): Promise<Submission[]> {
      const rows = await direct.$queryRawUnsafe<
        Array<{ clientId: string; exampleCount: number; encoding: string; updateDigest: string; updateBytes: number; updateBlobKey: string; trainingLoss: number | null }>
      >(
        `SELECT "clientId"::text AS "clientId", "exampleCount", encoding, "updateDigest", "updateBytes", "updateBlobKey", "trainingLoss"
         FROM "Participation" WHERE "roundId" = $1::uuid AND status = 'SUBMITTED' ORDER BY "submittedAt" ASC`,
        roundId,
      );
      return rows.map((r) => ({
        clientId: r.clientId,
        exampleCount: r.exampleCount,
        encoding: r.encoding as Submission['encoding'],
        sha256: r.updateDigest,
        sizeBytes: r.updateBytes,
        blobKey: r.updateBlobKey,
        trainingLoss: r.trainingLoss,
      }));
    },

    async listParticipants(roundId) {
      const rows = await prisma.participation.findMany({ where: { roundId }, select: { clientId: true } });
      return rows.map((r) => r.clientId);
    },


    async recordEvaluation(roundId, clientId, evaluation) {
      const { count } = await prisma.participation.updateMany({
        where: { roundId, clientId },
        data: { evalMetrics: json(evaluation.metrics), evalExampleCount: evaluation.exampleCount, evalModelVersion: evaluation.modelVersion },
      });
      return count === 1;
    },

    async getRoundEvaluation(roundId): Promise<RoundEvaluation | null> {
      const rows = await prisma.participation.findMany({
        where: { roundId, evalExampleCount: { not: null } },
        select: { evalMetrics: true, evalExampleCount: true, evalModelVersion: true },
      });
      return weightedEvaluation(rows);
    },

    async recordModelEvaluation(taskId, clientId, evaluation) {
      const data = { exampleCount: evaluation.exampleCount, metrics: json(evaluation.metrics), reportedAt: new Date() };
      await prisma.modelEvaluation.upsert({
        where: { taskId_modelVersion_clientId: { taskId, modelVersion: evaluation.modelVersion, clientId } },
        create: { taskId, clientId, modelVersion: evaluation.modelVersion, ...data },
        update: data,
      });
    },

    async listModelEvaluations(taskId): Promise<ModelEvaluationRecord[]> {
      // One statement: the reports made in rounds (on the participations) and those made after the task ended.
      const rows = await prisma.$queryRawUnsafe<Array<{ doc: string }>>(
        `SELECT json_build_object('source', src, 'modelVersion', v, 'evalMetrics', m, 'evalExampleCount', n)::text AS doc FROM (
           SELECT 'round' AS src, p."evalModelVersion" AS v, p."evalMetrics" AS m, p."evalExampleCount" AS n
             FROM "Participation" p JOIN "Round" r ON r.id = p."roundId"
            WHERE r."taskId" = $1::uuid AND p."evalExampleCount" IS NOT NULL
           UNION ALL
           SELECT 'final', e."modelVersion", e.metrics, e."exampleCount" FROM "ModelEvaluation" e WHERE e."taskId" = $1::uuid
         ) x ORDER BY v, src`,
        taskId,
      );
      const groups = new Map<string, { source: 'round' | 'final'; rows: Array<{ evalMetrics: unknown; evalExampleCount: number; evalModelVersion: number }> }>();
      for (const { doc } of rows) {
        const d = JSON.parse(doc) as { source: 'round' | 'final'; modelVersion: number; evalMetrics: unknown; evalExampleCount: number };
        const key = `${d.modelVersion}/${d.source}`;
        let g = groups.get(key);
        if (g === undefined) groups.set(key, (g = { source: d.source, rows: [] }));
        g.rows.push({ evalMetrics: d.evalMetrics, evalExampleCount: d.evalExampleCount, evalModelVersion: d.modelVersion });
      }
      return [...groups.values()].map((g) => ({ ...weightedEvaluation(g.rows)!, source: g.source }));
    },

    async listRoundHistory(taskId, { offset, limit, events = true }): Promise<RoundRecord[]> {
      // One statement for the whole page: each round as a JSON document with its transitions,
      // participation counts and raw evaluation reports (aggregated below like getRoundEvaluation).
      const rows = await prisma.$queryRawUnsafe<Array<{ doc: string }>>(
        `SELECT json_build_object(
            'round', to_jsonb(r),
            'events', ${
              events
                ? `(SELECT coalesce(json_agg(json_build_object('from', e."from", 'to', e."to", 'reason', e.reason, 'at', e.at) ORDER BY e.id), '[]'::json)
                       FROM "RoundEvent" e WHERE e."roundId" = r.id)`
                : `'[]'::json`
            },
            'counts', (SELECT json_build_object(
                          'selected', count(*),
                          'submitted', count(*) FILTER (WHERE p.status = 'SUBMITTED'),
                          'dropped', count(*) FILTER (WHERE p.status = 'DROPPED'),
                          'trainedExamples', sum(p."trainedExamples") FILTER (WHERE p.status = 'SUBMITTED'))
                       FROM "Participation" p WHERE p."roundId" = r.id),
            'evals', (SELECT coalesce(json_agg(json_build_object('evalMetrics', p."evalMetrics", 'evalExampleCount', p."evalExampleCount", 'evalModelVersion', p."evalModelVersion")), '[]'::json)
                      FROM "Participation" p WHERE p."roundId" = r.id AND p."evalExampleCount" IS NOT NULL)
          )::text AS doc
         FROM "Round" r WHERE r."taskId" = $1::uuid ORDER BY r.number OFFSET $2 LIMIT $3`,
        taskId,
        offset,
        limit,
      );
      return rows.map(({ doc }) => {
        const d = JSON.parse(doc) as {
          round: Record<string, unknown>;
          events: Array<{ from: RoundState | null; to: RoundState; reason: string | null; at: string }>;
          counts: { selected: number; submitted: number; dropped: number; trainedExamples: number | null };
          evals: Array<{ evalMetrics: unknown; evalExampleCount: number | null; evalModelVersion: number | null }>;
        };
        const r = d.round;
        const date = (v: unknown): Date => new Date(v as string);
        const round = toRound({
          ...(r as unknown as RoundRow),
          deadlineAt: date(r['deadlineAt']),
          openedAt: date(r['openedAt']),
          closedAt: r['closedAt'] === null ? null : date(r['closedAt']),
        });
        return {
          round,
          events: d.events.map((e) => ({ from: e.from, to: e.to, reason: e.reason, at: new Date(e.at) })),
          participation: d.counts,
          evaluation: weightedEvaluation(d.evals),
        };
      });
    },

    async listDevices(taskId): Promise<DeviceRecord[]> {
      const rows = await prisma.$queryRawUnsafe<Array<{ doc: string }>>(
        `SELECT json_build_object(
            'id', c.id, 'name', c.name, 'joinedAt', c."joinedAt", 'revokedAt', c."revokedAt",
            'lastSubmittedAt', (SELECT max(p."submittedAt") FROM "Participation" p WHERE p."clientId" = c.id),
            'selected', (SELECT count(*) FROM "Participation" p WHERE p."clientId" = c.id),
            'submitted', (SELECT count(*) FROM "Participation" p WHERE p."clientId" = c.id AND p.status = 'SUBMITTED'),
            'dropped', (SELECT count(*) FROM "Participation" p WHERE p."clientId" = c.id AND p.status = 'DROPPED'),
            'trainedExamples', (SELECT sum(p."trainedExamples") FROM "Participation" p WHERE p."clientId" = c.id AND p.status = 'SUBMITTED')
          )::text AS doc
         FROM "Client" c WHERE c."taskId" = $1::uuid ORDER BY c."joinedAt", c.id`,
        taskId,
      );
      return rows.map(({ doc }) => {
        const d = JSON.parse(doc) as { id: string; name: string | null; joinedAt: string; revokedAt: string | null; lastSubmittedAt: string | null; selected: number; submitted: number; dropped: number; trainedExamples: number | null };
        const joinedAt = new Date(d.joinedAt);
        const submittedAt = d.lastSubmittedAt === null ? null : new Date(d.lastSubmittedAt);
        return {
          id: d.id,
          name: d.name,
          joinedAt,
          lastSeenAt: submittedAt !== null && submittedAt > joinedAt ? submittedAt : joinedAt,
          roundsSelected: d.selected,
          roundsSubmitted: d.submitted,
          roundsDropped: d.dropped,
          trainedExamples: d.trainedExamples,
          revokedAt: d.revokedAt === null ? null : new Date(d.revokedAt),
        };
      });
    },

    async getModelVersion(taskId, version): Promise<ModelVersion | null> {
      const row = await prisma.modelVersion.findUnique({ where: { taskId_version: { taskId, version } } });
      return row === null
        ? null
        : {
            taskId: row.taskId,
            version: row.version,
            sha256: row.digest,
            sizeBytes: row.sizeBytes,
            encoding: row.encoding,
            roundNumber: row.roundNumber,
            strategyState:
              row.strategyStateDigest === null || row.strategyStateBytes === null
                ? null
                : { sha256: row.strategyStateDigest, sizeBytes: row.strategyStateBytes },
            createdAt: row.createdAt,
          };
    },

    async listLedger(taskId, page) {
      const rows = await prisma.privacyLedgerEntry.findMany({
        where: { taskId },
        orderBy: { sequence: 'asc' },
        ...(page && { skip: page.offset, take: page.limit }),
      });
      return rows.map(toLedgerEntry);
    },

    async lastLedgerEntry(taskId) {
      const row = await prisma.privacyLedgerEntry.findFirst({ where: { taskId }, orderBy: { sequence: 'desc' } });
      return row === null ? null : toLedgerEntry(row);
    },

    async findTaskByKeyId(keyId) {
      const rows = await prisma.$queryRawUnsafe<Array<{ id: string }>>(
        `SELECT id FROM "Task" WHERE encryption->>'keyId' = $1 LIMIT 1`,
        keyId,
      );
      return rows[0]?.id ?? null;
    },

    async ping() {
      await prisma.$queryRawUnsafe('SELECT 1');
    },

    async close() {
      await prisma.$disconnect();
    },
  });
}

export type { Client };
