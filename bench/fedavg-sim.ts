/**
 * FedAvg simulation of `veil demo` in one process, no network: N clients with
 * a share of the MNIST training digits each, all clients every round, update
 * average weighted by example count (McMahan et al. 2017), evaluation of the
 * global model on the held-out digits after every round.
 *
 *   npx tsx bench/fedavg-sim.ts [--clients 10] [--rounds 10] [--epochs 2]
 *     [--batch-size 16] [--learning-rate 0.1] [--partition iid|dirichlet]
 *     [--alpha 0.5] [--backend wasm|cpu|node] [--seed 1]
 *
 * Prints one JSON object per round, then a summary object.
 */
import { parseArgs } from 'node:util';
import { evaluateLocal, initTensorflow, trainLocal } from '../packages/client-sdk/src/training/index.js';
import { loadMnist } from '../packages/cli/src/demo/mnist.js';
import { createMnistMlp, MNIST_TRAINING_DEFAULTS } from '../packages/cli/src/demo/model.js';
import { createSeededRng, labelsOf, partitionDirichlet, partitionIid } from '../packages/cli/src/demo/partition.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '10' },
    rounds: { type: 'string', default: '10' },
    epochs: { type: 'string', default: String(MNIST_TRAINING_DEFAULTS.epochs) },
    'batch-size': { type: 'string', default: String(MNIST_TRAINING_DEFAULTS.batchSize) },
    'learning-rate': { type: 'string', default: String(MNIST_TRAINING_DEFAULTS.learningRate) },
    partition: { type: 'string', default: 'iid' },
    alpha: { type: 'string', default: '0.5' },
    backend: { type: 'string', default: 'wasm' },
    seed: { type: 'string', default: '1' },
    'train-count': { type: 'string', default: '8000' },
    'test-count': { type: 'string', default: '2000' },
  },
});

const clients = Number(values.clients);
const rounds = Number(values.rounds);
const epochs = Number(values.epochs);
const batchSize = Number(values['batch-size']);
const learningRate = Number(values['learning-rate']);
const alpha = Number(values.alpha);
const seed = Number(values.seed);
const preferred = values.backend as 'node' | 'wasm' | 'cpu';

const { tf, backend } = await initTensorflow({ preferred });
const { train, test } = loadMnist({ trainCount: Number(values['train-count']), testCount: Number(values['test-count']) });
const rng = createSeededRng(seed);
const shares =
  values.partition === 'dirichlet' ? partitionDirichlet(train, clients, alpha, rng) : partitionIid(train, clients, rng);
const { spec, weights: initial } = createMnistMlp(tf, { seed });

const config = { backend, clients, rounds, epochs, batchSize, learningRate, partition: values.partition, alpha, seed };
console.log(JSON.stringify({ config, clientSizes: shares.map((s) => s.count), dominantLabelShare: shares.map(dominantShare) }));

let global = initial;
const initialEval = await evaluateLocal(tf, { spec, weights: global, data: test });
console.log(JSON.stringify({ round: 0, accuracy: round4(initialEval.accuracy), loss: round4(initialEval.loss) }));
const history: number[] = [];
const benchStartMs = performance.now();
let trainingMs = 0;
for (let round = 1; round <= rounds; round++) {
  const roundStartMs = performance.now();
  const sum = new Float64Array(global.length);
  let totalExamples = 0;
  let lossSum = 0;
  for (const [k, data] of shares.entries()) {
    const result = await trainLocal(tf, {
      spec,
      weights: global,
      data,
      epochs,
      batchSize,
      learningRate,
      seed: seed * 1_000_003 + round * 1009 + k,
    });
    trainingMs += result.durationMs;
    for (let i = 0; i < sum.length; i++) sum[i]! += result.exampleCount * result.delta[i]!;
    totalExamples += result.exampleCount;
    lossSum += result.exampleCount * result.loss;
  }
  const next = new Float32Array(global.length);
  for (let i = 0; i < next.length; i++) next[i] = global[i]! + sum[i]! / totalExamples;
  global = next;
  const trainMs = performance.now() - roundStartMs;
  const evaluation = await evaluateLocal(tf, { spec, weights: global, data: test });
  history.push(evaluation.accuracy);
  console.log(
    JSON.stringify({
      round,
      accuracy: round4(evaluation.accuracy),
      loss: round4(evaluation.loss),
      trainLoss: round4(lossSum / totalExamples),
      roundTrainMs: Math.round(trainMs),
      roundTotalMs: Math.round(performance.now() - roundStartMs),
    }),
  );
}
const wallMs = performance.now() - benchStartMs;
const samples = rounds * epochs * train.count;
console.log(
  JSON.stringify({
    summary: true,
    ...config,
    finalAccuracy: round4(history.at(-1) ?? Number.NaN),
    accuracies: history.map(round4),
    wallMs: Math.round(wallMs),
    trainSamplesPerSecond: Math.round(samples / (trainingMs / 1000)),
    numTensors: tf.memory().numTensors,
  }),
);

function dominantShare(data: { count: number; numClasses: number; ys: Float32Array; xs: Float32Array; inputShape: number[] }): number {
  const counts = new Array<number>(data.numClasses).fill(0);
  for (const label of labelsOf(data)) counts[label]!++;
  return round4(Math.max(...counts) / data.count);
}

function round4(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}
