/** The closed set of client SDK error codes (gRPC status names, lower-cased, plus local ones). */
export type ClientErrorCode =
  | 'invalid_argument'
  | 'unauthenticated'
  | 'permission_denied'
  | 'not_found'
  | 'already_exists'
  /** The coordinator already accepted this very update (sent by it as the `veil-error-code` trailer): it counted. */
  | 'already_accepted'
  | 'failed_precondition'
  | 'resource_exhausted'
  | 'deadline_exceeded'
  | 'aborted'
  | 'unavailable'
  | 'cancelled'
  /** The coordinator does not have the call (an older version): the SDK falls back to the calls it has. */
  | 'unimplemented'
  | 'internal'
  | 'integrity';

/** Codes worth retrying with backoff: the coordinator may be restarting or briefly overloaded. */
const RETRYABLE: ReadonlySet<ClientErrorCode> = new Set(['unavailable', 'deadline_exceeded', 'aborted', 'internal']);

/** The one error type of the client SDK. */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  readonly code: ClientErrorCode;
  /** How long the coordinator asked the client to wait before retrying (its `retry-after`, in ms), if it said. */
  readonly retryAfterMs: number | undefined;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown; retryAfterMs?: number | undefined }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.retryAfterMs = options?.retryAfterMs;
  }

  /** Whether a retry with backoff may succeed. */
  get retryable(): boolean {
    return RETRYABLE.has(this.code);
  }

  static from(error: unknown): ClientError {
    if (error instanceof ClientError) return error;
    if (error instanceof Error && error.name === 'AbortError') return new ClientError('cancelled', 'aborted', { cause: error });
    return new ClientError('internal', error instanceof Error ? error.message : String(error), { cause: error });
  }
}

/** A `retry-after` value in whole seconds (RFC 9110 §10.2.3, delay-seconds form) as ms; anything else: undefined. */
export function parseRetryAfter(value: unknown): number | undefined {
  if (typeof value !== 'string' || !/^\d{1,6}$/.test(value.trim())) return undefined;
  return Number(value.trim()) * 1000;
}
