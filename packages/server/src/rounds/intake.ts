import { hash } from 'node:crypto';
import { checkCommitteeUpload } from '../aggregation/committee-aggregator.js';
import { checkEncryptedUpdate, checkPlaintextUpdate, releaseChecked, type CheckedUpdate } from '../aggregation/round-aggregator.js';
import { REPORT_TRAINING_LOSS } from '../aggregation/strategy.js';
import { updateBlobDir } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import type { Client, Round, UpdateEncoding } from './model.js';
import type { FederationStore, RecordSubmissionResult } from './ports.js';
import { maxUpdateBytes, updateValueCount } from './sizes.js';
import type { EngineContext } from './engine-context.js';
import type { OpenRound } from './open-round.js';
import type { RoundEndAhead } from './round-loop.js';
import { committeeTask, heContext, type TaskRuntime, type TaskRuntimes } from './task-runtime.js';
import { checkCalibrationReport, encryptedValueCount } from './calibration.js';
import { bytesToFloat32 } from '@veil/protocol/codec';

export interface UpdateHeaderInput {
  roundNumber: number;
  modelVersion: number;
  exampleCount: number;
  /** Local examples the device reports it trained on (not a weight); null when not reported. */
  trainedExamples?: number | null;
  /** F_k(w_t): the loss of the round's model on the device's training data before training, when the round asks for it; null when not reported. */
  trainingLoss?: number | null;
  encoding: UpdateEncoding | 'unspecified';
  payloadSizeBytes: number;
  /** Hex SHA-256 of the payload as the client computed it. */
  sha256: string;
}

/** An update ready to be recorded: checked and stored outside the lock. */
export interface PendingRecord {
  client: Client;
  header: UpdateHeaderInput;
  arrivedAt: number;
  /** The round the update was checked against before the lock. */
  roundId: string;
  /** SHA-256 of the payload as sent. */
  sha256: string;
  update: CheckedUpdate;
  key: string;
  blobSha256: string;
  sizeBytes: number;
  done: (outcome: { ok: true; acceptedCount: number } | { ok: false; error: unknown; recorded: boolean }) => void;
}

/** What intake needs from the round loop (all called with the task's mutex held). */
export interface IntakeLoop {
  /**
   * Closes collection and aggregates the open round (`reason` is recorded); `ahead`: its end as
   * `startRoundEnd` started it, for exactly the recorded updates.
   */
  aggregate(rt: TaskRuntime, reason: string, ahead?: RoundEndAhead): Promise<void>;
  /** Folds the updates that complete a plaintext round and starts its end before they are recorded (null: not such a round; see RoundLoop.startRoundEnd). */
  startRoundEnd?(
    rt: TaskRuntime,
    open: OpenRound,
    updates: readonly { clientId: string; exampleCount: number; update: CheckedUpdate; trainingLoss: number | null }[],
  ): RoundEndAhead | null;
  /** Rebuilds the open round's aggregate from the store. */
  rebuildAggregate(rt: TaskRuntime, open: OpenRound): Promise<void>;
  /** Fails the open round after an unexpected error and resumes; never throws. */
  recoverTask(rt: TaskRuntime, error: unknown): Promise<void>;
}

/**
 * Update intake: checks an upload's header before its payload is read,
 * validates and durably stores the payload outside the task's lock (uploads
 * proceed in parallel), then records the waiting updates with one store write
 * per group commit and folds the accepted ones into the round's aggregate.
 * An update is acknowledged only once recorded; refusals leave nothing behind.
 * Also records devices' evaluation reports.
 */
export class Intake {
  constructor(
    private readonly ctx: EngineContext,
    private readonly runtimes: TaskRuntimes,
    private readonly loop: IntakeLoop,
  ) {}

  /** Checks an update's header before its payload is read, so bad uploads fail fast. */
  async checkUpdateHeader(client: Client, header: UpdateHeaderInput): Promise<{ maxBytes: number }> {
    const rt = await this.runtimes.load(client.taskId);
    this.validateHeader(rt, client, header);
    return { maxBytes: maxUpdateBytes(rt.task) };
  }

  /**
   * Accepts an update: validates it, stores its payload, records it and folds
   * it into the round's aggregate. Rejections leave nothing behind.
   * `sha256`: the payload's hex SHA-256 if the transport computed it; null: it is computed here,
   * for a committee upload by its check, in the same pass as its c0's (one pass over the bytes instead of two).
   */
  async submitUpdate(
    client: Client,
    header: UpdateHeaderInput,
    payload: Uint8Array,
    sha256: string | null,
    arrivedAt: number = this.ctx.clock.now(),
  ): Promise<{ acceptedCount: number }> {
    const rt = await this.runtimes.load(client.taskId);
    const digestMismatch = (): VeilError => new VeilError('invalid_argument', 'payload SHA-256 does not match the header');
    // One-shot SHA-256 of the bytes as received (no copy): ~0.26 ms of CPU for 400 kB.
    const digest = sha256 ?? (rt.task.settings.committee == null ? hash('sha256', payload, 'hex') : null);
    if (digest !== null && digest !== header.sha256) throw digestMismatch();
    if (payload.byteLength !== header.payloadSizeBytes) {
      throw new VeilError('invalid_argument', `payload has ${payload.byteLength} bytes, header declared ${header.payloadSizeBytes}`);
    }
    // Outside the lock (uploads proceed in parallel): fail fast on a bad header, validate the payload
    // fully (decoded once; the decoded form is what gets folded), and store it durably.
    const early = this.validateHeader(rt, client, header, arrivedAt);
    let prepared: { update: CheckedUpdate; key: string; blobSha256: string; sizeBytes: number };
    const pre = (async () => {
      const committee = committeeTask(this.ctx, rt);
      const he = committee === null ? await heContext(rt) : null;
      // A committee c0 is added to the round's sum as it is checked, before the lock (confirmed when
      // recorded, taken out again if refused: RoundAggregator.foldEarly).
      const folder = rt.open?.round.id === early.id ? rt.open.aggregator : null;
      const update: CheckedUpdate =
        committee !== null
          ? (folder?.foldEarly?.(client.id, payload) ?? checkCommitteeUpload(committee, early.number, rt.task.parameterCount, client.id, payload))
          : he === null
            ? checkPlaintextUpdate(payload, rt.task.parameterCount, early.config.calibration === undefined ? rt.task.settings.updateBound : null)
            : checkEncryptedUpdate(
                he,
                // A shared-key calibration report is encrypted unpadded, or padded to d under distributed DP (rounds/calibration.ts).
                early.config.calibration === undefined
                  ? updateValueCount(rt.task)
                  : encryptedValueCount(early.config.calibration.plan.round, rt.task.settings.calibration!, rt.task.settings.privacy),
                payload,
                header.exampleCount,
              );
      // A calibration report in the clear without DP noise has a structure to check (rounds/calibration.ts).
      if (committee === null && he === null && early.config.calibration !== undefined && rt.task.settings.privacy === null) {
        checkCalibrationReport(update.values ?? bytesToFloat32(payload), early.config.calibration);
      }
      try {
        // Not hashed above: the check did (a committee upload), and folded it early if it could, so a mismatch takes it out again.
        if (digest === null && update.payloadSha256 !== header.sha256) throw digestMismatch();
        // A record of its own in the task's segment (concurrent uploads write disjoint ranges); a rejected one is erased.
        // These bytes' SHA-256 is the header's (checked above).
        const ref = await this.ctx.blobs.append(updateBlobDir(rt.task.id), payload, header.sha256);
        prepared = { update, key: ref.key, blobSha256: ref.sha256, sizeBytes: ref.sizeBytes };
      } catch (error) {
        releaseChecked(update);
        throw error;
      }
    })();
    // The deadline handler waits for on-time uploads still being stored, so they can still be recorded.
    rt.inflight.add(pre);
    try {
      await pre;
    } finally {
      rt.inflight.delete(pre);
    }
    const { update, key, blobSha256, sizeBytes } = prepared!;
    const outcome = await new Promise<Parameters<PendingRecord['done']>[0]>((done) => {
      rt.pendingRecords.push({ client, header, arrivedAt, roundId: early.id, sha256: header.sha256, update, key, blobSha256, sizeBytes, done });
      // The first update since the last commit started queues the next one; later ones join it.
      // (The mutex is FIFO: an update stored before the deadline's section is queued ahead of it.)
      if (rt.pendingRecords.length === 1) {
        void rt.mutex.run(() => this.flushRecords(rt)).catch((err: unknown) => this.ctx.log.error({ err, taskId: rt.task.id }, 'recording updates failed'));
      }
    });
    // Folded (the aggregate took what the check loaded) or refused (an update folded early is taken
    // out of the aggregate again): either way nothing is left to hold.
    releaseChecked(update);
    if (outcome.ok) return { acceptedCount: outcome.acceptedCount };
    // Rejections leave nothing behind. (A failure after recording keeps the blob: the store references it.)
    if (!outcome.recorded) await this.ctx.blobs.delete(key).catch((err) => this.ctx.log.warn({ err, ...updateIds(client, header) }, 'could not delete a rejected update blob'));
    throw outcome.error;
  }

  /**
   * Group commit (mutex held): records every update waiting in
   * `rt.pendingRecords` with one store write, folds the accepted ones into
   * the aggregate in arrival order, and answers each submitter. Under load
   * uploads arrive faster than one write per update, so the batch grows and
   * the database cost per update shrinks.
   */
  private async flushRecords(rt: TaskRuntime): Promise<void> {
    const batch = rt.pendingRecords.splice(0);
    if (batch.length === 0) return;
    try {
      await this.recordBatch(rt, batch);
    } catch (error) {
      // A record statement whose outcome is unknown (it failed other than on a busy database: its
      // answer may have been lost after the commit), or anything unexpected (refusals are answered
      // inside; the sum's headroom is checked at task creation). No submitter may wait forever:
      // answers are idempotent, so the ones already given stand.
      // `recorded`: the store may reference the blob, so it is kept. The aggregate may now lack an
      // update the store recorded: rebuild it from the store, as after a restart.
      this.ctx.log.error({ err: error, taskId: rt.task.id }, 'recording updates failed; rebuilding the round aggregate from the store');
      // A busy database is answered as such (UNAVAILABLE, retry after 1 s), as everywhere else.
      const failure = databaseBusy(error) ? error : new VeilError('internal', 'recording the update failed', { cause: error });
      for (const item of batch) item.done({ ok: false, error: failure, recorded: true });
      const open = rt.open;
      if (open !== null && open.round.state === 'COLLECTING') {
        try {
          await this.loop.rebuildAggregate(rt, open);
          if (open.round.receivedCount >= open.round.targetCount) await this.loop.aggregate(rt, 'all selected clients submitted');
        } catch (err) {
          this.ctx.log.error({ err, taskId: rt.task.id }, 'rebuilding the round aggregate failed');
        }
      }
    }
  }

  private async recordBatch(rt: TaskRuntime, batch: PendingRecord[]): Promise<void> {
    const reject = (item: PendingRecord, error: unknown, recorded = false): void => item.done({ ok: false, error, recorded });
    const candidates: PendingRecord[] = [];
    const seenClients = new Map<string, string>();
    for (const item of batch) {
      try {
        const round = this.validateHeader(rt, item.client, item.header, item.arrivedAt);
        if (round.id !== item.roundId) {
          throw new VeilError('failed_precondition', `update is for round ${item.header.roundNumber}, the open round is ${round.number}`);
        }
        const earlier = seenClients.get(item.client.id);
        if (earlier !== undefined) throw rejection({ kind: 'duplicate', sha256: earlier }, round.number, item.sha256);
        seenClients.set(item.client.id, item.sha256);
        candidates.push(item);
      } catch (error) {
        reject(item, error);
      }
    }
    // Candidates passed validateHeader, so the lock holder's open round is the one they belong to.
    const current = rt.open;
    if (candidates.length === 0 || current === null) return;
    const open = current.round;
    // Replays are refused by the recording statement itself, no round trip of their own under the
    // lock. Ciphertexts are randomized: the same bytes twice means a replayed submission (from any
    // device, also within the batch). A plaintext update is a replay when the same device had the
    // same bytes accepted in an earlier round (each round's update is computed from a new model);
    // devices may legitimately send equal plaintext updates (e.g. the same synthetic delta). A device
    // resending its own update of this round is a retry (answered "already accepted"), not a replay.
    const encrypted = rt.task.encryption !== null;
    let results: Awaited<ReturnType<FederationStore['recordSubmissions']>>;
    const recording = this.ctx.store.recordSubmissions(
      open.id,
      candidates.map((item) => ({
        clientId: item.client.id,
        exampleCount: item.header.exampleCount,
        trainedExamples: item.header.trainedExamples ?? null,
        trainingLoss: item.header.trainingLoss ?? null,
        encoding: rt.task.settings.updateEncoding,
        sha256: item.blobSha256,
        sizeBytes: item.sizeBytes,
        blobKey: item.key,
      })),
      encrypted ? { refuseDigestReplays: true } : { refuseClientReplays: true },
    );
    // When these updates complete a plaintext round (RoundLoop.startRoundEnd decides), its
    // aggregation runs while the statement commits (the statement is on its way first); it is used
    // only if the statement records exactly these updates.
    const ahead =
      this.loop.startRoundEnd?.(
        rt,
        current,
        candidates.map((item) => ({ clientId: item.client.id, exampleCount: item.header.exampleCount, update: item.update, trainingLoss: item.header.trainingLoss ?? null })),
      ) ?? null;
    try {
      results = await recording;
    } catch (error) {
      // A busy database answered the statement with an error (busy.ts: it never ran, or its
      // transaction was rolled back): nothing was recorded, and the submitters may retry.
      if (ahead === null && databaseBusy(error)) {
        for (const item of candidates) reject(item, error);
        return;
      }
      // Any other failure may have come after the commit (an answer lost with the connection): the
      // store may count these updates, so `flushRecords` answers them as failed with their blobs
      // kept (the store may reference them) and rebuilds the aggregate from the store. (When the
      // round's end was started ahead, the aggregate holds them already: discarded first.)
      if (ahead !== null) await ahead.discard();
      throw error;
    }
    // Used only if the statement recorded exactly these updates, completing the round with the
    // count the folded set will have (the lock is held: nothing else records meanwhile).
    const last = results.at(-1);
    const useAhead =
      ahead !== null &&
      results.every((r) => r.kind === 'accepted') &&
      last?.kind === 'accepted' &&
      last.receivedCount === current.folded.size + candidates.length;
    if (ahead !== null && !useAhead) await ahead.discard();
    const accepted: Array<{ item: PendingRecord; receivedCount: number }> = [];
    for (const [k, item] of candidates.entries()) {
      const result = results[k]!;
      if (result.kind !== 'accepted') {
        reject(item, rejection(result, open.number, item.sha256, encrypted));
        continue;
      }
      current.folded.set(item.client.id, { sha256: item.sha256, exampleCount: item.header.exampleCount, sizeBytes: item.sizeBytes });
      // (Folded already when the round's end was started ahead.)
      if (ahead === null) current.aggregator?.add(item.client.id, item.header.exampleCount, item.update, item.header.trainingLoss ?? null);
      open.receivedCount = result.receivedCount;
      accepted.push({ item, receivedCount: result.receivedCount });
      this.ctx.log.info({ ...updateIds(item.client, item.header), receivedCount: result.receivedCount, targetCount: open.targetCount, exampleCount: item.header.exampleCount }, 'update accepted');
      this.ctx.events.emit('update-accepted', {
        taskId: rt.task.id,
        roundNumber: open.number,
        clientId: item.client.id,
        receivedCount: result.receivedCount,
        targetCount: open.targetCount,
      });
    }
    try {
      const rebuild = ahead !== null && !useAhead;
      if (rebuild) {
        // The aggregate holds updates the statement refused: rebuild it from the store (the recorded ones only).
        this.ctx.log.warn({ taskId: rt.task.id, roundNumber: open.number }, 'rebuilding aggregate from the store');
        await this.loop.rebuildAggregate(rt, current);
      }
      if ((accepted.length > 0 || rebuild) && open.receivedCount >= open.targetCount) {
        await this.loop.aggregate(rt, 'all selected clients submitted', useAhead ? ahead! : undefined);
      }
    } catch (error) {
      await this.loop.recoverTask(rt, error);
    }
    // Recorded means accepted: the submitters hear so whatever happened to the round (answered after
    // the aggregation, so a device that completed a round finds the next one open).
    for (const { item, receivedCount } of accepted) item.done({ ok: true, acceptedCount: receivedCount });
  }

  /** `at`: when the update arrived (an upload that arrived before the deadline is on time, however long it waited for the lock). */
  validateHeader(rt: TaskRuntime, client: Client, header: UpdateHeaderInput, at: number = this.ctx.clock.now()): Round {
    const task = rt.task;
    if (header.encoding !== task.settings.updateEncoding) {
      throw new VeilError('invalid_argument', `task expects update encoding ${task.settings.updateEncoding}, got ${header.encoding}`);
    }
    const max = maxUpdateBytes(task);
    if (header.payloadSizeBytes > max) {
      throw new VeilError('resource_exhausted', `update of ${header.payloadSizeBytes} bytes exceeds the task's ${max}`);
    }
    if (task.encryption === null && task.settings.committee == null && header.payloadSizeBytes !== max) {
      throw new VeilError('invalid_argument', `update must be ${max} bytes for ${task.parameterCount} parameters, got ${header.payloadSizeBytes}`);
    }
    if (!Number.isInteger(header.exampleCount) || header.exampleCount < 1 || header.exampleCount > task.settings.maxExampleCount) {
      throw new VeilError('invalid_argument', `exampleCount must be from 1 to ${task.settings.maxExampleCount}`);
    }
    const trained = header.trainedExamples;
    if (trained !== undefined && trained !== null && (!Number.isInteger(trained) || trained < 1 || trained > 2_147_483_647)) {
      throw new VeilError('invalid_argument', 'trainedExamples must be an integer from 1 to 2147483647 (or 0: not reported)');
    }
    const loss = header.trainingLoss;
    if (loss !== undefined && loss !== null && !(Number.isFinite(loss) && loss >= 0)) {
      throw new VeilError('invalid_argument', 'trainingLoss must be a finite number >= 0');
    }
    if (!/^[0-9a-f]{64}$/.test(header.sha256)) throw new VeilError('invalid_argument', 'payload_sha256 must be 32 bytes');
    const open = rt.open;
    const round = open?.round ?? null;
    if (open === null || round === null || round.state !== 'COLLECTING') {
      throw new VeilError('failed_precondition', `no round is collecting updates (round ${header.roundNumber} is not open)`);
    }
    if (header.roundNumber !== round.number) {
      throw new VeilError('failed_precondition', `update is for round ${header.roundNumber}, the open round is ${round.number}`);
    }
    if (header.modelVersion !== round.baseModelVersion) {
      throw new VeilError('failed_precondition', `update is based on model ${header.modelVersion}, round ${round.number} trains model ${round.baseModelVersion}`);
    }
    if (!open.selected.has(client.id)) throw new VeilError('permission_denied', `client is not selected for round ${round.number}`);
    if (round.fitConfig[REPORT_TRAINING_LOSS] === true && (loss === undefined || loss === null)) {
      throw new VeilError('invalid_argument', `round ${round.number} asks for the training loss (fit config ${REPORT_TRAINING_LOSS}); the update header has no training_loss`);
    }
    const accepted = open.folded.get(client.id)?.sha256;
    if (accepted !== undefined) {
      // `already_accepted` (the same payload) lets a device that lost the acknowledgement (e.g. a coordinator restart) know it was counted.
      throw duplicateUpdate(round.number, accepted === header.sha256);
    }
    if (round.deadlineAt.getTime() <= at) {
      throw new VeilError('failed_precondition', `round ${round.number} deadline has passed`);
    }
    return round;
  }

  async reportEvaluation(
    client: Client,
    report: { roundNumber: number; modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<void> {
    if (report.roundNumber === 0) {
      // Round 0: the final model, which no round distributes, evaluated by a device of the task after it ended.
      const task = await this.ctx.store.getTask(client.taskId);
      if (task === null) throw new VeilError('not_found', `task ${client.taskId} does not exist`);
      if (task.status !== 'COMPLETED' && task.status !== 'BUDGET_EXHAUSTED') {
        throw new VeilError('failed_precondition', `the final model is evaluated once the task has ended; it is ${task.status}`);
      }
      if (report.modelVersion !== task.currentModelVersion) {
        throw new VeilError('failed_precondition', `the final model is version ${task.currentModelVersion}, not ${report.modelVersion}`);
      }
      await this.ctx.store.recordModelEvaluation(task.id, client.id, report);
      return;
    }
    const round = await this.ctx.store.getRound(client.taskId, report.roundNumber);
    if (round === null) throw new VeilError('not_found', `round ${report.roundNumber} does not exist`);
    if (report.modelVersion !== round.baseModelVersion) {
      throw new VeilError('failed_precondition', `round ${round.number} distributed model ${round.baseModelVersion}, not ${report.modelVersion}`);
    }
    const ok = await this.ctx.store.recordEvaluation(round.id, client.id, report);
    if (!ok) throw new VeilError('permission_denied', `client was not selected for round ${round.number}`);
  }
}

/**
 * The fields naming an update in its log lines. Passed with each line rather than bound with
 * `log.child` per update: a child logger (pino, with redaction) cost more CPU than the lines
 * (bench:rounds --cpu-prof, plaintext, 10 clients: 25 ms of 3 s for 200 updates), and the
 * coordinator logs at most one line per accepted update.
 */
const updateIds = (client: Client, header: UpdateHeaderInput) => ({ taskId: client.taskId, clientId: client.id, roundNumber: header.roundNumber });

/** The store's answer to a busy database (persistence/busy.ts): the statement did not commit. */
const databaseBusy = (error: unknown): boolean => error instanceof VeilError && error.code === 'unavailable';

/** A second update from a device in a round: `already_accepted` when it is the accepted one again, else `already_exists`. */
function duplicateUpdate(roundNumber: number, samePayload: boolean): VeilError {
  return samePayload
    ? new VeilError('already_accepted', `an update from this client was already accepted for round ${roundNumber} (same payload)`)
    : new VeilError('already_exists', `an update from this client was already accepted for round ${roundNumber}`);
}

function rejection(result: Exclude<RecordSubmissionResult, { kind: 'accepted' }>, roundNumber: number, sha256: string, encrypted = false): VeilError {
  switch (result.kind) {
    case 'duplicate':
      return duplicateUpdate(roundNumber, result.sha256 === sha256);
    case 'not_selected':
      return new VeilError('permission_denied', `client is not selected for round ${roundNumber}`);
    case 'round_closed':
      return new VeilError('failed_precondition', `round ${roundNumber} is ${result.state}, no longer collecting`);
    case 'replay':
      return new VeilError(
        'invalid_argument',
        encrypted ? 'this encrypted update was already submitted (replay)' : 'this device already had an identical update accepted in this task: it was already submitted (replay)',
      );
  }
}
