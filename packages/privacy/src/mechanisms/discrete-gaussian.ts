import { requireArgument } from '../errors.js';
import { uniformBigInt, uniformInt, type Rng } from '../rng.js';
import { getDefaultRng } from './gaussian.js';

/**
 * Exact sampling from the discrete Gaussian N_Z(0, σ²), whose pmf is
 * proportional to exp(-x² / (2σ²)) on the integers, following Canonne,
 * Kamath & Steinke 2020, "The Discrete Gaussian for Differential Privacy"
 * (NeurIPS 2020): Algorithm 1 (Bernoulli(exp(-γ)) for rational γ),
 * Algorithm 2 (discrete Laplace) and Algorithm 3 (discrete Gaussian by
 * rejection from the discrete Laplace with t = floor(σ) + 1).
 *
 * All arithmetic is exact: σ² is taken as the exact rational value of the
 * given double and every Bernoulli trial compares a uniform integer
 * (bigint when needed) with a rational threshold, so there is no
 * floating-point bias.
 */

interface Rational {
  readonly num: bigint;
  readonly den: bigint;
}

/** @internal The exact rational value of a finite double x >= 0. */
export function rationalFromDouble(x: number): Rational {
  requireArgument(Number.isFinite(x) && x >= 0, 'value must be a finite number >= 0', { value: x });
  if (x === 0) return { num: 0n, den: 1n };
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, x);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  let mant = bits & ((1n << 52n) - 1n);
  let exp: number;
  if (biased === 0) {
    exp = -1074;
  } else {
    mant |= 1n << 52n;
    exp = biased - 1075;
  }
  if (exp >= 0) return { num: mant << BigInt(exp), den: 1n };
  let den = 1n << BigInt(-exp);
  while ((mant & 1n) === 0n && den > 1n) {
    mant >>= 1n;
    den >>= 1n;
  }
  return { num: mant, den };
}

const SAFE = BigInt(Number.MAX_SAFE_INTEGER);

/** Bernoulli(num / den) for 0 <= num <= den, exactly. */
function bernoulliRational(rng: Rng, num: bigint, den: bigint): boolean {
  if (den <= SAFE) return uniformInt(rng, Number(den)) < Number(num);
  return uniformBigInt(rng, den) < num;
}

/** CKS20 Algorithm 1 for γ = num/den in [0, 1]. */
function bernoulliExpNegUnit(rng: Rng, num: bigint, den: bigint): boolean {
  let k = 1n;
  while (bernoulliRational(rng, num, den * k)) k += 1n;
  return (k & 1n) === 1n;
}

/** Bernoulli(exp(-num/den)) for num/den >= 0 (CKS20 Algorithm 1, γ > 1 case). */
export function bernoulliExpNeg(rng: Rng, num: bigint, den: bigint): boolean {
  let n = num;
  while (n > den) {
    if (!bernoulliExpNegUnit(rng, 1n, 1n)) return false;
    n -= den;
  }
  return bernoulliExpNegUnit(rng, n, den);
}

/** CKS20 Algorithm 2 with scale t (integer, s = 1): P(Y = y) ∝ exp(-|y| / t). */
function sampleDiscreteLaplace(rng: Rng, t: bigint): bigint {
  for (;;) {
    const u = uniformBigInt(rng, t);
    if (!bernoulliExpNeg(rng, u, t)) continue;
    let v = 0n;
    while (bernoulliExpNegUnit(rng, 1n, 1n)) v += 1n;
    const y = u + t * v;
    const negative = (rng.nextUint32() & 1) === 1;
    if (negative && y === 0n) continue;
    return negative ? -y : y;
  }
}

// ---------------------------------------------------------------------------
// The same algorithms on exact integers held in doubles (all operands < 2^53).
// They draw the same random numbers in the same order as the bigint versions
// above, so for the same generator they return the same samples; they are
// used when σ² is an integer small enough (see createDiscreteGaussianSampler).
// ---------------------------------------------------------------------------

const SAFE_NUMBER = Number.MAX_SAFE_INTEGER;

/** Bernoulli(num / (den·k)), as {@link bernoulliRational} draws it (bigints once den·k passes 2^53). */
function bernoulliRationalNumber(rng: Rng, num: number, den: number, k: number): boolean {
  const d = den * k;
  return d <= SAFE_NUMBER ? uniformInt(rng, d) < num : uniformBigInt(rng, BigInt(den) * BigInt(k)) < BigInt(num);
}

function bernoulliExpNegUnitNumber(rng: Rng, num: number, den: number): boolean {
  let k = 1;
  while (bernoulliRationalNumber(rng, num, den, k)) k += 1;
  return (k & 1) === 1;
}

function bernoulliExpNegNumber(rng: Rng, num: number, den: number): boolean {
  let n = num;
  while (n > den) {
    if (!bernoulliExpNegUnitNumber(rng, 1, 1)) return false;
    n -= den;
  }
  return bernoulliExpNegUnitNumber(rng, n, den);
}

function sampleDiscreteLaplaceNumber(rng: Rng, t: number): number {
  for (;;) {
    const u = uniformInt(rng, t);
    if (!bernoulliExpNegNumber(rng, u, t)) continue;
    let v = 0;
    while (bernoulliExpNegUnitNumber(rng, 1, 1)) v += 1;
    const y = u + t * v;
    const negative = (rng.nextUint32() & 1) === 1;
    if (negative && y === 0) continue;
    return negative ? -y : y;
  }
}

function isqrt(n: bigint): bigint {
  if (n < 2n) return n;
  let x = BigInt(Math.floor(Math.sqrt(Number(n))));
  // Newton correction for values beyond double precision.
  while (x * x > n) x = (x + n / x) >> 1n;
  while ((x + 1n) * (x + 1n) <= n) x += 1n;
  return x;
}

/** A sampler bound to one σ² and RNG. */
export interface DiscreteGaussianSampler {
  /** σ² the sampler was created with. */
  readonly sigmaSquared: number;
  /** One sample from N_Z(0, σ²). */
  sample(): number;
  /** Fills `out` with i.i.d. samples (integers stored exactly). */
  fill(out: Float64Array | Int32Array): void;
}

/** Options of {@link createDiscreteGaussianSampler}. */
export interface DiscreteGaussianSamplerOptions {
  /** σ² > 0 (the scale parameter; the variance of N_Z(0, σ²) is slightly below σ²). */
  sigmaSquared: number;
  /** Randomness. Default: the process CSPRNG. */
  rng?: Rng;
  /** @internal Always use bigint arithmetic (to test the double fast path against it). */
  forceBigint?: boolean;
}

/**
 * Creates an exact sampler for N_Z(0, σ²) (CKS20 Algorithm 3): draw Y from
 * the discrete Laplace with scale t = floor(σ) + 1 and accept with
 * probability exp(-(|Y| - σ²/t)² / (2σ²)).
 */
export function createDiscreteGaussianSampler(options: DiscreteGaussianSamplerOptions): DiscreteGaussianSampler {
  const { sigmaSquared } = options;
  requireArgument(Number.isFinite(sigmaSquared) && sigmaSquared > 0, 'sigmaSquared must be a finite number > 0', {
    sigmaSquared,
  });
  const rng = options.rng ?? getDefaultRng();
  const { num: a, den: b } = rationalFromDouble(sigmaSquared); // σ² = a / b
  const t = isqrt(a / b) + 1n; // floor(σ) + 1
  // Acceptance exponent (|Y| - σ²/t)² / (2σ²) = (|Y|·b·t - a)² / (2·a·b·t²).
  const acceptDen = 2n * a * b * t * t;
  const bt = b * t;
  const exact = (): number => {
    for (;;) {
      const y = sampleDiscreteLaplace(rng, t);
      const absY = y < 0n ? -y : y;
      const diff = absY * bt - a;
      if (bernoulliExpNeg(rng, diff * diff, acceptDen)) return Number(y);
    }
  };
  // When σ² = a/b has 2abt² < 2^53 (an integer σ² below about 8,000², or a dyadic one with a small
  // denominator, see `fastDiscreteGaussianVariance`), the same algorithm runs on doubles, which hold
  // these integers exactly; a trial whose |y|bt or (|y|bt - a)² would not fit falls back to bigints.
  const fast = options.forceBigint !== true && acceptDen <= BigInt(SAFE_NUMBER);
  const aN = Number(a);
  const tN = Number(t);
  const btN = Number(bt);
  const acceptDenN = Number(acceptDen);
  const sample = !fast
    ? exact
    : (): number => {
        for (;;) {
          const y = sampleDiscreteLaplaceNumber(rng, tN);
          const scaled = Math.abs(y) * btN;
          const diff = scaled - aN;
          const squared = diff * diff;
          const accept =
            scaled <= SAFE_NUMBER && squared <= SAFE_NUMBER
              ? bernoulliExpNegNumber(rng, squared, acceptDenN)
              : bernoulliExpNeg(rng, (BigInt(Math.abs(y)) * bt - a) ** 2n, acceptDen);
          if (accept) return y;
        }
      };
  return {
    sigmaSquared,
    sample,
    fill(out) {
      for (let i = 0; i < out.length; i++) out[i] = sample();
    },
  };
}

/**
 * The smallest σ'² >= `sigmaSquared` of the form m / 2^k (k <= 52 as large as
 * possible) for which {@link createDiscreteGaussianSampler} runs on doubles
 * (2·m·2^k·(⌊σ'⌋+1)² < 2^53). A mechanism that must not add less noise than
 * its accounting assumes can sample N_Z(0, σ'²) instead of N_Z(0, σ²): the
 * variance grows by less than 2^-k (relative 1e-9 at σ = 256, 1e-5 at
 * σ = 2^12), and for σ above about 8,000 it is ⌈σ²⌉ (bigints then take over).
 */
export function fastDiscreteGaussianVariance(sigmaSquared: number): number {
  requireArgument(Number.isFinite(sigmaSquared) && sigmaSquared > 0, 'sigmaSquared must be a finite number > 0', { sigmaSquared });
  for (let k = 52; k > 0; k--) {
    const scale = 2 ** k;
    const m = Math.ceil(sigmaSquared * scale);
    const t = Math.floor(Math.sqrt(m / scale)) + 1;
    if (m <= Number.MAX_SAFE_INTEGER && 2 * m * scale * t * t <= Number.MAX_SAFE_INTEGER && m / scale >= sigmaSquared) return m / scale;
  }
  return Math.ceil(sigmaSquared);
}

/**
 * The exact pmf of N_Z(0, σ²) at integer x (normalised numerically over
 * |k| <= 40σ + 40; used for tests and tail computations).
 */
export function discreteGaussianPmf(sigmaSquared: number, x: number): number {
  const sigma = Math.sqrt(sigmaSquared);
  const bound = Math.ceil(40 * sigma + 40);
  let z = 0;
  for (let k = -bound; k <= bound; k++) z += Math.exp((-k * k) / (2 * sigmaSquared));
  return Math.exp((-x * x) / (2 * sigmaSquared)) / z;
}
