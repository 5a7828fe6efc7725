import { describe, expect, it } from 'vitest';
import { createSeededRng, createSequenceRng } from '@veil/privacy';
import { createFedAvg, createFedAvgAggregator, federatedAverage, sampleWithoutReplacement, selectionSize } from './fedavg.js';

const seq = (...values: number[]) => Float32Array.from(values);

describe('FedAvg (McMahan et al. 2017, Algorithm 1)', () => {
  it('moves the model by the example-weighted mean of the updates', () => {
    // Hand-computed: n = 1 + 3 = 4; mean delta = (1*[4, -4] + 3*[0, 8]) / 4 = [1, 5].
    const next = federatedAverage(seq(10, 20), [
      { clientId: 'a', exampleCount: 1, update: seq(4, -4) },
      { clientId: 'b', exampleCount: 3, update: seq(0, 8) },
    ]);
    expect(Array.from(next!)).toEqual([11, 25]);
  });

  it('equals the weighted average of the local models', () => {
    const global = seq(0.5, -1, 2);
    const locals = [seq(1, 1, 1), seq(-2, 0.25, 4), seq(0, 0, 0)];
    const counts = [10, 30, 60];
    const results = locals.map((w, k) => ({
      clientId: String(k),
      exampleCount: counts[k]!,
      update: w.map((x, i) => x - global[i]!),
    }));
    const next = federatedAverage(global, results)!;
    for (let i = 0; i < global.length; i++) {
      const expected = locals.reduce((acc, w, k) => acc + (counts[k]! / 100) * w[i]!, 0);
      expect(next[i]).toBeCloseTo(expected, 6);
    }
  });

  it('keeps the model when no result arrived (Flower: "no result keeps the model")', () => {
    expect(federatedAverage(seq(1, 2), [])).toBeNull();
  });

  it('is independent of arrival order', () => {
    const results = [
      { clientId: 'a', exampleCount: 7, update: seq(0.1, 0.2, 0.3) },
      { clientId: 'b', exampleCount: 2, update: seq(-1, 5, 0.5) },
      { clientId: 'c', exampleCount: 11, update: seq(3, -3, 1e-3) },
    ];
    const forward = federatedAverage(seq(0, 0, 0), results)!;
    const backward = federatedAverage(seq(0, 0, 0), [...results].reverse())!;
    expect(Array.from(forward)).toEqual(Array.from(backward));
  });

  it('rejects updates of the wrong length or weight', () => {
    const agg = createFedAvgAggregator(3);
    expect(() => agg.add({ clientId: 'a', exampleCount: 1, update: seq(1, 2) })).toThrow(/2 values, expected 3/);
    expect(() => agg.add({ clientId: 'a', exampleCount: 0, update: seq(1, 2, 3) })).toThrow(/positive integer/);
    expect(agg.count).toBe(0);
  });
});

describe('client selection', () => {
  const rng = (values: number[]) => createSequenceRng(values);

  it('selects a count, or a fraction of the available clients', () => {
    const available = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i', 'j'];
    expect(selectionSize({ available, selection: { kind: 'count', count: 4 } })).toBe(4);
    expect(selectionSize({ available, selection: { kind: 'count', count: 40 } })).toBe(10);
    expect(selectionSize({ available, selection: { kind: 'fraction', fraction: 0.3 } })).toBe(3);
    expect(selectionSize({ available: ['a'], selection: { kind: 'fraction', fraction: 0.1 } })).toBe(1);
  });

  it('samples distinct clients', () => {
    const picked = sampleWithoutReplacement(['a', 'b', 'c', 'd'], 3, rng([0.99, 0.5, 0]));
    expect(new Set(picked).size).toBe(3);
  });

  it('samples uniformly (each of 5 clients picked ~ 2/5 of the time when choosing 2)', () => {
    const lcg = createSeededRng(12345);
    const counts = new Map<string, number>();
    const trials = 20_000;
    for (let t = 0; t < trials; t++) {
      for (const id of sampleWithoutReplacement(['a', 'b', 'c', 'd', 'e'], 2, lcg)) counts.set(id, (counts.get(id) ?? 0) + 1);
    }
    // Binomial(20000, 0.4): sd = 69; allow 5 sd.
    for (const id of ['a', 'b', 'c', 'd', 'e']) expect(Math.abs(counts.get(id)! - 8000)).toBeLessThan(350);
  });

  it('configureFit selects the count and sends no extra config (training settings travel with the round)', () => {
    const strategy = createFedAvg();
    const fit = strategy.configureFit({
      round: 1,
      available: ['a', 'b', 'c'],
      selection: { kind: 'count', count: 2 },
      minClients: 1,
      training: { epochs: 2, batchSize: 16, learningRate: 0.1 },
      state: null,
      rng: rng([0.3]),
    });
    expect(fit.kind).toBe('fit');
    if (fit.kind !== 'fit') return;
    expect(fit.clientIds).toHaveLength(2);
    expect(new Set(fit.clientIds).size).toBe(2);
    expect(fit.config).toEqual({});
  });

  it('configureFit waits while fewer than minClients can be selected', () => {
    const fit = createFedAvg().configureFit({
      round: 1,
      available: ['a', 'b'],
      selection: { kind: 'count', count: 5 },
      minClients: 3,
      training: { epochs: 1, batchSize: 1, learningRate: 0.1 },
      state: null,
      rng: rng([0.3]),
    });
    expect(fit).toEqual({ kind: 'wait', reason: '2 clients could be selected, the round needs 3' });
  });
});
