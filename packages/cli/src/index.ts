export { runDemo, DEMO_DEFAULTS } from './demo/run-demo.js';
export type { DemoOptions, DemoRound, DemoSummary } from './demo/run-demo.js';
export { loadMnist } from './demo/mnist.js';
export { createMnistMlp, MNIST_TRAINING_DEFAULTS } from './demo/model.js';
export { partitionIid, partitionDirichlet, createSeededRng } from './demo/partition.js';
