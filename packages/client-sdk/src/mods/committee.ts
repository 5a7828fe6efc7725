/**
 * Committee mode on the device (issue 11; @veil/crypto committee/): no key that opens one
 * device's update exists anywhere. For each round attempt the device draws a fresh single-use
 * RLWE secret, uploads c0 = -a·s + e + Δ·m (a derived here from the descriptor and round), one
 * HPKE-sealed Shamir share of s per custodian and a manifest signed with its certified key. The
 * secret, the plaintext shares and the encoded update are erased inside `buildCommitteeUpload`
 * before anything leaves the device; the upload bytes themselves are kept only until the
 * coordinator acknowledges them (a retry resends identical bytes).
 *
 * The descriptor comes from the coordinator, which must not be able to change it: the device
 * checks the enrolment authority's signature under the authority key the app pinned, the
 * committee against the custodian fingerprints the app pinned, and the floors the app was
 * configured with (validateDescriptor: t >= 2, c <= 2t - n - 1, minDevices, share modulus,
 * round cap, encoding headroom).
 */
import {
  capWeight,
  CryptoError,
  buildCommitteeUpload,
  descriptorHash as hashDescriptor,
  deriveRoundSeed,
  encodeCommitteeUploadPayload,
  secureRandomBytes,
  validateDescriptor,
  verifyDescriptorSignature,
  type DescriptorCheck,
  type DescriptorFloors,
  type DeviceCertificate,
  type RandomBytes,
  type RawKeyPair,
  type TaskDescriptor,
} from '@veil/crypto';
import { ClientError } from '../errors.js';
import type { UpdateMiddleware } from '../middleware.js';
import type { TaskCommittee } from '../transport/transport.js';

/** What the app pins: the committee and authority it trusts, and its floors. */
export interface CommitteePins extends DescriptorFloors {
  /** Required: the custodians' fingerprints (hex SHA-256(signing || sealing)). */
  readonly pinnedFingerprints: readonly string[];
  /** Required: the enrolment authority's Ed25519 public key, base64. */
  readonly authorityKey: string;
}

/** Options of {@link createCommitteeEncryption}. */
export interface CommitteeEncryptionOptions {
  /** The task's committee as the coordinator sent it. */
  readonly committee: TaskCommittee;
  readonly pins: CommitteePins;
  /** This device's id at the coordinator (its client id): the certificate names it. */
  readonly deviceId: string;
  /** The device's Ed25519 key pair (32-byte private seed, 32-byte public key). */
  readonly deviceKey: RawKeyPair;
  /** The enrolment authority's certificate of `deviceKey` for this task and device. */
  readonly certificate: DeviceCertificate;
  /** CSPRNG. Default node:crypto. */
  readonly random?: RandomBytes;
}

/** A device's committee encryption for one task. */
export interface CommitteeEncryption {
  readonly descriptor: TaskDescriptor;
  /** Hex SHA-256 of the descriptor. */
  readonly descriptorHash: string;
  /** What validateDescriptor proved (collusion bound, liveness slack, headroom). */
  readonly check: DescriptorCheck;
  /** The task's weight cap. */
  readonly weightCap: number;
  /**
   * Update middleware; runs last. Weight = min(capWeight(exampleCount), round cap), then encode,
   * encrypt, share, seal, sign; encoding `committee-v1`. Refuses integer-level updates
   * (distributed DP is not yet wired to committee mode) and rounds past the descriptor's cap.
   */
  readonly middleware: UpdateMiddleware;
}

/**
 * Opens and checks the task's descriptor; throws `ClientError('failed_precondition')` when the
 * signature, the pinned authority, the pinned committee or a floor refuses it, and
 * `invalid_argument` for missing pins or a device key of the wrong size.
 */
export function createCommitteeEncryption(options: CommitteeEncryptionOptions): CommitteeEncryption {
  const { pins } = options;
  if (!Array.isArray(pins.pinnedFingerprints) || pins.pinnedFingerprints.length < 2) {
    throw new ClientError('invalid_argument', 'committee mode needs the pinned custodian fingerprints (pins.pinnedFingerprints)');
  }
  if (typeof pins.authorityKey !== 'string' || pins.authorityKey === '') {
    throw new ClientError('invalid_argument', 'committee mode needs the pinned enrolment authority key (pins.authorityKey)');
  }
  if (options.deviceKey.privateKey.length !== 32 || options.deviceKey.publicKey.length !== 32) {
    throw new ClientError('invalid_argument', 'the device key must be an Ed25519 key pair of 32-byte halves');
  }
  let descriptor: TaskDescriptor;
  try {
    descriptor = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(options.committee.descriptor)) as TaskDescriptor;
  } catch (cause) {
    throw new ClientError('failed_precondition', 'the task descriptor is not JSON', { cause });
  }
  let check: DescriptorCheck;
  try {
    check = validateDescriptor(descriptor, pins);
  } catch (error) {
    throw new ClientError('failed_precondition', CryptoError.from(error).message, { cause: error });
  }
  const signature = Buffer.from(options.committee.descriptorSignature).toString('base64');
  if (!verifyDescriptorSignature({ descriptor, signature })) {
    throw new ClientError('failed_precondition', 'task descriptor refused: the enrolment authority did not sign it');
  }
  const dh = hashDescriptor(descriptor);
  const random = options.random ?? secureRandomBytes;
  const weightCap = descriptor.encoding.weightCap;
  return {
    descriptor,
    descriptorHash: check.descriptorHash,
    check,
    weightCap,
    middleware: async (update, ctx, next) => {
      if (update.levels !== undefined) {
        throw new ClientError('failed_precondition', 'distributed DP levels cannot be sent in committee mode (not supported yet)');
      }
      if (!Number.isSafeInteger(ctx.roundNumber) || ctx.roundNumber < 1 || ctx.roundNumber > descriptor.maxRounds) {
        throw new ClientError('failed_precondition', `round ${ctx.roundNumber} is outside the descriptor's rounds 1..${descriptor.maxRounds}`);
      }
      if (ctx.taskId !== descriptor.taskId) throw new ClientError('failed_precondition', `the descriptor is for task ${descriptor.taskId}, not ${ctx.taskId}`);
      const weight = Math.min(capWeight(update.exampleCount, weightCap), ctx.maxExampleCount);
      let payload: Uint8Array;
      try {
        const upload = buildCommitteeUpload({
          descriptor,
          descriptorHash: dh,
          round: ctx.roundNumber,
          roundSeed: deriveRoundSeed(dh, ctx.roundNumber),
          deviceId: options.deviceId,
          devicePrivateKey: options.deviceKey.privateKey,
          devicePublicKey: options.deviceKey.publicKey,
          certificate: options.certificate,
          values: update.delta,
          weight,
          random,
        });
        payload = encodeCommitteeUploadPayload(upload);
      } catch (error) {
        throw new ClientError('invalid_argument', CryptoError.from(error).message, { cause: error });
      }
      return next({ ...update, exampleCount: weight, payload, encoding: 'committee-v1', notes: { ...update.notes, committee: true } }, ctx);
    },
  };
}
