import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { createMnistMlp } from './model.js';

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
