import type { CalibrationPlan } from '@veil/export';
import { ClientError } from '../errors.js';
import type { UpdateEncodingName } from '../middleware.js';
import type { ModelSpec } from '../training/types.js';

/** The task's differential privacy (user-level DP-FedAvg). */
export interface TaskPrivacy {
  mode: 'local' | 'distributed';
  clipNorm: number;
  noiseMultiplier: number;
  samplingRate: number;
  epsilonCap: number;
  delta: number;
  /** Distributed mode: the distributed discrete Gaussian's parameters (Kairouz, Liu & Steinke 2021); null in local mode. */
  distributed: DistributedDpParams | null;
}

/** What every device of a distributed-DP task uses, as the coordinator's ledger accounts it. */
export interface DistributedDpParams {
  /** 1/γ. */
  scale: number;
  /** σ: this device's noise share, stddev in model units. */
  localStddev: number;
  /** n: the fewest updates a released sum holds. */
  minNoiseClients: number;
  /** m: the BFV plain modulus. */
  modulus: number;
  /** d: the parameter count padded to a power of two. */
  dimension: number;
  /** β of the conditional rounding. */
  roundingBeta: number;
}

/** The task's encryption, when its updates must be encrypted. */
export interface TaskEncryption {
  keyId: string;
  /** Hex SHA-256 of the SEAL parameters. */
  parameterFingerprint: string;
  preset: string;
  weightCap: number;
}

/** The task's committee (secure aggregation by custodians), as the coordinator announced it. */
export interface TaskCommittee {
  /** Canonical descriptor bytes (RFC 8785 JSON). */
  descriptor: Uint8Array;
  /** The enrolment authority's 64-byte signature. */
  descriptorSignature: Uint8Array;
}

export interface JoinResult {
  clientId: string;
  credential: string;
  task: {
    taskId: string;
    name: string;
    model: ModelSpec;
    parameterCount: number;
    totalRounds: number;
    encryption: TaskEncryption | null;
    privacy: TaskPrivacy | null;
    /** Committee mode: unverified here; the SDK checks it against its own pins (mods/committee.ts). */
    committee: TaskCommittee | null;
  };
}

export interface Assignment {
  roundId: string;
  roundNumber: number;
  modelVersion: number;
  modelSha256: string;
  modelSizeBytes: number;
  deadlineUnixMs: number;
  training: { epochs: number; batchSize: number; learningRate: number };
  updateEncoding: UpdateEncodingName;
  maxUpdateBytes: number;
  maxExampleCount: number;
  evaluate: boolean;
  /** The strategy's settings for this round (e.g. FedProx's `proximalMu`); `{}` for FedAvg. */
  config: Readonly<Record<string, number | string | boolean>>;
  /**
   * A calibration round (issue 16): report activation statistics on `plan`'s grid, multiplied by
   * `scale`, instead of training. Absent or null: a training round.
   */
  calibration?: {
    plan: CalibrationPlan;
    scale: number;
    /**
     * Shared-key tasks' histogram round: the range round's encrypted sum (bfv-sum-v1); the device
     * decrypts it and derives the plan (`planHistogramRound` with `bins`, `tailFraction`); `plan`
     * then names the points only.
     */
    derive?: {
      rangeSum: Uint8Array;
      bins: number;
      tailFraction: number;
      /** The range round's report scale (C / sqrt(2·points) under DP, else 1): the decrypted mean is divided by it before planning. */
      rangeScale: number;
    };
  } | null;
}

export type AssignmentResponse =
  | { kind: 'assignment'; assignment: Assignment }
  | { kind: 'idle'; taskStatus: string; currentRound: number }
  | { kind: 'ended'; taskStatus: string; reason: string; finalModelVersion: number };

/** `float32-le`: the weights; `bfv-sum-v1`: the encrypted sum of a round's weighted updates. */
export type ModelEncodingName = 'float32-le' | 'bfv-sum-v1';

export interface UpdateHeader {
  roundNumber: number;
  modelVersion: number;
  /** The update's weight in FedAvg (1 under differential privacy). */
  exampleCount: number;
  /** Local examples trained on, reported separately from the weight. Default: not reported. */
  trainedExamples?: number;
  /** F_k(w_t): the mean loss of the round's model on the training data before training (q-FedAvg). Default: not reported. */
  trainingLoss?: number;
  encoding: UpdateEncodingName;
  /** Hex SHA-256 of the payload. */
  sha256: string;
}

/** Options of {@link Transport.waitForAssignment}. */
export interface WaitOptions {
  /**
   * The device has done its part of rounds up to this number (its update is sent, its
   * acknowledgement may be pending): the coordinator answers with a later round's assignment only.
   * Default 0: any round.
   */
  afterRoundNumber?: number;
}

/** A model version as a transport delivers it, its size and SHA-256 checked against its header. */
export interface DownloadedModel {
  version: number;
  bytes: Uint8Array;
  sha256: string;
  encoding: ModelEncodingName;
}

/** Options of {@link Transport.waitForAssignmentAndModel}. */
export interface WaitWithModelOptions extends WaitOptions {
  /** The model version the device holds: an assignment to it comes without the model. Default none. */
  heldModelVersion?: number;
}

/**
 * How the SDK reaches a coordinator. `createGrpcTransport` implements it over
 * node:http2 (gRPC); a browser transport (gRPC-web or Connect) can implement the same
 * interface. Methods throw ClientError.
 */
export interface Transport {
  join(request: { taskId: string; enrolmentSecret: string; clientName: string }): Promise<JoinResult>;
  getTask(credential: string): Promise<JoinResult['task']>;
  /**
   * Long-poll for work, up to `waitMs`. With `options.afterRoundNumber` only an assignment to a
   * later round answers (a coordinator that predates the option may still answer with that round
   * or an earlier one).
   */
  waitForAssignment(credential: string, waitMs: number, signal?: AbortSignal, options?: WaitOptions): Promise<AssignmentResponse>;
  /**
   * {@link waitForAssignment} and, when the answer is an assignment to a model version other than
   * `options.heldModelVersion`, that version (checked as {@link downloadModel} checks it) in the
   * same call: one request and one round trip fewer per round. `model` is null when the answer
   * is no assignment, the device holds the version, or the coordinator does not have the combined
   * call (the transport then makes the plain long-poll, and the caller downloads the model).
   * Optional: a transport without it is used through the two calls.
   */
  waitForAssignmentAndModel?(
    credential: string,
    waitMs: number,
    signal?: AbortSignal,
    options?: WaitWithModelOptions,
  ): Promise<{ response: AssignmentResponse; model: DownloadedModel | null }>;
  /** Downloads and verifies (size, SHA-256) model `version` (0 = initial), or the current one with `latest`. */
  downloadModel(credential: string, which: { version: number } | { latest: true }, signal?: AbortSignal): Promise<DownloadedModel>;
  /**
   * The caller is done with `model.bytes` (a model this transport returned): no view of that
   * memory is read any more, so the transport may receive a later model into it instead of into
   * fresh memory (see grpc-channel.ts: the page faults of a fresh model buffer are a large part of
   * a device's CPU per round). Optional, and optional to call: a model that is not released is
   * left to the garbage collector, as before. Releasing a model still in use corrupts it.
   */
  releaseModel?(model: DownloadedModel): void;
  submitUpdate(credential: string, header: UpdateHeader, payload: Uint8Array, signal?: AbortSignal): Promise<{ acceptedCount: number }>;
  reportEvaluation(
    credential: string,
    report: { roundNumber: number; modelVersion: number; exampleCount: number; metrics: Record<string, number> },
  ): Promise<void>;
  close(): void;
}

/** A calibration point as either transport decodes it (proto3 JSON omits defaults: false, 0). */
interface WirePoint {
  name?: string;
  linear?: boolean;
  min?: number;
  max?: number;
  bins?: number;
}

/**
 * Assignment.calibration (proto CalibrationRound) as the SDK uses it, or null on a training
 * round; throws `invalid_argument` for a plan no device could follow.
 */
export function calibrationFromWire(
  c:
    | { stage?: string; scale?: number | string; points?: readonly WirePoint[]; rangeSum?: Uint8Array | string; bins?: number; tailFraction?: number | string; rangeScale?: number | string }
    | null
    | undefined,
): NonNullable<Assignment['calibration']> | null {
  if (c === null || c === undefined) return null;
  if (c.stage !== 'range' && c.stage !== 'histogram') throw new ClientError('invalid_argument', `unknown calibration stage ${JSON.stringify(c.stage)}`);
  const scale = Number(c.scale ?? 0);
  if (!(scale > 0) || !Number.isFinite(scale)) throw new ClientError('invalid_argument', 'calibration scale must be a positive number');
  const points: CalibrationPlan['points'] = (c.points ?? []).map((p) => {
    const name = p.name ?? '';
    if (p.linear !== true) return { name, grid: { kind: 'log' } };
    const min = Number(p.min ?? 0);
    const max = Number(p.max ?? 0);
    const bins = Number(p.bins ?? 0);
    if (!(max > min) || !Number.isInteger(bins) || bins < 1) throw new ClientError('invalid_argument', `calibration point ${name} has an empty grid`);
    return { name, grid: { kind: 'linear', min, max, bins } };
  });
  if (points.length === 0) throw new ClientError('invalid_argument', 'a calibration round without calibration points');
  // proto3 JSON (Connect) carries bytes as base64; the gRPC transport (protobufjs) as a Buffer.
  const rangeSum = c.rangeSum === undefined ? new Uint8Array(0) : typeof c.rangeSum === 'string' ? base64Bytes(c.rangeSum) : c.rangeSum;
  if (rangeSum.byteLength === 0) return { plan: { round: c.stage, points }, scale };
  const bins = Number(c.bins ?? 0);
  const tailFraction = Number(c.tailFraction ?? 0);
  if (c.stage !== 'histogram' || !Number.isInteger(bins) || bins < 256 || !(tailFraction >= 0 && tailFraction < 0.5)) {
    throw new ClientError('invalid_argument', 'a derived calibration plan needs a histogram round, bins >= 256 and a tail fraction in [0, 0.5)');
  }
  // proto3: an absent range_scale reads 0, i.e. a coordinator from before it existed (no DP): 1.
  const rangeScale = c.rangeScale === undefined || Number(c.rangeScale) === 0 ? 1 : Number(c.rangeScale);
  if (!(rangeScale > 0 && Number.isFinite(rangeScale))) throw new ClientError('invalid_argument', `a derived calibration plan with range scale ${String(c.rangeScale)}`);
  return { plan: { round: c.stage, points }, scale, derive: { rangeSum: new Uint8Array(rangeSum), bins, tailFraction, rangeScale } };
}

/** Standard or URL-safe base64 to bytes (atob: Node and browsers alike). */
function base64Bytes(text: string): Uint8Array {
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}
