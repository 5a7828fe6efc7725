import { describe, expect, it } from 'vitest';
import { createSeededRng } from '../rng.js';
import { bernoulliExpNeg, createDiscreteGaussianSampler, discreteGaussianPmf, fastDiscreteGaussianVariance, rationalFromDouble } from './discrete-gaussian.js';

/** Exact variance of N_Z(0, σ²) by summing the pmf. */
function exactVariance(sigmaSquared: number): number {
  const bound = Math.ceil(40 * Math.sqrt(sigmaSquared) + 40);
  let v = 0;
  for (let k = -bound; k <= bound; k++) v += k * k * discreteGaussianPmf(sigmaSquared, k);
  return v;
}

describe('discrete Gaussian sampler (Canonne, Kamath & Steinke 2020)', () => {
  it('converts doubles to exact rationals', () => {
    expect(rationalFromDouble(0.375)).toEqual({ num: 3n, den: 8n });
    expect(rationalFromDouble(4)).toEqual({ num: 4n, den: 1n });
    const { num, den } = rationalFromDouble(0.1);
    expect(Number(num) / Number(den)).toBe(0.1);
  });

  it('Bernoulli(exp(-γ)) has the right frequency', () => {
    const rng = createSeededRng(11);
    for (const [num, den] of [
      [1n, 3n],
      [5n, 2n],
      [0n, 1n],
    ] as const) {
      const n = 100_000;
      let hits = 0;
      for (let i = 0; i < n; i++) if (bernoulliExpNeg(rng, num, den)) hits++;
      const p = Math.exp(-Number(num) / Number(den));
      expect(Math.abs(hits / n - p)).toBeLessThanOrEqual(6 * Math.sqrt((p * (1 - p)) / n) + 1e-12);
    }
  });

  it.each([0.37, 2, 50.5, 1e4])('mean ~ 0 and variance ~ Var[N_Z(0, %d)] statistically', (sigmaSquared) => {
    const n = 100_000;
    const sampler = createDiscreteGaussianSampler({ sigmaSquared, rng: createSeededRng(17) });
    const out = new Float64Array(n);
    sampler.fill(out);
    let sum = 0;
    let sq = 0;
    let nonIntegers = 0;
    for (const x of out) {
      if (!Number.isInteger(x)) nonIntegers++;
      sum += x;
      sq += x * x;
    }
    expect(nonIntegers).toBe(0);
    const variance = exactVariance(sigmaSquared);
    expect(Math.abs(sum / n)).toBeLessThan(6 * Math.sqrt(variance / n));
    // Var(X²) <= 3σ⁴ for sub-Gaussian-like tails: 6-sigma band on the second moment.
    expect(Math.abs(sq / n - variance)).toBeLessThan(6 * Math.sqrt((3 * variance * variance) / n));
  });

  it('fastDiscreteGaussianVariance rounds up, by a tiny relative amount, to a variance the double path takes', () => {
    for (const s2 of [0.0017, 0.37, 1.01, 2, 65_536.123, 4096 ** 2 * 1.3, 1e8]) {
      const v = fastDiscreteGaussianVariance(s2);
      expect(v).toBeGreaterThanOrEqual(s2);
      expect((v - s2) / s2).toBeLessThan(s2 < 6e7 ? 1e-5 : 1e-8);
      const { num, den } = rationalFromDouble(v);
      const t = BigInt(Math.floor(Math.sqrt(v))) + 1n;
      expect(2n * num * den * t * t <= BigInt(Number.MAX_SAFE_INTEGER) || s2 > 6e7).toBe(true);
    }
  });

  it.each([2, 50, 6724, 1e6, 3.2e7, 0.0017, 65_536.125, fastDiscreteGaussianVariance(Math.PI * 1000)])('σ² = %d: the double fast path returns exactly the bigint path samples', (sigmaSquared) => {
    const n = sigmaSquared > 1e6 ? 2_000 : 20_000;
    const fast = new Float64Array(n);
    const exact = new Float64Array(n);
    createDiscreteGaussianSampler({ sigmaSquared, rng: createSeededRng(5) }).fill(fast);
    createDiscreteGaussianSampler({ sigmaSquared, rng: createSeededRng(5), forceBigint: true }).fill(exact);
    let mismatches = 0;
    for (let i = 0; i < n; i++) if (fast[i] !== exact[i]) mismatches++;
    expect(mismatches).toBe(0);
  });

  it('pmf matches the exact pmf by a chi-square test (σ² = 1.5)', () => {
    const sigmaSquared = 1.5;
    const n = 200_000;
    const sampler = createDiscreteGaussianSampler({ sigmaSquared, rng: createSeededRng(23) });
    const counts = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const x = Math.max(-5, Math.min(5, sampler.sample())); // pool tails into ±5
      counts.set(x, (counts.get(x) ?? 0) + 1);
    }
    let chi2 = 0;
    let cells = 0;
    for (let x = -5; x <= 5; x++) {
      let p = discreteGaussianPmf(sigmaSquared, x);
      if (Math.abs(x) === 5) {
        p = 0;
        for (let k = 5; k < 60; k++) p += discreteGaussianPmf(sigmaSquared, k);
      }
      const expected = n * p;
      const observed = counts.get(x) ?? 0;
      chi2 += (observed - expected) ** 2 / expected;
      cells++;
    }
    // 10 degrees of freedom: P(χ² > 29.59) = 0.001.
    expect(cells - 1).toBe(10);
    expect(chi2).toBeLessThan(29.59);
  });
});
