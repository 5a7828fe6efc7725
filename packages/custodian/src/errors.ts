/**
 * Every failure `@veil/custodian` reports. The union is closed; {@link grpcStatusOf} maps each
 * code to one gRPC status (the only transport table; the domain code never imports grpc-js).
 *
 * Custodian (server) side:
 * - `unauthenticated`: the request header's coordinator signature is missing, wrong or stale.
 * - `invalid_request`: malformed request (framing, lengths, counts that do not match, hash of D
 *   that does not match the manifests sent).
 * - `request_too_large`: more devices, or larger messages, than the documented limits.
 * - `invalid_descriptor`: the task descriptor fails validation (t < 2, c > 2t - n - 1, share
 *   modulus too small, minimum |D| or round cap outside this custodian's floors, not signed by
 *   a pinned enrolment authority, committee without this custodian's keys at the given index).
 * - `descriptor_changed`: this custodian already serves the task under another descriptor.
 * - `round_cap_exceeded`: the round is past the descriptor's `maxRounds`.
 * - `below_minimum`: |D| below the task's minimum or this custodian's floor.
 * - `other_set_answered`: this (task, round) was already answered for a different D.
 * - `invalid_manifest`: a device manifest is malformed, for another task/round, not signed by a
 *   key certified by the task's enrolment authority, expired, or does not commit to the share.
 * - `duplicate_device`: the same device (id or key) appears twice in D.
 * - `invalid_share`: a sealed share does not open (HPKE) with the associated data this custodian
 *   builds, or its plaintext is not a share (length, values >= p).
 * - `state_unavailable`: the durable state could not be read or written (nothing was answered).
 * - `invalid_key_material`: a key file is missing, malformed, or has unsafe permissions.
 *
 * Committee client (coordinator) side:
 * - `forged_answer`: an answer's signature, statement or share sum does not verify.
 * - `unavailable`: a custodian could not be reached or did not answer before the deadline.
 * - `not_enough_answers`: fewer than t custodians gave a valid answer.
 *
 * - `internal`: anything else (a bug).
 */
export type CustodianErrorCode =
  | 'unauthenticated'
  | 'invalid_request'
  | 'request_too_large'
  | 'invalid_descriptor'
  | 'descriptor_changed'
  | 'round_cap_exceeded'
  | 'below_minimum'
  | 'other_set_answered'
  | 'invalid_manifest'
  | 'duplicate_device'
  | 'invalid_share'
  | 'state_unavailable'
  | 'invalid_key_material'
  | 'forged_answer'
  | 'unavailable'
  | 'not_enough_answers'
  | 'internal';

/** gRPC status numbers (grpc/doc/statuscodes.md); kept here so the domain needs no grpc-js. */
export const GRPC_STATUS = {
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  ALREADY_EXISTS: 6,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const STATUS: Readonly<Record<CustodianErrorCode, number>> = {
  unauthenticated: GRPC_STATUS.UNAUTHENTICATED,
  invalid_request: GRPC_STATUS.INVALID_ARGUMENT,
  request_too_large: GRPC_STATUS.RESOURCE_EXHAUSTED,
  invalid_descriptor: GRPC_STATUS.FAILED_PRECONDITION,
  descriptor_changed: GRPC_STATUS.FAILED_PRECONDITION,
  round_cap_exceeded: GRPC_STATUS.FAILED_PRECONDITION,
  below_minimum: GRPC_STATUS.FAILED_PRECONDITION,
  other_set_answered: GRPC_STATUS.FAILED_PRECONDITION,
  invalid_manifest: GRPC_STATUS.PERMISSION_DENIED,
  duplicate_device: GRPC_STATUS.INVALID_ARGUMENT,
  invalid_share: GRPC_STATUS.INVALID_ARGUMENT,
  state_unavailable: GRPC_STATUS.UNAVAILABLE,
  invalid_key_material: GRPC_STATUS.INTERNAL,
  forged_answer: GRPC_STATUS.PERMISSION_DENIED,
  unavailable: GRPC_STATUS.UNAVAILABLE,
  not_enough_answers: GRPC_STATUS.UNAVAILABLE,
  internal: GRPC_STATUS.INTERNAL,
};

const CODES: ReadonlySet<string> = new Set(Object.keys(STATUS));

/** The one error class of `@veil/custodian`. `cause` is for logs only, never for the wire. */
export class CustodianError extends Error {
  override readonly name = 'CustodianError';
  readonly code: CustodianErrorCode;

  constructor(code: CustodianErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /** Converts anything thrown: a `CustodianError` unchanged, anything else as `fallbackCode` with the original as `cause`. */
  static from(reason: unknown, fallbackCode: CustodianErrorCode = 'internal'): CustodianError {
    if (reason instanceof CustodianError) return reason;
    const message = reason instanceof Error ? reason.message : String(reason);
    const code = typeof reason === 'object' && reason !== null ? (reason as { code?: unknown }).code : undefined;
    if (typeof code === 'string' && CODES.has(code)) return new CustodianError(code as CustodianErrorCode, message, { cause: reason });
    return new CustodianError(fallbackCode, message, { cause: reason });
  }

  /** The gRPC status this error is sent with. */
  get grpcStatus(): number {
    return grpcStatusOf(this.code);
  }
}

/** True for a {@link CustodianErrorCode} (e.g. read back from the `veil-error-code` trailer). */
export function isCustodianErrorCode(value: unknown): value is CustodianErrorCode {
  return typeof value === 'string' && CODES.has(value);
}

/** The trailing-metadata key a custodian puts its error code in. */
export const ERROR_CODE_METADATA_KEY = 'veil-error-code';

/** The gRPC status for a code (the one mapping table). */
export function grpcStatusOf(code: CustodianErrorCode): number {
  return STATUS[code];
}

/** The text sent over the wire: the message, except for `internal`, whose details are hidden. */
export function wireMessage(error: CustodianError): string {
  return error.code === 'internal' || error.code === 'state_unavailable' ? `custodian ${error.code.replace('_', ' ')}` : error.message;
}
