import { describe, expect, it } from 'vitest';
import { CryptoError } from './errors.js';

describe('CryptoError.from', () => {
  it('returns a CryptoError unchanged', () => {
    const error = new CryptoError('key_mismatch', 'x');
    expect(CryptoError.from(error)).toBe(error);
  });

  it('keeps a known code of an error-like object and wraps the rest as internal', () => {
    expect(CryptoError.from({ code: 'invalid_payload', message: 'm' }).code).toBe('invalid_payload');
    const wrapped = CryptoError.from(new Error('boom'));
    expect(wrapped).toMatchObject({ code: 'internal', message: 'boom', name: 'CryptoError' });
    expect(wrapped.cause).toBeInstanceOf(Error);
    expect(CryptoError.from({ code: 'ENOENT', message: 'x' }, 'invalid_key_material').code).toBe('invalid_key_material');
    expect(CryptoError.from('text').message).toBe('text');
  });

  it('reads the [type, what] message of SEAL exceptions', () => {
    expect(CryptoError.from({ message: ['std::logic_error', 'ciphertext data is invalid'] }).message).toBe(
      'std::logic_error: ciphertext data is invalid',
    );
  });
});
