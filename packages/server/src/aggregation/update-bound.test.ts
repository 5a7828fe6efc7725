import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import { DEFAULT_UPDATE_BOUND, boundedValues, checkUpdateBound, resolveUpdateBound, updateNorm } from './update-bound.js';

describe('update bounds', () => {
  it('computes L2 and L∞ norms in float64 (no overflow at float32 max)', () => {
    expect(updateNorm(Float32Array.of(3, -4), 'l2')).toBe(5);
    expect(updateNorm(Float32Array.of(3, -4), 'linf')).toBe(4);
    const max = 3.4028234663852886e38;
    // ‖(max, max)‖₂ = max·√2 ≈ 4.81e38: representable in float64, infinite in float32.
    expect(updateNorm(Float32Array.of(max, max), 'l2')).toBeCloseTo(max * Math.SQRT2, -30);
    expect(Number.isFinite(updateNorm(new Float32Array(1000).fill(max), 'l2'))).toBe(true);
  });

  it('gives NaN for an update holding NaN or ±Infinity, in both norms; L∞ is the exact largest magnitude', () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY, Number.NEGATIVE_INFINITY]) {
      for (const norm of ['l2', 'linf'] as const) {
        expect(updateNorm(Float32Array.of(1, bad, -2), norm)).toBeNaN();
        expect(updateNorm(Float32Array.of(bad, 5), norm)).toBeNaN();
      }
    }
    const max = 3.4028234663852886e38;
    const tiny = 1.401298464324817e-45; // the smallest subnormal
    expect(updateNorm(Float32Array.of(-0, 0), 'linf')).toBe(0);
    expect(updateNorm(Float32Array.of(tiny, -0), 'linf')).toBe(tiny);
    expect(updateNorm(Float32Array.of(0.5, -max, 7), 'linf')).toBe(max);
    expect(updateNorm(Float32Array.of(0.1, -0.3, 0.2), 'linf')).toBe(Math.fround(0.3));
    // A view at an offset of a larger array reads only its own values.
    expect(updateNorm(Float32Array.of(99, 1, -2, 99).subarray(1, 3), 'linf')).toBe(2);
  });

  it('refuses an update over a reject bound with INVALID_ARGUMENT, accepts one at the bound', () => {
    const bound = { norm: 'l2', maxNorm: 5, onExceed: 'reject' } as const;
    expect(() => checkUpdateBound(Float32Array.of(3, 4), bound)).not.toThrow();
    let error: unknown;
    try {
      checkUpdateBound(Float32Array.of(3, 4.5), bound);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VeilError);
    expect((error as VeilError).code).toBe('invalid_argument');
    expect((error as VeilError).message).toBe("update L2 norm 5.408326913195984 exceeds the task's bound 5");
    expect(() => checkUpdateBound(Float32Array.of(0, -1001), DEFAULT_UPDATE_BOUND)).toThrow(/L∞ norm 1001/);
    // A clip bound never refuses.
    expect(() => checkUpdateBound(Float32Array.of(1e30), { ...bound, onExceed: 'clip' })).not.toThrow();
  });

  it('clips: L∞ clamps each value, L2 scales by maxNorm/‖Δ‖; an update within the bound is the same array', () => {
    const within = Float32Array.of(0.5, -0.25);
    expect(boundedValues(within, { norm: 'linf', maxNorm: 1, onExceed: 'clip' })).toBe(within);
    expect(Array.from(boundedValues(Float32Array.of(3, -7, 0.5), { norm: 'linf', maxNorm: 2, onExceed: 'clip' }))).toEqual([2, -2, 0.5]);
    // (6, 8) has norm 10; scaled to norm 5: (3, 4).
    expect(Array.from(boundedValues(Float32Array.of(6, 8), { norm: 'l2', maxNorm: 5, onExceed: 'clip' }))).toEqual([3, 4]);
    // A reject bound folds values as given (they were checked before recording).
    const v = Float32Array.of(9);
    expect(boundedValues(v, { norm: 'linf', maxNorm: 1, onExceed: 'reject' })).toBe(v);
  });

  it('resolves the default and refuses malformed bounds', () => {
    expect(resolveUpdateBound(undefined)).toEqual({ norm: 'linf', maxNorm: 1000, onExceed: 'reject' });
    expect(resolveUpdateBound({ norm: 'l2', maxNorm: 2, onExceed: 'clip' })).toEqual({ norm: 'l2', maxNorm: 2, onExceed: 'clip' });
    for (const bad of [null, 'l2', { norm: 'l1', maxNorm: 1, onExceed: 'clip' }, { norm: 'l2', maxNorm: -1, onExceed: 'clip' }, { norm: 'l2', maxNorm: Number.NaN, onExceed: 'clip' }, { norm: 'l2', maxNorm: 2e30, onExceed: 'clip' }, { norm: 'l2', maxNorm: 1, onExceed: 'drop' }]) {
      expect(() => resolveUpdateBound(bad)).toThrow(VeilError);
    }
  });
});
