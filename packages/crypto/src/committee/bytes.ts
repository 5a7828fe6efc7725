/**
 * Byte helpers shared by the committee protocol: fixed-width big-endian integers, UTF-8,
 * strict base64 and hex, SHA-256 and constant-time comparison. Internal to `@veil/crypto`.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { CryptoError } from '../errors.js';

const encoder = new TextEncoder();

/** UTF-8 bytes of a string. */
export function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

/** Concatenates byte arrays into a new array. */
export function concatBytes(...parts: readonly Uint8Array[]): Uint8Array {
  let length = 0;
  for (const part of parts) length += part.length;
  const out = new Uint8Array(length);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** One byte; throws for a value outside [0, 255]. */
export function u8(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xff) {
    throw new CryptoError('invalid_argument', `u8 out of range: ${value}`);
  }
  return Uint8Array.of(value);
}

/** Two bytes, big-endian (RFC 9180's I2OSP(n, 2)); throws outside [0, 2^16). */
export function u16be(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff) {
    throw new CryptoError('invalid_argument', `u16 out of range: ${value}`);
  }
  return Uint8Array.of(value >>> 8, value & 0xff);
}

/** Four bytes, big-endian; throws outside [0, 2^32). */
export function u32be(value: number): Uint8Array {
  if (!Number.isInteger(value) || value < 0 || value > 0xffff_ffff) {
    throw new CryptoError('invalid_argument', `u32 out of range: ${value}`);
  }
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, value, false);
  return out;
}

/** Eight bytes, big-endian; throws outside [0, 2^53). */
export function u64be(value: number): Uint8Array {
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new CryptoError('invalid_argument', `u64 out of the safe integer range: ${value}`);
  }
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(value), false);
  return out;
}

/** A UTF-8 string prefixed with its byte length as u16be, so concatenations stay unambiguous. */
export function lengthPrefixed(text: string): Uint8Array {
  const bytes = utf8(text);
  return concatBytes(u16be(bytes.length), bytes);
}

/** SHA-256 (FIPS 180-4) of the concatenation of `parts`. */
export function sha256(...parts: readonly Uint8Array[]): Uint8Array {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return new Uint8Array(hash.digest());
}

/**
 * SHA-256 (FIPS 180-4) of `bytes` and of its first `prefixLength` bytes, in one pass over them:
 * SHA-256 consumes a message block by block from the start, so the state after the prefix,
 * finalised on a copy (its own padding and length), is the prefix's digest.
 */
export function sha256WithPrefix(bytes: Uint8Array, prefixLength: number): { readonly prefix: Uint8Array; readonly whole: Uint8Array } {
  if (!Number.isSafeInteger(prefixLength) || prefixLength < 0 || prefixLength > bytes.length) throw new CryptoError('invalid_argument', 'prefix longer than the bytes');
  const hash = createHash('sha256').update(bytes.subarray(0, prefixLength));
  const prefix = new Uint8Array(hash.copy().digest());
  return { prefix, whole: new Uint8Array(hash.update(bytes.subarray(prefixLength)).digest()) };
}

/** Lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Parses lower- or upper-case hex of exactly `length` bytes (any length when omitted). Throws
 * `CryptoError(code)` naming `what` for anything else.
 */
export function fromHex(text: string, what: string, length?: number, code: 'invalid_argument' | 'invalid_payload' = 'invalid_argument'): Uint8Array {
  if (typeof text !== 'string' || text.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(text)) {
    throw new CryptoError(code, `${what} must be hex`);
  }
  const bytes = new Uint8Array(Buffer.from(text, 'hex'));
  if (length !== undefined && bytes.length !== length) {
    throw new CryptoError(code, `${what} must be ${length} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/** Standard base64 with padding. */
export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/**
 * Parses canonical standard base64 (padding required, no whitespace) of exactly `length` bytes
 * (any length when omitted). Node's decoder skips invalid characters, so the text is re-encoded
 * and compared: two spellings of one key would otherwise give two descriptor hashes.
 */
export function fromBase64(text: string, what: string, length?: number, code: 'invalid_argument' | 'invalid_payload' = 'invalid_argument'): Uint8Array {
  if (typeof text !== 'string') throw new CryptoError(code, `${what} must be a base64 string`);
  const bytes = new Uint8Array(Buffer.from(text, 'base64'));
  if (toBase64(bytes) !== text) throw new CryptoError(code, `${what} is not canonical base64`);
  if (length !== undefined && bytes.length !== length) {
    throw new CryptoError(code, `${what} must be ${length} bytes, got ${bytes.length}`);
  }
  return bytes;
}

/** Constant-time equality of two byte arrays (false for different lengths). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Lexicographic comparison of byte arrays (for sorting digests). */
export function compareBytes(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return a.length - b.length;
}
