/**
 * A device's committee upload (design note, steps 2-3): encode and encrypt the update under a
 * fresh single-use ternary secret, Shamir-share the secret t-of-n, seal each share to its
 * custodian with HPKE bound to (task, round, device, custodian), and sign a manifest of it all
 * with the device's certified key. The secret, the encoded plaintext and the plaintext shares are
 * erased before this returns; what it returns (c0, sealed shares, signed manifest) is safe to
 * keep until the coordinator acknowledges it, and a retry must resend exactly these bytes. A new
 * attempt (or a re-opened round) must call this again, drawing a fresh secret.
 */
import { CryptoError } from '../errors.js';
import { bytesEqual, fromBase64, sha256, sha256WithPrefix, toBase64, toHex, u32be, utf8 } from './bytes.js';
import { descriptorHash as hashDescriptor, type TaskDescriptor } from './descriptor.js';
import { secureRandomBytes, type RandomBytes } from './keys.js';
import { encodeManifest, signManifest, verifyManifest, type CertificateCache, type DeviceCertificate, type SignedManifest, type UploadManifest } from './manifest.js';
import type { C0Bits } from './compress.js';
import { c0PayloadBytes, checkC0Payload, checkC0PayloadRange, encodeC0Payload, encodeUpdate, encryptUpdate, sampleTernary, type C0Accumulator } from './rlwe.js';
import { SEALED_SHARE_BYTES, sealShare } from './sealing.js';
import { shareSecret } from './shamir.js';

/** Options of {@link buildCommitteeUpload}. */
export interface CommitteeUploadOptions {
  /** The validated task descriptor (the caller runs validateDescriptor with its own floors first). */
  readonly descriptor: TaskDescriptor;
  /** Its hash, if already computed. */
  readonly descriptorHash?: Uint8Array;
  readonly round: number;
  /** The round's 32-byte public seed. */
  readonly roundSeed: Uint8Array;
  readonly deviceId: string;
  /** The device's Ed25519 private key (32 bytes) and its certificate. */
  readonly devicePrivateKey: Uint8Array;
  readonly devicePublicKey: Uint8Array;
  readonly certificate: DeviceCertificate;
  /** The model update (e.g. new weights minus old), model units. */
  readonly values: ArrayLike<number>;
  /** Integer weight in [1, encoding.weightCap] (capped example count). */
  readonly weight: number;
  /** CSPRNG. Default node:crypto. */
  readonly random?: RandomBytes;
}

/** What a device sends for one round attempt. */
export interface CommitteeUpload {
  /** c0 payload bytes (5.5 bytes per value plus a 12-byte header). */
  readonly c0: Uint8Array;
  /** Element i-1: the share sealed to custodian i (4,144 bytes each). */
  readonly sealedShares: readonly Uint8Array[];
  readonly manifest: SignedManifest;
}

/** Builds one upload; see the module comment. Throws `CryptoError('invalid_argument')` for bad inputs. */
export function buildCommitteeUpload(options: CommitteeUploadOptions): CommitteeUpload {
  const { descriptor, round, deviceId } = options;
  const random = options.random ?? secureRandomBytes;
  const dh = options.descriptorHash ?? hashDescriptor(descriptor);
  if (options.devicePublicKey.length !== 32) throw new CryptoError('invalid_key_material', 'device public key must be 32 bytes');
  const m = encodeUpdate(options.values, options.weight, descriptor.encoding);
  const s = sampleTernary(random);
  let shares: Uint16Array[] = [];
  try {
    const c0 = encodeC0Payload(
      encryptUpdate(m, s, { descriptorHash: dh, round, roundSeed: options.roundSeed, deltaBits: descriptor.encoding.deltaBits, random }),
      options.values.length,
      descriptor.encoding.c0Bits ?? 44,
    );
    shares = shareSecret(s, { threshold: descriptor.threshold, shares: descriptor.committee.length, random });
    const sealedShares = descriptor.committee.map((member, i) =>
      sealShare(fromBase64(member.sealingKey, `committee[${i}].sealingKey`, 32), { descriptorHash: dh, round, deviceId, custodianIndex: member.index }, shares[i]!, { random }),
    );
    const manifest: UploadManifest = {
      descriptorHash: toHex(dh),
      round,
      deviceId,
      c0Sha256: toHex(sha256(c0)),
      shareSha256: sealedShares.map((sealed) => toHex(sha256(sealed))),
      devicePublicKey: toBase64(options.devicePublicKey),
      certificate: options.certificate,
    };
    return { c0, sealedShares, manifest: signManifest(manifest, options.devicePrivateKey) };
  } finally {
    s.fill(0);
    m.fill(0);
    for (const share of shares) share.fill(0);
  }
}

const UPLOAD_MAGIC = [0x56, 0x43, 0x55, 0x02]; // "VCU", version 2 (version 1 carried the c0 after this magic and its length)
const ROUND_SEED_DOMAIN = utf8('veil/round-seed/v1');
/** Largest canonical manifest accepted, bytes. */
export const MAX_MANIFEST_BYTES = 16_384;

/**
 * The round seed: SHA-256("veil/round-seed/v1" || descriptorHash || u32be(round)). Devices and
 * the coordinator derive it, so it needs no transport and the coordinator cannot choose it (it
 * could not usefully anyway: a_{r,l} is an XOF output of it).
 */
export function deriveRoundSeed(descriptorHash: Uint8Array, round: number): Uint8Array {
  if (descriptorHash.length !== 32) throw new CryptoError('invalid_argument', 'descriptorHash must be 32 bytes');
  return sha256(ROUND_SEED_DOMAIN, descriptorHash, u32be(round));
}

/**
 * One upload as bytes for the wire (update encoding `committee-v1`, upload version 2):
 *   c0 payload || "VCU" || u8 2 || u8 n || n × sealed share (4,144 bytes each)
 *   || u32le |manifest| || canonical manifest bytes || 64-byte Ed25519 signature.
 * The c0 comes first (its own header gives its shape, so its length follows from the task): the
 * c0's SHA-256, which the manifest signs, is then the state of the whole payload's SHA-256 after
 * the c0, and the coordinator hashes the payload once for both (see {@link verifyCommitteeUpload}).
 */
export function encodeCommitteeUploadPayload(upload: CommitteeUpload): Uint8Array {
  const manifestBytes = encodeManifest(upload.manifest.manifest);
  const signature = fromBase64(upload.manifest.signature, 'manifest signature', 64);
  const n = upload.sealedShares.length;
  if (n < 1 || n > 255) throw new CryptoError('invalid_argument', 'an upload carries 1-255 sealed shares');
  const out = new Uint8Array(upload.c0.length + 4 + 1 + n * SEALED_SHARE_BYTES + 4 + manifestBytes.length + 64);
  const view = new DataView(out.buffer);
  let o = 0;
  out.set(upload.c0, o);
  o += upload.c0.length;
  out.set(UPLOAD_MAGIC, o);
  o += 4;
  out[o++] = n;
  for (const sealed of upload.sealedShares) {
    if (sealed.length !== SEALED_SHARE_BYTES) throw new CryptoError('invalid_argument', 'a sealed share has the wrong length');
    out.set(sealed, o);
    o += SEALED_SHARE_BYTES;
  }
  view.setUint32(o, manifestBytes.length, true);
  o += 4;
  out.set(manifestBytes, o);
  o += manifestBytes.length;
  out.set(signature, o);
  return out;
}

/** Exact payload size of a committee upload without its manifest: for size limits. `c0Bits`: the descriptor's encoding.c0Bits (default 44). */
export function committeeUploadBytesWithoutManifest(valueCount: number, committeeSize: number, c0Bits: C0Bits = 44): number {
  return c0PayloadBytes(valueCount, c0Bits) + 4 + 1 + committeeSize * SEALED_SHARE_BYTES + 4 + 64;
}

/** What {@link verifyCommitteeUpload} checks against. */
export interface CommitteeUploadCheck {
  readonly descriptor: TaskDescriptor;
  readonly descriptorHash?: Uint8Array;
  readonly round: number;
  /** The model's value count. */
  readonly valueCount: number;
  /** The device the uploader authenticated as: the manifest must name it. */
  readonly deviceId: string;
  /** Unix ms, for the certificate's expiry. */
  readonly nowMs: number;
  /** Certificates verified before (see {@link ManifestCheckOptions.certificateCache}). */
  readonly certificateCache?: CertificateCache;
  /**
   * A sum (of this descriptor's c0 width) to add the c0 to, last, once everything else passed: the coefficient range check is
   * then the accumulator's add (one pass over the c0 bytes instead of two). A refused upload
   * leaves it unchanged. Default: the range is checked without adding.
   */
  readonly fold?: C0Accumulator;
}

/** A verified upload, split into what the coordinator stores. */
export interface VerifiedCommitteeUpload {
  /** c0 payload bytes (checked: framing, shape, every coefficient < q). */
  readonly c0: Uint8Array;
  /** Element i-1 for custodian i. */
  readonly sealedShares: readonly Uint8Array[];
  /** Canonical manifest bytes and the device's 64-byte signature over them. */
  readonly manifest: Uint8Array;
  readonly manifestSignature: Uint8Array;
  /** SHA-256 of the manifest bytes. */
  readonly manifestDigest: Uint8Array;
  /**
   * SHA-256 of the whole payload, from the same pass that hashed the c0 (the c0 is its first
   * bytes): the digest a transport would otherwise compute again for the update's header check.
   */
  readonly payloadSha256: Uint8Array;
}

/**
 * The coordinator's intake check of a committee upload: framing and sizes, c0 shape and ranges,
 * one sealed share per custodian, a canonical manifest certified by the descriptor's enrolment
 * authority for this device and task and signed by the certified key, naming this descriptor and
 * round, whose digests match the c0 and every sealed share. Throws `CryptoError` with
 * `invalid_payload` / `shape_mismatch` / `invalid_ciphertext` (malformed), `parameter_mismatch`
 * (another task, round or device), `invalid_signature` (uncertified or badly signed).
 * Custodians repeat the manifest and share checks themselves; this one keeps garbage out of the
 * coordinator's store and sum.
 */
export function verifyCommitteeUpload(payload: Uint8Array, check: CommitteeUploadCheck): VerifiedCommitteeUpload {
  const n = check.descriptor.committee.length;
  const fail = (message: string): never => {
    throw new CryptoError('invalid_payload', `committee upload: ${message}`);
  };
  if (payload.length >= 4 && payload[0] === UPLOAD_MAGIC[0] && payload[1] === UPLOAD_MAGIC[1] && payload[2] === UPLOAD_MAGIC[2]) {
    fail(`upload version ${payload[3]} (the magic first); this coordinator reads version ${UPLOAD_MAGIC[3]} (the c0 first)`);
  }
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  const c0Bits = check.descriptor.encoding.c0Bits ?? 44;
  const c0Length = c0PayloadBytes(check.valueCount, c0Bits);
  // The c0's own header (magic, width, value and polynomial counts) is checked first, so that an
  // upload of another shape is told so rather than cut at this task's c0 length.
  const c0 = payload.subarray(0, c0Length);
  // Framing, shape, every coefficient < q (read only, no decoded copy); with `fold`, by its add at the end.
  if (check.fold === undefined) checkC0PayloadRange(c0, check.valueCount, c0Bits);
  else checkC0Payload(c0, check.valueCount, c0Bits);
  let o = c0Length;
  if (payload.length < o + 5) fail('truncated after the c0');
  for (let i = 0; i < 4; i++) if (payload[o + i] !== UPLOAD_MAGIC[i]) fail(`not a version-${UPLOAD_MAGIC[3]} committee upload`);
  o += 4;
  if (payload[o] !== n) fail(`carries ${payload[o]} sealed shares, the committee has ${n}`);
  o += 1;
  if (payload.length < o + n * SEALED_SHARE_BYTES + 4) fail('truncated sealed shares');
  const sealedShares = Array.from({ length: n }, (_, i) => payload.subarray(o + i * SEALED_SHARE_BYTES, o + (i + 1) * SEALED_SHARE_BYTES));
  o += n * SEALED_SHARE_BYTES;
  const manifestLength = view.getUint32(o, true);
  o += 4;
  if (manifestLength > MAX_MANIFEST_BYTES) fail(`manifest of ${manifestLength} bytes exceeds ${MAX_MANIFEST_BYTES}`);
  if (payload.length !== o + manifestLength + 64) fail(`must be ${o + manifestLength + 64} bytes, got ${payload.length}`);
  const manifestBytes = payload.subarray(o, o + manifestLength);
  const manifestSignature = payload.subarray(o + manifestLength);
  let manifest: UploadManifest;
  try {
    manifest = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(manifestBytes)) as UploadManifest;
  } catch (cause) {
    throw new CryptoError('invalid_payload', 'committee upload: the manifest is not JSON', { cause });
  }
  let canonical: Uint8Array;
  try {
    canonical = encodeManifest(manifest);
  } catch (cause) {
    throw new CryptoError('invalid_payload', 'committee upload: the manifest has no canonical form', { cause });
  }
  if (!bytesEqual(canonical, manifestBytes)) fail('the manifest is not canonically encoded');
  const verified = verifyManifest(
    { manifest, signature: toBase64(manifestSignature) },
    {
      descriptor: check.descriptor,
      ...(check.descriptorHash === undefined ? {} : { descriptorHash: check.descriptorHash }),
      round: check.round,
      nowMs: check.nowMs,
      ...(check.certificateCache === undefined ? {} : { certificateCache: check.certificateCache }),
      // Checked above to be the manifest's canonical encoding: hashed as they are.
      canonicalBytes: manifestBytes,
    },
  );
  if (verified.deviceId !== check.deviceId) throw new CryptoError('parameter_mismatch', `committee upload: the manifest names device ${verified.deviceId}, the uploader is ${check.deviceId}`);
  // The c0 is the payload's first bytes: one pass gives its digest and the payload's.
  const digests = sha256WithPrefix(payload, c0Length);
  if (!bytesEqual(digests.prefix, verified.c0Sha256)) throw new CryptoError('invalid_signature', 'committee upload: c0 does not match the signed manifest');
  sealedShares.forEach((sealed, i) => {
    if (!bytesEqual(sha256(sealed), verified.shareSha256[i]!)) throw new CryptoError('invalid_signature', `committee upload: sealed share ${i + 1} does not match the signed manifest`);
  });
  check.fold?.add(c0);
  return { c0, sealedShares, manifest: manifestBytes, manifestSignature, manifestDigest: verified.manifestDigest, payloadSha256: digests.whole };
}
