/**
 * Arithmetic in R_q = Z_q[X]/(X^N + 1), N = 2048, q = 2^44 - 2^14 + 1 (the prime of the BFV
 * preset `bfv-n2048-q44-t29`, SEAL's CoeffModulus.Create(2048, [44])), exact in float64 without
 * BigInt on the hot paths.
 *
 * - Modular multiplication: the quotient h ≈ floor(a·b / q) from one float64 product (off by at
 *   most one), then the remainder a·b - h·q computed exactly modulo 2^52 from 26-bit limbs (every
 *   partial product < 2^53) and corrected into [0, q).
 * - Negacyclic NTT (the "merged" ψ-power transforms of Longa-Naehrig 2016, Alg. 1 and 2;
 *   Pöppelmann-Oder-Güneysu 2015): forward Cooley-Tukey, inverse Gentleman-Sande, ψ a primitive
 *   2N-th root of unity (q ≡ 1 mod 2^14), so INTT(NTT(a) ⊙ NTT(b)) = a·b mod (X^N + 1).
 * - 44-bit packing: coefficient k occupies bits [44k, 44k + 44) little-endian, two coefficients
 *   per 11 bytes (the same bit order as he/bitpack.ts).
 */
import { createHash } from 'node:crypto';
import { CryptoError } from '../errors.js';
import { concatBytes, u32be, utf8 } from './bytes.js';
import { COMMITTEE_Q, COMMITTEE_RING_DEGREE } from './descriptor.js';
import { createNttWasm, type NttWasm } from './ntt-wasm.js';

/** q = 2^44 - 2^14 + 1. */
export const Q = COMMITTEE_Q;
/** N = 2048. */
export const N = COMMITTEE_RING_DEGREE;
/** Bytes of one packed polynomial: N · 44 / 8 = 11,264. */
export const PACKED_POLY_BYTES = (N * 44) / 8;

const TWO26 = 2 ** 26;
const INV26 = 2 ** -26;
const TWO32 = 2 ** 32;
const TWO52 = 2 ** 52;
const INV52 = 2 ** -52;
const INV_Q = 1 / Q;
const Q0 = Q % TWO26;
const Q1 = (Q - Q0) / TWO26;

/** (a · b) mod q for integers a, b in [0, q). */
export function mulModQ(a: number, b: number): number {
  const h = Math.floor(a * b * INV_Q);
  // a, b, h >= 0 and a·2^-26 is exact, so Math.floor splits exactly (V8 compiles it to one
  // rounding instruction: faster than `| 0`'s round trip through int32, bench/committee-decrypt.ts).
  const a1 = Math.floor(a * INV26);
  const a0 = a - a1 * TWO26;
  const b1 = Math.floor(b * INV26);
  const b0 = b - b1 * TWO26;
  const h1 = Math.floor(h * INV26);
  const h0 = h - h1 * TWO26;
  // a·b - h·q = (a1 b1 - h1 q1)·2^52 + (a1 b0 + a0 b1 - h1 q0 - h0 q1)·2^26 + (a0 b0 - h0 q0).
  let mid = a1 * b0 + a0 * b1 - h1 * Q0 - h0 * Q1;
  mid -= Math.floor(mid * INV26) * TWO26;
  let r = mid * TWO26 + (a0 * b0 - h0 * Q0);
  // r ≡ a·b - h·q (mod 2^52) and the true value lies in [-q, 2q): pick the representative in
  // [-2^51, 2^51). r is an integer in (-2^52, 2^53), so r·2^-52 + 1/2 is exact or (at >= 2) rounds
  // to no less than 2 and no more than 2.5: its floor is r·2^-52 rounded half up, as Math.round,
  // which V8 compiles to more instructions than Math.floor.
  r -= Math.floor(r * INV52 + 0.5) * TWO52;
  // Branch-free corrections (the sign of r is data-dependent, so a branch is mispredicted half the time).
  r += Q * +(r < 0);
  return r - Q * +(r >= Q);
}

/** A twiddle factor with its precomputed limbs and w/q (Shoup-style precomputation). */
interface Twiddles {
  readonly w: Float64Array;
  readonly w0: Float64Array;
  readonly w1: Float64Array;
  readonly wq: Float64Array;
}

/**
 * (x · w) mod q from w's precomputed limbs (w0, w1) and w/q (wq), for w in [0, q) and x in [0, 2^46) (so also the lazy
 * values below 4q of {@link nttInverseUnscaled}): x·w/q < 2^46, so the float64 quotient is off
 * by at most one and the remainder lies in [-q, 2q); every limb product stays below 2^53.
 */
function mulTwiddle(x: number, w0: number, w1: number, wq: number): number {
  const r = mulTwiddleLazy(x, w0, w1, wq);
  return r - Q * +(r >= Q);
}

/** {@link mulTwiddle}'s remainder left in [0, 2q) (Harvey's lazy reduction; w itself is not needed). */
function mulTwiddleLazy(x: number, w0: number, w1: number, wq: number): number {
  // x, h >= 0: Math.floor splits them exactly, as in mulModQ.
  const h = Math.floor(x * wq);
  const x1 = Math.floor(x * INV26);
  const x0 = x - x1 * TWO26;
  const h1 = Math.floor(h * INV26);
  const h0 = h - h1 * TWO26;
  let mid = x1 * w0 + x0 * w1 - h1 * Q0 - h0 * Q1;
  mid -= Math.floor(mid * INV26) * TWO26;
  let r = mid * TWO26 + (x0 * w0 - h0 * Q0);
  r -= Math.floor(r * INV52 + 0.5) * TWO52; // as in mulModQ
  // Branch-free correction (the sign of r is data-dependent, so a branch is mispredicted half the time).
  return r + Q * +(r < 0);
}

function powBig(base: bigint, exponent: bigint, modulus: bigint): bigint {
  let result = 1n;
  let b = base % modulus;
  let e = exponent;
  while (e > 0n) {
    if (e & 1n) result = (result * b) % modulus;
    b = (b * b) % modulus;
    e >>= 1n;
  }
  return result;
}

function bitReverse(value: number, bits: number): number {
  let r = 0;
  for (let i = 0; i < bits; i++) r |= ((value >>> i) & 1) << (bits - 1 - i);
  return r;
}

function twiddles(values: readonly bigint[]): Twiddles {
  const w = Float64Array.from(values, Number);
  return {
    w,
    w0: w.map((v) => v % TWO26),
    w1: w.map((v) => Math.floor(v / TWO26)),
    wq: w.map((v) => v / Q),
  };
}

/**
 * ψ: the primitive 2N-th root of unity g^((q-1)/2N) for the smallest g >= 2 with ψ^N ≡ -1
 * (computed once with BigInt at module load), and the NTT tables.
 */
const TABLES = (() => {
  const q = BigInt(Q);
  const twoN = BigInt(2 * N);
  let psi = 0n;
  for (let g = 2n; ; g++) {
    psi = powBig(g, (q - 1n) / twoN, q);
    if (powBig(psi, BigInt(N), q) === q - 1n) break;
  }
  const psiInv = powBig(psi, q - 2n, q);
  const logN = Math.log2(N);
  const fwd: bigint[] = [];
  const inv: bigint[] = [];
  for (let i = 0; i < N; i++) {
    const e = BigInt(bitReverse(i, logN));
    fwd.push(powBig(psi, e, q));
    inv.push(powBig(psiInv, e, q));
  }
  const nInv = powBig(BigInt(N), q - 2n, q);
  return { psi: Number(psi), forward: twiddles(fwd), inverse: twiddles(inv), nInv: twiddles([nInv]) };
})();

/** The 2N-th root of unity ψ used by {@link nttForward}. */
export const NTT_PSI = TABLES.psi;

/** In-place forward negacyclic NTT (Longa-Naehrig 2016, Alg. 1): normal order in, bit-reversed out. */
export function nttForward(a: Float64Array): void {
  if (a.length !== N) throw new CryptoError('invalid_argument', `NTT input must have ${N} coefficients`);
  const { w0, w1, wq } = TABLES.forward;
  for (let m = 1, t = N >> 1; m < N; m <<= 1, t >>= 1) forwardStage(a, m, t, w0, w1, wq);
}

/**
 * One stage of {@link nttForward}: m groups of t butterflies. A function of its own (called 11
 * times per transform): the coordinator transforms once per round (S_D), too rarely for V8 to
 * optimize a whole-transform function, whose inner loop then ran in on-stack-replaced code that
 * deoptimized at every exit back into the interpreter (bench:rounds small committee,
 * --trace-deopt: about 2 per round); this one is called often enough to be optimized whole.
 */
function forwardStage(a: Float64Array, m: number, t: number, w0: Float64Array, w1: Float64Array, wq: Float64Array): void {
  for (let i = 0; i < m; i++) {
    const j1 = 2 * i * t;
    const k = m + i;
    const s0 = w0[k]!;
    const s1 = w1[k]!;
    const sq = wq[k]!;
    for (let j = j1; j < j1 + t; j++) {
      const u = a[j]!;
      const v = mulTwiddle(a[j + t]!, s0, s1, sq);
      // Branch-free reductions into [0, q): exact (every value < 2^53).
      const sum = u + v;
      a[j] = sum - Q * +(sum >= Q);
      const diff = u - v;
      a[j + t] = diff + Q * +(diff < 0);
    }
  }
}

/** In-place inverse negacyclic NTT (Longa-Naehrig 2016, Alg. 2), including the 1/N scaling. */
export function nttInverse(a: Float64Array): void {
  nttInverseUnscaled(a);
  const n = TABLES.nInv;
  for (let j = 0; j < N; j++) a[j] = mulTwiddle(a[j]!, n.w0[0]!, n.w1[0]!, n.wq[0]!);
}

/**
 * The inverse transform's twiddles interleaved, 4 per index k: [w0, w1, w/q, w] (w = w1·2^26 + w0),
 * so that a butterfly reads one cache line rather than four arrays.
 */
const INVERSE_INTERLEAVED = (() => {
  const { w, w0, w1, wq } = TABLES.inverse;
  const out = new Float64Array(4 * N);
  for (let k = 0; k < N; k++) {
    out[4 * k] = w0[k]!;
    out[4 * k + 1] = w1[k]!;
    out[4 * k + 2] = wq[k]!;
    out[4 * k + 3] = w[k]!;
  }
  return out;
})();

const TWO_Q = 2 * Q;
/** Residues above (q - 1)/2 are negative (centreQ, inlined). */
const HALF_Q = (Q - 1) / 2;

/**
 * {@link nttInverse} without its final 1/N scaling: N·INTT(a). For products whose fixed factor
 * already carries 1/N ({@link createFixedMultiplier} with `inverseN`), saving one pass.
 *
 * Gentleman-Sande butterflies with Harvey's lazy reduction (Harvey 2014, "Faster arithmetic for
 * number-theoretic transforms", Alg. 3 for the inverse direction): between stages every value is
 * kept in [0, 2q) rather than [0, q): the sum u + v in [0, 4q) is brought into [0, 2q) by one
 * conditional subtraction of 2q, and the difference u - v + 2q in (0, 4q) goes to the twiddle
 * product unreduced (every limb product stays below 2^53: see {@link mulTwiddle}, which is exact
 * for inputs below 2^46 > 4q), whose remainder is left in [0, 2q). Only the last stage reduces
 * into [0, q). Input in [0, q); output in [0, q), equal coefficient for coefficient to the
 * strictly reduced transform.
 */
export function nttInverseUnscaled(a: Float64Array): void {
  if (a.length !== N) throw new CryptoError('invalid_argument', `NTT input must have ${N} coefficients`);
  const tw = INVERSE_INTERLEAVED;
  let t = 1;
  for (let m = N; m > 2; m >>= 1) {
    const h = m >> 1;
    let j1 = 0;
    for (let i = 0; i < h; i++) {
      const o = 4 * (h + i);
      const w0 = tw[o]!;
      const w1 = tw[o + 1]!;
      const wq = tw[o + 2]!;
      const end = j1 + t;
      for (let j = j1; j < end; j++) {
        const u = a[j]!;
        const v = a[j + t]!;
        const sum = u + v; // [0, 4q)
        a[j] = sum - TWO_Q * +(sum >= TWO_Q);
        a[j + t] = mulTwiddleLazy(u - v + TWO_Q, w0, w1, wq);
      }
      j1 += 2 * t;
    }
    t <<= 1;
  }
  // The last stage (one twiddle, t = N/2) reduces into [0, q).
  const w0 = tw[4]!;
  const w1 = tw[5]!;
  const wq = tw[6]!;
  for (let j = 0; j < t; j++) {
    const u = a[j]!;
    const v = a[j + t]!;
    let sum = u + v;
    sum -= TWO_Q * +(sum >= TWO_Q);
    a[j] = sum - Q * +(sum >= Q);
    const r = mulTwiddleLazy(u - v + TWO_Q, w0, w1, wq);
    a[j + t] = r - Q * +(r >= Q);
  }
}

/**
 * This thread's WebAssembly transform (ntt-wasm.ts), made on first use; null where WebAssembly is
 * unavailable. `loaded`: the multiplier whose factor its memory holds.
 */
let nttWasm: NttWasm | null | undefined;
let loaded: FixedMultiplier | null = null;
let wasmEnabled = true;
function wasmEngine(): NttWasm | null {
  if (!wasmEnabled) return null;
  if (nttWasm === undefined) nttWasm = createNttWasm(TABLES.inverse.w);
  return nttWasm;
}

/**
 * Tests and in-process benches: false makes {@link FixedMultiplier.mulInverseUnscaled} compute in
 * float64 JavaScript in this thread (as where WebAssembly is unavailable); true (the default) in
 * WebAssembly. Returns whether WebAssembly is in use.
 */
export function useNttWasm(enabled: boolean): boolean {
  if (!enabled && loaded !== null) loaded.release();
  wasmEnabled = enabled;
  return wasmEngine() !== null;
}

/** Tests: true when this thread's WebAssembly memory holds no factor and no output (see FixedMultiplier.release). */
export function nttWasmScratchIsZero(): boolean {
  return nttWasm == null || nttWasm.scratchIsZero();
}

/** A fixed NTT-domain factor b with its limbs and b/q precomputed (as the NTT's twiddles), for many products a ⊙ b. */
export interface FixedMultiplier {
  /** out[k] = a[k] · b[k] mod q, for a in [0, q). */
  mul(a: Float64Array, out: Float64Array): void;
  /**
   * out = {@link nttInverseUnscaled}(a ⊙ b) for a in [0, q): the same values as `mul` followed by
   * `nttInverseUnscaled`, in 64-bit integer WebAssembly (ntt-wasm.ts) where available, about twice
   * as fast. The factor is then also in this thread's WebAssembly memory until {@link release}
   * or {@link erase}.
   */
  mulInverseUnscaled(a: Float64Array, out: Float64Array): void;
  /**
   * A committee decryption's decoding of one polynomial: out[k] = Math.round(centreQ((c0[k] + v_k)
   * mod q) · inverseDelta), v = {@link mulInverseUnscaled}(a), for a and c0 in [0, q) (N values
   * each) and inverseDelta = 2^-deltaBits: the same values, -0 included, in WebAssembly or in
   * float64 JavaScript.
   */
  mulInverseDecode(a: Float64Array, c0: Float64Array, inverseDelta: number, out: Float64Array): void;
  /** Zeroes this thread's copy of the factor in WebAssembly memory, if any (not the limbs). */
  release(): void;
  /** Zeroes the precomputed factor (it may be secret, e.g. NTT(S_D)), and `release`s it. */
  erase(): void;
  /**
   * The precomputed factor, {@link FIXED_MULTIPLIER_LIMBS} values [b | b0 | b1 | b/q]: the storage
   * given to {@link createFixedMultiplier} (e.g. shared memory a worker thread wraps again with
   * {@link fixedMultiplierOf}), or its own.
   */
  readonly limbs: Float64Array;
}

/** Length of {@link FixedMultiplier.limbs}: 4N. */
export const FIXED_MULTIPLIER_LIMBS = 4 * N;

/** Wraps limbs precomputed by {@link createFixedMultiplier} (not copied: `erase` zeroes them). */
export function fixedMultiplierOf(limbs: Float64Array): FixedMultiplier {
  if (limbs.length !== FIXED_MULTIPLIER_LIMBS) throw new CryptoError('invalid_argument', `a fixed factor's limbs are ${FIXED_MULTIPLIER_LIMBS} values`);
  const w = limbs.subarray(0, N);
  const w0 = limbs.subarray(N, 2 * N);
  const w1 = limbs.subarray(2 * N, 3 * N);
  const wq = limbs.subarray(3 * N, 4 * N);
  /** This thread's WebAssembly transform holding this factor (loaded unless it already is), or null where there is none. */
  const engineWithFactor = (): NttWasm | null => {
    const engine = wasmEngine();
    if (engine !== null && loaded !== multiplier) {
      engine.setFactor(w);
      loaded = multiplier;
    }
    return engine;
  };
  const multiplier: FixedMultiplier = {
    mul(a, out) {
      if (a.length !== N || out.length !== N) throw new CryptoError('invalid_argument', `products have ${N} coefficients`);
      for (let k = 0; k < N; k++) out[k] = mulTwiddle(a[k]!, w0[k]!, w1[k]!, wq[k]!);
    },
    mulInverseUnscaled(a, out) {
      if (a.length !== N || out.length !== N) throw new CryptoError('invalid_argument', `products have ${N} coefficients`);
      const engine = engineWithFactor();
      if (engine === null) {
        multiplier.mul(a, out);
        nttInverseUnscaled(out);
        return;
      }
      engine.mulInverseUnscaled(a, out);
    },
    mulInverseDecode(a, c0, inverseDelta, out) {
      if (c0.length !== N) throw new CryptoError('invalid_argument', `a c0 polynomial has ${N} coefficients`);
      const engine = engineWithFactor();
      if (engine === null) {
        multiplier.mulInverseUnscaled(a, out);
        for (let k = 0; k < N; k++) {
          // c0 + a·S in [0, 2q): reduce, centre, and divide by Δ (a power of two: exact).
          let v = c0[k]! + out[k]!;
          v -= Q * +(v >= Q);
          out[k] = Math.round((v - Q * +(v > HALF_Q)) * inverseDelta);
        }
        return;
      }
      if (a.length !== N || out.length !== N) throw new CryptoError('invalid_argument', `products have ${N} coefficients`);
      engine.mulInverseDecode(a, c0, inverseDelta, out);
    },
    release() {
      if (loaded !== multiplier) return;
      loaded = null;
      nttWasm?.erase();
    },
    erase() {
      limbs.fill(0);
      multiplier.release();
    },
    limbs,
  };
  return multiplier;
}

/**
 * Precomputes a fixed factor b (N coefficients in [0, q), NTT domain), scaled by N^-1 mod q when
 * `inverseN` (then INTT(a ⊙ b) = {@link nttInverseUnscaled}(a ⊙ b')), into `limbs` when given
 * ({@link FIXED_MULTIPLIER_LIMBS} values), else into storage of its own.
 */
export function createFixedMultiplier(b: Float64Array, options: { inverseN?: boolean; limbs?: Float64Array } = {}): FixedMultiplier {
  if (b.length !== N) throw new CryptoError('invalid_argument', `a fixed factor must have ${N} coefficients`);
  const n = TABLES.nInv;
  const multiplier = fixedMultiplierOf(options.limbs ?? new Float64Array(FIXED_MULTIPLIER_LIMBS));
  const { limbs } = multiplier;
  for (let k = 0; k < N; k++) {
    const v = options.inverseN === true ? mulTwiddle(b[k]!, n.w0[0]!, n.w1[0]!, n.wq[0]!) : b[k]!;
    const v1 = Math.floor(v / TWO26);
    limbs[k] = v;
    limbs[N + k] = v - v1 * TWO26;
    limbs[2 * N + k] = v1;
    limbs[3 * N + k] = v / Q;
  }
  return multiplier;
}

/** out[k] = a[k] · b[k] mod q (pointwise product of two NTT-domain polynomials). */
export function pointwiseMulModQ(a: Float64Array, b: Float64Array, out: Float64Array): void {
  for (let k = 0; k < out.length; k++) out[k] = mulModQ(a[k]!, b[k]!);
}

/** a · b mod (X^N + 1, q) for coefficient-form inputs in [0, q); returns a new polynomial. */
export function negacyclicMultiply(a: Float64Array, b: Float64Array): Float64Array {
  const x = Float64Array.from(a);
  const y = Float64Array.from(b);
  nttForward(x);
  nttForward(y);
  pointwiseMulModQ(x, y, x);
  nttInverse(x);
  y.fill(0);
  return x;
}

/** A small signed integer to its residue in [0, q). */
export function toResidueQ(value: number): number {
  return value < 0 ? value + Q : value;
}

/** A residue in [0, q) to its centred representative in (-q/2, q/2]. */
export function centreQ(residue: number): number {
  return residue > (Q - 1) / 2 ? residue - Q : residue;
}

const A_DOMAIN = utf8('veil/bfv-a/v1');

/**
 * The round's public polynomial a_{r,l} (design note, "Deriving a"), in the NTT domain: SHAKE256
 * (FIPS 202) of "veil/bfv-a/v1" || descriptorHash || u32be(round) || roundSeed || u32be(l), read
 * as consecutive 6-byte little-endian words, each masked to its low 44 bits and kept when < q
 * (rejection sampling; a word is rejected with probability (2^44 - q) / 2^44 < 2^-29). The N
 * accepted values are â = NTT(a) in {@link nttForward}'s bit-reversed order, so a =
 * nttInverse(â); the NTT is a bijection of R_q, so a is uniform exactly when â is (SEAL samples
 * the c1 of its seeded ciphertexts in the NTT domain the same way). Devices derive it themselves,
 * so a coordinator cannot hand them a weak a. Written into `out` (N values, e.g. a slice of a
 * round's shared buffer: decrypt-worker.ts) when given, else into a new array; returns it.
 */
export function derivePublicPolynomialNtt(descriptorHash: Uint8Array, round: number, roundSeed: Uint8Array, index: number, out: Float64Array = new Float64Array(N)): Float64Array {
  if (descriptorHash.length !== 32) throw new CryptoError('invalid_argument', 'descriptorHash must be 32 bytes');
  if (roundSeed.length !== 32) throw new CryptoError('invalid_argument', 'roundSeed must be 32 bytes');
  if (out.length !== N) throw new CryptoError('invalid_argument', `a public polynomial has ${N} coefficients`);
  const input = concatBytes(A_DOMAIN, descriptorHash, u32be(round), roundSeed, u32be(index));
  // An XOF's shorter output is a prefix of its longer output: if the 16 spare words run out
  // (probability < 2^-400), read again with more.
  for (let words = N + 16; ; words *= 2) {
    const stream = createHash('shake256', { outputLength: words * 6 }).update(input).digest();
    let filled = 0;
    for (let i = 0; i + 6 <= stream.length && filled < N; i += 6) {
      const lo = stream.readUInt32LE(i);
      const hi = stream.readUInt16LE(i + 4) & 0x0fff;
      const v = hi * TWO32 + lo;
      if (v < Q) out[filled++] = v;
    }
    if (filled === N) return out;
  }
}

/**
 * Packs polynomials (coefficients in [0, q)) at 44 bits per coefficient into `out` at `offset`;
 * `coefficients.length` must be even. Returns the number of bytes written.
 */
export function pack44(coefficients: Float64Array, out: Uint8Array, offset: number): number {
  if (coefficients.length % 2 !== 0) throw new CryptoError('invalid_argument', 'pack44 needs an even coefficient count');
  let o = offset;
  for (let k = 0; k < coefficients.length; k += 2) {
    const a = coefficients[k]!;
    const b = coefficients[k + 1]!;
    const aHi = Math.floor(a / TWO32);
    const aLo = a - aHi * TWO32;
    const bv = Math.floor(b / 16);
    const bNib = b - bv * 16;
    const bHi = Math.floor(bv / TWO32);
    const bLo = bv - bHi * TWO32;
    out[o] = aLo & 0xff;
    out[o + 1] = (aLo >>> 8) & 0xff;
    out[o + 2] = (aLo >>> 16) & 0xff;
    out[o + 3] = aLo >>> 24;
    out[o + 4] = aHi & 0xff;
    out[o + 5] = (aHi >>> 8) | (bNib << 4);
    out[o + 6] = bLo & 0xff;
    out[o + 7] = (bLo >>> 8) & 0xff;
    out[o + 8] = (bLo >>> 16) & 0xff;
    out[o + 9] = bLo >>> 24;
    out[o + 10] = bHi;
    o += 11;
  }
  return o - offset;
}

const TWO28 = 2 ** 28;

/**
 * Unpacks `out.length` (even) 44-bit coefficients from `bytes` at `offset`. Returns false, with
 * `out` partly written, if a coefficient is >= q (an out-of-range upload); true otherwise.
 * Each pair of coefficients (11 bytes) is read with four little-endian loads: a = bytes[0..4)
 * + (bytes[4..6) & 0xfff)·2^32, b = (bytes[5..9) >>> 4) + bytes[9..11)·2^28.
 */
export function unpack44(bytes: Uint8Array, offset: number, out: Float64Array): boolean {
  if (offset + (out.length / 2) * 11 > bytes.length) throw new CryptoError('invalid_argument', 'unpack44 input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = offset;
  for (let k = 0; k < out.length; k += 2) {
    const a = view.getUint32(o, true) + (view.getUint16(o + 4, true) & 0x0fff) * TWO32;
    const b = (view.getUint32(o + 5, true) >>> 4) + view.getUint16(o + 9, true) * TWO28;
    if (a >= Q || b >= Q) return false;
    out[k] = a;
    out[k + 1] = b;
    o += 11;
  }
  return true;
}

/**
 * True when each of the `count` (even) 44-bit coefficients packed at `offset` is < q. Reads only:
 * the coordinator's intake check of a c0 before it is stored (the sum is added later), without
 * decoding into a float64 copy (800 kB per 100,000 values) as {@link unpack44} would.
 */
export function packed44InRange(bytes: Uint8Array, offset: number, count: number): boolean {
  if (count % 2 !== 0) throw new CryptoError('invalid_argument', 'packed44InRange needs an even coefficient count');
  if (offset + (count / 2) * 11 > bytes.length) throw new CryptoError('invalid_argument', 'packed44InRange input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // a >= q or b >= q, with a = lo32 + (hi16 & 0xfff)·2^32 and b = (lo32' >>> 4) + hi16'·2^28.
  let o = offset;
  for (let k = 0; k < count; k += 2) {
    const a = view.getUint32(o, true) + (view.getUint16(o + 4, true) & 0x0fff) * TWO32;
    const b = (view.getUint32(o + 5, true) >>> 4) + view.getUint16(o + 9, true) * TWO28;
    if (a >= Q || b >= Q) return false;
    o += 11;
  }
  return true;
}

/**
 * acc[k] -= coefficient k of the packed polynomials at `offset`, mod q, for `acc.length`
 * coefficients: undoes an {@link addPacked44} of the same bytes (every acc[k] stays in [0, 2^53)).
 * The bytes must be ones added before (their coefficients are < q; not checked again).
 */
export function subtractPacked44(bytes: Uint8Array, offset: number, acc: Float64Array): void {
  if (offset + (acc.length / 2) * 11 > bytes.length) throw new CryptoError('invalid_argument', 'subtractPacked44 input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = offset;
  for (let k = 0; k < acc.length; k += 2) {
    const a = acc[k]! - (view.getUint32(o, true) + (view.getUint16(o + 4, true) & 0x0fff) * TWO32);
    const b = acc[k + 1]! - ((view.getUint32(o + 5, true) >>> 4) + view.getUint16(o + 9, true) * TWO28);
    acc[k] = a < 0 ? a + Q : a;
    acc[k + 1] = b < 0 ? b + Q : b;
    o += 11;
  }
}

/**
 * acc[k] += coefficient k of the packed polynomials at `offset` (no reduction: the caller keeps
 * acc below 2^53 and reduces, see rlwe.ts), for `acc.length` coefficients. If a coefficient is
 * >= q, everything added is subtracted again, leaving `acc` exactly as it was, and false is
 * returned. One pass over the bytes: the coordinator's hot path.
 */
export function addPacked44(bytes: Uint8Array, offset: number, acc: Float64Array): boolean {
  if (offset + (acc.length / 2) * 11 > bytes.length) throw new CryptoError('invalid_argument', 'addPacked44 input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let o = offset;
  let k = 0;
  for (; k < acc.length; k += 2) {
    const a = view.getUint32(o, true) + (view.getUint16(o + 4, true) & 0x0fff) * TWO32;
    const b = (view.getUint32(o + 5, true) >>> 4) + view.getUint16(o + 9, true) * TWO28;
    if (a >= Q || b >= Q) break;
    acc[k] = acc[k]! + a;
    acc[k + 1] = acc[k + 1]! + b;
    o += 11;
  }
  if (k === acc.length) return true;
  // Roll back the pairs before k (all of them < q).
  o = offset;
  for (let j = 0; j < k; j += 2) {
    acc[j] = acc[j]! - (view.getUint32(o, true) + (view.getUint16(o + 4, true) & 0x0fff) * TWO32);
    acc[j + 1] = acc[j + 1]! - ((view.getUint32(o + 5, true) >>> 4) + view.getUint16(o + 9, true) * TWO28);
    o += 11;
  }
  return false;
}
