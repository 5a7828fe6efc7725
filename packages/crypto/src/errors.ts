/**
 * Every failure `@veil/crypto` reports. The union is closed: callers (the
 * coordinator's gRPC/HTTP layers) map each code to one status.
 *
 * - `invalid_argument`: a caller passed an option or input outside its documented range.
 * - `insecure_parameters`: SEAL rejected the encryption parameters (not 128-bit secure per
 *   the HomomorphicEncryption.org standard, or not usable for batching).
 * - `parameter_mismatch`: a payload or key was made for another parameter set or quantization
 *   (fingerprint, step or clip range differs).
 * - `key_mismatch`: a payload was encrypted under another key (key id differs).
 * - `invalid_payload`: the payload framing is malformed (magic, version, truncated, lengths).
 * - `shape_mismatch`: the payload has another value count or ciphertext count than expected.
 * - `invalid_ciphertext`: the ciphertext bytes are corrupted (digest mismatch, SEAL refused them).
 * - `headroom_exceeded`: the sum could overflow the plain modulus' signed range.
 * - `noise_budget_exhausted`: the decrypted sum can no longer be trusted (noise budget <= 0).
 * - `secret_key_material`: secret key material was offered where only public material is allowed.
 * - `invalid_key_material`: a key bundle file or byte string is malformed or of another version.
 * - `invalid_signature`: a signature, device certificate or custodian answer does not verify
 *   (wrong key, tampered bytes, expired certificate).
 * - `integrity_check_failed`: a committee decryption's count or weight slot disagrees with |D|
 *   (a device sent inconsistent shares or a custodian a wrong sum).
 * - `disposed`: the object was used after `dispose()`.
 * - `seal_unavailable`: node-seal's WebAssembly module failed to load (it needs Node >= 22).
 * - `internal`: anything else (a bug, or an unexpected SEAL exception).
 */
export type CryptoErrorCode =
  | 'invalid_argument'
  | 'insecure_parameters'
  | 'parameter_mismatch'
  | 'key_mismatch'
  | 'invalid_payload'
  | 'shape_mismatch'
  | 'invalid_ciphertext'
  | 'headroom_exceeded'
  | 'noise_budget_exhausted'
  | 'secret_key_material'
  | 'invalid_key_material'
  | 'invalid_signature'
  | 'integrity_check_failed'
  | 'disposed'
  | 'seal_unavailable'
  | 'internal';

const CODES: ReadonlySet<string> = new Set<CryptoErrorCode>([
  'invalid_argument',
  'insecure_parameters',
  'parameter_mismatch',
  'key_mismatch',
  'invalid_payload',
  'shape_mismatch',
  'invalid_ciphertext',
  'headroom_exceeded',
  'noise_budget_exhausted',
  'secret_key_material',
  'invalid_key_material',
  'invalid_signature',
  'integrity_check_failed',
  'disposed',
  'seal_unavailable',
  'internal',
]);

/** The one error class of `@veil/crypto`. `cause` is for logs only, never for the wire. */
export class CryptoError extends Error {
  override readonly name = 'CryptoError';
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.code = code;
  }

  /**
   * Converts anything thrown into a `CryptoError`: returns a `CryptoError` unchanged, keeps the
   * code of an error-like object whose `code` is a `CryptoErrorCode`, and wraps everything else
   * (including SEAL's C++ exceptions) as `internal` (or `fallbackCode`) with the original as `cause`.
   */
  static from(reason: unknown, fallbackCode: CryptoErrorCode = 'internal'): CryptoError {
    if (reason instanceof CryptoError) return reason;
    if (typeof reason === 'object' && reason !== null) {
      const code = (reason as { code?: unknown }).code;
      const message = describeThrown(reason);
      if (typeof code === 'string' && CODES.has(code)) {
        return new CryptoError(code as CryptoErrorCode, message, { cause: reason });
      }
      return new CryptoError(fallbackCode, message, { cause: reason });
    }
    return new CryptoError(fallbackCode, describeThrown(reason), { cause: reason });
  }
}

/**
 * A readable message for anything thrown. node-seal's C++ exceptions are
 * `WebAssembly.Exception`s whose `message` is `[type, what]`.
 */
export function describeThrown(reason: unknown): string {
  if (typeof reason === 'object' && reason !== null && 'message' in reason) {
    const message = (reason as { message: unknown }).message;
    if (Array.isArray(message)) return message.filter((part) => typeof part === 'string').join(': ');
    if (typeof message === 'string') return message;
  }
  return String(reason);
}
