import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { createMnistMlp, createSimpleCnn } from './model.js';

describe('createMnistMlp', () => {
  it('describes a 784-200-200-10 MLP whose topology TF.js loads back', async () => {
    await tf.setBackend('cpu');
    const { spec, weights } = createMnistMlp(tf, { seed: 1 });
    expect(spec.weightSpecs.map((w) => w.shape)).toEqual([[784, 200], [200], [200, 200], [200], [200, 10], [10]]);
    expect(weights).toHaveLength(199_210);
    const model = await tf.models.modelFromJSON(JSON.parse(JSON.stringify(spec.topology)) as tf.serialization.ConfigDict);
    try {
      expect(model.weights.map((w) => w.shape)).toEqual(spec.weightSpecs.map((w) => w.shape));
      expect(model.outputs[0]!.shape).toEqual([null, 10]);
      expect(model.layers.map((layer) => (layer.getConfig() as { activation?: string }).activation)).toEqual([
        'relu', 'relu', 'softmax',
      ]);
    } finally {
      model.dispose();
    }
  });

  it('with no hidden layers is 784-10 softmax regression (7,850 parameters)', async () => {
    await tf.setBackend('cpu');
    const { spec, weights } = createMnistMlp(tf, { seed: 1, hidden: [] });
    expect(spec.weightSpecs.map((w) => w.shape)).toEqual([[784, 10], [10]]);
    expect(weights).toHaveLength(7_850);
    const model = await tf.models.modelFromJSON(JSON.parse(JSON.stringify(spec.topology)) as tf.serialization.ConfigDict);
    try {
      expect(model.inputs[0]!.shape).toEqual([null, 784]);
      expect(model.layers.map((layer) => (layer.getConfig() as { activation?: string }).activation)).toEqual(['softmax']);
    } finally {
      model.dispose();
    }
  });

  it('draws reproducible Glorot-uniform kernels and zero biases from the seed', () => {
    const a = createMnistMlp(tf, { seed: 1 });
    const b = createMnistMlp(tf, { seed: 1 });
    const c = createMnistMlp(tf, { seed: 2 });
    expect(b.weights).toEqual(a.weights);
    expect(b.spec).toEqual(a.spec);
    expect(c.weights).not.toEqual(a.weights);
    const limit = Math.sqrt(6 / (784 + 200));
    const kernel = a.weights.subarray(0, 784 * 200);
    const max = kernel.reduce((m, v) => Math.max(m, v), -Infinity);
    const min = kernel.reduce((m, v) => Math.min(m, v), Infinity);
    expect(max).toBeLessThanOrEqual(limit);
    expect(min).toBeGreaterThanOrEqual(-limit);
    expect(max).toBeGreaterThan(limit * 0.99);
    expect(min).toBeLessThan(-limit * 0.99);
    expect(a.weights.subarray(784 * 200, 784 * 200 + 200).every((v) => v === 0)).toBe(true);
    expect(tf.memory().numTensors).toBe(0);
  });
});

describe('createSimpleCnn (NIID-Bench SimpleCNNMNIST)', () => {
  it('has the layer shapes and 44,426 parameters of NIID-Bench, loads back and classifies a batch', async () => {
    await tf.setBackend('cpu');
    const { spec, weights } = createSimpleCnn(tf, { seed: 3 });
    // conv1 5·5·1·6 + 6, conv2 5·5·6·16 + 16, fc1 256·120 + 120, fc2 120·84 + 84, fc3 84·10 + 10.
    expect(spec.weightSpecs.map((w) => w.shape)).toEqual([
      [5, 5, 1, 6], [6], [5, 5, 6, 16], [16], [256, 120], [120], [120, 84], [84], [84, 10], [10],
    ]);
    expect(weights).toHaveLength(156 + 2416 + 30840 + 10164 + 850);
    expect(weights).toHaveLength(44_426);
    const model = await tf.models.modelFromJSON(JSON.parse(JSON.stringify(spec.topology)) as tf.serialization.ConfigDict);
    try {
      expect(model.inputs[0]!.shape).toEqual([null, 28, 28, 1]);
      expect(model.outputs[0]!.shape).toEqual([null, 10]);
      const out = tf.tidy(() => (model.predict(tf.ones([2, 28, 28, 1])) as tf.Tensor).sum(1).arraySync() as number[]);
      expect(out[0]).toBeCloseTo(1, 5);
    } finally {
      model.dispose();
    }
  });

  it('draws PyTorch-default U(±1/√fanIn) weights from the seed', () => {
    const a = createSimpleCnn(tf, { seed: 1 });
    expect(createSimpleCnn(tf, { seed: 1 }).weights).toEqual(a.weights);
    expect(createSimpleCnn(tf, { seed: 2 }).weights).not.toEqual(a.weights);
    const conv1 = a.weights.subarray(0, 150);
    const conv1Bias = a.weights.subarray(150, 156);
    const fc1 = a.weights.subarray(2572, 2572 + 30720);
    const bound = (values: Float32Array) => values.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    expect(bound(conv1)).toBeLessThanOrEqual(1 / 5);
    expect(bound(conv1)).toBeGreaterThan(0.9 / 5);
    expect(bound(conv1Bias)).toBeLessThanOrEqual(1 / 5);
    expect(bound(fc1)).toBeLessThanOrEqual(1 / 16);
    expect(bound(fc1)).toBeGreaterThan(0.99 / 16);
  });
});
