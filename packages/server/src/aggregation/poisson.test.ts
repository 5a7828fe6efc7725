import { describe, expect, it } from 'vitest';
import { computeEpsilon, createSeededRng } from '@veil/privacy';
import { createFedAvg, poissonSample } from './fedavg.js';
import { withPoissonSampling } from './round-strategy.js';

describe("Poisson selection matches the accountant's sampling assumption", () => {
  const clients = Array.from({ length: 40 }, (_, i) => `c${i}`);
  const q = 0.2;
  const trials = 20_000;

  it('includes every client independently with probability q', () => {
    const rng = createSeededRng(99);
    const strategy = withPoissonSampling(createFedAvg());
    const counts = new Map<string, number>();
    let pair = 0; // c0 and c1 together
    const sizes: number[] = [];
    for (let t = 0; t < trials; t++) {
      const plan = strategy.configureFit({
        round: t,
        available: clients,
        selection: { kind: 'poisson', samplingRate: q, maxCount: 1000 },
        minClients: 0,
        training: { epochs: 1, batchSize: 1, learningRate: 0.1 },
        state: null,
        rng,
      });
      if (plan.kind !== 'fit') throw new Error(`unexpected plan ${plan.kind}`);
      const { clientIds } = plan;
      for (const id of clientIds) counts.set(id, (counts.get(id) ?? 0) + 1);
      if (clientIds.includes('c0') && clientIds.includes('c1')) pair++;
      sizes.push(clientIds.length);
    }
    // Marginal: Binomial(20000, 0.2): sd = 56.6; 5 sd.
    for (const id of clients) expect(Math.abs(counts.get(id)! - trials * q)).toBeLessThan(5 * Math.sqrt(trials * q * (1 - q)));
    // Independence: P(c0 and c1) = q^2 = 0.04; sd = 27.7; 5 sd.
    expect(Math.abs(pair - trials * q * q)).toBeLessThan(5 * Math.sqrt(trials * q * q * (1 - q * q)));
    // Sample size ~ Binomial(40, 0.2): mean 8, variance 6.4 (a fixed-size sampler would have variance 0).
    const mean = sizes.reduce((a, b) => a + b, 0) / trials;
    const variance = sizes.reduce((a, b) => a + (b - mean) ** 2, 0) / trials;
    expect(mean).toBeCloseTo(8, 1);
    expect(variance).toBeGreaterThan(5.8);
    expect(variance).toBeLessThan(7.0);
  });

  it('the accountant is the Poisson-subsampled one: q = 1 gives the plain Gaussian bound alpha / (2 z^2)', () => {
    // With q = 1 Poisson sampling takes everyone, and the RDP is alpha/(2 z^2) (Mironov 2017, Prop. 3).
    expect(poissonSample(clients, 1, createSeededRng(1))).toEqual(clients);
    const { epsilon, order } = computeEpsilon({ samplingRate: 1, noiseMultiplier: 2, rounds: 1, delta: 1e-5, orders: [8] });
    const rdp = 8 / (2 * 4);
    const expected = rdp + Math.log1p(-1 / 8) - (Math.log(1e-5) + Math.log(8)) / 7;
    expect(order).toBe(8);
    expect(epsilon).toBeCloseTo(expected, 10);
  });
});
