import type { ActivationRanges, CalibrationPlan } from '@veil/export';
import { VeilError } from '../errors.js';
import { calibrationRounds, decodeStatistics, type CalibrationOutcome } from '../rounds/calibration.js';
import type { Round, Task } from '../rounds/model.js';

/** What the calibration service reads. */
export interface CalibrationStatisticsPorts {
  getTask(taskId: string): Promise<Task>;
  getRound(taskId: string, number: number): Promise<Round | null>;
  readBlob(ref: { key: string; sha256: string }): Promise<Uint8Array>;
}

/**
 * A task's federated calibration statistics (the file `veil calibration` writes and
 * `veil export --calibration FILE` reads): the activation ranges chosen for a model version and
 * the aggregated histograms they were chosen from.
 */
export interface CalibrationFile {
  format: 'veil-calibration-v1';
  taskId: string;
  modelVersion: number;
  /** Range choice and its parameter, as the task set them. */
  method: string;
  percentile: number;
  activationRanges: ActivationRanges;
  /** The two calibration rounds, with the devices each aggregated. */
  rounds: { range: { number: number; participants: number }; histogram: { number: number; participants: number } };
  /** The histogram round's plan and its aggregated statistics (frequencies; DP noise included where the task uses DP). */
  histogram: { plan: CalibrationPlan; statistics: number[] };
}

/**
 * A shared-key task's calibration statistics: the two rounds' sums as the coordinator holds them,
 * encrypted under the task's key (bfv-sum-v1, base64). A key holder decrypts the range sum, derives
 * the histogram plan from it (`planHistogramRound` with `bins` and `tailFraction`), decrypts the
 * histogram sum and chooses the ranges (`veil calibration --device-key` writes the
 * veil-calibration-v1 file from it).
 */
export interface EncryptedCalibrationFile {
  format: 'veil-calibration-bfv-v1';
  taskId: string;
  modelVersion: number;
  method: string;
  percentile: number;
  bins: number;
  tailFraction: number;
  rounds: CalibrationFile['rounds'];
  /**
   * The range round's plan and the encrypted sum of its reports (`length` values); `scale` is the
   * factor each report was multiplied by (C / sqrt(m) under local DP, else 1): divide the decrypted mean by it.
   */
  range: { plan: CalibrationPlan; sum: string; length: number; scale: number };
  /** The encrypted sum of the histogram round's reports (`length` values, on the derived plan), and their `scale`. */
  histogram: { sum: string; length: number; scale: number };
}

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
