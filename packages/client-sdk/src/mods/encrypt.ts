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
import { decodeDistributedDiscreteGaussian } from '@veil/privacy';
import { ClientError } from '../errors.js';
import type { UpdateMiddleware } from '../middleware.js';
import { paddedDimension, rotationSeedForVersion } from './dp.js';

/** Options of {@link DeviceEncryption.applyDistributedDpSum}: the round's DDG parameters. */
export interface DistributedDpSumOptions {
  /** 1/γ the devices used. Required. */
  scale: number;
  /** m the devices used; must equal the task's BFV plain modulus t. Required. */
  modulus: number;
  /** Rotation seed of the round the sum belongs to. Required. */
  rotationSeed: number;
  /** Length of the model update before padding. Default: `weights.length`. */
  originalDimension?: number;
  /**
   * Refuse (`integrity`) a sum of fewer client updates than this: the
   * accounting assumed at least this many noise shares. Default 1.
   */
  minClients?: number;
}

/**
 * A device's side of encrypted aggregation (@veil/crypto, BFV): encrypts its
 * weighted update, and turns the coordinator's encrypted round sums back into
 * model weights. Only key holders (devices of the federation) can do either.
 */
export interface DeviceEncryption {
  readonly keyId: string;
  /** Largest weight an update may carry (the task's weight cap). */
  readonly weightCap: number;
  /** BFV plain modulus t, the modulus distributed-DP residues must use. */
  readonly plainModulus: number;
  /**
   * Update middleware; must run last. Weight = min(exampleCount, weightCap),
   * then clip, quantise, encrypt — or, when a distributed-DP middleware set
   * `update.levels`, encrypt those residues exactly with weight 1
   * (`encryptLevels`), after checking their modulus is t.
   */
  readonly middleware: UpdateMiddleware;
  /** The key's quantisation step (model units per level): values are rounded to it before encryption. */
  readonly quantizationStep: number;
  /**
   * Σ w_i x_i / Σ w_i of an encrypted sum of `valueCount` values (e.g. a shared-key calibration
   * round's statistics, issue 16), with the number of reports it holds.
   */
  decryptMean(sumPayload: Uint8Array, valueCount: number): { mean: Float64Array; clientCount: number };
  /** w_v = w_{v-1} + Σ w_i Δ_i / Σ w_i, from the encrypted sum of round v. */
  applySum(weights: Float32Array, sumPayload: Uint8Array): Float32Array;
  /**
   * The mean of a sum of n reports run through distributed DP (`originalDimension` values): decrypts
   * the level sums (Σ residues mod t, centred), decodes them with `decodeDistributedDiscreteGaussian`
   * (Kairouz, Liu & Steinke 2021: centre mod m, unscale, undo the rotation, unpad) and divides by n,
   * the number of reports in the sum (payload header; each weighs 1). Refuses (`integrity`) a sum of
   * another length, a weighted one, or one of fewer than `minClients` reports. The result is the mean
   * of the clipped reports plus the summed noise / n (and rounding error).
   */
  decryptDistributedDpMean(sumPayload: Uint8Array, options: DistributedDpSumOptions & { originalDimension: number }): { mean: Float64Array; clientCount: number };
  /**
   * w_v = w_{v-1} + (decoded DDG sum) / n for a round run with distributed DP:
   * decrypts the level sums (Σ residues mod t, centred), decodes them with
   * `decodeDistributedDiscreteGaussian` (Kairouz, Liu & Steinke 2021: centre
   * mod m, unscale, undo the rotation, unpad) and divides by n, the number of
   * client updates in the sum (payload header). The result is the mean of the
   * clipped updates plus the summed noise / n (and rounding error).
   */
  applyDistributedDpSum(weights: Float32Array, sumPayload: Uint8Array, options: DistributedDpSumOptions): Float32Array;
  dispose(): void;
}

/** Opens the device key bundle (loads SEAL once per process). */
export async function createDeviceEncryption(deviceKey: DeviceKeyMaterial): Promise<DeviceEncryption> {
  const ctx: HeContext = await createHeContext(deviceKey);
  let encryptor: UpdateEncryptor | null = null;
  let decryptor: SumDecryptor | null = null;
  let levelDecryptor: SumDecryptor | null = null;
  const weightCap = ctx.quantization.weightCap;
  const plainModulus = Number(ctx.parameters.plainModulus);
  /** The ciphertext sum is the mod-t sum; DDG needs the mod-m sum, so m must be t. */
  const requirePlainModulus = (modulus: number): void => {
    if (modulus !== plainModulus) {
      throw new ClientError(
        'failed_precondition',
        `distributed DP uses modulus ${modulus}, but the encrypted sum is taken mod the BFV plain modulus ${plainModulus}: they must be equal`,
      );
    }
  };
  const decryptDistributedDpMean: DeviceEncryption['decryptDistributedDpMean'] = (sumPayload, options) => {
    const { scale, modulus, rotationSeed, originalDimension } = options;
    const minClients = options.minClients ?? 1;
    requirePlainModulus(modulus);
    levelDecryptor ??= createSumDecryptor(ctx, { deviceKey });
    const sum = levelDecryptor.decrypt(sumPayload);
    const dimension = paddedDimension(originalDimension);
    if (sum.levelSums.length !== dimension) {
      throw new ClientError('integrity', `the sum holds ${sum.levelSums.length} values, distributed DP over ${originalDimension} values gives ${dimension}`);
    }
    if (sum.totalWeight !== sum.clientCount) {
      throw new ClientError('integrity', `a distributed-DP sum is unweighted, but its total weight ${sum.totalWeight} is not its client count ${sum.clientCount}`);
    }
    if (sum.clientCount < minClients) {
      throw new ClientError('integrity', `the sum holds ${sum.clientCount} updates, fewer than the ${minClients} the privacy accounting assumed`);
    }
    const decoded = decodeDistributedDiscreteGaussian(sum.levelSums, { scale, modulus, originalDimension, rotationSeed });
    const mean = new Float64Array(originalDimension);
    for (let i = 0; i < originalDimension; i++) mean[i] = decoded[i]! / sum.clientCount;
    return { mean, clientCount: sum.clientCount };
  };
  return {
    keyId: ctx.keyId,
    weightCap,
    plainModulus,
    quantizationStep: ctx.quantization.step,
    decryptMean(sumPayload, valueCount) {
      const d = createSumDecryptor(ctx, { deviceKey, valueCount });
      try {
        const { mean, clientCount } = d.decryptMean(sumPayload);
        return { mean: Float64Array.from(mean), clientCount };
      } finally {
        d.dispose();
      }
    },
    middleware: async (update, roundCtx, next) => {
      encryptor ??= createUpdateEncryptor(ctx, { deviceKey });
      if (update.levels !== undefined) {
        requirePlainModulus(update.levels.modulus);
        const payload = encryptor.encryptLevels(update.levels.residues, 1);
        return next({ ...update, exampleCount: 1, payload, encoding: 'bfv-v1', notes: { ...update.notes, encrypted: true } }, roundCtx);
      }
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
    decryptDistributedDpMean,
    applyDistributedDpSum(weights, sumPayload, options) {
      const originalDimension = options.originalDimension ?? weights.length;
      if (originalDimension !== weights.length) {
        throw new ClientError('invalid_argument', `originalDimension ${originalDimension} differs from the model's ${weights.length} weights`);
      }
      const { mean } = decryptDistributedDpMean(sumPayload, { ...options, originalDimension });
      const next = new Float32Array(weights.length);
      for (let i = 0; i < weights.length; i++) next[i] = weights[i]! + mean[i]!;
      return next;
    },
    dispose() {
      encryptor?.dispose();
      decryptor?.dispose();
      levelDecryptor?.dispose();
      ctx.dispose();
    },
  };
}

/**
 * Reconstructs an encrypted task's global model for a key holder: the initial
 * (plaintext) weights plus each round's encrypted sum, applied in order
 * (the chain `GET /v1/tasks/:id/model` lists). A task run with distributed DP
 * (`distributedDp`, the model document's `veil.distributedDp`) has DDG sums:
 * version v's is decoded with the rotation seed `rotationSeedForVersion(taskId, v)`.
 */
export async function decryptGlobalModel(options: {
  deviceKey: DeviceKeyMaterial;
  initial: Float32Array;
  sums: readonly Uint8Array[];
  /** The task's distributed DP: its id (the rotation seeds), 1/γ, modulus and fewest noise shares. Default none. */
  distributedDp?: { taskId: string; scale: number; modulus: number; minNoiseClients: number };
}): Promise<Float32Array> {
  const encryption = await createDeviceEncryption(options.deviceKey);
  const ddg = options.distributedDp;
  try {
    let weights = options.initial;
    for (const [k, sum] of options.sums.entries()) {
      weights =
        ddg === undefined
          ? encryption.applySum(weights, sum)
          : encryption.applyDistributedDpSum(weights, sum, {
              scale: ddg.scale,
              modulus: ddg.modulus,
              rotationSeed: rotationSeedForVersion(ddg.taskId, k + 1),
              minClients: ddg.minNoiseClients,
            });
    }
    return weights;
  } finally {
    encryption.dispose();
  }
}
