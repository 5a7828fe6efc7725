/**
 * Canonical JSON: the JSON Canonicalization Scheme (RFC 8785) for the values the committee
 * protocol signs and hashes — object keys sorted by UTF-16 code units, no whitespace, strings
 * and numbers serialised as ECMAScript's JSON.stringify does, UTF-8 bytes. Only null, booleans,
 * finite numbers, strings, arrays and plain objects are accepted; `undefined`, NaN, ±Infinity,
 * functions, bigints and class instances are refused so that a value cannot hash one way and
 * travel another.
 */
import { CryptoError } from '../errors.js';
import { utf8 } from './bytes.js';

/** A value {@link canonicalJson} accepts. */
export type CanonicalValue =
  | null
  | boolean
  | number
  | string
  | readonly CanonicalValue[]
  | { readonly [key: string]: CanonicalValue };

/** The canonical JSON text of `value` (RFC 8785). Throws `CryptoError('invalid_argument')`. */
export function canonicalJson(value: unknown): string {
  return encode(value, '$');
}

/** UTF-8 bytes of {@link canonicalJson}. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}

function encode(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new CryptoError('invalid_argument', `${path} is not a finite number`);
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((item, i) => encode(item, `${path}[${i}]`)).join(',')}]`;
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) {
        throw new CryptoError('invalid_argument', `${path} is not a plain object`);
      }
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      const members: string[] = [];
      for (const key of keys) {
        const member = record[key];
        if (member === undefined) throw new CryptoError('invalid_argument', `${path}.${key} is undefined`);
        members.push(`${JSON.stringify(key)}:${encode(member, `${path}.${key}`)}`);
      }
      return `{${members.join(',')}}`;
    }
    default:
      throw new CryptoError('invalid_argument', `${path} has unsupported type ${typeof value}`);
  }
}
