/**
 * The closed set of error codes of the coordinator's domain. No transport
 * here: each code maps to exactly one gRPC status (`grpc/errors.ts`) and one
 * HTTP status (`http/errors.ts`), and the code itself travels to devices in
 * the `veil-error-code` trailer.
 */
export type VeilErrorCode =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'already_exists'
  /** This device's identical update was already accepted for the round: a retry after a lost acknowledgement counted. */
  | 'already_accepted'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'rate_limited'
  | 'deadline_exceeded'
  | 'aborted'
  | 'unavailable'
  | 'internal';

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
