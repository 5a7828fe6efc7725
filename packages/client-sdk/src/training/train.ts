import type { LayersModel, Scalar, Tensor, Variable } from '@tensorflow/tfjs';
import { buildModel, countParameters, flattenWeights, setFlatWeights } from './model.js';
import { createSeededRng } from '@veil/privacy';
import { shuffleInPlace } from './rng.js';
import type { LocalDataset, ModelSpec, Tf } from './types.js';

/** Options of {@link trainLocal}. */
export interface TrainLocalOptions {
  /** Model to train (topology and weight layout). */
  spec: ModelSpec;
  /** Global weights to start from, flat in `spec.weightSpecs` order. Not modified. */
  weights: Float32Array;
  /** Local examples. */
  data: LocalDataset;
  /** Full passes over `data`; an integer >= 1. */
  epochs: number;
  /** Examples per SGD step (the last batch of an epoch may be smaller); an integer >= 1. */
  batchSize: number;
  /** SGD step size; > 0. */
  learningRate: number;
  /**
   * Heavy-ball momentum of the local SGD (PyTorch's `SGD(momentum=...)` convention, TF.js
   * `train.momentum`), in [0, 1). Default 0: plain SGD, FedAvg's local solver. NIID-Bench
   * (Li et al. 2022) trains with 0.9.
   */
  momentum?: number;
  /**
   * FedProx's proximal coefficient μ ≥ 0 (Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith 2020,
   * "Federated Optimization in Heterogeneous Networks", MLSys, Algorithm 2): each step minimises
   * the local loss plus μ/2 · ‖w − w_global‖² over the trainable weights, whose gradient adds
   * μ · (w − w_global). Default 0 (FedAvg). Set from the round's fit config `proximalMu`.
   */
  proximalMu?: number;
  /** Aborts training between minibatches; the promise rejects with `signal.reason`. */
  signal?: AbortSignal;
  /**
   * Seed (uint32) of the minibatch shuffle; the same seed, data and weights
   * give the same order of examples. Default: drawn from `Math.random()`.
   */
  seed?: number;
}

/** Result of {@link trainLocal}. */
export interface TrainLocalResult {
  /** Locally trained weights, flat. */
  weights: Float32Array;
  /** The update: `weights[i] - options.weights[i]` in float32, element-wise. */
  delta: Float32Array;
  /** Number of local examples (`data.count`): the FedAvg weight of this update. */
  exampleCount: number;
  /**
   * Mean training objective over the last epoch's minibatches, weighted by batch size:
   * categorical cross-entropy, plus the proximal term when `proximalMu` > 0.
   */
  loss: number;
  /** Wall time of the whole call, in milliseconds. */
  durationMs: number;
}

/**
 * Trains the global model on the local data: minibatch SGD with a fresh
 * optimizer, the local solver of FedAvg (McMahan et al. 2017, Algorithm 1,
 * ClientUpdate), on categorical cross-entropy; with `proximalMu` > 0, the
 * FedProx local objective (Li et al. 2020).
 *
 * Examples are reshuffled every epoch with a seeded generator. All tensors it
 * creates are disposed before it returns or throws.
 */
export async function trainLocal(tf: Tf, options: TrainLocalOptions): Promise<TrainLocalResult> {
  const startedMs = performance.now();
  validateTraining(options);
  const model = await buildModel(tf, options.spec, options.weights);
  try {
    return await trainBuilt(tf, model, options, startedMs);
  } finally {
    model.dispose();
  }
}

/**
 * {@link trainLocal} on a model already built from `options.spec` (by `buildModel`), which a
 * device keeps from round to round instead of deserialising the topology and initialising every
 * weight each time: `options.weights` are loaded into it first (all of them, so nothing of an
 * earlier round remains), and it is left with the trained weights, not disposed.
 */
export async function trainLocalOn(tf: Tf, model: LayersModel, options: TrainLocalOptions): Promise<TrainLocalResult> {
  const startedMs = performance.now();
  validateTraining(options);
  loadWeights(tf, model, options.spec, options.weights);
  return trainBuilt(tf, model, options, startedMs);
}

function loadWeights(tf: Tf, model: LayersModel, spec: ModelSpec, weights: Float32Array): void {
  const expected = countParameters(spec.weightSpecs);
  if (weights.length !== expected) throw new RangeError(`weight vector has ${weights.length} values but the model's weightSpecs describe ${expected}`);
  setFlatWeights(tf, model, spec.weightSpecs, weights);
}

function validateTraining(options: TrainLocalOptions): void {
  const { data, epochs, batchSize, learningRate } = options;
  assertPositiveInteger('epochs', epochs);
  assertPositiveInteger('batchSize', batchSize);
  if (!(learningRate > 0) || !Number.isFinite(learningRate)) {
    throw new RangeError(`learningRate must be a finite number > 0, got ${learningRate}`);
  }
  const momentum = options.momentum ?? 0;
  if (!(momentum >= 0 && momentum < 1)) throw new RangeError(`momentum must be in [0, 1), got ${momentum}`);
  const proximalMu = options.proximalMu ?? 0;
  if (!(proximalMu >= 0) || !Number.isFinite(proximalMu)) {
    throw new RangeError(`proximalMu must be a finite number >= 0, got ${proximalMu}`);
  }
  assertDataset(data);
  options.signal?.throwIfAborted();
}

async function trainBuilt(tf: Tf, model: LayersModel, options: TrainLocalOptions, startedMs: number): Promise<TrainLocalResult> {
  const { weights, data, epochs, batchSize, learningRate, signal } = options;
  const momentum = options.momentum ?? 0;
  const proximalMu = options.proximalMu ?? 0;
  // Minibatch order only (not privacy noise): a seeded, non-cryptographic generator.
  const random = createSeededRng(options.seed ?? Math.floor(Math.random() * 2 ** 32));
  const optimizer = momentum > 0 ? tf.train.momentum(learningRate, momentum) : tf.train.sgd(learningRate);
  let loss = Number.NaN;
  let anchors: Tensor[] = [];
  try {
    const variables = model.trainableWeights.map((weight) => weight.read() as Variable);
    // w_global for the proximal term: copies of the trainable weights as loaded, before any step.
    if (proximalMu > 0) anchors = variables.map((variable) => variable.clone());
    const order = new Uint32Array(data.count);
    for (let i = 0; i < order.length; i++) order[i] = i;

    for (let epoch = 0; epoch < epochs; epoch++) {
      shuffleInPlace(order, random);
      let lossSum: Tensor = tf.scalar(0);
      try {
        for (let start = 0; start < data.count; start += batchSize) {
          // Yield so that an abort (timer, socket event) can be observed mid-epoch.
          await yieldToEventLoop();
          signal?.throwIfAborted();
          const batch = gatherBatch(data, order, start, Math.min(start + batchSize, data.count));
          const next = tf.tidy(() => {
            const xs = tf.tensor(batch.xs, [batch.count, ...data.inputShape], 'float32');
            const ys = tf.tensor(batch.ys, [batch.count, data.numClasses], 'float32');
            const cost = optimizer.minimize(
              (): Scalar => {
                const crossEntropy = tf.metrics.categoricalCrossentropy(ys, predict(model, xs, true)).mean();
                if (proximalMu === 0) return crossEntropy as Scalar;
                const squaredDistance = tf.addN(variables.map((variable, i) => variable.sub(anchors[i]!).square().sum()));
                return crossEntropy.add(squaredDistance.mul(proximalMu / 2)) as Scalar;
              },
              true,
              variables,
            );
            return lossSum.add(cost!.mul(batch.count));
          });
          lossSum.dispose();
          lossSum = next;
        }
        loss = (await lossSum.data())[0]! / data.count;
      } finally {
        lossSum.dispose();
      }
    }

    const trained = flattenWeights(model);
    const delta = new Float32Array(trained.length);
    for (let i = 0; i < trained.length; i++) delta[i] = trained[i]! - weights[i]!;
    return {
      weights: trained,
      delta,
      exampleCount: data.count,
      loss,
      durationMs: performance.now() - startedMs,
    };
  } finally {
    tf.dispose(anchors);
    optimizer.dispose();
    // tfjs-core's MomentumOptimizer.dispose() (optimizers/momentum_optimizer.js) frees its momentum
    // and accumulators but not the learning-rate scalar `c` its SGDOptimizer base keeps: one tensor
    // per momentum round would leak. Disposing a disposed tensor is a no-op, should tfjs fix it.
    if (momentum > 0) (optimizer as unknown as { c?: Tensor }).c?.dispose();
  }
}

/** Options of {@link evaluateLocal}. */
export interface EvaluateLocalOptions {
  spec: ModelSpec;
  /** Weights to evaluate, flat in `spec.weightSpecs` order. */
  weights: Float32Array;
  data: LocalDataset;
  /** Examples per forward pass (memory, not results). Default 500. */
  batchSize?: number;
}

/** Result of {@link evaluateLocal}. */
export interface EvaluateLocalResult {
  /** Mean categorical cross-entropy over `data`. */
  loss: number;
  /** Fraction of examples whose arg-max prediction equals the arg-max label, in [0, 1]. */
  accuracy: number;
  exampleCount: number;
}

/** Loss and accuracy of the model with the given weights on `data`. Disposes every tensor it creates. */
export async function evaluateLocal(tf: Tf, options: EvaluateLocalOptions): Promise<EvaluateLocalResult> {
  assertPositiveInteger('batchSize', options.batchSize ?? 500);
  assertDataset(options.data);
  const model = await buildModel(tf, options.spec, options.weights);
  try {
    return await evaluateBuilt(tf, model, options);
  } finally {
    model.dispose();
  }
}

/** {@link evaluateLocal} on a model built from `options.spec`, kept by the caller: `options.weights` are loaded into it first. */
export async function evaluateLocalOn(tf: Tf, model: LayersModel, options: EvaluateLocalOptions): Promise<EvaluateLocalResult> {
  assertPositiveInteger('batchSize', options.batchSize ?? 500);
  assertDataset(options.data);
  loadWeights(tf, model, options.spec, options.weights);
  return evaluateBuilt(tf, model, options);
}

async function evaluateBuilt(tf: Tf, model: LayersModel, options: EvaluateLocalOptions): Promise<EvaluateLocalResult> {
  const { data } = options;
  const batchSize = options.batchSize ?? 500;
  const inputSize = data.xs.length / data.count;
  let lossSum = 0;
  let correct = 0;
  for (let start = 0; start < data.count; start += batchSize) {
    const end = Math.min(start + batchSize, data.count);
    const count = end - start;
    const [batchLoss, batchCorrect] = tf.tidy(() => {
      const xs = tf.tensor(data.xs.subarray(start * inputSize, end * inputSize), [count, ...data.inputShape], 'float32');
      const ys = tf.tensor(data.ys.subarray(start * data.numClasses, end * data.numClasses), [count, data.numClasses], 'float32');
      const predictions = predict(model, xs, false);
      return [
        tf.metrics.categoricalCrossentropy(ys, predictions).sum(),
        predictions.argMax(1).equal(ys.argMax(1)).sum(),
      ];
    });
    try {
      lossSum += (await batchLoss.data())[0]!;
      correct += (await batchCorrect.data())[0]!;
    } finally {
      batchLoss.dispose();
      batchCorrect.dispose();
    }
    await yieldToEventLoop();
  }
  return { loss: lossSum / data.count, accuracy: correct / data.count, exampleCount: data.count };
}

function predict(model: LayersModel, xs: Tensor, training: boolean): Tensor {
  const output = model.apply(xs, { training });
  if (Array.isArray(output) || !('dataSync' in output)) {
    throw new TypeError('model must have exactly one output tensor');
  }
  return output as Tensor;
}

/** Copies the rows `order[start..end)` into fresh contiguous arrays. */
function gatherBatch(data: LocalDataset, order: Uint32Array, start: number, end: number) {
  const inputSize = data.xs.length / data.count;
  const count = end - start;
  const xs = new Float32Array(count * inputSize);
  const ys = new Float32Array(count * data.numClasses);
  for (let row = 0; row < count; row++) {
    const example = order[start + row]!;
    xs.set(data.xs.subarray(example * inputSize, (example + 1) * inputSize), row * inputSize);
    ys.set(data.ys.subarray(example * data.numClasses, (example + 1) * data.numClasses), row * data.numClasses);
  }
  return { xs, ys, count };
}

function assertDataset(data: LocalDataset): void {
  assertPositiveInteger('data.count', data.count);
  const inputSize = data.inputShape.reduce((a, b) => a * b, 1);
  if (data.xs.length !== data.count * inputSize) {
    throw new RangeError(
      `data.xs has ${data.xs.length} values, expected count ${data.count} x input size ${inputSize}`,
    );
  }
  if (data.ys.length !== data.count * data.numClasses) {
    throw new RangeError(
      `data.ys has ${data.ys.length} values, expected count ${data.count} x numClasses ${data.numClasses}`,
    );
  }
}

function assertPositiveInteger(name: string, value: number): void {
  if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be an integer >= 1, got ${value}`);
}

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => {
    if (typeof setImmediate === 'function') setImmediate(resolve);
    else setTimeout(resolve, 0);
  });
}
