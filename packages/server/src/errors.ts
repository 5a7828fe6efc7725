import { status as GrpcStatus } from '@grpc/grpc-js';

/**
 * The closed set of error codes of the coordinator. Each maps to exactly one
 * gRPC status and one HTTP status (the two tables below).
 */
export type VeilErrorCode =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'already_exists'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'rate_limited'
  | 'deadline_exceeded'
  | 'aborted'
  | 'unavailable'
  | 'internal';

const GRPC: Record<VeilErrorCode, GrpcStatus> = {
  invalid_argument: GrpcStatus.INVALID_ARGUMENT,
  unauthenticated: GrpcStatus.UNAUTHENTICATED,
  permission_denied: GrpcStatus.PERMISSION_DENIED,
  not_found: GrpcStatus.NOT_FOUND,
  already_exists: GrpcStatus.ALREADY_EXISTS,
  failed_precondition: GrpcStatus.FAILED_PRECONDITION,
  resource_exhausted: GrpcStatus.RESOURCE_EXHAUSTED,
  rate_limited: GrpcStatus.RESOURCE_EXHAUSTED,
  deadline_exceeded: GrpcStatus.DEADLINE_EXCEEDED,
  aborted: GrpcStatus.ABORTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  internal: GrpcStatus.INTERNAL,
};

const HTTP: Record<VeilErrorCode, number> = {
  invalid_argument: 400,
  unauthenticated: 401,
  permission_denied: 403,
  not_found: 404,
  already_exists: 409,
  failed_precondition: 409,
  resource_exhausted: 413,
  rate_limited: 429,
  deadline_exceeded: 504,
  aborted: 409,
  unavailable: 503,
  internal: 500,
};

/**
 * The one error type of the coordinator. `message` is safe to send to the
 * peer (except for `internal`, whose text is hidden); `cause` is only logged.
 */
export class VeilError extends Error {
  override readonly name = 'VeilError';
  readonly code: VeilErrorCode;
  /** `rate_limited`: how long the peer should wait, ms (sent as Retry-After / `retry-after` metadata, in seconds). */
  readonly retryAfterMs: number | undefined;

  constructor(code: VeilErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** Whole seconds to wait, at least 1 (the Retry-After value), or undefined. */
  get retryAfterSeconds(): number | undefined {
    return this.retryAfterMs === undefined ? undefined : Math.max(1, Math.ceil(this.retryAfterMs / 1000));
  }

  get grpcStatus(): GrpcStatus {
    return GRPC[this.code];
  }

  get httpStatus(): number {
    return HTTP[this.code];
  }

  /** The text a peer may see: the message, or a generic one for internal errors. */
  get publicMessage(): string {
    return this.code === 'internal' ? 'internal error' : this.message;
  }

  /** Wraps anything thrown into a VeilError; unknown errors become `internal` with the original as cause. */
  static from(error: unknown): VeilError {
    if (error instanceof VeilError) return error;
    return new VeilError('internal', error instanceof Error ? error.message : String(error), { cause: error });
  }
}
