import type * as tfjs from '@tensorflow/tfjs';

/**
 * The TensorFlow.js namespace the training layer runs on: `@tensorflow/tfjs`,
 * or `@tensorflow/tfjs-node` (which re-exports the same API). Every training
 * function takes it as a parameter, so the caller picks the backend once with
 * {@link initTensorflow}.
 */
export type Tf = typeof tfjs;

/**
 * The model format of the protocol: the TF.js layers topology (what
 * `model.toJSON(null, false)` returns, i.e. model.json's `modelTopology`) plus
 * the weight specs in `model.getWeights()` order; the weights travel as one
 * flat `Float32Array`, the concatenation of the tensors in that order.
 */
export type { ModelSpec, WeightSpec } from '@veil/protocol';

/**
 * A client's local examples, stored row-major in flat arrays.
 *
 * Invariants: `xs.length === count * product(inputShape)` and
 * `ys.length === count * numClasses`; `ys` is one-hot.
 */
export interface LocalDataset {
  /** Inputs, `count` rows of `product(inputShape)` values. */
  xs: Float32Array;
  /** One-hot labels, `count` rows of `numClasses` values. */
  ys: Float32Array;
  /** Number of examples. */
  count: number;
  /** Shape of one input, without the batch dimension (e.g. `[784]`). */
  inputShape: number[];
  /** Number of classes (length of one label row). */
  numClasses: number;
}
