/**
 * Federated int8 calibration inside the round loop (issue 16 item 3).
 *
 * A task created with `calibration` runs, after its last training round, two
 * calibration rounds on the final model: a **range** round and a
 * **histogram** round (`@veil/export`'s two-round protocol, see
 * packages/export/src/calibration.ts). A selected device runs the model on
 * its local data and uploads its statistics on the round's fixed grid as a
 * vector of frequencies (each point's part sums to 1, or 2 in the range
 * round), zero-padded to the model's parameter count so that it travels and
 * is aggregated exactly like an update: a plaintext example-weighted sum, or
 * the committee's decrypted sum (custodians answer for that round number).
 * The coordinator reads the pooled distribution from the mean, plans the
 * histogram round from the range round, and picks the activation ranges from
 * the histogram round; they are stored with the model version
 * (`RoundSummary.calibration`) and used by the int8 export.
 *
 * Differential privacy (local mode): a device scales its report by
 * `scale = C / sqrt(m)` (C the task's clipNorm, m = points in the histogram
 * round, 2·points in the range round) before its DP middleware clips to C and
 * adds N(0, (zC)² I). A frequency vector whose parts each sum to 1 has L2
 * norm at most sqrt(m) (each part's L2 norm is at most its L1 norm, 1), so
 * the scaled report already lies within the clip norm and the round is the
 * Gaussian mechanism with the same L2 sensitivity C and noise multiplier z as
 * a training round (Dwork & Roth 2014, "The Algorithmic Foundations of
 * Differential Privacy", Thm A.1; in RDP, Mironov 2017, "Rényi Differential
 * Privacy", Prop. 3: ε(α) = α / (2z²) per round, subsampled as the task's
 * rounds are). It is therefore charged to the privacy ledger as its own
 * entry (its round number) with the task's parameters, by the same budget
 * check as a training round. In frequency units the noise of one report has
 * standard deviation z·sqrt(m) per value; the coordinator divides the mean
 * by `scale` and clamps negative frequencies to 0.
 *
 * Distributed DP (committee mode, the distributed discrete Gaussian of
 * Kairouz, Liu & Steinke 2021, "The Distributed Discrete Gaussian Mechanism
 * for Federated Learning with Secure Aggregation", Algorithm 1): the report
 * is scaled the same way, to L2 norm at most C, and then goes through the
 * device's DDG encoder exactly as an update does — clip to C (a no-op here),
 * rotate, scale by 1/γ, round conditionally with β, add the device's discrete
 * Gaussian share N_Z(0, σ²/γ²), σ = zC/√n — so the released sum of at least n
 * honest shares is the same mechanism, with the same L2 sensitivity C (the
 * rounding's norm inflation bounded as for updates, KLS21 Thm 1), as a
 * training round. The round is charged by the same ledger entry as a training
 * round (ε for observers with the task's sampling rate, and against the
 * coordinator unamplified), after the same budget check, followed by its
 * committee-decryption record. The decoded sum is divided by |D| (every DP
 * report weighs 1), so in frequency units the noise of the mean has standard
 * deviation z·sqrt(m)·sqrt(|D|/n)/|D| per value.
 *
 * Shared-key (BFV) tasks: their sums are opened only by key holders (the
 * devices, and whoever holds the device key), never by the coordinator, so it
 * never sees their statistics. A device encrypts its report unpadded (its own
 * length: points x 386 values in the range round, points x bins in the
 * histogram round) with the shared key like an update, and the coordinator sums
 * the ciphertexts and stores the encrypted sum (`CalibrationOutcome.encrypted`).
 * It cannot plan the histogram round, so that round's assignment carries the
 * range round's encrypted sum with `bins` and `tailFraction` (`derive`); each
 * device decrypts it and derives the same plan (`planHistogramRound` is
 * deterministic). After the histogram round a key holder (`veil calibration
 * --device-key`, `veil export --device-key`) decrypts both sums, derives the
 * plan again and chooses the ranges. With local DP a device scales its report
 * by C / sqrt(m) and its DP middleware adds N(0, (zC)² I) before the
 * encryption, exactly as for a plaintext task (above) and as its training
 * updates are noised before they are encrypted; each round is charged by the
 * same budget check and ledger entry as a training round. The histogram
 * round's `derive` carries the range round's scale, so that key holders
 * divide the decrypted mean by it (and clamp, `planHistogramRound`) before
 * planning.
 *
 * Shared key with distributed DP (KLS21, Algorithm 1, as the task's training
 * rounds run it): a device scales its report to L2 norm at most C as above,
 * zero-pads it to the model's parameter count and hands it to its DDG encoder
 * exactly as an update — pad to the model's d = 2^k, rotate with the public
 * seed of the round on model version v (`rotationSeedForVersion(task, v + 1)`,
 * the seed a training round on v would use), scale by 1/γ, round
 * conditionally, add its discrete Gaussian share N_Z(0, σ²/γ²), σ = zC/√n,
 * reduce mod t — and encrypts the d residues with weight 1 (`encryptLevels`).
 * Both calibration rounds run on the same version and so use the same
 * rotation, which need be neither secret nor fresh (KLS21 Sec. 4.2: it only
 * spreads the signal against modular wraparound, whose bound is checked per
 * sum at task creation). The coordinator sums the ciphertexts of d values
 * (`encryptedValueCount`) as for a training round, and key holders decode the
 * sum as they decode a training round's (centre mod t, unscale, inverse
 * rotation, unpad), keep the report's first values, divide by the number of
 * reports (each weighs 1; at least n, as the accounting assumes) and by the
 * scale. The round is the mechanism of a training round with the same L2
 * sensitivity C, so it is charged by the same budget check and ledger entry
 * (privacy-budget.ts). In frequency units the noise of the mean has standard
 * deviation z·sqrt(m)·sqrt(|D|/n)/|D| per value, as in committee mode.
 *
 * Planning under DP: the range round's mean carries noise of a known
 * deviation, σ_r / (sqrt(|D|) · scale) per value in frequency units (σ_r:
 * `reportNoiseStddev`; @veil/export `meanNoiseStddev`), and noise on the log
 * grid's far bins would otherwise set ranges of up to 2^12. Whoever plans the
 * histogram round (the coordinator for plaintext and committee tasks, the
 * devices and key holders for shared-key ones, all with the same σ)
 * thresholds it (`planHistogramRound`'s noiseStddev: the universal threshold
 * of Donoho & Johnstone 1994). Post-processing of the released mean: it
 * costs no privacy. A point none of whose values in a half passes that
 * threshold is noise-swamped (`noiseSwampedPoints`): the range outcome lists
 * it, the statistics file carries it (`noiseSwamped`), and the int8 export
 * falls back to dynamic quantisation unless static is forced.
 */
import {
  ExportError,
  calibrationPoints,
  chooseActivationRanges,
  noiseSwampedPoints,
  parseModel,
  planHistogramRound,
  planRangeRound,
  statisticsLength,
  type ActivationRanges,
  type CalibrationPlan,
  type ExportableModel,
  type RangeMethod,
} from '@veil/export';
import { VeilError } from '../errors.js';
import type { PrivacySettings } from '../privacy/settings.js';

/** A task's calibration settings (null: the task runs no calibration rounds). */
export interface CalibrationSettings {
  /** Calibration points of the model (`calibrationPoints`), in order. */
  points: string[];
  /** How ranges are picked from the aggregated histograms. Default `percentile`. */
  method: RangeMethod;
  /** `percentile` only: share of |activations| kept inside the range, in percent. Default 99.99. */
  percentile: number;
  /** Linear bins per point in the histogram round. Default min(2048, parameterCount / points), at least 256 (smaller models are refused). */
  bins: number;
  /** Share of examples whose extreme activation may fall outside the histogram grid. Default 0.001. */
  tailFraction: number;
  /**
   * Number of the range round (the histogram round follows it). Absent: `rounds + 1`, right after
   * the last training round. Set when an ended task is calibrated: the round after its last one.
   */
  firstRound?: number;
  /** Set when an ended task is calibrated: the status and reason it ended with, restored after the calibration rounds. */
  afterEnd?: { status: 'COMPLETED' | 'BUDGET_EXHAUSTED'; reason: string | null };
}

/** What a task creation may say about calibration: `true`, or options. */
export type CalibrationInput = boolean | { method?: unknown; percentile?: unknown; bins?: unknown; tailFraction?: unknown };

/** A calibration round's instructions, stored in the round's config and sent to its devices. */
export interface CalibrationRoundConfig {
  /** The plan; in a shared-key histogram round (`derive`) it names the points only (placeholder log grids). */
  plan: CalibrationPlan;
  /** Shared-key tasks' histogram round: the range round's encrypted sum (base64 bfv-sum-v1) the devices derive the plan from. */
  derive?: {
    rangeSum: string;
    bins: number;
    tailFraction: number;
    /** The range round's report scale: devices divide the decrypted range mean by it before planning (1 without DP; absent in rounds recorded before it existed: 1). */
    rangeScale?: number;
  };
  /** Devices multiply their frequency report by this before their middleware (1 without DP; C / sqrt(m) with local or distributed DP). */
  scale: number;
}

/** What a closed calibration round recorded (in its summary). */
export interface CalibrationOutcome {
  stage: CalibrationPlan['round'];
  /** The model version the statistics describe. */
  modelVersion: number;
  /** The aggregated statistics (frequencies, noise included, not clamped): blob reference. */
  statistics: { key: string; sha256: string; sizeBytes: number; length: number };
  /** Range round: the histogram round's plan. */
  nextPlan?: CalibrationPlan;
  /** Range round under DP: the points whose range statistics the noise swamped (`noiseSwampedPoints`); absent when none. */
  noiseSwamped?: string[];
  /** Histogram round: the activation ranges chosen. */
  activationRanges?: ActivationRanges;
  /** Shared-key tasks: the statistics blob is the encrypted sum (bfv-sum-v1), which only key holders open; no plan or ranges here. */
  encrypted?: true;
}

/** The values of one range-round point: sign x log2 grid, maxima and minima (see @veil/export). */
const RANGE_VALUES_PER_POINT = statisticsLength(planRangeRound(['x']));

const invalid = (message: string): never => {
  throw new VeilError('invalid_argument', message);
};

/**
 * Checks a task's calibration input against its model and mode; null when
 * the task does not calibrate. Both rounds' reports must fit in the model's
 * parameter count (they travel as updates).
 */
export function resolveCalibrationSettings(
  input: CalibrationInput | undefined,
  model: ExportableModel,
  context: { parameterCount: number; privacy: PrivacySettings | null; sharedKey: boolean },
): CalibrationSettings | null {
  if (input === undefined || input === false) return null;
  if (input !== true && (typeof input !== 'object' || input === null || Array.isArray(input))) invalid('calibration must be true, false or an object');
  const options = input === true ? {} : input;
  for (const key of Object.keys(options)) if (!['method', 'percentile', 'bins', 'tailFraction'].includes(key)) invalid(`calibration has no option ${key}`);
  if (context.privacy !== null && context.privacy.mode !== 'local' && context.privacy.ddg?.committee !== true && !context.sharedKey) {
    invalid('calibration rounds with distributed differential privacy need encrypted aggregation (a shared key or a committee)');
  }
  let points: string[];
  try {
    points = calibrationPoints(parseModel(model));
  } catch (error) {
    throw new VeilError('invalid_argument', `calibration: ${ExportError.from(error).message}`);
  }
  const method = options.method ?? 'percentile';
  if (method !== 'percentile' && method !== 'kl' && method !== 'minmax') invalid('calibration.method must be percentile, kl or minmax');
  const percentile = options.percentile ?? 99.99;
  if (typeof percentile !== 'number' || !(percentile > 0 && percentile <= 100)) invalid('calibration.percentile must be a number in (0, 100]');
  const tailFraction = options.tailFraction ?? 0.001;
  if (typeof tailFraction !== 'number' || !(tailFraction >= 0 && tailFraction < 0.5)) invalid('calibration.tailFraction must be a number in [0, 0.5)');
  const bins = options.bins ?? Math.max(256, Math.min(2048, Math.floor(context.parameterCount / points.length)));
  if (typeof bins !== 'number' || !Number.isInteger(bins) || bins < 256 || bins > 65_536) invalid('calibration.bins must be an integer from 256 to 65536');
  const perPoint = Math.max(bins as number, RANGE_VALUES_PER_POINT);
  if (points.length * perPoint > context.parameterCount) {
    invalid(`calibration reports travel as updates: ${points.length} points x ${perPoint} values exceed the model's ${context.parameterCount} parameters`);
  }
  return { points, method: method as RangeMethod, percentile: percentile as number, bins: bins as number, tailFraction: tailFraction as number };
}

/** The numbers of a calibrating task's range and histogram rounds. */
export function calibrationRounds(settings: { rounds: number; calibration: CalibrationSettings }): { range: number; histogram: number } {
  const range = settings.calibration.firstRound ?? settings.rounds + 1;
  return { range, histogram: range + 1 };
}

/** Rounds a task runs in all: its training rounds, then 2 calibration rounds when it calibrates (the number of its last round). */
export function totalRounds(settings: { rounds: number; calibration?: CalibrationSettings | null }): number {
  return settings.calibration ? calibrationRounds({ rounds: settings.rounds, calibration: settings.calibration }).histogram : settings.rounds;
}

/** The calibration stage of round `number`, or null for a training round. */
export function calibrationStage(number: number, settings: { rounds: number; calibration?: CalibrationSettings | null }): CalibrationPlan['round'] | null {
  if (!settings.calibration) return null;
  const rounds = calibrationRounds({ rounds: settings.rounds, calibration: settings.calibration });
  if (number === rounds.range) return 'range';
  if (number === rounds.histogram) return 'histogram';
  return null;
}

/** Length of a shared-key task's (unpadded, encrypted) report in calibration round `stage`. */
export function encryptedReportLength(stage: CalibrationPlan['round'], settings: CalibrationSettings): number {
  return stage === 'range' ? statisticsLength(planRangeRound(settings.points)) : settings.points.length * settings.bins;
}

/**
 * Values a shared-key task's encrypted report holds in calibration round `stage`: the report
 * itself, or under distributed DP the model's padded dimension d (the DDG encoder pads the
 * zero-padded report to d, as an update; see the module comment).
 */
export function encryptedValueCount(stage: CalibrationPlan['round'], settings: CalibrationSettings, privacy: PrivacySettings | null): number {
  return privacy?.ddg != null && privacy.ddg.committee !== true ? privacy.ddg.dimension : encryptedReportLength(stage, settings);
}

/** Values in one report of `plan` whose parts each sum to 1 (m in the module comment). */
function unitParts(plan: CalibrationPlan): number {
  return plan.round === 'range' ? 2 * plan.points.length : plan.points.length;
}

/**
 * σ_r: the noise one report carries per value, in model units, under the task's privacy: z·C under
 * local DP, the device's discrete Gaussian share σ = zC/√n under distributed DP, 0 without DP. A
 * DP round's mean has σ_r / (sqrt(|D|) · scale) in frequency units (`meanNoiseStddev` of
 * @veil/export), which the range round's planning thresholds (`planHistogramRound`'s noiseStddev).
 */
export function reportNoiseStddev(privacy: PrivacySettings | null): number {
  if (privacy === null) return 0;
  return privacy.mode === 'local' ? privacy.noiseMultiplier * privacy.clipNorm : (privacy.ddg?.localStddev ?? 0);
}

/** The report scale of `plan` under the task's privacy (see the module comment). */
export function reportScale(plan: CalibrationPlan, privacy: PrivacySettings | null): number {
  return privacy === null ? 1 : privacy.clipNorm / Math.sqrt(unitParts(plan));
}

/**
 * The config of calibration round `stage`: the range round's plan from the
 * settings; the histogram round's from the range round's outcome (null when
 * that round did not close with statistics: calibration cannot go on).
 */
export function calibrationRoundConfig(
  stage: CalibrationPlan['round'],
  settings: CalibrationSettings,
  privacy: PrivacySettings | null,
  previous: CalibrationOutcome | null,
  /** A shared-key task's range round sum (the blob of `previous`), for its histogram round. */
  encryptedRangeSum?: Uint8Array,
): CalibrationRoundConfig | null {
  if (stage === 'histogram' && previous?.stage === 'range' && previous.encrypted === true) {
    if (encryptedRangeSum === undefined) return null;
    const plan: CalibrationPlan = { round: 'histogram', points: settings.points.map((name) => ({ name, grid: { kind: 'log' } })) };
    return {
      plan,
      scale: reportScale(plan, privacy),
      derive: {
        rangeSum: Buffer.from(encryptedRangeSum).toString('base64'),
        bins: settings.bins,
        tailFraction: settings.tailFraction,
        rangeScale: reportScale(planRangeRound(settings.points), privacy),
      },
    };
  }
  const plan = stage === 'range' ? planRangeRound(settings.points) : previous?.stage === 'range' ? (previous.nextPlan ?? null) : null;
  if (plan === null) return null;
  return { plan, scale: reportScale(plan, privacy) };
}

/** The statistics in an aggregated mean (the first values of a padded report), in frequency units. */
export function readStatistics(mean: Float32Array, config: CalibrationRoundConfig): Float64Array {
  const length = statisticsLength(config.plan);
  if (mean.length < length) throw new VeilError('internal', `the aggregate holds ${mean.length} values, the plan needs ${length}`);
  const out = new Float64Array(length);
  for (let i = 0; i < length; i++) out[i] = mean[i]! / config.scale;
  return out;
}

/** What a calibration round concludes from its statistics: the next plan (range round) or the ranges (histogram round). */
export function concludeCalibration(
  config: CalibrationRoundConfig,
  statistics: Float64Array,
  settings: CalibrationSettings,
  /** σ of one value of `statistics` (frequency units; DP noise of the mean, `meanNoiseStddev`). Default 0. */
  noiseStddev = 0,
): { nextPlan: CalibrationPlan; noiseSwamped?: string[] } | { activationRanges: ActivationRanges } {
  try {
    if (config.plan.round === 'range') {
      const swamped = noiseSwampedPoints(config.plan, statistics, noiseStddev);
      return {
        nextPlan: planHistogramRound(config.plan, statistics, { tailFraction: settings.tailFraction, bins: settings.bins, noiseStddev }),
        ...(swamped.length > 0 && { noiseSwamped: swamped }),
      };
    }
    return { activationRanges: chooseActivationRanges(config.plan, statistics, { method: settings.method, percentile: settings.percentile }) };
  } catch (error) {
    const e = ExportError.from(error);
    throw new VeilError('failed_precondition', `calibration: ${e.message}`, { cause: e });
  }
}

/**
 * Checks a calibration report that arrives in the clear without DP noise (a plaintext task
 * without DP): every value is a frequency times the round's scale, each part sums to the scale
 * (the device divided its counts by their total), and the padding beyond the report is zero.
 * Refuses (`invalid_argument`) anything else, e.g. a model update from a device that ignored
 * the calibration plan, which would otherwise be summed into the statistics.
 */
export function checkCalibrationReport(values: Float32Array, config: CalibrationRoundConfig): void {
  const length = statisticsLength(config.plan);
  const bad = (why: string): never => {
    throw new VeilError('invalid_argument', `not a calibration report for this ${config.plan.round} round: ${why}`);
  };
  for (let i = length; i < values.length; i++) if (values[i] !== 0) bad(`value ${i} lies beyond the report's ${length} values and is not 0`);
  const tolerance = 1e-4 * config.scale;
  let offset = 0;
  // Range round: two parts per point (maxima, minima) on the log grid; histogram round: one linear grid.
  const parts = config.plan.points.flatMap((p) =>
    config.plan.round === 'range' ? [{ name: p.name, size: RANGE_VALUES_PER_POINT / 2 }, { name: p.name, size: RANGE_VALUES_PER_POINT / 2 }] : [{ name: p.name, size: p.grid.kind === 'linear' ? p.grid.bins : RANGE_VALUES_PER_POINT / 2 }],
  );
  for (const part of parts) {
    let sum = 0;
    for (let i = offset; i < offset + part.size; i++) {
      const v = values[i]!;
      if (!(v >= 0 && v <= config.scale * (1 + 1e-6))) bad(`value ${i} is not a frequency (${v})`);
      sum += v;
    }
    if (Math.abs(sum - config.scale) > tolerance) bad(`the frequencies of point "${part.name}" sum to ${sum / config.scale}, not 1`);
    offset += part.size;
  }
}

/** Encodes statistics for the blob store (float64 little-endian). */
export function encodeStatistics(values: Float64Array): Uint8Array {
  const out = new Uint8Array(values.length * 8);
  const view = new DataView(out.buffer);
  values.forEach((v, i) => view.setFloat64(i * 8, v, true));
  return out;
}

/** Decodes {@link encodeStatistics}. */
export function decodeStatistics(bytes: Uint8Array): Float64Array {
  if (bytes.byteLength % 8 !== 0) throw new VeilError('internal', `a statistics blob of ${bytes.byteLength} bytes`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return Float64Array.from({ length: bytes.byteLength / 8 }, (_, i) => view.getFloat64(i * 8, true));
}

/** Blob key of a calibration round's aggregated statistics (`encrypted`: a shared-key task's ciphertext sum). */
export function statisticsBlobKey(taskId: string, roundNumber: number, encrypted = false): string {
  return `calibration/${taskId}/${roundNumber}.${encrypted ? 'bfv' : 'f64'}`;
}
