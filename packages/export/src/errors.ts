/**
 * The closed set of error codes raised by `@veil/export`.
 *
 * - `unsupported_layer`: the model holds a layer (or a layer option) the ONNX
 *   exporter does not translate; the message names the layer.
 * - `invalid_model`: the topology or the weights are malformed or disagree.
 * - `invalid_calibration`: calibration statistics do not match the model or
 *   the grid they claim, or hold no data.
 * - `invalid_argument`: an option is out of its documented domain.
 * - `internal`: anything else (wrapped by {@link ExportError.from}).
 */
export type ExportErrorCode = 'unsupported_layer' | 'invalid_model' | 'invalid_calibration' | 'invalid_argument' | 'internal';

const CODES: ReadonlySet<string> = new Set<ExportErrorCode>([
  'unsupported_layer',
  'invalid_model',
  'invalid_calibration',
  'invalid_argument',
  'internal',
]);

/** The single error type of `@veil/export`. */
export class ExportError extends Error {
  override readonly name = 'ExportError';
  readonly code: ExportErrorCode;

  constructor(code: ExportErrorCode, message: string, options: { cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /** An `ExportError` as is; another `Error` carrying one of the codes keeps it; anything else is `internal`. */
  static from(reason: unknown): ExportError {
    if (reason instanceof ExportError) return reason;
    if (reason instanceof Error) {
      const code = (reason as { code?: unknown }).code;
      if (typeof code === 'string' && CODES.has(code)) return new ExportError(code as ExportErrorCode, reason.message, { cause: reason });
      return new ExportError('internal', reason.message, { cause: reason });
    }
    return new ExportError('internal', String(reason));
  }
}
