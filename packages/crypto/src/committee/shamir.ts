/**
 * Shamir secret sharing (Shamir 1979, "How to share a secret", CACM 22(11)) of a polynomial,
 * coefficient-wise, t-of-n over the prime field F_p with p = 65521, evaluation points
 * x = custodian index 1..n. Each of the N coefficients s_k of a device's small signed secret gets
 * its own random polynomial f_k(x) = s_k + a_{k,1} x + … + a_{k,t-1} x^{t-1} (mod p) with
 * a_{k,j} uniform in F_p, drawn by rejection sampling from a CSPRNG (design note, "Sampling":
 * u16 mod p would be biased by about 2^-12); custodian i receives f_k(i) for every k. Shares are
 * additive: Σ_j f_{j,k}(i) is a share of Σ_j s_{j,k}, so a custodian sums its shares over D and
 * any t sums reconstruct S_D = Σ_{j∈D} s_j mod p by Lagrange interpolation at 0; the centred
 * lift to (-p/2, p/2] recovers S_D exactly while |D| < p/2 for ternary secrets.
 *
 * All arithmetic is on float64 integers below p² < 2^32, exact.
 */
import { CryptoError } from '../errors.js';
import { COMMITTEE_SHARE_MODULUS } from './descriptor.js';
import { secureRandomBytes, type RandomBytes } from './keys.js';

const P = COMMITTEE_SHARE_MODULUS;
const HALF_P = (P - 1) / 2;

/**
 * Uniform integers in [0, p) by rejection sampling 16-bit words from `random` (a value >= p,
 * probability 15/65536, is discarded and redrawn). Writes `out.length` values.
 */
export function fillUniformModP(out: Uint16Array, random: RandomBytes): void {
  let filled = 0;
  while (filled < out.length) {
    const need = out.length - filled;
    // 1/4096 more than needed plus a few covers the expected rejections in one draw.
    const bytes = random(2 * (need + (need >>> 11) + 4));
    for (let i = 0; i + 1 < bytes.length && filled < out.length; i += 2) {
      const v = bytes[i]! | (bytes[i + 1]! << 8);
      if (v < P) out[filled++] = v;
    }
    bytes.fill(0);
  }
}

/** Options of {@link shareSecret}. */
export interface ShareSecretOptions {
  /** t: shares needed to reconstruct, 2 <= t <= n. */
  readonly threshold: number;
  /** n: number of shares (custodian indices 1..n), n < p. */
  readonly shares: number;
  /** CSPRNG. Default: node:crypto. */
  readonly random?: RandomBytes;
}

/**
 * Shares each coefficient of `secret` (small signed integers, |s_k| < p/2) t-of-n. Returns n
 * arrays; element i-1 is custodian i's share, N values in [0, p). The caller erases secret and
 * shares (fill(0)) after use; the random polynomial coefficients are erased here.
 */
export function shareSecret(secret: Int8Array | Int32Array, options: ShareSecretOptions): Uint16Array[] {
  const { threshold: t, shares: n } = options;
  if (!Number.isInteger(t) || !Number.isInteger(n) || t < 2 || t > n || n >= P) {
    throw new CryptoError('invalid_argument', `need 2 <= t <= n < p, got t = ${t}, n = ${n}`);
  }
  const size = secret.length;
  const coefficients = new Uint16Array(size * (t - 1));
  fillUniformModP(coefficients, options.random ?? secureRandomBytes);
  const out = Array.from({ length: n }, () => new Uint16Array(size));
  for (let k = 0; k < size; k++) {
    const s = secret[k]!;
    if (s <= -HALF_P || s > HALF_P) throw new CryptoError('invalid_argument', 'secret coefficient out of range');
    const s0 = s < 0 ? s + P : s;
    const base = k * (t - 1);
    for (let i = 1; i <= n; i++) {
      // Horner: f(i) = ((a_{t-1} i + a_{t-2}) i + … + a_1) i + s.
      let acc = 0;
      for (let j = t - 2; j >= 0; j--) acc = ((acc + coefficients[base + j]!) * i) % P;
      out[i - 1]![k] = (acc + s0) % P;
    }
  }
  coefficients.fill(0);
  return out;
}

/** Adds `share` into `sum`, both mod p, in place (a custodian's sum over D). */
export function addShareInto(sum: Uint16Array, share: Uint16Array): void {
  if (sum.length !== share.length) throw new CryptoError('shape_mismatch', 'share lengths differ');
  for (let k = 0; k < sum.length; k++) {
    const v = sum[k]! + share[k]!;
    sum[k] = v >= P ? v - P : v;
  }
}

/** a^-1 mod p (p prime), by Fermat: a^(p-2). */
function inverseModP(a: number): number {
  let result = 1;
  let base = ((a % P) + P) % P;
  if (base === 0) throw new CryptoError('invalid_argument', 'no inverse of 0');
  let e = P - 2;
  while (e > 0) {
    if (e & 1) result = (result * base) % P;
    base = (base * base) % P;
    e >>>= 1;
  }
  return result;
}

/** Lagrange coefficients at 0 for distinct points xs: λ_i = Π_{j≠i} x_j / (x_j - x_i) mod p. */
export function lagrangeAtZero(xs: readonly number[]): number[] {
  const seen = new Set<number>();
  for (const x of xs) {
    if (!Number.isInteger(x) || x < 1 || x >= P || seen.has(x)) throw new CryptoError('invalid_argument', `evaluation points must be distinct integers in [1, p), got ${xs.join(',')}`);
    seen.add(x);
  }
  return xs.map((xi) => {
    let num = 1;
    let den = 1;
    for (const xj of xs) {
      if (xj === xi) continue;
      num = (num * xj) % P;
      den = (den * (((xj - xi) % P) + P)) % P;
    }
    return (num * inverseModP(den)) % P;
  });
}

/** One share (sum) with its custodian index. */
export interface IndexedShare {
  readonly index: number;
  readonly share: Uint16Array;
}

/**
 * Reconstructs the shared value at 0 from exactly `threshold` shares (extra shares are refused,
 * pass the ones to use) and lifts it to (-p/2, p/2]. Returns Int32Array of N signed values.
 * Interpolating with more shares than the polynomial degree + 1 would hide inconsistencies, so
 * the caller picks t and can cross-check with another subset.
 */
export function reconstructCentred(shares: readonly IndexedShare[], threshold: number): Int32Array {
  if (shares.length !== threshold) throw new CryptoError('invalid_argument', `reconstruction needs exactly t = ${threshold} shares, got ${shares.length}`);
  const size = shares[0]?.share.length ?? 0;
  if (shares.some((s) => s.share.length !== size)) throw new CryptoError('shape_mismatch', 'share lengths differ');
  const lambdas = lagrangeAtZero(shares.map((s) => s.index));
  const acc = new Float64Array(size);
  for (let i = 0; i < shares.length; i++) {
    const lambda = lambdas[i]!;
    const share = shares[i]!.share;
    // Each product < p² < 2^32; summing t of them stays far below 2^53 before one final reduction.
    for (let k = 0; k < size; k++) acc[k]! += lambda * share[k]!;
  }
  const out = new Int32Array(size);
  for (let k = 0; k < size; k++) {
    const v = acc[k]! % P;
    out[k] = v > HALF_P ? v - P : v;
  }
  acc.fill(0);
  return out;
}
