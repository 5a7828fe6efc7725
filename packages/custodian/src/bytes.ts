/** Byte helpers (SHA-256, hex, strict base64, constant-time equality). */
import { hash, timingSafeEqual } from 'node:crypto';

/** SHA-256 (FIPS 180-4), one-shot (node:crypto `hash`: no Hash object per call; a custodian hashes every sealed share). */
export function sha256(bytes: Uint8Array): Uint8Array {
  return new Uint8Array(hash('sha256', bytes, 'buffer'));
}

/** Lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Standard base64 with padding. */
export function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

/**
 * Canonical standard base64 of exactly `length` bytes, else a RangeError naming `what` (Node's
 * decoder skips invalid characters, so the text is re-encoded and compared).
 */
export function fromBase64(text: string, what: string, length: number): Uint8Array {
  const bytes = new Uint8Array(Buffer.from(text, 'base64'));
  if (typeof text !== 'string' || toBase64(bytes) !== text || bytes.length !== length) {
    throw new RangeError(`${what} is not ${length} bytes of canonical base64`);
  }
  return bytes;
}

/** Constant-time equality (false for different lengths). */
export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
