import { describe, expect, it } from 'vitest';
import { computeEpsilon } from '../accounting/accountant.js';
import { createSeededRng } from '../rng.js';
import {
  checkModularHeadroom,
  computeDistributedDiscreteGaussianEpsilon,
  computeDistributedDiscreteGaussianRdp,
  conditionalRandomizedRound,
  ddgTau,
  decodeDistributedDiscreteGaussian,
  encodeDistributedDiscreteGaussian,
  inverseRandomizedHadamard,
  randomizedHadamard,
  roundedL2NormBound,
} from './distributed-discrete-gaussian.js';
import { l2Norm } from './gaussian.js';

describe('distributed discrete Gaussian (Kairouz, Liu & Steinke 2021)', () => {
  it('conditional randomized rounding respects the Theorem 1 norm bound and is unbiased', () => {
    const rng = createSeededRng(1);
    const d = 256;
    const x = new Float64Array(d);
    for (let i = 0; i < d; i++) x[i] = (rng.nextDouble() - 0.5) * 10;
    const bound = roundedL2NormBound(l2Norm(x), d);
    const mean = new Float64Array(d);
    const trials = 2000;
    let maxNorm = 0;
    let maxMove = 0;
    for (let t = 0; t < trials; t++) {
      const r = conditionalRandomizedRound(x, { rng });
      maxNorm = Math.max(maxNorm, l2Norm(r));
      for (let i = 0; i < d; i++) {
        maxMove = Math.max(maxMove, Math.abs((r[i] as number) - (x[i] as number)));
        mean[i] = (mean[i] as number) + (r[i] as number) / trials;
      }
    }
    expect(maxNorm).toBeLessThanOrEqual(bound);
    expect(maxMove).toBeLessThan(1);
    // Unconditional rounding is unbiased; conditioning on a high-probability
    // event keeps the bias small.
    for (let i = 0; i < d; i++) expect(Math.abs((mean[i] as number) - (x[i] as number))).toBeLessThan(0.06);
  });

  it('roundedL2NormBound is min(c + sqrt(d), sqrt(c² + d/4 + sqrt(2 ln 1/β)(c + sqrt(d)/2)))', () => {
    const c = 100;
    const d = 1024;
    const beta = Math.exp(-0.5);
    expect(roundedL2NormBound(c, d, beta)).toBeCloseTo(Math.sqrt(c * c + d / 4 + 1 * (c + 16)), 10);
    expect(roundedL2NormBound(c, d, 0)).toBe(c + 32);
  });

  it('randomized Hadamard is orthonormal and invertible', () => {
    const rng = createSeededRng(2);
    const x = new Float64Array(100);
    for (let i = 0; i < x.length; i++) x[i] = rng.nextDouble() - 0.5;
    const y = randomizedHadamard(x, 1234);
    expect(y.length).toBe(128);
    expect(l2Norm(y)).toBeCloseTo(l2Norm(x), 12);
    const back = inverseRandomizedHadamard(y, 100, 1234);
    for (let i = 0; i < 100; i++) expect(back[i]).toBeCloseTo(x[i] as number, 12);
  });

  it('end to end: modular sum of client encodings decodes to the noisy sum', () => {
    const rng = createSeededRng(3);
    const d = 50;
    const n = 20;
    const modulus = 2 ** 32;
    const scale = 2 ** 12;
    const localStddev = 0.001;
    const truth = new Float64Array(d);
    const sum = new Float64Array(64);
    for (let c = 0; c < n; c++) {
      const update = new Float32Array(d);
      for (let i = 0; i < d; i++) update[i] = (rng.nextDouble() - 0.5) * 0.2;
      for (let i = 0; i < d; i++) truth[i] = (truth[i] as number) + (update[i] as number);
      const { encoded, dimension } = encodeDistributedDiscreteGaussian(update, {
        clipNorm: 10,
        scale,
        localStddev,
        modulus,
        rotationSeed: 77,
        rng,
      });
      expect(dimension).toBe(64);
      for (let i = 0; i < dimension; i++) sum[i] = ((sum[i] as number) + (encoded[i] as number)) % modulus;
    }
    const decoded = decodeDistributedDiscreteGaussian(sum, { scale, modulus, originalDimension: d, rotationSeed: 77 });
    // Error: noise stddev sqrt(n)·σ ≈ 0.0045 plus rounding sqrt(n)/(2·scale) per coordinate.
    for (let i = 0; i < d; i++) expect(Math.abs((decoded[i] as number) - (truth[i] as number))).toBeLessThan(0.03);
  });

  it('tau follows Theorem 1 and vanishes for large σ', () => {
    expect(ddgTau(1, 1)).toBe(0);
    expect(ddgTau(0.5, 3)).toBeCloseTo(10 * (Math.exp(-(Math.PI ** 2) / 4) + Math.exp(-(Math.PI ** 2 / 2) * (2 / 3))), 12);
    expect(ddgTau(10, 1000)).toBeLessThan(1e-300);
  });

  it('with τ ≈ 0 and q = 1 the RDP is the Gaussian α Δ₂² / (2 n σ²)', () => {
    const params = { clipNorm: 1, scale: 100, localStddev: 0.5, clients: 10, dimension: 64, beta: 0 } as const;
    const rdp = computeDistributedDiscreteGaussianRdp({ ...params, orders: [2, 8, 32] });
    const delta2 = 100 + 8; // c·scale + sqrt(d) with β = 0
    const s2 = 10 * (0.5 * 100) ** 2;
    [2, 8, 32].forEach((a, k) => expect(rdp[k]).toBeCloseTo((a * delta2 * delta2) / (2 * s2), 10));
    // ... so its epsilon equals the Gaussian accountant's with z = sqrt(n)·σ/Δ₂ (in update units).
    const eps = computeDistributedDiscreteGaussianEpsilon({ ...params, delta: 1e-5 });
    const z = (Math.sqrt(10) * 0.5 * 100) / delta2;
    expect(eps.epsilon).toBeCloseTo(computeEpsilon({ samplingRate: 1, noiseMultiplier: z, rounds: 1, delta: 1e-5 }).epsilon, 10);
  });

  it('subsampling lowers the DDG epsilon and composition raises it', () => {
    const base = { clipNorm: 1, scale: 50, localStddev: 0.2, clients: 100, dimension: 1024, delta: 1e-5 };
    const full = computeDistributedDiscreteGaussianEpsilon(base).epsilon;
    const sampled = computeDistributedDiscreteGaussianEpsilon({ ...base, samplingRate: 0.01 }).epsilon;
    const many = computeDistributedDiscreteGaussianEpsilon({ ...base, samplingRate: 0.01, steps: 100 }).epsilon;
    expect(sampled).toBeLessThan(full);
    expect(many).toBeGreaterThan(sampled);
    expect(Number.isFinite(many)).toBe(true);
  });

  it('checkModularHeadroom flags too-small moduli and reports the bits needed', () => {
    const common = { clipNorm: 1, clients: 100, scale: 2 ** 10, localStddev: 0.01, dimension: 2 ** 16 };
    const tight = checkModularHeadroom({ ...common, modulusBits: 12 });
    expect(tight.ok).toBe(false);
    const roomy = checkModularHeadroom({ ...common, modulusBits: 32 });
    expect(roomy.ok).toBe(true);
    expect(roomy.overflowProbabilityBound).toBeLessThan(1e-9);
    expect(roomy.requiredModulusBits).toBeLessThanOrEqual(32);
    expect(checkModularHeadroom({ ...common, modulusBits: roomy.requiredModulusBits }).ok).toBe(true);
    expect(checkModularHeadroom({ ...common, modulusBits: roomy.requiredModulusBits - 1 }).ok).toBe(false);
    // Without rotation the worst-case signal n·c·scale = 102400 must fit in m/2.
    expect(checkModularHeadroom({ ...common, modulusBits: 17, rotated: false }).ok).toBe(false);
    expect(checkModularHeadroom({ ...common, modulusBits: 20, rotated: false }).ok).toBe(true);
  });
});
