import { describe, expect, it } from 'vitest';
import { CryptoError } from './errors.js';
import {
  capWeight,
  centredDecode,
  checkHeadroom,
  createQuantization,
  dequantize,
  maxTotalWeight,
  quantize,
  quantizeValue,
  toResidue,
} from './quantize.js';

// The default preset's batching prime (PlainModulus.Batching(2048, 29)), checked in params.test.ts.
const T29 = 536_813_569n;

describe('quantize', () => {
  const q = createQuantization();

  it('uses clip [-1, 1], step 2^-13 and weight cap 128 by default', () => {
    expect(q).toEqual({ clipMaxAbs: 1, step: 1 / 8192, weightCap: 128, maxAbsLevel: 8192 });
  });

  it('maps values to hand-computed levels (clip, round half away from zero)', () => {
    const values = [0, 1, -1, 1.5, -7, 0.5, 2 ** -14, -(2 ** -14), 3 * 2 ** -15, 2 ** -15, 0.1, -0.1];
    // 0.1 * 8192 = 819.2 -> 819; 2^-14 is half a step -> ±1; 0.75 step -> 1; 0.25 step -> 0.
    expect(Array.from(quantize(values, q))).toEqual([0, 8192, -8192, 8192, -8192, 4096, 1, -1, 1, 0, 819, -819]);
  });

  it('honours a custom clip range and step', () => {
    const coarse = createQuantization({ clipMaxAbs: 2, step: 0.25 });
    expect(coarse.maxAbsLevel).toBe(8);
    expect(Array.from(quantize([0.125, -0.375, 0.3, 5, -2], coarse))).toEqual([1, -2, 1, 8, -8]);
  });

  it('rejects NaN instead of turning it into zero', () => {
    expect(() => quantizeValue(Number.NaN, q)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });

  it('dequantizes levels, optionally divided by a total weight', () => {
    expect(Array.from(dequantize([819, -8192, 3], q))).toEqual([819 / 8192, -1, 3 / 8192]);
    expect(Array.from(dequantize([8192 * 6], q, 4))).toEqual([1.5]);
  });

  it('keeps every error within step/2 before weighting', () => {
    for (let i = 0; i <= 1000; i++) {
      const x = -1 + (2 * i) / 1000;
      expect(Math.abs(quantizeValue(x, q) * q.step - x)).toBeLessThanOrEqual(q.step / 2);
    }
  });

  it('reduces signed levels mod t and decodes them centred', () => {
    expect(toResidue(-1, 17n)).toBe(16n);
    expect(toResidue(5, 17n)).toBe(5n);
    expect(centredDecode(16n, 17n)).toBe(-1);
    expect(centredDecode(8n, 17n)).toBe(8);
    expect(centredDecode(9n, 17n)).toBe(-8);
    expect(centredDecode(toResidue(-268_406_784, T29), T29)).toBe(-268_406_784);
    expect(() => centredDecode(17n, 17n)).toThrow(CryptoError);
  });

  it('caps weights at the weight cap', () => {
    expect(capWeight(600, 128)).toBe(128);
    expect(capWeight(37.9, 128)).toBe(37);
    expect(() => capWeight(0, 128)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });

  it('validates options', () => {
    expect(() => createQuantization({ step: 0 })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => createQuantization({ weightCap: 1.5 })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => createQuantization({ clipMaxAbs: -1 })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });
});

describe('checkHeadroom', () => {
  it('accepts 10,000 clients at weight 1 with the default quantization and t = 536,813,569', () => {
    const headroom = checkHeadroom({ plainModulus: T29, maxClients: 10_000, weightCap: 1 });
    // (t-1)/2 = 268,406,784; 268,406,784 / 8192 = 32,764.5.
    expect(headroom).toMatchObject({
      maxAbsLevel: 8192,
      maxAbsSum: 81_920_000,
      signedLimit: 268_406_784,
      maxTotalWeight: 32_764,
      maxClientsAtWeightCap: 32_764,
      maxWeightCapAtMaxClients: 3,
    });
    expect(headroom.spareBits).toBeCloseTo(Math.log2(268_406_784 / 81_920_000), 12);
  });

  it('rejects one client too many and names the limits', () => {
    expect(() => checkHeadroom({ plainModulus: T29, maxClients: 32_765, weightCap: 1 })).toThrow(
      expect.objectContaining({ code: 'headroom_exceeded', message: expect.stringContaining('at most 32764 clients') }),
    );
    expect(checkHeadroom({ plainModulus: T29, maxClients: 255, weightCap: 128 }).maxAbsSum).toBe(255 * 128 * 8192);
    expect(() => checkHeadroom({ plainModulus: T29, maxClients: 256, weightCap: 128 })).toThrow(
      expect.objectContaining({
        code: 'headroom_exceeded',
        message: expect.stringMatching(/at most 255 clients.*weightCap must be <= 127/),
      }),
    );
  });

  it('matches a hand-worked small case (t = 17, clip 1, step 1/2: levels in [-2, 2], |sum| <= 8)', () => {
    const small = { plainModulus: 17n, clipMaxAbs: 1, step: 0.5 };
    expect(checkHeadroom({ ...small, maxClients: 2, weightCap: 2 }).maxAbsSum).toBe(8);
    expect(checkHeadroom({ ...small, maxClients: 4, weightCap: 1 }).maxTotalWeight).toBe(4);
    expect(() => checkHeadroom({ ...small, maxClients: 5, weightCap: 1 })).toThrow(
      expect.objectContaining({ code: 'headroom_exceeded' }),
    );
    expect(maxTotalWeight(createQuantization({ clipMaxAbs: 1, step: 0.5 }), 17n)).toBe(4);
  });

  it('rejects an even plain modulus (no centred range)', () => {
    expect(() => checkHeadroom({ plainModulus: 16n, maxClients: 1, weightCap: 1 })).toThrow(
      expect.objectContaining({ code: 'invalid_argument' }),
    );
  });
});
