import { PrivacyError, requireArgument } from '../errors.js';
import { rdpToEpsilon, validateDelta, type EpsilonResult } from '../accounting/conversion.js';
import { resolveOrders } from '../accounting/orders.js';
import { createSeededRng, type Rng } from '../rng.js';
import { createDiscreteGaussianSampler, fastDiscreteGaussianVariance } from './discrete-gaussian.js';
import { clipToNorm, getDefaultRng, l2Norm, type UpdateVector } from './gaussian.js';

/**
 * The distributed discrete Gaussian (DDG) mechanism for federated learning
 * with secure (modular) aggregation: Kairouz, Liu & Steinke 2021, "The
 * Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
 * Aggregation", ICML 2021 (arXiv:2102.06387; equation numbers below refer to
 * the arXiv version, as in the authors' `google-research/federated/
 * distributed_dp` code).
 *
 * Client (their Algorithm 1): clip to L2 norm c -> pad to a power of two and
 * randomly rotate (Walsh–Hadamard with random signs, shared seed) -> scale by
 * 1/γ -> conditional randomized rounding to Z^d -> add N_Z(0, σ_z²) ->
 * reduce mod m. Server: sum mod m -> centre in [-m/2, m/2) -> divide by the
 * scale -> inverse rotation -> unpad.
 */

/** Default β = exp(-1/2) of the conditional rounding (as in the authors' code). */
export const DEFAULT_ROUNDING_BETA = Math.exp(-0.5);

/**
 * L2 norm bound after conditional randomized rounding of a vector with L2
 * norm <= `scaledNorm` (already scaled to the integer grid) in `dimension`
 * coordinates (KLS21 Theorem 1 / Proposition 22, Eq. 2):
 *
 *   min{ c + sqrt(d),  sqrt(c² + d/4 + sqrt(2 ln(1/β)) · (c + sqrt(d)/2)) }
 *
 * With β = 0 (unconditional rounding) only the first (deterministic) bound
 * holds.
 */
export function roundedL2NormBound(scaledNorm: number, dimension: number, beta: number = DEFAULT_ROUNDING_BETA): number {
  requireArgument(scaledNorm >= 0 && Number.isFinite(scaledNorm), 'scaledNorm must be finite and >= 0', {
    scaledNorm,
  });
  requireArgument(Number.isSafeInteger(dimension) && dimension >= 1, 'dimension must be a positive integer', {
    dimension,
  });
  requireArgument(beta >= 0 && beta < 1, 'beta must be in [0, 1)', { beta });
  const bound1 = scaledNorm + Math.sqrt(dimension);
  if (beta === 0) return bound1;
  const squared =
    scaledNorm * scaledNorm +
    0.25 * dimension +
    Math.sqrt(2 * Math.log(1 / beta)) * (scaledNorm + 0.5 * Math.sqrt(dimension));
  return Math.min(bound1, Math.sqrt(squared));
}

/** Options of {@link conditionalRandomizedRound}. */
export interface ConditionalRoundingOptions {
  /** L2 norm bound of the (already scaled) input; default: its actual norm. */
  scaledNormBound?: number;
  /** β in [0, 1); 0 disables the conditional retry. Default exp(-1/2). */
  beta?: number;
  /** Randomness. Default: the process CSPRNG. */
  rng?: Rng;
  /** Give up after this many retries. Default 10_000 (expected ~1/(1-β)). */
  maxAttempts?: number;
}

/**
 * Unbiased randomized rounding to integers (each coordinate rounds up with
 * probability equal to its fractional part), retried until the result's L2
 * norm is within {@link roundedL2NormBound} (KLS21 Sec. 4.1, conditional
 * randomized rounding). The returned norm bound holds deterministically —
 * it is what the privacy analysis uses as sensitivity.
 */
export function conditionalRandomizedRound(scaled: ArrayLike<number>, options: ConditionalRoundingOptions = {}): Float64Array {
  const beta = options.beta ?? DEFAULT_ROUNDING_BETA;
  const rng = options.rng ?? getDefaultRng();
  const d = scaled.length;
  const norm = options.scaledNormBound ?? l2Norm(scaled);
  const bound = roundedL2NormBound(norm, Math.max(1, d), beta);
  const maxAttempts = options.maxAttempts ?? 10_000;
  const out = new Float64Array(d);
  for (let attempt = 0; attempt < maxAttempts; attempt++) {
    let sq = 0;
    for (let i = 0; i < d; i++) {
      const x = scaled[i] as number;
      const f = Math.floor(x);
      const r = rng.nextDouble() < x - f ? f + 1 : f;
      out[i] = r;
      sq += r * r;
    }
    if (Math.sqrt(sq) <= bound) return out;
  }
  throw new PrivacyError('numerical_failure', 'conditional randomized rounding did not meet its norm bound', {
    details: { bound, attempts: maxAttempts },
  });
}

/** Smallest power of two >= n: the length the random rotation pads an update to. */
export function nextPowerOfTwo(n: number): number {
  requireArgument(Number.isSafeInteger(n) && n >= 1, 'n must be a positive integer', { n });
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** In-place orthonormal fast Walsh–Hadamard transform (length a power of two). */
function fwht(v: Float64Array): void {
  const n = v.length;
  for (let h = 1; h < n; h *= 2) {
    for (let i = 0; i < n; i += 2 * h) {
      for (let j = i; j < i + h; j++) {
        const a = v[j] as number;
        const b = v[j + h] as number;
        v[j] = a + b;
        v[j + h] = a - b;
      }
    }
  }
  const s = 1 / Math.sqrt(n);
  for (let i = 0; i < n; i++) v[i] = (v[i] as number) * s;
}

function rademacherSigns(n: number, seed: number): Int8Array {
  const rng = createSeededRng(seed);
  const signs = new Int8Array(n);
  for (let i = 0; i < n; i += 32) {
    const bits = rng.nextUint32();
    for (let k = 0; k < 32 && i + k < n; k++) signs[i + k] = (bits >>> k) & 1 ? 1 : -1;
  }
  return signs;
}

/**
 * Random rotation H·D·x (KLS21 Sec. 4.2, "flattening"): zero-pad to the next
 * power of two, multiply by random ±1 signs D derived from the public
 * `rotationSeed` (shared by all clients and the server in a round; it need
 * not be secret), then apply the orthonormal Walsh–Hadamard transform H.
 * Preserves the L2 norm; each output coordinate of a fixed vector v is
 * sub-Gaussian with variance proxy ||v||²/d (their Lemma 29 with ρ = 1).
 */
export function randomizedHadamard(x: ArrayLike<number>, rotationSeed: number): Float64Array {
  const n = nextPowerOfTwo(Math.max(1, x.length));
  const signs = rademacherSigns(n, rotationSeed);
  const v = new Float64Array(n);
  for (let i = 0; i < x.length; i++) v[i] = (x[i] as number) * (signs[i] as number);
  fwht(v);
  return v;
}

/** Inverse of {@link randomizedHadamard}: D·H·y, truncated to `originalDimension`. */
export function inverseRandomizedHadamard(y: ArrayLike<number>, originalDimension: number, rotationSeed: number): Float64Array {
  const n = y.length;
  requireArgument(n >= 1 && nextPowerOfTwo(n) === n, 'rotated length must be a power of two', { length: n });
  requireArgument(originalDimension >= 0 && originalDimension <= n, 'originalDimension out of range', {
    originalDimension,
  });
  const v = Float64Array.from(y);
  fwht(v);
  const signs = rademacherSigns(n, rotationSeed);
  const out = new Float64Array(originalDimension);
  for (let i = 0; i < originalDimension; i++) out[i] = (v[i] as number) * (signs[i] as number);
  return out;
}

/** Maps integers to their residues in [0, modulus). */
export function reduceModulo(values: ArrayLike<number>, modulus: number): Float64Array {
  validateModulus(modulus);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const r = (values[i] as number) % modulus;
    out[i] = r < 0 ? r + modulus : r;
  }
  return out;
}

/** Maps residues mod `modulus` to the centred representatives in [-m/2, m/2). */
export function centerModulo(values: ArrayLike<number>, modulus: number): Float64Array {
  validateModulus(modulus);
  const half = Math.floor(modulus / 2);
  const out = new Float64Array(values.length);
  for (let i = 0; i < values.length; i++) {
    let r = (values[i] as number) % modulus;
    if (r < 0) r += modulus;
    out[i] = r >= modulus - half ? r - modulus : r;
  }
  return out;
}

function validateModulus(modulus: number): void {
  requireArgument(
    Number.isSafeInteger(modulus) && modulus >= 2,
    'modulus must be an integer in [2, 2^53)',
    { modulus },
  );
}

/** Options of {@link encodeDistributedDiscreteGaussian}. */
export interface DdgClientOptions {
  /** c: L2 clip norm of the update, > 0 (update units). */
  clipNorm: number;
  /** Scale 1/γ: integer-grid steps per update unit, > 0. */
  scale: number;
  /** Local noise stddev σ in update units (integer-domain σ_z = σ · scale). */
  localStddev: number;
  /** Modulus m of the secure aggregation (e.g. 2^32 or the BFV plain modulus). */
  modulus: number;
  /** Public per-round seed of the random rotation; omit to skip rotation. */
  rotationSeed?: number;
  /** β of the conditional rounding. Default exp(-1/2). */
  beta?: number;
  /** Randomness for rounding and noise. Default: the process CSPRNG. */
  rng?: Rng;
}

/** Result of {@link encodeDistributedDiscreteGaussian}. */
export interface DdgClientResult {
  /** Residues in [0, modulus) to feed to secure aggregation. */
  encoded: Float64Array;
  /** L2 norm of the update before clipping. */
  norm: number;
  /** Dimension after padding (what the accounting's `dimension` must be). */
  dimension: number;
}

/**
 * Client side of DDG (KLS21 Algorithm 1): clip, rotate (optional), scale,
 * conditionally round, add N_Z(0, (localStddev·scale)²), reduce mod m.
 */
export function encodeDistributedDiscreteGaussian(update: UpdateVector, options: DdgClientOptions): DdgClientResult {
  const { clipNorm, scale, localStddev, modulus } = options;
  requireArgument(Number.isFinite(scale) && scale > 0, 'scale must be a finite number > 0', { scale });
  requireArgument(Number.isFinite(localStddev) && localStddev > 0, 'localStddev must be a finite number > 0', {
    localStddev,
  });
  validateModulus(modulus);
  const rng = options.rng ?? getDefaultRng();
  const { clipped, norm } = clipToNorm(Float64Array.from(update), clipNorm);
  const rotated = options.rotationSeed === undefined ? clipped : randomizedHadamard(clipped, options.rotationSeed);
  const scaled = new Float64Array(rotated.length);
  for (let i = 0; i < rotated.length; i++) scaled[i] = (rotated[i] as number) * scale;
  const rounded = conditionalRandomizedRound(scaled, {
    scaledNormBound: clipNorm * scale,
    beta: options.beta ?? DEFAULT_ROUNDING_BETA,
    rng,
  });
  // The share's variance is rounded UP to a dyadic rational with a small denominator: never less
  // noise than the accounting's (localStddev·scale)² (relative excess below 1e-9 at σ_z = 256),
  // and the exact sampler (CKS20 Algorithm 3) then runs on integers held in doubles, not bigints.
  const sigmaZ = localStddev * scale;
  const sampler = createDiscreteGaussianSampler({ sigmaSquared: fastDiscreteGaussianVariance(sigmaZ * sigmaZ), rng });
  const noise = new Float64Array(rounded.length);
  sampler.fill(noise);
  for (let i = 0; i < rounded.length; i++) rounded[i] = (rounded[i] as number) + (noise[i] as number);
  return { encoded: reduceModulo(rounded, modulus), norm, dimension: rounded.length };
}

/** Options of {@link decodeDistributedDiscreteGaussian}. */
export interface DdgServerOptions {
  /** Same scale the clients used. */
  scale: number;
  /** Same modulus. */
  modulus: number;
  /** Dimension of the original (unpadded) update. */
  originalDimension: number;
  /** Same rotation seed the clients used, if any. */
  rotationSeed?: number;
}

/**
 * Server side of DDG: take the modular sum of client encodings, centre it in
 * [-m/2, m/2), unscale and undo the rotation. Returns the noisy *sum* of
 * clipped updates (divide by the number of clients for the mean).
 */
export function decodeDistributedDiscreteGaussian(modularSum: ArrayLike<number>, options: DdgServerOptions): Float64Array {
  const centred = centerModulo(modularSum, options.modulus);
  for (let i = 0; i < centred.length; i++) centred[i] = (centred[i] as number) / options.scale;
  if (options.rotationSeed === undefined) return centred.slice(0, options.originalDimension);
  return inverseRandomizedHadamard(centred, options.originalDimension, options.rotationSeed);
}

/** Parameters of one DDG round, for accounting. */
export interface DdgAccountingParams {
  /** c: L2 clip norm (update units), > 0. */
  clipNorm: number;
  /** Scale 1/γ, > 0. */
  scale: number;
  /** Local noise stddev σ per client (update units), > 0. */
  localStddev: number;
  /**
   * n: the minimum number of clients whose noise is guaranteed to be in the
   * sum (after dropouts), >= 1.
   */
  clients: number;
  /** d: dimension after padding (see `DdgClientResult.dimension`). */
  dimension: number;
  /** β of the conditional rounding; must match the clients'. Default exp(-1/2). */
  beta?: number;
  /** Poisson sampling probability of the round, in (0, 1]. Default 1. */
  samplingRate?: number;
  /** Number of identical rounds. Default 1. */
  steps?: number;
  /** RDP orders. Default `DEFAULT_RDP_ORDERS`. */
  orders?: readonly number[];
}

/**
 * τ of KLS21 Theorem 1 (sum of n discrete Gaussians is close to a discrete
 * Gaussian of variance nσ²), with σ the per-client integer-domain σ_z:
 *   τ = 10 · Σ_{k=1}^{n-1} exp(-2π² σ_z² · k / (k + 1)).
 */
export function ddgTau(sigmaZ: number, clients: number): number {
  let tau = 0;
  for (let k = 1; k < clients; k++) tau += Math.exp(-2 * Math.PI * Math.PI * sigmaZ * sigmaZ * (k / (k + 1)));
  return 10 * tau;
}

function logBinomial(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log(n - k + i) - Math.log(i);
  return s;
}

/**
 * RDP of `steps` rounds of the DDG mechanism, one value per order.
 *
 * Unsampled round (KLS21 Proposition 14 / Eq. 17, combined with Theorem 1),
 * in the integer domain with Δ₂ = the rounded L2 bound of
 * {@link roundedL2NormBound}(c·scale), Δ₁ = Δ₂·min(√d, Δ₂) and
 * s = √n·σ_z:
 *
 *   ε(α) = min{ α Δ₂²/(2 s²) + τ d,
 *               (α/2) (Δ₂²/s² + 2 Δ₁ τ / s + τ² d),
 *               (α/2) (Δ₂/s + τ √d)² }.
 *
 * With Poisson sampling q < 1, each integer order additionally uses the
 * general subsampled-RDP upper bound of Zhu & Wang 2019 ("Poisson Subsampled
 * Rényi Differential Privacy", ICML 2019, Theorem 5) and takes the minimum;
 * fractional orders use the bound at ceil(α) (RDP is non-decreasing in α).
 */
export function computeDistributedDiscreteGaussianRdp(params: DdgAccountingParams): Float64Array {
  const { clipNorm, scale, localStddev, clients, dimension } = params;
  const beta = params.beta ?? DEFAULT_ROUNDING_BETA;
  const q = params.samplingRate ?? 1;
  const steps = params.steps ?? 1;
  requireArgument(Number.isFinite(clipNorm) && clipNorm > 0, 'clipNorm must be > 0', { clipNorm });
  requireArgument(Number.isFinite(scale) && scale > 0, 'scale must be > 0', { scale });
  requireArgument(Number.isFinite(localStddev) && localStddev > 0, 'localStddev must be > 0', { localStddev });
  requireArgument(Number.isSafeInteger(clients) && clients >= 1, 'clients must be a positive integer', { clients });
  requireArgument(Number.isSafeInteger(dimension) && dimension >= 1, 'dimension must be a positive integer', {
    dimension,
  });
  requireArgument(q > 0 && q <= 1, 'samplingRate must be in (0, 1]', { samplingRate: q });
  requireArgument(Number.isSafeInteger(steps) && steps >= 0, 'steps must be a non-negative integer', { steps });
  const orders = resolveOrders(params.orders);

  const sigmaZ = localStddev * scale;
  const l2 = roundedL2NormBound(clipNorm * scale, dimension, beta);
  const l1 = l2 * Math.min(Math.sqrt(dimension), l2);
  const tau = ddgTau(sigmaZ, clients);
  const s = Math.sqrt(clients) * sigmaZ;
  const l2Scale = l2 / s;
  const l1Scale = l1 / s;
  const eps = (alpha: number): number => {
    if (alpha === Infinity) return Infinity;
    const t1 = (alpha / 2) * l2Scale * l2Scale + tau * dimension;
    const t2 = (alpha / 2) * (l2Scale * l2Scale + 2 * l1Scale * tau + tau * tau * dimension);
    const t3 = (alpha / 2) * (l2Scale + Math.sqrt(dimension) * tau) ** 2;
    return Math.min(t1, t2, t3);
  };
  const subsampled = (alpha: number): number => {
    // Zhu & Wang 2019, Theorem 5, integer alpha >= 2.
    const log1mq = Math.log1p(-q);
    const logQ = Math.log(q);
    const logs: number[] = [];
    logs.push((alpha - 1) * log1mq + Math.log(alpha * q - q + 1));
    logs.push(logBinomial(alpha, 2) + 2 * logQ + (alpha - 2) * log1mq + eps(2));
    let logBinom = logBinomial(alpha, 2);
    for (let l = 3; l <= alpha; l++) {
      logBinom += Math.log(alpha - l + 1) - Math.log(l);
      logs.push(Math.log(3) + logBinom + l * logQ + (alpha - l) * log1mq + (l - 1) * eps(l));
    }
    let max = -Infinity;
    for (const v of logs) max = Math.max(max, v);
    let sum = 0;
    for (const v of logs) sum += Math.exp(v - max);
    return (max + Math.log(sum)) / (alpha - 1);
  };
  const out = new Float64Array(orders.length);
  for (let k = 0; k < orders.length; k++) {
    const alpha = orders[k] as number;
    let r = eps(alpha);
    if (q < 1 && Number.isFinite(alpha)) r = Math.min(r, subsampled(Math.max(2, Math.ceil(alpha))));
    out[k] = steps === 0 ? 0 : r * steps;
  }
  return out;
}

/** ε at `delta` of {@link computeDistributedDiscreteGaussianRdp}. */
export function computeDistributedDiscreteGaussianEpsilon(params: DdgAccountingParams & { delta: number }): EpsilonResult {
  validateDelta(params.delta);
  const orders = resolveOrders(params.orders);
  return rdpToEpsilon({ rdp: computeDistributedDiscreteGaussianRdp(params), orders, delta: params.delta });
}

/** Options of {@link checkModularHeadroom}. */
export interface ModularHeadroomOptions {
  /** c: L2 clip norm (update units). */
  clipNorm: number;
  /** n: maximum number of clients summed. */
  clients: number;
  /** log2 of the modulus m (m = 2^modulusBits; pass log2(m) for other moduli). */
  modulusBits: number;
  /** Scale 1/γ. */
  scale: number;
  /** Local noise stddev σ per client (update units). */
  localStddev: number;
  /** d: dimension after padding. */
  dimension: number;
  /** Whether the random rotation is applied (enables the flatness bound). Default true. */
  rotated?: boolean;
  /** Overflow probability considered acceptable. Default 1e-9. */
  maxOverflowProbability?: number;
}

/** Result of {@link checkModularHeadroom}. */
export interface ModularHeadroomResult {
  /** Union bound on P(any coordinate of the integer sum leaves [-m/2, m/2)). */
  overflowProbabilityBound: number;
  /** overflowProbabilityBound <= maxOverflowProbability. */
  ok: boolean;
  /** Per-coordinate sub-Gaussian variance proxy of the aggregate (integer units²). */
  varianceProxy: number;
  /** Smallest modulusBits meeting maxOverflowProbability under the same bound. */
  requiredModulusBits: number;
}

/**
 * Bounds the probability that modular (secure) aggregation wraps around
 * (KLS21 Sec. 4.4 and Eq. 61). In the integer domain each coordinate of the
 * aggregate is a sum of (i) the signal, (ii) rounding errors (zero-mean,
 * support of width 1: sub-Gaussian with proxy 1/4 each, Hoeffding) and
 * (iii) discrete Gaussian noise (sub-Gaussian with proxy σ_z², CKS20
 * Cor. 9). With rotation the signal coordinate is sub-Gaussian with proxy
 * ||Σ x_i||²·scale²/d <= (n c scale)²/d (Lemma 29, ρ = 1), so
 *
 *   v = (n c scale)²/d + n/4 + n σ_z²,  P(overflow) <= 2 d exp(-(m/2)² / (2v)).
 *
 * Without rotation the signal is bounded deterministically by n c scale per
 * coordinate and P <= 2 d exp(-(m/2 - n c scale)² / (2 (n/4 + n σ_z²))).
 * (Conditional rounding is treated as unbiased, as in the paper's heuristic.)
 */
export function checkModularHeadroom(options: ModularHeadroomOptions): ModularHeadroomResult {
  const { clipNorm, clients: n, modulusBits, scale, localStddev, dimension: d } = options;
  const rotated = options.rotated ?? true;
  const maxP = options.maxOverflowProbability ?? 1e-9;
  requireArgument(clipNorm > 0 && Number.isFinite(clipNorm), 'clipNorm must be > 0', { clipNorm });
  requireArgument(Number.isSafeInteger(n) && n >= 1, 'clients must be a positive integer', { clients: n });
  requireArgument(modulusBits > 0 && modulusBits <= 53, 'modulusBits must be in (0, 53]', { modulusBits });
  requireArgument(scale > 0 && Number.isFinite(scale), 'scale must be > 0', { scale });
  requireArgument(localStddev >= 0 && Number.isFinite(localStddev), 'localStddev must be >= 0', { localStddev });
  requireArgument(Number.isSafeInteger(d) && d >= 1, 'dimension must be a positive integer', { dimension: d });
  requireArgument(maxP > 0 && maxP < 1, 'maxOverflowProbability must be in (0, 1)', { maxOverflowProbability: maxP });
  const sigmaZ = localStddev * scale;
  const noiseProxy = n * 0.25 + n * sigmaZ * sigmaZ;
  const signal = n * clipNorm * scale;
  const bound = (bits: number): number => {
    const half = 2 ** bits / 2;
    let logP: number;
    if (rotated) {
      logP = Math.log(2 * d) - (half * half) / (2 * ((signal * signal) / d + noiseProxy));
    } else {
      const room = half - signal;
      if (room <= 0) return 1;
      logP = Math.log(2 * d) - (room * room) / (2 * noiseProxy);
    }
    return Math.min(1, Math.exp(logP));
  };
  const varianceProxy = rotated ? (signal * signal) / d + noiseProxy : noiseProxy;
  const p = bound(modulusBits);
  let required = 1;
  while (required < 1024 && bound(required) > maxP) required++;
  return { overflowProbabilityBound: p, ok: p <= maxP, varianceProxy, requiredModulusBits: required };
}
