import { describeModel, type ModelSpec, type Tf } from '@veil/client-sdk';
import { createSeededRng } from './partition.js';

/** Local-training defaults of the MNIST demo: in defaults.ts (`veil`'s usage quotes them without loading TF.js). */
export { MNIST_TRAINING_DEFAULTS } from './defaults.js';

/** Options of {@link createMnistMlp}. */
export interface CreateMnistMlpOptions {
  /** Seed of the Glorot-uniform initial weights. Default 1; the same seed gives the same weights. */
  seed?: number;
  /**
   * Units of the ReLU hidden layers. Default [200, 200] (the 2NN); [] gives
   * multinomial logistic regression (784-10 softmax, 7,850 parameters), the
   * small model that DP-FedAvg with a few hundred devices can train.
   */
  hidden?: readonly number[];
}

/**
 * The demo model: a 784-200-200-10 multilayer perceptron (ReLU hidden layers,
 * softmax output; the "2NN" of McMahan et al. 2017), 199,210 parameters.
 *
 * Kernels are Glorot-uniform (Glorot & Bengio 2010: U(±sqrt(6 / (fanIn +
 * fanOut)))) drawn from a seeded generator, biases zero, so the initial global
 * model is reproducible regardless of the TF.js backend.
 */
export function createMnistMlp(tf: Tf, options: CreateMnistMlpOptions = {}): { spec: ModelSpec; weights: Float32Array } {
  const hidden = options.hidden ?? [200, 200];
  const layers = hidden.map((units, i) =>
    tf.layers.dense({ name: `hidden${i + 1}`, ...(i === 0 && { inputShape: [784] }), units, activation: 'relu' }),
  );
  layers.push(tf.layers.dense({ name: 'output', ...(hidden.length === 0 && { inputShape: [784] }), units: 10, activation: 'softmax' }));
  const model = tf.sequential({ name: 'veil_mnist_mlp', layers });
  try {
    const spec = describeModel(model);
    const { weightSpecs } = spec;
    const rng = createSeededRng(options.seed ?? 1);
    const total = weightSpecs.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0);
    const weights = new Float32Array(total);
    let offset = 0;
    for (const { shape } of weightSpecs) {
      const size = shape.reduce((a, b) => a * b, 1);
      if (shape.length === 2) {
        const [fanIn, fanOut] = shape as [number, number];
        const limit = Math.sqrt(6 / (fanIn + fanOut));
        for (let i = 0; i < size; i++) weights[offset + i] = (2 * rng.nextDouble() - 1) * limit;
      } // 1-D weights are biases: zero.
      offset += size;
    }
    return { spec, weights };
  } finally {
    model.dispose();
  }
}

/** Options of {@link createSimpleCnn}. */
export interface CreateSimpleCnnOptions {
  /** Seed of the initial weights. Default 1; the same seed gives the same weights. */
  seed?: number;
}

/**
 * NIID-Bench's simple CNN for 28 x 28 grey images (Li, Diao, Chen & He 2022,
 * "Federated Learning on Non-IID Data Silos: An Experimental Study", ICDE;
 * `SimpleCNNMNIST` in its `model.py`): conv 5x5 with 6 filters, ReLU, max-pool
 * 2; conv 5x5 with 16 filters, ReLU, max-pool 2; flatten (4 x 4 x 16 = 256);
 * dense 120 ReLU, dense 84 ReLU, dense 10 softmax (NIID-Bench's last layer
 * outputs logits into a cross-entropy loss: the same model). 44,426 parameters.
 *
 * Input [28, 28, 1] (NHWC, TF.js's layout; PyTorch's is NCHW). Initial
 * weights follow PyTorch's default for Conv2d and Linear (kaiming-uniform with
 * a = √5, i.e. U(±1/√fanIn) for kernels and biases), drawn from a seeded
 * generator so runs are reproducible on any backend.
 */
export function createSimpleCnn(tf: Tf, options: CreateSimpleCnnOptions = {}): { spec: ModelSpec; weights: Float32Array } {
  const model = tf.sequential({
    name: 'niid_bench_simple_cnn',
    layers: [
      tf.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 6, kernelSize: 5, activation: 'relu' }),
      tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2, strides: 2 }),
      tf.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 5, activation: 'relu' }),
      tf.layers.maxPooling2d({ name: 'pool2', poolSize: 2, strides: 2 }),
      tf.layers.flatten({ name: 'flatten' }),
      tf.layers.dense({ name: 'fc1', units: 120, activation: 'relu' }),
      tf.layers.dense({ name: 'fc2', units: 84, activation: 'relu' }),
      tf.layers.dense({ name: 'fc3', units: 10, activation: 'softmax' }),
    ],
  });
  try {
    const spec = describeModel(model);
    const { weightSpecs } = spec;
    const rng = createSeededRng(options.seed ?? 1);
    const total = weightSpecs.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0);
    const weights = new Float32Array(total);
    let offset = 0;
    let fanIn = 1;
    for (const { shape } of weightSpecs) {
      const size = shape.reduce((a, b) => a * b, 1);
      // Kernels are [kh, kw, in, out] or [in, out]: fan-in is every dimension but the last.
      // A bias (1-D) uses the fan-in of the kernel before it, as PyTorch does.
      if (shape.length > 1) fanIn = size / shape[shape.length - 1]!;
      const bound = 1 / Math.sqrt(fanIn);
      for (let i = 0; i < size; i++) weights[offset + i] = (2 * rng.nextDouble() - 1) * bound;
      offset += size;
    }
    return { spec, weights };
  } finally {
    model.dispose();
  }
}
