export { runDemo, DEMO_DEFAULTS } from './demo/run-demo.js';
export type { DemoOptions, DemoRound, DemoSummary } from './demo/run-demo.js';
export { loadMnist } from './demo/mnist.js';
export { createMnistMlp, createSimpleCnn, MNIST_TRAINING_DEFAULTS } from './demo/model.js';
export { loadFashionMnist, FASHION_MNIST_CLASSES, FASHION_MNIST_DEBIAN_DIR } from './demo/fashion-mnist.js';
export { parseIdx } from './demo/idx.js';
export type { IdxArray } from './demo/idx.js';
export { partitionIid, partitionDirichlet, createSeededRng } from './demo/partition.js';
