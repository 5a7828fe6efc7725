/**
 * Coordinator side: the homomorphic sum of encrypted updates, with no secret key.
 *
 * BFV is additively homomorphic: Dec(c + c') = m + m' (mod t) while the summed noise stays
 * below Δ/2 (Fan-Vercauteren 2012, §4). Summing n fresh ciphertexts grows the noise about like
 * sqrt(n) for honest clients (independent errors); see the package README for measured budgets.
 */
import type { Ciphertext } from 'node-seal';
import { CryptoError } from '../errors.js';
import { callSeal } from '../seal.js';
import { checkHeader, checkValueCount, ciphertextCountFor, loadCiphertext, saveCiphertext } from './ciphertexts.js';
import { contextInternals } from './params.js';
import type { HeContext } from './params.js';
import { encodePayload, payloadCiphertexts, readPayloadHeader, verifyPayloadDigest } from './payload.js';

/** Options of {@link createCiphertextAccumulator}. */
export interface CiphertextAccumulatorOptions {
  /** Number of model values P of every update (e.g. 199,210). Required. */
  readonly valueCount: number;
}

/**
 * A payload validated and loaded into SEAL once: the coordinator checks an upload fully before
 * it records it (nothing is added yet) and later adds the same loaded ciphertexts
 * (`CiphertextAccumulator.addLoaded`), instead of unpacking, checking and loading them twice.
 * Holds SEAL memory (about 2 x 8 x N bytes per ciphertext) until added or disposed.
 */
export interface LoadedUpdate {
  readonly valueCount: number;
  readonly clientCount: number;
  readonly totalWeight: number;
  /** Frees its SEAL objects unless an accumulator took them. Idempotent. */
  dispose(): void;
}

interface LoadedState {
  ctx: HeContext;
  ciphertexts: Ciphertext[] | null;
}
const loadedStates = new WeakMap<LoadedUpdate, LoadedState>();

/**
 * Validates `payload` as `CiphertextAccumulator.add` does for a first update (header against the
 * task, the weight and client-count bounds of one sum, the payload digest, every ciphertext) and
 * loads its ciphertexts. Throws the same codes as `add`.
 */
export function loadUpdate(ctx: HeContext, payload: Uint8Array, options: CiphertextAccumulatorOptions): LoadedUpdate {
  const internals = contextInternals(ctx);
  const { seal } = internals;
  checkValueCount(options.valueCount);
  const header = readPayloadHeader(payload);
  checkHeader(ctx, header, options.valueCount);
  checkHeadroom(ctx, 0, 0, header.clientCount, header.totalWeight);
  verifyPayloadDigest(payload);
  const parts = payloadCiphertexts(payload, header);
  const ciphertexts: Ciphertext[] = [];
  try {
    for (const bytes of parts) {
      const c = new seal.Ciphertext();
      ciphertexts.push(c);
      loadCiphertext(internals, ctx, bytes, c);
    }
  } catch (error) {
    for (const c of ciphertexts) c.delete();
    throw error;
  }
  const state: LoadedState = { ctx, ciphertexts };
  const loaded: LoadedUpdate = {
    valueCount: header.valueCount,
    clientCount: header.clientCount,
    totalWeight: header.totalWeight,
    dispose() {
      for (const c of state.ciphertexts ?? []) c.delete();
      state.ciphertexts = null;
    },
  };
  loadedStates.set(loaded, state);
  return loaded;
}

function checkHeadroom(ctx: HeContext, count: number, totalWeight: number, clientCount: number, weight: number): void {
  if (count + clientCount > ctx.maxClients) {
    throw new CryptoError(
      'headroom_exceeded',
      `adding ${clientCount} updates to ${count} would exceed ${ctx.maxClients}, the most one sum holds with noise budget to spare`,
    );
  }
  if (totalWeight + weight > ctx.maxTotalWeight) {
    throw new CryptoError('headroom_exceeded', `adding weight ${weight} to ${totalWeight} would exceed the overflow-free total ${ctx.maxTotalWeight}`);
  }
}

/** A running encrypted sum of updates (or of other sums). */
export interface CiphertextAccumulator {
  /**
   * Validates `payload` against the task and adds it. On any error the accumulator is unchanged.
   * Throws `invalid_payload`, `parameter_mismatch`, `key_mismatch`, `shape_mismatch`,
   * `invalid_ciphertext`, `headroom_exceeded` (the total weight would overflow t, or the client
   * count would exceed `ctx.maxClients`, the noise bound), `disposed`.
   */
  add(payload: Uint8Array): void;
  /**
   * Adds an update loaded by {@link loadUpdate} against this accumulator's context and value
   * count, without parsing it again. On success the accumulator takes its SEAL objects (the
   * LoadedUpdate is consumed; its `dispose` becomes a no-op); on error (`headroom_exceeded`,
   * `shape_mismatch`, `disposed`, `invalid_argument` for a consumed or foreign one) nothing
   * changes and the caller still owns it.
   */
  addLoaded(update: LoadedUpdate): void;
  /** Number of client updates summed so far. */
  readonly count: number;
  /** Σ client weights summed so far. */
  readonly totalWeight: number;
  /** The encrypted sum, in the payload format (kind `sum`). Throws `invalid_argument` when empty. */
  toPayload(): Uint8Array;
  /** Frees the SEAL objects. Idempotent. */
  dispose(): void;
}

/** Creates an empty accumulator for updates of `valueCount` values. */
export function createCiphertextAccumulator(ctx: HeContext, options: CiphertextAccumulatorOptions): CiphertextAccumulator {
  const internals = contextInternals(ctx);
  const { seal, evaluator } = internals;
  const { valueCount } = options;
  checkValueCount(valueCount);
  const ciphertextCount = ciphertextCountFor(ctx, valueCount);
  // An update is loaded and validated in full (loadUpdate) before anything touches `sums`, so a
  // failed add leaves it untouched.
  let sums: Ciphertext[] | undefined;
  let count = 0;
  let totalWeight = 0;
  let disposed = false;

  const live = (): void => {
    if (disposed) throw new CryptoError('disposed', 'the CiphertextAccumulator was disposed');
    contextInternals(ctx);
  };
  /** target += addends, ciphertext by ciphertext; on a failure the additions made are undone. */
  const addInto = (target: Ciphertext[], addends: Ciphertext[]): void => {
    let added = 0;
    try {
      callSeal(seal, 'invalid_ciphertext', 'homomorphic addition failed', () => {
        for (; added < ciphertextCount; added++) evaluator.addInplace(target[added]!, addends[added]!);
      });
    } catch (reason) {
      callSeal(seal, 'internal', 'rollback failed', () => {
        for (let i = 0; i < added; i++) evaluator.subInplace(target[i]!, addends[i]!);
      });
      throw reason;
    }
  };

  const accumulator: CiphertextAccumulator = {
    add(payload) {
      live();
      const header = readPayloadHeader(payload);
      checkHeader(ctx, header, valueCount);
      // The running sum's headroom before anything is loaded: a payload that cannot fit costs no more.
      checkHeadroom(ctx, count, totalWeight, header.clientCount, header.totalWeight);
      const loaded = loadUpdate(ctx, payload, { valueCount });
      try {
        accumulator.addLoaded(loaded);
      } finally {
        loaded.dispose();
      }
    },
    addLoaded(update) {
      live();
      const state = loadedStates.get(update);
      if (state === undefined || state.ciphertexts === null) throw new CryptoError('invalid_argument', 'this LoadedUpdate was consumed or disposed');
      if (state.ctx !== ctx) throw new CryptoError('invalid_argument', 'this LoadedUpdate was loaded under another context');
      if (update.valueCount !== valueCount) {
        throw new CryptoError('shape_mismatch', `payload holds ${update.valueCount} values, expected ${valueCount}`);
      }
      checkHeadroom(ctx, count, totalWeight, update.clientCount, update.totalWeight);
      const loaded = state.ciphertexts;
      if (sums === undefined) sums = loaded;
      else {
        addInto(sums, loaded);
        for (const c of loaded) c.delete();
      }
      state.ciphertexts = null;
      count += update.clientCount;
      totalWeight += update.totalWeight;
    },
    get count() {
      return count;
    },
    get totalWeight() {
      return totalWeight;
    },
    toPayload() {
      live();
      if (sums === undefined) throw new CryptoError('invalid_argument', 'no update was added; there is no sum');
      const current = sums;
      const ciphertexts = current.map((sum) => saveCiphertext(internals, sum));
      return encodePayload(
        {
          kind: 'sum',
          codec: 'bitpacked',
          fingerprintBytes: internals.fingerprintBytes,
          keyIdBytes: internals.keyIdBytes,
          step: ctx.quantization.step,
          clipMaxAbs: ctx.quantization.clipMaxAbs,
          valueCount,
          clientCount: count,
          totalWeight,
        },
        ciphertexts,
      );
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      for (const c of sums ?? []) c.delete();
      sums = undefined;
    },
  };
  return accumulator;
}
