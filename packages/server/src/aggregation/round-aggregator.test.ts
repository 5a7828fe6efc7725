import { describe, expect, it } from 'vitest';
import { createFedAvg } from './fedavg.js';
import { checkPlaintextUpdate, createPlaintextAggregator } from './round-aggregator.js';

/** float32-le bytes of `values` placed at byte `offset` of a larger buffer (as inside a gRPC message). */
function bytesAt(values: number[], offset: number): Uint8Array {
  const buffer = new ArrayBuffer(offset + 4 * values.length + 3);
  const view = new DataView(buffer, offset, 4 * values.length);
  values.forEach((v, i) => view.setFloat32(4 * i, v, true));
  return new Uint8Array(buffer, offset, 4 * values.length);
}

describe('plaintext updates at any byte offset', () => {
  const current = new Float32Array([1, 2, 3, 4]);
  const toBytes = (v: Float32Array): Uint8Array => new Uint8Array(v.buffer.slice(0));

  it('checks and folds aligned and unaligned payloads to the exact FedAvg, even when checks interleave', async () => {
    const a = [0.5, -1, 0.25, 2];
    const b = [-0.5, 3, 1.75, -2];
    const c = [1, 1, 1, 1];
    // Checked in turn before any is folded (as uploads are checked before the recording lock):
    // an unaligned check must not leave its values where the next check overwrites them.
    const checkedA = checkPlaintextUpdate(bytesAt(a, 9), 4);
    const checkedB = checkPlaintextUpdate(bytesAt(b, 1), 4);
    const checkedC = checkPlaintextUpdate(bytesAt(c, 8), 4);
    expect(checkedA.values).toBeUndefined();
    expect(checkedC.values).toBeDefined(); // aligned: a view of the payload, kept
    const aggregator = createPlaintextAggregator(createFedAvg(), { round: 1, parameterCount: 4, state: null });
    aggregator.add('a', 1, checkedA);
    aggregator.add('b', 3, checkedB);
    aggregator.add('c', 4, checkedC);
    // Raw bytes (a round rebuilt from the store) are checked and folded too.
    aggregator.add('d', 2, bytesAt(a, 3));
    const next = await aggregator.finish({ bytes: toBytes(current), encoding: 'float32-le' }, [], null);
    expect(next).not.toBeNull();
    expect(next!.state).toBeNull();
    const got = new Float32Array(new Uint8Array(next!.model.bytes).buffer);
    const expected = current.map((w, i) => Math.fround(w + (1 * a[i]! + 3 * b[i]! + 4 * c[i]! + 2 * a[i]!) / 10));
    expect([...got]).toEqual([...expected]);
  });

  it('reads the current model where it lies (aligned or not) without changing it, and hands back the next one\'s bytes', async () => {
    const delta = [0.5, -1, 0.25, 2];
    for (const offset of [0, 4, 1, 3]) {
      const model = bytesAt([...current], offset);
      const before = [...model];
      const aggregator = createPlaintextAggregator(createFedAvg(), { round: 1, parameterCount: 4, state: null });
      aggregator.add('a', 5, bytesAt(delta, 0));
      const next = await aggregator.finish({ bytes: model, encoding: 'float32-le' }, [], null);
      expect([...model]).toEqual(before);
      const bytes = next!.model.bytes;
      expect(bytes.byteLength).toBe(16);
      const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      expect([0, 1, 2, 3].map((i) => view.getFloat32(4 * i, true))).toEqual([...current].map((w, i) => Math.fround(w + delta[i]!)));
    }
  });

  it('refuses NaN and Infinity at an odd offset, with the index', () => {
    expect(() => checkPlaintextUpdate(bytesAt([0, Number.NaN, 0, 0], 5), 4)).toThrow(/non-finite value at index 1/);
    expect(() => checkPlaintextUpdate(bytesAt([0, 0, 0, Number.NEGATIVE_INFINITY], 2), 4)).toThrow(/index 3/);
    const aggregator = createPlaintextAggregator(createFedAvg(), { round: 1, parameterCount: 4, state: null });
    expect(() => aggregator.add('x', 1, bytesAt([Number.POSITIVE_INFINITY, 0, 0, 0], 7))).toThrow(/index 0/);
    expect(aggregator.count).toBe(0);
    expect(() => checkPlaintextUpdate(bytesAt([0, 0, 0], 1), 4)).toThrow(/12 bytes, the model needs 16/);
  });

  it('under a refusing bound (one pass for finiteness and norm): NaN and Infinity with the index, then the bound', () => {
    for (const norm of ['l2', 'linf'] as const) {
      const bound = { norm, maxNorm: 10, onExceed: 'reject' } as const;
      expect(() => checkPlaintextUpdate(bytesAt([0, Number.NaN, 0, 0], 5), 4, bound)).toThrow(/non-finite value at index 1/);
      expect(() => checkPlaintextUpdate(bytesAt([0, 0, Number.POSITIVE_INFINITY, 0], 4), 4, bound)).toThrow(/non-finite value at index 2/);
      expect(() => checkPlaintextUpdate(bytesAt([0, 0, 0, -11], 3), 4, bound)).toThrow(/norm 11 exceeds the task's bound 10/);
      expect(() => checkPlaintextUpdate(bytesAt([3, -4, 0, 0], 1), 4, bound)).not.toThrow();
    }
    // A clipping bound refuses only non-finite values.
    expect(() => checkPlaintextUpdate(bytesAt([0, 0, 0, Number.NaN], 2), 4, { norm: 'linf', maxNorm: 1, onExceed: 'clip' })).toThrow(/index 3/);
    expect(() => checkPlaintextUpdate(bytesAt([0, 0, 0, 50], 2), 4, { norm: 'linf', maxNorm: 1, onExceed: 'clip' })).not.toThrow();
  });
});
