import { describe, expect, it } from 'vitest';
import {
  bulyan, coordinateMedian, createUpdateBuffer, krumScores, multiKrum, multiKrumSelect, trimmedMean,
} from './robust.js';

const f32 = (...values: number[]) => Float32Array.from(values);
const scalars = (...values: number[]) => values.map((v) => f32(v));

function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

/** Krum score by its definition, brute force: the smallest sum of squared distances to any n-f-2 other updates. */
function bruteForceKrumScore(updates: number[][], i: number, f: number): number {
  const others = updates.map((_, k) => k).filter((k) => k !== i);
  const size = updates.length - f - 2;
  const dist = (a: number[], b: number[]) => a.reduce((s, x, j) => s + (x - b[j]!) ** 2, 0);
  let best = Infinity;
  const choose = (start: number, picked: number[]) => {
    if (picked.length === size) {
      best = Math.min(best, picked.reduce((s, k) => s + dist(updates[i]!, updates[k]!), 0));
      return;
    }
    for (let j = start; j < others.length; j++) choose(j + 1, [...picked, others[j]!]);
  };
  choose(0, []);
  return best;
}

describe('coordinate-wise median and trimmed mean (Yin et al. 2018)', () => {
  it('median by hand, odd and even counts', () => {
    expect(Array.from(coordinateMedian([f32(1, 9), f32(5, -1), f32(2, 3)]))).toEqual([2, 3]);
    expect(Array.from(coordinateMedian(scalars(1, 2, 10, 4)))).toEqual([3]);
  });

  it('median ignores a far outlier that moves the mean', () => {
    const updates = [...scalars(0.1, 0.2, 0.3, 0.15), f32(1e6)];
    expect(coordinateMedian(updates)[0]).toBeCloseTo(0.2, 6);
  });

  it('trimmed mean by hand: β = 0.2 of 5 values cuts one at each end', () => {
    expect(Array.from(trimmedMean(scalars(100, 1, 3, 2, 4), 0.2))).toEqual([3]);
    // β = 0.1 of 5 cuts floor(0.5) = 0: the plain mean.
    expect(trimmedMean(scalars(100, 1, 3, 2, 4), 0.1)[0]).toBeCloseTo(22, 5);
  });

  it('trimmed mean matches sort-and-slice per coordinate on random data', () => {
    const rand = lcg(3);
    const updates = Array.from({ length: 9 }, () => Float32Array.from({ length: 50 }, rand));
    const result = trimmedMean(updates, 0.25);
    for (let i = 0; i < 50; i++) {
      const column = updates.map((u) => u[i]!).sort((a, b) => a - b).slice(2, 7);
      expect(result[i]).toBeCloseTo(column.reduce((a, b) => a + b, 0) / 5, 6);
    }
    expect(() => trimmedMean(updates, 0.5)).toThrow(/beta/);
  });
});

describe('Krum and Multi-Krum (Blanchard et al. 2017)', () => {
  it('scores by hand and picks the most central update', () => {
    // f = 1, n = 5: each score sums the 2 nearest squared distances.
    // 0: .01 + .04 = .05; 0.1: .01 + .01; 0.2: .01 + .01; 0.3: .01 + .04; 10: 9.7² + 9.8² = 190.13.
    const updates = scalars(0, 0.1, 0.2, 0.3, 10);
    const scores = krumScores(updates, 1);
    const expected = [0.05, 0.02, 0.02, 0.05, 190.13];
    expected.forEach((s, k) => expect(scores[k]).toBeCloseTo(s, 5));
    expect(multiKrumSelect(updates, 1, 1)).toEqual([1]);
    expect(multiKrum(updates, 1, 1)[0]).toBeCloseTo(0.1, 7);
    expect(multiKrum(updates, 1, 2)[0]).toBeCloseTo(0.15, 7);
  });

  it('scores match the brute-force definition on random vectors with attackers', () => {
    const rand = lcg(8);
    const honest = Array.from({ length: 7 }, () => Array.from({ length: 20 }, () => rand() * 0.1));
    const attackers = Array.from({ length: 2 }, () => Array.from({ length: 20 }, () => 3 + rand()));
    const all = [...honest, ...attackers].map((u) => Array.from(Float32Array.from(u), Number));
    const updates = all.map((u) => Float32Array.from(u));
    const scores = krumScores(updates, 2);
    all.forEach((_, k) => expect(scores[k]).toBeCloseTo(bruteForceKrumScore(all, k, 2), 6));
    const chosen = multiKrumSelect(updates, 2, 4);
    expect(chosen.every((k) => k < 7)).toBe(true);
  });

  it('needs n >= 2f + 3', () => {
    expect(() => krumScores(scalars(1, 2, 3, 4), 1)).toThrow(/at least 5/);
    expect(() => multiKrumSelect(scalars(1, 2, 3, 4, 5), 1, 6)).toThrow(/selected/);
  });
});

/** Bulyan by the paper's description over plain arrays, with brute-force Krum. */
function referenceBulyan(updates: number[][], f: number): number[] {
  const theta = updates.length - 2 * f;
  const beta = theta - 2 * f;
  let remaining = updates.slice();
  const chosen: number[][] = [];
  while (chosen.length < theta) {
    const size = Math.max(1, remaining.length - f - 2);
    let best = 0;
    let bestScore = Infinity;
    remaining.forEach((u, i) => {
      const d = remaining.filter((_, k) => k !== i).map((v) => v.reduce((s, x, j) => s + (x - u[j]!) ** 2, 0)).sort((a, b) => a - b);
      const score = remaining.length === 1 ? 0 : d.slice(0, size).reduce((a, b) => a + b, 0);
      if (score < bestScore) [best, bestScore] = [i, score];
    });
    chosen.push(remaining[best]!);
    remaining = remaining.filter((_, k) => k !== best);
  }
  return updates[0]!.map((_, j) => {
    const column = chosen.map((u) => u[j]!);
    const sorted = column.slice().sort((a, b) => a - b);
    const median = theta % 2 ? sorted[(theta - 1) / 2]! : (sorted[theta / 2 - 1]! + sorted[theta / 2]!) / 2;
    const closest = column.slice().sort((a, b) => Math.abs(a - median) - Math.abs(b - median)).slice(0, beta);
    return closest.reduce((a, b) => a + b, 0) / beta;
  });
}

describe('Bulyan (El Mhamdi et al. 2018)', () => {
  it('by hand: f = 1, n = 7 drops both attackers, averages the 3 values nearest the median', () => {
    // θ = 5 chosen by Krum: 0, 0.1, 0.2, 0.3, 0.4; median 0.2; β = 3 nearest: 0.1, 0.2, 0.3 → 0.2.
    expect(bulyan(scalars(0, 0.1, 50, 0.2, 0.3, -50, 0.4), 1)[0]).toBeCloseTo(0.2, 6);
  });

  it('matches the reference on random vectors with attackers', () => {
    const rand = lcg(21);
    const honest = Array.from({ length: 9 }, () => Array.from({ length: 15 }, () => rand() * 0.1));
    const attackers = Array.from({ length: 2 }, () => Array.from({ length: 15 }, () => rand() * 4));
    const all = [...attackers, ...honest].map((u) => Array.from(Float32Array.from(u), Number));
    const result = bulyan(all.map((u) => Float32Array.from(u)), 2);
    const expected = referenceBulyan(all, 2);
    expected.forEach((x, j) => expect(result[j]).toBeCloseTo(x, 6));
    for (const x of result) expect(Math.abs(x)).toBeLessThan(0.06);
  });

  it('needs n >= 4f + 3', () => {
    expect(() => bulyan(scalars(1, 2, 3, 4, 5, 6), 1)).toThrow(/at least 7/);
  });
});

describe('update buffer', () => {
  it('copies updates and refuses to grow past its byte bound', () => {
    const buffer = createUpdateBuffer({ parameterCount: 4, maxBytes: 40 });
    const u = f32(1, 2, 3, 4);
    buffer.add(u);
    u[0] = 99;
    buffer.add(u);
    expect(buffer.updates[0]![0]).toBe(1);
    expect(buffer.bytes).toBe(32);
    expect(() => buffer.add(u)).toThrow(/at most 2 updates/);
    expect(() => buffer.add(f32(1))).toThrow(/expected 4/);
  });
});
