import { ExportError } from './errors.js';
import type { ActivationRange, ActivationRanges } from './export.js';

/**
 * Federated calibration of int8 activation scales, in two statistics rounds
 * whose device reports are fixed-length vectors of frequencies in [0, 1], so
 * that they can be aggregated exactly like model updates (encrypted,
 * example-weighted sums; DP noise where the task uses it) and no device's
 * own statistics are seen by anyone:
 *
 * 1. **range** round: per calibration point, the distribution of each
 *    example's largest and smallest activation on a fixed, model-independent
 *    grid (sign x log2 magnitude, 4 bins per octave from 2^-12 to 2^12). The
 *    coordinator reads a range that covers all but a tail of the examples
 *    ({@link planHistogramRound}).
 * 2. **histogram** round: per point, the activations' histogram on a linear
 *    grid over that range (2,048 bins). The coordinator picks the clipping
 *    range by KL-divergence minimisation (the entropy calibration of
 *    TensorRT: Migacz 2017, "8-bit Inference with TensorRT", GTC), a
 *    percentile, or min/max ({@link chooseActivationRanges}).
 *
 * Each point's part of a device's vector sums to 1 (2 in the range round:
 * maxima and minima), so the example-weighted mean of the devices' vectors
 * is the pooled distribution over all their examples.
 */

/** Grid of the range round: 4 bins per octave, magnitudes 2^-12 .. 2^12, both signs and a zero bin. */
export const RANGE_GRID = { binsPerOctave: 4, minExponent: -12, maxExponent: 12 } as const;
const MAG_BINS = (RANGE_GRID.maxExponent - RANGE_GRID.minExponent) * RANGE_GRID.binsPerOctave;
/** Bins of one signed log grid: negative magnitudes (largest first), zero, positive magnitudes. */
const LOG_BINS = 2 * MAG_BINS + 1;

/** One calibration point's grid. */
export type PointGrid =
  | { kind: 'log' }
  /** Linear bins over [min, max]; `min` is 0 (a non-negative point) or -max (a symmetric one). */
  | { kind: 'linear'; min: number; max: number; bins: number };

/** What devices compute in one calibration round: a grid per calibration point, in order. */
export interface CalibrationPlan {
  round: 'range' | 'histogram';
  points: { name: string; grid: PointGrid }[];
}

/** Length of one device report for `plan`. */
export function statisticsLength(plan: CalibrationPlan): number {
  return plan.points.reduce((n, p) => n + pointLength(plan.round, p.grid), 0);
}

function pointLength(round: CalibrationPlan['round'], grid: PointGrid): number {
  return round === 'range' ? 2 * LOG_BINS : grid.kind === 'linear' ? grid.bins : LOG_BINS;
}

/** The plan of the first (range) round over `points` (from `calibrationPoints`). */
export function planRangeRound(points: readonly string[]): CalibrationPlan {
  if (points.length === 0) throw new ExportError('invalid_argument', 'a calibration plan needs at least one point');
  return { round: 'range', points: points.map((name) => ({ name, grid: { kind: 'log' } })) };
}

/** Index of `x` on the signed log grid. */
function logBin(x: number): number {
  const a = Math.abs(x);
  if (!(a >= 2 ** RANGE_GRID.minExponent)) return MAG_BINS; // zero bin (also NaN)
  const k = Math.min(MAG_BINS - 1, Math.floor((Math.log2(a) - RANGE_GRID.minExponent) * RANGE_GRID.binsPerOctave));
  return x > 0 ? MAG_BINS + 1 + k : MAG_BINS - 1 - k;
}

/** Upper magnitude edge of log bin `k` (0-based within one sign). */
function logEdge(k: number): number {
  return 2 ** (RANGE_GRID.minExponent + (k + 1) / RANGE_GRID.binsPerOctave);
}

/**
 * A device's side of one calibration round: feed it each calibration point's
 * activations, then {@link CalibrationCollector.finish} gives the report.
 */
export interface CalibrationCollector {
  /**
   * Adds the activations of `examples` examples at point `name`: `values`
   * holds `examples` rows of equal length (any layout within a row).
   */
  add(name: string, values: Float32Array, examples: number): void;
  /** The report: per point, frequencies (each point's part sums to 1, or 2 in the range round). */
  finish(): Float32Array;
}

/** Starts a device's report for `plan`. */
export function createCalibrationCollector(plan: CalibrationPlan): CalibrationCollector {
  const counts = plan.points.map((p) => new Float64Array(pointLength(plan.round, p.grid)));
  const totals = new Float64Array(plan.points.length);
  const index = new Map(plan.points.map((p, i) => [p.name, i]));
  return {
    add(name, values, examples) {
      const i = index.get(name);
      if (i === undefined) throw new ExportError('invalid_calibration', `the plan has no calibration point "${name}"`);
      if (!Number.isInteger(examples) || examples < 1 || values.length % examples !== 0) {
        throw new ExportError('invalid_calibration', `${values.length} values are not ${examples} equal rows`);
      }
      const c = counts[i]!;
      const grid = plan.points[i]!.grid;
      if (plan.round === 'range') {
        const row = values.length / examples;
        for (let e = 0; e < examples; e++) {
          let lo = Infinity;
          let hi = -Infinity;
          for (let j = e * row; j < (e + 1) * row; j++) {
            const v = values[j]!;
            if (v < lo) lo = v;
            if (v > hi) hi = v;
          }
          c[logBin(hi)]!++;
          c[LOG_BINS + logBin(lo)]!++;
        }
        totals[i]! += examples;
        return;
      }
      if (grid.kind !== 'linear') throw new ExportError('invalid_calibration', `point "${name}" has no linear grid in a histogram round`);
      const width = (grid.max - grid.min) / grid.bins;
      for (let j = 0; j < values.length; j++) {
        const b = Math.floor((values[j]! - grid.min) / width);
        c[b < 0 ? 0 : b >= grid.bins ? grid.bins - 1 : b]!++; // out of range: the edge bins
      }
      totals[i]! += values.length;
    },
    finish() {
      const out = new Float32Array(statisticsLength(plan));
      let offset = 0;
      plan.points.forEach((p, i) => {
        const c = counts[i]!;
        if (totals[i] === 0) throw new ExportError('invalid_calibration', `no activations were added for point "${p.name}"`);
        // Range round: examples (each adds one maximum and one minimum); histogram round: values.
        for (let j = 0; j < c.length; j++) out[offset + j] = c[j]! / totals[i]!;
        offset += c.length;
      });
      return out;
    },
  };
}

function sliceStatistics(plan: CalibrationPlan, statistics: Float32Array | Float64Array): Float64Array[] {
  if (statistics.length !== statisticsLength(plan)) {
    throw new ExportError('invalid_calibration', `the statistics hold ${statistics.length} values, the plan needs ${statisticsLength(plan)}`);
  }
  let offset = 0;
  return plan.points.map((p) => {
    const n = pointLength(plan.round, p.grid);
    // Noise (DP) or rounding can make a frequency negative: clamp.
    const part = Float64Array.from(statistics.subarray(offset, offset + n), (v) => (v > 0 ? v : 0));
    offset += n;
    return part;
  });
}

/** Options of {@link planHistogramRound}. */
export interface PlanHistogramOptions {
  /** Fraction of examples whose largest (smallest) activation may lie beyond the range. Default 0.001. */
  tailFraction?: number;
  /** Linear bins per point. Default 2048 (TensorRT's histogram size). */
  bins?: number;
  /**
   * Standard deviation of the zero-mean noise on each aggregated value, in frequency units (DP
   * noise of the mean: {@link meanNoiseStddev}). Default 0 (no noise). When > 0, a value at or
   * below the universal threshold σ·sqrt(2 ln N) (N: the values in the statistics) is taken for
   * noise and set to 0 before the walk: hard thresholding (Donoho & Johnstone 1994, "Ideal spatial
   * adaptation by wavelet shrinkage", Biometrika 81(3)), under which no value of pure noise passes
   * with probability tending to 1. Without it, noise on the log grid's far bins (up to 2^12) sets
   * the range. A half (maxima or minima) of a point that no value passes keeps its noisy values.
   */
  noiseStddev?: number;
}

/**
 * σ of one value of a DP calibration mean, in frequency units: `reports` reports, each multiplied
 * by `scale` and carrying independent zero-mean noise of standard deviation `reportNoiseStddev`
 * per value in model units (z·C under local DP; the device's discrete Gaussian share σ under
 * distributed DP), averaged: σ_r / (sqrt(|D|) · scale).
 */
export function meanNoiseStddev(reportNoiseStddev: number, reports: number, scale: number): number {
  if (!(reportNoiseStddev >= 0) || !(reports >= 1) || !(scale > 0)) throw new ExportError('invalid_argument', 'meanNoiseStddev needs a noise >= 0, at least one report and a scale > 0');
  return reportNoiseStddev / (Math.sqrt(reports) * scale);
}

/** The universal threshold σ·sqrt(2 ln N) for `n` values of noise σ (Donoho & Johnstone 1994); 0 without noise. */
function universalThreshold(noiseStddev: number, n: number): number {
  if (!(noiseStddev >= 0)) throw new ExportError('invalid_argument', 'noiseStddev must be a number >= 0');
  return noiseStddev > 0 ? noiseStddev * Math.sqrt(2 * Math.log(n)) : 0;
}

/** Whether some value of `h` lies above `threshold` (always, without a threshold). */
function passes(h: Float64Array, threshold: number): boolean {
  return !(threshold > 0) || h.some((v) => v > threshold);
}

/** `h` with the values at or below `threshold` set to 0, or `h` itself when none is above it. */
function denoise(h: Float64Array, threshold: number): Float64Array {
  if (!passes(h, threshold)) return h;
  return threshold > 0 ? Float64Array.from(h, (v) => (v > threshold ? v : 0)) : h;
}

/** The maxima and minima halves of each range-round point, clamped (see {@link sliceStatistics}). */
function rangeHalves(rangePlan: CalibrationPlan, aggregated: Float32Array | Float64Array): { maxima: Float64Array; minima: Float64Array }[] {
  if (rangePlan.round !== 'range') throw new ExportError('invalid_argument', 'the statistics of a range round are needed');
  return sliceStatistics(rangePlan, aggregated).map((part) => ({ maxima: part.subarray(0, LOG_BINS), minima: part.subarray(LOG_BINS) }));
}

/**
 * The calibration points whose range the DP noise swamped: those with a half (the examples'
 * maxima or minima) in which no aggregated value exceeds the universal threshold σ·sqrt(2 ln N)
 * (N: the values in the statistics; Donoho & Johnstone 1994, "Ideal spatial adaptation by wavelet
 * shrinkage", Biometrika 81(3), §2: the largest of N independent N(0, σ²) values stays below it
 * with probability tending to 1). Such a half is indistinguishable from pure noise, so
 * {@link planHistogramRound} keeps its noisy values and its range is whatever the noise drew (up
 * to 2^12): an int8-static model on it is useless (0.10-0.11 held-out on the demo MLP), and the
 * export falls back to dynamic quantisation (`exportOnnx`'s `noiseSwamped`). Empty without noise.
 */
export function noiseSwampedPoints(rangePlan: CalibrationPlan, aggregated: Float32Array | Float64Array, noiseStddev: number): string[] {
  const threshold = universalThreshold(noiseStddev, aggregated.length);
  return rangeHalves(rangePlan, aggregated)
    .map((h, i) => (passes(h.maxima, threshold) && passes(h.minima, threshold) ? null : rangePlan.points[i]!.name))
    .filter((name): name is string => name !== null);
}

/**
 * The second round's plan from the aggregated range statistics: for each
 * point, a linear grid from 0 (when at most `tailFraction` of the examples
 * have a negative minimum) or -M, to M, where M covers the maxima (and
 * minima) of all but `tailFraction` of the examples, rounded up to the log
 * grid's bin edge.
 */
export function planHistogramRound(rangePlan: CalibrationPlan, aggregated: Float32Array | Float64Array, options: PlanHistogramOptions = {}): CalibrationPlan {
  if (rangePlan.round !== 'range') throw new ExportError('invalid_argument', 'planHistogramRound needs the statistics of a range round');
  const tail = options.tailFraction ?? 0.001;
  const bins = options.bins ?? 2048;
  if (!(tail >= 0 && tail < 0.5)) throw new ExportError('invalid_argument', 'tailFraction must be in [0, 0.5)');
  if (!Number.isInteger(bins) || bins < 256) throw new ExportError('invalid_argument', 'bins must be an integer >= 256');
  const threshold = universalThreshold(options.noiseStddev ?? 0, aggregated.length);
  const halves = rangeHalves(rangePlan, aggregated);
  return {
    round: 'histogram',
    points: rangePlan.points.map((p, i) => {
      const maxima = denoise(halves[i]!.maxima, threshold);
      const minima = denoise(halves[i]!.minima, threshold);
      const mass = (h: Float64Array) => h.reduce((a, b) => a + b, 0);
      const mMax = mass(maxima);
      const mMin = mass(minima);
      if (!(mMax > 0) || !(mMin > 0)) throw new ExportError('invalid_calibration', `the range statistics of point "${p.name}" hold no data`);
      // Largest value: walk down from the top until more than `tail` of the maxima lie above.
      let hi = 0;
      let acc = 0;
      for (let b = LOG_BINS - 1; b >= 0; b--) {
        acc += maxima[b]! / mMax;
        if (acc > tail) {
          hi = b > MAG_BINS ? logEdge(b - MAG_BINS - 1) : b === MAG_BINS ? 2 ** RANGE_GRID.minExponent : -logEdge(MAG_BINS - 1 - b - 1);
          break;
        }
      }
      // Smallest value: walk up from the bottom.
      let lo = 0;
      acc = 0;
      for (let b = 0; b < LOG_BINS; b++) {
        acc += minima[b]! / mMin;
        if (acc > tail) {
          lo = b < MAG_BINS ? -logEdge(MAG_BINS - 1 - b) : 0;
          break;
        }
      }
      const max = Math.max(Math.abs(lo), Math.max(hi, 0), 2 ** RANGE_GRID.minExponent);
      const grid: PointGrid = lo < 0 ? { kind: 'linear', min: -max, max, bins } : { kind: 'linear', min: 0, max: Math.max(hi, 2 ** RANGE_GRID.minExponent), bins };
      return { name: p.name, grid };
    }),
  };
}

/** How {@link chooseActivationRanges} picks a range from a histogram. */
export type RangeMethod = 'kl' | 'percentile' | 'minmax';

/** Options of {@link chooseActivationRanges}. */
export interface ChooseRangesOptions {
  /**
   * Default `percentile`. `kl` (TensorRT's entropy calibration) is available,
   * but on ReLU layers the spike of exact zeros dominates the divergence and
   * pulls the threshold down: measured by `bench:export`, it clipped the MNIST
   * models' hidden ranges to a quarter to a half of their maxima and cost
   * 0.55 (MLP) and 9 (CNN) points, where the 99.99th percentile cost 0.05 on
   * both.
   */
  method?: RangeMethod;
  /** `percentile` only: the share of |activations| kept inside the range, in percent. Default 99.99. */
  percentile?: number;
}

/**
 * KL-divergence threshold selection over a histogram of magnitudes (Migacz
 * 2017, the "entropy calibration" of TensorRT): for each candidate threshold
 * i >= levels, P = the first i bins with the mass beyond folded into bin
 * i-1; Q = P merged into `levels` equal groups and spread back over each
 * group's non-empty bins; both smoothed ({@link smooth}); pick the i
 * minimising KL(P || Q). Returns the number of bins kept.
 */
export function klThresholdBins(hist: Float64Array, levels: number): number {
  const n = hist.length;
  let last = n;
  while (last > 0 && hist[last - 1] === 0) last--;
  if (last <= levels) return Math.max(last, 1);
  let best = last;
  let bestKl = Infinity;
  const p = new Float64Array(n);
  const q = new Float64Array(n);
  let outliers = 0;
  for (let b = last - 1; b >= levels; b--) outliers += hist[b]!; // mass at or beyond bin `levels`
  for (let i = levels; i <= last; i++) {
    // Mass beyond i-1 (outliers) is folded into bin i-1.
    if (i > levels) outliers -= hist[i - 1]!;
    for (let b = 0; b < i; b++) p[b] = hist[b]!;
    p[i - 1]! += outliers;
    // Q: merge into `levels` groups of (nearly) equal width, spread over non-empty bins.
    for (let g = 0; g < levels; g++) {
      const start = Math.floor((g * i) / levels);
      const end = Math.floor(((g + 1) * i) / levels);
      let sum = 0;
      let nonEmpty = 0;
      for (let b = start; b < end; b++) {
        sum += hist[b]!;
        if (hist[b]! > 0) nonEmpty++;
      }
      for (let b = start; b < end; b++) q[b] = hist[b]! > 0 ? sum / nonEmpty : 0;
    }
    // The folded outliers belong to P only (as TensorRT does): Q is built from the unfolded bins.
    let sp = 0;
    let sq = 0;
    for (let b = 0; b < i; b++) {
      sp += p[b]!;
      sq += q[b]!;
    }
    if (sp <= 0 || sq <= 0) continue;
    smooth(p, i, sp);
    smooth(q, i, sq);
    let kl = 0;
    for (let b = 0; b < i; b++) {
      const pb = p[b]!;
      if (pb > 0) kl += pb * Math.log(pb / q[b]!);
    }
    if (kl < bestKl) {
      bestKl = kl;
      best = i;
    }
  }
  return best;
}

/**
 * Normalises the first `n` values of `d` (sum `sum`) and moves a mass of
 * 1e-4 onto its empty bins, taken evenly from the others, so that KL(P || Q)
 * is finite (the smoothing of MXNet's and ONNX Runtime's entropy
 * calibrators, `_smooth_distribution`, eps = 1e-4).
 */
function smooth(d: Float64Array, n: number, sum: number): void {
  const eps = 1e-4;
  let zeros = 0;
  for (let b = 0; b < n; b++) if (d[b] === 0) zeros++;
  const take = zeros === 0 || zeros === n ? 0 : (eps * zeros) / (n - zeros);
  for (let b = 0; b < n; b++) d[b] = d[b] === 0 ? (zeros === n ? 0 : eps) : d[b]! / sum - take;
}

/**
 * Activation ranges (the input of int8 `exportOnnx`) from the aggregated
 * statistics of a histogram round. A non-negative point keeps [0, T] with
 * 255 levels; a symmetric one [-T, T] (its magnitudes folded) with 128
 * levels per sign, as TensorRT's int8 calibration does.
 */
export function chooseActivationRanges(histogramPlan: CalibrationPlan, aggregated: Float32Array | Float64Array, options: ChooseRangesOptions = {}): ActivationRanges {
  if (histogramPlan.round !== 'histogram') throw new ExportError('invalid_argument', 'chooseActivationRanges needs the statistics of a histogram round');
  const method = options.method ?? 'percentile';
  const percentile = options.percentile ?? 99.99;
  if (method !== 'kl' && method !== 'percentile' && method !== 'minmax') throw new ExportError('invalid_argument', `unknown range method ${String(method)}`);
  if (!(percentile > 0 && percentile <= 100)) throw new ExportError('invalid_argument', 'percentile must be in (0, 100]');
  const parts = sliceStatistics(histogramPlan, aggregated);
  const ranges: Record<string, ActivationRange> = {};
  histogramPlan.points.forEach((p, i) => {
    const grid = p.grid;
    if (grid.kind !== 'linear') throw new ExportError('invalid_calibration', `point "${p.name}" has no linear grid`);
    const part = parts[i]!;
    const symmetric = grid.min < 0;
    // Magnitude histogram: bins of width (max - min) / bins from 0 up.
    let mags: Float64Array;
    if (symmetric) {
      const half = grid.bins / 2;
      mags = new Float64Array(Math.ceil(half));
      for (let b = 0; b < grid.bins; b++) {
        const k = b >= half ? Math.floor(b - half) : Math.floor(half - 1 - b);
        mags[Math.min(k, mags.length - 1)]! += part[b]!;
      }
    } else {
      mags = part;
    }
    const width = (grid.max - grid.min) / grid.bins;
    const total = mags.reduce((a, b) => a + b, 0);
    if (!(total > 0)) throw new ExportError('invalid_calibration', `the histogram of point "${p.name}" holds no data`);
    let keep: number;
    if (method === 'minmax') {
      keep = mags.length;
      while (keep > 1 && mags[keep - 1] === 0) keep--;
    } else if (method === 'percentile') {
      let acc = 0;
      keep = mags.length;
      for (let b = 0; b < mags.length; b++) {
        acc += mags[b]!;
        if (acc >= (percentile / 100) * total) {
          keep = b + 1;
          break;
        }
      }
    } else {
      keep = klThresholdBins(mags, symmetric ? 128 : 255);
    }
    const t = keep * width;
    ranges[p.name] = symmetric ? { min: -t, max: t } : { min: 0, max: t };
  });
  return ranges;
}
