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
import { fromBase64, sha256, toBase64, toHex } from './bytes.js';
import { descriptorHash as hashDescriptor, type TaskDescriptor } from './descriptor.js';
import { secureRandomBytes, type RandomBytes } from './keys.js';
import { signManifest, type DeviceCertificate, type SignedManifest, type UploadManifest } from './manifest.js';
import { encodeC0Payload, encodeUpdate, encryptUpdate, sampleTernary } from './rlwe.js';
import { sealShare } from './sealing.js';
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
