import {
  capWeight,
  createHeContext,
  createSumDecryptor,
  createUpdateEncryptor,
  type DeviceKeyMaterial,
  type HeContext,
  type SumDecryptor,
  type UpdateEncryptor,
} from '@veil/crypto';
import type { UpdateMiddleware } from '../middleware.js';

/**
 * A device's side of encrypted aggregation (@veil/crypto, BFV): encrypts its
 * weighted update, and turns the coordinator's encrypted round sums back into
 * model weights. Only key holders (devices of the federation) can do either.
 */
export interface DeviceEncryption {
  readonly keyId: string;
  /** Largest weight an update may carry (the task's weight cap). */
  readonly weightCap: number;
  /** Update middleware: weight = min(exampleCount, weightCap), then clip, quantise, encrypt. Must run last. */
  readonly middleware: UpdateMiddleware;
  /** w_v = w_{v-1} + Σ w_i Δ_i / Σ w_i, from the encrypted sum of round v. */
  applySum(weights: Float32Array, sumPayload: Uint8Array): Float32Array;
  dispose(): void;
}

/** Opens the device key bundle (loads SEAL once per process). */
export async function createDeviceEncryption(deviceKey: DeviceKeyMaterial): Promise<DeviceEncryption> {
  const ctx: HeContext = await createHeContext(deviceKey);
  let encryptor: UpdateEncryptor | null = null;
  let decryptor: SumDecryptor | null = null;
  const weightCap = ctx.quantization.weightCap;
  return {
    keyId: ctx.keyId,
    weightCap,
    middleware: async (update, roundCtx, next) => {
      encryptor ??= createUpdateEncryptor(ctx, { deviceKey });
      const weight = Math.min(capWeight(update.exampleCount, weightCap), roundCtx.maxExampleCount);
      const payload = encryptor.encrypt(update.delta, weight);
      return next({ ...update, exampleCount: weight, payload, encoding: 'bfv-v1', notes: { ...update.notes, encrypted: true } }, roundCtx);
    },
    applySum(weights, sumPayload) {
      decryptor ??= createSumDecryptor(ctx, { deviceKey, valueCount: weights.length });
      const { mean } = decryptor.decryptMean(sumPayload);
      const next = new Float32Array(weights.length);
      for (let i = 0; i < weights.length; i++) next[i] = weights[i]! + mean[i]!;
      return next;
    },
    dispose() {
      encryptor?.dispose();
      decryptor?.dispose();
      ctx.dispose();
    },
  };
}

/**
 * Reconstructs an encrypted task's global model for a key holder: the initial
 * (plaintext) weights plus each round's encrypted sum, applied in order
 * (the chain `GET /v1/tasks/:id/model` lists).
 */
export async function decryptGlobalModel(options: {
  deviceKey: DeviceKeyMaterial;
  initial: Float32Array;
  sums: readonly Uint8Array[];
}): Promise<Float32Array> {
  const encryption = await createDeviceEncryption(options.deviceKey);
  try {
    let weights = options.initial;
    for (const sum of options.sums) weights = encryption.applySum(weights, sum);
    return weights;
  } finally {
    encryption.dispose();
  }
}
