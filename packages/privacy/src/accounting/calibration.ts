import { PrivacyError, requireArgument } from '../errors.js';
import { computeEpsilon, validateStrictInputs } from './accountant.js';
import { validateDelta } from './conversion.js';
import { resolveOrders } from './orders.js';

/** Options of {@link calibrateNoiseMultiplier}. */
export interface CalibrateNoiseMultiplierOptions {
  /** Target ε (> 0) after `rounds` rounds. */
  targetEpsilon: number;
  /** Target δ, in (0, 1). */
  delta: number;
  /** Poisson sampling probability q per round, in (0, 1]. */
  samplingRate: number;
  /** Number of rounds T, a positive integer. */
  rounds: number;
  /** RDP orders. Default `DEFAULT_RDP_ORDERS`. */
  orders?: readonly number[];
  /**
   * Relative width of the final bracket: the result z satisfies
   * ε(z) <= target < ε(z / (1 + relativeTolerance)). Default 1e-5 (0.001 %).
   */
  relativeTolerance?: number;
  /** Smallest noise multiplier searched. Default 0.01. */
  minNoiseMultiplier?: number;
  /** Largest noise multiplier searched. Default 1e6. */
  maxNoiseMultiplier?: number;
}

/** Result of {@link calibrateNoiseMultiplier}. */
export interface CalibrationResult {
  /** The smallest noise multiplier (within the tolerance) meeting the target. */
  noiseMultiplier: number;
  /** ε actually achieved at `noiseMultiplier` (<= target). */
  epsilon: number;
  /** RDP order attaining `epsilon`. */
  order: number;
}

/**
 * Finds the smallest noise multiplier z such that `rounds` rounds of the
 * Poisson-subsampled Gaussian mechanism at `samplingRate` are
 * (targetEpsilon, delta)-DP under RDP accounting. ε(z) is non-increasing in z
 * (every RDP order's value is), so bisection on log z is exact up to the
 * tolerance; the returned z always satisfies ε(z) <= targetEpsilon.
 *
 * Throws `PrivacyError('target_unreachable')` when even
 * `maxNoiseMultiplier` does not meet the target. If `minNoiseMultiplier`
 * already meets it, `minNoiseMultiplier` is returned.
 */
export function calibrateNoiseMultiplier(options: CalibrateNoiseMultiplierOptions): CalibrationResult {
  const { targetEpsilon, delta, samplingRate, rounds } = options;
  const relativeTolerance = options.relativeTolerance ?? 1e-5;
  const minZ = options.minNoiseMultiplier ?? 0.01;
  const maxZ = options.maxNoiseMultiplier ?? 1e6;
  requireArgument(
    Number.isFinite(targetEpsilon) && targetEpsilon > 0,
    `targetEpsilon must be a finite number > 0, got ${String(targetEpsilon)}`,
    { targetEpsilon },
  );
  validateDelta(delta);
  validateStrictInputs(samplingRate, 1, rounds);
  requireArgument(relativeTolerance > 0 && relativeTolerance < 0.1, 'relativeTolerance must be in (0, 0.1)', {
    relativeTolerance,
  });
  requireArgument(minZ > 0 && maxZ > minZ && Number.isFinite(maxZ), 'need 0 < minNoiseMultiplier < maxNoiseMultiplier', {
    minNoiseMultiplier: minZ,
    maxNoiseMultiplier: maxZ,
  });
  const orders = resolveOrders(options.orders);
  const eps = (z: number) => computeEpsilon({ samplingRate, noiseMultiplier: z, rounds, delta, orders });

  // Bracket [lo, hi] with eps(lo) > target >= eps(hi).
  let hi = Math.min(Math.max(1, minZ), maxZ);
  let hiResult = eps(hi);
  let lo: number;
  if (hiResult.epsilon <= targetEpsilon) {
    lo = hi;
    for (;;) {
      if (lo <= minZ) return { noiseMultiplier: hi, epsilon: hiResult.epsilon, order: hiResult.order };
      const next = Math.max(minZ, lo / 2);
      const r = eps(next);
      if (r.epsilon > targetEpsilon) {
        lo = next;
        break;
      }
      hi = next;
      hiResult = r;
      lo = next;
    }
  } else {
    lo = hi;
    for (;;) {
      if (hi >= maxZ) {
        throw new PrivacyError(
          'target_unreachable',
          `target epsilon ${targetEpsilon} at delta ${delta} is not reachable with noiseMultiplier <= ${maxZ} ` +
            `(samplingRate ${samplingRate}, rounds ${rounds}); lower the rounds or sampling rate, or raise the target`,
          { details: { targetEpsilon, delta, samplingRate, rounds, maxNoiseMultiplier: maxZ, epsilonAtMax: hiResult.epsilon } },
        );
      }
      lo = hi;
      hi = Math.min(maxZ, hi * 2);
      hiResult = eps(hi);
      if (hiResult.epsilon <= targetEpsilon) break;
    }
  }
  while (hi / lo - 1 > relativeTolerance) {
    const mid = Math.sqrt(lo * hi);
    const r = eps(mid);
    if (r.epsilon <= targetEpsilon) {
      hi = mid;
      hiResult = r;
    } else {
      lo = mid;
    }
  }
  return { noiseMultiplier: hi, epsilon: hiResult.epsilon, order: hiResult.order };
}
