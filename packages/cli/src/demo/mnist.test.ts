import { describe, expect, it } from 'vitest';
import { labelsOf } from './partition.js';
import { loadMnist } from './mnist.js';

describe('loadMnist', () => {
  it('returns the same disjoint 8,000/2,000 split on every call, one-hot labels and pixels in [0, 1]', () => {
    const first = loadMnist();
    const second = loadMnist();
    expect(first.train.count).toBe(8000);
    expect(first.test.count).toBe(2000);
    expect(second.train.xs).toEqual(first.train.xs);
    expect(second.test.ys).toEqual(first.test.ys);

    for (const data of [first.train, first.test]) {
      expect(data.inputShape).toEqual([784]);
      expect(data.numClasses).toBe(10);
      expect(data.xs).toHaveLength(data.count * 784);
      expect(data.ys).toHaveLength(data.count * 10);
      for (let i = 0; i < data.count; i++) {
        const row = data.ys.subarray(i * 10, (i + 1) * 10);
        expect(row.filter((v) => v === 1)).toHaveLength(1);
        expect(row.filter((v) => v === 0)).toHaveLength(9);
      }
      let min = Infinity;
      let max = -Infinity;
      for (const v of data.xs) {
        if (v < min) min = v;
        if (v > max) max = v;
      }
      expect(min).toBe(0);
      expect(max).toBeLessThanOrEqual(1);
      // Shuffled: every class present in roughly its MNIST share.
      const counts = new Array<number>(10).fill(0);
      for (const label of labelsOf(data)) counts[label]!++;
      for (const count of counts) expect(count / data.count).toBeGreaterThan(0.06);
    }

    // Train and test share no digit image.
    const key = (xs: Float32Array, i: number) => xs.subarray(i * 784, (i + 1) * 784).join(',');
    const trainImages = new Set(Array.from({ length: first.train.count }, (_, i) => key(first.train.xs, i)));
    const overlap = Array.from({ length: first.test.count }, (_, i) => key(first.test.xs, i)).filter((k) => trainImages.has(k));
    expect(overlap.length).toBeLessThan(5); // the source set may hold a few duplicate images
  });

  it('honours counts and seed, and refuses more digits than ship in the package', () => {
    const small = loadMnist({ trainCount: 100, testCount: 50 });
    expect(small.train.count).toBe(100);
    expect(small.test.count).toBe(50);
    expect(small.train.xs).toEqual(loadMnist().train.xs.subarray(0, 100 * 784));
    expect(loadMnist({ trainCount: 100, testCount: 50, seed: 1 }).train.xs).not.toEqual(small.train.xs);
    expect(() => loadMnist({ trainCount: 9000, testCount: 2000 })).toThrow(/exceeds the 10000 digits/);
  });
});
