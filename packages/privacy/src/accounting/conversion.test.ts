import { describe, expect, it } from 'vitest';
import { PrivacyError } from '../errors.js';
import { rdpToEpsilon } from './conversion.js';
import { computeRdp } from './sampled-gaussian.js';

describe('rdpToEpsilon (dp_accounting compute_epsilon)', () => {
  it('pure DP: constant RDP 1.1 over orders 2..32 gives 1.32783806176 at order 32', () => {
    // dp_accounting rdp_privacy_accountant_test.py test_compute_epsilon_delta_pure_dp
    // ("Compare with epsilon computed by hand").
    const orders = Array.from({ length: 31 }, (_, i) => i + 2);
    const r = rdpToEpsilon({ rdp: orders.map(() => 1.1), orders, delta: 1e-5 });
    expect(r.epsilon).toBeCloseTo(1.32783806176, 10);
    expect(r.order).toBe(32);
  });

  it('Gaussian (q=1) with z = 4.530877117 is (1, 1e-6)-DP on a fine order grid', () => {
    // dp_accounting test_compute_epsilon_delta_gaussian: orders 0.001*i,
    // i in [1000, 100000) ("noise multiplier is chosen to obtain exactly (1,1e-6)-DP").
    const orders = Array.from({ length: 99000 }, (_, i) => 0.001 * (i + 1000)).filter((a) => a > 1);
    const rdp = computeRdp({ samplingRate: 1, noiseMultiplier: 4.530877117, orders });
    expect(rdpToEpsilon({ rdp, orders, delta: 1e-6 }).epsilon).toBeCloseTo(1, 7);
  });

  it('handles the edge cases like dp_accounting', () => {
    // Tiny RDP: delta^2 + expm1(-rdp) > 0 -> epsilon 0 (KL bound).
    expect(rdpToEpsilon({ rdp: [1e-12], orders: [2], delta: 1e-5 }).epsilon).toBe(0);
    // Negative (round-off) RDP -> 0.
    expect(rdpToEpsilon({ rdp: [-1e-18], orders: [3], delta: 1e-5 }).epsilon).toBe(0);
    // Orders <= 1.01 cannot be used.
    expect(rdpToEpsilon({ rdp: [0.5], orders: [1.005], delta: 1e-5 }).epsilon).toBe(Infinity);
    // Infinite RDP -> infinite epsilon.
    expect(rdpToEpsilon({ rdp: [Infinity, Infinity], orders: [2, 3], delta: 1e-5 }).epsilon).toBe(Infinity);
  });

  it('rejects bad input with invalid_argument', () => {
    expect(() => rdpToEpsilon({ rdp: [1], orders: [2, 3], delta: 1e-5 })).toThrow(PrivacyError);
    for (const delta of [0, 1, -1, Number.NaN]) {
      try {
        rdpToEpsilon({ rdp: [1], orders: [2], delta });
        expect.unreachable();
      } catch (error) {
        expect(PrivacyError.from(error).code).toBe('invalid_argument');
      }
    }
  });
});
