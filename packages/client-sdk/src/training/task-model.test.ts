import { describe, expect, it } from 'vitest';
import { initTensorflow } from './backend.js';
import { buildModel, flattenWeights } from './model.js';
import { taskBody, taskModelBody, taskModelBodyFromSpec } from './task-model.js';

describe('taskModelBody / taskBody', () => {
  it('carries the topology, the weight specs and the current weights as little-endian float32 base64', async () => {
    const { tf } = await initTensorflow({ preferred: 'cpu' });
    const model = tf.sequential({
      layers: [tf.layers.dense({ inputShape: [3], units: 2, activation: 'relu' }), tf.layers.dense({ units: 2, activation: 'softmax' })],
    });
    model.setWeights([tf.tensor2d([[1, 2], [3, 4], [5, 6]]), tf.tensor1d([0.5, -0.5]), tf.tensor2d([[0.25, -1], [2, 8]]), tf.tensor1d([-3, 7])]);
    const body = taskModelBody(model);
    expect(body.weightSpecs.map((w) => w.shape)).toEqual([[3, 2], [2], [2, 2], [2]]);
    // Independently written bytes: the values in weight-spec order, each float32 little-endian.
    const expected = Buffer.alloc(16 * 4);
    [1, 2, 3, 4, 5, 6, 0.5, -0.5, 0.25, -1, 2, 8, -3, 7].forEach((v, i) => expected.writeFloatLE(v, i * 4));
    expect(Buffer.from(body.weightsBase64, 'base64')).toEqual(expected.subarray(0, 14 * 4));
    // The body rebuilds the same model (what the coordinator and the devices do with it).
    const bytes = Buffer.from(body.weightsBase64, 'base64');
    const weights = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    const rebuilt = await buildModel(tf, { topology: body.topology, weightSpecs: body.weightSpecs }, weights);
    const x = tf.tensor2d([[0.1, -0.2, 0.3]]);
    expect(Array.from((rebuilt.predict(x) as ReturnType<typeof tf.tensor>).dataSync())).toEqual(
      Array.from((model.predict(x) as ReturnType<typeof tf.tensor>).dataSync()),
    );
    expect(flattenWeights(rebuilt)).toEqual(flattenWeights(model));

    const full = taskBody(model, { name: 'mine', rounds: 3, clientsPerRound: 2 });
    expect(full).toEqual({ name: 'mine', rounds: 3, clientsPerRound: 2, model: body });
    expect(() => taskBody(model, { model: {} })).toThrow(/must not contain `model`/);
    rebuilt.dispose();
    model.dispose();
  });

  it('refuses weights that do not match the weight specs', () => {
    const spec = { topology: {}, weightSpecs: [{ name: 'k', shape: [2, 2], dtype: 'float32' as const }] };
    expect(() => taskModelBodyFromSpec(spec, new Float32Array(3))).toThrow(/3 values but the model's weightSpecs describe 4/);
  });
});
