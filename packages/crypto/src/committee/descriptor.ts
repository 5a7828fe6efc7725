/**
 * The committee task descriptor: the parameters a coordinator may not choose alone (committee,
 * threshold, collusion bound, minimum |D|, share modulus, encoding, DP, round cap), signed by the
 * enrolment authority and hashed into every sealed share and every custodian answer. Custodians
 * and the SDK check it against floors they were configured with ({@link validateDescriptor});
 * checks only on the coordinator protect nothing (design note, "Parameters must not come from
 * the coordinator alone").
 *
 * Canonical encoding: RFC 8785 JSON (keys sorted, no whitespace, UTF-8); descriptorHash =
 * SHA-256 of it. The authority signs utf8("veil/descriptor/v1") || descriptorHash with Ed25519
 * (RFC 8032).
 */
import { CryptoError } from '../errors.js';
import { bytesEqual, concatBytes, fromBase64, fromHex, sha256, toBase64, toHex, utf8 } from './bytes.js';
import { canonicalBytes } from './canonical.js';
import { custodianFingerprint, ed25519Sign, ed25519Verify } from './keys.js';
import type { C0Bits } from './compress.js';

/** The only parameter set of version 1: N = 2048, q = 2^44 - 2^14 + 1 (see ring.ts). */
export const COMMITTEE_PARAMS_ID = 'rlwe-n2048-q44-v1';
/** The Shamir share modulus of `rlwe-n2048-q44-v1`: the largest prime below 2^16. */
export const COMMITTEE_SHARE_MODULUS = 65521;
/** Ring degree N of `rlwe-n2048-q44-v1`. */
export const COMMITTEE_RING_DEGREE = 2048;
/** Ciphertext modulus q of `rlwe-n2048-q44-v1`: 2^44 - 2^14 + 1 (prime; SEAL's 44-bit preset prime). */
export const COMMITTEE_Q = 2 ** 44 - 2 ** 14 + 1;
/**
 * Standard deviation of one device's error polynomial coefficients: SEAL's default 3.2, drawn
 * from a centred binomial with 21 + 21 bits (variance 10.5, σ ≈ 3.24).
 */
export const COMMITTEE_NOISE_SIGMA = Math.sqrt(10.5);
/** Largest number of descriptor committee members (custodian index is one byte in the AAD). */
export const MAX_COMMITTEE_SIZE = 255;

const DESCRIPTOR_SIGNATURE_DOMAIN = utf8('veil/descriptor/v1');

/** One custodian of the committee. */
export interface CommitteeMember {
  /** 1..n: the custodian's position and its Shamir evaluation point x. */
  readonly index: number;
  /** Where the coordinator reaches the custodian's gRPC service (`host:port`). */
  readonly address: string;
  /** X25519 public key (32 bytes, base64) that shares are HPKE-sealed to. */
  readonly sealingKey: string;
  /** Ed25519 public key (32 bytes, base64) that verifies the custodian's answers. */
  readonly signingKey: string;
}

/**
 * How a device turns its update into ring coefficients: value x becomes
 * w · roundHalfAwayFromZero(clip(x, clipMaxAbs) / step) (see quantize.ts), multiplied by
 * Δ = 2^deltaBits; two extra coefficients carry the count (1) and the weight w.
 */
export interface DescriptorEncoding {
  /** log2 of the scaling factor Δ; the decoded sum is round(x / Δ). */
  readonly deltaBits: number;
  /** Clip bound, model units. */
  readonly clipMaxAbs: number;
  /** Quantisation step, model units per level. */
  readonly step: number;
  /** Largest per-device integer weight. */
  readonly weightCap: number;
  /**
   * Bits per c0 coefficient a device sends: 36, 32, 24 or 16, its top bits (compress.ts; each device
   * then adds a rounding error of at most 2^(43 - c0Bits) to the decrypted residue, which must fit
   * under Δ/2 beside the noise). Absent: the exact 44-bit c0.
   */
  readonly c0Bits?: C0Bits;
}

/** Distributed differential privacy (Kairouz-Liu-Steinke 2021, distributed discrete Gaussian). */
export interface DescriptorDp {
  readonly mechanism: 'distributed-discrete-gaussian';
  /** L2 clip norm of one update, model units. */
  readonly clipNorm: number;
  /** Noise multiplier of the summed noise (σ / clipNorm) over minDevices - colludingDevices honest shares. */
  readonly noiseMultiplier: number;
  /** Devices assumed to collude with the coordinator: their noise shares are not counted. */
  readonly colludingDevices: number;
  /** Target δ of the (ε, δ) guarantee. */
  readonly delta: number;
}

/** Version 1 of the committee task descriptor. */
export interface TaskDescriptor {
  readonly version: 1;
  readonly taskId: string;
  readonly params: typeof COMMITTEE_PARAMS_ID;
  /** Members ordered by index 1..n. */
  readonly committee: readonly CommitteeMember[];
  /** t: answers needed to reconstruct. */
  readonly threshold: number;
  /** c: corrupt custodians tolerated; must satisfy c <= 2t - n - 1. */
  readonly corruptTolerated: number;
  /** Smallest |D| a custodian answers for. */
  readonly minDevices: number;
  /** Largest |D|: bounds the lifted secret sum and the encoded sum. */
  readonly maxDevices: number;
  /** Shamir prime p; must be {@link COMMITTEE_SHARE_MODULUS} for this parameter set. */
  readonly shareModulus: number;
  /** Largest round number a custodian answers for (rounds are 1..maxRounds). */
  readonly maxRounds: number;
  readonly encoding: DescriptorEncoding;
  readonly dp: DescriptorDp | null;
  /** Ed25519 public key (base64) of the enrolment authority: it certifies device keys and signs this descriptor. */
  readonly authorityKey: string;
  /** ISO-8601 creation time. */
  readonly createdAt: string;
}

/** A descriptor with the authority's detached signature. */
export interface SignedTaskDescriptor {
  readonly descriptor: TaskDescriptor;
  /** base64 Ed25519 signature over utf8("veil/descriptor/v1") || descriptorHash. */
  readonly signature: string;
}

/** What a custodian or an app was configured to insist on. */
export interface DescriptorFloors {
  /** Smallest acceptable minDevices. Required: there is no safe default. */
  readonly minDevices: number;
  /** Largest acceptable maxRounds. Default: no cap. */
  readonly maxRounds?: number;
  /** Smallest acceptable threshold. Default 2 (the protocol minimum). */
  readonly minThreshold?: number;
  /**
   * Fingerprints (64 hex digits, see custodianFingerprint) the committee must consist of,
   * exactly (as a set). Default: not checked — an app should always pin.
   */
  readonly pinnedFingerprints?: readonly string[];
  /** The enrolment authority's key (base64) the descriptor must name. Default: not checked. */
  readonly authorityKey?: string;
  /** Refuse descriptors without DP. Default false. */
  readonly requireDp?: boolean;
}

/** The descriptor's canonical bytes (RFC 8785). Throws for a value canonical JSON cannot carry. */
export function encodeDescriptor(descriptor: TaskDescriptor): Uint8Array {
  return canonicalBytes(descriptor);
}

/** SHA-256 of the canonical descriptor bytes (32 bytes). */
export function descriptorHash(descriptor: TaskDescriptor): Uint8Array {
  return sha256(encodeDescriptor(descriptor));
}

/** {@link descriptorHash} as 64 lower-case hex digits. */
export function descriptorHashHex(descriptor: TaskDescriptor): string {
  return toHex(descriptorHash(descriptor));
}

/** The authority's signature of a descriptor. */
export function signDescriptor(descriptor: TaskDescriptor, authorityPrivateKey: Uint8Array): SignedTaskDescriptor {
  const signature = ed25519Sign(authorityPrivateKey, concatBytes(DESCRIPTOR_SIGNATURE_DOMAIN, descriptorHash(descriptor)));
  return { descriptor, signature: toBase64(signature) };
}

/**
 * True when `signed.signature` is the descriptor's authority key's signature of its hash. The
 * caller must also check that authority key against its own pinned value (floors.authorityKey):
 * a descriptor naming a key its author holds signs itself.
 */
export function verifyDescriptorSignature(signed: SignedTaskDescriptor): boolean {
  let key: Uint8Array;
  let signature: Uint8Array;
  try {
    key = fromBase64(signed.descriptor.authorityKey, 'authorityKey', 32);
    signature = fromBase64(signed.signature, 'signature', 64);
  } catch {
    return false;
  }
  return ed25519Verify(key, concatBytes(DESCRIPTOR_SIGNATURE_DOMAIN, descriptorHash(signed.descriptor)), signature);
}

/** Figures {@link validateDescriptor} proved, for logs and the README. */
export interface DescriptorCheck {
  readonly descriptorHash: string;
  /** n. */
  readonly committeeSize: number;
  /** 2t - n - 1: the largest c the threshold allows. */
  readonly maxCorruptTolerated: number;
  /** n - t: custodians that may be offline or withhold. */
  readonly livenessSlack: number;
  /** Largest |Σ m| over maxDevices devices: maxDevices · weightCap · maxAbsLevel. */
  readonly maxAbsEncodedSum: number;
  /** Largest |Σ m| the decoding recovers: floor((q - 1) / 2 / Δ) - 1. */
  readonly encodedSumLimit: number;
  /** (Δ/2 minus the worst c0 rounding sum) divided by the standard deviation of the noise sum over maxDevices: must be >= 12. */
  readonly noiseMarginSigmas: number;
  /** Bits per c0 coefficient the devices send (44: exact). */
  readonly c0Bits: C0Bits;
}

/** Why a descriptor is refused: `CryptoError('parameter_mismatch')` with a readable message. */
function refuse(message: string): never {
  throw new CryptoError('parameter_mismatch', `task descriptor refused: ${message}`);
}

function isInt(value: unknown, min: number, max = Number.MAX_SAFE_INTEGER): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value >= min && value <= max;
}

function isPositiveFinite(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

/** What {@link encodingBudget} proved, or why the encoding does not fit. */
type EncodingBudget = { readonly maxAbsEncodedSum: number; readonly encodedSumLimit: number; readonly noiseMarginSigmas: number } | { readonly refusal: string };

/**
 * Whether an encoding decrypts exactly at up to `maxDevices` devices: the one check both
 * {@link validateDescriptor} and the width policy ({@link chooseC0Width}) run.
 *
 * The argument (BFV decryption correctness, Fan-Vercauteren 2012, ePrint 2012/144, §3-4: decryption
 * returns the plaintext exactly while the noise stays below Δ/2). Device j sends
 * c0_j = Δ·m_j + e_j - a·s_j (mod q), or with a compressed c0 (compress.ts; FIPS 203 §4.2.1
 * Compress_q) ĉ0_j = c0_j - r_j with |r_j| <= 2^(d-1), d = 44 - c0Bits. The coordinator computes
 * Σ ĉ0_j + a·S_D = Δ·Σm + Σe - Σr (mod q), centres it and takes round(x/Δ), which is Σm exactly when
 * (1) |Σe - Σr| < Δ/2, and (2) |Δ·Σm| + Δ/2 <= q/2, so that nothing wraps mod q.
 * (2): |Σm| <= maxDevices · weightCap · maxAbsLevel must not exceed floor((q-1)/2/Δ) - 1.
 * (1): Σr is taken at its worst, every coefficient of every device at its rounding boundary with
 * the same sign: |Σr| <= maxDevices · 2^(d-1) (nothing assumes c0 uniform); Σe is a sum of
 * maxDevices centred binomials of σ ≈ 3.24, and Δ/2 - |Σr| >= 12·σ·√maxDevices puts a coefficient's
 * failure probability below 2^-100.
 */
function encodingBudget(maxDevices: number, enc: DescriptorEncoding): EncodingBudget {
  if (!isInt(maxDevices, 1)) return { refusal: 'maxDevices must be an integer >= 1' };
  if (!isInt(enc.deltaBits, 1, 43)) return { refusal: 'encoding.deltaBits must be an integer in [1, 43]' };
  if (!isPositiveFinite(enc.clipMaxAbs) || !isPositiveFinite(enc.step)) return { refusal: 'encoding.clipMaxAbs and encoding.step must be positive finite numbers' };
  if (!isInt(enc.weightCap, 1, 0xffff)) return { refusal: 'encoding.weightCap must be an integer in [1, 65535]' };
  const maxAbsLevel = Math.floor(enc.clipMaxAbs / enc.step + 0.5);
  if (maxAbsLevel < 1) return { refusal: 'encoding.clipMaxAbs / step must be >= 0.5' };
  const delta = 2 ** enc.deltaBits;
  const encodedSumLimit = Math.floor((COMMITTEE_Q - 1) / 2 / delta) - 1;
  const maxAbsEncodedSum = maxDevices * enc.weightCap * maxAbsLevel;
  if (!(maxAbsEncodedSum <= encodedSumLimit)) {
    return { refusal: `maxDevices · weightCap · clip/step = ${maxAbsEncodedSum} exceeds the decodable sum ${encodedSumLimit} at Δ = 2^${enc.deltaBits}` };
  }
  const roundingSum = enc.c0Bits === undefined || enc.c0Bits === 44 ? 0 : maxDevices * 2 ** (43 - enc.c0Bits);
  const noiseMarginSigmas = (delta / 2 - roundingSum) / (COMMITTEE_NOISE_SIGMA * Math.sqrt(maxDevices));
  if (noiseMarginSigmas < 12) {
    const rounding = roundingSum === 0 ? '' : ` beside a rounding sum of up to ${roundingSum} (c0Bits ${String(enc.c0Bits)})`;
    return { refusal: `Δ/2 = 2^${enc.deltaBits - 1} is only ${noiseMarginSigmas.toFixed(1)} noise standard deviations at ${maxDevices} devices${rounding} (need >= 12)` };
  }
  return { maxAbsEncodedSum, encodedSumLimit, noiseMarginSigmas };
}

/**
 * Checks a descriptor's structure and the security requirements of the design note against the
 * floors a custodian or app was configured with. Returns the proven figures; throws
 * `CryptoError('parameter_mismatch')` naming the first failed check. Refuses in particular:
 * t < 2 (or below floors.minThreshold), t > n, c > 2t - n - 1 (two quorums could decrypt D and D
 * minus one device), minDevices below the floor, 2·maxDevices >= p (the centred lift of S_D
 * would wrap), a committee that is not exactly the pinned fingerprints, maxRounds above the
 * floor, an encoding whose sum or noise does not fit q, and an authority key other than the
 * pinned one. Verifying the authority's signature is {@link verifyDescriptorSignature}'s job.
 */
export function validateDescriptor(descriptor: TaskDescriptor, floors: DescriptorFloors): DescriptorCheck {
  if (!isInt(floors.minDevices, 1)) throw new CryptoError('invalid_argument', 'floors.minDevices must be an integer >= 1');
  const d = descriptor as Partial<Record<keyof TaskDescriptor, unknown>>;
  if (typeof descriptor !== 'object' || descriptor === null) refuse('not an object');
  const allowed = new Set(['version', 'taskId', 'params', 'committee', 'threshold', 'corruptTolerated', 'minDevices', 'maxDevices', 'shareModulus', 'maxRounds', 'encoding', 'dp', 'authorityKey', 'createdAt']);
  for (const key of Object.keys(descriptor)) if (!allowed.has(key)) refuse(`unknown field ${key}`);
  if (d.version !== 1) refuse(`version must be 1, got ${String(d.version)}`);
  if (typeof d.taskId !== 'string' || d.taskId.length < 1 || d.taskId.length > 128) refuse('taskId must be a string of 1-128 characters');
  if (d.params !== COMMITTEE_PARAMS_ID) refuse(`params must be ${COMMITTEE_PARAMS_ID}`);
  if (typeof d.createdAt !== 'string' || Number.isNaN(Date.parse(d.createdAt))) refuse('createdAt must be an ISO-8601 time');

  // Committee: indices 1..n in order, distinct keys, each key 32 bytes.
  const committee = d.committee;
  if (!Array.isArray(committee) || committee.length < 2 || committee.length > MAX_COMMITTEE_SIZE) {
    refuse(`committee must have 2-${MAX_COMMITTEE_SIZE} members`);
  }
  const n = committee.length;
  const fingerprints: string[] = [];
  const seenKeys = new Set<string>();
  committee.forEach((member: unknown, i: number) => {
    const m = member as Partial<Record<keyof CommitteeMember, unknown>> | null;
    if (typeof m !== 'object' || m === null) refuse(`committee[${i}] is not an object`);
    for (const key of Object.keys(m)) if (!['index', 'address', 'sealingKey', 'signingKey'].includes(key)) refuse(`committee[${i}] has unknown field ${key}`);
    if (m.index !== i + 1) refuse(`committee[${i}].index must be ${i + 1}`);
    if (typeof m.address !== 'string' || m.address.length < 1 || m.address.length > 256) refuse(`committee[${i}].address must be a string of 1-256 characters`);
    let sealing: Uint8Array;
    let signing: Uint8Array;
    try {
      sealing = fromBase64(m.sealingKey as string, `committee[${i}].sealingKey`, 32);
      signing = fromBase64(m.signingKey as string, `committee[${i}].signingKey`, 32);
    } catch (e) {
      refuse((e as Error).message);
    }
    for (const key of [m.sealingKey as string, m.signingKey as string]) {
      if (seenKeys.has(key)) refuse(`committee[${i}] reuses a key of another member`);
      seenKeys.add(key);
    }
    fingerprints.push(custodianFingerprint(signing, sealing));
  });

  // Threshold and collusion bound (design note, "Collusion bound").
  const t = d.threshold;
  const minThreshold = Math.max(2, floors.minThreshold ?? 2);
  if (!isInt(t, minThreshold, n)) refuse(`threshold must be an integer in [${minThreshold}, n = ${n}], got ${String(t)}`);
  const maxC = 2 * t - n - 1;
  if (!isInt(d.corruptTolerated, 0)) refuse('corruptTolerated must be an integer >= 0');
  if (d.corruptTolerated > maxC) {
    refuse(`corruptTolerated ${d.corruptTolerated} exceeds 2t - n - 1 = ${maxC}: two quorums could then decrypt D and D minus one device`);
  }

  // Devices and share modulus.
  if (!isInt(d.minDevices, 1)) refuse('minDevices must be an integer >= 1');
  if (d.minDevices < floors.minDevices) refuse(`minDevices ${d.minDevices} is below the floor ${floors.minDevices}`);
  if (!isInt(d.maxDevices, d.minDevices)) refuse('maxDevices must be an integer >= minDevices');
  if (d.shareModulus !== COMMITTEE_SHARE_MODULUS) refuse(`shareModulus must be ${COMMITTEE_SHARE_MODULUS} for ${COMMITTEE_PARAMS_ID}`);
  if (2 * d.maxDevices >= d.shareModulus) {
    refuse(`shareModulus ${d.shareModulus} cannot hold |D| up to ${d.maxDevices}: the sum of ternary secrets needs 2·maxDevices < p`);
  }
  if (!isInt(d.maxRounds, 1, 0xffff_ffff)) refuse('maxRounds must be an integer in [1, 2^32)');
  if (floors.maxRounds !== undefined && d.maxRounds > floors.maxRounds) refuse(`maxRounds ${d.maxRounds} exceeds the cap ${floors.maxRounds}`);

  // Encoding: the decoded sum must fit, and Δ/2 must dominate the noise and rounding sums.
  const enc = d.encoding as Partial<Record<keyof DescriptorEncoding, unknown>> | null | undefined;
  if (typeof enc !== 'object' || enc === null) refuse('encoding must be an object');
  for (const key of Object.keys(enc)) if (!['deltaBits', 'clipMaxAbs', 'step', 'weightCap', 'c0Bits'].includes(key)) refuse(`encoding has unknown field ${key}`);
  if (enc.c0Bits !== undefined && enc.c0Bits !== 36 && enc.c0Bits !== 32 && enc.c0Bits !== 24 && enc.c0Bits !== 16) refuse('encoding.c0Bits must be 36, 32, 24 or 16 (or absent: 44)');
  const budget = encodingBudget(d.maxDevices, enc as DescriptorEncoding);
  if ('refusal' in budget) refuse(budget.refusal);
  const { maxAbsEncodedSum, encodedSumLimit, noiseMarginSigmas } = budget;

  // DP.
  if (d.dp === null) {
    if (floors.requireDp === true) refuse('differential privacy is required');
  } else {
    const dp = d.dp as Partial<Record<keyof DescriptorDp, unknown>> | undefined;
    if (typeof dp !== 'object') refuse('dp must be null or an object');
    for (const key of Object.keys(dp)) if (!['mechanism', 'clipNorm', 'noiseMultiplier', 'colludingDevices', 'delta'].includes(key)) refuse(`dp has unknown field ${key}`);
    if (dp.mechanism !== 'distributed-discrete-gaussian') refuse('dp.mechanism must be distributed-discrete-gaussian');
    if (!isPositiveFinite(dp.clipNorm) || !isPositiveFinite(dp.noiseMultiplier)) refuse('dp.clipNorm and dp.noiseMultiplier must be positive');
    if (!isInt(dp.colludingDevices, 0) || dp.colludingDevices >= d.minDevices) refuse('dp.colludingDevices must be an integer in [0, minDevices)');
    if (!(typeof dp.delta === 'number' && dp.delta > 0 && dp.delta < 1)) refuse('dp.delta must be in (0, 1)');
  }

  // Authority key and pinned committee.
  let authority: Uint8Array;
  try {
    authority = fromBase64(d.authorityKey as string, 'authorityKey', 32);
  } catch (e) {
    refuse((e as Error).message);
  }
  if (floors.authorityKey !== undefined && !bytesEqual(authority, fromBase64(floors.authorityKey, 'floors.authorityKey', 32))) {
    refuse('authorityKey is not the pinned enrolment authority');
  }
  if (floors.pinnedFingerprints !== undefined) {
    const pinned = new Set(floors.pinnedFingerprints.map((f) => f.toLowerCase()));
    const actual = new Set(fingerprints);
    if (pinned.size !== actual.size || fingerprints.some((f) => !pinned.has(f))) {
      refuse('the committee does not match the pinned custodian fingerprints');
    }
  }

  return {
    descriptorHash: descriptorHashHex(descriptor),
    committeeSize: n,
    maxCorruptTolerated: maxC,
    livenessSlack: n - t,
    maxAbsEncodedSum,
    encodedSumLimit,
    noiseMarginSigmas,
    c0Bits: (enc.c0Bits as C0Bits | undefined) ?? 44,
  };
}

/** Parses a descriptor hash given as 64 hex digits. */
export function parseDescriptorHash(hex: string): Uint8Array {
  return fromHex(hex, 'descriptorHash', 32);
}

/** The committee member with `index`, or a `CryptoError('invalid_argument')`. */
export function committeeMember(descriptor: TaskDescriptor, index: number): CommitteeMember {
  const member = descriptor.committee[index - 1];
  if (member === undefined || member.index !== index) throw new CryptoError('invalid_argument', `no committee member with index ${index}`);
  return member;
}

/**
 * The smallest deltaBits whose Δ/2 is at least 12 noise standard deviations of the error sum
 * over `maxDevices` devices (the margin {@link validateDescriptor} requires). Each device's
 * error coefficients have σ ≈ 3.24, so the sum over |D| has σ·√|D|.
 */
export function minimumDeltaBits(maxDevices: number): number {
  if (!isInt(maxDevices, 1)) throw new CryptoError('invalid_argument', 'maxDevices must be an integer >= 1');
  return Math.ceil(Math.log2(2 * 12 * COMMITTEE_NOISE_SIGMA * Math.sqrt(maxDevices)));
}

/** The largest deltaBits whose decodable sum, floor((q - 1) / 2 / Δ) - 1, holds `maxAbsEncodedSum` (the bound {@link validateDescriptor} checks). */
function maximumDeltaBits(maxAbsEncodedSum: number): number {
  let bits = 43;
  while (bits > 1 && Math.floor((COMMITTEE_Q - 1) / 2 / 2 ** bits) - 1 < maxAbsEncodedSum) bits--;
  return bits;
}

/** Options of {@link buildTaskDescriptor}. */
export interface BuildTaskDescriptorOptions {
  readonly taskId: string;
  /** Custodians in index order: address and raw public keys. */
  readonly committee: readonly { readonly address: string; readonly sealingPublicKey: Uint8Array; readonly signingPublicKey: Uint8Array }[];
  readonly threshold: number;
  /** Default: the largest the threshold allows, 2t - n - 1 (at least 0). */
  readonly corruptTolerated?: number;
  readonly minDevices: number;
  /** Default: 1000, capped to (p - 1) / 2. */
  readonly maxDevices?: number;
  readonly maxRounds: number;
  /**
   * Default: deltaBits = {@link minimumDeltaBits}(maxDevices), clipMaxAbs 1, step 2^-13, weightCap
   * 1, exact c0 (c0Bits 44 says the same). With c0Bits 36, 32, 24 or 16 and no deltaBits: the largest Δ
   * the sum bound allows (the most room for the rounding; {@link validateDescriptor} says whether it
   * suffices). The narrowest width that fits is {@link chooseC0Width}'s to find (the enrolment
   * authority's descriptor builder applies it when no width is given).
   */
  readonly encoding?: Partial<DescriptorEncoding>;
  /** Default null. */
  readonly dp?: DescriptorDp | null;
  /** Raw Ed25519 public key of the enrolment authority. */
  readonly authorityPublicKey: Uint8Array;
  /** Default: now. */
  readonly createdAt?: Date;
}

/**
 * The width policy: the c0 width and Δ for a task of up to `maxDevices` devices with `encoding`'s
 * clip, step and weight cap (defaults as in {@link buildTaskDescriptor}). An explicit
 * `encoding.c0Bits` is kept (44: the exact c0); without one, the narrowest of 16, 24, 32 and 36 bits
 * whose worst-case rounding passes the budget {@link validateDescriptor} checks at maxDevices (with
 * the largest Δ the sum bound allows, or the given deltaBits), else the exact c0. Example (step
 * 2^-13, clip 1, weightCap 1): 24 bits up to 31 devices, 32 bits up to 511, 36 up to 2,034, exact beyond.
 */
export function chooseC0Width(maxDevices: number, encoding: Partial<DescriptorEncoding> = {}): { readonly c0Bits: C0Bits; readonly deltaBits: number } {
  const clipMaxAbs = encoding.clipMaxAbs ?? 1;
  const step = encoding.step ?? 2 ** -13;
  const weightCap = encoding.weightCap ?? 1;
  const exactDeltaBits = () => encoding.deltaBits ?? minimumDeltaBits(maxDevices);
  if (encoding.c0Bits === 44) return { c0Bits: 44, deltaBits: exactDeltaBits() };
  // A compressed c0 takes the largest Δ the sum bound allows: the most room for the rounding.
  const deltaBits = encoding.deltaBits ?? maximumDeltaBits(maxDevices * weightCap * Math.floor(clipMaxAbs / step + 0.5));
  if (encoding.c0Bits !== undefined) return { c0Bits: encoding.c0Bits, deltaBits };
  for (const c0Bits of [16, 24, 32, 36] as const) {
    if (!('refusal' in encodingBudget(maxDevices, { clipMaxAbs, step, weightCap, deltaBits, c0Bits }))) return { c0Bits, deltaBits };
  }
  return { c0Bits: 44, deltaBits: exactDeltaBits() };
}

/** Assembles a version-1 descriptor (it is not validated here: call {@link validateDescriptor}). */
export function buildTaskDescriptor(options: BuildTaskDescriptorOptions): TaskDescriptor {
  const n = options.committee.length;
  const maxDevices = options.maxDevices ?? Math.min(1000, (COMMITTEE_SHARE_MODULUS - 1) / 2 - 1);
  const { c0Bits, deltaBits } = chooseC0Width(maxDevices, { ...options.encoding, c0Bits: options.encoding?.c0Bits ?? 44 });
  return {
    version: 1,
    taskId: options.taskId,
    params: COMMITTEE_PARAMS_ID,
    committee: options.committee.map((m, i) => ({
      index: i + 1,
      address: m.address,
      sealingKey: toBase64(m.sealingPublicKey),
      signingKey: toBase64(m.signingPublicKey),
    })),
    threshold: options.threshold,
    corruptTolerated: options.corruptTolerated ?? Math.max(0, 2 * options.threshold - n - 1),
    minDevices: options.minDevices,
    maxDevices,
    shareModulus: COMMITTEE_SHARE_MODULUS,
    maxRounds: options.maxRounds,
    encoding: {
      deltaBits,
      clipMaxAbs: options.encoding?.clipMaxAbs ?? 1,
      step: options.encoding?.step ?? 2 ** -13,
      weightCap: options.encoding?.weightCap ?? 1,
      ...(c0Bits !== 44 && { c0Bits }),
    },
    dp: options.dp ?? null,
    authorityKey: toBase64(options.authorityPublicKey),
    createdAt: (options.createdAt ?? new Date()).toISOString(),
  };
}
