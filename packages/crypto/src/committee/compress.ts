/**
 * Compressed c0 (descriptor `encoding.c0Bits` of 36, 32, 24 or 16): each coefficient of c0 in [0, q)
 * is sent as its top c0Bits bits, c' = round(c0 / 2^d) mod 2^c0Bits with d = 44 - c0Bits, in
 * c0Bits / 8 little-endian bytes (36 bits: two coefficients in 9 bytes, see {@link packCompressed}),
 * and read back as c'·2^d. This is the bit-dropping form of
 * Kyber's ciphertext compression (FIPS 203, §4.2.1, Compress_q / Decompress_q; q = 2^44 - 2^14 + 1
 * is close enough to 2^44 to drop bits instead of rescaling).
 *
 * Correctness: c0 ≡ c'·2^d + r (mod q) with |r| <= 2^(d-1): without the wrap r = c0 - c'·2^d; when
 * the rounding reaches 2^c0Bits (c' wraps to 0), c0 >= q - 2^(d-1), so r = c0 - q. Summed over |D|
 * devices the r's add at most |D|·2^(d-1) to the decrypted residue, which validateDescriptor
 * requires to fit beside the noise under Δ/2.
 * Security: c' is a deterministic function of the public c0, so anything computable from it is
 * computable from c0 (RLWE security is unchanged), and the residue a decryption reveals,
 * Σ(e_j + r_j), tells nothing beyond Σ e_j, since every r_j is a function of the public c0_j.
 */
import { CryptoError } from '../errors.js';
import { Q } from './ring.js';

/** The c0 widths a descriptor may choose, in bits per coefficient (44: the exact c0). */
export const C0_BITS = [44, 36, 32, 24, 16] as const;
/** See {@link C0_BITS}. */
export type C0Bits = (typeof C0_BITS)[number];

/** True for a width of {@link C0_BITS}. */
export function isC0Bits(value: unknown): value is C0Bits {
  return (C0_BITS as readonly unknown[]).includes(value);
}

/** Bits dropped from each coefficient: d = 44 - c0Bits. */
export function droppedBits(c0Bits: C0Bits): number {
  return 44 - c0Bits;
}

function width(c0Bits: number): { bytes: number; scale: number; inverse: number; modulus: number } {
  if (c0Bits !== 36 && c0Bits !== 32 && c0Bits !== 24 && c0Bits !== 16) throw new CryptoError('invalid_argument', `compressed c0 has 36, 32, 24 or 16 bits per coefficient, not ${c0Bits}`);
  return { bytes: c0Bits / 8, scale: 2 ** (44 - c0Bits), inverse: 2 ** -(44 - c0Bits), modulus: 2 ** c0Bits };
}

const TWO_32 = 2 ** 32;

/**
 * 36 bits: coefficients 2i and 2i+1 (a, b) take 9 bytes, u32le(a mod 2^32) || (a >> 32 | (b >> 32) << 4)
 * || u32le(b mod 2^32). Polynomials have an even number of coefficients (N = 2048).
 */
function checkPairs(count: number): void {
  if (count % 2 !== 0) throw new CryptoError('invalid_argument', '36-bit c0 packs coefficients in pairs: the count must be even');
}

/** Writes c' of each coefficient (in [0, q)) at `offset`; returns the bytes written. */
export function packCompressed(coefficients: Float64Array, c0Bits: C0Bits, out: Uint8Array, offset: number): number {
  const { bytes, inverse, modulus } = width(c0Bits);
  const view = new DataView(out.buffer, out.byteOffset, out.byteLength);
  let o = offset;
  if (c0Bits === 36) {
    checkPairs(coefficients.length);
    for (let k = 0; k < coefficients.length; k += 2, o += 9) {
      let a = Math.round(coefficients[k]! * inverse);
      if (a >= modulus) a -= modulus;
      let b = Math.round(coefficients[k + 1]! * inverse);
      if (b >= modulus) b -= modulus;
      const aHigh = Math.floor(a / TWO_32);
      const bHigh = Math.floor(b / TWO_32);
      view.setUint32(o, a - aHigh * TWO_32, true);
      out[o + 4] = aHigh | (bHigh << 4);
      view.setUint32(o + 5, b - bHigh * TWO_32, true);
    }
    return o - offset;
  }
  for (let k = 0; k < coefficients.length; k++) {
    let v = Math.round(coefficients[k]! * inverse); // exact: a power-of-two scaling of an integer < 2^44
    if (v >= modulus) v -= modulus;
    if (bytes === 4) view.setUint32(o, v, true);
    else if (bytes === 3) {
      view.setUint16(o, v & 0xffff, true);
      out[o + 2] = v >>> 16;
    } else view.setUint16(o, v, true);
    o += bytes;
  }
  return o - offset;
}

/** acc[k] += c'_k·2^d for the `acc.length` coefficients at `offset` (every bit pattern is a valid c'). */
export function addCompressed(bytes: Uint8Array, offset: number, c0Bits: C0Bits, acc: Float64Array): void {
  const { bytes: size, scale } = width(c0Bits);
  if (offset + acc.length * size > bytes.length) throw new CryptoError('invalid_argument', 'compressed c0 input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (c0Bits === 36) checkPairs(acc.length);
  const length = acc.length;
  // One call per ADD_CHUNK coefficients (see below).
  for (let from = 0; from < length; from += ADD_CHUNK) {
    const to = Math.min(length, from + ADD_CHUNK);
    if (c0Bits === 36) add36(bytes, view, offset, scale, acc, from, to);
    else if (size === 4) add32(view, offset, scale, acc, from, to);
    else if (size === 3) add24(bytes, view, offset, scale, acc, from, to);
    else add16(view, offset, scale, acc, from, to);
  }
}

/**
 * Coefficients per call of a width's kernel: one polynomial (N = 2048; even, and a multiple of 4
 * for add24's groups). The coordinator adds every upload's c0 with these (10 uploads per round at
 * 10 clients, 100,000 values each). Called once per upload over the whole c0, a kernel ran its
 * loop in the interpreter until V8 compiled that loop on the stack (OSR), and that OSR code did
 * not last: a major GC dropped it and the next upload ran in the interpreter again until a new
 * OSR compile (bench:rounds small committee, --trace-opt, one 40-round run: add24 compiled for OSR
 * 4 times). Called 49 times per upload, a kernel is optimized as a function after its first calls
 * and keeps that code.
 */
const ADD_CHUNK = 2048;

// One function per width, each ending with its hot loop: the coordinator adds every upload's c0
// with these (10 calls per round at 10 clients, 100,000 values each), and V8 enters such a loop in
// the interpreter and moves it to optimized code on the stack (OSR). Code after the loop that the
// interpreter never reached has no type feedback, so the OSR code left the loop through a
// deoptimization; with the tail loop after the main loop (as addCompressed had it), V8 could keep
// that OSR code and deoptimize on every call (bench:rounds small committee, --trace-deopt, one
// 40-round run: 186 times), each call back in the interpreter. A remainder is handled first here.

function add36(bytes: Uint8Array, view: DataView, offset: number, scale: number, acc: Float64Array, from: number, to: number): void {
  for (let k = from, o = offset + (from / 2) * 9; k < to; k += 2, o += 9) {
    const high = bytes[o + 4]!;
    acc[k] = acc[k]! + (view.getUint32(o, true) + (high & 15) * TWO_32) * scale;
    acc[k + 1] = acc[k + 1]! + (view.getUint32(o + 5, true) + (high >>> 4) * TWO_32) * scale;
  }
}

function add32(view: DataView, offset: number, scale: number, acc: Float64Array, from: number, to: number): void {
  for (let k = from, o = offset + from * 4; k < to; k++, o += 4) acc[k] = acc[k]! + view.getUint32(o, true) * scale;
}

/**
 * Four coefficients per three little-endian words (12 bytes): a third of the reads of one u16 and
 * one byte per coefficient (bench/committee-intake.ts, foldC0Bits24). The coefficients past the
 * last whole group of four first.
 */
function add24(bytes: Uint8Array, view: DataView, offset: number, scale: number, acc: Float64Array, from: number, to: number): void {
  const whole = to - ((to - from) % 4);
  for (let k = whole, o = offset + whole * 3; k < to; k++, o += 3) acc[k] = acc[k]! + (view.getUint16(o, true) + bytes[o + 2]! * 65536) * scale;
  for (let k = from, o = offset + from * 3; k < whole; k += 4, o += 12) {
    const w0 = view.getUint32(o, true);
    const w1 = view.getUint32(o + 4, true);
    const w2 = view.getUint32(o + 8, true);
    acc[k] = acc[k]! + (w0 & 0xff_ffff) * scale;
    acc[k + 1] = acc[k + 1]! + ((w0 >>> 24) | ((w1 & 0xffff) << 8)) * scale;
    acc[k + 2] = acc[k + 2]! + ((w1 >>> 16) | ((w2 & 0xff) << 16)) * scale;
    acc[k + 3] = acc[k + 3]! + (w2 >>> 8) * scale;
  }
}

/** Two coefficients per little-endian word; an odd last coefficient first. */
function add16(view: DataView, offset: number, scale: number, acc: Float64Array, from: number, to: number): void {
  const whole = to - ((to - from) % 2);
  if (whole < to) acc[whole] = acc[whole]! + view.getUint16(offset + whole * 2, true) * scale;
  for (let k = from, o = offset + from * 2; k < whole; k += 2, o += 4) {
    const w = view.getUint32(o, true);
    acc[k] = acc[k]! + (w & 0xffff) * scale;
    acc[k + 1] = acc[k + 1]! + (w >>> 16) * scale;
  }
}

/**
 * acc[k] -= c'_k·2^d mod q: undoes an {@link addCompressed} of the same bytes. c'·2^d < 2^44 may
 * exceed q, so a value taken below 0 gets q added up to twice (acc[k] stays in [0, 2^53)).
 */
export function subtractCompressed(bytes: Uint8Array, offset: number, c0Bits: C0Bits, acc: Float64Array): void {
  const { bytes: size, scale } = width(c0Bits);
  if (offset + acc.length * size > bytes.length) throw new CryptoError('invalid_argument', 'compressed c0 input too short');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const take = (k: number, c: number): void => {
    let v = acc[k]! - c * scale;
    if (v < 0) v += Q;
    if (v < 0) v += Q;
    acc[k] = v;
  };
  let o = offset;
  if (c0Bits === 36) {
    checkPairs(acc.length);
    for (let k = 0; k < acc.length; k += 2, o += 9) {
      const high = bytes[o + 4]!;
      take(k, view.getUint32(o, true) + (high & 15) * TWO_32);
      take(k + 1, view.getUint32(o + 5, true) + (high >>> 4) * TWO_32);
    }
    return;
  }
  for (let k = 0; k < acc.length; k++, o += size) {
    take(k, size === 4 ? view.getUint32(o, true) : size === 3 ? view.getUint16(o, true) + bytes[o + 2]! * 65536 : view.getUint16(o, true));
  }
}
