import { CryptoError } from './errors.js';
import { maxUpdatePayloadBytes } from './he/payload.js';
import type { C0Bits } from './committee/compress.js';
import { MAX_MANIFEST_BYTES, committeeUploadBytesWithoutManifest } from './committee/upload.js';

/** What the size of one device's update depends on, by its wire encoding. */
export type UpdateSizeInput =
  /** Plaintext: IEEE 754 binary32 values, little-endian. */
  | { encoding: 'float32-le'; valueCount: number }
  /** Shared-key BFV (he/payload.ts): the key's parameter preset fixes N and the coefficient primes. */
  | { encoding: 'bfv-v1'; preset: string; valueCount: number }
  /** Committee mode (committee/upload.ts): c0, one sealed share per custodian, the signed manifest. */
  | { encoding: 'committee-v1'; valueCount: number; committeeSize: number; c0Bits?: C0Bits };

/**
 * The largest update payload, in bytes, a coordinator accepts for an update
 * of `valueCount` values: exactly 4 bytes a value for `float32-le`;
 * {@link maxUpdatePayloadBytes} of the preset for `bfv-v1` (tested against
 * node-seal's serialisations); for `committee-v1` the upload's exact size
 * without its manifest plus the largest manifest accepted
 * ({@link MAX_MANIFEST_BYTES}). The one place the coordinator's upload limits
 * come from, so a new preset or framing changes them with it.
 */
export function maxUpdateBytes(input: UpdateSizeInput): number {
  if (!Number.isSafeInteger(input.valueCount) || input.valueCount < 1) throw new CryptoError('invalid_argument', 'valueCount must be a positive integer');
  switch (input.encoding) {
    case 'float32-le':
      return 4 * input.valueCount;
    case 'bfv-v1':
      return maxUpdatePayloadBytes(input.preset, input.valueCount);
    case 'committee-v1':
      if (!Number.isInteger(input.committeeSize) || input.committeeSize < 1 || input.committeeSize > 255) {
        throw new CryptoError('invalid_argument', 'a committee has 1-255 custodians');
      }
      return committeeUploadBytesWithoutManifest(input.valueCount, input.committeeSize, input.c0Bits ?? 44) + MAX_MANIFEST_BYTES;
    default:
      throw new CryptoError('invalid_argument', `unknown update encoding ${String((input as { encoding: unknown }).encoding)}`);
  }
}
