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
  try {
    return encode(value);
  } catch (error) {
    if (error instanceof Refusal) throw new CryptoError('invalid_argument', `$${error.path} ${error.reason}`);
    throw error;
  }
}

/** UTF-8 bytes of {@link canonicalJson}. */
export function canonicalBytes(value: unknown): Uint8Array {
  return utf8(canonicalJson(value));
}

/**
 * A value without a canonical form, found at `path` (below the root `$`). The path is built only
 * on a refusal, segment by segment as the refusal unwinds: building it for every member of every
 * value encoded (a custodian checks each manifest it receives this way) cost more than the encoding.
 */
class Refusal {
  constructor(
    readonly reason: string,
    public path = '',
  ) {}
}

function under(error: unknown, segment: string): unknown {
  if (error instanceof Refusal) error.path = `${segment}${error.path}`;
  return error;
}

function encode(value: unknown): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'number':
      if (!Number.isFinite(value)) throw new Refusal('is not a finite number');
      return JSON.stringify(value);
    case 'string':
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) {
        let out = '[';
        for (let i = 0; i < value.length; i++) {
          if (i > 0) out += ',';
          try {
            out += encode(value[i]);
          } catch (error) {
            throw under(error, `[${i}]`);
          }
        }
        return `${out}]`;
      }
      const proto = Object.getPrototypeOf(value) as unknown;
      if (proto !== Object.prototype && proto !== null) throw new Refusal('is not a plain object');
      const record = value as Record<string, unknown>;
      const keys = Object.keys(record).sort();
      let out = '{';
      for (let k = 0; k < keys.length; k++) {
        const key = keys[k] as string;
        const member = record[key];
        if (member === undefined) throw new Refusal('is undefined', `.${key}`);
        if (k > 0) out += ',';
        try {
          out += `${JSON.stringify(key)}:${encode(member)}`;
        } catch (error) {
          throw under(error, `.${key}`);
        }
      }
      return `${out}}`;
    }
    default:
      throw new Refusal(`has unsupported type ${typeof value}`);
  }
}
