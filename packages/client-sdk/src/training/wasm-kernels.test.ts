import { beforeAll, describe, expect, it } from 'vitest';
import { initTensorflow } from './backend.js';
import type { Tf } from './types.js';

let tf: Tf;

beforeAll(async () => {
  ({ tf } = await initTensorflow({ preferred: 'wasm' }));
  expect(tf.getBackend()).toBe('wasm');
});

/** Deterministic values in [-1, 1). */
function values(count: number, seed: number): Float32Array {
  let state = seed >>> 0;
  return Float32Array.from({ length: count }, () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return state / 2 ** 31 - 1;
  });
}

type Shape4 = [number, number, number, number];
type Tensor4D = ReturnType<Tf['tensor4d']>;

/** tf.grad types its function's argument as a tensor of any rank; the gradients here are taken at 4-D tensors. */
function as4d(t: Parameters<Parameters<Tf['grad']>[0]>[0]): Tensor4D {
  if (t.rank !== 4) throw new Error(`expected a 4-D tensor, got rank ${t.rank}`);
  return t as Tensor4D;
}

/** The filter (or input) gradient of sum(conv2d(x, w) * r) on the current backend. */
function filterGradient(x: Float32Array, xShape: Shape4, w: Float32Array, wShape: Shape4, strides: number, pad: 'valid' | 'same', wrt: 'filter' | 'input' = 'filter') {
  return tf.tidy(() => {
    const xt = tf.tensor4d(x, xShape);
    const wt = tf.tensor4d(w, wShape);
    const probe = tf.conv2d(xt, wt, strides, pad);
    const r = tf.tensor(values(probe.size, 99), probe.shape);
    if (wrt === 'input') return tf.grad((input) => tf.conv2d(as4d(input), wt, strides, pad).mul(r).sum())(xt).dataSync().slice();
    return tf.grad((filter) => tf.conv2d(xt, as4d(filter), strides, pad).mul(r).sum())(wt).dataSync().slice();
  });
}

/** Largest absolute difference and largest absolute reference value. */
function compare(actual: ArrayLike<number>, expected: ArrayLike<number>) {
  expect(actual).toHaveLength(expected.length);
  let maxError = 0;
  let maxValue = 0;
  for (let i = 0; i < expected.length; i++) {
    maxError = Math.max(maxError, Math.abs(actual[i]! - expected[i]!));
    maxValue = Math.max(maxValue, Math.abs(expected[i]!));
  }
  return { maxError, maxValue };
}

describe('Conv2DBackpropInput on the wasm backend', () => {
  it('is the replacement kernel, not the backend\'s own', () => {
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc.toString()).toContain('fallback');
  });

  for (const { pad, strides, xShape, wShape } of [
    { pad: 'valid', strides: 1, xShape: [2, 12, 12, 6], wShape: [5, 5, 6, 16] },
    { pad: 'same', strides: 1, xShape: [2, 9, 7, 3], wShape: [4, 3, 3, 4] },
    { pad: 'same', strides: 2, xShape: [2, 9, 7, 3], wShape: [3, 3, 3, 4] },
  ] as const) {
    it(`equals the cpu backend's kernel (${pad}, stride ${strides}, x [${xShape.join(',')}], w [${wShape.join(',')}])`, async () => {
      const x = values(xShape.reduce<number>((a, b) => a * b, 1), 3);
      const w = values(wShape.reduce<number>((a, b) => a * b, 1), 4);
      const onWasm = filterGradient(x, [...xShape], w, [...wShape], strides, pad, 'input');
      await tf.setBackend('cpu');
      try {
        const { maxError, maxValue } = compare(onWasm, filterGradient(x, [...xShape], w, [...wShape], strides, pad, 'input'));
        expect(maxValue).toBeGreaterThan(1);
        expect(maxError).toBeLessThan(1e-5 * maxValue);
      } finally {
        await tf.setBackend('wasm');
      }
    });
  }
});

describe('Conv2DBackpropFilter on the wasm backend', () => {
  for (const { pad, strides, xShape, wShape } of [
    { pad: 'valid', strides: 1, xShape: [3, 12, 12, 1], wShape: [5, 5, 1, 6] },
    { pad: 'valid', strides: 1, xShape: [2, 8, 8, 6], wShape: [5, 5, 6, 16] },
    { pad: 'same', strides: 1, xShape: [2, 9, 7, 3], wShape: [4, 3, 3, 4] },
    { pad: 'same', strides: 2, xShape: [2, 9, 7, 3], wShape: [3, 3, 3, 4] },
  ] as const) {
    it(`equals the cpu backend's kernel (${pad}, stride ${strides}, x [${xShape.join(',')}], w [${wShape.join(',')}])`, async () => {
      const x = values(xShape.reduce<number>((a, b) => a * b, 1), 1);
      const w = values(wShape.reduce<number>((a, b) => a * b, 1), 2);
      const onWasm = filterGradient(x, [...xShape], w, [...wShape], strides, pad);
      await tf.setBackend('cpu');
      try {
        const onCpu = filterGradient(x, [...xShape], w, [...wShape], strides, pad);
        expect(onWasm).toHaveLength(onCpu.length);
        let maxError = 0;
        let maxValue = 0;
        for (let i = 0; i < onCpu.length; i++) {
          maxError = Math.max(maxError, Math.abs(onWasm[i]! - onCpu[i]!));
          maxValue = Math.max(maxValue, Math.abs(onCpu[i]!));
        }
        expect(maxValue).toBeGreaterThan(1);
        expect(maxError).toBeLessThan(1e-4 * maxValue);
      } finally {
        await tf.setBackend('wasm');
      }
    });
  }

  it('by hand: a 1x3x3x1 input, 2x2 filter, dy of ones sums each 2x2 window position', () => {
    // x = 1..9 (row-major 3x3); valid 2x2 conv has a 2x2 output; with dy = 1,
    // dW[kh][kw] = sum of x over the output positions shifted by (kh, kw): [1+2+4+5, 2+3+5+6, 4+5+7+8, 5+6+8+9].
    const grad = tf.tidy(() => {
      const x = tf.tensor4d([1, 2, 3, 4, 5, 6, 7, 8, 9], [1, 3, 3, 1]);
      return tf.grad((w) => tf.conv2d(x, as4d(w), 1, 'valid').sum())(tf.zeros([2, 2, 1, 1]) as never).dataSync().slice();
    });
    expect(Array.from(grad)).toEqual([12, 16, 24, 28]);
  });
});
