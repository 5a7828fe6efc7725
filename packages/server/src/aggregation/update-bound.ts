import { VeilError } from '../errors.js';
import type { UpdateBound } from '../rounds/model.js';

/**
 * Server-side norm bound on plaintext updates: norm bounding as the defence
 * against model replacement and scaling attacks in federated learning (Sun,
 * Kairouz, Suresh & McMahan 2019, "Can You Really Backdoor Federated
 * Learning?", §3: clip Δ to ‖Δ‖₂ ≤ M); with L∞ the same bound per value.
 * It also keeps the arithmetic finite: with every |Δᵢ| ≤ maxNorm, a weighted
 * mean moves each weight by at most maxNorm per round.
 */

/** The bound of tasks that do not state one (and of tasks created before bounds existed). */
export const DEFAULT_UPDATE_BOUND: UpdateBound = Object.freeze({ norm: 'linf', maxNorm: 1000, onExceed: 'reject' }) as UpdateBound;

/**
 * Largest `maxNorm` accepted. It is below half a float32 step at the top of the range (2^103 ≈
 * 1.01e31, IEEE 754 binary32): a FedAvg step of at most 1e30 from a finite model rounds to a finite
 * float32 (at worst the largest one), so no sequence of bounded rounds can overflow the model.
 */
export const MAX_UPDATE_NORM = 1e30;

/** Validates a requested bound (REST or CLI input); undefined → {@link DEFAULT_UPDATE_BOUND}. */
export function resolveUpdateBound(input: unknown): UpdateBound {
  if (input === undefined) return { ...DEFAULT_UPDATE_BOUND };
  const b = input as Partial<UpdateBound> | null;
  if (typeof b !== 'object' || b === null) throw new VeilError('invalid_argument', 'updateBound must be an object');
  if (b.norm !== 'l2' && b.norm !== 'linf') throw new VeilError('invalid_argument', 'updateBound.norm must be "l2" or "linf"');
  if (typeof b.maxNorm !== 'number' || !(b.maxNorm > 0 && b.maxNorm <= MAX_UPDATE_NORM)) {
    throw new VeilError('invalid_argument', `updateBound.maxNorm must be a number in (0, ${MAX_UPDATE_NORM}]`);
  }
  if (b.onExceed !== 'clip' && b.onExceed !== 'reject') throw new VeilError('invalid_argument', 'updateBound.onExceed must be "clip" or "reject"');
  return { norm: b.norm, maxNorm: b.maxNorm, onExceed: b.onExceed };
}

/**
 * ‖values‖ in the bound's norm, or NaN when a value is NaN or ±Infinity: the update's finiteness
 * and its norm in one pass (a refusing bound needs both). L2 is summed in float64 (a float32 squared
 * cannot overflow it; a non-finite value makes the sum NaN or +Infinity, and nothing else does). L∞
 * compares IEEE 754 binary32 bit patterns: with the sign bit cleared, finite floats order like their
 * magnitudes, and NaN and ±Infinity are exactly the patterns from 0x7f800000 up (as in
 * `firstNonFinite`, rounds/task-settings.ts; the loop bound is a local and the loop calls nothing).
 */
export function updateNorm(values: Float32Array, norm: UpdateBound['norm']): number {
  if (norm === 'linf') {
    const max = maxMagnitudeBits(new Int32Array(values.buffer, values.byteOffset, values.length));
    if (max >= 0x7f800000) return Number.NaN;
    LINF_BITS[0] = max;
    return LINF_VALUE[0]!;
  }
  const sum = sumOfSquares(values);
  return Number.isFinite(sum) ? Math.sqrt(sum) : Number.NaN;
}

// The 100,000-value loops run in functions of their own that end with the loop (as the committee
// path's, aggregation/committee-aggregator.ts): inline in `updateNorm`, the comparison after the
// loop had no type feedback when V8 compiled the loop on the stack, so that code deoptimized at
// every loop exit (57 times in a 60-round plaintext bench:rounds run, --trace-deopt) and each call
// went back to the interpreter, which boxes doubles, plus recompilations on V8's helper threads.

/** Σ values[i]², in float64. */
function sumOfSquares(values: Float32Array): number {
  const n = values.length;
  let sum = 0;
  for (let i = 0; i < n; i++) sum += values[i]! * values[i]!;
  return sum;
}

/** The largest of the bit patterns with the sign bit cleared (see `updateNorm`). */
function maxMagnitudeBits(bits: Int32Array): number {
  const n = bits.length;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const magnitude = bits[i]! & 0x7fffffff;
    if (magnitude > max) max = magnitude;
  }
  return max;
}

/** The largest magnitude's bits, read back as the float they encode. */
const LINF_BITS = new Int32Array(1);
const LINF_VALUE = new Float32Array(LINF_BITS.buffer);

const NORM_NAME = { l2: 'L2', linf: 'L∞' } as const;

/** Refuses an update over a `reject` bound (INVALID_ARGUMENT); `clip` bounds accept every finite update. `values` are finite (checked before). */
export function checkUpdateBound(values: Float32Array, bound: UpdateBound): void {
  if (bound.onExceed !== 'reject') return;
  refuseOverBound(updateNorm(values, bound.norm), bound);
}

/** {@link checkUpdateBound} for an update whose (finite) norm in the bound's norm is known already. */
export function refuseOverBound(norm: number, bound: UpdateBound): void {
  if (bound.onExceed === 'reject' && norm > bound.maxNorm) {
    throw new VeilError('invalid_argument', `update ${NORM_NAME[bound.norm]} norm ${norm} exceeds the task's bound ${bound.maxNorm}`);
  }
}

/** Clipped values are written here, reused by the next call (folded and dropped before it). */
let clipScratch = new Float32Array(0);

/**
 * The values to fold under a `clip` bound: `values` itself when within it, else a clipped copy
 * (L∞: each value clamped to ±maxNorm; L2: scaled by maxNorm/‖Δ‖₂), valid until the next call.
 * Under a `reject` bound, `values` as given (checked by {@link checkUpdateBound} before).
 */
export function boundedValues(values: Float32Array, bound: UpdateBound): Float32Array {
  if (bound.onExceed === 'reject') return values;
  const norm = updateNorm(values, bound.norm);
  if (norm <= bound.maxNorm) return values;
  const n = values.length;
  if (clipScratch.length < n) clipScratch = new Float32Array(n);
  const out = clipScratch.subarray(0, n);
  const m = bound.maxNorm;
  if (bound.norm === 'linf') clampInto(out, values, m);
  else scaleInto(out, values, m / norm);
  return out;
}

/** out[i] = values[i] clamped to [-m, m]. */
function clampInto(out: Float32Array, values: Float32Array, m: number): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = Math.min(m, Math.max(-m, values[i]!));
}

/** out[i] = values[i] · scale. */
function scaleInto(out: Float32Array, values: Float32Array, scale: number): void {
  const n = out.length;
  for (let i = 0; i < n; i++) out[i] = values[i]! * scale;
}
