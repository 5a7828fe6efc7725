import type { KernelConfig, TensorInfo } from '@tensorflow/tfjs';
import type { Tf } from './types.js';

/** What this kernel uses of `@tensorflow/tfjs-backend-wasm`'s backend object. */
interface WasmBackendLike {
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  typedArrayFromHeap(info: TensorInfo): Float32Array;
}

interface Conv2DBackpropFilterAttrs {
  strides: [number, number] | number;
  pad: 'valid' | 'same' | number | [[number, number], [number, number], [number, number], [number, number]];
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  filterShape: [number, number, number, number];
}

/**
 * `Conv2DBackpropFilter` for the WebAssembly backend, which ships without it
 * (tfjs-backend-wasm 4.x registers Conv2D and Conv2DBackpropInput only), so a
 * convolutional model cannot train on wasm: the gradient of a Conv2D's filter
 * fails with "Kernel 'Conv2DBackpropFilter' not registered".
 *
 * dW[kh, kw, ci, co] = Σ_{b, oy, ox} x[b, oy·sh + kh − padTop, ox·sw + kw − padLeft, ci] · dy[b, oy, ox, co]
 * (the filter gradient of a 2-D cross-correlation, as TF.js's cpu kernel
 * computes it). NHWC only, dilation 1 (what TF.js's Conv2D gradient passes).
 *
 * With stride 1 (NIID-Bench's SimpleCNN and most CNNs) the sum is itself a
 * stride-1 cross-correlation with the batch as the channel axis:
 * dW = transpose(conv2d(transpose(x, [3,1,2,0]), transpose(dy, [1,2,0,3])), [1,2,0,3])
 * with x padded as in the forward pass, so it runs in the backend's own
 * Conv2D (XNNPACK, SIMD) on copies of x and dy; measured here, that cut
 * SimpleCNN training time per batch-64 step by about a third. Other strides
 * take a plain-JavaScript loop over the wasm heap, accumulated in float64.
 */
export function conv2DBackpropFilterWasm(tf: Tf): KernelConfig {
  return {
    kernelName: 'Conv2DBackpropFilter',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
      const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as Conv2DBackpropFilterAttrs;
      if (dataFormat !== 'NHWC') throw new Error('Conv2DBackpropFilter (wasm): only NHWC is supported');
      const info = tf.backend_util.computeConv2DInfo(
        x.shape as [number, number, number, number], filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast',
      );
      const wasm = backend as unknown as WasmBackendLike;
      if (info.strideHeight === 1 && info.strideWidth === 1) return byConvolution(tf, wasm, x, dy, info, filterShape);
      // Allocate first: allocation can grow the wasm memory, detaching views taken before it.
      const out = wasm.makeOutput(filterShape, 'float32');
      const xs = wasm.typedArrayFromHeap(x);
      const dys = wasm.typedArrayFromHeap(dy);
      const dw = wasm.typedArrayFromHeap(out);
      const { batchSize, inHeight, inWidth, inChannels, outHeight, outWidth, outChannels, filterHeight, filterWidth, strideHeight, strideWidth } = info;
      const top = info.padInfo.top;
      const left = info.padInfo.left;
      const sum = new Float64Array(filterHeight * filterWidth * inChannels * outChannels);
      for (let b = 0; b < batchSize; b++) {
        for (let oy = 0; oy < outHeight; oy++) {
          for (let ox = 0; ox < outWidth; ox++) {
            const dyBase = ((b * outHeight + oy) * outWidth + ox) * outChannels;
            for (let kh = 0; kh < filterHeight; kh++) {
              const iy = oy * strideHeight + kh - top;
              if (iy < 0 || iy >= inHeight) continue;
              for (let kw = 0; kw < filterWidth; kw++) {
                const ix = ox * strideWidth + kw - left;
                if (ix < 0 || ix >= inWidth) continue;
                const xBase = ((b * inHeight + iy) * inWidth + ix) * inChannels;
                const wBase = (kh * filterWidth + kw) * inChannels * outChannels;
                for (let ci = 0; ci < inChannels; ci++) {
                  const xv = xs[xBase + ci]!;
                  if (xv === 0) continue;
                  const row = wBase + ci * outChannels;
                  for (let co = 0; co < outChannels; co++) sum[row + co]! += xv * dys[dyBase + co]!;
                }
              }
            }
          }
        }
      }
      dw.set(sum);
      return out;
    },
  };
}

/** The stride-1 filter gradient as one Conv2D on the wasm backend (see {@link conv2DBackpropFilterWasm}). */
function byConvolution(
  tf: Tf,
  wasm: WasmBackendLike,
  x: TensorInfo,
  dy: TensorInfo,
  info: ReturnType<Tf['backend_util']['computeConv2DInfo']>,
  filterShape: [number, number, number, number],
): TensorInfo {
  // Copies, not views: the tensors below allocate on the wasm heap, which can grow and detach views.
  const xs = wasm.typedArrayFromHeap(x).slice();
  const dys = wasm.typedArrayFromHeap(dy).slice();
  const { top, bottom, left, right } = info.padInfo;
  const gradient = tf.tidy(() => {
    const xByChannel = tf.transpose(tf.tensor4d(xs, x.shape as [number, number, number, number]), [3, 1, 2, 0]); // [ci, h, w, b]
    const dyAsFilter = tf.transpose(tf.tensor4d(dys, dy.shape as [number, number, number, number]), [1, 2, 0, 3]); // [oh, ow, b, co]
    const pad: [[number, number], [number, number], [number, number], [number, number]] = [[0, 0], [top, bottom], [left, right], [0, 0]];
    return tf.transpose(tf.conv2d(xByChannel, dyAsFilter, 1, pad), [1, 2, 0, 3]); // [kh, kw, ci, co]
  });
  return outputFrom(wasm, gradient, filterShape);
}

/** A backend output of `shape` holding `gradient`'s values (disposed here). */
function outputFrom(wasm: WasmBackendLike, gradient: { dataSync(): unknown; dispose(): void }, shape: number[]): TensorInfo {
  try {
    const values = gradient.dataSync() as Float32Array;
    const out = wasm.makeOutput(shape, 'float32');
    wasm.typedArrayFromHeap(out).set(values);
    return out;
  } finally {
    gradient.dispose();
  }
}

interface Conv2DBackpropInputAttrs {
  strides: [number, number] | number;
  pad: Conv2DBackpropFilterAttrs['pad'];
  dataFormat: 'NHWC' | 'NCHW';
  dimRoundingMode?: 'floor' | 'round' | 'ceil';
  inputShape: [number, number, number, number];
}

/**
 * `Conv2DBackpropInput` for the WebAssembly backend, replacing the backend's
 * own, a scalar loop: with stride 1 and NHWC the input gradient
 * dx[b, i, j, ci] = Σ_{kh, kw, co} dy[b, i + padTop − kh, j + padLeft − kw, co] · W[kh, kw, ci, co]
 * is the stride-1 cross-correlation of dy, padded by (filter − 1 − pad) on each
 * side, with the filter rotated by 180° and its channel axes swapped, so it
 * runs in the backend's Conv2D (XNNPACK, SIMD) on copies of dy and W. Other
 * strides and layouts go to `fallback`, the backend's kernel.
 */
export function conv2DBackpropInputWasm(tf: Tf, fallback: KernelConfig): KernelConfig {
  return {
    ...fallback,
    kernelFunc: (args) => {
      const { inputs, backend, attrs } = args;
      const { dy, filter } = inputs as { dy: TensorInfo; filter: TensorInfo };
      const { strides, pad, dataFormat, dimRoundingMode, inputShape } = attrs as unknown as Conv2DBackpropInputAttrs;
      const filterShape = filter.shape as [number, number, number, number];
      const info = tf.backend_util.computeConv2DInfo(inputShape, filterShape, strides, 1, pad, dimRoundingMode, false, 'channelsLast');
      const [filterHeight, filterWidth] = filterShape;
      const { top, bottom, left, right } = info.padInfo;
      const fullPad: [[number, number], [number, number], [number, number], [number, number]] = [
        [0, 0],
        [filterHeight - 1 - top, filterHeight - 1 - bottom],
        [filterWidth - 1 - left, filterWidth - 1 - right],
        [0, 0],
      ];
      if (dataFormat !== 'NHWC' || info.strideHeight !== 1 || info.strideWidth !== 1 || fullPad.flat().some((p) => p < 0)) {
        return fallback.kernelFunc(args);
      }
      const wasm = backend as unknown as WasmBackendLike;
      // Copies, not views: the tensors below allocate on the wasm heap, which can grow and detach views.
      const dys = wasm.typedArrayFromHeap(dy).slice();
      const ws = wasm.typedArrayFromHeap(filter).slice();
      const gradient = tf.tidy(() => {
        const rotated = tf.transpose(tf.reverse(tf.tensor4d(ws, filterShape), [0, 1]), [0, 1, 3, 2]); // [kh, kw, co, ci]
        return tf.conv2d(tf.tensor4d(dys, dy.shape as [number, number, number, number]), rotated, 1, fullPad); // [b, h, w, ci]
      });
      return outputFrom(wasm, gradient, inputShape);
    },
  };
}

const replaced = new WeakSet<object>();

/**
 * Registers the kernels the wasm backend lacks for training and replaces its
 * `Conv2DBackpropInput` by {@link conv2DBackpropInputWasm} (idempotent). Call
 * it before the backend is first used, so that the replaced kernel's setup runs.
 */
export function registerMissingWasmKernels(tf: Tf): void {
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm') === undefined) tf.registerKernel(conv2DBackpropFilterWasm(tf));
  const input = tf.getKernel('Conv2DBackpropInput', 'wasm');
  if (input !== undefined && !replaced.has(input.kernelFunc)) {
    const faster = conv2DBackpropInputWasm(tf, input);
    replaced.add(faster.kernelFunc);
    tf.unregisterKernel('Conv2DBackpropInput', 'wasm');
    tf.registerKernel(faster);
  }
}
