import type {
  BlobDigest,
  Client,
  ModelVersion,
  Round,
  RoundEvaluation,
  RoundEvent,
  RoundState,
  RoundSummary,
  Submission,
  Task,
  TaskSettings,
  TaskStatus,
  RoundConfig,
} from './model.js';
import type { LedgerEntry } from '../privacy/ledger.js';
import type { FitConfig } from '../aggregation/strategy.js';

/** Outcome of recording an update, decided atomically by the store. */
export type RecordSubmissionResult =
  | { kind: 'accepted'; receivedCount: number }
  | { kind: 'duplicate'; sha256: string | null }
  | { kind: 'not_selected' }
  | { kind: 'round_closed'; state: RoundState }
  /**
   * Plaintext: the client had the same update (digest) accepted in an earlier round of the task.
   * Ciphertexts: the task already holds these bytes from another submission.
   */
  | { kind: 'replay' };

/** A task to create: its fields fixed at creation, and its version-0 model (already in the blob store). */
export interface NewTask extends Pick<Task, 'id' | 'name' | 'settings' | 'modelTopology' | 'weightSpecs' | 'parameterCount' | 'encryption'> {
  initialModel: { sha256: string; sizeBytes: number; encoding: string };
}

/** A round to open: what it trains from and with. */
export interface NewRound {
  id: string;
  number: number;
  baseModelVersion: number;
  minClients: number;
  config: RoundConfig;
}

/** A round as the history views show it. */
export interface RoundRecord {
  round: Round;
  /** Its transitions (empty when the caller asked for none). */
  events: RoundEvent[];
  /** Participants by status (selected = all participants of the round), and the examples the submitters reported training on (null: none reported). */
  participation: { selected: number; submitted: number; dropped: number; trainedExamples: number | null };
  /** Metrics devices reported for the model version they received in this round. */
  evaluation: RoundEvaluation | null;
}

/** Device reports on one model version, weighted by their example counts. */
export interface ModelEvaluationRecord extends RoundEvaluation {
  /** `round`: reported by the devices of the round that distributed the version; `final`: after the task ended. */
  source: 'round' | 'final';
}

/** A device (client) of a task as the operator sees it. */
export interface DeviceRecord {
  id: string;
  name: string | null;
  joinedAt: Date;
  /** Latest of the device's join and its last accepted update (what the database records). */
  lastSeenAt: Date;
  roundsSelected: number;
  roundsSubmitted: number;
  roundsDropped: number;
  /** Examples the device reported training on, summed over its accepted updates (null: never reported). */
  trainedExamples: number | null;
  /** When an admin revoked its credential; null while it is valid. */
  revokedAt: Date | null;
}

/**
 * What the round engine needs from storage. Every method that changes a
 * round's state does so in one transaction, guarded by the expected current
 * state, and records a RoundEvent: a state is persisted at every transition.
 */
export interface FederationStore {
  createTask(task: NewTask): Promise<Task>;
  getTask(id: string): Promise<Task | null>;
  listTasks(): Promise<Task[]>;
  /** Sets the status if the current one is among `from`; returns the updated task or null. */
  setTaskStatus(id: string, to: TaskStatus, from: readonly TaskStatus[], reason?: string | null): Promise<Task | null>;
  /**
   * Replaces the task's settings with `settings` if its status is one of `from` (e.g. calibration
   * requested later), and with `status` sets its status and reason in the same statement; null otherwise.
   */
  updateTaskSettings(id: string, settings: TaskSettings, from: readonly TaskStatus[], status?: { to: TaskStatus; reason: string | null }): Promise<Task | null>;

  createClient(client: { id: string; taskId: string; name: string | null; credentialHash: string }): Promise<Client>;
  findClientByCredentialHash(hash: string): Promise<Client | null>;

  /** Opens a round in SELECTING. */
  openRound(round: NewRound & { taskId: string }): Promise<Round>;
  /**
   * SELECTING -> COLLECTING with the selected participants, the deadline and
   * the strategy's fit config, appending `ledgerEntry` (the round's privacy
   * spend) in the same transaction.
   */
  startCollecting(
    roundId: string,
    clientIds: readonly string[],
    deadlineAt: Date,
    extra: { fitConfig: FitConfig; ledgerEntry?: LedgerEntry },
  ): Promise<Round | null>;
  /** The task's privacy ledger in sequence order (`offset`/`limit` page it). */
  listLedger(taskId: string, page?: { offset: number; limit: number }): Promise<LedgerEntry[]>;
  /** The latest ledger entry of a task. */
  lastLedgerEntry(taskId: string): Promise<LedgerEntry | null>;
  /**
   * Records accepted updates in one transaction (group commit): each
   * participant SELECTED -> SUBMITTED while the round is COLLECTING. Results
   * in input order; accepted ones carry the round's count after each. Client
   * ids must be distinct within a call. With `refuseClientReplays`, an update
   * whose client had the same digest accepted in another round of the task is
   * refused (`replay`) in the same statement (plaintext replay detection).
   * With `refuseDigestReplays` (ciphertexts, which are randomized: the same
   * bytes twice are a replay), an update whose digest the task already holds
   * from any device, except the client's own update of this round (its retry:
   * `duplicate`), or that an earlier submission of the same call carries, is
   * refused (`replay`) in the same statement.
   */
  recordSubmissions(
    roundId: string,
    submissions: readonly Submission[],
    options?: { refuseClientReplays?: boolean; refuseDigestReplays?: boolean },
  ): Promise<RecordSubmissionResult[]>;
  /** COLLECTING -> AGGREGATING; clients that did not submit become DROPPED. */
  beginAggregation(roundId: string, reason: string): Promise<Round | null>;
  /**
   * AGGREGATING -> CLOSED with the new model version (null: model kept) and
   * the strategy state stored with it (null: none), in one transaction.
   */
  closeRound(
    roundId: string,
    model: { version: number; sha256: string; sizeBytes: number; encoding: string; strategyState: BlobDigest | null } | null,
    summary: RoundSummary,
    /** A committee decryption's ledger entry, written in the same transaction. */
    extra?: { ledgerEntry?: LedgerEntry },
  ): Promise<Round | null>;
  /**
   * The round boundary in ONE transaction: the round COLLECTING -> AGGREGATING -> CLOSED (or
   * AGGREGATING -> CLOSED) with both transitions recorded, unsubmitted participants DROPPED, the
   * new model version (as `closeRound`) and `ledgerEntry`; then, with `next`, the next round
   * opened, straight into COLLECTING with its participants when `next.collecting` is given
   * (both of its transitions recorded). Null when the round was in neither state.
   */
  closeAndOpen(input: {
    roundId: string;
    from: 'COLLECTING' | 'AGGREGATING';
    /** Reason of the move to AGGREGATING (from COLLECTING). */
    aggregatingReason: string;
    model: { version: number; sha256: string; sizeBytes: number; encoding: string; strategyState: BlobDigest | null } | null;
    summary: RoundSummary;
    ledgerEntry?: LedgerEntry;
    next: (NewRound & { collecting: { clientIds: readonly string[]; deadlineAt: Date; fitConfig: FitConfig } | null }) | null;
  }): Promise<{ closed: Round; opened: Round | null } | null>;
  /** Any open state -> FAILED with a reason; unsubmitted participants become DROPPED. */
  failRound(roundId: string, reason: string): Promise<Round | null>;

  getLatestRound(taskId: string): Promise<Round | null>;
  getRound(taskId: string, number: number): Promise<Round | null>;
  listRounds(taskId: string, options: { offset: number; limit: number }): Promise<Round[]>;
  listRoundEvents(roundId: string): Promise<RoundEvent[]>;
  /** Rounds of a task in number order, each with its transitions, participation counts and evaluation, in one query. */
  listRoundHistory(taskId: string, options: { offset: number; limit: number; events?: boolean }): Promise<RoundRecord[]>;
  /** The devices (clients) that joined a task, with their participation counts. */
  listDevices(taskId: string): Promise<DeviceRecord[]>;
  listSubmissions(roundId: string): Promise<Submission[]>;
  /** Client ids of all participants (any status) of a round. */
  listParticipants(roundId: string): Promise<string[]>;

  recordEvaluation(
    roundId: string,
    clientId: string,
    evaluation: { modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<boolean>;
  getRoundEvaluation(roundId: string): Promise<RoundEvaluation | null>;
  /** Records (or replaces) a device's evaluation of a model version outside any round (the final model). */
  recordModelEvaluation(taskId: string, clientId: string, evaluation: { modelVersion: number; exampleCount: number; metrics: Record<string, number> }): Promise<void>;
  /** Every evaluated model version of a task, oldest first: reports made in rounds and after the task ended. */
  listModelEvaluations(taskId: string): Promise<ModelEvaluationRecord[]>;

  getModelVersion(taskId: string, version: number): Promise<ModelVersion | null>;
  /** The task (if any) that already uses this encryption key. */
  findTaskByKeyId(keyId: string): Promise<string | null>;

  /** Liveness of the store, for readiness checks. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

