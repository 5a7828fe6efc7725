import { VeilError } from '../errors.js';
import type { Aggregator, ConfigureFitInput, FitConfig, FitPlan, FitResult, Rng, Strategy, StrategyDefinition } from './strategy.js';

/**
 * Weighted average of client updates, FedAvg (McMahan et al. 2017,
 * "Communication-Efficient Learning of Deep Networks from Decentralized Data",
 * Algorithm 1): w_{t+1} = w_t + Σ_k (n_k / n) Δ_k with n = Σ_k n_k.
 * Sums are accumulated in float64; the result is float32 like the model.
 */
export function federatedAverage(current: Float32Array, results: readonly FitResult[]): Float32Array | null {
  const aggregator = createFedAvgAggregator(current.length);
  for (const result of results) aggregator.add(result);
  return aggregator.finish({ round: 1, current, failures: [], state: null })?.parameters ?? null;
}

/** Incremental FedAvg: Σ n_k Δ_k and Σ n_k, folded one update at a time. */
export function createFedAvgAggregator(parameterCount: number): Aggregator {
  const sum = new Float64Array(parameterCount);
  let totalExamples = 0;
  let count = 0;
  return {
    add(result) {
      if (result.update.length !== parameterCount) {
        throw new RangeError(`update has ${result.update.length} values, expected ${parameterCount}`);
      }
      if (!Number.isInteger(result.exampleCount) || result.exampleCount <= 0) {
        throw new RangeError('exampleCount must be a positive integer');
      }
      const n = result.exampleCount;
      addWeighted(sum, result.update, n);
      totalExamples += n;
      count += 1;
    },
    get count() {
      return count;
    },
    finish({ current }) {
      if (count === 0) return null;
      if (current.length !== parameterCount) throw new RangeError('current model has the wrong length');
      const next = new Float32Array(parameterCount);
      stepInto(next, current, sum, totalExamples);
      return { parameters: next, state: null };
    },
  };
}

// The 100,000-value loops run in module-level functions that end with the loop (as the committee
// path's, committee-aggregator.ts): inline in the per-round aggregator's methods, each round's new
// closures started in the interpreter and their loops' on-stack-replaced code deoptimized at the
// exit, where the statements after the loop had no type feedback (`add`: 50 times in a 60-round
// plaintext bench:rounds run, --trace-deopt), boxing doubles and recompiling on V8's helper threads.

/** sum[i] += n · update[i] for every value of `sum` (`update` has as many: checked by the caller). */
function addWeighted(sum: Float64Array, update: Float32Array, n: number): void {
  const count = sum.length;
  for (let i = 0; i < count; i++) sum[i]! += n * update[i]!;
}

/** next[i] = current[i] + sum[i] / total for every value of `next`. */
function stepInto(next: Float32Array, current: Float32Array, sum: Float64Array, total: number): void {
  const count = next.length;
  for (let i = 0; i < count; i++) next[i] = current[i]! + sum[i]! / total;
}

/** Samples `k` distinct items uniformly (partial Fisher-Yates). */
export function sampleWithoutReplacement<T>(items: readonly T[], k: number, rng: Rng): T[] {
  const pool = items.slice();
  const take = Math.min(k, pool.length);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(rng.nextDouble() * (pool.length - i));
    [pool[i], pool[j]] = [pool[j]!, pool[i]!];
  }
  return pool.slice(0, take);
}

/**
 * Poisson sampling: each item independently with probability q — the
 * sampling the RDP accountant of the subsampled Gaussian assumes (Mironov,
 * Talwar & Zhang 2019). The sample size is random (Binomial(n, q)).
 */
export function poissonSample<T>(items: readonly T[], q: number, rng: Rng): T[] {
  return items.filter(() => rng.nextDouble() < q);
}

/** Number of clients a round selects from `available` (count and fraction selection). */
export function selectionSize(input: Pick<ConfigureFitInput, 'available' | 'selection'>): number {
  const n = input.available.length;
  if (input.selection.kind === 'poisson') throw new RangeError('Poisson selection has a random size');
  if (input.selection.kind === 'count') return Math.min(input.selection.count, n);
  return Math.min(n, Math.max(1, Math.round(input.selection.fraction * n)));
}

/**
 * Uniform selection of a count or a fraction of the available devices
 * (Flower's `ClientManager.sample`), sending each `config`: what most
 * strategies' `configureFit` does. Waits while fewer than `minClients` could
 * be selected. Poisson selection belongs to the DP wrapper
 * (`withPoissonSampling`), which hands the strategy its sample as a count.
 */
export function sampleClients(input: ConfigureFitInput, config: FitConfig = {}): FitPlan {
  if (input.selection.kind === 'poisson') {
    throw new VeilError('internal', 'Poisson selection reached a strategy unwrapped (withPoissonSampling selects for DP tasks)');
  }
  const clientIds = sampleWithoutReplacement(input.available, selectionSize(input), input.rng);
  if (clientIds.length < input.minClients) {
    return { kind: 'wait', reason: `${clientIds.length} clients could be selected, the round needs ${input.minClients}` };
  }
  return { kind: 'fit', clientIds, config };
}

/** Refuses parameters a strategy does not know (a typo must not silently run the defaults). */
export function rejectUnknownParams(strategy: string, params: Readonly<Record<string, unknown>>, known: readonly string[]): void {
  for (const key of Object.keys(params)) {
    if (!known.includes(key)) {
      throw new VeilError('invalid_argument', `strategy ${strategy} has no parameter ${key}${known.length > 0 ? ` (it takes ${known.join(', ')})` : ' (it takes none)'}`);
    }
  }
}

/** FedAvg with uniform client sampling (Flower's `FedAvg`). Stateless; runs in every mode (its sum is what encryption computes). */
export function createFedAvg(): Strategy {
  return {
    name: 'fedavg',
    params: {},
    capabilities: { individualUpdates: false, plaintextAggregate: false },
    configureFit: (input) => sampleClients(input),
    createAggregator: ({ parameterCount }) => createFedAvgAggregator(parameterCount),
  };
}

/** FedAvg's registration: `strategy: { name: 'fedavg' }` (no parameters; the default strategy). */
export const fedAvgDefinition: StrategyDefinition = {
  name: 'fedavg',
  create(params) {
    rejectUnknownParams('fedavg', params, []);
    return createFedAvg();
  },
};
