/**
 * Custodian answers (design note, steps 5-6 and "Answers are cached bytes"). For (task, round,
 * D) a custodian returns the sum over D of its Shamir shares (N × u16 LE, 4 KB) with an Ed25519
 * signature over the canonical bytes of everything else; shareSumSha256 binds the sum. The
 * ledger keeps the signed answer without the sum.
 *
 * hash(D) = SHA-256("veil/D/v1" || the 32-byte manifest digests of D, sorted bytewise, no
 * duplicates): it covers (device, H(c0), H(each share)) of every member, so a coordinator cannot
 * swap in a retried upload's share without changing hash(D).
 * Answer signature: Ed25519 over "veil/answer/v1" || canonical answer bytes (RFC 8785).
 */
import { CryptoError } from '../errors.js';
import { bytesEqual, compareBytes, concatBytes, fromBase64, fromHex, sha256, toBase64, toHex, utf8 } from './bytes.js';
import { canonicalBytes } from './canonical.js';
import { COMMITTEE_RING_DEGREE, COMMITTEE_SHARE_MODULUS, committeeMember, descriptorHash as hashDescriptor, type TaskDescriptor } from './descriptor.js';
import { ed25519Sign, ed25519Verify, type Ed25519PrivateKey } from './keys.js';

const D_DOMAIN = utf8('veil/D/v1');
const ANSWER_DOMAIN = utf8('veil/answer/v1');
/** Bytes of one share or share sum: N coefficients as u16 little-endian. */
export const SHARE_BYTES = COMMITTEE_RING_DEGREE * 2;

/** A custodian's answer for (task, round, D), without the share sum itself. */
export interface CustodianAnswer {
  /** hex SHA-256 of the task descriptor. */
  readonly descriptorHash: string;
  readonly round: number;
  /** hex hash(D). */
  readonly hashD: string;
  /** |D|. */
  readonly count: number;
  readonly custodianIndex: number;
  /** hex SHA-256 of the share-sum bytes. */
  readonly shareSumSha256: string;
}

/** An answer with the custodian's signature. */
export interface SignedCustodianAnswer {
  readonly answer: CustodianAnswer;
  /** base64 Ed25519 signature over "veil/answer/v1" || canonical answer bytes. */
  readonly signature: string;
}

/** hash(D) from the manifest digests of D. Throws `CryptoError('invalid_argument')` for duplicates or bad lengths. */
export function hashD(manifestDigests: readonly Uint8Array[]): Uint8Array {
  const sorted = [...manifestDigests].sort(compareBytes);
  for (let i = 0; i < sorted.length; i++) {
    if (sorted[i]!.length !== 32) throw new CryptoError('invalid_argument', 'a manifest digest is 32 bytes');
    if (i > 0 && compareBytes(sorted[i - 1]!, sorted[i]!) === 0) throw new CryptoError('invalid_argument', 'D lists one manifest twice');
  }
  return sha256(D_DOMAIN, ...sorted);
}

/** Canonical bytes of the signed part of an answer. */
export function encodeAnswer(answer: CustodianAnswer): Uint8Array {
  return canonicalBytes(answer);
}

/** The custodian signs an answer, with its raw signing key or the key parsed once ({@link Ed25519PrivateKey}). */
export function signAnswer(answer: CustodianAnswer, signingPrivateKey: Uint8Array | Ed25519PrivateKey): SignedCustodianAnswer {
  return { answer, signature: toBase64(ed25519Sign(signingPrivateKey, concatBytes(ANSWER_DOMAIN, encodeAnswer(answer)))) };
}

/** Share (or share sum) coefficients in [0, p) to N × u16 LE bytes. */
export function encodeShareBytes(coefficients: ArrayLike<number>): Uint8Array {
  if (coefficients.length !== COMMITTEE_RING_DEGREE) throw new CryptoError('invalid_argument', `a share has ${COMMITTEE_RING_DEGREE} coefficients`);
  const out = new Uint8Array(SHARE_BYTES);
  for (let i = 0; i < COMMITTEE_RING_DEGREE; i++) {
    const c = coefficients[i]!;
    if (!Number.isInteger(c) || c < 0 || c >= COMMITTEE_SHARE_MODULUS) throw new CryptoError('invalid_argument', 'share coefficient outside [0, p)');
    out[2 * i] = c & 0xff;
    out[2 * i + 1] = c >>> 8;
  }
  return out;
}

/**
 * N × u16 LE bytes to share coefficients. Throws `CryptoError('invalid_payload')` for a wrong
 * length or a coefficient >= p (a malformed or malicious share).
 */
export function decodeShareBytes(bytes: Uint8Array): Uint16Array {
  if (bytes.length !== SHARE_BYTES) throw new CryptoError('invalid_payload', `a share is ${SHARE_BYTES} bytes, got ${bytes.length}`);
  const out = new Uint16Array(COMMITTEE_RING_DEGREE);
  if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) {
    // The wire's u16 LE is the host's layout: one copy instead of assembling each value from two
    // bytes (a custodian decodes every share it opens).
    out.set(new Uint16Array(bytes.buffer, bytes.byteOffset, COMMITTEE_RING_DEGREE));
  } else {
    for (let i = 0; i < COMMITTEE_RING_DEGREE; i++) out[i] = bytes[2 * i]! | (bytes[2 * i + 1]! << 8);
  }
  for (let i = 0; i < COMMITTEE_RING_DEGREE; i++) {
    if (out[i]! >= COMMITTEE_SHARE_MODULUS) {
      out.fill(0);
      throw new CryptoError('invalid_payload', 'share coefficient outside [0, p)');
    }
  }
  return out;
}

/** True on a little-endian host, where a Uint16Array over the wire bytes reads u16 LE. */
const LITTLE_ENDIAN = new Uint8Array(Uint16Array.of(1).buffer)[0] === 1;

/** What {@link verifyAnswer} checks against. */
export interface AnswerCheckOptions {
  readonly descriptor: TaskDescriptor;
  /** Precomputed descriptor hash. Default: computed. */
  readonly descriptorHash?: Uint8Array;
  readonly round: number;
  /** The hash(D) the coordinator asked about. */
  readonly hashD: Uint8Array;
  /** |D|. */
  readonly count: number;
  /** The share-sum bytes that came with the answer; checked against shareSumSha256 when given. */
  readonly shareSum?: Uint8Array;
}

/**
 * Checks a custodian answer: it names this descriptor, round, hash(D) and |D|, comes from a
 * committee member (by index) whose signing key verifies the signature, and (when given) the
 * share-sum bytes hash to shareSumSha256 and decode. Throws `CryptoError('invalid_signature')`
 * for a forged or tampered answer, `parameter_mismatch` for an answer to another question,
 * `invalid_payload` for malformed fields.
 */
export function verifyAnswer(signed: SignedCustodianAnswer, options: AnswerCheckOptions): { readonly custodianIndex: number; readonly shareSum?: Uint16Array } {
  const a = signed?.answer as Partial<Record<keyof CustodianAnswer, unknown>> | undefined;
  if (typeof a !== 'object' || a === null) throw new CryptoError('invalid_payload', 'answer missing');
  const allowed = ['descriptorHash', 'round', 'hashD', 'count', 'custodianIndex', 'shareSumSha256'];
  for (const key of Object.keys(a)) if (!allowed.includes(key)) throw new CryptoError('invalid_payload', `answer has unknown field ${key}`);
  const expectedHash = options.descriptorHash ?? hashDescriptor(options.descriptor);
  if (!bytesEqual(fromHex(a.descriptorHash as string, 'answer.descriptorHash', 32, 'invalid_payload'), expectedHash)) {
    throw new CryptoError('parameter_mismatch', 'answer names another task descriptor');
  }
  if (a.round !== options.round) throw new CryptoError('parameter_mismatch', 'answer names another round');
  if (!bytesEqual(fromHex(a.hashD as string, 'answer.hashD', 32, 'invalid_payload'), options.hashD)) {
    throw new CryptoError('parameter_mismatch', 'answer is for another D');
  }
  if (a.count !== options.count) throw new CryptoError('parameter_mismatch', 'answer counts another |D|');
  if (typeof a.custodianIndex !== 'number') throw new CryptoError('invalid_payload', 'answer.custodianIndex missing');
  let member;
  try {
    member = committeeMember(options.descriptor, a.custodianIndex);
  } catch {
    throw new CryptoError('invalid_signature', `answer names custodian ${a.custodianIndex}, not a committee member`);
  }
  const shareSumSha256 = fromHex(a.shareSumSha256 as string, 'answer.shareSumSha256', 32, 'invalid_payload');
  let signature: Uint8Array;
  try {
    signature = fromBase64(signed.signature, 'answer signature', 64, 'invalid_payload');
  } catch {
    throw new CryptoError('invalid_signature', 'answer signature is malformed');
  }
  const key = fromBase64(member.signingKey, 'signingKey', 32);
  if (!ed25519Verify(key, concatBytes(ANSWER_DOMAIN, encodeAnswer(a as unknown as CustodianAnswer)), signature)) {
    throw new CryptoError('invalid_signature', `answer signature does not verify under custodian ${a.custodianIndex}'s key`);
  }
  if (options.shareSum === undefined) return { custodianIndex: a.custodianIndex };
  if (!bytesEqual(sha256(options.shareSum), shareSumSha256)) throw new CryptoError('invalid_signature', 'share sum does not match the signed shareSumSha256');
  return { custodianIndex: a.custodianIndex, shareSum: decodeShareBytes(options.shareSum) };
}

/** Builds the answer fields for a share sum (custodian side). */
export function buildAnswer(fields: { descriptorHash: Uint8Array; round: number; hashD: Uint8Array; count: number; custodianIndex: number; shareSum: Uint8Array }): CustodianAnswer {
  return {
    descriptorHash: toHex(fields.descriptorHash),
    round: fields.round,
    hashD: toHex(fields.hashD),
    count: fields.count,
    custodianIndex: fields.custodianIndex,
    shareSumSha256: toHex(sha256(fields.shareSum)),
  };
}

/** What a verified answer statement says (see {@link verifyAnswerStatement}). */
export interface AnswerStatement {
  readonly custodianIndex: number;
  readonly round: number;
  /** |D| the custodian counted. */
  readonly count: number;
  /** hex hash(D). */
  readonly hashD: string;
}

/**
 * Checks a stored answer (as a ledger or round summary keeps it, without the share sum) against
 * the task's descriptor: it names this descriptor and a committee member whose signing key
 * verifies the signature. Returns what the custodian attested. Throws `CryptoError` with
 * `invalid_signature` (forged, tampered or from a non-member) or `parameter_mismatch`
 * (another descriptor), `invalid_payload` for malformed fields. Auditors compare round and count
 * with the round they look at.
 */
export function verifyAnswerStatement(signed: SignedCustodianAnswer, options: { readonly descriptor: TaskDescriptor; readonly descriptorHash?: Uint8Array }): AnswerStatement {
  const a = signed?.answer as Partial<Record<keyof CustodianAnswer, unknown>> | undefined;
  if (typeof a !== 'object' || a === null) throw new CryptoError('invalid_payload', 'answer missing');
  if (typeof a.round !== 'number' || typeof a.count !== 'number' || typeof a.hashD !== 'string') throw new CryptoError('invalid_payload', 'answer fields missing');
  const hashD = fromHex(a.hashD, 'answer.hashD', 32, 'invalid_payload');
  const { custodianIndex } = verifyAnswer(signed, {
    descriptor: options.descriptor,
    ...(options.descriptorHash !== undefined && { descriptorHash: options.descriptorHash }),
    round: a.round,
    hashD,
    count: a.count,
  });
  return { custodianIndex, round: a.round, count: a.count, hashD: toHex(hashD) };
}
