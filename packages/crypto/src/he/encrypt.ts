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

  return {
    encrypt(values, weight) {
      if (disposed) throw new CryptoError('disposed', 'the UpdateEncryptor was disposed');
      contextInternals(ctx);
      if (!(values instanceof Float32Array || values instanceof Float64Array)) {
        throw new CryptoError('invalid_argument', 'values must be a Float32Array or Float64Array');
      }
      checkValueCount(values.length);
      if (!Number.isSafeInteger(weight) || weight < 1 || weight > quantization.weightCap) {
        throw new CryptoError('invalid_argument', `weight must be an integer in [1, ${quantization.weightCap}], got ${weight}`);
      }
      const count = ciphertextCountFor(ctx, values.length);
      const ciphertexts: Uint8Array[] = [];
      const plaintext = new seal.Plaintext();
      try {
        callSeal(seal, 'internal', 'encryption failed', () => {
          for (let c = 0; c < count; c++) {
            const start = c * slots;
            const end = Math.min(start + slots, values.length);
            for (let i = start; i < end; i++) {
              slotValues[i - start] = BigInt(quantizeValue(values[i]!, quantization) * weight);
            }
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
          valueCount: values.length,
          clientCount: 1,
          totalWeight: weight,
        },
        ciphertexts,
      );
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
