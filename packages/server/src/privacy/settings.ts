import { VeilError } from '../errors.js';

/**
 * Differential privacy of a task (user-level DP-FedAvg, McMahan et al. 2018):
 * every device clips its update to `clipNorm` (L2) and noise is added with
 * standard deviation `noiseMultiplier · clipNorm` — by each device (local
 * mode), or split across the devices of an encrypted round so that only the
 * sum carries it (distributed mode, the distributed discrete Gaussian of
 * Kairouz, Liu & Steinke 2021). Devices are selected by Poisson sampling with
 * rate `samplingRate`, the assumption of the accountant.
 */
export interface PrivacySettings {
  mode: 'local' | 'distributed';
  /** Budget: the task never runs a round that would take ε past this cap. */
  epsilonCap: number;
  delta: number;
  /** z: noise stddev / clip norm. */
  noiseMultiplier: number;
  /** C: L2 clip norm of a device's update. */
  clipNorm: number;
  /** q: each available device joins a round independently with this probability. */
  samplingRate: number;
  /** Distributed mode: the fewest devices whose noise shares a released sum must contain. */
  minNoiseClients: number;
  /** Distributed mode: scale 1/γ of the integer grid (KLS21). */
  scale: number;
}

export interface PrivacyInput {
  mode: 'local' | 'distributed';
  epsilonCap: number;
  delta: number;
  noiseMultiplier: number;
  clipNorm: number;
  samplingRate: number;
  /** Default: the task's minClients. */
  minNoiseClients?: number;
  /** Default 2^10 (distributed mode). */
  scale?: number;
}

const invalid = (message: string): never => {
  throw new VeilError('invalid_argument', message);
};

export function resolvePrivacySettings(input: PrivacyInput, minClients: number): PrivacySettings {
  if (input.mode !== 'local' && input.mode !== 'distributed') invalid('privacy.mode must be local or distributed');
  // The distributed discrete Gaussian's accounting (KLS21, with its rounding and wraparound terms)
  // is not wired into the coordinator's ledger yet; refuse rather than account it as a plain Gaussian.
  if (input.mode === 'distributed') invalid('privacy.mode "distributed" is not available yet on this coordinator; use "local"');
  const positive = (x: unknown, name: string): number =>
    typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : invalid(`privacy.${name} must be a positive number`);
  const epsilonCap = positive(input.epsilonCap, 'epsilonCap');
  const delta = positive(input.delta, 'delta');
  if (delta >= 1) invalid('privacy.delta must be in (0, 1)');
  const samplingRate = positive(input.samplingRate, 'samplingRate');
  if (samplingRate > 1) invalid('privacy.samplingRate must be in (0, 1]');
  const minNoiseClients = input.minNoiseClients ?? minClients;
  if (!Number.isInteger(minNoiseClients) || minNoiseClients < 1) invalid('privacy.minNoiseClients must be a positive integer');
  if (minNoiseClients > minClients) invalid('privacy.minNoiseClients cannot exceed minClients (a round could close with less noise)');
  return {
    mode: input.mode,
    epsilonCap,
    delta,
    noiseMultiplier: positive(input.noiseMultiplier, 'noiseMultiplier'),
    clipNorm: positive(input.clipNorm, 'clipNorm'),
    samplingRate,
    minNoiseClients,
    scale: input.scale === undefined ? 1024 : positive(input.scale, 'scale'),
  };
}
