import { VeilError } from '../../errors.js';
import { rejectUnknownParams } from '../fedavg.js';

/** Reads a strategy's numeric parameters, refusing unknown keys and values out of range with `invalid_argument`. */
export interface ParamReader {
  /** A finite number in the given range (`min`/`max` inclusive unless `exclusiveMin`/`exclusiveMax`), or the default. */
  number(key: string, fallback: number, range?: { min?: number; max?: number; exclusiveMin?: boolean; exclusiveMax?: boolean; integer?: boolean }): number;
  boolean(key: string, fallback: boolean): boolean;
}

/** A reader over `params` for `strategy`, which takes exactly the keys `known`. */
export function readParams(strategy: string, params: Readonly<Record<string, unknown>>, known: readonly string[]): ParamReader {
  rejectUnknownParams(strategy, params, known);
  const invalid = (message: string): never => {
    throw new VeilError('invalid_argument', `strategy ${strategy}: ${message}`);
  };
  return {
    number(key, fallback, range = {}) {
      const value = params[key] ?? fallback;
      if (typeof value !== 'number' || !Number.isFinite(value)) return invalid(`${key} must be a finite number`);
      if (range.integer === true && !Number.isInteger(value)) invalid(`${key} must be an integer, got ${value}`);
      if (range.min !== undefined && (range.exclusiveMin === true ? !(value > range.min) : !(value >= range.min))) {
        invalid(`${key} must be ${range.exclusiveMin === true ? '>' : '>='} ${range.min}, got ${value}`);
      }
      if (range.max !== undefined && (range.exclusiveMax === true ? !(value < range.max) : !(value <= range.max))) {
        invalid(`${key} must be ${range.exclusiveMax === true ? '<' : '<='} ${range.max}, got ${value}`);
      }
      return value;
    },
    boolean(key, fallback) {
      const value = params[key] ?? fallback;
      if (typeof value !== 'boolean') return invalid(`${key} must be a boolean`);
      return value;
    },
  };
}
