import { writeFile } from 'node:fs/promises';
import { openCoordinator, taskRest, type CoordinatorAccess } from './export.js';

/** Options of {@link runCalibration}. */
export interface CalibrationCommandOptions extends CoordinatorAccess {
  taskId: string;
  out: string;
  /** Model version; default the calibrated one. */
  version: number | null;
}

/** What {@link runCalibration} wrote. */
export interface CalibrationCommandResult {
  out: string;
  modelVersion: number;
  points: number;
}

/**
 * `veil calibration`: writes a task's federated calibration statistics
 * (GET /v1/tasks/ID/calibration: the activation ranges its calibration rounds
 * chose and the aggregated histograms) to a file that `veil export
 * --calibration FILE` accepts.
 */
export async function runCalibration(options: CalibrationCommandOptions): Promise<CalibrationCommandResult> {
  const { baseUrl, token, close } = await openCoordinator(options, 'calibration.log');
  try {
    const rest = taskRest(baseUrl, token, options.taskId);
    const file = (await (await rest(`/calibration${options.version === null ? '' : `?version=${options.version}`}`)).json()) as {
      modelVersion: number;
      activationRanges: Record<string, unknown>;
    };
    await writeFile(options.out, `${JSON.stringify(file, null, 2)}\n`);
    return { out: options.out, modelVersion: file.modelVersion, points: Object.keys(file.activationRanges).length };
  } finally {
    await close?.();
  }
}
