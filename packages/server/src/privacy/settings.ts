import { committeeDdgParams, type TaskDescriptor } from '@veil/crypto';
import { DEFAULT_ROUNDING_BETA, checkModularHeadroom, nextPowerOfTwo } from '@veil/privacy';
import { VeilError } from '../errors.js';
import { ledgerNumber } from './ledger.js';

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
  /** z: noise stddev / clip norm (of the sum's noise, in distributed mode). */
  noiseMultiplier: number;
  /** C: L2 clip norm of a device's update. */
  clipNorm: number;
  /** q: each available device joins a round independently with this probability. */
  samplingRate: number;
  /** Distributed mode: the mechanism's parameters, as devices use them and the ledger accounts them; null in local mode. */
  ddg: DdgSettings | null;
}

/**
 * The distributed discrete Gaussian of one task (Kairouz, Liu & Steinke 2021,
 * Algorithm 1): devices clip to c, rotate, scale by 1/γ, round conditionally
 * with β, add N_Z(0, (localStddev·scale)²) and reduce mod m = t; the accounting
 * (their Theorem 1 and Proposition 14) assumes at least `noiseClients` shares
 * in every released sum.
 */
export interface DdgSettings {
  /** n: the fewest noise shares a released sum holds (every round needs at least this many updates). */
  noiseClients: number;
  /** 1/γ: integer-grid steps per model unit. */
  scale: number;
  /** σ: each device's share, stddev in model units: z·C/√n, so n shares carry z·C. */
  localStddev: number;
  /** d: the model's parameter count padded to a power of two (the rotation's length). */
  dimension: number;
  /** m: the modulus of the sum, the task's BFV plain modulus t. */
  modulus: number;
  /** β of the conditional randomized rounding. */
  roundingBeta: number;
  /**
   * Committee mode (issue 11): the parameters come from the signed descriptor, the sum is an
   * integer sum (no modulus: `modulus` is 0), and since the coordinator chooses D the ledger also
   * reports ε against the coordinator without subsampling amplification. Absent otherwise.
   */
  committee?: boolean;
}

/** A task's requested privacy settings (checked by {@link resolvePrivacySettings}). */
export interface PrivacyInput extends Pick<PrivacySettings, 'mode' | 'epsilonCap' | 'delta' | 'noiseMultiplier' | 'clipNorm' | 'samplingRate'> {
  /** Distributed mode: n, the fewest updates a round may close with. Default: the task's minClients. */
  minNoiseClients?: number;
  /** Distributed mode: 1/γ. Default 2^10. */
  scale?: number;
}

const invalid = (message: string): never => {
  throw new VeilError('invalid_argument', message);
};

/** Default 1/γ: rounding inflates the sensitivity by about (d/4)/(2·(cγ⁻¹)²), under 0.2% for d <= 2^13, c = 1. */
export const DEFAULT_DDG_SCALE = 1024;

/**
 * Checks the task's privacy input. Distributed mode's model-dependent
 * parameters (d, m) are filled in by {@link completeDistributedSettings} once
 * the model and the encryption key are known.
 */
export function resolvePrivacySettings(input: PrivacyInput, minClients: number): PrivacySettings {
  if (input.mode !== 'local' && input.mode !== 'distributed') invalid('privacy.mode must be local or distributed');
  const positive = (x: unknown, name: string): number =>
    typeof x === 'number' && Number.isFinite(x) && x > 0 ? x : invalid(`privacy.${name} must be a positive number`);
  const epsilonCap = positive(input.epsilonCap, 'epsilonCap');
  const delta = positive(input.delta, 'delta');
  if (delta >= 1) invalid('privacy.delta must be in (0, 1)');
  const samplingRate = positive(input.samplingRate, 'samplingRate');
  if (samplingRate > 1) invalid('privacy.samplingRate must be in (0, 1]');
  const noiseMultiplier = positive(input.noiseMultiplier, 'noiseMultiplier');
  const clipNorm = positive(input.clipNorm, 'clipNorm');
  const settings: PrivacySettings = { mode: input.mode, epsilonCap, delta, noiseMultiplier, clipNorm, samplingRate, ddg: null };
  if (input.mode === 'local') {
    if (input.minNoiseClients !== undefined || input.scale !== undefined) invalid('privacy.minNoiseClients and privacy.scale apply to distributed mode only');
    return settings;
  }
  const noiseClients = input.minNoiseClients ?? minClients;
  if (!Number.isInteger(noiseClients) || noiseClients < 1) invalid('privacy.minNoiseClients must be a positive integer');
  if (noiseClients > minClients) invalid('privacy.minNoiseClients cannot exceed minClients (a round could close with less noise)');
  const scale = input.scale === undefined ? DEFAULT_DDG_SCALE : positive(input.scale, 'scale');
  // Recorded values are what devices use and what the ledger recomputes from: round them once, here.
  settings.ddg = {
    noiseClients,
    scale: ledgerNumber(scale),
    localStddev: ledgerNumber((noiseMultiplier * clipNorm) / Math.sqrt(noiseClients)),
    dimension: 0,
    modulus: 0,
    roundingBeta: ledgerNumber(DEFAULT_ROUNDING_BETA),
  };
  return settings;
}

/**
 * Distributed mode needs encrypted aggregation: the modular sum of the
 * devices' residues is the BFV sum mod t, so m = t. Fills in d and m and
 * refuses settings whose sum could wrap around m (KLS21 Sec. 4.4, with
 * `maxClients` updates, probability bound 1e-9).
 */
export function completeDistributedSettings(
  privacy: PrivacySettings,
  model: { parameterCount: number; plainModulus: number | null; maxClients: number },
): void {
  if (privacy.ddg === null) return;
  if (model.plainModulus === null) invalid('privacy.mode "distributed" needs encrypted aggregation (the sum of noise shares must stay hidden)');
  const plainModulus = model.plainModulus!;
  if (!Number.isSafeInteger(plainModulus) || plainModulus > 2 ** 31) invalid(`the key's plain modulus ${plainModulus} is too large for distributed DP residues`);
  const ddg = privacy.ddg;
  ddg.dimension = nextPowerOfTwo(model.parameterCount);
  ddg.modulus = plainModulus;
  const headroom = checkModularHeadroom({
    clipNorm: privacy.clipNorm,
    clients: model.maxClients,
    modulusBits: Math.log2(plainModulus),
    scale: ddg.scale,
    localStddev: ddg.localStddev,
    dimension: ddg.dimension,
  });
  if (!headroom.ok) {
    invalid(
      `a sum of ${model.maxClients} updates could wrap around the plain modulus (probability bound ${headroom.overflowProbabilityBound.toExponential(2)}): ` +
        `it needs ${headroom.requiredModulusBits} bits, the key has ${Math.log2(plainModulus).toFixed(1)}; lower privacy.scale or clientsPerRound`,
    );
  }
}

/**
 * A committee task's privacy settings against its signed descriptor (issue 11, item 4): the
 * descriptor's `dp` and the task's `privacy` must agree — distributed mode exactly when the
 * descriptor has DP, with the same clip norm, noise multiplier and δ — and the distributed
 * discrete Gaussian's parameters are then the descriptor's (@veil/crypto `committeeDdgParams`:
 * n = minDevices - colludingDevices honest shares, 1/γ = 1/step, σ_local = z·C/√n, d padded),
 * whatever `minNoiseClients` or `scale` the request gave. Refuses an encoding whose clip range a
 * device's noisy integer coordinate could exceed (probability bound 1e-9 over maxDevices devices,
 * the sub-Gaussian bound of KLS21 Sec. 4.4 for one device): the sum over D then never wraps,
 * since validateDescriptor bounds maxDevices · maxAbsLevel by the decodable sum.
 */
export function completeCommitteePrivacySettings(privacy: PrivacySettings | null, descriptor: TaskDescriptor, parameterCount: number): void {
  const dp = descriptor.dp;
  if (privacy === null || privacy.mode === 'local') {
    if (dp !== null) invalid(`the descriptor sets distributed differential privacy: create the task with privacy.mode "distributed" (clipNorm ${dp.clipNorm}, noiseMultiplier ${dp.noiseMultiplier}, delta ${dp.delta})`);
    return;
  }
  if (dp === null) invalid('privacy.mode "distributed" in committee mode needs a descriptor with dp (its noise must be fixed by the signed descriptor)');
  const d = dp!;
  if (d.clipNorm !== privacy.clipNorm || d.noiseMultiplier !== privacy.noiseMultiplier || d.delta !== privacy.delta) {
    invalid(
      `privacy (clipNorm ${privacy.clipNorm}, noiseMultiplier ${privacy.noiseMultiplier}, delta ${privacy.delta}) differs from the descriptor's dp ` +
        `(clipNorm ${d.clipNorm}, noiseMultiplier ${d.noiseMultiplier}, delta ${d.delta})`,
    );
  }
  const params = committeeDdgParams(descriptor, parameterCount)!;
  const maxAbsLevel = Math.floor(descriptor.encoding.clipMaxAbs / descriptor.encoding.step + 0.5);
  const headroom = checkModularHeadroom({
    clipNorm: params.clipNorm,
    clients: 1,
    modulusBits: Math.log2(2 * maxAbsLevel),
    scale: params.scale,
    localStddev: params.localStddev,
    dimension: params.dimension,
    maxOverflowProbability: 1e-9 / descriptor.maxDevices,
  });
  if (!headroom.ok) {
    invalid(
      `a device's noisy coordinate could exceed the descriptor's clip range ${descriptor.encoding.clipMaxAbs} (${maxAbsLevel} levels; probability bound ` +
        `${headroom.overflowProbabilityBound.toExponential(2)}): it needs ${2 ** (headroom.requiredModulusBits - 1)} levels; raise encoding.clipMaxAbs`,
    );
  }
  privacy.ddg = {
    noiseClients: params.noiseClients,
    scale: ledgerNumber(params.scale),
    localStddev: params.localStddev,
    dimension: params.dimension,
    modulus: 0,
    roundingBeta: ledgerNumber(DEFAULT_ROUNDING_BETA),
    committee: true,
  };
}
