import { describe, expect, it } from 'vitest';
import { computeEpsilon } from './accountant.js';
import { DEFAULT_RDP_ORDERS } from './orders.js';
import { computeRdp, logAFractional, logAInteger, sampledGaussianRdpAtOrder } from './sampled-gaussian.js';

/**
 * Independent reference: log(A_alpha) by direct numerical integration of the
 * defining integral (Mironov, Talwar & Zhang 2019, Sec. 3)
 *   A_alpha = ∫ N(x; 0, σ²) ((1 - q) + q exp((2x - 1)/(2σ²)))^alpha dx,
 * trapezoid rule in log space on a uniform grid (geometric convergence for
 * Gaussian-like integrands). Shares no code with the series.
 */
function logAByIntegration(q: number, sigma: number, alpha: number, pointsPerSigma = 64): number {
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const s2 = sigma * sigma;
  const logNorm = -0.5 * Math.log(2 * Math.PI * s2);
  const f = (x: number): number => {
    const b = logQ + (2 * x - 1) / (2 * s2);
    const hi = Math.max(log1mQ, b);
    return logNorm - (x * x) / (2 * s2) + alpha * (hi + Math.log1p(Math.exp(Math.min(log1mQ, b) - hi)));
  };
  const lo = -40 * sigma - 2;
  const h = sigma / pointsPerSigma;
  const n = Math.ceil((alpha + 40 * sigma + 2 - lo) / h);
  const values = new Float64Array(n + 1);
  let max = -Infinity;
  for (let i = 0; i <= n; i++) {
    values[i] = f(lo + i * h);
    max = Math.max(max, values[i] as number);
  }
  let sum = 0;
  for (let i = 0; i <= n; i++) sum += (i === 0 || i === n ? 0.5 : 1) * Math.exp((values[i] as number) - max);
  return max + Math.log(sum * h);
}

const rel = (a: number, b: number): number => Math.abs(a / b - 1);

describe('RDP of the sampled Gaussian mechanism', () => {
  it('matches TF Privacy compute_dp_sgd_privacy_test.py published epsilons', () => {
    // tensorflow/privacy tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py
    // (test_compute_dp_sgd_privacy) with the orders and step rule of
    // compute_dp_sgd_privacy_lib.compute_dp_sgd_privacy.
    const orders = [1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, ...Array.from({ length: 59 }, (_, i) => 5 + i), 128, 256, 512];
    const cases: [number, number, number, number, number, number, number][] = [
      // n, batch, z, epochs, delta, expected eps, expected order
      [60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19],
      [100000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 13],
      [100000000, 1024, 0.1, 10, 1e-7, 5907982.3113978775, 1.25],
    ];
    for (const [n, batch, z, epochs, delta, eps, order] of cases) {
      const r = computeEpsilon({
        samplingRate: batch / n,
        noiseMultiplier: z,
        rounds: Math.ceil((epochs * n) / batch),
        delta,
        orders,
      });
      expect(rel(r.epsilon, eps)).toBeLessThan(1e-9);
      expect(r.order).toBe(order);
    }
  });

  it('matches Opacus accountants_test.py test_rdp_accountant (7.32911117143)', () => {
    // pytorch/opacus opacus/tests/accountants_test.py: z = 1.5, q = 0.04,
    // steps = int(90 / 0.04), delta = 1e-5, RDPAccountant.DEFAULT_ALPHAS.
    const alphas = [...Array.from({ length: 99 }, (_, i) => 1 + (i + 1) / 10), ...Array.from({ length: 52 }, (_, i) => 12 + i)];
    const r = computeEpsilon({ samplingRate: 0.04, noiseMultiplier: 1.5, rounds: 2250, delta: 1e-5, orders: alphas });
    expect(rel(r.epsilon, 7.32911117143)).toBeLessThan(1e-9);
  });

  it('matches the per-order RDP of dp_accounting / TF Privacy rdp tests (q=0.01, z=2.5, 50 steps)', () => {
    // google/differential-privacy python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py
    // test_compute_rdp_poisson_sampled_gaussian (integer orders, rtol 1e-4), and
    // tensorflow/privacy .../rdp_accountant_test.py test_compute_rdp_sequence,
    // whose fractional-order values (0.00065, 0.001085 at orders 1.5, 2.5) come
    // from the signed series. Newer dp_accounting expects 6.7058e-4 at 1.5:
    // that is the unsigned (|binom|) sum, which over-states A_alpha; the
    // integration test below confirms the signed value.
    const rdp = computeRdp({ samplingRate: 0.01, noiseMultiplier: 2.5, steps: 50, orders: [1.5, 2.5, 5, 50, 100, Infinity] });
    expect(Math.abs((rdp[0] as number) - 0.00065)).toBeLessThan(1e-5);
    expect(Math.abs((rdp[1] as number) - 0.001085)).toBeLessThan(1e-5);
    expect(rel(rdp[2] as number, 2.18075656e-3)).toBeLessThan(1e-4);
    expect(rel(rdp[3] as number, 2.38460375e-2)).toBeLessThan(1e-4);
    expect(rel(rdp[4] as number, 1.67416308e2)).toBeLessThan(1e-4);
    expect(rdp[5]).toBe(Infinity);
    // The unsigned-sum value is strictly larger than the exact one.
    expect(rdp[0] as number).toBeLessThan(6.70579741e-4 * (1 - 0.02));
    expect(rel((rdp[0] as number) / 50, logAByIntegration(0.01, 2.5, 1.5) / 0.5)).toBeLessThan(1e-6);
  });

  it('fractional orders agree with numerical integration to 1e-6 relative', () => {
    // The parameter grid of dp_accounting's test_compute_log_a_equals_mp plus
    // the corners of Veil's operating range.
    const cases: [number, number, number][] = [
      [1e-5, 0.1, 256.1],
      [1e-4, 1, 1.5],
      [0.1, 100, 20.5],
      [0.999, 100, 256.1],
      [0.5, 4, 1.1],
      [0.5, 0.5, 1.5],
      [0.001, 0.5, 10.9],
      [0.01, 2.5, 2.5],
      [0.3, 1, 3.7],
      [0.9, 0.5, 5.5],
      [0.05, 0.8, 7.3],
      [0.001, 4, 1.1],
      [0.25, 1.7, 9.9],
    ];
    for (const [q, sigma, alpha] of cases) {
      const series = logAFractional(q, sigma, alpha);
      const integral = logAByIntegration(q, sigma, alpha);
      // The trapezoid result carries ~1e-16 absolute error on log A ≈ A - 1.
      expect(Math.abs(series - integral)).toBeLessThanOrEqual(1e-6 * Math.abs(integral) + 1e-14);
    }
  });

  it('integer orders agree with numerical integration', () => {
    const cases: [number, number, number][] = [
      [1e-6, 0.1, 256],
      [1e-3, 1, 2],
      [0.01, 10, 20],
      [0.99, 0.1, 256],
      [0.5, 0.5, 1024],
      [0.001, 4, 63],
    ];
    for (const [q, sigma, alpha] of cases) {
      const series = logAInteger(q, sigma, alpha);
      const integral = logAByIntegration(q, sigma, alpha);
      expect(Math.abs(series - integral)).toBeLessThanOrEqual(1e-6 * Math.abs(integral) + 1e-14);
    }
  });

  it('q = 1 is the Gaussian mechanism: alpha / (2 z^2) (Mironov 2017, Prop. 7)', () => {
    const rdp = computeRdp({ samplingRate: 1, noiseMultiplier: 1.7, steps: 3 });
    DEFAULT_RDP_ORDERS.forEach((a, k) => expect(rdp[k]).toBeCloseTo((3 * a) / (2 * 1.7 * 1.7), 12));
  });

  it('q = 1 epsilon equals the hand-computed optimum of the closed form', () => {
    // eps(α) = T α/(2z²) + log1p(-1/α) - (log δ + log α)/(α - 1), minimised
    // over the default orders by hand (independent loop).
    const z = 2;
    const T = 10;
    const delta = 1e-5;
    let best = Infinity;
    for (const a of DEFAULT_RDP_ORDERS) {
      best = Math.min(best, (T * a) / (2 * z * z) + Math.log1p(-1 / a) - (Math.log(delta) + Math.log(a)) / (a - 1));
    }
    const r = computeEpsilon({ samplingRate: 1, noiseMultiplier: z, rounds: T, delta });
    expect(r.epsilon).toBeCloseTo(best, 12);
    // The continuous optimum lies in [α*-0.1, α*+0.1] of the grid; sanity bound:
    // the classic conversion rdp + log(1/δ)/(α-1) is never better.
    const rho = T / (2 * z * z);
    const classic = rho + 2 * Math.sqrt(rho * Math.log(1 / delta));
    expect(r.epsilon).toBeLessThan(classic);
  });

  it('edge cases follow dp_accounting: q = 0 -> 0, z = 0 -> Infinity', () => {
    expect(sampledGaussianRdpAtOrder(0, 1, 2)).toBe(0);
    expect(sampledGaussianRdpAtOrder(0.1, 0, 2)).toBe(Infinity);
    expect(sampledGaussianRdpAtOrder(0.1, 1, Infinity)).toBe(Infinity);
  });

  it('is finite and stable at the extremes of the operating range', () => {
    for (const q of [1e-6, 0.001, 0.5, 0.999999, 1]) {
      for (const z of [0.5, 4]) {
        const rdp = computeRdp({ samplingRate: q, noiseMultiplier: z, steps: 10000 });
        for (const r of rdp) {
          expect(Number.isNaN(r)).toBe(false);
          expect(r).toBeGreaterThanOrEqual(0);
        }
        const eps = computeEpsilon({ samplingRate: q, noiseMultiplier: z, rounds: 10000, delta: 1e-6 });
        expect(Number.isFinite(eps.epsilon)).toBe(true);
      }
    }
  });

  it('RDP is non-decreasing in the order (a property of Rényi divergence)', () => {
    for (const [q, z] of [
      [0.01, 0.7],
      [0.3, 1.3],
      [0.001, 3],
    ] as const) {
      const rdp = computeRdp({ samplingRate: q, noiseMultiplier: z });
      for (let k = 1; k < rdp.length; k++) expect(rdp[k] as number).toBeGreaterThanOrEqual((rdp[k - 1] as number) * (1 - 1e-9));
    }
  });
});
