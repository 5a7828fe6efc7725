/**
 * Aggregation of calibration statistics (issue 16): a calibration round's
 * reports are zero-padded to the model's parameter count and folded by the
 * same aggregators as the task's updates — the plaintext example-weighted
 * FedAvg sum, or the committee's c0 sum decrypted with t custodians' share
 * sums — applied to a zero "model", so the result is the example-weighted
 * mean of the reports instead of a next model version. Shared-key tasks have
 * no aggregator here: their sums are opened only by key holders.
 */
import { bytesToFloat32 } from '@veil/protocol/codec';
import { VeilError } from '../errors.js';
import type { CommitteeRoundSummary } from '../rounds/model.js';
import { createCommitteeAggregator, type CommitteeTask } from './committee-aggregator.js';
import { createFedAvg } from './fedavg.js';
import { createPlaintextAggregator, type RoundAggregator, type RoundResult } from './round-aggregator.js';
import type { FitFailure } from './strategy.js';

/** How a task's calibration reports are summed: in the clear, or by its committee. */
export type StatisticsMode = { kind: 'plaintext' } | { kind: 'committee'; task: CommitteeTask };

/** Starts the aggregation of calibration round `round` of a task with `parameterCount` parameters. */
export function createStatisticsAggregator(mode: StatisticsMode, round: number, parameterCount: number): RoundAggregator {
  if (mode.kind === 'committee') return createCommitteeAggregator(mode.task, round, parameterCount);
  // FedAvg with no update bound: the reports are frequencies (DP-scaled and noised on the device).
  return createPlaintextAggregator(createFedAvg(), { round, parameterCount, state: null }, null);
}

/** The example-weighted mean of the reports folded into `aggregator`, or null when none was. */
export async function finishStatistics(
  aggregator: RoundAggregator,
  parameterCount: number,
  failures: readonly FitFailure[],
): Promise<{ mean: Float32Array; committee?: CommitteeRoundSummary; decryption?: RoundResult['decryption'] } | null> {
  const zero = new Uint8Array(parameterCount * 4);
  const result = await aggregator.finish({ bytes: zero, encoding: 'float32-le' }, failures, null);
  if (result === null) return null;
  if (result.model.encoding !== 'float32-le') throw new VeilError('internal', 'calibration statistics must aggregate to float32 values');
  const mean = bytesToFloat32(result.model.bytes);
  return { mean, ...(result.committee !== undefined && { committee: result.committee }), ...(result.decryption !== undefined && { decryption: result.decryption }) };
}
