/**
 * Sealing Shamir shares to custodians with HPKE (RFC 9180 base mode, see hpke.ts), bound to
 * (task descriptor, round, device, custodian) as associated data (design note, "Sealing"):
 *   info = "veil/committee-share/v1"
 *   aad  = "veil/share-aad/v1" || descriptorHash (32) || u32be(round) || utf8(deviceId) || u8(index)
 * (every field but deviceId has a fixed length, so the concatenation is unambiguous). A
 * custodian builds the aad itself from what it verified in the manifest; a share sealed for
 * another task, round, device or custodian then fails authentication.
 */
import { CryptoError } from '../errors.js';
import { concatBytes, u32be, u8, utf8 } from './bytes.js';
import { decodeShareBytes, encodeShareBytes, SHARE_BYTES } from './answer.js';
import type { X25519PrivateKey } from './keys.js';
import { openBase, sealBase, HPKE_ENC_LENGTH, HPKE_TAG_LENGTH, type OpenBaseOptions, type SealBaseOptions } from './hpke.js';

const SHARE_INFO = utf8('veil/committee-share/v1');
const SHARE_AAD_DOMAIN = utf8('veil/share-aad/v1');
/** Bytes of one sealed share: enc (32) + 4096 + tag (16) = 4144. */
export const SEALED_SHARE_BYTES = HPKE_ENC_LENGTH + SHARE_BYTES + HPKE_TAG_LENGTH;

/** Where a share belongs. */
export interface ShareBinding {
  /** 32-byte descriptor hash. */
  readonly descriptorHash: Uint8Array;
  readonly round: number;
  readonly deviceId: string;
  /** Custodian index 1..n. */
  readonly custodianIndex: number;
}

/** The associated data of a sealed share. */
export function shareAad(binding: ShareBinding): Uint8Array {
  if (binding.descriptorHash.length !== 32) throw new CryptoError('invalid_argument', 'descriptorHash must be 32 bytes');
  return concatBytes(SHARE_AAD_DOMAIN, binding.descriptorHash, u32be(binding.round), utf8(binding.deviceId), u8(binding.custodianIndex));
}

/** Seals one share (coefficients in [0, p)) to a custodian's X25519 public key. */
export function sealShare(custodianSealingKey: Uint8Array, binding: ShareBinding, share: ArrayLike<number>, options: SealBaseOptions = {}): Uint8Array {
  const plaintext = encodeShareBytes(share);
  try {
    return sealBase(custodianSealingKey, SHARE_INFO, shareAad(binding), plaintext, options);
  } finally {
    plaintext.fill(0);
  }
}

/**
 * Opens a sealed share with the custodian's X25519 private key. Throws
 * `CryptoError('invalid_ciphertext')` for a wrong length or a share sealed to anyone else or for
 * another binding, `invalid_payload` for a share with a coefficient >= p.
 */
export function openShare(custodianSealingPrivateKey: Uint8Array | X25519PrivateKey, binding: ShareBinding, sealed: Uint8Array, options: OpenBaseOptions = {}): Uint16Array {
  if (sealed.length !== SEALED_SHARE_BYTES) throw new CryptoError('invalid_ciphertext', `a sealed share is ${SEALED_SHARE_BYTES} bytes, got ${sealed.length}`);
  const plaintext = openBase(custodianSealingPrivateKey, SHARE_INFO, shareAad(binding), sealed, options);
  try {
    return decodeShareBytes(plaintext);
  } finally {
    plaintext.fill(0);
  }
}
