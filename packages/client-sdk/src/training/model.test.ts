import { describe, expect, it } from 'vitest';
import { initTensorflow } from './backend.js';
import { buildModel, countParameters, describeModel, flattenWeights } from './model.js';
import type { ModelSpec, Tf } from './types.js';

function smallSpec(tf: Tf): ModelSpec {
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ inputShape: [6], units: 5, activation: 'relu' }),
      tf.layers.dense({ units: 3, activation: 'softmax' }),
    ],
  });
  try {
    return describeModel(model);
  } finally {
    model.dispose();
  }
}

function randomWeights(length: number): Float32Array {
  const weights = new Float32Array(length);
  for (let i = 0; i < length; i++) weights[i] = Math.sin(i * 12.9898) * 0.7; // arbitrary, non-trivial values
  return weights;
}

describe('model wire format', () => {
  it('describes weights in getWeights() order with their parameter count', async () => {
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const spec = smallSpec(tf);
    expect(spec.weightSpecs.map((w) => w.shape)).toEqual([[6, 5], [5], [5, 3], [3]]);
    expect(spec.weightSpecs.every((w) => w.dtype === 'float32')).toBe(true);
    expect(countParameters(spec.weightSpecs)).toBe(6 * 5 + 5 + 5 * 3 + 3);
    // The topology survives a JSON round trip (it travels as JSON).
    expect(JSON.parse(JSON.stringify(spec.topology))).toEqual(spec.topology);
  });

  it('flattenWeights(buildModel(spec, w)) returns w bit for bit', async () => {
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const spec = JSON.parse(JSON.stringify(smallSpec(tf))) as ModelSpec;
    const weights = randomWeights(countParameters(spec.weightSpecs));
    const model = await buildModel(tf, spec, weights);
    try {
      const flat = flattenWeights(model);
      expect(flat).toEqual(weights);
      // The model holds its own copy: changing the input afterwards changes nothing.
      weights[0] = 42;
      expect(flattenWeights(model)[0]).not.toBe(42);
    } finally {
      model.dispose();
    }
  });

  it('rejects a weight vector of the wrong length with a clear error', async () => {
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const spec = smallSpec(tf);
    const before = tf.memory().numTensors;
    await expect(buildModel(tf, spec, new Float32Array(10))).rejects.toThrow(
      /weight vector has 10 values but the model's weightSpecs describe 53/,
    );
    expect(tf.memory().numTensors).toBe(before);
  });

  it('rejects weightSpecs that disagree with the topology', async () => {
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const spec = smallSpec(tf);
    const swapped: ModelSpec = {
      ...spec,
      weightSpecs: [
        { name: 'a', shape: [5, 6], dtype: 'float32' },
        ...spec.weightSpecs.slice(1),
      ],
    };
    const before = tf.memory().numTensors;
    await expect(buildModel(tf, swapped, new Float32Array(53))).rejects.toThrow(
      /weight 0 \(a\) has shape \[5,6\] in weightSpecs but \[6,5\] in the topology/,
    );
    expect(tf.memory().numTensors).toBe(before);
  });
});
