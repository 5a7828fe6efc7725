import { describe, expect, it } from 'vitest';
import { decodeStrategyState, encodeStrategyState } from './strategy-state.js';

describe('strategy state blobs', () => {
  it('round-trips scalars exactly and float32 vectors bit for bit', () => {
    const state = {
      scalars: { step: 12, beta1: 0.9, tiny: 1e-300 },
      vectors: { m: Float32Array.from([0.1, -2.5, 3.4028234663852886e38, -0]), v: new Float32Array(0), odd: Float32Array.from([1 / 3]) },
    };
    const bytes = encodeStrategyState(state);
    const back = decodeStrategyState(bytes);
    expect(back.scalars).toEqual(state.scalars);
    expect(Object.keys(back.vectors)).toEqual(['m', 'v', 'odd']);
    for (const name of ['m', 'v', 'odd'] as const) {
      expect(new Uint8Array(back.vectors[name]!.buffer)).toEqual(new Uint8Array(state.vectors[name].buffer));
    }
    // Header padded so vectors start 4-byte aligned.
    expect((8 + new DataView(bytes.buffer).getUint32(4, true)) % 4).toBe(0);
  });

  it('refuses a truncated, extended or foreign blob', () => {
    const bytes = encodeStrategyState({ scalars: { t: 1 }, vectors: { m: Float32Array.from([1, 2]) } });
    expect(() => decodeStrategyState(bytes.subarray(0, bytes.length - 1))).toThrow(/truncated/);
    expect(() => decodeStrategyState(Uint8Array.from([...bytes, 0]))).toThrow(/trailing/);
    expect(() => decodeStrategyState(Uint8Array.from([1, 2, 3, 4, 0, 0, 0, 0]))).toThrow(/magic/);
  });
});
