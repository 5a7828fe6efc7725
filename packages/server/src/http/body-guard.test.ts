import { describe, expect, test } from 'vitest';
import { VeilError } from '../errors.js';
import { checkJsonBody } from './body-guard.js';

const nested = (depth: number): unknown => {
  let v: unknown = 1;
  for (let i = 0; i < depth; i++) v = i % 2 === 0 ? [v] : { k: v };
  return v;
};

describe('JSON body guard', () => {
  test('accepts ordinary bodies up to the depth limit', () => {
    expect(() => checkJsonBody({ name: 'ok', model: { topology: { a: [1, { b: 'c' }] } } }, 64)).not.toThrow();
    expect(() => checkJsonBody(nested(64), 64)).not.toThrow();
  });

  test('refuses deeper nesting, also 100 000 levels, without overflowing the stack', () => {
    expect(() => checkJsonBody(nested(65), 64)).toThrow(/nested deeper than 64/);
    expect(() => checkJsonBody(nested(1_000), 64)).toThrow(VeilError);
    expect(() => checkJsonBody(nested(100_000), 64)).toThrow(/nested deeper/);
  });

  test('refuses NUL in any string or key, at any depth', () => {
    expect(() => checkJsonBody({ name: 'a\u0000b' }, 64)).toThrow(/NUL/);
    expect(() => checkJsonBody({ model: { topology: { config: { layers: [{ name: 'x\u0000' }] } } } }, 64)).toThrow(/NUL/);
    expect(() => checkJsonBody({ ['k\u0000']: 1 }, 64)).toThrow(/keys must not contain/);
    try {
      checkJsonBody({ name: '\u0000' }, 64);
    } catch (error) {
      expect((error as VeilError).code).toBe('invalid_argument');
    }
  });

  test('refuses a lone surrogate in any string or key, and accepts a proper pair', () => {
    expect(() => checkJsonBody({ name: '\ud800' }, 64)).toThrow(/well-formed Unicode/);
    expect(() => checkJsonBody({ name: 'a\udc00b' }, 64)).toThrow(/well-formed Unicode/);
    expect(() => checkJsonBody({ model: { topology: [{ name: 'x\udbff' }] } }, 64)).toThrow(/well-formed Unicode/);
    expect(() => checkJsonBody({ ['k\ud83d']: 1 }, 64)).toThrow(/keys must be well-formed/);
    // U+1F600 is the pair D83D DE00: well-formed.
    expect(() => checkJsonBody({ name: '\ud83d\ude00', ['\ud83d\ude00']: 'ok' }, 64)).not.toThrow();
    // Reversed pair: two lone surrogates.
    expect(() => checkJsonBody({ name: '\ude00\ud83d' }, 64)).toThrow(/well-formed Unicode/);
  });
});
