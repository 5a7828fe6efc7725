import { describe, expect, it } from 'vitest';
import { qFedAvg } from './qfedavg.js';

const f32 = (...values: number[]) => Float32Array.from(values);

/**
 * Reference written like Flower's qfedavg.py (weights_before, grads = (w - w_k) / lr,
 * deltas = F^q · grads, hs = q F^(q-1) ‖grads‖² + F^q / lr, w - Σ deltas / Σ hs),
 * but with each device's own loss, over plain arrays.
 */
function reference(w: number[], locals: { weights: number[]; loss: number }[], q: number, lr: number): number[] {
  const deltas: number[][] = [];
  const hs: number[] = [];
  for (const local of locals) {
    const loss = local.loss + 1e-10;
    const grads = w.map((x, i) => (x - local.weights[i]!) / lr);
    deltas.push(grads.map((g) => loss ** q * g));
    hs.push(q * loss ** (q - 1) * grads.reduce((a, g) => a + g * g, 0) + (1 / lr) * loss ** q);
  }
  const denominator = hs.reduce((a, b) => a + b, 0);
  return w.map((x, i) => x - deltas.reduce((a, d) => a + d[i]! / denominator, 0));
}

describe('q-FedAvg (Li et al. 2020, Algorithm 2)', () => {
  it('takes a hand-computed step (q = 1, L = 10)', () => {
    // A: Δ = 0.1, F = 2 → Δw = -1, ‖Δw‖² = 1, h = 1·1 + 10·2 = 21, F·Δw = -2.
    // B: Δ = -0.2, F = 0.5 → Δw = 2, ‖Δw‖² = 4, h = 1·4 + 10·0.5 = 9, F·Δw = 1.
    // w' = w - (-2 + 1) / (21 + 9) = w + 1/30.
    const next = qFedAvg(f32(1), [{ update: f32(0.1), loss: 2 }, { update: f32(-0.2), loss: 0.5 }], { q: 1, learningRate: 0.1 });
    expect(next![0]).toBeCloseTo(1 + 1 / 30, 6);
  });

  it('is the unweighted mean of the updates when q = 0', () => {
    const next = qFedAvg(f32(0, 10), [
      { update: f32(1, 2), loss: 5 },
      { update: f32(3, -2), loss: 0.1 },
      { update: f32(-1, 3), loss: 1 },
    ], { q: 0, learningRate: 0.05 });
    expect(next![0]).toBeCloseTo(1, 6);
    expect(next![1]).toBeCloseTo(11, 5);
  });

  it('gives a device with a higher loss more weight as q grows', () => {
    const results = [{ update: f32(1), loss: 3 }, { update: f32(-1), loss: 1 }];
    const q0 = qFedAvg(f32(0), results, { q: 0, learningRate: 0.1 })![0]!;
    const q2 = qFedAvg(f32(0), results, { q: 2, learningRate: 0.1 })![0]!;
    expect(q0).toBeCloseTo(0, 6);
    // q = 2: A has F^q = 9, h = 2·3·100 + 10·9 = 690; B has F^q = 1, h = 2·1·100 + 10 = 210;
    // Σ F^q Δw = 9·(-10) + 1·10 = -80, so w' = 80 / 900: towards A's update.
    expect(q2).toBeCloseTo(80 / 900, 6);
  });

  it('matches the Flower-shaped reference on random vectors', () => {
    let seed = 5;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32) - 0.5;
    const size = 123;
    const w = Array.from({ length: size }, () => Math.fround(rand()));
    const locals = Array.from({ length: 6 }, (_, k) => ({
      weights: w.map((x) => Math.fround(x + rand() * 0.05)),
      loss: 0.2 + k * 0.4,
    }));
    for (const q of [0.5, 1, 5]) {
      const next = qFedAvg(
        Float32Array.from(w),
        locals.map((l) => ({ update: Float32Array.from(l.weights.map((x, i) => x - w[i]!)), loss: l.loss })),
        { q, learningRate: 0.1 },
      )!;
      const expected = reference(w, locals, q, 0.1);
      for (let i = 0; i < size; i++) expect(next[i]).toBeCloseTo(expected[i]!, 5);
    }
  });

  it('keeps the model without results and rejects bad input', () => {
    expect(qFedAvg(f32(1), [], { q: 1, learningRate: 0.1 })).toBeNull();
    expect(() => qFedAvg(f32(1), [{ update: f32(1), loss: -1 }], { q: 1, learningRate: 0.1 })).toThrow(/loss/);
    expect(() => qFedAvg(f32(1), [{ update: f32(1), loss: Number.NaN }], { q: 1, learningRate: 0.1 })).toThrow(/loss/);
    expect(() => qFedAvg(f32(1), [{ update: f32(1), loss: 1 }], { q: -1, learningRate: 0.1 })).toThrow(/q must/);
    expect(() => qFedAvg(f32(1), [{ update: f32(1, 2), loss: 1 }], { q: 1, learningRate: 0.1 })).toThrow(/expected 1/);
  });
});
