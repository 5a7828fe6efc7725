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
 * computes it), in plain JavaScript over the wasm heap, accumulated in
 * float64. NHWC only, dilation 1 (what TF.js's Conv2D gradient passes).
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

/** Registers the kernels the wasm backend lacks for training (idempotent). */
export function registerMissingWasmKernels(tf: Tf): void {
  if (tf.getKernel('Conv2DBackpropFilter', 'wasm') === undefined) tf.registerKernel(conv2DBackpropFilterWasm(tf));
}
