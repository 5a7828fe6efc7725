import { describe, expect, it } from 'vitest';
import { canonicalJson } from './canonical.js';

describe('canonicalJson (RFC 8785)', () => {
  it('sorts keys at every depth, drops whitespace, keeps array order', () => {
    expect(canonicalJson({ b: 1, a: [3, { d: true, c: null }], 'é': 'x' })).toBe('{"a":[3,{"c":null,"d":true}],"b":1,"é":"x"}');
  });

  it('serialises numbers and strings as ECMAScript does (RFC 8785 §3.2.2)', () => {
    expect(canonicalJson([1e21, 0.000001, -0, 2 ** -13, 'a"\\\n\u0001'])).toBe('[1e+21,0.000001,0,0.0001220703125,"a\\"\\\\\\n\\u0001"]');
  });

  it('sorts by UTF-16 code units (RFC 8785 §3.2.3)', () => {
    expect(canonicalJson({ '\u{1F600}': 1, '\uFFFF': 2, a: 3 })).toBe('{"a":3,"\u{1F600}":1,"\uFFFF":2}');
  });

  it('refuses values without one canonical form', () => {
    for (const bad of [{ a: undefined }, { a: Number.NaN }, [Infinity], 1n, new Date(0), () => 1]) {
      expect(() => canonicalJson(bad)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    }
  });

  it('names where the refused value is', () => {
    expect(() => canonicalJson({ x: [1, { y: [2, { z: Number.NaN }] }] })).toThrow('$.x[1].y[1].z is not a finite number');
    expect(() => canonicalJson({ a: { b: undefined } })).toThrow('$.a.b is undefined');
    expect(() => canonicalJson([[0, [new Date(0)]]])).toThrow('$[0][1][0] is not a plain object');
    expect(() => canonicalJson({ k: [1n] })).toThrow('$.k[0] has unsupported type bigint');
    expect(() => canonicalJson(Symbol('s'))).toThrow('$ has unsupported type symbol');
    // A refusal does not change the next encoding.
    expect(canonicalJson({ x: [1, { y: [2, { z: 3 }] }] })).toBe('{"x":[1,{"y":[2,{"z":3}]}]}');
  });
});
