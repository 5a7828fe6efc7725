/**
 * The byte format of an encrypted update or sum.
 *
 * ```
 * offset  bytes  field
 *      0      4  magic "VLHE"
 *      4      1  format version (1)
 *      5      1  kind: 1 = one client's update, 2 = a sum of updates
 *      6      1  codec: 1 = SEAL uncompressed with bit-packed coefficients
 *      7      1  reserved (0)
 *      8     32  parameter fingerprint: SHA-256 of the serialized EncryptionParameters
 *     40     16  key id (UUID)
 *     56      8  quantization step (float64)
 *     64      8  clip bound clipMaxAbs (float64)
 *     72      4  value count P (u32)
 *     76      4  ciphertext count C = ceil(P / slots) (u32)
 *     80      4  client count (u32; 1 for an update)
 *     84      4  reserved (0)
 *     88      8  total weight Σw (u64, <= 2^53)
 *     96     32  SHA-256 of every other byte of the payload (integrity, not authenticity)
 *    128   4*C  byte length of each ciphertext (u32)
 *      …      …  the C ciphertexts
 * ```
 * All integers little-endian.
 */
import { createHash } from 'node:crypto';
import { CryptoError } from '../errors.js';
import { PARAMETER_PRESETS, bytesToUuid, type ParameterPresetName } from './params.js';

/**
 * How ciphertexts are serialized inside a payload. Only `bitpacked` (SEAL uncompressed with
 * coefficients packed at log2 q bits) is defined; the header byte leaves room for others.
 */
export type CiphertextCodec = 'bitpacked';

/** Current payload format version. */
export const PAYLOAD_FORMAT_VERSION = 1;

const MAGIC = [0x56, 0x4c, 0x48, 0x45]; // "VLHE"
const FIXED_HEADER_BYTES = 128;
const DIGEST_AT = 96;
const MAX_CIPHERTEXTS = 1 << 20;

/** The decoded header of a payload. */
export interface PayloadHeader {
  readonly formatVersion: number;
  /** `update`: one client's weighted update; `sum`: an aggregate made by the coordinator. */
  readonly kind: 'update' | 'sum';
  readonly codec: CiphertextCodec;
  /** Hex SHA-256 of the serialized EncryptionParameters. */
  readonly fingerprint: string;
  readonly keyId: string;
  /** Quantization step, model units per level. */
  readonly step: number;
  /** Clip bound, model units. */
  readonly clipMaxAbs: number;
  readonly valueCount: number;
  readonly ciphertextCount: number;
  readonly clientCount: number;
  /** Σ client weights. */
  readonly totalWeight: number;
  /** Byte length of each ciphertext. */
  readonly ciphertextBytes: readonly number[];
  /** Header length in bytes (ciphertexts follow). */
  readonly headerBytes: number;
}

/** Header fields a writer supplies. */
export interface PayloadFields {
  readonly kind: 'update' | 'sum';
  readonly codec: CiphertextCodec;
  readonly fingerprintBytes: Uint8Array;
  readonly keyIdBytes: Uint8Array;
  readonly step: number;
  readonly clipMaxAbs: number;
  readonly valueCount: number;
  readonly clientCount: number;
  readonly totalWeight: number;
}

/** Frames ciphertexts into a payload. */
export function encodePayload(fields: PayloadFields, ciphertexts: readonly Uint8Array[]): Uint8Array {
  const headerBytes = FIXED_HEADER_BYTES + 4 * ciphertexts.length;
  let total = headerBytes;
  for (const c of ciphertexts) total += c.byteLength;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint8(4, PAYLOAD_FORMAT_VERSION);
  view.setUint8(5, fields.kind === 'update' ? 1 : 2);
  view.setUint8(6, 1);
  out.set(fields.fingerprintBytes, 8);
  out.set(fields.keyIdBytes, 40);
  view.setFloat64(56, fields.step, true);
  view.setFloat64(64, fields.clipMaxAbs, true);
  view.setUint32(72, fields.valueCount, true);
  view.setUint32(76, ciphertexts.length, true);
  view.setUint32(80, fields.clientCount, true);
  view.setBigUint64(88, BigInt(fields.totalWeight), true);
  let offset = headerBytes;
  ciphertexts.forEach((c, i) => {
    view.setUint32(FIXED_HEADER_BYTES + 4 * i, c.byteLength, true);
    out.set(c, offset);
    offset += c.byteLength;
  });
  out.set(payloadDigest(out), DIGEST_AT);
  return out;
}

function payloadDigest(payload: Uint8Array): Uint8Array {
  return createHash('sha256')
    .update(payload.subarray(0, DIGEST_AT))
    .update(payload.subarray(DIGEST_AT + 32))
    .digest();
}

/**
 * Decodes and checks the framing of a payload (magic, version, lengths); does not verify the
 * digest or the ciphertexts. Throws `CryptoError('invalid_payload')`.
 */
export function readPayloadHeader(payload: Uint8Array): PayloadHeader {
  if (!(payload instanceof Uint8Array)) throw new CryptoError('invalid_payload', 'payload must be a Uint8Array');
  if (payload.byteLength < FIXED_HEADER_BYTES) {
    throw new CryptoError('invalid_payload', `payload is ${payload.byteLength} bytes, shorter than its header`);
  }
  if (MAGIC.some((byte, i) => payload[i] !== byte)) throw new CryptoError('invalid_payload', 'not a Veil HE payload (bad magic)');
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const formatVersion = view.getUint8(4);
  if (formatVersion !== PAYLOAD_FORMAT_VERSION) {
    throw new CryptoError('invalid_payload', `payload format version ${formatVersion} is not ${PAYLOAD_FORMAT_VERSION}`);
  }
  const kindByte = view.getUint8(5);
  const codecByte = view.getUint8(6);
  if ((kindByte !== 1 && kindByte !== 2) || codecByte !== 1 || view.getUint8(7) !== 0 || view.getUint32(84, true) !== 0) {
    throw new CryptoError('invalid_payload', 'unknown payload kind or codec');
  }
  const ciphertextCount = view.getUint32(76, true);
  if (ciphertextCount === 0 || ciphertextCount > MAX_CIPHERTEXTS) {
    throw new CryptoError('invalid_payload', `bad ciphertext count ${ciphertextCount}`);
  }
  const headerBytes = FIXED_HEADER_BYTES + 4 * ciphertextCount;
  if (payload.byteLength < headerBytes) throw new CryptoError('invalid_payload', 'payload is truncated (header)');
  const ciphertextBytes: number[] = [];
  let total = headerBytes;
  for (let i = 0; i < ciphertextCount; i++) {
    const length = view.getUint32(FIXED_HEADER_BYTES + 4 * i, true);
    ciphertextBytes.push(length);
    total += length;
  }
  if (total !== payload.byteLength) {
    throw new CryptoError(
      'invalid_payload',
      `payload is ${payload.byteLength} bytes, its header describes ${total} (truncated or padded)`,
    );
  }
  const totalWeight = view.getBigUint64(88, true);
  if (totalWeight > BigInt(Number.MAX_SAFE_INTEGER)) throw new CryptoError('invalid_payload', 'total weight exceeds 2^53');
  return {
    formatVersion,
    kind: kindByte === 1 ? 'update' : 'sum',
    codec: 'bitpacked',
    fingerprint: Buffer.from(payload.subarray(8, 40)).toString('hex'),
    keyId: bytesToUuid(payload.subarray(40, 56)),
    step: view.getFloat64(56, true),
    clipMaxAbs: view.getFloat64(64, true),
    valueCount: view.getUint32(72, true),
    ciphertextCount,
    clientCount: view.getUint32(80, true),
    totalWeight: Number(totalWeight),
    ciphertextBytes,
    headerBytes,
  };
}

/** Throws `CryptoError('invalid_ciphertext')` when the payload digest does not match. */
export function verifyPayloadDigest(payload: Uint8Array): void {
  const expected = payloadDigest(payload);
  const actual = payload.subarray(DIGEST_AT, DIGEST_AT + 32);
  for (let i = 0; i < 32; i++) {
    if (expected[i] !== actual[i]) {
      throw new CryptoError('invalid_ciphertext', 'payload digest mismatch: the bytes were corrupted');
    }
  }
}

/** The ciphertext byte ranges of a payload whose header was read. */
export function payloadCiphertexts(payload: Uint8Array, header: PayloadHeader): Uint8Array[] {
  const out: Uint8Array[] = [];
  let offset = header.headerBytes;
  for (const length of header.ciphertextBytes) {
    out.push(payload.subarray(offset, offset + length));
    offset += length;
  }
  return out;
}

/**
 * Upper bound, in bytes, of one device's update payload of `valueCount`
 * values under a parameter preset: the payload header plus, per ciphertext
 * (one per N values, N the preset's ring dimension), at most one polynomial
 * of N coefficients of 8 bytes per coefficient prime, with 1 KiB for SEAL's
 * header and seed. What a coordinator accepts as an encrypted update's size.
 */
export function maxUpdatePayloadBytes(preset: ParameterPresetName | string, valueCount: number): number {
  const p = PARAMETER_PRESETS[preset as ParameterPresetName];
  if (p === undefined) throw new CryptoError('invalid_argument', `unknown parameter preset ${preset}`);
  if (!Number.isInteger(valueCount) || valueCount < 1) throw new CryptoError('invalid_argument', 'valueCount must be a positive integer');
  const ciphertexts = Math.ceil(valueCount / p.polyModulusDegree);
  return FIXED_HEADER_BYTES + 4 * ciphertexts + ciphertexts * (p.polyModulusDegree * 8 * p.coeffModulusBits.length + 1024);
}
