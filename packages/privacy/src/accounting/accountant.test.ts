import { describe, expect, it } from 'vitest';
import { PrivacyError } from '../errors.js';
import { createSeededRng } from '../rng.js';
import { computeEpsilon, createRdpAccountant } from './accountant.js';
import { rdpToEpsilon } from './conversion.js';
import { DEFAULT_RDP_ORDERS } from './orders.js';
import { computeRdp } from './sampled-gaussian.js';

describe('createRdpAccountant', () => {
  it('composes heterogeneous rounds additively per order', () => {
    const acc = createRdpAccountant();
    acc.compose({ samplingRate: 0.01, noiseMultiplier: 1.1, count: 100 });
    acc.compose({ samplingRate: 0.05, noiseMultiplier: 2 });
    acc.compose({ samplingRate: 0.01, noiseMultiplier: 1.1, count: 20 });
    const a = computeRdp({ samplingRate: 0.01, noiseMultiplier: 1.1, steps: 120 });
    const b = computeRdp({ samplingRate: 0.05, noiseMultiplier: 2, steps: 1 });
    const rdp = acc.getRdp();
    rdp.forEach((r, k) => {
      const expected = (a[k] as number) + (b[k] as number);
      expect(Math.abs(r - expected)).toBeLessThanOrEqual(1e-12 * expected);
    });
    expect(acc.rounds).toBe(121);
    expect(acc.getEpsilon(1e-5)).toEqual(rdpToEpsilon({ rdp, orders: DEFAULT_RDP_ORDERS, delta: 1e-5 }));
  });

  it('matches computeEpsilon for homogeneous rounds', () => {
    const acc = createRdpAccountant();
    for (let i = 0; i < 500; i++) acc.compose({ samplingRate: 0.02, noiseMultiplier: 1.2 });
    const direct = computeEpsilon({ samplingRate: 0.02, noiseMultiplier: 1.2, rounds: 500, delta: 1e-6 });
    expect(acc.getEpsilon(1e-6).epsilon).toBeCloseTo(direct.epsilon, 9);
    expect(acc.getEpsilon(1e-6).order).toBe(direct.order);
  });

  it('epsilonIfComposed previews without mutating', () => {
    const acc = createRdpAccountant({ events: [{ samplingRate: 0.1, noiseMultiplier: 1, count: 10 }] });
    const before = acc.getEpsilon(1e-5);
    const preview = acc.epsilonIfComposed({ samplingRate: 0.1, noiseMultiplier: 1 }, 1e-5);
    expect(acc.getEpsilon(1e-5)).toEqual(before);
    expect(acc.rounds).toBe(10);
    acc.compose({ samplingRate: 0.1, noiseMultiplier: 1 });
    expect(acc.getEpsilon(1e-5)).toEqual(preview);
  });

  it('composeWithinBudget refuses a round that would exceed the cap and leaves state unchanged', () => {
    const acc = createRdpAccountant();
    const budget = { epsilonCap: 1, delta: 1e-5 };
    let accepted = 0;
    for (;;) {
      try {
        acc.composeWithinBudget({ samplingRate: 0.05, noiseMultiplier: 1.5 }, budget);
        accepted++;
      } catch (error) {
        expect(PrivacyError.from(error).code).toBe('budget_exhausted');
        break;
      }
    }
    expect(acc.rounds).toBe(accepted);
    expect(acc.getEpsilon(1e-5).epsilon).toBeLessThanOrEqual(1);
    expect(acc.epsilonIfComposed({ samplingRate: 0.05, noiseMultiplier: 1.5 }, 1e-5).epsilon).toBeGreaterThan(1);
  });

  it('property: a budget guard never lets epsilon exceed the cap (seeded random settings)', () => {
    const rng = createSeededRng(20240611);
    for (let trial = 0; trial < 8; trial++) {
      const cap = 0.5 + 4 * rng.nextDouble();
      const delta = rng.nextDouble() < 0.5 ? 1e-5 : 1e-6;
      const acc = createRdpAccountant();
      for (let round = 0; round < 60; round++) {
        const event = {
          samplingRate: [0.001, 0.01, 0.1, 0.5, 1][Math.floor(rng.nextDouble() * 5)] as number,
          noiseMultiplier: 0.5 + 3.5 * rng.nextDouble(),
        };
        const preview = acc.epsilonIfComposed(event, delta);
        if (preview.epsilon <= cap) {
          acc.compose(event);
        } else {
          expect(() => acc.composeWithinBudget(event, { epsilonCap: cap, delta })).toThrow(PrivacyError);
        }
        expect(acc.getEpsilon(delta).epsilon).toBeLessThanOrEqual(cap);
      }
    }
  });

  it('accepts RDP-vector events and validates their length', () => {
    const acc = createRdpAccountant({ orders: [2, 4] });
    acc.compose({ kind: 'rdp', rdp: [0.1, 0.2], count: 2 });
    expect(Array.from(acc.getRdp())).toEqual([0.2, 0.4]);
    expect(() => acc.compose({ kind: 'rdp', rdp: [0.1] })).toThrow(PrivacyError);
  });

  it('epsilon is monotone: decreasing in z, increasing in q and T', () => {
    const delta = 1e-5;
    const eps = (q: number, z: number, t: number) =>
      computeEpsilon({ samplingRate: q, noiseMultiplier: z, rounds: t, delta }).epsilon;
    const zs = [0.5, 0.6, 0.8, 1, 1.3, 1.7, 2.2, 3, 4];
    const qs = [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 0.6, 1];
    const ts = [1, 3, 10, 100, 1000, 10000];
    for (let i = 1; i < zs.length; i++) expect(eps(0.01, zs[i] as number, 1000)).toBeLessThan(eps(0.01, zs[i - 1] as number, 1000));
    for (let i = 1; i < qs.length; i++) expect(eps(qs[i] as number, 1.1, 100)).toBeGreaterThan(eps(qs[i - 1] as number, 1.1, 100));
    for (let i = 1; i < ts.length; i++) expect(eps(0.05, 1.1, ts[i] as number)).toBeGreaterThan(eps(0.05, 1.1, ts[i - 1] as number));
  });

  it('caches per-(q, z) vectors: 10 000 preview calls are fast', () => {
    const acc = createRdpAccountant();
    const start = performance.now();
    for (let i = 0; i < 10_000; i++) {
      acc.epsilonIfComposed({ samplingRate: 0.01, noiseMultiplier: 1.1 }, 1e-5);
      acc.compose({ samplingRate: 0.01, noiseMultiplier: 1.1 });
    }
    expect(performance.now() - start).toBeLessThan(5_000);
    expect(acc.getEpsilon(1e-5).epsilon).toBeCloseTo(
      computeEpsilon({ samplingRate: 0.01, noiseMultiplier: 1.1, rounds: 10_000, delta: 1e-5 }).epsilon,
      6,
    );
  });
});
