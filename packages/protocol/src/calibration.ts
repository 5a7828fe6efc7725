/**
 * The calibration statistics file (GET /v1/tasks/ID/calibration): what the coordinator answers
 * and `veil calibration` / `veil export --calibration FILE` read. One definition for both sides.
 * The plan and the activation ranges are @veil/export's types (`CalibrationPlan`,
 * `ActivationRanges`); they are type parameters here because @veil/protocol depends on no other
 * Veil package.
 */

/** The two calibration rounds of a task, with the devices each aggregated. */
export interface CalibrationRoundsJson {
  range: { number: number; participants: number };
  histogram: { number: number; participants: number };
}

/**
 * A task's federated calibration statistics (format veil-calibration-v1): the activation ranges
 * chosen for a model version and the aggregated histogram they were chosen from.
 */
export interface CalibrationFileJson<Plan = unknown, Ranges = unknown> {
  format: 'veil-calibration-v1';
  taskId: string;
  modelVersion: number;
  /** Range choice and its parameter, as the task set them. */
  method: string;
  percentile: number;
  activationRanges: Ranges;
  rounds: CalibrationRoundsJson;
  /** The histogram round's plan and its aggregated statistics (frequencies; DP noise included where the task uses DP). */
  histogram: { plan: Plan; statistics: number[] };
  /**
   * DP: the calibration points whose range statistics the noise swamped (@veil/export
   * `noiseSwampedPoints`): their ranges are noise, and an int8 export with these ranges falls back
   * to dynamic quantisation unless static is forced. Absent or empty: none.
   */
  noiseSwamped?: string[];
}

/**
 * A shared-key task's calibration statistics (format veil-calibration-bfv-v1): the two rounds'
 * sums as the coordinator holds them, encrypted under the task's key (bfv-sum-v1, base64). A key
 * holder decrypts the range sum, derives the histogram plan from it (`planHistogramRound` with
 * `bins` and `tailFraction`), decrypts the histogram sum and chooses the ranges (`veil calibration
 * --device-key` writes the veil-calibration-v1 file from it).
 */
export interface EncryptedCalibrationFileJson<Plan = unknown> {
  format: 'veil-calibration-bfv-v1';
  taskId: string;
  modelVersion: number;
  method: string;
  percentile: number;
  bins: number;
  tailFraction: number;
  rounds: CalibrationRoundsJson;
  /**
   * The range round's plan and the encrypted sum of its reports (`length` values); `scale` is the
   * factor each report was multiplied by (C / sqrt(m) under DP, else 1): divide the decrypted mean by it.
   */
  range: { plan: Plan; sum: string; length: number; scale: number };
  /** The encrypted sum of the histogram round's reports (`length` values, on the derived plan), and their `scale`. */
  histogram: { sum: string; length: number; scale: number };
  /**
   * Distributed DP (KLS21): both sums hold the DDG residues of `dimension` values, decoded as a
   * training round's sum (the SDK's `DeviceEncryption.decryptDistributedDpMean`) with this 1/γ,
   * modulus and the rotation seed `rotationSeedForVersion(taskId, modelVersion + 1)` over the
   * model's `parameterCount` values; the report is the first `length` of them. The sums must hold
   * at least `minNoiseClients` reports. Absent otherwise.
   */
  distributedDp?: { scale: number; modulus: number; dimension: number; parameterCount: number; minNoiseClients: number };
  /**
   * DP: σ_r, the noise one report carries per value in model units (z·C under local DP, the
   * discrete Gaussian share's σ under distributed DP). The range round's plan is derived with
   * noiseStddev = meanNoiseStddev(σ_r, its report count, range.scale) (@veil/export), as the devices
   * derived it. Absent: 0 (no DP).
   */
  reportNoiseStddev?: number;
}
