import type { HeContext } from '@veil/crypto';
import { VeilError } from '../errors.js';
import { poissonSample } from './fedavg.js';
import { createEncryptedAggregator, createPlaintextAggregator, type RoundAggregator } from './round-aggregator.js';
import { createCommitteeAggregator, type CommitteeTask } from './committee-aggregator.js';
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
 * break the accountant's assumption). The inner strategy gets the sample as a
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
      if (sample.length < input.minClients || sample.length > selection.maxCount) {
        return {
          kind: 'fail',
          reason: `Poisson sample of ${sample.length} clients (q=${selection.samplingRate}, ${input.available.length} available) is outside [${input.minClients}, ${selection.maxCount}]`,
        };
      }
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
 * of t custodians (aggregation/committee-aggregator.ts); the plaintext FedAvg becomes the next
 * float32 model. Like encrypted tasks, only a sum-based strategy can run here.
 */
export function committeeRounds(strategy: Strategy, task: CommitteeTask, valueCount: number): RoundStrategy {
  const refusal = encryptedRefusal(strategy);
  if (refusal !== null) throw new VeilError('internal', refusal);
  return {
    name: strategy.name,
    configureFit: (input) => strategy.configureFit(input),
    createRoundAggregator: ({ round }) => createCommitteeAggregator(task, round, valueCount),
  };
}

/** Why a strategy cannot run on an encrypted task, or null when it can. */
export function encryptedRefusal(strategy: Pick<Strategy, 'name' | 'capabilities'>): string | null {
  if (strategy.capabilities.individualUpdates) {
    return `strategy ${strategy.name} reads individual updates, but an encrypted task's coordinator only holds their encrypted sum; use a plaintext task or a sum-based strategy such as fedavg`;
  }
  if (strategy.capabilities.plaintextAggregate) {
    return `strategy ${strategy.name} updates the model from the aggregate in the clear, but an encrypted task's coordinator only holds the encrypted sum; use a plaintext task or fedavg`;
  }
  return null;
}
