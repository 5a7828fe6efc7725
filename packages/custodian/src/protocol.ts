/**
 * The committee protocol as the custodian and the committee client see it: wire bytes (canonical
 * JSON and raw signatures, see proto/veil/v1/custodian.proto) in, checked views out, every
 * refusal as a {@link CustodianError}. The cryptography itself is `@veil/crypto`'s committee
 * module (descriptor, manifest, answer, RFC 9180 HPKE sealing); this file only adapts it.
 */
import {
  CryptoError,
  COMMITTEE_RING_DEGREE,
  buildAnswer,
  canonicalBytes,
  encodeAnswer,
  hashD as cryptoHashD,
  openShare as cryptoOpenShare,
  signAnswer as cryptoSignAnswer,
  validateDescriptor,
  verifyAnswer as cryptoVerifyAnswer,
  verifyDescriptorSignature,
  verifyManifest,
  ed25519Verify,
  type CustodianAnswer,
  type DescriptorFloors,
  type SignedCustodianAnswer,
  type TaskDescriptor,
  type CertificateCache,
  type UploadManifest,
  type X25519PrivateKey,
  type Ed25519PrivateKey,
} from '@veil/crypto';
import { CustodianError } from './errors.js';
import { bytesEqual, fromBase64, sha256, toBase64, toHex } from './bytes.js';

export { bytesEqual, sha256, toHex };
export type { DescriptorFloors };

/** A committee member with decoded keys. */
export interface CommitteeMemberView {
  readonly index: number;
  readonly address: string;
  readonly sealingKey: Uint8Array;
  readonly signingKey: Uint8Array;
}

/** A parsed (and, from {@link openDescriptor}, verified) task descriptor. */
export interface TaskDescriptorView {
  readonly descriptor: TaskDescriptor;
  readonly taskId: string;
  /** SHA-256 of the canonical bytes (32 bytes). */
  readonly hash: Uint8Array;
  readonly hashHex: string;
  readonly threshold: number;
  readonly minDevices: number;
  readonly maxDevices: number;
  readonly maxRounds: number;
  readonly shareModulus: number;
  readonly ringDegree: number;
  readonly authorityKey: Uint8Array;
  readonly committee: readonly CommitteeMemberView[];
}

const decoder = new TextDecoder('utf-8', { fatal: true });

/** Parses canonical JSON bytes; refuses bytes that are not exactly the canonical encoding. */
function parseCanonical(bytes: Uint8Array, what: string, code: 'invalid_descriptor' | 'invalid_manifest' | 'forged_answer'): unknown {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    throw new CustodianError(code, `${what} is not UTF-8 JSON`);
  }
  let canonical: Uint8Array;
  try {
    canonical = canonicalBytes(value);
  } catch {
    throw new CustodianError(code, `${what} cannot be canonically encoded`);
  }
  if (!bytesEqual(canonical, bytes)) throw new CustodianError(code, `${what} is not in canonical form (RFC 8785)`);
  return value;
}

function view(descriptor: TaskDescriptor, hash: Uint8Array): TaskDescriptorView {
  return {
    descriptor,
    taskId: descriptor.taskId,
    hash,
    hashHex: toHex(hash),
    threshold: descriptor.threshold,
    minDevices: descriptor.minDevices,
    maxDevices: descriptor.maxDevices,
    maxRounds: descriptor.maxRounds,
    shareModulus: descriptor.shareModulus,
    ringDegree: COMMITTEE_RING_DEGREE,
    authorityKey: fromBase64(descriptor.authorityKey, 'authorityKey', 32),
    committee: descriptor.committee.map((m) => ({
      index: m.index,
      address: m.address,
      sealingKey: fromBase64(m.sealingKey, 'sealingKey', 32),
      signingKey: fromBase64(m.signingKey, 'signingKey', 32),
    })),
  };
}

/**
 * Parses, validates (against `floors`: t >= 2, c <= 2t - n - 1, minimum |D|, share modulus,
 * round cap, ...) and verifies the enrolment authority's signature of a descriptor. The caller
 * still checks the authority key against its pinned keys.
 */
export function openDescriptor(bytes: Uint8Array, signature: Uint8Array, floors: DescriptorFloors): TaskDescriptorView {
  const descriptor = parseCanonical(bytes, 'the task descriptor', 'invalid_descriptor') as TaskDescriptor;
  try {
    validateDescriptor(descriptor, floors);
  } catch (error) {
    throw new CustodianError('invalid_descriptor', CryptoError.from(error).message);
  }
  if (signature.length !== 64 || !verifyDescriptorSignature({ descriptor, signature: toBase64(signature) })) {
    throw new CustodianError('invalid_descriptor', "the task descriptor is not signed by the enrolment authority it names");
  }
  return view(descriptor, sha256(bytes));
}

/**
 * Parses the coordinator's own descriptor: its shape (with the weakest floors) and the signature
 * of the authority it names, so that a wrong descriptor fails at start rather than at every
 * custodian. Custodians do the real checks against their own floors and pinned authorities.
 */
export function openDescriptorForCoordinator(bytes: Uint8Array, signature: Uint8Array): TaskDescriptorView {
  return openDescriptor(bytes, signature, { minDevices: 1 });
}

/** A manifest that verified. */
export interface ManifestView {
  readonly deviceId: string;
  readonly devicePublicKey: Uint8Array;
  /** manifestDigest (32 bytes). */
  readonly digest: Uint8Array;
  /** Element i-1: SHA-256 of custodian i's sealed share. */
  readonly shareSha256: readonly Uint8Array[];
}

/**
 * Verifies one device's manifest for (descriptor, round): certified by the descriptor's
 * authority, unexpired at `nowMs`, signed by the certified key. Refusals are `invalid_manifest`.
 * `certificateCache`: certificates verified in earlier requests (@veil/crypto verifyManifest; a
 * device's certificate is the same every round, its expiry is checked every time).
 */
export function openManifest(
  bytes: Uint8Array,
  signature: Uint8Array,
  descriptor: TaskDescriptorView,
  round: number,
  nowMs: number,
  certificateCache?: CertificateCache,
): ManifestView {
  const manifest = parseCanonical(bytes, 'a device manifest', 'invalid_manifest') as UploadManifest;
  try {
    const checked = verifyManifest(
      // The signature as received (no base64 round trip), the authority key as decoded with the descriptor.
      { manifest, signatureBytes: signature },
      // parseCanonical refused bytes other than the manifest's canonical encoding: hashed as they are.
      {
        descriptor: descriptor.descriptor,
        descriptorHash: descriptor.hash,
        authorityKey: descriptor.authorityKey,
        round,
        nowMs,
        canonicalBytes: bytes,
        ...(certificateCache !== undefined && { certificateCache }),
      },
    );
    return { deviceId: checked.deviceId, devicePublicKey: checked.devicePublicKey, digest: checked.manifestDigest, shareSha256: checked.shareSha256 };
  } catch (error) {
    throw new CustodianError('invalid_manifest', `device manifest refused: ${CryptoError.from(error).message}`);
  }
}

/** manifestDigest of canonical manifest bytes (coordinator side; no verification). */
export function manifestDigest(bytes: Uint8Array): Uint8Array {
  return sha256(bytes);
}

/** hash(D) of the manifest digests; duplicates are refused. */
export function computeHashD(digests: readonly Uint8Array[]): Uint8Array {
  try {
    return cryptoHashD(digests);
  } catch (error) {
    const e = CryptoError.from(error);
    throw new CustodianError(/twice/.test(e.message) ? 'duplicate_device' : 'invalid_request', e.message);
  }
}

/** What {@link openShare} needs. */
export interface OpenShareInput {
  readonly descriptor: TaskDescriptorView;
  readonly round: number;
  readonly deviceId: string;
  readonly custodianIndex: number;
  /** Raw, or parsed once (@veil/crypto `prepareX25519PrivateKey`: the custodian opens every share with it). */
  readonly sealingPrivateKey: Uint8Array | X25519PrivateKey;
  /** Its public half (the custodian's key files are checked to match when read): HPKE's pkRm, not derived again per share. */
  readonly sealingPublicKey: Uint8Array;
  readonly sealed: Uint8Array;
}

/**
 * Opens a device's sealed share (RFC 9180 HPKE base mode) with associated data built here from
 * what was verified: (descriptor hash, round, device id, this custodian's index). The caller
 * erases the returned coefficients after use.
 */
export function openShare(input: OpenShareInput): Uint16Array {
  try {
    return cryptoOpenShare(
      input.sealingPrivateKey,
      { descriptorHash: input.descriptor.hash, round: input.round, deviceId: input.deviceId, custodianIndex: input.custodianIndex },
      input.sealed,
      { recipientPublicKey: input.sealingPublicKey },
    );
  } catch (error) {
    throw new CustodianError('invalid_share', `device ${input.deviceId}'s share for custodian ${input.custodianIndex} does not open: ${CryptoError.from(error).message}`);
  }
}

/** What {@link signAnswer} signs. */
export interface AnswerInput {
  readonly descriptor: TaskDescriptorView;
  readonly round: number;
  readonly hashD: Uint8Array;
  readonly count: number;
  readonly custodianIndex: number;
  readonly shareSum: Uint8Array;
  /** Raw, or parsed once (@veil/crypto `prepareEd25519PrivateKey`: the custodian signs every answer with it). */
  readonly signingPrivateKey: Uint8Array | Ed25519PrivateKey;
}

/** Signs an answer: statement = canonical answer bytes, signature = raw 64 bytes. */
export function signAnswer(input: AnswerInput): { statement: Uint8Array; signature: Uint8Array } {
  const answer = buildAnswer({
    descriptorHash: input.descriptor.hash,
    round: input.round,
    hashD: input.hashD,
    count: input.count,
    custodianIndex: input.custodianIndex,
    shareSum: input.shareSum,
  });
  const signed = cryptoSignAnswer(answer, input.signingPrivateKey);
  return { statement: encodeAnswer(answer), signature: fromBase64(signed.signature, 'signature', 64) };
}

/** The signed answer (for the ledger) from wire bytes that already verified. */
export function signedAnswerOf(statement: Uint8Array, signature: Uint8Array): SignedCustodianAnswer {
  return { answer: JSON.parse(decoder.decode(statement)) as CustodianAnswer, signature: toBase64(signature) };
}

/** What an answer must match. */
export interface AnswerExpectation {
  readonly descriptor: TaskDescriptorView;
  readonly round: number;
  readonly hashD: Uint8Array;
  readonly count: number;
  readonly custodianIndex: number;
}

/**
 * Checks an answer from custodian `expected.custodianIndex`: canonical statement, signed by that
 * committee member's key, naming this descriptor, round, hash of D, |D| and index, with a share
 * sum that hashes to the signed digest and decodes. Returns null when valid, else the reason.
 */
export function verifyAnswer(
  answer: { statement: Uint8Array; signature: Uint8Array; shareSum: Uint8Array },
  expected: AnswerExpectation,
): string | null {
  try {
    const parsed = parseCanonical(answer.statement, 'the answer statement', 'forged_answer') as CustodianAnswer;
    if (parsed.custodianIndex !== expected.custodianIndex) return `the answer is signed as custodian ${String(parsed.custodianIndex)}`;
    cryptoVerifyAnswer(
      { answer: parsed, signature: toBase64(answer.signature) },
      { descriptor: expected.descriptor.descriptor, descriptorHash: expected.descriptor.hash, round: expected.round, hashD: expected.hashD, count: expected.count, shareSum: answer.shareSum },
    );
    return null;
  } catch (error) {
    return error instanceof CustodianError ? error.message : CryptoError.from(error).message;
  }
}

/** Ed25519 verification (RFC 8032); false for malformed input. */
export function verifySignature(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  return ed25519Verify(publicKey, message, signature);
}
