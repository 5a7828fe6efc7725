/**
 * Lossless compaction of SEAL 4.x ciphertext serializations.
 *
 * SEAL stores every coefficient of a ciphertext as a 64-bit word, but each word is below a
 * coefficient prime q_i (44 bits for the default preset), so 20 of every 64 bits are zero.
 * zstd recovers part of that (16,578 -> about 13,800 bytes per seeded ciphertext, measured);
 * packing the words at exactly ceil(log2 max q_i) bits recovers all of it (16,578 -> 11,458)
 * and costs far less CPU than zstd on both ends. Everything else (SEAL headers, metadata, the
 * PRNG seed of a seeded ciphertext) is kept verbatim, so unpacking restores SEAL's exact bytes
 * and SEAL's own loader still validates them (including every coefficient < q_i).
 *
 * Layout of `Ciphertext::save` with `compr_mode_type::none` (SEAL 4.1, ciphertext.cpp,
 * serialization.h): SEALHeader (16 bytes: magic 0xA15E, header size 16, version major/minor,
 * compression mode, reserved, u64 total size), then parms_id (32), is_ntt_form (1), size (u64),
 * poly_modulus_degree (u64), coeff_modulus_size (u64), scale (f64), correction_factor (u64),
 * then the coefficient DynArray (its own SEALHeader, u64 word count, the words) and, for a
 * seeded ciphertext, the UniformRandomGeneratorInfo (SEALHeader + PRNG type + 512-bit seed).
 */
import { CryptoError } from '../errors.js';

const SEAL_MAGIC = 0xa15e;
const SEAL_HEADER_BYTES = 16;
const DYN_ARRAY_AT = SEAL_HEADER_BYTES + 32 + 1 + 8 * 5; // 89
const WORD_COUNT_AT = DYN_ARRAY_AT + SEAL_HEADER_BYTES; // 105
const WORDS_AT = WORD_COUNT_AT + 8; // 113
const COMPR_NONE = 0;

interface Layout {
  /** Word count of the coefficient array. */
  readonly wordCount: number;
  /** Total length of the unpacked SEAL serialization. */
  readonly sealBytes: number;
  /** Length of the bytes after the coefficient array (seed info, if any). */
  readonly suffixBytes: number;
}

function readLayout(bytes: Uint8Array): Layout {
  if (bytes.byteLength < WORDS_AT) throw corrupt('shorter than its SEAL header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  checkSealHeader(view, 0);
  checkSealHeader(view, DYN_ARRAY_AT);
  const sealBytes = Number(view.getBigUint64(8, true));
  const wordCount = Number(view.getBigUint64(WORD_COUNT_AT, true));
  const dynArrayBytes = Number(view.getBigUint64(DYN_ARRAY_AT + 8, true));
  if (!Number.isSafeInteger(wordCount) || wordCount <= 0 || wordCount > 1 << 24) throw corrupt('bad word count');
  if (dynArrayBytes !== SEAL_HEADER_BYTES + 8 + 8 * wordCount) throw corrupt('inconsistent array size');
  const suffixBytes = sealBytes - (WORDS_AT + 8 * wordCount);
  if (!Number.isSafeInteger(sealBytes) || suffixBytes < 0 || suffixBytes > 4096) throw corrupt('bad total size');
  return { wordCount, sealBytes, suffixBytes };
}

function checkSealHeader(view: DataView, at: number): void {
  if (view.getUint16(at, true) !== SEAL_MAGIC || view.getUint8(at + 2) !== SEAL_HEADER_BYTES) {
    throw corrupt('missing SEAL header');
  }
  if (view.getUint8(at + 3) !== 4) throw corrupt(`SEAL serialization version ${view.getUint8(at + 3)} is not 4.x`);
  if (view.getUint8(at + 5) !== COMPR_NONE) throw corrupt('expected an uncompressed SEAL serialization');
}

function corrupt(what: string): CryptoError {
  return new CryptoError('invalid_ciphertext', `ciphertext is malformed: ${what}`);
}

/** Bytes needed to pack `wordCount` words of `bitsPerWord` bits. */
function packedWordBytes(wordCount: number, bitsPerWord: number): number {
  return Math.ceil((wordCount * bitsPerWord) / 8);
}

/**
 * Packs an uncompressed SEAL ciphertext serialization: words at `bitsPerWord` (1..64) bits,
 * little-endian bit order. Throws `invalid_ciphertext` if a word does not fit.
 */
export function packSealCiphertext(bytes: Uint8Array, bitsPerWord: number): Uint8Array {
  const layout = readLayout(bytes);
  if (layout.sealBytes !== bytes.byteLength) throw corrupt('size field does not match its length');
  const packedBytes = packedWordBytes(layout.wordCount, bitsPerWord);
  const out = new Uint8Array(WORDS_AT + packedBytes + layout.suffixBytes);
  out.set(bytes.subarray(0, WORDS_AT), 0);
  const view = new DataView(bytes.buffer, bytes.byteOffset + WORDS_AT, 8 * layout.wordCount);
  const hiBits = bitsPerWord - 32;
  let o = WORDS_AT;
  let acc = 0;
  let accBits = 0;
  for (let w = 0; w < layout.wordCount; w++) {
    const lo = view.getUint32(8 * w, true);
    const hi = view.getUint32(8 * w + 4, true);
    if (bitsPerWord <= 32 ? hi !== 0 || (bitsPerWord < 32 && lo >>> bitsPerWord !== 0) : hiBits < 32 && hi >>> hiBits !== 0) {
      throw corrupt(`coefficient ${w} has more than ${bitsPerWord} bits`);
    }
    // Pieces of at most 16 bits keep the accumulator below 2^23 (plain int32 arithmetic).
    for (let start = 0; start < bitsPerWord; start += 16) {
      const width = Math.min(16, bitsPerWord - start);
      const piece = (start < 32 ? lo >>> start : hi >>> (start - 32)) & ((1 << width) - 1);
      acc |= piece << accBits;
      accBits += width;
      while (accBits >= 8) {
        out[o++] = acc & 0xff;
        acc >>>= 8;
        accBits -= 8;
      }
    }
  }
  if (accBits > 0) out[o++] = acc & 0xff;
  out.set(bytes.subarray(WORDS_AT + 8 * layout.wordCount), o);
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
let scratch = new Uint32Array(0);

/**
 * Inverse of {@link packSealCiphertext}: restores SEAL's exact uncompressed bytes. Throws
 * `invalid_ciphertext` when the framing is inconsistent or padding bits are set.
 *
 * The coordinator's hot loop (every ciphertext of every upload). On little-endian hosts it
 * reads the packed bits as 32-bit words and writes each coefficient as two 32-bit halves
 * through typed-array views (3 loads and 2 stores per word); elsewhere it runs
 * {@link unpackSealCiphertextBytewise}, which gives the same bytes.
 */
export function unpackSealCiphertext(packed: Uint8Array, bitsPerWord: number): Uint8Array {
  if (!LITTLE_ENDIAN) return unpackSealCiphertextBytewise(packed, bitsPerWord);
  const layout = readLayout(packed);
  const packedBytes = checkPackedLength(packed, layout, bitsPerWord);
  // The words start at byte 113 of SEAL's layout; 3 leading spare bytes put them at a multiple of 4
  // of the buffer, so a Uint32Array view can write them.
  const lead = 4 - (WORDS_AT % 4);
  const buffer = new ArrayBuffer(lead + layout.sealBytes);
  const out = new Uint8Array(buffer, lead, layout.sealBytes);
  out.set(packed.subarray(0, WORDS_AT), 0);
  const words = new Uint32Array(buffer, lead + WORDS_AT, 2 * layout.wordCount);
  // The packed bits as little-endian 32-bit words, in a scratch array reused across calls (it never
  // leaves this function) with two spare words so that src[i + 2] always exists. Whatever the
  // scratch holds past the packed bytes only reaches bits the masks clear.
  const srcWords = Math.ceil(packedBytes / 4) + 2;
  if (scratch.length < srcWords) scratch = new Uint32Array(srcWords);
  const src = scratch;
  new Uint8Array(src.buffer, 0, packedBytes).set(packed.subarray(WORDS_AT, WORDS_AT + packedBytes));
  const loMask = bitsPerWord >= 32 ? 0xffff_ffff : 2 ** bitsPerWord - 1;
  const hiMask = bitsPerWord <= 32 ? 0 : bitsPerWord >= 64 ? 0xffff_ffff : 2 ** (bitsPerWord - 32) - 1;
  const n = layout.wordCount;
  for (let w = 0, bit = 0; w < n; w++, bit += bitsPerWord) {
    const i = bit >>> 5;
    const shift = bit & 31;
    const a = src[i]!;
    const b = src[i + 1]!;
    if (shift === 0) {
      words[2 * w] = a & loMask;
      words[2 * w + 1] = b & hiMask;
    } else {
      words[2 * w] = ((a >>> shift) | (b << (32 - shift))) & loMask;
      words[2 * w + 1] = ((b >>> shift) | (src[i + 2]! << (32 - shift))) & hiMask;
    }
  }
  checkPadding(packed, layout, bitsPerWord, packedBytes);
  out.set(packed.subarray(WORDS_AT + packedBytes), WORDS_AT + 8 * layout.wordCount);
  return out;
}

/** {@link unpackSealCiphertext} one byte at a time, on any host (and its reference in the tests). */
export function unpackSealCiphertextBytewise(packed: Uint8Array, bitsPerWord: number): Uint8Array {
  const layout = readLayout(packed);
  const packedBytes = checkPackedLength(packed, layout, bitsPerWord);
  const out = new Uint8Array(layout.sealBytes);
  out.set(packed.subarray(0, WORDS_AT), 0);
  // Read each word at its bit offset from a zero-padded copy (so 9-byte reads never run past the end).
  const src = new Uint8Array(packedBytes + 9);
  src.set(packed.subarray(WORDS_AT, WORDS_AT + packedBytes));
  const view = new DataView(out.buffer, WORDS_AT, 8 * layout.wordCount);
  const loMask = bitsPerWord >= 32 ? 0xffff_ffff : 2 ** bitsPerWord - 1;
  const hiMask = bitsPerWord <= 32 ? 0 : bitsPerWord >= 64 ? 0xffff_ffff : 2 ** (bitsPerWord - 32) - 1;
  for (let w = 0, bit = 0; w < layout.wordCount; w++, bit += bitsPerWord) {
    const i = bit >>> 3;
    const shift = bit & 7;
    const a = (src[i]! | (src[i + 1]! << 8) | (src[i + 2]! << 16) | (src[i + 3]! << 24)) >>> 0;
    const b = (src[i + 4]! | (src[i + 5]! << 8) | (src[i + 6]! << 16) | (src[i + 7]! << 24)) >>> 0;
    const lo = shift === 0 ? a : ((a >>> shift) | (b << (32 - shift))) >>> 0;
    const hi = shift === 0 ? b : ((b >>> shift) | (src[i + 8]! << (32 - shift))) >>> 0;
    view.setUint32(8 * w, (lo & loMask) >>> 0, true);
    view.setUint32(8 * w + 4, (hi & hiMask) >>> 0, true);
  }
  checkPadding(packed, layout, bitsPerWord, packedBytes);
  out.set(packed.subarray(WORDS_AT + packedBytes), WORDS_AT + 8 * layout.wordCount);
  return out;
}

function checkPackedLength(packed: Uint8Array, layout: Layout, bitsPerWord: number): number {
  const packedBytes = packedWordBytes(layout.wordCount, bitsPerWord);
  if (packed.byteLength !== WORDS_AT + packedBytes + layout.suffixBytes) {
    throw corrupt(`packed length ${packed.byteLength} does not match its header`);
  }
  return packedBytes;
}

/** The bits after the last word in its last byte must be zero (packing writes them so). */
function checkPadding(packed: Uint8Array, layout: Layout, bitsPerWord: number, packedBytes: number): void {
  const usedBits = layout.wordCount * bitsPerWord;
  if (usedBits % 8 !== 0 && packed[WORDS_AT + packedBytes - 1]! >>> (usedBits % 8) !== 0) throw corrupt('non-zero padding bits');
}

/** What a ciphertext of the task must look like. */
export interface CiphertextExpectation {
  /** The four words of the first data level's parms_id. */
  readonly parmsIdWords: readonly bigint[];
  readonly polyModulusDegree: number;
  readonly coeffModulus: readonly bigint[];
}

const SEED_INFO_BYTES = SEAL_HEADER_BYTES + 1 + 64; // SEALHeader, prng_type, 512-bit seed

/**
 * Checks an uncompressed SEAL ciphertext serialization in JavaScript before SEAL sees it: the
 * layout, the parameter level, a fresh 2-polynomial non-NTT BFV ciphertext (seeded, or with a
 * full c1), every coefficient below its prime, and the seed record. Uploads are untrusted, and a
 * SEAL exception is costly (see `callSeal`); with this check SEAL's own `is_valid_for` is a second
 * line only. Throws `invalid_ciphertext`.
 */
export function checkSealCiphertext(bytes: Uint8Array, expected: CiphertextExpectation): void {
  const layout = readLayout(bytes);
  if (layout.sealBytes !== bytes.byteLength) throw corrupt('size field does not match its length');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < 4; i++) {
    if (view.getBigUint64(SEAL_HEADER_BYTES + 8 * i, true) !== expected.parmsIdWords[i]) {
      throw corrupt('made for another parameter set or level (parms_id)');
    }
  }
  const n = expected.polyModulusDegree;
  const k = expected.coeffModulus.length;
  if (
    view.getUint8(48) !== 0 ||
    view.getBigUint64(49, true) !== 2n ||
    view.getBigUint64(57, true) !== BigInt(n) ||
    view.getBigUint64(65, true) !== BigInt(k) ||
    view.getFloat64(73, true) !== 1 ||
    view.getBigUint64(81, true) !== 1n
  ) {
    throw corrupt('not a fresh 2-polynomial BFV ciphertext of this parameter set');
  }
  const wordsEnd = WORDS_AT + 8 * layout.wordCount;
  if (layout.wordCount === n * k && layout.suffixBytes === SEED_INFO_BYTES) {
    checkSealHeader(view, wordsEnd);
    const prngType = view.getUint8(wordsEnd + SEAL_HEADER_BYTES);
    if (view.getBigUint64(wordsEnd + 8, true) !== BigInt(SEED_INFO_BYTES) || (prngType !== 1 && prngType !== 2)) {
      throw corrupt('bad seed record');
    }
  } else if (layout.wordCount !== 2 * n * k || layout.suffixBytes !== 0) {
    throw corrupt('unexpected coefficient count');
  }
  const bounds = expected.coeffModulus.map((q) => ({ hi: Number(q >> 32n), lo: Number(q & 0xffff_ffffn) }));
  for (let w = 0; w < layout.wordCount; w++) {
    const bound = bounds[Math.floor(w / n) % k]!;
    const lo = view.getUint32(WORDS_AT + 8 * w, true);
    const hi = view.getUint32(WORDS_AT + 8 * w + 4, true);
    if (hi > bound.hi || (hi === bound.hi && lo >= bound.lo)) throw corrupt(`coefficient ${w} is not below its prime`);
  }
}
