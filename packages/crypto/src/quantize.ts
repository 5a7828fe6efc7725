/**
 * Fixed-point quantization of model updates for exact homomorphic summation (BFV).
 *
 * A value x becomes the integer level `roundHalfAwayFromZero(clip(x) / step)`; a client
 * multiplies its levels by its integer weight w before encryption, the coordinator sums the
 * ciphertexts (exact integer arithmetic modulo the plain modulus t), and a key holder decodes
 * the sum with centred (signed) decoding and multiplies by `step`.
 *
 * Error bound: each level differs from clip(x)/step by at most 1/2, so each weighted term
 * w·level·step differs from w·clip(x) by at most w·step/2. Summing and dividing by Σw, the
 * decrypted weighted mean differs from the plaintext weighted FedAvg of the clipped values
 * (McMahan et al. 2017, Alg. 1) by at most step/2 per coordinate, plus float64 rounding. The
 * sum itself is exact as long as it stays inside the signed range |Σ| <= (t-1)/2, which
 * {@link checkHeadroom} proves from the clip range, step, weight cap and client count.
 */
import { CryptoError } from './errors.js';

/** Options of {@link createQuantization}. */
export interface QuantizationOptions {
  /** Values are clipped to [-clipMaxAbs, clipMaxAbs] before quantization, in model units. Default 1. */
  readonly clipMaxAbs?: number;
  /** Quantization step, in model units per integer level. Default 2^-13 (about 1.22e-4). */
  readonly step?: number;
  /**
   * Largest per-client integer weight (a client's example count is capped to it, see
   * {@link capWeight}). Default 128. The coordinator can sum at most
   * `floor(((t-1)/2) / maxAbsLevel)` total weight; see {@link checkHeadroom}.
   */
  readonly weightCap?: number;
}

/** A validated quantization setting (all defaults resolved). */
export interface Quantization {
  /** Clip bound, model units: values are clipped to [-clipMaxAbs, clipMaxAbs]. */
  readonly clipMaxAbs: number;
  /** Step, model units per level. */
  readonly step: number;
  /** Largest per-client weight. */
  readonly weightCap: number;
  /** Largest |level| a clipped value can produce: roundHalfAwayFromZero(clipMaxAbs / step). */
  readonly maxAbsLevel: number;
}

/** Default quantization step: 2^-13 model units. */
export const DEFAULT_STEP = 2 ** -13;
/** Default clip bound: 1 model unit. */
export const DEFAULT_CLIP_MAX_ABS = 1;
/** Default per-client weight cap. */
export const DEFAULT_WEIGHT_CAP = 128;

/** Validates options and resolves defaults. Throws `CryptoError('invalid_argument')`. */
export function createQuantization(options: QuantizationOptions = {}): Quantization {
  const clipMaxAbs = options.clipMaxAbs ?? DEFAULT_CLIP_MAX_ABS;
  const step = options.step ?? DEFAULT_STEP;
  const weightCap = options.weightCap ?? DEFAULT_WEIGHT_CAP;
  if (!(Number.isFinite(clipMaxAbs) && clipMaxAbs > 0)) {
    throw new CryptoError('invalid_argument', `clipMaxAbs must be a positive finite number, got ${clipMaxAbs}`);
  }
  if (!(Number.isFinite(step) && step > 0)) {
    throw new CryptoError('invalid_argument', `step must be a positive finite number, got ${step}`);
  }
  if (!Number.isSafeInteger(weightCap) || weightCap < 1) {
    throw new CryptoError('invalid_argument', `weightCap must be an integer >= 1, got ${weightCap}`);
  }
  const maxAbsLevel = roundHalfAwayFromZero(clipMaxAbs / step);
  if (maxAbsLevel < 1 || maxAbsLevel > 0x7fff_ffff) {
    throw new CryptoError(
      'invalid_argument',
      `clipMaxAbs / step must be in [0.5, 2^31), got ${clipMaxAbs / step}`,
    );
  }
  if (!Number.isSafeInteger(maxAbsLevel * weightCap)) {
    throw new CryptoError('invalid_argument', 'maxAbsLevel * weightCap exceeds 2^53');
  }
  return Object.freeze({ clipMaxAbs, step, weightCap, maxAbsLevel });
}

/** Rounds to the nearest integer, ties away from zero (symmetric for ±x). */
export function roundHalfAwayFromZero(x: number): number {
  return x < 0 ? -Math.floor(-x + 0.5) : Math.floor(x + 0.5);
}

/**
 * One value to its integer level: roundHalfAwayFromZero(clip(x) / step). Throws
 * `CryptoError('invalid_argument')` for NaN (a NaN update is a training bug, not a zero).
 */
export function quantizeValue(x: number, quantization: Quantization): number {
  if (Number.isNaN(x)) throw new CryptoError('invalid_argument', 'cannot quantize NaN');
  const clipped = x > quantization.clipMaxAbs ? quantization.clipMaxAbs : x < -quantization.clipMaxAbs ? -quantization.clipMaxAbs : x;
  return roundHalfAwayFromZero(clipped / quantization.step);
}

/** Quantizes every value (see {@link quantizeValue}); |level| <= quantization.maxAbsLevel. */
export function quantize(values: ArrayLike<number>, quantization: Quantization): Int32Array {
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = quantizeValue(values[i]!, quantization);
  return out;
}

/**
 * Levels (or summed weighted levels) back to model units: `level * step / divisor`. With
 * `divisor` = the total weight this is the weighted mean. Default divisor 1.
 */
export function dequantize(levels: ArrayLike<number>, quantization: Quantization, divisor = 1): Float64Array {
  if (!(Number.isFinite(divisor) && divisor > 0)) {
    throw new CryptoError('invalid_argument', `divisor must be a positive finite number, got ${divisor}`);
  }
  const out = new Float64Array(levels.length);
  for (let i = 0; i < levels.length; i++) out[i] = (levels[i]! * quantization.step) / divisor;
  return out;
}

/** A signed integer to its residue modulo t, in [0, t). */
export function toResidue(level: number, plainModulus: bigint): bigint {
  const r = BigInt(level) % plainModulus;
  return r < 0n ? r + plainModulus : r;
}

/**
 * Centred (signed) decoding of a residue r in [0, t) for odd t: r if r <= (t-1)/2, else r - t.
 * The result lies in [-(t-1)/2, (t-1)/2]; it equals the true integer whenever the true integer
 * lies in that range, which {@link checkHeadroom} guarantees for sums.
 */
export function centredDecode(residue: bigint, plainModulus: bigint): number {
  if (residue < 0n || residue >= plainModulus) {
    throw new CryptoError('invalid_argument', `residue ${residue} is outside [0, ${plainModulus})`);
  }
  return Number(residue <= (plainModulus - 1n) / 2n ? residue : residue - plainModulus);
}

/** A client's weight from its example count: min(floor(exampleCount), weightCap); at least 1. */
export function capWeight(exampleCount: number, weightCap: number): number {
  if (!(exampleCount >= 1) || !Number.isFinite(exampleCount)) {
    throw new CryptoError('invalid_argument', `exampleCount must be a finite number >= 1, got ${exampleCount}`);
  }
  return Math.min(Math.floor(exampleCount), weightCap);
}

/**
 * The largest total weight Σw whose weighted sum cannot leave the signed range:
 * floor(((t-1)/2) / maxAbsLevel).
 */
export function maxTotalWeight(quantization: Quantization, plainModulus: bigint): number {
  const limit = (plainModulus - 1n) / 2n / BigInt(quantization.maxAbsLevel);
  return limit > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(limit);
}

/** Options of {@link checkHeadroom}. */
export interface HeadroomOptions extends QuantizationOptions {
  /** Plain modulus t (odd). */
  readonly plainModulus: bigint;
  /** Largest number of clients summed in one round. */
  readonly maxClients: number;
}

/** What {@link checkHeadroom} proved. */
export interface Headroom {
  /** Largest |level| of one value (before weighting). */
  readonly maxAbsLevel: number;
  /** Worst-case |sum| = maxClients * weightCap * maxAbsLevel. */
  readonly maxAbsSum: number;
  /** Largest |sum| centred decoding recovers: (t-1)/2. */
  readonly signedLimit: number;
  /** Largest total weight the coordinator may sum: floor(signedLimit / maxAbsLevel). */
  readonly maxTotalWeight: number;
  /** Largest client count at the given weight cap. */
  readonly maxClientsAtWeightCap: number;
  /** Largest weight cap at the given client count. */
  readonly maxWeightCapAtMaxClients: number;
  /** log2(signedLimit / maxAbsSum): spare bits of the plaintext space. */
  readonly spareBits: number;
}

/**
 * Proves that summing `maxClients` updates, each clipped, quantized and weighted by at most
 * `weightCap`, stays inside the signed range: maxClients * weightCap * maxAbsLevel <= (t-1)/2.
 * Returns the figures; throws `CryptoError('headroom_exceeded')` naming the largest client
 * count and weight cap that would fit.
 */
export function checkHeadroom(options: HeadroomOptions): Headroom {
  const quantization = createQuantization(options);
  const { plainModulus, maxClients } = options;
  if (plainModulus < 3n || plainModulus % 2n === 0n) {
    throw new CryptoError('invalid_argument', `plainModulus must be odd and >= 3, got ${plainModulus}`);
  }
  if (!Number.isSafeInteger(maxClients) || maxClients < 1) {
    throw new CryptoError('invalid_argument', `maxClients must be an integer >= 1, got ${maxClients}`);
  }
  const signedLimitBig = (plainModulus - 1n) / 2n;
  const signedLimit = Number(signedLimitBig);
  const level = BigInt(quantization.maxAbsLevel);
  const maxAbsSumBig = BigInt(maxClients) * BigInt(quantization.weightCap) * level;
  const totalWeight = maxTotalWeight(quantization, plainModulus);
  const maxClientsAtWeightCap = Math.floor(totalWeight / quantization.weightCap);
  const maxWeightCapAtMaxClients = Math.floor(totalWeight / maxClients);
  if (maxAbsSumBig > signedLimitBig) {
    throw new CryptoError(
      'headroom_exceeded',
      `${maxClients} clients x weightCap ${quantization.weightCap} x ${quantization.maxAbsLevel} levels ` +
        `(clip ${quantization.clipMaxAbs} / step ${quantization.step}) = ${maxAbsSumBig} exceeds the signed range ` +
        `(t-1)/2 = ${signedLimitBig} of plain modulus ${plainModulus}: at weightCap ${quantization.weightCap} ` +
        `at most ${maxClientsAtWeightCap} clients fit; for ${maxClients} clients weightCap must be <= ` +
        `${maxWeightCapAtMaxClients} (total weight <= ${totalWeight}); or use a coarser step or smaller clip range`,
    );
  }
  const maxAbsSum = Number(maxAbsSumBig);
  return {
    maxAbsLevel: quantization.maxAbsLevel,
    maxAbsSum,
    signedLimit,
    maxTotalWeight: totalWeight,
    maxClientsAtWeightCap,
    maxWeightCapAtMaxClients,
    spareBits: Math.log2(signedLimit / maxAbsSum),
  };
}
