import { describe, expect, it } from 'vitest';
import { initTensorflow } from './backend.js';

describe('initTensorflow', () => {
  it('falls back from tfjs-node to wasm when tfjs-node is not installed, logs once and memoises', async () => {
    const records: { obj: object; msg: string }[] = [];
    const logger = { info: (obj: object, msg: string) => records.push({ obj, msg }) };
    const first = await initTensorflow({ logger });
    // @tensorflow/tfjs-node cannot be installed on the project's machines; if
    // it ever is, it must win.
    expect(['tensorflow', 'wasm']).toContain(first.backend);
    expect(first.tf.getBackend()).toBe(first.backend);
    expect(records).toHaveLength(1);
    expect(records[0]!.msg).toBe('tensorflow backend selected');
    expect(records[0]!.obj).toMatchObject({ backend: first.backend });

    const second = await initTensorflow({ preferred: 'cpu', logger });
    expect(second).toBe(first);
    expect(records).toHaveLength(1);

    // The selected backend really computes.
    const product = first.tf.tidy(() => first.tf.matMul([[1, 2]], [[3], [4]]).dataSync()[0]);
    expect(product).toBe(11);
  });
});
