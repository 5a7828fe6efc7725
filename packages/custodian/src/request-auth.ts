/**
 * How the coordinator authenticates to a custodian: an Ed25519 signature (RFC 8032) by the
 * coordinator's request key over the fields of a ShareSum header,
 *
 *   "veil/custodian-request/v1" || descriptorHash(32) || u32be(round) || hashD(32) ||
 *   u32be(deviceCount) || u8(custodianIndex) || u64be(issuedAtMs)
 *
 * Custodians hold only the public half. A signature also binds the header to one custodian and
 * one moment: a header for custodian 2 does not authenticate at custodian 3, and one older than
 * {@link REQUEST_MAX_SKEW_MS} is refused. Replaying a fresh header within that window gains
 * nothing: the answer for the same D is the same cached bytes, and a different D is refused.
 */
import { createHash } from 'node:crypto';

/** How far a header's `issuedAtMs` may be from the custodian's clock (5 minutes). */
export const REQUEST_MAX_SKEW_MS = 5 * 60_000;

const DOMAIN = Buffer.from('veil/custodian-request/v1', 'utf8');

/** The fields a coordinator signs. */
export interface RequestClaims {
  /** 32 bytes. */
  readonly descriptorHash: Uint8Array;
  readonly round: number;
  /** 32 bytes. */
  readonly hashD: Uint8Array;
  readonly deviceCount: number;
  /** 1..255 */
  readonly custodianIndex: number;
  readonly issuedAtMs: number;
}

/** The exact bytes signed for `claims`. Throws RangeError for out-of-range fields. */
export function requestSigningBytes(claims: RequestClaims): Uint8Array {
  const { descriptorHash, round, hashD, deviceCount, custodianIndex, issuedAtMs } = claims;
  if (descriptorHash.length !== 32) throw new RangeError('descriptorHash must be 32 bytes');
  if (hashD.length !== 32) throw new RangeError('hashD must be 32 bytes');
  if (!Number.isInteger(round) || round < 0 || round > 0xffff_ffff) throw new RangeError('round out of range');
  if (!Number.isInteger(deviceCount) || deviceCount < 0 || deviceCount > 0xffff_ffff) throw new RangeError('deviceCount out of range');
  if (!Number.isInteger(custodianIndex) || custodianIndex < 1 || custodianIndex > 255) throw new RangeError('custodianIndex out of range');
  if (!Number.isSafeInteger(issuedAtMs) || issuedAtMs < 0) throw new RangeError('issuedAtMs out of range');
  const out = Buffer.alloc(DOMAIN.length + 32 + 4 + 32 + 4 + 1 + 8);
  let o = DOMAIN.copy(out, 0);
  o += Buffer.from(descriptorHash).copy(out, o);
  o = out.writeUInt32BE(round, o);
  o += Buffer.from(hashD).copy(out, o);
  o = out.writeUInt32BE(deviceCount, o);
  o = out.writeUInt8(custodianIndex, o);
  out.writeBigUInt64BE(BigInt(issuedAtMs), o);
  return new Uint8Array(out);
}

/** hex SHA-256 of a coordinator request key, for logs and error messages. */
export function requestKeyId(publicKey: Uint8Array): string {
  return createHash('sha256').update(publicKey).digest('hex').slice(0, 16);
}

const STAGE_DOMAIN = Buffer.from('veil/custodian-stage/v1', 'utf8');

/** The fields a coordinator signs to open a staged request (the final D is not known yet). */
export interface StageClaims {
  /** 32 bytes. */
  readonly descriptorHash: Uint8Array;
  readonly round: number;
  /** 1..255 */
  readonly custodianIndex: number;
  readonly issuedAtMs: number;
}

/**
 * The exact bytes signed for a StageHeader: "veil/custodian-stage/v1" || descriptorHash(32) ||
 * u32be(round) || u8(custodianIndex) || u64be(issuedAtMs). Another domain than a ShareSum header's,
 * so neither signature stands in for the other. Throws RangeError for out-of-range fields.
 */
export function stageSigningBytes(claims: StageClaims): Uint8Array {
  const { descriptorHash, round, custodianIndex, issuedAtMs } = claims;
  if (descriptorHash.length !== 32) throw new RangeError('descriptorHash must be 32 bytes');
  if (!Number.isInteger(round) || round < 0 || round > 0xffff_ffff) throw new RangeError('round out of range');
  if (!Number.isInteger(custodianIndex) || custodianIndex < 1 || custodianIndex > 255) throw new RangeError('custodianIndex out of range');
  if (!Number.isSafeInteger(issuedAtMs) || issuedAtMs < 0) throw new RangeError('issuedAtMs out of range');
  const out = Buffer.alloc(STAGE_DOMAIN.length + 32 + 4 + 1 + 8);
  let o = STAGE_DOMAIN.copy(out, 0);
  o += Buffer.from(descriptorHash).copy(out, o);
  o = out.writeUInt32BE(round, o);
  o = out.writeUInt8(custodianIndex, o);
  out.writeBigUInt64BE(BigInt(issuedAtMs), o);
  return new Uint8Array(out);
}
