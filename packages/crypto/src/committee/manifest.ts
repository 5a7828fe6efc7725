/**
 * Device certificates and upload manifests (design note, "Phantom devices"). The enrolment
 * authority certifies a device's Ed25519 key for one task; the device signs, for each upload, a
 * manifest binding the task descriptor, the round, its id, H(c0) and H(each sealed share).
 * Custodians count only distinct devices with a valid certified manifest, so a coordinator that
 * seals shares itself (sealing needs no secret) cannot pad D with phantom devices unless it can
 * also mint certificates. Signatures are Ed25519 (RFC 8032); hashes SHA-256; the manifest's
 * canonical bytes are RFC 8785 JSON.
 *
 * Certificate message (deviation from the shared protocol text, documented in README.md: strings
 * are length-prefixed so that ("ab", "c") and ("a", "bc") cannot share a signature):
 *   "veil/device-cert/v1" || u16be(len) || taskId || u16be(len) || deviceId || devicePublicKey || u64be(notAfterMs)
 * Manifest signature: Ed25519 over "veil/manifest/v1" || manifestDigest, where
 *   manifestDigest = SHA-256(canonical manifest bytes).
 */
import { CryptoError } from '../errors.js';
import { concatBytes, fromBase64, fromHex, lengthPrefixed, sha256, toBase64, toHex, u64be, utf8, bytesEqual } from './bytes.js';
import { canonicalBytes } from './canonical.js';
import { descriptorHash as hashDescriptor, type TaskDescriptor } from './descriptor.js';
import { ed25519Sign, ed25519Verify } from './keys.js';

const CERT_DOMAIN = utf8('veil/device-cert/v1');
const MANIFEST_DOMAIN = utf8('veil/manifest/v1');
/** Longest device id, in UTF-16 code units. */
export const MAX_DEVICE_ID_LENGTH = 128;

/** The enrolment authority's certificate of one device key for one task. */
export interface DeviceCertificate {
  /** Last millisecond (Unix epoch) at which the certificate is valid. */
  readonly notAfterMs: number;
  /** base64 Ed25519 signature by the authority (see the module comment for the message). */
  readonly signature: string;
}

/** What a device signs about one upload. */
export interface UploadManifest {
  /** hex SHA-256 of the task descriptor. */
  readonly descriptorHash: string;
  readonly round: number;
  readonly deviceId: string;
  /** hex SHA-256 of the c0 payload bytes as uploaded. */
  readonly c0Sha256: string;
  /** hex SHA-256 of each sealed share, element i-1 for custodian index i. */
  readonly shareSha256: readonly string[];
  /** base64 Ed25519 public key of the device. */
  readonly devicePublicKey: string;
  readonly certificate: DeviceCertificate;
}

/** A manifest with the device's signature. */
export interface SignedManifest {
  readonly manifest: UploadManifest;
  /** base64 Ed25519 signature over "veil/manifest/v1" || manifestDigest. */
  readonly signature: string;
}

/**
 * A manifest with the device's signature as the raw 64 bytes received, for {@link verifyManifest}
 * (a custodian receives them raw: no base64 round trip per device).
 */
export interface RawSignedManifest {
  readonly manifest: UploadManifest;
  readonly signatureBytes: Uint8Array;
}

/** The fields a certificate binds. */
export interface CertificateSubject {
  readonly taskId: string;
  readonly deviceId: string;
  /** 32-byte Ed25519 public key of the device. */
  readonly devicePublicKey: Uint8Array;
  readonly notAfterMs: number;
}

function checkDeviceId(deviceId: unknown): asserts deviceId is string {
  if (typeof deviceId !== 'string' || deviceId.length < 1 || deviceId.length > MAX_DEVICE_ID_LENGTH) {
    throw new CryptoError('invalid_payload', `deviceId must be a string of 1-${MAX_DEVICE_ID_LENGTH} characters`);
  }
}

function certificateMessage(subject: CertificateSubject): Uint8Array {
  if (subject.devicePublicKey.length !== 32) throw new CryptoError('invalid_key_material', 'device public key must be 32 bytes');
  return concatBytes(CERT_DOMAIN, lengthPrefixed(subject.taskId), lengthPrefixed(subject.deviceId), subject.devicePublicKey, u64be(subject.notAfterMs));
}

/** The enrolment authority certifies a device key (run where the authority key lives, not in the coordinator). */
export function issueDeviceCertificate(authorityPrivateKey: Uint8Array, subject: CertificateSubject): DeviceCertificate {
  checkDeviceId(subject.deviceId);
  return { notAfterMs: subject.notAfterMs, signature: toBase64(ed25519Sign(authorityPrivateKey, certificateMessage(subject))) };
}

/** True when `certificate` is the authority's valid, unexpired certificate of `subject` at `nowMs`. */
export function verifyDeviceCertificate(
  authorityPublicKey: Uint8Array,
  subject: Omit<CertificateSubject, 'notAfterMs'>,
  certificate: DeviceCertificate,
  nowMs: number,
): boolean {
  if (!Number.isSafeInteger(certificate.notAfterMs) || certificate.notAfterMs < 0 || nowMs > certificate.notAfterMs) return false;
  let signature: Uint8Array;
  try {
    signature = fromBase64(certificate.signature, 'certificate signature', 64);
    checkDeviceId(subject.deviceId);
    return ed25519Verify(authorityPublicKey, certificateMessage({ ...subject, notAfterMs: certificate.notAfterMs }), signature);
  } catch {
    return false;
  }
}

/** The manifest's canonical bytes (RFC 8785 JSON). */
export function encodeManifest(manifest: UploadManifest): Uint8Array {
  return canonicalBytes(manifest);
}

/** manifestDigest = SHA-256(canonical manifest bytes), 32 bytes. */
export function manifestDigest(manifest: UploadManifest): Uint8Array {
  return sha256(encodeManifest(manifest));
}

/** The device signs its manifest. */
export function signManifest(manifest: UploadManifest, devicePrivateKey: Uint8Array): SignedManifest {
  const signature = ed25519Sign(devicePrivateKey, concatBytes(MANIFEST_DOMAIN, manifestDigest(manifest)));
  return { manifest, signature: toBase64(signature) };
}

/** What {@link verifyManifest} checks against. */
export interface ManifestCheckOptions {
  readonly descriptor: TaskDescriptor;
  /** The descriptor's hash if already computed (32 bytes). Default: computed. */
  readonly descriptorHash?: Uint8Array;
  /** The round the manifest must name. */
  readonly round: number;
  /** Current time for the certificate's expiry, Unix ms. */
  readonly nowMs: number;
  /**
   * Certificates already verified (e.g. a set kept per task by the coordinator): a device sends the
   * same certificate with every upload, so its authority signature need not be re-verified each
   * round. The key holds every input of the signature check (authority key, task, device, device
   * key, expiry, signature), so a hit is a certificate verified before; the expiry is checked on
   * every call regardless.
   */
  readonly certificateCache?: CertificateCache;
  /**
   * The manifest's bytes as received, when the caller has already checked that they are exactly its
   * canonical encoding (RFC 8785): the digest is then their SHA-256, without encoding the manifest
   * again. Default: the manifest is encoded here.
   */
  readonly canonicalBytes?: Uint8Array;
  /**
   * The descriptor's authority key, decoded from `descriptor.authorityKey` by the caller (a
   * custodian holds it per descriptor). Default: decoded here, on every call.
   */
  readonly authorityKey?: Uint8Array;
}

/** See {@link ManifestCheckOptions.certificateCache}; a `Set<string>` is one. */
export interface CertificateCache {
  has(key: string): boolean;
  add(key: string): unknown;
}

/** A manifest that passed {@link verifyManifest}, with its parsed digests. */
export interface VerifiedManifest {
  readonly manifestDigest: Uint8Array;
  readonly deviceId: string;
  readonly devicePublicKey: Uint8Array;
  readonly c0Sha256: Uint8Array;
  /** Element i-1: SHA-256 of custodian i's sealed share. */
  readonly shareSha256: readonly Uint8Array[];
}

/**
 * Checks a signed manifest: its shape (one share digest per committee member), that it names this
 * descriptor and round, that the authority named in the descriptor certified the device key for
 * this task and device and the certificate has not expired, and the device's signature. Throws
 * `CryptoError('invalid_payload')` for a malformed manifest, `parameter_mismatch` for another
 * descriptor or round, `invalid_signature` for a bad certificate or signature.
 */
export function verifyManifest(signed: SignedManifest | RawSignedManifest, options: ManifestCheckOptions): VerifiedManifest {
  const m = signed?.manifest as Partial<Record<keyof UploadManifest, unknown>> | undefined;
  if (typeof m !== 'object' || m === null) throw new CryptoError('invalid_payload', 'manifest missing');
  const allowed = ['descriptorHash', 'round', 'deviceId', 'c0Sha256', 'shareSha256', 'devicePublicKey', 'certificate'];
  for (const key of Object.keys(m)) if (!allowed.includes(key)) throw new CryptoError('invalid_payload', `manifest has unknown field ${key}`);
  const expectedHash = options.descriptorHash ?? hashDescriptor(options.descriptor);
  const dh = fromHex(m.descriptorHash as string, 'manifest.descriptorHash', 32, 'invalid_payload');
  if (!bytesEqual(dh, expectedHash)) throw new CryptoError('parameter_mismatch', 'manifest names another task descriptor');
  if (m.round !== options.round) throw new CryptoError('parameter_mismatch', `manifest names round ${String(m.round)}, expected ${options.round}`);
  checkDeviceId(m.deviceId);
  const c0Sha256 = fromHex(m.c0Sha256 as string, 'manifest.c0Sha256', 32, 'invalid_payload');
  const n = options.descriptor.committee.length;
  if (!Array.isArray(m.shareSha256) || m.shareSha256.length !== n) {
    throw new CryptoError('invalid_payload', `manifest must carry ${n} share digests`);
  }
  const shareSha256 = (m.shareSha256 as unknown[]).map((h, i) => fromHex(h as string, `manifest.shareSha256[${i}]`, 32, 'invalid_payload'));
  const devicePublicKey = fromBase64(m.devicePublicKey as string, 'manifest.devicePublicKey', 32, 'invalid_payload');
  const cert = m.certificate as Partial<DeviceCertificate> | undefined;
  if (typeof cert !== 'object' || cert === null || Object.keys(cert).some((k) => k !== 'notAfterMs' && k !== 'signature')) {
    throw new CryptoError('invalid_payload', 'manifest.certificate is malformed');
  }
  const authority = options.authorityKey ?? fromBase64(options.descriptor.authorityKey, 'descriptor.authorityKey', 32);
  if (authority.length !== 32) throw new CryptoError('invalid_key_material', 'descriptor.authorityKey must be 32 bytes');
  const certificate = cert as DeviceCertificate;
  const cache = options.certificateCache;
  // The two keys' base64: canonical (fromBase64 refuses any other spelling), so the same text as
  // encoding the decoded bytes again.
  const cacheKey =
    cache === undefined
      ? ''
      : JSON.stringify([
          options.authorityKey === undefined ? options.descriptor.authorityKey : toBase64(authority),
          options.descriptor.taskId,
          m.deviceId,
          m.devicePublicKey,
          certificate.notAfterMs,
          certificate.signature,
        ]);
  const expired = !Number.isSafeInteger(certificate.notAfterMs) || certificate.notAfterMs < 0 || options.nowMs > certificate.notAfterMs;
  if (expired || !(cache?.has(cacheKey) ?? false)) {
    if (!verifyDeviceCertificate(authority, { taskId: options.descriptor.taskId, deviceId: m.deviceId, devicePublicKey }, certificate, options.nowMs)) {
      throw new CryptoError('invalid_signature', 'the device certificate is not a valid, unexpired certificate of the enrolment authority');
    }
    cache?.add(cacheKey);
  }
  const manifest = m as unknown as UploadManifest;
  let digest: Uint8Array;
  try {
    digest = options.canonicalBytes === undefined ? manifestDigest(manifest) : sha256(options.canonicalBytes);
  } catch (cause) {
    throw new CryptoError('invalid_payload', 'manifest cannot be canonically encoded', { cause });
  }
  let signature: Uint8Array;
  if ('signatureBytes' in signed) {
    if (!(signed.signatureBytes instanceof Uint8Array) || signed.signatureBytes.length !== 64) throw new CryptoError('invalid_signature', 'manifest signature is malformed');
    signature = signed.signatureBytes;
  } else {
    try {
      signature = fromBase64(signed.signature, 'manifest signature', 64, 'invalid_payload');
    } catch {
      throw new CryptoError('invalid_signature', 'manifest signature is malformed');
    }
  }
  if (!ed25519Verify(devicePublicKey, concatBytes(MANIFEST_DOMAIN, digest), signature)) {
    throw new CryptoError('invalid_signature', 'manifest signature does not verify under the certified device key');
  }
  return { manifestDigest: digest, deviceId: m.deviceId, devicePublicKey, c0Sha256, shareSha256 };
}

/** hex of a SHA-256 (convenience for building manifests). */
export function sha256Hex(bytes: Uint8Array): string {
  return toHex(sha256(bytes));
}
