import { describe, expect, it } from 'vitest';
import type { LocalDataset } from '@veil/client-sdk';
import { createSeededRng, labelsOf, partitionDirichlet, partitionIid, sampleDirichlet, sampleGamma } from './partition.js';

/** `perClass` examples of each of 10 classes; input = [example index, label]. */
function labelled(perClass: number): LocalDataset {
  const count = perClass * 10;
  const xs = new Float32Array(count * 2);
  const ys = new Float32Array(count * 10);
  for (let i = 0; i < count; i++) {
    xs[i * 2] = i;
    xs[i * 2 + 1] = i % 10;
    ys[i * 10 + (i % 10)] = 1;
  }
  return { xs, ys, count, inputShape: [2], numClasses: 10 };
}

function exampleIds(shares: LocalDataset[]): number[] {
  return shares.flatMap((share) => Array.from({ length: share.count }, (_, i) => share.xs[i * 2]!));
}

function labelCounts(share: LocalDataset): number[] {
  const counts = new Array<number>(share.numClasses).fill(0);
  for (const label of labelsOf(share)) counts[label]!++;
  return counts;
}

describe('createSeededRng', () => {
  it('is deterministic per seed and uniform on [0, 1)', () => {
    const a = createSeededRng(5);
    const b = createSeededRng(5);
    const values = Array.from({ length: 10_000 }, () => a.nextDouble());
    expect(values.slice(0, 5)).toEqual(Array.from({ length: 5 }, () => b.nextDouble()));
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    expect(values.reduce((s, v) => s + v, 0) / values.length).toBeCloseTo(0.5, 1);
    expect(createSeededRng(6).nextDouble()).not.toBe(createSeededRng(5).nextDouble());
  });

  it('drives gamma and Dirichlet samplers with the right moments', () => {
    const rng = createSeededRng(1);
    for (const shape of [0.3, 1, 4]) {
      const draws = Array.from({ length: 20_000 }, () => sampleGamma(shape, rng));
      const mean = draws.reduce((s, v) => s + v, 0) / draws.length;
      expect(mean).toBeGreaterThan(shape * 0.95); // E[Gamma(k, 1)] = k
      expect(mean).toBeLessThan(shape * 1.05);
    }
    const p = sampleDirichlet(0.5, 10, rng);
    expect(p.reduce((s, v) => s + v, 0)).toBeCloseTo(1, 10);
    expect(sampleDirichlet(1e-4, 10, rng).reduce((s, v) => s + v, 0)).toBeCloseTo(1, 10);
  });
});

describe('partitionIid', () => {
  it('deals every example exactly once in balanced shares', () => {
    const data = labelled(80);
    const shares = partitionIid(data, 10, createSeededRng(1));
    expect(shares.map((s) => s.count)).toEqual(new Array(10).fill(80));
    expect(exampleIds(shares).sort((a, b) => a - b)).toEqual(Array.from({ length: 800 }, (_, i) => i));
    // Labels travel with their inputs.
    for (const share of shares) {
      labelsOf(share).forEach((label, i) => expect(share.xs[i * 2 + 1]).toBe(label));
    }
    // Every share sees every class, none dominates.
    for (const share of shares) expect(Math.max(...labelCounts(share)) / share.count).toBeLessThan(0.3);
    expect(partitionIid(labelled(3), 7, createSeededRng(1)).map((s) => s.count).sort()).toEqual([4, 4, 4, 4, 5, 5, 4].sort());
  });
});

describe('partitionDirichlet', () => {
  it('with small alpha gives each client few dominant labels, covers the data and respects a minimum share', () => {
    const data = labelled(800);
    const shares = partitionDirichlet(data, 10, 0.1, createSeededRng(3));
    expect(shares.reduce((s, share) => s + share.count, 0)).toBe(8000);
    expect(new Set(exampleIds(shares)).size).toBe(8000);
    expect(Math.min(...shares.map((s) => s.count))).toBeGreaterThanOrEqual(10);
    // Top-two-label share of each client: about 0.2 for IID data, mostly above 0.75 here.
    const topTwoShare = shares
      .map((share) => {
        const counts = labelCounts(share).sort((a, b) => b - a);
        return (counts[0]! + counts[1]!) / share.count;
      })
      .sort((a, b) => a - b);
    expect(topTwoShare[0]).toBeGreaterThan(0.5);
    expect(topTwoShare[5]).toBeGreaterThan(0.75);
  });

  it('is deterministic for a seed and differs across seeds', () => {
    const data = labelled(100);
    const a = partitionDirichlet(data, 5, 0.5, createSeededRng(9));
    const b = partitionDirichlet(data, 5, 0.5, createSeededRng(9));
    const c = partitionDirichlet(data, 5, 0.5, createSeededRng(10));
    expect(exampleIds(b)).toEqual(exampleIds(a));
    expect(exampleIds(c)).not.toEqual(exampleIds(a));
  });

  it('tops up tiny shares when alpha is extreme', () => {
    const shares = partitionDirichlet(labelled(20), 20, 0.001, createSeededRng(1), { minExamplesPerClient: 3 });
    expect(Math.min(...shares.map((s) => s.count))).toBeGreaterThanOrEqual(3);
    expect(shares.reduce((s, share) => s + share.count, 0)).toBe(200);
  });

  it('rejects impossible arguments', () => {
    expect(() => partitionDirichlet(labelled(1), 5, 0, createSeededRng(1))).toThrow(/alpha/);
    expect(() => partitionIid(labelled(1), 11, createSeededRng(1))).toThrow(/cannot split 10 examples among 11/);
  });
});
