import { describe, expect, it } from 'vitest';
import { PrivacyError } from '../errors.js';
import { createSeededRng } from '../rng.js';
import { computeEpsilon } from './accountant.js';
import { calibrateNoiseMultiplier } from './calibration.js';

describe('calibrateNoiseMultiplier', () => {
  it('returns the smallest z: eps(z) <= target < eps(z * (1 - 0.005))', () => {
    const rng = createSeededRng(7);
    for (let i = 0; i < 6; i++) {
      const samplingRate = [0.001, 0.01, 0.1, 1][Math.floor(rng.nextDouble() * 4)] as number;
      const rounds = [1, 10, 100, 1000, 10000][Math.floor(rng.nextDouble() * 5)] as number;
      const delta = i % 2 === 0 ? 1e-5 : 1e-6;
      const targetEpsilon = 0.5 + 7.5 * rng.nextDouble();
      const { noiseMultiplier, epsilon } = calibrateNoiseMultiplier({ targetEpsilon, delta, samplingRate, rounds });
      const eps = (z: number) => computeEpsilon({ samplingRate, noiseMultiplier: z, rounds, delta }).epsilon;
      expect(epsilon).toBe(eps(noiseMultiplier));
      expect(eps(noiseMultiplier)).toBeLessThanOrEqual(targetEpsilon);
      expect(eps(noiseMultiplier * (1 - 0.005))).toBeGreaterThan(targetEpsilon);
      expect(eps(noiseMultiplier * (1 - 1e-4))).toBeGreaterThan(targetEpsilon);
    }
  });

  it('inverts the published TF Privacy setting (eps 0.7242234 <- z = 1.3)', () => {
    // compute_dp_sgd_privacy_test.py Test0: n=60000, batch=150, 15 epochs, z=1.3.
    const r = calibrateNoiseMultiplier({
      targetEpsilon: 0.7242234026109595,
      delta: 1e-5,
      samplingRate: 150 / 60000,
      rounds: 6000,
      orders: [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, ...Array.from({ length: 59 }, (_, i) => 5 + i), 128, 256, 512],
    });
    expect(Math.abs(r.noiseMultiplier / 1.3 - 1)).toBeLessThan(1e-4);
  });

  it('q = 1, T = 1 matches the closed-form Gaussian calibration', () => {
    // dp_accounting: z = 4.530877117 is exactly (1, 1e-6)-DP on a fine grid;
    // with the coarser default grid the calibrated z is at most slightly larger.
    const r = calibrateNoiseMultiplier({ targetEpsilon: 1, delta: 1e-6, samplingRate: 1, rounds: 1 });
    expect(r.noiseMultiplier).toBeGreaterThanOrEqual(4.530877117 * (1 - 1e-5));
    expect(r.noiseMultiplier).toBeLessThan(4.530877117 * 1.005);
  });

  it('throws target_unreachable with a clear message when the cap is too small', () => {
    try {
      calibrateNoiseMultiplier({ targetEpsilon: 1e-4, delta: 1e-6, samplingRate: 1, rounds: 10000, maxNoiseMultiplier: 100 });
      expect.unreachable();
    } catch (error) {
      const e = PrivacyError.from(error);
      expect(e.code).toBe('target_unreachable');
      expect(e.message).toMatch(/not reachable/);
    }
  });

  it('rejects invalid arguments', () => {
    expect(() => calibrateNoiseMultiplier({ targetEpsilon: 0, delta: 1e-5, samplingRate: 0.1, rounds: 1 })).toThrow(PrivacyError);
    expect(() => calibrateNoiseMultiplier({ targetEpsilon: 1, delta: 1e-5, samplingRate: 0, rounds: 1 })).toThrow(PrivacyError);
    expect(() => calibrateNoiseMultiplier({ targetEpsilon: 1, delta: 1e-5, samplingRate: 0.1, rounds: 1.5 })).toThrow(PrivacyError);
  });
});
