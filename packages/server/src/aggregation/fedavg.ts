import type { Aggregator, ConfigureFitInput, FitInstructions, FitResult, Rng, Strategy } from './strategy.js';

/**
 * Weighted average of client updates, FedAvg (McMahan et al. 2017,
 * "Communication-Efficient Learning of Deep Networks from Decentralized Data",
 * Algorithm 1): w_{t+1} = w_t + Σ_k (n_k / n) Δ_k with n = Σ_k n_k.
 * Sums are accumulated in float64; the result is float32 like the model.
 */
export function federatedAverage(current: Float32Array, results: readonly FitResult[]): Float32Array | null {
  const aggregator = createFedAvgAggregator(current.length);
  for (const result of results) aggregator.add(result);
  return aggregator.finish(current, []);
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
      const update = result.update;
      for (let i = 0; i < parameterCount; i++) sum[i]! += n * update[i]!;
      totalExamples += n;
      count += 1;
    },
    get count() {
      return count;
    },
    finish(current) {
      if (count === 0) return null;
      if (current.length !== parameterCount) throw new RangeError('current model has the wrong length');
      const next = new Float32Array(parameterCount);
      for (let i = 0; i < parameterCount; i++) next[i] = current[i]! + sum[i]! / totalExamples;
      return next;
    },
  };
}

/** Samples `k` distinct items uniformly (partial Fisher-Yates). */
export function sampleWithoutReplacement<T>(items: readonly T[], k: number, rng: Rng): T[] {
  const pool = items.slice();
  const take = Math.min(k, pool.length);
  for (let i = 0; i < take; i++) {
    const j = i + Math.floor(rng.next() * (pool.length - i));
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
  return items.filter(() => rng.next() < q);
}

/** Number of clients a round selects from `available` (count and fraction selection). */
export function selectionSize(input: Pick<ConfigureFitInput, 'available' | 'selection'>): number {
  const n = input.available.length;
  if (input.selection.kind === 'poisson') throw new RangeError('Poisson selection has a random size');
  if (input.selection.kind === 'count') return Math.min(input.selection.count, n);
  return Math.min(n, Math.max(1, Math.round(input.selection.fraction * n)));
}

export interface FedAvgOptions {
  /** Strategy name reported in round history. Default `fedavg`. */
  name?: string;
}

/** FedAvg with uniform client sampling (Flower's `FedAvg`). */
export function createFedAvg(options: FedAvgOptions = {}): Strategy {
  return {
    name: options.name ?? 'fedavg',
    configureFit(input): FitInstructions {
      const clientIds =
        input.selection.kind === 'poisson'
          ? poissonSample(input.available, input.selection.samplingRate, input.rng)
          : sampleWithoutReplacement(input.available, selectionSize(input), input.rng);
      return { clientIds, config: { ...input.training } };
    },
    createAggregator({ parameterCount }) {
      return createFedAvgAggregator(parameterCount);
    },
  };
}
