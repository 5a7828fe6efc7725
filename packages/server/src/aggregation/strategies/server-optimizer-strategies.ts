import { createFedAvgAggregator, sampleClients } from '../fedavg.js';
import type { Aggregator, AggregatorInput, FinishInput, FinishOutput, Strategy, StrategyDefinition, StrategyState } from '../strategy.js';
import { adaptiveStep, type AdaptiveOptimizerKind, type AdaptiveOptimizerOptions } from './adaptive-optimizers.js';
import { readParams } from './params.js';
import { fedAvgMStep } from './server-momentum.js';

/**
 * An aggregator that folds results like FedAvg and hands the round's average
 * update Δ_t = Σ n_k Δ_k / Σ n_k to `step`, which turns it and the state into
 * the next model (a server optimizer on the plaintext aggregate).
 */
function serverOptimizerAggregator(
  { parameterCount }: AggregatorInput,
  step: (input: FinishInput, averageUpdate: Float32Array) => FinishOutput,
): Aggregator {
  const average = createFedAvgAggregator(parameterCount);
  return {
    add: (result) => average.add(result),
    get count() {
      return average.count;
    },
    finish(input) {
      // FedAvg from a zero model is exactly the weighted mean of the updates.
      const mean = average.finish({ ...input, current: new Float32Array(parameterCount), state: null });
      if (mean === null) return null;
      return step(input, mean.parameters);
    },
  };
}

const SERVER_OPTIMIZER = { individualUpdates: false, plaintextAggregate: true } as const;

/**
 * FedAvgM (Hsu, Qi & Brown 2019): FedAvg with server momentum. Parameters
 * `serverLearningRate` η (default 1) and `momentum` β (default 0.9, as in the
 * paper's experiments). State: the momentum buffer `velocity`.
 */
export const fedAvgMDefinition: StrategyDefinition = {
  name: 'fedavgm',
  create(params) {
    const read = readParams('fedavgm', params, ['serverLearningRate', 'momentum']);
    const options = {
      serverLearningRate: read.number('serverLearningRate', 1, { min: 0, exclusiveMin: true }),
      momentum: read.number('momentum', 0.9, { min: 0, max: 1, exclusiveMax: true }),
    };
    const strategy: Strategy = {
      name: 'fedavgm',
      params: options,
      capabilities: SERVER_OPTIMIZER,
      configureFit: (input) => sampleClients(input),
      createAggregator: (input) =>
        serverOptimizerAggregator(input, ({ current, state }, averageUpdate) => {
          const velocity = vectorOf(state, 'velocity', current.length);
          const step = fedAvgMStep(current, averageUpdate, { velocity }, options);
          return { parameters: step.next, state: { scalars: {}, vectors: { velocity: step.state.velocity! } } };
        }),
    };
    return strategy;
  },
};

/**
 * Defaults per optimizer, those of Flower's `FedAdam`, `FedYogi` and
 * `FedAdagrad` (eta, beta_1, beta_2, tau).
 */
const ADAPTIVE_DEFAULTS: Record<AdaptiveOptimizerKind, Omit<AdaptiveOptimizerOptions, 'biasCorrection'>> = {
  adam: { eta: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-9 },
  yogi: { eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 },
  adagrad: { eta: 0.1, beta1: 0, beta2: 0, tau: 1e-9 },
};

function adaptiveDefinition(kind: AdaptiveOptimizerKind): StrategyDefinition {
  const name = `fed${kind}`;
  return {
    name,
    create(params) {
      const defaults = ADAPTIVE_DEFAULTS[kind];
      const keys = ['eta', 'beta1', 'beta2', 'tau', ...(kind === 'adam' ? ['biasCorrection'] : [])].filter(
        (key) => !(kind === 'adagrad' && key === 'beta2'),
      );
      const read = readParams(name, params, keys);
      const options: AdaptiveOptimizerOptions = {
        eta: read.number('eta', defaults.eta, { min: 0, exclusiveMin: true }),
        beta1: read.number('beta1', defaults.beta1, { min: 0, max: 1, exclusiveMax: true }),
        beta2: kind === 'adagrad' ? 0 : read.number('beta2', defaults.beta2, { min: 0, max: 1, exclusiveMax: true }),
        tau: read.number('tau', defaults.tau, { min: 0, exclusiveMin: true }),
        ...(kind === 'adam' && { biasCorrection: read.boolean('biasCorrection', false) }),
      };
      const stored: Record<string, number | boolean> = { eta: options.eta, beta1: options.beta1, tau: options.tau };
      if (kind !== 'adagrad') stored['beta2'] = options.beta2;
      if (kind === 'adam') stored['biasCorrection'] = options.biasCorrection === true;
      return {
        name,
        params: stored,
        capabilities: SERVER_OPTIMIZER,
        configureFit: (input) => sampleClients(input),
        createAggregator: (input) =>
          serverOptimizerAggregator(input, ({ current, state }, averageUpdate) => {
            const previous = {
              m: vectorOf(state, 'm', current.length),
              v: vectorOf(state, 'v', current.length),
              step: state?.scalars['step'] ?? 0,
            };
            const step = adaptiveStep(kind, current, averageUpdate, previous, options);
            return {
              parameters: step.next,
              state: { scalars: { step: step.state.step }, vectors: { m: step.state.m!, v: step.state.v! } },
            };
          }),
      };
    },
  };
}

/** FedAdam (Reddi et al. 2021, Algorithm 2). Parameters eta, beta1, beta2, tau, biasCorrection. */
export const fedAdamDefinition = adaptiveDefinition('adam');
/** FedYogi (Reddi et al. 2021, Algorithm 2). Parameters eta, beta1, beta2, tau. */
export const fedYogiDefinition = adaptiveDefinition('yogi');
/** FedAdagrad (Reddi et al. 2021, Algorithm 2). Parameters eta, beta1, tau. */
export const fedAdagradDefinition = adaptiveDefinition('adagrad');

/** A vector of the stored state, or null before the first step; a stored vector of the wrong length is a bug. */
function vectorOf(state: StrategyState | null, name: string, length: number): Float32Array | null {
  const vector = state?.vectors[name];
  if (vector === undefined) return null;
  if (vector.length !== length) throw new RangeError(`strategy state ${name} has ${vector.length} values, expected ${length}`);
  return vector;
}
