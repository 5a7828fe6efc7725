import { describe, expect, it } from 'vitest';
import { fromFloat16Bits, toFloat16Bits } from './float16.js';

/** Node's own binary16 rounding (ECMAScript 2025 Math.f16round, V8's implementation): an independent reference. */
const f16round = (Math as unknown as { f16round?: (x: number) => number }).f16round;

describe('binary16 conversion', () => {
  it('matches published encodings (IEEE 754 binary16 examples)', () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff], // largest normal
      [65520, 0x7c00], // rounds to infinity
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // half of it: ties to even (0)
      [1 / 3, 0x3555],
      [Infinity, 0x7c00],
    ];
    for (const [value, bits] of cases) expect([value, toFloat16Bits(value)]).toEqual([value, bits]);
    expect(Number.isNaN(fromFloat16Bits(toFloat16Bits(NaN)))).toBe(true);
  });

  it.runIf(f16round !== undefined)('rounds like Math.f16round on 200,000 values across the range', () => {
    let seed = 12345;
    const next = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    for (let i = 0; i < 200_000; i++) {
      const x = Math.fround((next() - 0.5) * 2 ** (next() * 40 - 26));
      expect(fromFloat16Bits(toFloat16Bits(x))).toBe(f16round!(x));
    }
  });
});
