/**
 * The closed set of error codes raised by `@veil/privacy`.
 *
 * - `invalid_argument`: a parameter is out of its documented domain
 *   (e.g. `samplingRate` outside (0, 1], `delta` outside (0, 1)).
 * - `budget_exhausted`: one more participation or round would exceed the
 *   configured ε cap.
 * - `target_unreachable`: calibration cannot meet the target within the
 *   searched noise range.
 * - `numerical_failure`: a series or search failed to converge.
 * - `modulus_overflow`: the modular headroom check failed.
 * - `internal`: anything else (wrapped by {@link PrivacyError.from}).
 */
export type PrivacyErrorCode =
  | 'invalid_argument'
  | 'budget_exhausted'
  | 'target_unreachable'
  | 'numerical_failure'
  | 'modulus_overflow'
  | 'internal';

const CODES: ReadonlySet<string> = new Set<PrivacyErrorCode>([
  'invalid_argument',
  'budget_exhausted',
  'target_unreachable',
  'numerical_failure',
  'modulus_overflow',
  'internal',
]);

/** The single error type of `@veil/privacy`. */
export class PrivacyError extends Error {
  override readonly name = 'PrivacyError';
  readonly code: PrivacyErrorCode;
  /** Structured details safe to log (numbers, parameter names). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(
    code: PrivacyErrorCode,
    message: string,
    options: { cause?: unknown; details?: Record<string, unknown> } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
    this.details = Object.freeze({ ...(options.details ?? {}) });
  }

  /**
   * Converts any thrown value into a `PrivacyError`: a `PrivacyError` is
   * returned as is, an `Error` becomes `internal` with the original as
   * `cause`, anything else becomes `internal` with its string form.
   */
  static from(reason: unknown): PrivacyError {
    if (reason instanceof PrivacyError) return reason;
    if (reason instanceof Error) {
      const code = (reason as { code?: unknown }).code;
      if (typeof code === 'string' && CODES.has(code)) {
        return new PrivacyError(code as PrivacyErrorCode, reason.message, { cause: reason });
      }
      return new PrivacyError('internal', reason.message, { cause: reason });
    }
    return new PrivacyError('internal', String(reason), { cause: reason });
  }
}

/** @internal Throws `invalid_argument` unless `condition` holds. */
export function requireArgument(
  condition: boolean,
  message: string,
  details?: Record<string, unknown>,
): asserts condition {
  if (!condition) {
    throw new PrivacyError('invalid_argument', message, details === undefined ? {} : { details });
  }
}
