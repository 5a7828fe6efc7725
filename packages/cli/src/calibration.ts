import { writeFile } from 'node:fs/promises';
import { ClientError, createDeviceEncryption, rotationSeedForVersion } from '@veil/client-sdk';
import { CryptoError, readDeviceKeyMaterial, type DeviceKeyMaterial } from '@veil/crypto';
import { ExportError, chooseActivationRanges, meanNoiseStddev, noiseSwampedPoints, planHistogramRound, type ActivationRanges, type CalibrationPlan, type RangeMethod } from '@veil/export';
import type { CalibrationFileJson as CalibrationFileWire, EncryptedCalibrationFileJson as EncryptedCalibrationFileWire } from '@veil/protocol';
import { ExportCommandError, openCoordinator, taskRest, type CoordinatorAccess } from './export.js';

/** Options of {@link runCalibration}. */
export interface CalibrationCommandOptions extends CoordinatorAccess {
  taskId: string;
  out: string;
  /** Model version; default the calibrated one. */
  version: number | null;
  /** Key holder's device key directory: needed for shared-key tasks (their statistics are ciphertext sums). Default none. */
  deviceKeyDir?: string | null;
}

/** The statistics file (GET /v1/tasks/ID/calibration, format veil-calibration-v1; the wire type is @veil/protocol's). */
export type CalibrationFileJson = CalibrationFileWire<CalibrationPlan, ActivationRanges>;

/** A shared-key task's statistics as the coordinator holds them (format veil-calibration-bfv-v1: encrypted sums). */
export type EncryptedCalibrationFileJson = EncryptedCalibrationFileWire<CalibrationPlan>;

/**
 * A key holder's side of a shared-key task's calibration (issue 16): decrypts the range round's
 * sum, derives the histogram plan from it as the devices did (`planHistogramRound` with the task's
 * bins and tail fraction), decrypts the histogram round's sum and chooses the activation ranges
 * with the task's method: the veil-calibration-v1 file the coordinator could not compute (with the
 * points whose range statistics the DP noise swamped, `noiseSwamped`, as the coordinator lists them). Under
 * distributed DP (`distributedDp`) each sum is decoded as the devices decode a training round's
 * (DeviceEncryption.decryptDistributedDpMean, rotation seed of version modelVersion + 1).
 */
export async function openEncryptedCalibration(file: EncryptedCalibrationFileJson, deviceKey: DeviceKeyMaterial): Promise<CalibrationFileJson> {
  const encryption = await createDeviceEncryption(deviceKey);
  const ddg = file.distributedDp;
  // In frequency units: the mean of the reports divided by the scale they were multiplied by, and
  // the noise σ of one of its values under DP (the devices planned the histogram round with it).
  const mean = (sum: string, valueCount: number, scale = 1): { values: Float64Array; noiseStddev: number } => {
    if (!(scale > 0 && Number.isFinite(scale))) throw new ExportCommandError(`the calibration statistics' report scale ${scale} is not a positive number`);
    const bytes = Buffer.from(sum, 'base64');
    // Distributed DP: decoded as a training round's sum on the same model version (the devices' rotation seed).
    const opened =
      ddg === undefined
        ? encryption.decryptMean(bytes, valueCount)
        : encryption.decryptDistributedDpMean(bytes, {
            scale: ddg.scale,
            modulus: ddg.modulus,
            rotationSeed: rotationSeedForVersion(file.taskId, file.modelVersion + 1),
            originalDimension: ddg.parameterCount,
            minClients: ddg.minNoiseClients,
          });
    return {
      values: Float64Array.from(opened.mean.subarray(0, valueCount), (v) => v / scale),
      noiseStddev: meanNoiseStddev(file.reportNoiseStddev ?? 0, Math.max(1, opened.clientCount), scale),
    };
  };
  try {
    const range = mean(file.range.sum, file.range.length, file.range.scale);
    const plan = planHistogramRound(file.range.plan, range.values, { bins: file.bins, tailFraction: file.tailFraction, noiseStddev: range.noiseStddev });
    const noiseSwamped = noiseSwampedPoints(file.range.plan, range.values, range.noiseStddev);
    const statistics = mean(file.histogram.sum, file.histogram.length, file.histogram.scale).values;
    const activationRanges = chooseActivationRanges(plan, statistics, { method: file.method as RangeMethod, percentile: file.percentile });
    return {
      format: 'veil-calibration-v1',
      taskId: file.taskId,
      modelVersion: file.modelVersion,
      method: file.method,
      percentile: file.percentile,
      activationRanges,
      rounds: file.rounds,
      histogram: { plan, statistics: Array.from(statistics) },
      ...(noiseSwamped.length > 0 && { noiseSwamped }),
    };
  } catch (error) {
    if (error instanceof ExportError || error instanceof CryptoError || error instanceof ClientError) {
      throw new ExportCommandError(`cannot open the task's encrypted calibration statistics: ${error.message}`);
    }
    throw error;
  } finally {
    encryption.dispose();
  }
}

/** The statistics file of a task, opened with `deviceKeyDir` when its statistics are encrypted. */
export async function readCalibrationFile(body: CalibrationFileJson | EncryptedCalibrationFileJson, deviceKeyDir: string | null): Promise<CalibrationFileJson> {
  if (body.format !== 'veil-calibration-bfv-v1') return body;
  if (deviceKeyDir === null) {
    throw new ExportCommandError("the task's calibration statistics are encrypted under its shared key; give --device-key DIR (a key holder's device/ key bundle) to open them");
  }
  return openEncryptedCalibration(body, await readDeviceKeyMaterial(deviceKeyDir));
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
 * --calibration FILE` accepts. A shared-key task's statistics are encrypted
 * sums: with `deviceKeyDir` they are opened here ({@link openEncryptedCalibration}).
 */
export async function runCalibration(options: CalibrationCommandOptions): Promise<CalibrationCommandResult> {
  const { baseUrl, token, close } = await openCoordinator(options, 'calibration.log');
  try {
    const rest = taskRest(baseUrl, token, options.taskId);
    const body = (await (await rest(`/calibration${options.version === null ? '' : `?version=${options.version}`}`)).json()) as CalibrationFileJson | EncryptedCalibrationFileJson;
    const file = await readCalibrationFile(body, options.deviceKeyDir ?? null);
    await writeFile(options.out, `${JSON.stringify(file, null, 2)}\n`);
    return { out: options.out, modelVersion: file.modelVersion, points: Object.keys(file.activationRanges).length };
  } finally {
    await close?.();
  }
}
