import { PrivacyError, requireArgument } from '../errors.js';
import { log1pExp, logErfc, logSumExp, SignedLogSum } from '../internal/log-math.js';
import { resolveOrders } from './orders.js';

/**
 * Rényi DP of the Poisson-subsampled Gaussian mechanism (the "sampled
 * Gaussian mechanism", SGM): each unit (here: each client, user-level
 * DP-FedAvg, McMahan et al. 2018) is included independently with
 * probability q and the sum of clipped contributions (L2 sensitivity 1 after
 * scaling by the clip norm) receives N(0, z^2) noise.
 *
 * Mironov, Talwar & Zhang 2019, "Rényi Differential Privacy of the Sampled
 * Gaussian Mechanism" (arXiv:1908.10530), Sec. 3: for order alpha,
 *   RDP(alpha) = log(A_alpha) / (alpha - 1),
 *   A_alpha = E_{x ~ N(0, z^2)} [((1 - q) + q exp((2x - 1) / (2 z^2)))^alpha].
 * Integer alpha: binomial expansion (Sec. 3.3, Eq. for A_alpha with integer
 * alpha). Fractional alpha: the split at z0 = z^2 log(1/q - 1) + 1/2 and the
 * *signed* generalised binomial series for both halves (Sec. 3.3), as in
 * TF Privacy / Opacus `_compute_log_a_frac`. The generalised binomial
 * coefficients binom(alpha, i) alternate in sign for i > alpha + 1; summing
 * their absolute values (as some dp_accounting releases do) over-states A.
 */

/** Maximum number of series terms for a fractional order before giving up. */
const MAX_FRACTIONAL_TERMS = 2_000_000;
/** Stop once the last term is below e^-36 (~2e-16) of A_alpha ... */
const LOG_MACHINE_TOLERANCE = -36;
/** ... or below 1e-11 of A_alpha - 1 (error after averaging is <= half of it). */
const LOG_RELATIVE_TOLERANCE = Math.log(1e-11);

/** @internal log(A_alpha) for integer alpha >= 2 and 0 < q < 1. */
export function logAInteger(q: number, sigma: number, alpha: number): number {
  // A - 1 = sum_{i>=2} binom(alpha,i) q^i (1-q)^(alpha-i) (exp((i^2-i)/(2 sigma^2)) - 1):
  // the i = 0, 1 terms of the binomial expansion sum with the "-1" to exactly
  // zero, so computing A - 1 directly keeps full precision when A ~ 1.
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const inv2s2 = 1 / (2 * sigma * sigma);
  const terms = new Float64Array(alpha - 1);
  let logBinom = Math.log(alpha); // log binom(alpha, 1)
  for (let i = 2; i <= alpha; i++) {
    logBinom += Math.log(alpha - i + 1) - Math.log(i);
    const exponent = (i * i - i) * inv2s2;
    // log(expm1(e)) computed stably.
    const logExpm1 = exponent > 30 ? exponent + Math.log1p(-Math.exp(-exponent)) : Math.log(Math.expm1(exponent));
    terms[i - 2] = logBinom + i * logQ + (alpha - i) * log1mQ + logExpm1;
  }
  const logAMinus1 = logSumExp(terms);
  return log1pExp(logAMinus1);
}

/** @internal log(A_alpha) for fractional alpha > 1 and 0 < q < 1. */
export function logAFractional(q: number, sigma: number, alpha: number): number {
  const a0 = new SignedLogSum();
  const a1 = new SignedLogSum();
  const logQ = Math.log(q);
  const log1mQ = Math.log1p(-q);
  const s2 = sigma * sigma;
  const z0 = s2 * Math.log(1 / q - 1) + 0.5;
  const sqrt2Sigma = Math.SQRT2 * sigma;
  const LOG_HALF = Math.log(0.5);

  let logAbsCoef = 0; // log|binom(alpha, 0)|
  let sign: 1 | -1 = 1;
  let lastS0 = -Infinity;
  let lastS1 = -Infinity;
  for (let i = 0; i < MAX_FRACTIONAL_TERMS; i++) {
    if (i > 0) {
      const factor = (alpha - i + 1) / i;
      logAbsCoef += Math.log(Math.abs(factor));
      if (factor < 0) sign = sign === 1 ? -1 : 1;
    }
    const j = alpha - i;
    const logT0 = logAbsCoef + i * logQ + j * log1mQ;
    const logT1 = logAbsCoef + j * logQ + i * log1mQ;
    const logE0 = LOG_HALF + logErfc((i - z0) / sqrt2Sigma);
    const logE1 = LOG_HALF + logErfc((z0 - j) / sqrt2Sigma);
    const logS0 = logT0 + (i * i - i) / (2 * s2) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * s2) + logE1;
    a0.add(sign, logS0);
    a1.add(sign, logS1);
    // Past i > alpha + 1 the series alternates; once both terms decrease in
    // magnitude, the truncation error is below the next term (Leibniz).
    if (i > alpha + 1 && logS0 < lastS0 && logS1 < lastS1) {
      const total = logAddSafe(a0.log(), a1.log());
      const logLastTerm = logAddSafe(logS0, logS1);
      // log(A - 1): the quantity RDP is made of, so the tolerance is relative
      // to it (A itself is ~1 for small q).
      const logAMinus1 = total > 1e-3 ? total + Math.log(-Math.expm1(-total)) : Math.log(Math.expm1(total));
      if (logLastTerm < total + LOG_MACHINE_TOLERANCE || logLastTerm < logAMinus1 + LOG_RELATIVE_TOLERANCE) {
        // For an alternating tail with decreasing magnitudes the sum lies
        // between the last two partial sums (Leibniz): return the larger, so
        // the truncation can only overstate A (and ε), never understate it.
        // (The difference is within the tolerance above, ~1e-11 of A - 1.)
        return sign === 1 ? total : total + Math.log1p(Math.exp(logLastTerm - total));
      }
    }
    lastS0 = logS0;
    lastS1 = logS1;
  }
  throw new PrivacyError('numerical_failure', 'fractional-order RDP series did not converge', {
    details: { samplingRate: q, noiseMultiplier: sigma, order: alpha },
  });
}

function logAddSafe(a: number, b: number): number {
  if (Number.isNaN(a) || Number.isNaN(b)) return Number.NaN;
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const hi = Math.max(a, b);
  return hi + Math.log1p(Math.exp(Math.min(a, b) - hi));
}

/**
 * RDP at one order of one application of the sampled Gaussian mechanism.
 * Edge cases follow dp_accounting `_compute_rdp_poisson_subsampled_gaussian`:
 * q = 0 gives 0; alpha = Infinity gives Infinity; q = 1 gives the Gaussian
 * mechanism's alpha / (2 z^2) (Mironov 2017, Prop. 7).
 */
export function sampledGaussianRdpAtOrder(samplingRate: number, noiseMultiplier: number, order: number): number {
  if (samplingRate === 0) return 0;
  if (order === Infinity || noiseMultiplier === 0) return Infinity;
  if (samplingRate === 1) return order / (2 * noiseMultiplier * noiseMultiplier);
  const logA = Number.isInteger(order)
    ? logAInteger(samplingRate, noiseMultiplier, order)
    : logAFractional(samplingRate, noiseMultiplier, order);
  if (Number.isNaN(logA)) {
    throw new PrivacyError('numerical_failure', 'RDP computation produced NaN', {
      details: { samplingRate, noiseMultiplier, order },
    });
  }
  // A_alpha >= 1 mathematically; clamp round-off below zero.
  return Math.max(0, logA) / (order - 1);
}

/** Options of {@link computeRdp}. */
export interface ComputeRdpOptions {
  /** Poisson sampling probability q of each client per round, in [0, 1]. */
  samplingRate: number;
  /** Noise standard deviation divided by the clip norm (z), >= 0. */
  noiseMultiplier: number;
  /** Number of rounds (compositions); non-negative integer. Default 1. */
  steps?: number;
  /** RDP orders (each > 1). Default {@link DEFAULT_RDP_ORDERS}. */
  orders?: readonly number[];
}

/** @internal Validates (q, z). */
export function validateSampledGaussian(samplingRate: number, noiseMultiplier: number): void {
  requireArgument(
    Number.isFinite(samplingRate) && samplingRate >= 0 && samplingRate <= 1,
    `samplingRate must be in [0, 1], got ${String(samplingRate)}`,
    { samplingRate },
  );
  requireArgument(
    Number.isFinite(noiseMultiplier) && noiseMultiplier >= 0,
    `noiseMultiplier must be a finite number >= 0, got ${String(noiseMultiplier)}`,
    { noiseMultiplier },
  );
}

/** @internal Validates a composition count. */
export function validateSteps(steps: number, name = 'steps'): void {
  requireArgument(
    Number.isSafeInteger(steps) && steps >= 0,
    `${name} must be a non-negative integer, got ${String(steps)}`,
    { [name]: steps },
  );
}

/**
 * RDP of `steps` rounds of the Poisson-subsampled Gaussian mechanism, one
 * value per order (RDP composes additively, Mironov 2017 Prop. 1).
 * Entries may be `Infinity` (e.g. z = 0).
 */
export function computeRdp(options: ComputeRdpOptions): Float64Array {
  const { samplingRate, noiseMultiplier } = options;
  const steps = options.steps ?? 1;
  validateSampledGaussian(samplingRate, noiseMultiplier);
  validateSteps(steps);
  const orders = resolveOrders(options.orders);
  const out = new Float64Array(orders.length);
  for (let k = 0; k < orders.length; k++) {
    const r = sampledGaussianRdpAtOrder(samplingRate, noiseMultiplier, orders[k] as number);
    out[k] = steps === 0 || r === 0 ? 0 : r * steps;
  }
  return out;
}
