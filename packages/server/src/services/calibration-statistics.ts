import type { ActivationRanges, CalibrationPlan } from '@veil/export';
import type { CalibrationFileJson, EncryptedCalibrationFileJson } from '@veil/protocol';
import { VeilError } from '../errors.js';
import { calibrationRounds, decodeStatistics, reportNoiseStddev, type CalibrationOutcome } from '../rounds/calibration.js';
import type { Round, Task } from '../rounds/model.js';

/** What the calibration service reads. */
export interface CalibrationStatisticsPorts {
  getTask(taskId: string): Promise<Task>;
  getRound(taskId: string, number: number): Promise<Round | null>;
  readBlob(ref: { key: string; sha256: string }): Promise<Uint8Array>;
}

/**
 * A task's federated calibration statistics (the file `veil calibration` writes and
 * `veil export --calibration FILE` reads; the wire type is @veil/protocol's).
 */
export type CalibrationFile = CalibrationFileJson<CalibrationPlan, ActivationRanges>;

/** A shared-key task's calibration statistics: the two rounds' sums, encrypted under the task's key (@veil/protocol). */
export type EncryptedCalibrationFile = EncryptedCalibrationFileJson<CalibrationPlan>;

export interface CalibrationStatisticsService {
  /** The statistics of `version` (default: the calibrated one); null when that version has none. */
  find(taskId: string, version?: number): Promise<CalibrationFile | EncryptedCalibrationFile | null>;
  /** {@link find}, or `not_found` with the reason. */
  get(taskId: string, version?: number): Promise<CalibrationFile | EncryptedCalibrationFile>;
}

/**
 * Calibration statistics per model version. A task calibrates its final model in rounds
 * `rounds + 1` (range) and `rounds + 2` (histogram), or the two after its last round when it was
 * calibrated after it ended (`calibrationRounds`); the latter's summary holds the ranges and
 * a reference to the aggregated histogram in the blob store (digest verified on read).
 */
export function createCalibrationStatisticsService(ports: CalibrationStatisticsPorts): CalibrationStatisticsService {
  async function find(taskId: string, version?: number): Promise<{ file: CalibrationFile | EncryptedCalibrationFile | null; why: string }> {
    const task = await ports.getTask(taskId);
    const settings = task.settings.calibration;
    if (!settings) return { file: null, why: 'the task was created without calibration' };
    const numbers = calibrationRounds({ rounds: task.settings.rounds, calibration: settings });
    const [range, histogram] = await Promise.all([ports.getRound(taskId, numbers.range), ports.getRound(taskId, numbers.histogram)]);
    const outcome: CalibrationOutcome | undefined = histogram?.state === 'CLOSED' ? histogram.summary?.calibration : undefined;
    const done = outcome !== undefined && (outcome.activationRanges !== undefined || outcome.encrypted === true);
    if (histogram === null || range === null || !done || histogram.config.calibration === undefined) {
      return { file: null, why: "the task's calibration rounds have not completed" };
    }
    if (version !== undefined && version !== outcome!.modelVersion) {
      return { file: null, why: `model version ${version} has no calibration statistics (version ${outcome!.modelVersion} has)` };
    }
    const rounds = {
      range: { number: range.number, participants: range.summary?.participants ?? 0 },
      histogram: { number: histogram.number, participants: histogram.summary?.participants ?? 0 },
    };
    if (outcome!.encrypted === true) {
      const ddg = task.settings.privacy?.ddg;
      const rangeOutcome = range.summary?.calibration;
      if (rangeOutcome === undefined || range.config.calibration === undefined) return { file: null, why: "the task's range round has no statistics" };
      const [rangeSum, histogramSum] = await Promise.all([ports.readBlob(rangeOutcome.statistics), ports.readBlob(outcome!.statistics)]);
      return {
        why: '',
        file: {
          format: 'veil-calibration-bfv-v1',
          taskId,
          modelVersion: outcome!.modelVersion,
          method: settings.method,
          percentile: settings.percentile,
          bins: settings.bins,
          tailFraction: settings.tailFraction,
          rounds,
          range: { plan: range.config.calibration.plan, sum: Buffer.from(rangeSum).toString('base64'), length: rangeOutcome.statistics.length, scale: range.config.calibration.scale },
          histogram: { sum: Buffer.from(histogramSum).toString('base64'), length: outcome!.statistics.length, scale: histogram.config.calibration.scale },
          ...(reportNoiseStddev(task.settings.privacy) > 0 && { reportNoiseStddev: reportNoiseStddev(task.settings.privacy) }),
          ...(ddg != null && ddg.committee !== true && {
            distributedDp: { scale: ddg.scale, modulus: ddg.modulus, dimension: ddg.dimension, parameterCount: task.parameterCount, minNoiseClients: ddg.noiseClients },
          }),
        },
      };
    }
    const statistics = decodeStatistics(await ports.readBlob({ key: outcome!.statistics.key, sha256: outcome!.statistics.sha256 }));
    return {
      why: '',
      file: {
        format: 'veil-calibration-v1',
        taskId,
        modelVersion: outcome!.modelVersion,
        method: settings.method,
        percentile: settings.percentile,
        activationRanges: outcome!.activationRanges!,
        rounds,
        histogram: { plan: histogram.config.calibration.plan, statistics: Array.from(statistics) },
        ...(range.summary?.calibration?.noiseSwamped !== undefined && { noiseSwamped: range.summary.calibration.noiseSwamped }),
      },
    };
  }
  return {
    async find(taskId, version) {
      return (await find(taskId, version)).file;
    },
    async get(taskId, version) {
      const { file, why } = await find(taskId, version);
      if (file === null) throw new VeilError('not_found', why);
      return file;
    },
  };
}
