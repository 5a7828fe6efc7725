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

export interface CalibrationStatisticsService {
  /** The statistics of `version` (default: the calibrated one); null when that version has none. */
  find(taskId: string, version?: number): Promise<CalibrationFile | null>;
  /** {@link find}, or `not_found` with the reason. */
  get(taskId: string, version?: number): Promise<CalibrationFile>;
}

/**
 * Calibration statistics per model version. A task calibrates its final model in rounds
 * `rounds + 1` (range) and `rounds + 2` (histogram), or the two after its last round when it was
 * calibrated after it ended (`calibrationRounds`); the latter's summary holds the ranges and
 * a reference to the aggregated histogram in the blob store (digest verified on read).
 */
export function createCalibrationStatisticsService(ports: CalibrationStatisticsPorts): CalibrationStatisticsService {
  async function find(taskId: string, version?: number): Promise<{ file: CalibrationFile | null; why: string }> {
    const task = await ports.getTask(taskId);
    const settings = task.settings.calibration;
    if (!settings) return { file: null, why: 'the task was created without calibration' };
    const numbers = calibrationRounds({ rounds: task.settings.rounds, calibration: settings });
    const [range, histogram] = await Promise.all([ports.getRound(taskId, numbers.range), ports.getRound(taskId, numbers.histogram)]);
    const outcome: CalibrationOutcome | undefined = histogram?.state === 'CLOSED' ? histogram.summary?.calibration : undefined;
    if (histogram === null || range === null || outcome?.activationRanges === undefined || histogram.config.calibration === undefined) {
      return { file: null, why: "the task's calibration rounds have not completed" };
    }
    if (version !== undefined && version !== outcome.modelVersion) {
      return { file: null, why: `model version ${version} has no calibration statistics (version ${outcome.modelVersion} has)` };
    }
    const statistics = decodeStatistics(await ports.readBlob({ key: outcome.statistics.key, sha256: outcome.statistics.sha256 }));
    return {
      why: '',
      file: {
        format: 'veil-calibration-v1',
        taskId,
        modelVersion: outcome.modelVersion,
        method: settings.method,
        percentile: settings.percentile,
        activationRanges: outcome.activationRanges,
        rounds: {
          range: { number: range.number, participants: range.summary?.participants ?? 0 },
          histogram: { number: histogram.number, participants: histogram.summary?.participants ?? 0 },
        },
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
