/**
 * Device side: quantize, weight, batch and encrypt one model update.
 *
 * Values are packed P -> ceil(P / N) plaintexts with the BFV batch encoder (CRT slots,
 * Smart-Vercauteren 2014; t = 1 mod 2N), and each plaintext is encrypted with SEAL's seeded
 * symmetric encryption: c = (c0, c1) with c1 = a uniform polynomial expanded from a 512-bit seed,
 * c0 = -(a·s + e) + Δ·m (the secret-key form of BFV, Fan-Vercauteren 2012, §3). Only c0 and the
 * seed are uploaded, which halves the ciphertext; the coordinator re-expands c1 when loading.
 *
 * Mod switching: the presets have one coefficient prime, so there is no lower level. (With more
 * primes, switching a seeded ciphertext down would replace the seed by a full c1 and make the
 * upload larger, so the encryptor never switches.)
 */
import type { Encryptor, SecretKey } from 'node-seal';
import { CryptoError } from '../errors.js';
import { callSeal } from '../seal.js';
import { quantizeValue } from '../quantize.js';
import { checkValueCount, ciphertextCountFor, saveCiphertext } from './ciphertexts.js';
import type { DeviceKeyMaterial } from './keys.js';
import { contextInternals } from './params.js';
import type { ContextInternals, HeContext } from './params.js';
import { encodePayload } from './payload.js';

/** Options of {@link createUpdateEncryptor}. */
export interface UpdateEncryptorOptions {
  /** The device's key material (its secret key encrypts). Required; must belong to the context's task key. */
  readonly deviceKey: DeviceKeyMaterial;
}

/** Encrypts model updates under a task's secret key. */
export interface UpdateEncryptor {
  /**
   * Clips and quantizes `values`, multiplies by `weight` (an integer in [1, weightCap], e.g.
   * `capWeight(exampleCount, weightCap)`), encrypts, and returns one payload.
   * Throws `invalid_argument` (bad weight, NaN, empty update) or `disposed`.
   */
  encrypt(values: Float32Array | Float64Array, weight: number): Uint8Array;
  /**
   * Encrypts integers that are already plaintext levels, exactly: no clipping, no rounding, no
   * quantization. Each level must be an integer in [-(t-1)/2, t) — a residue in [0, t) or a
   * centred representative — for the context's plain modulus t; it is packed as its residue
   * mod t (times `weight`, mod t). The payload has the format of {@link encrypt} (value count =
   * `levels.length`, total weight = `weight`), so the coordinator sums it unchanged and
   * `SumDecryptor.decrypt(sum).levelSums` returns Σ w·level mod t, centred in [-(t-1)/2, (t-1)/2].
   *
   * This is the entry point of mechanisms that quantize themselves and rely on modular
   * aggregation, such as the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021): with
   * modulus m = t, the decrypted sum is exactly the mod-m sum of the clients' encodings.
   * Default weight 1 (an integer in [1, weightCap]). Throws `invalid_argument` or `disposed`.
   */
  encryptLevels(levels: Int32Array | Float64Array, weight?: number): Uint8Array;
  /** Frees the SEAL objects (secret key included). Idempotent. */
  dispose(): void;
}

/** Creates an encryptor holding the device's secret key. */
export function createUpdateEncryptor(ctx: HeContext, options: UpdateEncryptorOptions): UpdateEncryptor {
  const internals = contextInternals(ctx);
  const { seal, context, encoder } = internals;
  const { deviceKey } = options;
  if (deviceKey.kind !== 'device') throw new CryptoError('invalid_argument', 'deviceKey must be device key material');
  if (deviceKey.fingerprint !== ctx.parameters.fingerprint) {
    throw new CryptoError('parameter_mismatch', 'the device key was made for another parameter set');
  }
  if (deviceKey.keyId !== ctx.keyId) throw new CryptoError('key_mismatch', 'the device key is not the context key');

  const secretKey = loadSecretKey(internals, deviceKey.secretKey);
  let encryptor: Encryptor;
  try {
    encryptor = callSeal(seal, 'internal', 'cannot create the encryptor', () => {
      // node-seal binds only Encryptor(context, publicKey[, secretKey]); derive the public key
      // from the secret key to satisfy the constructor (it is never used or exported).
      const generator = new seal.KeyGenerator(context, secretKey);
      try {
        const publicKey = generator.createPublicKey();
        try {
          return new seal.Encryptor(context, publicKey, secretKey);
        } finally {
          publicKey.delete();
        }
      } finally {
        generator.delete();
      }
    });
  } catch (reason) {
    secretKey.delete();
    throw reason;
  }

  const slots = ctx.parameters.slotCount;
  const quantization = ctx.quantization;
  const slotValues = new BigInt64Array(slots);
  let disposed = false;

  const t = ctx.parameters.plainModulus;
  const tNumber = Number(t);
  const halfT = (tNumber - 1) / 2;

  const checkLive = (): void => {
    if (disposed) throw new CryptoError('disposed', 'the UpdateEncryptor was disposed');
    contextInternals(ctx);
  };
  const checkWeight = (weight: number): void => {
    if (!Number.isSafeInteger(weight) || weight < 1 || weight > quantization.weightCap) {
      throw new CryptoError('invalid_argument', `weight must be an integer in [1, ${quantization.weightCap}], got ${weight}`);
    }
  };
  /** Batches `valueCount` slot values (`slotValue(i)`, each in [-(t-1)/2, (t-1)/2]) into ciphertexts and frames them. */
  const encryptSlots = (valueCount: number, weight: number, slotValue: (i: number) => bigint): Uint8Array => {
    const count = ciphertextCountFor(ctx, valueCount);
    const ciphertexts: Uint8Array[] = [];
    const plaintext = new seal.Plaintext();
    try {
      callSeal(seal, 'internal', 'encryption failed', () => {
        for (let c = 0; c < count; c++) {
          const start = c * slots;
          const end = Math.min(start + slots, valueCount);
          for (let i = start; i < end; i++) slotValues[i - start] = slotValue(i);
          slotValues.fill(0n, end - start);
          encoder.encode(slotValues, plaintext);
          const serializable = encryptor.encryptSymmetricSerializable(plaintext);
          try {
            ciphertexts.push(saveCiphertext(internals, serializable));
          } finally {
            serializable.delete();
          }
        }
      });
    } finally {
      plaintext.delete();
      slotValues.fill(0n);
    }
    return encodePayload(
      {
        kind: 'update',
        codec: 'bitpacked',
        fingerprintBytes: internals.fingerprintBytes,
        keyIdBytes: internals.keyIdBytes,
        step: quantization.step,
        clipMaxAbs: quantization.clipMaxAbs,
        valueCount,
        clientCount: 1,
        totalWeight: weight,
      },
      ciphertexts,
    );
  };

  return {
    encrypt(values, weight) {
      checkLive();
      if (!(values instanceof Float32Array || values instanceof Float64Array)) {
        throw new CryptoError('invalid_argument', 'values must be a Float32Array or Float64Array');
      }
      checkValueCount(values.length);
      checkWeight(weight);
      return encryptSlots(values.length, weight, (i) => BigInt(quantizeValue(values[i]!, quantization) * weight));
    },
    encryptLevels(levels, weight = 1) {
      checkLive();
      if (!(levels instanceof Int32Array || levels instanceof Float64Array)) {
        throw new CryptoError('invalid_argument', 'levels must be an Int32Array or Float64Array');
      }
      checkValueCount(levels.length);
      checkWeight(weight);
      // Validate everything before encrypting anything: a bad level is a caller bug, not a zero.
      for (let i = 0; i < levels.length; i++) {
        const level = levels[i]!;
        if (!Number.isInteger(level) || level < -halfT || level >= tNumber) {
          throw new CryptoError(
            'invalid_argument',
            `level ${i} is ${level}, not an integer in [-(t-1)/2, t) for plain modulus t = ${t}`,
          );
        }
      }
      // Slot values are centred residues in [-(t-1)/2, (t-1)/2], the range SEAL's signed batch
      // encoder accepts. Weighted levels are reduced in bigint so no product is ever inexact.
      const centre = (r: bigint): bigint => (r > (t - 1n) / 2n ? r - t : r);
      if (weight === 1) {
        return encryptSlots(levels.length, 1, (i) => {
          const level = levels[i]!;
          return BigInt(level > halfT ? level - tNumber : level);
        });
      }
      const w = BigInt(weight);
      return encryptSlots(levels.length, weight, (i) => {
        const r = (BigInt(levels[i]!) * w) % t;
        return centre(r < 0n ? r + t : r);
      });
    },
    dispose() {
      if (disposed) return;
      disposed = true;
      encryptor.delete();
      secretKey.delete();
    },
  };
}

/** Internal: loads a serialized secret key. Throws `invalid_key_material`. */
export function loadSecretKey(internals: ContextInternals, bytes: Uint8Array): SecretKey {
  const { seal, context } = internals;
  const secretKey = new seal.SecretKey();
  try {
    callSeal(seal, 'invalid_key_material', 'SEAL refused the secret key', () => secretKey.loadFromArray(context, bytes));
    return secretKey;
  } catch (reason) {
    secretKey.delete();
    throw reason;
  }
}
