/**
 * The demo's default settings, apart from run-demo.ts so that `veil` can print its usage (which
 * quotes them) without loading the demo's dependencies (the coordinator, TF.js, SEAL): every
 * other command imports what it runs lazily.
 */
import type { DemoOptions } from './run-demo.js';

/**
 * Local-training defaults of the MNIST demo (plain SGD, the FedAvg local
 * solver), tuned with `bench/fedavg-sim.ts` for 10 clients x 800 digits,
 * 10 rounds: about 0.95 test accuracy on IID shares and on Dirichlet(0.5)
 * label skew. Batch 32 with step 0.3 is ~25% faster per round on IID data
 * but oscillates under label skew.
 */
export const MNIST_TRAINING_DEFAULTS = {
  /** Local epochs per round. */
  epochs: 2,
  /** Examples per SGD step. */
  batchSize: 16,
  /** SGD step size. */
  learningRate: 0.2,
} as const;

/** The committee DP demo's default colluder allowance (devices assumed to collude with the coordinator). */
export const DEMO_DP_COLLUDING = 1;

export const DEMO_DEFAULTS: DemoOptions = {
  clients: 10,
  rounds: 10,
  partition: 'iid',
  alpha: 0.5,
  epochs: MNIST_TRAINING_DEFAULTS.epochs,
  batchSize: MNIST_TRAINING_DEFAULTS.batchSize,
  learningRate: MNIST_TRAINING_DEFAULTS.learningRate,
  seed: 1,
  roundDeadlineMs: 180_000,
  json: false,
  plaintext: false,
  sharedKey: false,
  dp: null,
  dataDir: undefined,
  keepRunning: false,
  httpPort: 0,
};
