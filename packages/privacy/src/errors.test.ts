import { describe, expect, it } from 'vitest';
import { PrivacyError } from './errors.js';

describe('PrivacyError.from', () => {
  it('passes PrivacyErrors through and wraps anything else as internal', () => {
    const e = new PrivacyError('budget_exhausted', 'cap');
    expect(PrivacyError.from(e)).toBe(e);
    const wrapped = PrivacyError.from(new TypeError('boom'));
    expect(wrapped.code).toBe('internal');
    expect(wrapped.cause).toBeInstanceOf(TypeError);
    expect(PrivacyError.from('str').code).toBe('internal');
  });
});
