/** Domain types of the coordinator. No transport or ORM types appear here. */
import type { CalibrationOutcome, CalibrationRoundConfig, CalibrationSettings } from './calibration.js';

export type TaskStatus = 'DRAFT' | 'RUNNING' | 'PAUSED' | 'COMPLETED' | 'FAILED' | 'BUDGET_EXHAUSTED';

import type { PrivacySettings } from '../privacy/settings.js';
import type { FitConfig, StrategySpec } from '../aggregation/strategy.js';
export type RoundState = 'SELECTING' | 'COLLECTING' | 'AGGREGATING' | 'CLOSED' | 'FAILED';
export type ParticipationStatus = 'SELECTED' | 'SUBMITTED' | 'DROPPED';

/**
 * Update payload encodings the coordinator understands: `float32-le` (a
 * plaintext delta) or `bfv-v1` (a BFV-encrypted weighted delta, @veil/crypto).
 */
export type UpdateEncoding = 'float32-le' | 'bfv-v1' | 'committee-v1';

/** Model blob encodings: float32 weights, or (encrypted tasks, versions >= 1) a round's encrypted sum. */
export type ModelEncoding = 'float32-le' | 'bfv-sum-v1';

/** Encrypted aggregation settings of a task; the coordinator holds public material only. */
export interface TaskEncryption {
  keyId: string;
  /** Hex SHA-256 of the SEAL encryption parameters. */
  fingerprint: string;
  preset: string;
  /** Largest weight (example count) one update carries. */
  weightCap: number;
  clipMaxAbs: number;
  step: number;
  /** The coordinator key material as serialized by @veil/crypto (public; refused if it holds a secret). */
  coordinatorKey: string;
}

/** Local training settings pushed to clients with every assignment. */
export interface TrainingSettings {
  /** Local epochs per round. */
  epochs: number;
  /** Local mini-batch size. */
  batchSize: number;
  /** Local SGD learning rate. */
  learningRate: number;
}

/**
 * What a plaintext update may contain: its norm (`l2`, or `linf` = the largest |value|) at most
 * `maxNorm`; a longer update is refused (`reject`, INVALID_ARGUMENT, nothing recorded) or
 * clipped to the bound when folded (`clip`). See aggregation/update-bound.ts.
 */
export interface UpdateBound {
  norm: 'l2' | 'linf';
  maxNorm: number;
  onExceed: 'clip' | 'reject';
}

/** How many clients a round selects. */
export type ClientSelection =
  | { kind: 'count'; count: number }
  | { kind: 'fraction'; fraction: number }
  /** Each available client independently with probability `samplingRate` (DP tasks: the accountant's assumption). */
  | { kind: 'poisson'; samplingRate: number; maxCount: number };

/** A federated training job's settings (validated by `validateTaskSettings`). */
export interface TaskSettings {
  /** Rounds to run (closed and failed rounds both count). */
  rounds: number;
  /** Clients per round, as a count or as a fraction of the available clients. */
  selection: ClientSelection;
  /** A round closes at its deadline only if at least this many updates arrived; otherwise it fails. */
  minClients: number;
  /** A round is opened once this many clients are available (polling or seen recently). */
  minAvailableClients: number;
  /** Time a selected client has to submit, from the moment the round starts collecting, in ms. */
  roundDeadlineMs: number;
  /** Largest example count accepted as an update's weight. */
  maxExampleCount: number;
  training: TrainingSettings;
  updateEncoding: UpdateEncoding;
  /**
   * Bound on plaintext updates (default L∞ 1000, reject); null for encrypted tasks, whose updates
   * are clipped by the devices' quantisation (`encryption.clipMaxAbs`) and sum in a bounded range.
   */
  updateBound: UpdateBound | null;
  /** Differential privacy and its budget; null for tasks without DP. */
  privacy: PrivacySettings | null;
  /** The aggregation strategy and its resolved parameters (`fedavg` for tasks created before strategies were selectable). */
  strategy: StrategySpec;
  /** Committee mode (issue 11): the signed task descriptor; absent or null otherwise. */
  committee?: CommitteeSettings | null;
  /** Device identities (not revoked) the task admits at most; Join beyond it is refused. */
  maxDevices: number;
  /** Calibration rounds after the training rounds (issue 16, rounds/calibration.ts); absent or null: none. */
  calibration?: CalibrationSettings | null;
}

/** A committee task's descriptor as the coordinator stores and announces it. */
export interface CommitteeSettings {
  /** base64 of the canonical descriptor bytes (RFC 8785 JSON). */
  descriptor: string;
  /** base64 of the enrolment authority's 64-byte Ed25519 signature. */
  descriptorSignature: string;
}

/** Who approved a committee round's decryption: the custodians' signed answers (no share sums). */
export interface CommitteeRoundSummary {
  /** |D|. */
  deviceCount: number;
  /** Custodian indices whose answers were used. */
  custodians: number[];
  /** The signed answers (descriptor hash, round, hash(D), |D|, index, share-sum hash; base64 signature). */
  answers: unknown[];
  /** Custodians that did not answer usably, with the reason. */
  failures: { custodianIndex: number; code: string; reason: string }[];
}

export interface WeightSpecJson {
  name: string;
  shape: number[];
  dtype: 'float32';
}

export interface Task {
  id: string;
  name: string;
  status: TaskStatus;
  statusReason: string | null;
  settings: TaskSettings;
  modelTopology: Record<string, unknown>;
  weightSpecs: WeightSpecJson[];
  parameterCount: number;
  encryption: TaskEncryption | null;
  currentModelVersion: number;
  createdAt: Date;
  updatedAt: Date;
}

export interface RoundSummary {
  participants: number;
  dropped: number;
  examples: number;
  uploadBytes: number;
  modelVersion: number | null;
  aggregationMs: number;
  /** Committee rounds: which custodians approved the decryption, for how many devices. */
  committee?: CommitteeRoundSummary;
  /** Calibration rounds: what the aggregated statistics gave (rounds/calibration.ts). */
  calibration?: CalibrationOutcome;
}

/** A round's stored config: the local training settings and, on a calibration round, its plan. */
export type RoundConfig = TrainingSettings & { calibration?: CalibrationRoundConfig };

export interface Round {
  id: string;
  taskId: string;
  number: number;
  state: RoundState;
  failureReason: string | null;
  baseModelVersion: number;
  targetCount: number;
  minClients: number;
  receivedCount: number;
  deadlineAt: Date;
  config: RoundConfig;
  /** The strategy's fit config sent to this round's devices with their assignment (`{}` until the round collects). */
  fitConfig: FitConfig;
  summary: RoundSummary | null;
  openedAt: Date;
  closedAt: Date | null;
}

export interface Client {
  id: string;
  taskId: string;
  name: string | null;
}

/** An accepted update, as recorded. */
export interface Submission {
  clientId: string;
  exampleCount: number;
  /** Local examples the device reported training on (not a weight); null when not reported. */
  trainedExamples?: number | null;
  /** F_k(w_t) the device reported (q-FedAvg), or null. */
  trainingLoss?: number | null;
  encoding: UpdateEncoding;
  sha256: string;
  sizeBytes: number;
  blobKey: string;
}

export interface ModelVersion {
  taskId: string;
  version: number;
  sha256: string;
  sizeBytes: number;
  encoding: string;
  roundNumber: number | null;
  /** The strategy state stored with this version (blob-store digest and size), or null. */
  strategyState: BlobDigest | null;
  createdAt: Date;
}

/** A blob's SHA-256 (hex) and size in bytes. */
export interface BlobDigest {
  sha256: string;
  sizeBytes: number;
}

/** Evaluation metrics reported by clients, aggregated per round (weighted by example count). */
export interface RoundEvaluation {
  modelVersion: number;
  clients: number;
  examples: number;
  metrics: Record<string, number>;
}

export interface RoundEvent {
  from: RoundState | null;
  to: RoundState;
  reason: string | null;
  at: Date;
}
