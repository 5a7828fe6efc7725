import { describe, expect, it } from 'vitest';
import { adaptiveStep, initialAdaptiveState, type AdaptiveOptimizerKind, type AdaptiveOptimizerState } from './adaptive-optimizers.js';
import { fedAvgMStep, type ServerMomentumState } from './server-momentum.js';

const f32 = (...values: number[]) => Float32Array.from(values);

/** A small deterministic generator for test vectors (not the production RNG). */
function lcg(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 32 - 0.5;
  };
}

describe('FedAvgM (Hsu et al. 2019)', () => {
  it('takes hand-computed steps: v1 = -Δ1, v2 = βv1 - Δ2, w -= ηv', () => {
    const options = { serverLearningRate: 0.5, momentum: 0.9 };
    // Round 1: Δ = [0.2, -0.4] → v = [-0.2, 0.4]; w = [1, 1] - 0.5 v = [1.1, 0.8].
    const first = fedAvgMStep(f32(1, 1), f32(0.2, -0.4), { velocity: null }, options);
    expect(Array.from(first.next)).toEqual(Array.from(f32(1.1, 0.8)));
    // Round 2: Δ = [0.1, 0] → v = 0.9·[-0.2, 0.4] + [-0.1, 0] = [-0.28, 0.36]; w = [1.1 + 0.14, 0.8 - 0.18].
    const second = fedAvgMStep(first.next, f32(0.1, 0), first.state, options);
    expect(second.next[0]).toBeCloseTo(1.24, 6);
    expect(second.next[1]).toBeCloseTo(0.62, 6);
    expect(second.state.velocity![0]).toBeCloseTo(-0.28, 6);
  });

  it('is FedAvg with β = 0 and η = 1', () => {
    const { next } = fedAvgMStep(f32(3, -2), f32(0.5, 0.25), { velocity: f32(7, 7) }, { serverLearningRate: 1, momentum: 0 });
    expect(Array.from(next)).toEqual([3.5, -1.75]);
  });

  it('matches a float64 reference over several rounds and does not modify its inputs', () => {
    const rand = lcg(11);
    const size = 257;
    const eta = 0.7;
    const beta = 0.8;
    let model: Float32Array = Float32Array.from({ length: size }, rand);
    let state: ServerMomentumState = { velocity: null };
    let refModel = Array.from(model, Number);
    let refVelocity: number[] | null = null;
    for (let round = 0; round < 4; round++) {
      const delta = Float32Array.from({ length: size }, () => rand() * 0.1);
      const deltaCopy = delta.slice();
      ({ next: model, state } = fedAvgMStep(model, delta, state, { serverLearningRate: eta, momentum: beta }));
      expect(delta).toEqual(deltaCopy);
      const g = Array.from(delta, (d) => -d);
      refVelocity = refVelocity === null ? g : refVelocity.map((v, i) => beta * v + g[i]!);
      refModel = refModel.map((w, i) => w - eta * refVelocity![i]!);
    }
    for (let i = 0; i < size; i++) expect(model[i]).toBeCloseTo(refModel[i]!, 5);
  });

  it('rejects bad hyper-parameters and lengths', () => {
    expect(() => fedAvgMStep(f32(1), f32(1), { velocity: null }, { serverLearningRate: 0, momentum: 0 })).toThrow(/serverLearningRate/);
    expect(() => fedAvgMStep(f32(1), f32(1), { velocity: null }, { serverLearningRate: 1, momentum: 1 })).toThrow(/momentum/);
    expect(() => fedAvgMStep(f32(1), f32(1, 2), { velocity: null }, { serverLearningRate: 1, momentum: 0 })).toThrow(/expected 1/);
  });
});

/**
 * Reference: Reddi et al. 2021, Algorithm 2, written per coordinate over plain arrays,
 * with the formulas of Flower's fedadam.py / fedyogi.py / fedadagrad.py and v_{-1} = τ².
 */
function referenceRun(kind: AdaptiveOptimizerKind, w0: number[], deltas: number[][], o: { eta: number; beta1: number; beta2: number; tau: number }) {
  const w = w0.slice();
  const m = w0.map(() => 0);
  const v = w0.map(() => o.tau * o.tau);
  for (const delta of deltas) {
    for (let i = 0; i < w.length; i++) {
      const d = delta[i]!;
      m[i] = o.beta1 * m[i]! + (1 - o.beta1) * d;
      if (kind === 'adam') v[i] = o.beta2 * v[i]! + (1 - o.beta2) * d * d;
      else if (kind === 'yogi') v[i] = v[i]! - (1 - o.beta2) * d * d * Math.sign(v[i]! - d * d);
      else v[i] = v[i]! + d * d;
      w[i] = w[i]! + (o.eta * m[i]!) / (Math.sqrt(v[i]!) + o.tau);
    }
  }
  return w;
}

describe('FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021, Algorithm 2)', () => {
  const o = { eta: 1, beta1: 0.9, beta2: 0.99, tau: 0.1 };

  it('FedAdam first step by hand', () => {
    // Δ = 0.4: m = 0.1·0.4 = 0.04; v = 0.99·0.01 + 0.01·0.16 = 0.0115; w = 2 + 0.04 / (√0.0115 + 0.1).
    const { next, state } = adaptiveStep('adam', f32(2), f32(0.4), initialAdaptiveState(), o);
    expect(state.step).toBe(1);
    expect(state.m![0]).toBeCloseTo(0.04, 7);
    expect(state.v![0]).toBeCloseTo(0.0115, 7);
    expect(next[0]).toBeCloseTo(2 + 0.04 / (Math.sqrt(0.0115) + 0.1), 6);
    expect(next[0]).toBeCloseTo(2.193014, 5);
  });

  it('FedYogi moves v towards Δ² from either side by (1 - β2)Δ²', () => {
    // v = τ² = 0.01 < Δ² = 0.16: v grows to 0.01 + 0.01·0.16 = 0.0116.
    const up = adaptiveStep('yogi', f32(0), f32(0.4), initialAdaptiveState(), o);
    expect(up.state.v![0]).toBeCloseTo(0.0116, 7);
    // v = 1 > Δ² = 0.16: v shrinks to 1 - 0.0016 = 0.9984 (Adam would give 0.99·1 + 0.0016 = 0.9916).
    const down = adaptiveStep('yogi', f32(0), f32(0.4), { m: f32(0), v: f32(1), step: 3 }, o);
    expect(down.state.v![0]).toBeCloseTo(0.9984, 7);
    expect(down.state.step).toBe(4);
  });

  it('FedAdagrad accumulates Δ² without decay', () => {
    const a = adaptiveStep('adagrad', f32(0), f32(0.4), initialAdaptiveState(), o);
    const b = adaptiveStep('adagrad', a.next, f32(-0.3), a.state, o);
    expect(b.state.v![0]).toBeCloseTo(0.01 + 0.16 + 0.09, 7);
    // m = 0.9·0.04 + 0.1·(-0.3) = 0.006.
    expect(b.state.m![0]).toBeCloseTo(0.006, 7);
  });

  for (const kind of ['adam', 'yogi', 'adagrad'] as const) {
    it(`${kind}: matches the plain-array reference over five rounds`, () => {
      const rand = lcg(kind.length * 97);
      const size = 301;
      const options = { eta: 0.03, beta1: 0.9, beta2: 0.99, tau: 1e-3 };
      const w0 = Array.from({ length: size }, rand);
      const deltas = Array.from({ length: 5 }, () => Array.from({ length: size }, () => rand() * 0.02));
      let model: Float32Array = Float32Array.from(w0);
      let state: AdaptiveOptimizerState = initialAdaptiveState();
      for (const delta of deltas) ({ next: model, state } = adaptiveStep(kind, model, Float32Array.from(delta), state, options));
      // The reference runs on float64 throughout; production stores float32.
      const expected = referenceRun(kind, Array.from(Float32Array.from(w0), Number), deltas.map((d) => Array.from(Float32Array.from(d), Number)), options);
      let maxError = 0;
      for (let i = 0; i < size; i++) maxError = Math.max(maxError, Math.abs(model[i]! - expected[i]!));
      expect(maxError).toBeLessThan(1e-5);
      // and it really moved: steps are about η per coordinate.
      let maxMove = 0;
      for (let i = 0; i < size; i++) maxMove = Math.max(maxMove, Math.abs(model[i]! - Math.fround(w0[i]!)));
      expect(maxMove).toBeGreaterThan(0.015);
    });
  }

  it('FedAdam with bias correction scales the first step by √(1-β2)/(1-β1)', () => {
    const plain = adaptiveStep('adam', f32(0), f32(0.4), initialAdaptiveState(), o);
    const corrected = adaptiveStep('adam', f32(0), f32(0.4), initialAdaptiveState(), { ...o, biasCorrection: true });
    expect(corrected.next[0]! / plain.next[0]!).toBeCloseTo(Math.sqrt(0.01) / 0.1, 5);
  });

  it('rejects bad hyper-parameters and state of the wrong length', () => {
    const s = initialAdaptiveState();
    expect(() => adaptiveStep('adam', f32(0), f32(0), s, { ...o, eta: -1 })).toThrow(/eta/);
    expect(() => adaptiveStep('adam', f32(0), f32(0), s, { ...o, beta1: 1 })).toThrow(/beta1/);
    expect(() => adaptiveStep('adam', f32(0), f32(0), s, { ...o, tau: 0 })).toThrow(/tau/);
    expect(() => adaptiveStep('adam', f32(0, 1), f32(0, 1), { m: f32(0), v: null, step: 1 }, o)).toThrow(/state m/);
  });
});
