/**
 * Log-space arithmetic and special functions used by the accountant.
 * Pure Number code; no dependencies.
 */

const LOG_SQRT_PI = 0.5 * Math.log(Math.PI);
const TWO_OVER_SQRT_PI = 2 / Math.sqrt(Math.PI);

/** log(exp(a) + exp(b)) without overflow. */
export function logAdd(a: number, b: number): number {
  if (a === -Infinity) return b;
  if (b === -Infinity) return a;
  const hi = Math.max(a, b);
  const lo = Math.min(a, b);
  return hi + Math.log1p(Math.exp(lo - hi));
}

/**
 * log(erfc(x)) with full relative accuracy for every real x, including
 * x >> 1 where erfc underflows.
 *
 * - x < 2.5: erfc = 1 - erf(x) (x >= 0) or 1 + erf(|x|) (x < 0), with erf
 *   from the everywhere-positive series erf(x) = 2/sqrt(pi) e^{-x^2}
 *   sum_n 2^n x^{2n+1} / (2n+1)!!  (Abramowitz & Stegun 7.1.6).
 * - x >= 2.5: the Laplace continued fraction
 *   erfc(x) = e^{-x^2}/sqrt(pi) * 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + ...))))
 *   (A&S 7.1.14), evaluated by the modified Lentz method in log form.
 */
export function logErfc(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  if (x === Infinity) return -Infinity;
  if (x < 0) return Math.log(2 - Math.exp(logErfc(-x)));
  if (x < 2.5) return Math.log1p(-erfSeries(x));
  // Modified Lentz for f = x + K_{k>=1} (k/2) / x.
  const tiny = 1e-300;
  let f = x;
  let c = x;
  let d = 0;
  for (let k = 1; k < 10_000; k++) {
    const a = k / 2;
    d = x + a * d;
    if (d === 0) d = tiny;
    c = x + a / c;
    if (c === 0) c = tiny;
    d = 1 / d;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return -x * x - LOG_SQRT_PI - Math.log(f);
}

/** erf(x) for 0 <= x < ~6 via the positive series (A&S 7.1.6). */
function erfSeries(x: number): number {
  if (x === 0) return 0;
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 1000; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < sum * 1e-17) break;
  }
  return Math.min(1, TWO_OVER_SQRT_PI * Math.exp(-x2) * sum);
}

/**
 * Streaming signed sum of terms given as (sign, log|term|), held as
 * scale * 2-component: total = sum * exp(logScale). Accurate as long as the
 * final sum is not much smaller than the largest term (true for the series
 * used here, whose large terms all have the same sign).
 */
export class SignedLogSum {
  private logScale = -Infinity;
  private sum = 0;

  add(sign: 1 | -1, logMagnitude: number): void {
    if (logMagnitude === -Infinity) return;
    if (logMagnitude > this.logScale) {
      this.sum = this.logScale === -Infinity ? 0 : this.sum * Math.exp(this.logScale - logMagnitude);
      this.logScale = logMagnitude;
    }
    this.sum += sign * Math.exp(logMagnitude - this.logScale);
  }

  /** log of the current sum; NaN when the sum is negative, -Infinity when 0. */
  log(): number {
    if (this.sum <= 0) return this.sum === 0 ? -Infinity : Number.NaN;
    return this.logScale + Math.log(this.sum);
  }
}

/** log of the sum of exp(values), stable. */
export function logSumExp(values: ArrayLike<number>): number {
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) max = Math.max(max, values[i] as number);
  if (max === -Infinity || max === Infinity) return max;
  let s = 0;
  for (let i = 0; i < values.length; i++) s += Math.exp((values[i] as number) - max);
  return max + Math.log(s);
}

/** log(1 + exp(x)) without overflow. */
export function log1pExp(x: number): number {
  if (x > 35) return x + Math.exp(-x);
  if (x < -37) return Math.exp(x);
  return Math.log1p(Math.exp(x));
}
