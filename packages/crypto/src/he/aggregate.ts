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

/** A running encrypted sum of updates (or of other sums). */
export interface CiphertextAccumulator {
  /**
   * Validates `payload` against the task and adds it. On any error the accumulator is unchanged.
   * Throws `invalid_payload`, `parameter_mismatch`, `key_mismatch`, `shape_mismatch`,
   * `invalid_ciphertext`, `headroom_exceeded` (the total weight would overflow t, or the client
   * count would exceed `ctx.maxClients`, the noise bound), `disposed`.
   */
  add(payload: Uint8Array): void;
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
  // Loaded ciphertexts go to `scratch` first and are added only once all of them loaded and
  // validated, so a failed add leaves `sums` untouched. Both arrays are reused across adds.
  let sums: Ciphertext[] | undefined;
  let scratch: Ciphertext[] = [];
  let count = 0;
  let totalWeight = 0;
  let disposed = false;

  const live = (): void => {
    if (disposed) throw new CryptoError('disposed', 'the CiphertextAccumulator was disposed');
    contextInternals(ctx);
  };

  return {
    add(payload) {
      live();
      const header = readPayloadHeader(payload);
      checkHeader(ctx, header, valueCount);
      if (count + header.clientCount > ctx.maxClients) {
        throw new CryptoError(
          'headroom_exceeded',
          `adding ${header.clientCount} updates to ${count} would exceed ${ctx.maxClients}, the most one sum holds with noise budget to spare`,
        );
      }
      if (totalWeight + header.totalWeight > ctx.maxTotalWeight) {
        throw new CryptoError(
          'headroom_exceeded',
          `adding weight ${header.totalWeight} to ${totalWeight} would exceed the overflow-free total ${ctx.maxTotalWeight}`,
        );
      }
      verifyPayloadDigest(payload);
      const parts = payloadCiphertexts(payload, header);
      while (scratch.length < ciphertextCount) scratch.push(new seal.Ciphertext());
      parts.forEach((bytes, i) => loadCiphertext(internals, ctx, bytes, scratch[i]!));
      if (sums === undefined) {
        sums = scratch;
        scratch = [];
      } else {
        const target = sums;
        let added = 0;
        try {
          callSeal(seal, 'invalid_ciphertext', 'homomorphic addition failed', () => {
            for (; added < ciphertextCount; added++) evaluator.addInplace(target[added]!, scratch[added]!);
          });
        } catch (reason) {
          callSeal(seal, 'internal', 'rollback failed', () => {
            for (let i = 0; i < added; i++) evaluator.subInplace(target[i]!, scratch[i]!);
          });
          throw reason;
        }
      }
      count += header.clientCount;
      totalWeight += header.totalWeight;
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
      for (const c of scratch) c.delete();
      sums = undefined;
      scratch = [];
    },
  };
}
