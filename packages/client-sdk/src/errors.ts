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
  | 'internal'
  | 'integrity';

/** Codes worth retrying with backoff: the coordinator may be restarting or briefly overloaded. */
const RETRYABLE: ReadonlySet<ClientErrorCode> = new Set(['unavailable', 'deadline_exceeded', 'aborted', 'internal']);

/** The one error type of the client SDK. */
export class ClientError extends Error {
  override readonly name = 'ClientError';
  readonly code: ClientErrorCode;

  constructor(code: ClientErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
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
