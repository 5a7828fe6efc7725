import { describe, expect, it } from 'vitest';
import {
  chooseActivationRanges,
  createCalibrationCollector,
  klThresholdBins,
  meanNoiseStddev,
  noiseSwampedPoints,
  planHistogramRound,
  planRangeRound,
  statisticsLength,
  type CalibrationPlan,
} from './calibration.js';
import { uint8Params } from './export.js';
import { createSeededRng } from '@veil/privacy';

/** Seeded uniform values in [0, 1) (@veil/privacy's test generator), so failures reproduce. */
function rng(seed: number): () => number {
  const generator = createSeededRng(seed);
  return () => generator.nextDouble();
}

function gaussian(next: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
}

/** `examples` rows of `row` values: ReLU(N(0, 1)) on point "relu", N(0, 2) on point "signed". */
function activations(seed: number, examples: number, row = 50): { relu: Float32Array; signed: Float32Array } {
  const next = rng(seed);
  const relu = new Float32Array(examples * row).map(() => Math.max(0, gaussian(next)));
  const signed = new Float32Array(examples * row).map(() => 2 * gaussian(next));
  return { relu, signed };
}

function report(plan: CalibrationPlan, a: { relu: Float32Array; signed: Float32Array }, examples: number): Float32Array {
  const c = createCalibrationCollector(plan);
  c.add('relu', a.relu, examples);
  c.add('signed', a.signed, examples);
  return c.finish();
}

function mergeRows(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

describe('federated calibration statistics', () => {
  const rangePlan = planRangeRound(['relu', 'signed']);

  it("the example-weighted mean of devices' reports is the report of their pooled examples (range and histogram rounds)", () => {
    const a = activations(1, 300);
    const b = activations(2, 100);
    const pooled = { relu: mergeRows(a.relu, b.relu), signed: mergeRows(a.signed, b.signed) };
    for (const plan of [rangePlan, planHistogramRound(rangePlan, report(rangePlan, pooled, 400))]) {
      const ra = report(plan, a, 300);
      const rb = report(plan, b, 100);
      const rp = report(plan, pooled, 400);
      expect(ra.length).toBe(statisticsLength(plan));
      let maxDiff = 0;
      for (let i = 0; i < rp.length; i++) maxDiff = Math.max(maxDiff, Math.abs((300 * ra[i]! + 100 * rb[i]!) / 400 - rp[i]!));
      expect(maxDiff).toBeLessThan(1e-6);
      // Every value is a frequency in [0, 1] (it fits the encrypted-update clip range).
      expect(Math.min(...ra)).toBeGreaterThanOrEqual(0);
      expect(Math.max(...ra)).toBeLessThanOrEqual(1);
    }
  });

  it('the range round bounds the activations within one log-grid bin (a factor 2^(1/4))', () => {
    const a = activations(3, 500);
    const plan = planHistogramRound(rangePlan, report(rangePlan, a, 500), { tailFraction: 0 });
    const [relu, signed] = plan.points.map((p) => p.grid);
    const maxRelu = a.relu.reduce((m, v) => Math.max(m, v), 0);
    const maxSigned = a.signed.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(relu).toMatchObject({ kind: 'linear', min: 0, bins: 2048 });
    expect(relu!.kind === 'linear' && relu!.max).toBeGreaterThanOrEqual(maxRelu);
    expect(relu!.kind === 'linear' && relu!.max).toBeLessThanOrEqual(maxRelu * 2 ** 0.25);
    expect(signed!.kind === 'linear' && signed!.min).toBe(signed!.kind === 'linear' ? -signed!.max : NaN);
    expect(signed!.kind === 'linear' && signed!.max).toBeGreaterThanOrEqual(maxSigned);
    expect(signed!.kind === 'linear' && signed!.max).toBeLessThanOrEqual(maxSigned * 2 ** 0.25);
  });

  it('under DP noise of a stated deviation, the range round still bounds the activations (universal threshold); without it noise on the far bins sets the range', () => {
    const a = activations(6, 500);
    const exact = report(rangePlan, a, 500);
    const clean = planHistogramRound(rangePlan, exact, { tailFraction: 0.001 });
    // The mean of 3 reports each carrying N(0, σ_r²) per value (frequency units): σ = σ_r / sqrt(3).
    const sigma = meanNoiseStddev(0.02, 3, 1);
    expect(sigma).toBeCloseTo(0.02 / Math.sqrt(3), 15);
    const next = rng(7);
    const noisy = Float64Array.from(exact, (v) => v + sigma * gaussian(next));
    const denoised = planHistogramRound(rangePlan, noisy, { tailFraction: 0.001, noiseStddev: sigma });
    const max = (p: CalibrationPlan, i: number) => (p.points[i]!.grid as { max: number }).max;
    // The threshold also drops genuine bins below it (here up to 4% of the examples' maxima): the
    // range shrinks a little, and the signs of the points are kept.
    for (const i of [0, 1]) {
      expect(max(denoised, i)).toBeLessThanOrEqual(max(clean, i));
      expect(max(denoised, i)).toBeGreaterThan(max(clean, i) / 2);
      expect((denoised.points[i]!.grid as { min: number }).min < 0).toBe((clean.points[i]!.grid as { min: number }).min < 0);
    }
    // Ignoring the noise: some far bin's noise passes the tail, and the range is orders of magnitude too wide.
    const naive = planHistogramRound(rangePlan, noisy, { tailFraction: 0.001 });
    expect(max(naive, 0)).toBeGreaterThan(100 * max(clean, 0));
    // Noise that swamps every value: nothing passes, the noisy values are kept (as without noiseStddev).
    expect(planHistogramRound(rangePlan, noisy, { tailFraction: 0.001, noiseStddev: 10 })).toEqual(naive);
    expect(() => planHistogramRound(rangePlan, noisy, { noiseStddev: -1 })).toThrowError(/noiseStddev/);
  });

  it('noiseSwampedPoints: a point is swamped when a half (maxima or minima) has no value above sigma*sqrt(2 ln N), N the values in the statistics', () => {
    // By hand: 2 points x 386 values. "relu": maxima spread evenly over 20 bins (0.05 each),
    // minima all in the zero bin (1). "signed": maxima and minima each in one bin (1).
    const n = statisticsLength(rangePlan);
    expect(n).toBe(772);
    const stats = new Float64Array(n);
    for (let b = 150; b < 170; b++) stats[b] = 0.05; // relu maxima: positive magnitudes (bins 97..192)
    stats[193 + 96] = 1; // relu minima: zero bin (96 = the zero bin of one signed log grid of 193)
    stats[386 + 150] = 1;
    stats[386 + 193 + 10] = 1;
    // Thresholds computed here: sigma * sqrt(2 ln 772) = sigma * 3.6466...
    const t = (sigma: number) => sigma * Math.sqrt(2 * Math.log(772));
    expect(t(1)).toBeCloseTo(3.6466, 4);
    expect(noiseSwampedPoints(rangePlan, stats, 0)).toEqual([]);
    expect(noiseSwampedPoints(rangePlan, stats, 0.01)).toEqual([]); // threshold 0.036 < 0.05
    expect(noiseSwampedPoints(rangePlan, stats, 0.03)).toEqual(['relu']); // 0.109: relu's maxima swamped
    // At the boundary: 0.05 passes a threshold just below it, not one equal to it ("at or below" is noise).
    expect(noiseSwampedPoints(rangePlan, stats, (0.05 / t(1)) * (1 - 1e-9))).toEqual([]);
    expect(noiseSwampedPoints(rangePlan, stats, 0.05 / t(1) + 1e-12)).toEqual(['relu']);
    expect(noiseSwampedPoints(rangePlan, stats, 0.3)).toEqual(['relu', 'signed']); // 1.09 > 1: everything
    // Real reports under DP noise: swamped at the demo's deviation (local DP z = 0.7, 2 devices, m = 4:
    // sigma = z*sqrt(m)/sqrt(2) = 0.99), not at a small one; consistent with planHistogramRound's walk.
    const exact = report(rangePlan, activations(8, 500), 500);
    const next = rng(9);
    for (const [sigma, swamped] of [[0.99, ['relu', 'signed']], [meanNoiseStddev(0.02, 3, 1), []]] as const) {
      const noisy = Float64Array.from(exact, (v) => v + sigma * gaussian(next));
      expect(noiseSwampedPoints(rangePlan, noisy, sigma)).toEqual(swamped);
    }
    expect(() => noiseSwampedPoints(rangePlan, stats, -1)).toThrowError(/noiseStddev/);
    expect(() => noiseSwampedPoints(rangePlan, new Float64Array(3), 0)).toThrowError(/the plan needs/);
  });

  it('percentile and min/max ranges match the data they summarise', () => {
    const a = activations(4, 1000);
    const hPlan = planHistogramRound(rangePlan, report(rangePlan, a, 1000), { tailFraction: 0 });
    const stats = report(hPlan, a, 1000);
    const sorted = Float32Array.from(a.relu).sort();
    const minmax = chooseActivationRanges(hPlan, stats, { method: 'minmax' });
    expect(minmax['relu']!.min).toBe(0);
    expect(Math.abs(minmax['relu']!.max - sorted[sorted.length - 1]!)).toBeLessThan(2 * (hPlan.points[0]!.grid as { max: number }).max / 2048);
    const p99 = chooseActivationRanges(hPlan, stats, { method: 'percentile', percentile: 99 });
    const exact = sorted[Math.ceil(0.99 * sorted.length) - 1]!;
    expect(Math.abs(p99['relu']!.max - exact)).toBeLessThan(2 * (hPlan.points[0]!.grid as { max: number }).max / 2048);
  });

  it('KL calibration clips rare outliers, and quantises the other 99.98% of the values with less error than min/max', () => {
    const next = rng(5);
    const values = new Float32Array(100_000).map(() => Math.abs(gaussian(next)));
    for (let i = 0; i < 20; i++) values[i * 997] = 40 + 10 * next(); // 0.02% outliers
    const plan: CalibrationPlan = { round: 'histogram', points: [{ name: 'x', grid: { kind: 'linear', min: 0, max: 64, bins: 2048 } }] };
    const c = createCalibrationCollector(plan);
    c.add('x', values, 1000);
    const stats = c.finish();
    const kl = chooseActivationRanges(plan, stats, { method: 'kl' })['x']!;
    const mm = chooseActivationRanges(plan, stats, { method: 'minmax' })['x']!;
    expect(kl.max).toBeGreaterThan(3);
    expect(kl.max).toBeLessThan(20);
    expect(mm.max).toBeGreaterThan(40);
    const mse = (r: { min: number; max: number }) => {
      const { scale, zeroPoint } = uint8Params(r);
      let s = 0;
      for (const [i, v] of values.entries()) {
        if (i % 997 === 0 && i < 20 * 997) continue; // the outliers
        const q = Math.min(255, Math.max(0, Math.round(v / scale) + zeroPoint));
        s += ((q - zeroPoint) * scale - v) ** 2;
      }
      return s / (values.length - 20);
    };
    expect(mse(kl)).toBeLessThan(mse(mm) / 4);
  });

  it('klThresholdBins keeps everything when the histogram has no more bins than levels', () => {
    const hist = new Float64Array(2048);
    for (let b = 0; b < 100; b++) hist[b] = 1;
    expect(klThresholdBins(hist, 128)).toBe(100);
  });

  it('refuses statistics of the wrong length and empty points', () => {
    expect(() => planHistogramRound(rangePlan, new Float32Array(3))).toThrowError(/the plan needs/);
    expect(() => planHistogramRound(rangePlan, new Float32Array(statisticsLength(rangePlan)))).toThrowError(/hold no data/);
    const c = createCalibrationCollector(rangePlan);
    c.add('relu', new Float32Array(4), 2);
    expect(() => c.finish()).toThrowError(/no activations were added for point "signed"/);
    expect(() => c.add('nope', new Float32Array(4), 2)).toThrowError(/no calibration point "nope"/);
  });
});

describe('default range method', () => {
  it('is the 99.99th percentile', () => {
    const next = rng(9);
    const values = new Float32Array(50_000).map(() => Math.abs(gaussian(next)));
    const plan: CalibrationPlan = { round: 'histogram', points: [{ name: 'x', grid: { kind: 'linear', min: 0, max: 8, bins: 2048 } }] };
    const c = createCalibrationCollector(plan);
    c.add('x', values, 50);
    const stats = c.finish();
    expect(chooseActivationRanges(plan, stats)).toEqual(chooseActivationRanges(plan, stats, { method: 'percentile', percentile: 99.99 }));
  });
});
