import type { HeContext } from '@veil/crypto';
import { VeilError } from '../errors.js';
import { poissonSample } from './fedavg.js';
import { checkStrategyState, createEncryptedAggregator, createPlaintextAggregator, type RoundAggregator } from './round-aggregator.js';
import { createCommitteeAggregator, type CommitteeServerStep, type CommitteeTask } from './committee-aggregator.js';
import { assertFinite } from '../rounds/task-settings.js';
import { poissonSampleRefusal } from '../rounds/privacy-budget.js';
import type { AggregatorInput, ConfigureFitInput, FitPlan, Strategy } from './strategy.js';
import type { UpdateBound } from '../rounds/model.js';

/**
 * What the round loop runs: a strategy's round configuration, and an
 * aggregator over update payloads (bytes as received). Made by wrapping a
 * {@link Strategy}: {@link plaintextRounds} for plaintext tasks,
 * {@link encryptedRounds} for encrypted ones, with
 * {@link withPoissonSampling} inside for DP tasks. The loop has no branch on
 * the task's mode.
 */
export interface RoundStrategy {
  readonly name: string;
  configureFit(input: ConfigureFitInput): FitPlan;
  /** Starts one round's aggregation over update payloads. */
  createRoundAggregator(input: AggregatorInput): RoundAggregator;
}

/**
 * DP selection around a strategy: Poisson sampling with rate q, each
 * available device independently — the sampling the accountant of the
 * subsampled Gaussian assumes (Mironov, Talwar & Zhang 2019). The sample is
 * used as drawn: one outside `[minClients, maxCount]` fails the round before
 * anything is computed, so nothing is released or spent (re-drawing would
 * break the accountant's assumption; the bounds are rounds/privacy-budget.ts's
 * `poissonSampleRefusal`). The inner strategy gets the sample as a
 * `count` selection and must select all of it (it configures, it does not
 * choose). Tasks without Poisson selection pass through unchanged.
 */
export function withPoissonSampling(strategy: Strategy): Strategy {
  return {
    ...strategy,
    configureFit(input) {
      const selection = input.selection;
      if (selection.kind !== 'poisson') return strategy.configureFit(input);
      const sample = poissonSample(input.available, selection.samplingRate, input.rng);
      const refusal = poissonSampleRefusal(sample.length, { available: input.available.length, minClients: input.minClients, selection });
      if (refusal !== null) return { kind: 'fail', reason: refusal };
      const plan = strategy.configureFit({ ...input, available: sample, selection: { kind: 'count', count: sample.length } });
      if (plan.kind === 'fit') {
        const chosen = new Set(plan.clientIds);
        if (chosen.size !== sample.length || sample.some((id) => !chosen.has(id))) {
          throw new VeilError('internal', `strategy ${strategy.name} changed the Poisson sample of a DP round`);
        }
      }
      return plan;
    },
  };
}

/**
 * A plaintext task's rounds: float32 updates folded by the strategy's own aggregator, each within
 * the task's `bound` (clipped when folded, or refused; see aggregation/update-bound.ts).
 */
export function plaintextRounds(strategy: Strategy, bound: UpdateBound | null = null): RoundStrategy {
  return {
    name: strategy.name,
    configureFit: (input) => strategy.configureFit(input),
    createRoundAggregator: (input) => createPlaintextAggregator(strategy, input, bound),
  };
}

/**
 * An encrypted task's rounds (secure aggregation around a strategy): the
 * strategy configures the rounds; the coordinator sums the BFV-encrypted
 * updates homomorphically and the encrypted sum becomes the next model
 * version, which key holders decrypt and apply. Only a strategy whose
 * aggregate is that weighted sum can run here: one that reads individual
 * updates or computes on the plaintext aggregate is refused.
 */
export function encryptedRounds(strategy: Strategy, he: HeContext, valueCount: number): RoundStrategy {
  const refusal = encryptedRefusal(strategy);
  if (refusal !== null) throw new VeilError('internal', refusal);
  return {
    name: strategy.name,
    configureFit: (input) => strategy.configureFit(input),
    createRoundAggregator: () => createEncryptedAggregator(he, valueCount),
  };
}

/**
 * A committee task's rounds (issue 11): the strategy configures the rounds; the coordinator adds
 * the devices' c0's mod q and, at the round's end, decrypts the weighted sum with the share sums
 * of t custodians (aggregation/committee-aggregator.ts). The coordinator then holds the round's
 * plaintext FedAvg update Δ_t = Σ n_k Δ_k / Σ n_k (never an individual update), so the strategy's
 * server step runs on it: FedAvg and FedProx add it to the model; a server optimizer (FedAvgM,
 * FedAdam, FedYogi, FedAdagrad) gets it as the one result of its aggregator, with weight 1, and
 * turns it and its state into the next float32 model, exactly as on a plaintext task whose
 * results average to Δ_t (their aggregators only read that weighted mean). A strategy that reads
 * individual updates is refused.
 */
export function committeeRounds(strategy: Strategy, task: CommitteeTask, valueCount: number): RoundStrategy {
  const refusal = encryptedRefusal(strategy, 'committee');
  if (refusal !== null) throw new VeilError('internal', refusal);
  const serverStep: CommitteeServerStep | undefined = strategy.capabilities.plaintextAggregate
    ? ({ round, current, mean, failures, state }) => {
        const aggregator = strategy.createAggregator({ round, parameterCount: current.length, state });
        aggregator.add({ clientId: 'committee-aggregate', exampleCount: 1, update: Float32Array.from(mean) });
        const next = aggregator.finish({ round, current, failures, state });
        if (next === null) throw new VeilError('internal', `strategy ${strategy.name} kept the model after a decrypted committee aggregate`);
        if (next.parameters.length !== current.length) {
          throw new VeilError('internal', `strategy ${strategy.name} returned ${next.parameters.length} parameters, the model has ${current.length}`);
        }
        assertFinite(next.parameters, 'aggregated model');
        if (next.state !== null) checkStrategyState(next.state, strategy.name);
        return next;
      }
    : undefined;
  return {
    name: strategy.name,
    configureFit: (input) => strategy.configureFit(input),
    createRoundAggregator: ({ round }) => createCommitteeAggregator(task, round, valueCount, serverStep),
  };
}

/**
 * Why a strategy cannot run on an encrypted task, or null when it can. `shared-key` (BFV under
 * one key): the coordinator holds only the encrypted sum, so neither individual updates nor a
 * server step on the aggregate. `committee`: the coordinator decrypts the round's average, so a
 * server step on it runs; individual updates stay out of reach.
 */
export function encryptedRefusal(strategy: Pick<Strategy, 'name' | 'capabilities'>, mode: 'shared-key' | 'committee' = 'shared-key'): string | null {
  if (strategy.capabilities.individualUpdates) {
    return mode === 'committee'
      ? `strategy ${strategy.name} reads individual updates, but a committee task's coordinator only ever decrypts the sum of a round's updates; use a plaintext task, or a strategy that needs only the aggregate (fedavg, fedprox, fedavgm, fedadam, fedyogi, fedadagrad)`
      : `strategy ${strategy.name} reads individual updates, but an encrypted task's coordinator only holds their encrypted sum; use a plaintext task or a sum-based strategy such as fedavg`;
  }
  if (mode === 'shared-key' && strategy.capabilities.plaintextAggregate) {
    return `strategy ${strategy.name} updates the model from the aggregate in the clear, but an encrypted task's coordinator only holds the encrypted sum; use a plaintext task, a committee task or fedavg`;
  }
  return null;
}
