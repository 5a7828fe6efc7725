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
  committeeDdgParams,
  committeeRotationSeed,
  validateDescriptor,
  verifyDescriptorSignature,
  type CommitteeDdgParams,
  type DescriptorCheck,
  type DescriptorFloors,
  type DeviceCertificate,
  type RandomBytes,
  type RawKeyPair,
  type TaskDescriptor,
} from '@veil/crypto';
import { PrivacyError, centerModulo, encodeDistributedDiscreteGaussian, getDefaultRng, type Rng } from '@veil/privacy';
import { ClientError } from '../errors.js';
import type { UpdateMiddleware } from '../middleware.js';
import type { TaskCommittee } from '../transport/transport.js';

/** What the app pins: the committee and authority it trusts, and its floors. */
export interface CommitteePins extends DescriptorFloors {
  /** Required: the custodians' fingerprints (hex SHA-256(signing || sealing)). */
  readonly pinnedFingerprints: readonly string[];
  /** Required: the enrolment authority's Ed25519 public key, base64. */
  readonly authorityKey: string;
  /**
   * Distributed DP (issue 11): the colluder allowance and noise the app insists on. Required to
   * take part in a task whose descriptor sets DP; when given, a descriptor without DP is refused.
   */
  readonly dp?: CommitteeDpPins;
}

/** The app's own floor on a DP committee task's noise. */
export interface CommitteeDpPins {
  /**
   * Devices the app assumes may collude with the coordinator: the descriptor must size every
   * device's noise share for at most minDevices minus this many honest shares
   * (dp.colludingDevices >= this). Required.
   */
  readonly colludingDevices: number;
  /** Smallest noise multiplier z of the honest shares' sum. Default: not checked. */
  readonly minNoiseMultiplier?: number;
  /** Largest clip norm C. Default: not checked. */
  readonly maxClipNorm?: number;
}

/** The coordinator's announcement of a distributed-DP task's mechanism (checked against the descriptor). */
export interface AnnouncedDdg {
  readonly scale: number;
  readonly localStddev: number;
  readonly minNoiseClients: number;
  readonly dimension: number;
  readonly clipNorm: number;
  readonly noiseMultiplier: number;
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
  /** The model's parameter count (required when the descriptor sets DP: the rotation pads it). */
  readonly parameterCount?: number;
  /** What the coordinator announced of the task's distributed DP, if anything: must match the descriptor. */
  readonly announcedDp?: AnnouncedDdg | null;
  /** Noise source of the DP shares (rounding and discrete Gaussian). Default: the CSPRNG of @veil/privacy. Tests only. */
  readonly dpRng?: Rng;
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
  /** The distributed discrete Gaussian this device applies (from the descriptor), or null without DP. */
  readonly dp: CommitteeDdgParams | null;
  /**
   * Update middleware; runs last. Weight = min(capWeight(exampleCount), round cap), then encode,
   * encrypt, share, seal, sign; encoding `committee-v1`. Under the descriptor's distributed DP
   * the update is first encoded with the distributed discrete Gaussian (weight 1). Refuses
   * shared-key DP levels and rounds past the descriptor's cap.
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
  const dp = committeeDpFor(descriptor, pins, options);
  const dpRng = options.dpRng ?? getDefaultRng();
  const step = descriptor.encoding.step;
  return {
    descriptor,
    descriptorHash: check.descriptorHash,
    check,
    weightCap,
    dp,
    middleware: async (update, ctx, next) => {
      if (update.levels !== undefined) {
        throw new ClientError('failed_precondition', 'distributed DP levels of a shared-key task cannot be sent in committee mode (the committee applies the descriptor\'s DP itself)');
      }
      if (!Number.isSafeInteger(ctx.roundNumber) || ctx.roundNumber < 1 || ctx.roundNumber > descriptor.maxRounds) {
        throw new ClientError('failed_precondition', `round ${ctx.roundNumber} is outside the descriptor's rounds 1..${descriptor.maxRounds}`);
      }
      if (ctx.taskId !== descriptor.taskId) throw new ClientError('failed_precondition', `the descriptor is for task ${descriptor.taskId}, not ${ctx.taskId}`);
      let weight = Math.min(capWeight(update.exampleCount, weightCap), ctx.maxExampleCount);
      let values: ArrayLike<number> = update.delta;
      if (dp !== null) {
        if (update.delta.length !== options.parameterCount) {
          throw new ClientError('invalid_argument', `the update has ${update.delta.length} values, the model ${options.parameterCount}`);
        }
        // KLS21 Algorithm 1 on the device: clip, rotate, scale by 1/γ = 1/step, round, add the
        // discrete Gaussian share; the integers travel as encoding levels with weight 1.
        const encoded = wrapPrivacy(() =>
          encodeDistributedDiscreteGaussian(update.delta, {
            clipNorm: dp.clipNorm,
            scale: dp.scale,
            localStddev: dp.localStddev,
            modulus: DP_MODULUS,
            rotationSeed: committeeRotationSeed(dh, ctx.roundNumber),
            rng: dpRng,
          }),
        );
        const integers = centerModulo(encoded.encoded, DP_MODULUS);
        encoded.encoded.fill(0);
        const levels = new Float64Array(integers.length);
        for (let i = 0; i < integers.length; i++) levels[i] = integers[i]! * step;
        integers.fill(0);
        values = levels;
        weight = 1;
      }
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
          values,
          weight,
          random,
        });
        payload = encodeCommitteeUploadPayload(upload);
      } catch (error) {
        throw new ClientError('invalid_argument', CryptoError.from(error).message, { cause: error });
      } finally {
        if (values !== update.delta) (values as Float64Array).fill(0);
      }
      return next(
        {
          ...update,
          ...(dp !== null && { delta: new Float32Array(0) }),
          exampleCount: weight,
          payload,
          encoding: 'committee-v1',
          notes: { ...update.notes, committee: true, ...(dp !== null && { dp: { mechanism: 'distributed-discrete-gaussian', ...dp } }) },
        },
        ctx,
      );
    },
  };
}

/** Residues of the DDG encoder, centred back to the integers (|coordinate| stays far below 2^51). */
const DP_MODULUS = 2 ** 52;

/**
 * The descriptor's distributed DP against the app's pins and the coordinator's announcement:
 * refuses a DP descriptor the app did not pin DP for, a descriptor assuming fewer colluding
 * devices than the app allows for (each noise share would be sized for more honest shares than
 * the app can count on), noise below the app's floor, a clip norm above it, and an announcement
 * whose parameters are not the descriptor's (the ledger would account for other noise than the
 * devices add). Returns the mechanism's parameters, or null without DP.
 */
function committeeDpFor(descriptor: TaskDescriptor, pins: CommitteePins, options: CommitteeEncryptionOptions): CommitteeDdgParams | null {
  const refuse = (message: string): never => {
    throw new ClientError('failed_precondition', `task descriptor refused: ${message}`);
  };
  const allowance = pins.dp;
  if (allowance !== undefined && (!Number.isSafeInteger(allowance.colludingDevices) || allowance.colludingDevices < 0)) {
    throw new ClientError('invalid_argument', 'pins.dp.colludingDevices must be an integer >= 0');
  }
  if (descriptor.dp === null) {
    if (allowance !== undefined) refuse('the app requires distributed differential privacy (pins.dp), the descriptor has none');
    if (options.announcedDp != null) refuse('the coordinator announces distributed DP, the descriptor has none');
    return null;
  }
  if (allowance === undefined) refuse('the descriptor sets distributed differential privacy: configure pins.dp (the colluding devices the app allows for)');
  const dp = descriptor.dp;
  if (dp.colludingDevices < allowance!.colludingDevices) {
    refuse(`each noise share is sized for ${descriptor.minDevices - dp.colludingDevices} honest devices (${dp.colludingDevices} colluding), the app allows for ${allowance!.colludingDevices} colluding`);
  }
  if (allowance!.minNoiseMultiplier !== undefined && !(dp.noiseMultiplier >= allowance!.minNoiseMultiplier)) {
    refuse(`noise multiplier ${dp.noiseMultiplier} is below the app's floor ${allowance!.minNoiseMultiplier}`);
  }
  if (allowance!.maxClipNorm !== undefined && !(dp.clipNorm <= allowance!.maxClipNorm)) refuse(`clip norm ${dp.clipNorm} exceeds the app's cap ${allowance!.maxClipNorm}`);
  const parameterCount = options.parameterCount;
  if (parameterCount === undefined || !Number.isSafeInteger(parameterCount) || parameterCount < 1) {
    throw new ClientError('invalid_argument', 'a DP committee task needs the model parameterCount');
  }
  const params = committeeDdgParams(descriptor, parameterCount)!;
  const a = options.announcedDp;
  if (a == null) refuse('the descriptor sets distributed DP, the coordinator announces none');
  const same =
    a!.scale === params.scale &&
    a!.localStddev === params.localStddev &&
    a!.minNoiseClients === params.noiseClients &&
    a!.dimension === params.dimension &&
    a!.clipNorm === params.clipNorm &&
    a!.noiseMultiplier === params.noiseMultiplier;
  if (!same) {
    refuse(
      `the coordinator announces DP noise (scale ${a!.scale}, localStddev ${a!.localStddev}, ${a!.minNoiseClients} noise clients, d ${a!.dimension}) ` +
        `other than the descriptor's (scale ${params.scale}, localStddev ${params.localStddev}, ${params.noiseClients} noise clients, d ${params.dimension})`,
    );
  }
  return params;
}

/** Runs a @veil/privacy call, turning its errors into the SDK's. */
function wrapPrivacy<T>(f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof PrivacyError) throw new ClientError('invalid_argument', error.message, { cause: error });
    throw ClientError.from(error);
  }
}
