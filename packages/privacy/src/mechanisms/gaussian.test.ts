import { describe, expect, it } from 'vitest';
import { PrivacyError } from '../errors.js';
import { createSeededRng } from '../rng.js';
import { addGaussianNoise, clipToNorm, fillGaussian, getDefaultRng, l2Norm, privatizeLocalUpdate } from './gaussian.js';

describe('clipToNorm', () => {
  it('bounds the norm by clipNorm over random vectors (float32 and float64)', () => {
    const rng = createSeededRng(1);
    for (let trial = 0; trial < 300; trial++) {
      const d = 1 + Math.floor(rng.nextDouble() * 2000);
      const scale = 10 ** (rng.nextDouble() * 8 - 4);
      const clipNorm = 10 ** (rng.nextDouble() * 4 - 2);
      const v = trial % 2 ? new Float32Array(d) : new Float64Array(d);
      for (let i = 0; i < d; i++) v[i] = (rng.nextDouble() - 0.5) * scale;
      const { clipped, norm, scale: applied } = clipToNorm(v, clipNorm);
      expect(l2Norm(clipped)).toBeLessThanOrEqual(clipNorm);
      expect(norm).toBeCloseTo(l2Norm(v), 6);
      if (norm > clipNorm) expect(l2Norm(clipped)).toBeGreaterThan(clipNorm * (1 - 1e-5));
      else expect(applied).toBe(1);
      expect(clipped).not.toBe(v);
    }
  });

  it('keeps direction and returns the original norm', () => {
    const { clipped, norm } = clipToNorm(new Float64Array([3, 4]), 1);
    expect(norm).toBe(5);
    expect(clipped[0]).toBeCloseTo(0.6, 12);
    expect(clipped[1]).toBeCloseTo(0.8, 12);
  });

  it('rejects a non-positive clip norm and non-finite updates', () => {
    expect(() => clipToNorm(new Float64Array([1]), 0)).toThrow(PrivacyError);
    expect(() => clipToNorm(new Float64Array([Number.NaN]), 1)).toThrow(PrivacyError);
  });
});

describe('Gaussian noise', () => {
  it('has the requested stddev (chi-square confidence interval, fixed seed)', () => {
    const n = 200_000;
    const stddev = 2.5;
    const out = new Float64Array(n);
    fillGaussian(out, stddev, createSeededRng(42));
    let sum = 0;
    let sq = 0;
    for (const x of out) {
      sum += x;
      sq += x * x;
    }
    const mean = sum / n;
    const variance = sq / n;
    // mean ~ N(0, σ²/n): 6-sigma bound. n·s²/σ² ~ χ²_n ≈ N(n, 2n): s²/σ² within 6·sqrt(2/n).
    expect(Math.abs(mean)).toBeLessThan((6 * stddev) / Math.sqrt(n));
    expect(Math.abs(variance / stddev ** 2 - 1)).toBeLessThan(6 * Math.sqrt(2 / n));
    // Gaussian tails: P(|X| > 2σ) = 0.0455.
    let tail = 0;
    for (const x of out) if (Math.abs(x) > 2 * stddev) tail++;
    expect(Math.abs(tail / n - 0.0455003)).toBeLessThan(6 * Math.sqrt((0.0455 * 0.9545) / n));
  });

  it('addGaussianNoise uses stddev z·C and does not modify its input', () => {
    const n = 100_000;
    const update = new Float32Array(n).fill(1);
    const noised = addGaussianNoise(update, { noiseMultiplier: 0.5, clipNorm: 4, rng: createSeededRng(3) });
    expect(update[0]).toBe(1);
    let sq = 0;
    for (const x of noised) sq += (x - 1) ** 2;
    expect(Math.abs(sq / n / 4 - 1)).toBeLessThan(6 * Math.sqrt(2 / n));
  });

  it('privatizeLocalUpdate clips then noises', () => {
    const update = new Float64Array([30, 40]);
    const r = privatizeLocalUpdate(update, { clipNorm: 1, noiseMultiplier: 1e-9, rng: createSeededRng(5) });
    expect(r.norm).toBe(50);
    expect(r.clipped).toBe(true);
    expect(l2Norm(r.noised)).toBeCloseTo(1, 6);
  });

  it('the default RNG is the node:crypto CSPRNG, never Math.random', () => {
    const rng = getDefaultRng();
    expect(rng.cryptographicallySecure).toBe(true);
    const original = Math.random;
    Math.random = () => {
      throw new Error('Math.random must not be used');
    };
    try {
      const out = new Float64Array(1000);
      fillGaussian(out, 1);
      expect(new Set(out).size).toBe(1000);
    } finally {
      Math.random = original;
    }
  });
});
