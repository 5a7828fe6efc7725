import { requireArgument } from '../errors.js';
import { createCryptoRng, type Rng } from '../rng.js';

/** A dense update vector. */
export type UpdateVector = Float32Array | Float64Array;

/** Result of {@link clipToNorm}. */
export interface ClipResult<T extends UpdateVector> {
  /** A new array: the input scaled so its L2 norm is <= clipNorm. */
  clipped: T;
  /** L2 norm of the input (computed in float64). */
  norm: number;
  /** Factor applied: min(1, clipNorm / norm) (slightly less for float32, see below). */
  scale: number;
}

let defaultRng: Rng | undefined;
/** The process-wide CSPRNG used when no `rng` is passed. */
export function getDefaultRng(): Rng {
  defaultRng ??= createCryptoRng();
  return defaultRng;
}

/** @internal L2 norm in float64, scaled to avoid overflow/underflow. */
export function l2Norm(v: ArrayLike<number>): number {
  let max = 0;
  for (let i = 0; i < v.length; i++) max = Math.max(max, Math.abs(v[i] as number));
  if (max === 0 || !Number.isFinite(max)) return max;
  let s = 0;
  for (let i = 0; i < v.length; i++) {
    const x = (v[i] as number) / max;
    s += x * x;
  }
  return max * Math.sqrt(s);
}

/**
 * Scales the whole update so its L2 norm is at most `clipNorm` (flat
 * clipping of the user's update, McMahan et al. 2018, Alg. 1 "ClipFn").
 * The guarantee `norm(clipped) <= clipNorm` is checked after rounding to the
 * array's element type (float32 rounding can add ~1e-7 relative); the scale
 * is nudged down until it holds, so sensitivity is never exceeded.
 *
 * @param update - the model delta; not modified. Must be finite.
 * @param clipNorm - C, > 0, in the update's units.
 */
export function clipToNorm<T extends UpdateVector>(update: T, clipNorm: number): ClipResult<T> {
  requireArgument(Number.isFinite(clipNorm) && clipNorm > 0, 'clipNorm must be a finite number > 0', { clipNorm });
  const norm = l2Norm(update);
  requireArgument(Number.isFinite(norm), 'update contains non-finite values');
  const clipped = update.slice() as T;
  if (norm <= clipNorm) return { clipped, norm, scale: 1 };
  let scale = clipNorm / norm;
  for (;;) {
    for (let i = 0; i < update.length; i++) clipped[i] = (update[i] as number) * scale;
    if (l2Norm(clipped) <= clipNorm) return { clipped, norm, scale };
    scale *= 1 - 2 ** -20;
  }
}

/**
 * Fills `out` with i.i.d. N(0, stddev^2) samples by the Box–Muller transform
 * (Box & Muller 1958) from 53-bit uniform doubles.
 */
export function fillGaussian(out: Float64Array | Float32Array, stddev: number, rng: Rng = getDefaultRng()): void {
  requireArgument(Number.isFinite(stddev) && stddev >= 0, 'stddev must be a finite number >= 0', { stddev });
  const n = out.length;
  for (let i = 0; i < n; i += 2) {
    const u1 = 1 - rng.nextDouble(); // (0, 1]: log is finite
    const u2 = rng.nextDouble();
    const r = stddev * Math.sqrt(-2 * Math.log(u1));
    const theta = 2 * Math.PI * u2;
    out[i] = r * Math.cos(theta);
    if (i + 1 < n) out[i + 1] = r * Math.sin(theta);
  }
}

/** Options of {@link addGaussianNoise} and {@link privatizeLocalUpdate}. */
export interface GaussianNoiseOptions {
  /** z: noise stddev = z · clipNorm. > 0. */
  noiseMultiplier: number;
  /** C: the clip norm (sensitivity), > 0. */
  clipNorm: number;
  /** Randomness. Default: the process CSPRNG (`node:crypto`). */
  rng?: Rng;
}

/**
 * Returns `update + N(0, (z·C)^2 I)` as a new array of the same type.
 * The caller must have clipped `update` to `clipNorm` (see
 * {@link privatizeLocalUpdate}). Floating-point Gaussian noise is the
 * standard DP-SGD/DP-FedAvg practice; use the discrete Gaussian path for
 * integer (secure-aggregation) pipelines.
 */
export function addGaussianNoise<T extends UpdateVector>(update: T, options: GaussianNoiseOptions): T {
  const { noiseMultiplier, clipNorm } = options;
  requireArgument(Number.isFinite(noiseMultiplier) && noiseMultiplier > 0, 'noiseMultiplier must be > 0', {
    noiseMultiplier,
  });
  requireArgument(Number.isFinite(clipNorm) && clipNorm > 0, 'clipNorm must be > 0', { clipNorm });
  const noise = new Float64Array(update.length);
  fillGaussian(noise, noiseMultiplier * clipNorm, options.rng ?? getDefaultRng());
  const out = update.slice() as T;
  for (let i = 0; i < out.length; i++) out[i] = (update[i] as number) + (noise[i] as number);
  return out;
}

/** Result of {@link privatizeLocalUpdate}. */
export interface LocalPrivatizeResult<T extends UpdateVector> {
  /** clip(update) + N(0, (z·C)^2 I). */
  noised: T;
  /** L2 norm of the update before clipping. */
  norm: number;
  /** Whether clipping changed the update. */
  clipped: boolean;
}

/**
 * Local-mode client mechanism: clip the whole update to `clipNorm`, then add
 * Gaussian noise with stddev `noiseMultiplier · clipNorm` per coordinate —
 * the Gaussian mechanism with L2 sensitivity C (account with
 * `createLocalPrivacyTracker`).
 */
export function privatizeLocalUpdate<T extends UpdateVector>(
  update: T,
  options: GaussianNoiseOptions,
): LocalPrivatizeResult<T> {
  const { clipped, norm, scale } = clipToNorm(update, options.clipNorm);
  return { noised: addGaussianNoise(clipped, options), norm, clipped: scale < 1 };
}
