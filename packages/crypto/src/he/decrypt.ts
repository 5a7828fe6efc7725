/**
 * Key-holder side: decrypt an encrypted sum, check its noise budget, decode and dequantize.
 *
 * SEAL's invariant noise budget (Fan-Vercauteren 2012, §4; SEAL manual) is
 * -log2(2·||v||) for the invariant noise v of the ciphertext; decryption is correct while it is
 * positive. We refuse a sum whose smallest per-ciphertext budget is <= `minNoiseBudgetBits`
 * rather than return silently wrong values.
 */
import { CryptoError } from '../errors.js';
import { callSeal } from '../seal.js';
import { checkHeader, loadCiphertext } from './ciphertexts.js';
import { loadSecretKey } from './encrypt.js';
import type { DeviceKeyMaterial } from './keys.js';
import { contextInternals } from './params.js';
import type { HeContext } from './params.js';
import { payloadCiphertexts, readPayloadHeader, verifyPayloadDigest } from './payload.js';

/** Options of {@link createSumDecryptor}. */
export interface SumDecryptorOptions {
  /** The key holder's device key material. Required; must belong to the context's task key. */
  readonly deviceKey: DeviceKeyMaterial;
  /** Refuse sums whose noise budget is at or below this many bits. Default 0 (refuse exhausted budgets only). */
  readonly minNoiseBudgetBits?: number;
  /** Expected value count; a payload with another count is refused (`shape_mismatch`). Default: any. */
  readonly valueCount?: number;
}

/** A decrypted sum. */
export interface DecryptedSum {
  /** Exact integer sums Σ w_i·level_i per value (centred decoding). */
  readonly levelSums: Float64Array;
  /** Σ w_i·x_i per value, in model units (levelSums · step). */
  readonly weightedSum: Float64Array;
  /** Σ w_i, from the payload header. */
  readonly totalWeight: number;
  /** Number of client updates in the sum. */
  readonly clientCount: number;
  /** Smallest invariant noise budget over the ciphertexts, in bits. */
  readonly noiseBudgetBits: number;
}

/** A decrypted weighted mean (FedAvg). */
export interface DecryptedMean extends DecryptedSum {
  /** Σ w_i·x_i / Σ w_i per value, in model units; within step/2 of the plaintext weighted mean of the clipped values. */
  readonly mean: Float64Array;
}

/** Decrypts sums (or single updates) under a task's secret key. */
export interface SumDecryptor {
  /** Throws the payload errors of `CiphertextAccumulator.add`, and `noise_budget_exhausted`. */
  decrypt(payload: Uint8Array): DecryptedSum;
  /** `decrypt`, then divides by the total weight: the FedAvg mean. */
  decryptMean(payload: Uint8Array): DecryptedMean;
  /** Frees the SEAL objects (secret key included). Idempotent. */
  dispose(): void;
}

/** Creates a decryptor holding the key holder's secret key. */
export function createSumDecryptor(ctx: HeContext, options: SumDecryptorOptions): SumDecryptor {
  const internals = contextInternals(ctx);
  const { seal, context, encoder } = internals;
  const { deviceKey } = options;
  const minNoiseBudgetBits = options.minNoiseBudgetBits ?? 0;
  if (!Number.isFinite(minNoiseBudgetBits) || minNoiseBudgetBits < 0) {
    throw new CryptoError('invalid_argument', `minNoiseBudgetBits must be >= 0, got ${minNoiseBudgetBits}`);
  }
  if (deviceKey.kind !== 'device') throw new CryptoError('invalid_argument', 'deviceKey must be device key material');
  if (deviceKey.fingerprint !== ctx.parameters.fingerprint) {
    throw new CryptoError('parameter_mismatch', 'the device key was made for another parameter set');
  }
  if (deviceKey.keyId !== ctx.keyId) throw new CryptoError('key_mismatch', 'the device key is not the context key');
  const secretKey = loadSecretKey(internals, deviceKey.secretKey);
  let decryptor;
  try {
    decryptor = callSeal(seal, 'internal', 'cannot create the decryptor', () => new seal.Decryptor(context, secretKey));
  } catch (reason) {
    secretKey.delete();
    throw reason;
  }
  const t = ctx.parameters.plainModulus;
  const halfT = (t - 1n) / 2n;
  const slots = ctx.parameters.slotCount;
  let disposed = false;

  const decrypt = (payload: Uint8Array): DecryptedSum => {
    if (disposed) throw new CryptoError('disposed', 'the SumDecryptor was disposed');
    contextInternals(ctx);
    const header = readPayloadHeader(payload);
    checkHeader(ctx, header, options.valueCount);
    verifyPayloadDigest(payload);
    const levelSums = new Float64Array(header.valueCount);
    let noiseBudgetBits = Number.POSITIVE_INFINITY;
    const ciphertext = new seal.Ciphertext();
    const plaintext = new seal.Plaintext();
    try {
      payloadCiphertexts(payload, header).forEach((bytes, c) => {
        loadCiphertext(internals, ctx, bytes, ciphertext);
        const budget = callSeal(seal, 'internal', 'decryption failed', () => {
          const bits = decryptor.invariantNoiseBudget(ciphertext);
          decryptor.decrypt(ciphertext, plaintext);
          return bits;
        });
        noiseBudgetBits = Math.min(noiseBudgetBits, budget);
        if (budget <= minNoiseBudgetBits) {
          throw new CryptoError(
            'noise_budget_exhausted',
            `ciphertext ${c} has ${budget} bits of noise budget (need > ${minNoiseBudgetBits}); the sum cannot be decrypted reliably`,
          );
        }
        const residues = callSeal(seal, 'internal', 'decoding failed', () => encoder.decodeBigUint64(plaintext) as BigUint64Array);
        const start = c * slots;
        const end = Math.min(start + slots, header.valueCount);
        for (let i = start; i < end; i++) {
          const r = residues[i - start]!;
          // Centred decoding, as quantize.ts centredDecode() (inlined: this loop runs P times per sum).
          levelSums[i] = Number(r <= halfT ? r : r - t);
        }
      });
    } finally {
      plaintext.delete();
      ciphertext.delete();
    }
    const step = ctx.quantization.step;
    const weightedSum = new Float64Array(levelSums.length);
    for (let i = 0; i < levelSums.length; i++) weightedSum[i] = levelSums[i]! * step;
    return { levelSums, weightedSum, totalWeight: header.totalWeight, clientCount: header.clientCount, noiseBudgetBits };
  };

  return {
    decrypt,
    decryptMean(payload) {
      const sum = decrypt(payload);
      const mean = new Float64Array(sum.levelSums.length);
      const step = ctx.quantization.step;
      for (let i = 0; i < mean.length; i++) mean[i] = (sum.levelSums[i]! * step) / sum.totalWeight;
      return { ...sum, mean };
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      decryptor.delete();
      secretKey.delete();
    },
  };
}
