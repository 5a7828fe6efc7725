import { createHash, randomUUID } from 'node:crypto';
import type { FitFailure, StrategyState } from '../aggregation/strategy.js';
import { encodeStrategyState } from '../aggregation/strategy-state.js';
import { checkFitConfig } from '../aggregation/registry.js';
import type { CheckedUpdate, ModelBlob, RoundAggregator, RoundResult } from '../aggregation/round-aggregator.js';
import { modelBlobKey, strategyStateBlobKey, writeUnreferenced } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import type { Round, RoundSummary, Submission } from './model.js';
import type { FederationStore } from './ports.js';
import type { StoredModel } from './model-cache.js';
import type { EngineContext } from './engine-context.js';
import { OpenRound } from './open-round.js';
import type { Presence } from './presence.js';
import { loadStrategyState, newAggregator, roundStrategy, wake, type TaskRuntime } from './task-runtime.js';
import {
  calibrationRoundConfig,
  calibrationStage,
  concludeCalibration,
  encodeStatistics,
  encryptedReportLength,
  readStatistics,
  reportNoiseStddev,
  statisticsBlobKey,
  totalRounds,
  type CalibrationOutcome,
  type CalibrationRoundConfig,
} from './calibration.js';
import { finishStatistics } from '../aggregation/statistics.js';
import { meanNoiseStddev } from '@veil/export';

/**
 * The round loop: runs each task's rounds as a persisted state machine
 * (SELECTING -> COLLECTING -> AGGREGATING -> CLOSED, or FAILED with a reason),
 * with deadlines through the injected clock and timer. Every method runs with
 * the task's mutex held. Each state change is written to the store before it
 * takes effect, and `resume` rebuilds a task's open round from the store and
 * the blob store, so after a crash an accepted update is never lost nor
 * counted twice. A round's in-memory state is one {@link OpenRound}, disposed
 * when the round settles. A DP task's budget (the check before a round opens,
 * the ledger entries) is `ctx.budget`'s (rounds/privacy-budget.ts).
 */
export class RoundLoop {
  constructor(
    private readonly ctx: EngineContext,
    private readonly presence: Pick<Presence, 'availableClients'>,
  ) {}

  /**
   * Picks a task up from the store: its open round resumes where it was (selection, collection with
   * its deadline, or aggregation), or the next round opens. For a PAUSED task the open round
   * resumes too, but selection waits and no new round opens (`maybeSelect`, `openNextRound`).
   */
  async resume(rt: TaskRuntime): Promise<void> {
    if (rt.task.status !== 'RUNNING' && rt.task.status !== 'PAUSED') return;
    await this.loadModel(rt);
    const latest = await this.ctx.store.getLatestRound(rt.task.id);
    if (latest === null || latest.state === 'CLOSED' || latest.state === 'FAILED') {
      await this.openNextRound(rt, latest);
      return;
    }
    const open = this.installRound(rt, latest);
    const log = this.ctx.log.child({ taskId: rt.task.id, roundNumber: latest.number });
    if (latest.state === 'SELECTING') {
      log.info('resuming round in selection');
      await this.maybeSelect(rt);
      return;
    }
    await this.rebuildAggregate(rt, open);
    if (latest.state === 'AGGREGATING') {
      log.info('resuming interrupted aggregation');
      await this.finishAggregation(rt, open);
      return;
    }
    log.info({ receivedCount: latest.receivedCount, targetCount: latest.targetCount }, 'resuming collection');
    if (latest.receivedCount >= latest.targetCount) await this.aggregate(rt, 'all selected clients submitted');
    else this.armDeadline(rt, open);
  }

  /**
   * Rebuilds the aggregate of a round from its recorded submissions (digests verified). If a
   * stored update cannot be read or folded, the partial aggregate is freed and the error thrown:
   * the round is then left without an aggregate (`recoverTask` fails it).
   */
  async rebuildAggregate(rt: TaskRuntime, open: OpenRound): Promise<void> {
    const round = open.round;
    const submissions = await this.ctx.store.listSubmissions(round.id);
    open.setAggregator(null);
    open.folded = new Map();
    const aggregator = await newAggregator(this.ctx, rt, round.number);
    const folded: OpenRound['folded'] = new Map();
    try {
      for (const s of submissions) {
        const bytes = await this.ctx.blobs.get({ key: s.blobKey, sha256: s.sha256 });
        aggregator.add(s.clientId, s.exampleCount, bytes, s.trainingLoss ?? null);
        folded.set(s.clientId, { sha256: s.sha256, exampleCount: s.exampleCount, sizeBytes: s.sizeBytes });
      }
    } catch (error) {
      aggregator.dispose();
      throw error;
    }
    round.receivedCount = submissions.length;
    open.setAggregator(aggregator);
    open.folded = folded;
    open.selected = new Set(await this.ctx.store.listParticipants(round.id));
  }


  private async openNextRound(rt: TaskRuntime, previous: Round | null): Promise<void> {
    // A paused task lets its open round finish but opens no new one; `startTask` resumes from the store.
    if (rt.task.status !== 'RUNNING') {
      this.settleRound(rt);
      return;
    }
    const number = (previous?.number ?? 0) + 1;
    if (number > totalRounds(rt.task.settings)) {
      const outcome = previous?.state === 'CLOSED' ? previous.summary?.calibration : undefined;
      const note = !rt.task.settings.calibration
        ? ''
        : outcome?.activationRanges !== undefined
          ? '; the model was calibrated'
          : outcome?.stage === 'histogram' && outcome.encrypted === true
            ? '; the calibration statistics were summed under the shared key (a key holder chooses the ranges: veil calibration --device-key)'
            : `; calibration did not complete (round ${previous?.number ?? number - 1} failed)`;
      await this.endAfterLastRound(rt, note);
      return;
    }
    const stage = calibrationStage(number, rt.task.settings);
    let calibration: CalibrationRoundConfig | null = null;
    if (stage !== null) {
      const before = previous?.state === 'CLOSED' ? (previous.summary?.calibration ?? null) : null;
      // A shared-key task's histogram round carries the range round's encrypted sum (the devices plan it).
      const rangeSum = before?.encrypted === true ? await this.ctx.blobs.get({ key: before.statistics.key, sha256: before.statistics.sha256 }) : undefined;
      calibration = calibrationRoundConfig(stage, rt.task.settings.calibration!, rt.task.settings.privacy, before, rangeSum);
      if (calibration === null) {
        await this.endAfterLastRound(rt, `; calibration did not complete (round ${previous?.number ?? number - 1} failed)`);
        return;
      }
    }
    // Budget enforcement: no round opens whose spend would take ε past the cap.
    const refusal = await this.ctx.budget.refusal(rt.task, number);
    if (refusal !== null) {
      await this.endTask(rt, 'BUDGET_EXHAUSTED', refusal);
      return;
    }
    const round = await this.ctx.store.openRound({
      id: randomUUID(),
      taskId: rt.task.id,
      number,
      baseModelVersion: rt.task.currentModelVersion,
      minClients: rt.task.settings.minClients,
      config: calibration === null ? rt.task.settings.training : { ...rt.task.settings.training, calibration },
    });
    this.installRound(rt, round);
    this.ctx.log.info({ taskId: rt.task.id, roundNumber: number }, 'round opened');
    this.ctx.events.emit('round-opened', { taskId: rt.task.id, round });
    await this.maybeSelect(rt);
  }

  async maybeSelect(rt: TaskRuntime): Promise<void> {
    const round = rt.open?.round ?? null;
    if (this.ctx.closed || rt.task.status !== 'RUNNING' || round === null || round.state !== 'SELECTING') return;
    const available = this.presence.availableClients(rt);
    if (available.length < rt.task.settings.minAvailableClients) return;
    const strategy = await roundStrategy(this.ctx, rt);
    const fit = strategy.configureFit({
      round: round.number,
      available,
      selection: rt.task.settings.selection,
      minClients: rt.task.settings.minClients,
      training: round.config,
      state: await loadStrategyState(this.ctx, rt),
      rng: this.ctx.rng,
    });
    if (fit.kind === 'wait') return;
    if (fit.kind === 'fail') {
      await this.failOpenRound(rt, round, fit.reason);
      return;
    }
    checkFitConfig(fit.config, strategy.name);
    if (fit.clientIds.length < rt.task.settings.minClients) {
      throw new VeilError('internal', `strategy ${strategy.name} selected ${fit.clientIds.length} clients, fewer than the round's minimum ${rt.task.settings.minClients}`);
    }
    const spend = await this.ctx.budget.spend(rt.task, round.number, fit.clientIds);
    if (spend.kind === 'exhausted') {
      this.settleRound(rt);
      await this.ctx.store.failRound(round.id, 'privacy budget exhausted');
      await this.endTask(rt, 'BUDGET_EXHAUSTED', spend.reason);
      return;
    }
    const deadlineAt = new Date(this.ctx.clock.now() + rt.task.settings.roundDeadlineMs);
    const collecting = await this.ctx.store.startCollecting(round.id, fit.clientIds, deadlineAt, {
      fitConfig: fit.config,
      ...(spend.kind === 'spend' && { ledgerEntry: spend.entry }),
    });
    if (collecting === null) throw new VeilError('aborted', `round ${round.number} left SELECTING concurrently`);
    const open = this.installRound(rt, collecting, { selected: fit.clientIds, aggregator: await newAggregator(this.ctx, rt, round.number) });
    this.armDeadline(rt, open);
    this.ctx.log.info(
      { taskId: rt.task.id, roundNumber: round.number, selected: fit.clientIds.length, available: available.length, deadlineAt },
      'round collecting',
    );
    this.ctx.events.emit('round-collecting', { taskId: rt.task.id, round: collecting });
    wake(rt);
  }

  private armDeadline(rt: TaskRuntime, open: OpenRound): void {
    const round = open.round;
    open.setDeadline(null);
    const delay = Math.max(0, round.deadlineAt.getTime() - this.ctx.clock.now());
    open.setDeadline(this.ctx.timer.schedule(() => {
      open.deadlineTimer = null;
      // Uploads that arrived before the deadline and are still being stored get queued ahead of the
      // deadline's section (the mutex is FIFO); later ones are refused on their arrival time.
      void Promise.allSettled([...rt.inflight])
        .then(() => rt.mutex.run(() => this.onDeadline(rt, round.id).catch((error: unknown) => this.recoverTask(rt, error))))
        .catch((error) => this.ctx.log.error({ err: error, taskId: rt.task.id }, 'deadline handling failed'));
    }, delay));
  }

  private async onDeadline(rt: TaskRuntime, roundId: string): Promise<void> {
    const round = rt.open?.round ?? null;
    if (this.ctx.closed || round === null || round.id !== roundId || round.state !== 'COLLECTING') return;
    if (round.receivedCount >= round.minClients) {
      await this.aggregate(rt, `deadline reached with ${round.receivedCount} of ${round.targetCount} updates`);
      return;
    }
    const reason = `deadline passed with ${round.receivedCount} updates, fewer than the minimum of ${round.minClients}`;
    const failed = await this.ctx.store.failRound(round.id, reason);
    if (failed === null) return;
    this.ctx.log.warn({ taskId: rt.task.id, roundNumber: round.number, reason }, 'round failed');
    this.settleRound(rt);
    this.ctx.events.emit('round-failed', { taskId: rt.task.id, round: failed });
    await this.openNextRound(rt, failed);
  }

  /**
   * (mutex held) Intake's group commit about to record the updates that complete a plaintext
   * round (every selected device then has one): folds them into the aggregate now, before their
   * record statement answers, and starts the round's aggregation (the strategy's finish and the
   * new model's digest), so it runs while the statement commits. Null (nothing folded) when the
   * round is not such a round or memory and store disagree on its count. The model is written
   * only after the statement accepted (`finishAggregation`): a file at the next version's key
   * still means the round's updates are recorded (e2e/model-write-crash.test.ts), and its fsync
   * does not compete with the statement's commit. Unless the caller passes the result to
   * `aggregate`, it awaits `discard` (the aggregation settled) before it touches the aggregate or
   * ends the round another way. It passes the result only when the statement accepted every one
   * of `updates` and the round's count it answered is the folded set's size (each folded update
   * is one the store answered "accepted" for this round, so equal counts are the same set);
   * otherwise it rebuilds the aggregate from the store. Nothing is observable meanwhile: the
   * model cache and strategy state change only in `finishAggregation`, as before.
   */
  startRoundEnd(
    rt: TaskRuntime,
    open: OpenRound,
    updates: readonly { clientId: string; exampleCount: number; update: CheckedUpdate; trainingLoss: number | null }[],
  ): RoundEndAhead | null {
    const round = open.round;
    const aggregator = open.aggregator;
    if (
      rt.task.settings.committee != null ||
      rt.task.encryption !== null ||
      round.config.calibration !== undefined ||
      round.state !== 'COLLECTING' ||
      aggregator === null ||
      round.receivedCount !== open.folded.size ||
      open.folded.size + updates.length < round.targetCount ||
      !updates.every((u) => open.selected.has(u.clientId) && !open.folded.has(u.clientId))
    ) {
      return null;
    }
    const finished = (async (): Promise<FinishedModel> => {
      // After the statement is on its way to the database (sent in this turn or the next ticks).
      await new Promise<void>((resolve) => setImmediate(resolve));
      for (const u of updates) aggregator.add(u.clientId, u.exampleCount, u.update, u.trainingLoss);
      const state = await loadStrategyState(this.ctx, rt);
      // Every selected device has an update: no failures. The model's digest is computed here too.
      return this.finishNextModel(rt, open, [], state, true);
    })();
    finished.catch(() => undefined); // awaited by `finishAggregation` or `discard`
    return { finished, discard: () => finished.then(() => undefined, () => undefined) };
  }

  /** `ahead`: the round's aggregation and model write started by {@link startRoundEnd}, for exactly the recorded updates. */
  async aggregate(rt: TaskRuntime, reason: string, ahead?: RoundEndAhead): Promise<void> {
    const open = rt.open;
    const round = open?.round ?? null;
    if (open === null || round === null || round.state !== 'COLLECTING') return;
    if (rt.task.settings.committee != null || round.config.calibration !== undefined) {
      // A committee round is AGGREGATING durably before any custodian is asked: its set of updates
      // never changes once a decryption may have been given (a restart resumes the aggregation).
      // (Calibration rounds, two per task, close through `closeRound` from AGGREGATING as well.)
      // The round's updates are listed while it moves: nothing records one meanwhile (the lock is held).
      const listed = this.ctx.store.listSubmissions(round.id);
      listed.catch(() => undefined); // awaited below, or moot when the move fails
      const moving = this.ctx.store.beginAggregation(round.id, reason);
      // The updates are final (the lock is held): the aggregator precomputes while the move commits.
      open.aggregator?.prepare?.();
      // ... and starts asking the committee then too, for the updates folded in memory, rather than
      // after the store's list answers or the commit. Why the set asked for is the store's: the lock
      // is held (nothing is recorded after this point); memory folds an update only when its record
      // statement (autocommitted) answered "accepted" for this round; a statement refused by a busy
      // database did not commit; and any other failed statement, which may have committed (its
      // answer lost with the connection), sends its flush to `flushRecords`, which rebuilds the
      // aggregate from the store under the lock before anything else runs. `finishAggregation`
      // still checks the folded set against the store's list (`foldsExactly`) before anything
      // commits; should they ever disagree, the aggregate is rebuilt and `finish` asks for that
      // other D, which the custodians refuse (at most one D per round): the round fails with their
      // reasons, no second decryption. Why no crash guarantee weakens: the round
      // ends only when every selected device's update is recorded or its deadline has passed, both
      // facts of the store. A coordinator killed after the custodians answered but before
      // AGGREGATING is durable restarts with the round COLLECTING and exactly these recorded
      // updates; `resume` rebuilds the aggregate from them and aggregates at once (all submitted,
      // or the deadline long past: a later upload is refused on its arrival time), so it asks for
      // the same D and gets the cached answers; no acknowledged update is lost or counted twice.
      // Should a restart ever ask another D of the round (a deadline moved in the store
      // meanwhile), custodians refuse it and the round fails with their reasons.
      open.aggregator?.startFinish?.();
      const aggregating = await moving;
      if (aggregating === null) return;
      open.round = aggregating;
      await this.finishAggregation(rt, open, undefined, listed);
      return;
    }
    // The others aggregate in memory (no upload is recorded meanwhile: the mutex is held) and the
    // round moves COLLECTING -> AGGREGATING -> CLOSED in the commit that opens the next round. A
    // crash before that commit leaves the round COLLECTING with every accepted update recorded:
    // `resume` aggregates it again (the model blob is rewritten).
    open.round = { ...round, state: 'AGGREGATING' };
    await this.finishAggregation(rt, open, reason, undefined, ahead);
  }

  /**
   * (`open` is the task's open round, AGGREGATING; in memory only when `collectingReason` is given,
   * the reason its move from COLLECTING is recorded with.) Aggregates, writes the new model's blob,
   * then closes the round and opens the next one (selected when enough devices are present) in ONE
   * store commit: nothing else runs between the last accepted update and the next round's assignments.
   * `listed`: the store's list of the round's updates, when its read has already started.
   */
  private async finishAggregation(
    rt: TaskRuntime,
    open: OpenRound,
    collectingReason?: string,
    listed?: Promise<Submission[]>,
    ahead?: RoundEndAhead,
  ): Promise<void> {
    const round = open.round;
    const started = performance.now();
    // The aggregate must hold exactly the recorded updates: rebuild it if memory and store disagree.
    const matches = (recorded: ReadonlySet<string>): boolean => open.aggregator !== null && foldsExactly(open, recorded);
    const failuresFor = (recorded: ReadonlySet<string>): FitFailure[] =>
      [...open.selected].filter((id) => !recorded.has(id)).map((clientId) => ({ clientId, reason: 'no update' }));
    const state = round.config.calibration === undefined ? await loadStrategyState(this.ctx, rt) : null;
    let submissions: Array<Pick<Submission, 'clientId' | 'exampleCount' | 'sizeBytes'>>;
    let recorded: Set<string>;
    let outcome: NextModel | null = null;
    if (ahead !== undefined) {
      // Aggregated and written while the last updates' record statement committed (`startRoundEnd`):
      // that statement's answers are the recorded set (the lock is held), the folded one.
      // The model is written now, after the statement committed: its file exists only once the
      // round's updates are recorded (what a crash during the write leaves: e2e/model-write-crash).
      outcome = await this.writeFinished(rt, await ahead.finished);
      submissions = [...open.folded].map(([clientId, { exampleCount, sizeBytes }]) => ({ clientId, exampleCount, sizeBytes }));
      recorded = new Set(open.folded.keys());
      this.adoptNextModel(rt, outcome);
    } else if (collectingReason !== undefined && round.config.calibration === undefined && open.aggregator !== null) {
      // In memory (the lock is held; an update is folded when its record commits): aggregate and
      // write the model while the store's list of the round's updates is read, then check the two
      // agree before anything commits (they always should; if not, aggregate again from the store).
      const folded = new Set(open.folded.keys());
      [submissions, outcome] = await Promise.all([this.ctx.store.listSubmissions(round.id), this.nextModel(rt, open, failuresFor(folded), state)]);
      recorded = new Set(submissions.map((s) => s.clientId));
      if (!matches(recorded)) outcome = null;
    } else {
      submissions = await (listed ?? this.ctx.store.listSubmissions(round.id));
      recorded = new Set(submissions.map((s) => s.clientId));
    }
    const failures = failuresFor(recorded);
    if (outcome === null) {
      if (!matches(recorded)) {
        this.ctx.log.warn({ taskId: rt.task.id, roundNumber: round.number }, 'rebuilding aggregate from the store');
        await this.rebuildAggregate(rt, open);
      }
      if (round.config.calibration !== undefined) {
        await this.finishCalibration(rt, open, round.config.calibration, submissions, failures, started);
        return;
      }
      outcome = await this.nextModel(rt, open, failures, state);
    }
    if (!outcome.ok) {
      // No model comes out of this round (e.g. a non-finite aggregate): it fails, the model is kept.
      await this.failOpenRound(rt, round, `aggregation failed: ${safeReason(outcome.error)}`, outcome.error);
      return;
    }
    const { result, newModel } = outcome;
    const summary = roundSummary(submissions, failures, started, newModel?.version ?? null, result?.committee);
    const ledgerEntry = await this.ctx.budget.decryption(rt.task, round.number, result?.decryption);
    const nextRound = await this.planNextRound(rt, round, newModel === null ? state : rt.strategyState!.state, newModel?.version ?? rt.task.currentModelVersion);
    const moved = await this.ctx.store.closeAndOpen({
      roundId: round.id,
      from: collectingReason === undefined ? 'AGGREGATING' : 'COLLECTING',
      aggregatingReason: collectingReason ?? '',
      model: newModel,
      summary,
      ...(ledgerEntry !== null && { ledgerEntry }),
      next: nextRound,
    });
    if (moved === null) throw new VeilError('aborted', `round ${round.number} left ${collectingReason === undefined ? 'AGGREGATING' : 'COLLECTING'} concurrently`);
    const { closed, opened } = moved;
    if (newModel !== null) rt.task = { ...rt.task, currentModelVersion: newModel.version };
    this.ctx.log.info({ taskId: rt.task.id, roundNumber: round.number, ...summary }, 'round closed');
    this.settleRound(rt);
    this.ctx.events.emit('round-closed', { taskId: rt.task.id, round: closed });
    if (opened === null) {
      await this.openNextRound(rt, closed);
      return;
    }
    this.ctx.log.info({ taskId: rt.task.id, roundNumber: opened.number }, 'round opened');
    this.ctx.events.emit('round-opened', { taskId: rt.task.id, round: opened });
    if (opened.state !== 'COLLECTING') {
      this.installRound(rt, opened);
      await this.maybeSelect(rt);
      return;
    }
    const selected = nextRound!.collecting!.clientIds;
    const collecting = this.installRound(rt, opened, { selected, aggregator: await newAggregator(this.ctx, rt, opened.number) });
    this.armDeadline(rt, collecting);
    this.ctx.log.info({ taskId: rt.task.id, roundNumber: opened.number, selected: selected.length, deadlineAt: opened.deadlineAt }, 'round collecting');
    this.ctx.events.emit('round-collecting', { taskId: rt.task.id, round: opened });
    wake(rt);
  }

  /**
   * The round's result from its aggregate and, when a model comes out, that model (and the
   * strategy state) written to the blob store (not yet committed: the model cache holds it as current meanwhile).
   */
  private async nextModel(rt: TaskRuntime, open: OpenRound, failures: FitFailure[], state: StrategyState | null): Promise<NextModel> {
    const written = await this.writeFinished(rt, await this.finishNextModel(rt, open, failures, state));
    this.adoptNextModel(rt, written);
    return written;
  }

  /**
   * The aggregation's result (`finish`), not yet written: with `sha256`, the new model's digest,
   * when computed ahead (a plaintext round's end started before its last record: `startRoundEnd`).
   */
  private async finishNextModel(rt: TaskRuntime, open: OpenRound, failures: FitFailure[], state: StrategyState | null, hashAhead = false): Promise<FinishedModel> {
    const model = await this.loadModel(rt);
    try {
      // Committee rounds ask the custodians here (asynchronous); the others return at once.
      const result = await open.aggregator!.finish({ bytes: model.bytes, encoding: model.encoding }, failures, state);
      const sha256 = hashAhead && result !== null ? createHash('sha256').update(result.model.bytes).digest('hex') : undefined;
      return { ok: true, result, ...(sha256 !== undefined && { sha256 }) };
    } catch (error) {
      return { ok: false, error };
    }
  }

  /**
   * A finished aggregation's new model and state written to the blob store under the next
   * version's keys, which nothing references (and nothing reads) before the commit that records
   * the version. {@link adoptNextModel} makes them current in memory.
   */
  private async writeFinished(rt: TaskRuntime, finished: FinishedModel): Promise<NextModel> {
    if (!finished.ok) return finished;
    const { result } = finished;
    const next: ModelBlob | null = result?.model ?? null;
    if (result === null || next === null) return { ok: true, result, newModel: null };
    const version = rt.task.currentModelVersion + 1;
    // The state is written before the round closes and referenced by the same transaction that
    // records the version: a crash in between re-aggregates and writes both again. Neither key is
    // referenced before that commit (the version is the task's current one plus one), so both are
    // written in place (`write`: data and directory entry fsynced concurrently), and a partial
    // file a crash leaves is replaced by the rewrite.
    const [ref, stateRef] = await Promise.all([
      writeUnreferenced(this.ctx.blobs, modelBlobKey(rt.task.id, version), next.bytes, finished.sha256),
      result.state === null ? null : writeUnreferenced(this.ctx.blobs, strategyStateBlobKey(rt.task.id, version), encodeStrategyState(result.state)),
    ]);
    return {
      ok: true,
      result,
      newModel: {
        version,
        sha256: ref.sha256,
        sizeBytes: ref.sizeBytes,
        encoding: next.encoding,
        strategyState: stateRef === null ? null : { sha256: stateRef.sha256, sizeBytes: stateRef.sizeBytes },
      },
    };
  }

  /** Makes a written next model (and its state) current in memory, ahead of the commit that closes the round. */
  private adoptNextModel(rt: TaskRuntime, written: NextModel): void {
    if (!written.ok || written.result === null || written.newModel === null) return;
    const { result, newModel } = written;
    rt.strategyState = { version: newModel.version, state: result.state };
    this.ctx.models.setCurrent(rt.task.id, { version: newModel.version, bytes: asBuffer(result.model.bytes), encoding: result.model.encoding, sha256: newModel.sha256 });
  }

  /**
   * The round after `round`, to open in the commit that closes it, selected already when enough
   * devices are present and the strategy picks its participants now; null when no round follows
   * in that commit (the task is paused or at its last round, or spends a privacy budget: those go
   * through `openNextRound`).
   */
  private async planNextRound(
    rt: TaskRuntime,
    round: Round,
    state: Awaited<ReturnType<typeof loadStrategyState>>,
    baseModelVersion: number,
  ): Promise<Parameters<FederationStore['closeAndOpen']>[0]['next']> {
    const number = round.number + 1;
    const settings = rt.task.settings;
    if (rt.task.status !== 'RUNNING' || number > settings.rounds || settings.privacy !== null) return null;
    let collecting: NonNullable<Parameters<FederationStore['closeAndOpen']>[0]['next']>['collecting'] = null;
    const available = this.presence.availableClients(rt);
    if (!this.ctx.closed && available.length >= settings.minAvailableClients) {
      const strategy = await roundStrategy(this.ctx, rt);
      const fit = strategy.configureFit({ round: number, available, selection: settings.selection, minClients: settings.minClients, training: settings.training, state, rng: this.ctx.rng });
      if (fit.kind === 'fit' && fit.clientIds.length >= settings.minClients) {
        checkFitConfig(fit.config, strategy.name);
        collecting = { clientIds: fit.clientIds, deadlineAt: new Date(this.ctx.clock.now() + settings.roundDeadlineMs), fitConfig: fit.config };
      }
    }
    return { id: randomUUID(), number, baseModelVersion, minClients: settings.minClients, config: settings.training, collecting };
  }

  /**
   * Closes a calibration round (rounds/calibration.ts): the reports' weighted mean, the
   * statistics read from it (stored before the round closes; a crash in between aggregates and
   * writes them again), and what they give: the next round's plan or the activation ranges.
   */
  private async finishCalibration(
    rt: TaskRuntime,
    open: OpenRound,
    config: CalibrationRoundConfig,
    submissions: readonly { exampleCount: number; sizeBytes: number }[],
    failures: FitFailure[],
    started: number,
  ): Promise<void> {
    const round = open.round;
    let outcome: CalibrationOutcome;
    let committee: RoundSummary['committee'];
    let decryption: RoundResult['decryption'];
    try {
      if (rt.task.encryption !== null) {
        // Shared key: the ciphertext sum is stored as it is; only key holders open it (rounds/calibration.ts).
        const sum = await open.aggregator!.finish({ bytes: new Uint8Array(0), encoding: 'bfv-sum-v1' }, failures, null);
        if (sum === null || sum.model === null) throw new VeilError('failed_precondition', 'no statistics were reported');
        const key = statisticsBlobKey(rt.task.id, round.number, true);
        const ref = await this.ctx.blobs.put(key, sum.model.bytes);
        outcome = {
          stage: config.plan.round,
          modelVersion: round.baseModelVersion,
          statistics: { key, sha256: ref.sha256, sizeBytes: ref.sizeBytes, length: encryptedReportLength(config.plan.round, rt.task.settings.calibration!) },
          encrypted: true,
        };
      } else {
        const result = await finishStatistics(open.aggregator!, rt.task.parameterCount, failures);
        if (result === null) throw new VeilError('failed_precondition', 'no statistics were reported');
        committee = result.committee;
        decryption = result.decryption;
        const statistics = readStatistics(result.mean, config);
        // Under DP the range round's planning thresholds the noise of the mean of |D| reports (rounds/calibration.ts).
        const reports = decryption?.clientIds.length ?? submissions.length;
        const noise = meanNoiseStddev(reportNoiseStddev(rt.task.settings.privacy), Math.max(1, reports), config.scale);
        const conclusion = concludeCalibration(config, statistics, rt.task.settings.calibration!, noise);
        const key = statisticsBlobKey(rt.task.id, round.number);
        const ref = await this.ctx.blobs.put(key, encodeStatistics(statistics));
        outcome = {
          stage: config.plan.round,
          modelVersion: round.baseModelVersion,
          statistics: { key, sha256: ref.sha256, sizeBytes: ref.sizeBytes, length: statistics.length },
          ...conclusion,
        };
      }
    } catch (error) {
      await this.failOpenRound(rt, round, `calibration failed: ${safeReason(error)}`, error);
      return;
    }
    const summary: RoundSummary = { ...roundSummary(submissions, failures, started, null, committee), calibration: outcome };
    // A DP committee task's calibration decryption is chained in the ledger like a training round's.
    const ledgerEntry = await this.ctx.budget.decryption(rt.task, round.number, decryption);
    const closed = await this.ctx.store.closeRound(round.id, null, summary, ledgerEntry === null ? undefined : { ledgerEntry });
    if (closed === null) throw new VeilError('aborted', `round ${round.number} left AGGREGATING concurrently`);
    this.ctx.log.info({ taskId: rt.task.id, roundNumber: round.number, stage: outcome.stage, modelVersion: outcome.modelVersion, participants: summary.participants }, 'calibration round closed');
    this.settleRound(rt);
    this.ctx.events.emit('round-closed', { taskId: rt.task.id, round: closed });
    await this.openNextRound(rt, closed);
  }

  /** Fails `round` (any open state) with `reason` and opens the next one. */
  private async failOpenRound(rt: TaskRuntime, round: Round, reason: string, cause?: unknown): Promise<void> {
    this.settleRound(rt);
    const failed = await this.ctx.store.failRound(round.id, reason);
    this.ctx.log.warn({ taskId: rt.task.id, roundNumber: round.number, reason, err: cause }, 'round failed');
    if (failed !== null) this.ctx.events.emit('round-failed', { taskId: rt.task.id, round: failed });
    await this.openNextRound(rt, failed ?? round);
  }

  /**
   * (mutex held) After an unexpected error in a task's state machine (at start, aggregation, a
   * deadline): fails the task's open round with the reason and resumes (the next round opens); if
   * that fails too, the task is FAILED with the reason. Never throws: the other tasks go on.
   */
  async recoverTask(rt: TaskRuntime, error: unknown): Promise<void> {
    const taskId = rt.task.id;
    this.ctx.log.error({ err: error, taskId }, 'task state machine failed; failing its open round');
    let again: unknown;
    try {
      this.settleRound(rt);
      const latest = await this.ctx.store.getLatestRound(taskId);
      if (latest !== null && latest.state !== 'CLOSED' && latest.state !== 'FAILED') {
        const failed = await this.ctx.store.failRound(latest.id, `could not resume round ${latest.number}: ${safeReason(error)}`);
        if (failed !== null) this.ctx.events.emit('round-failed', { taskId, round: failed });
      }
      await this.resume(rt);
      return;
    } catch (err) {
      again = err;
    }
    this.ctx.log.error({ err: again, taskId }, 'task could not resume; failing the task');
    try {
      this.settleRound(rt);
      const reason = `could not resume: ${safeReason(again)}`;
      const task = await this.ctx.store.setTaskStatus(taskId, 'FAILED', ['RUNNING', 'PAUSED'], reason);
      if (task !== null) {
        rt.task = task;
        this.ctx.events.emit('task-ended', { taskId, status: 'FAILED', reason });
      }
    } catch (err) {
      this.ctx.log.error({ err, taskId }, 'could not record the task as failed');
    }
    wake(rt);
  }

  /** The one round reset: disposes the open round's state (deadline, aggregate, participants). */
  private settleRound(rt: TaskRuntime): void {
    rt.open?.[Symbol.dispose]();
    rt.open = null;
  }

  /** Makes `round` the task's open round, after the reset of the previous one. */
  private installRound(rt: TaskRuntime, round: Round, with_: { selected?: readonly string[]; aggregator?: RoundAggregator } = {}): OpenRound {
    this.settleRound(rt);
    rt.open = new OpenRound(round, with_);
    return rt.open;
  }

  /**
   * Ends a task whose rounds are all done, `note` appended to the reason: COMPLETED, or, for a task
   * calibrated after it ended, the status and reason it had ended with.
   */
  private async endAfterLastRound(rt: TaskRuntime, note: string): Promise<void> {
    const afterEnd = rt.task.settings.calibration?.afterEnd;
    if (afterEnd !== undefined) {
      await this.endTask(rt, afterEnd.status, `${afterEnd.reason ?? `the task was ${afterEnd.status}`}; calibration rounds after the end${note}`);
      return;
    }
    await this.endTask(rt, 'COMPLETED', `all ${rt.task.settings.rounds} rounds ran${note}`);
  }

  private async endTask(rt: TaskRuntime, status: 'COMPLETED' | 'FAILED' | 'BUDGET_EXHAUSTED', reason: string): Promise<void> {
    const task = await this.ctx.store.setTaskStatus(rt.task.id, status, ['RUNNING'], reason);
    if (task !== null) rt.task = task;
    this.settleRound(rt);
    this.ctx.log.info({ taskId: rt.task.id, status, reason }, 'task ended');
    this.ctx.events.emit('task-ended', { taskId: rt.task.id, status, reason });
    wake(rt);
  }

  /** The task's current model version, through the model cache (where it stays while current). */
  private async loadModel(rt: TaskRuntime): Promise<StoredModel> {
    const version = rt.task.currentModelVersion;
    const current = this.ctx.models.current(rt.task.id);
    if (current !== null && current.version === version) return current;
    let stored: StoredModel;
    try {
      stored = await this.ctx.models.read(rt.task.id, version);
    } catch (error) {
      // The task's own current version must exist: its absence is a broken store, not a bad request.
      throw error instanceof VeilError && error.code === 'not_found' ? new VeilError('internal', `task ${rt.task.id} model version ${version} is missing`) : error;
    }
    this.ctx.models.setCurrent(rt.task.id, stored);
    return stored;
  }
}

/** True when the round's aggregate holds exactly the updates `recorded` (client ids) by the store. */
function foldsExactly(open: OpenRound, recorded: ReadonlySet<string>): boolean {
  return recorded.size === open.folded.size && [...recorded].every((id) => open.folded.has(id));
}

/** A closed round's summary: its updates (`submissions`), the selected devices without one, and the time since `startedMs` (performance.now). */
function roundSummary(
  submissions: readonly Pick<Submission, 'exampleCount' | 'sizeBytes'>[],
  failures: readonly FitFailure[],
  startedMs: number,
  modelVersion: number | null,
  committee: RoundSummary['committee'],
): RoundSummary {
  return {
    participants: submissions.length,
    dropped: failures.length,
    examples: submissions.reduce((a, s) => a + s.exampleCount, 0),
    uploadBytes: submissions.reduce((a, s) => a + s.sizeBytes, 0),
    modelVersion,
    aggregationMs: Math.round(performance.now() - startedMs),
    ...(committee !== undefined && { committee }),
  };
}

/** The same bytes as a Buffer (no copy). */
function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** An error as a round or task reason: a coordinator error's text, never an internal one (it may hold paths). */
function safeReason(error: unknown): string {
  return error instanceof VeilError && error.code !== 'internal' ? error.message : 'internal error (see the coordinator log)';
}

/**
 * A plaintext round's end started ahead of its last record statement ({@link RoundLoop.startRoundEnd}):
 * the aggregation's result (the next model and its digest, not yet written), and `discard`, which
 * waits for it to settle (when it is not used).
 */
export interface RoundEndAhead {
  readonly finished: Promise<FinishedModel>;
  discard(): Promise<void>;
}

/** What `finishNextModel` gives: the aggregation's result (and the new model's digest when computed ahead), or its error. */
type FinishedModel = { ok: true; result: RoundResult | null; sha256?: string } | { ok: false; error: unknown };

/** What `nextModel` gives: the aggregation's result and the new model version written (null: none), or the aggregation's error. */
type NextModel =
  | { ok: true; result: RoundResult | null; newModel: Parameters<FederationStore['closeRound']>[1] }
  | { ok: false; error: unknown };
