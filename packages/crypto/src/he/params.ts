/**
 * BFV parameter presets and the per-task homomorphic-encryption context.
 *
 * Why BFV (Brakerski 2012; Fan-Vercauteren, ePrint 2012/144) and not CKKS: the coordinator
 * only adds, and BFV adds integers modulo t exactly, so the decrypted sum of quantized updates
 * is bit-exact and the only error is the quantization step. CKKS is approximate, and a CKKS
 * decryption shown to anyone without the key can leak the secret key (Li-Micciancio,
 * EUROCRYPT 2021, "On the Security of Homomorphic Encryption on Approximate Numbers"); BFV's
 * exact decoding rounds the noise away, so the decrypted sum carries no such leak.
 *
 * Security: SEAL's `SEALContext(parms, expandModChain, sec_level_type::tc128)` refuses any
 * coefficient modulus larger than the HomomorphicEncryption.org standard allows for 128-bit
 * classical security (Albrecht et al. 2018, Table 1: log2 q <= 54 for N = 2048, ternary secret).
 */
import { createHash } from 'node:crypto';
import type { ContextData, EncryptionParameters, SEALContext, BatchEncoder, Evaluator, ParmsIdType } from 'node-seal';
import { CryptoError } from '../errors.js';
import { callSeal, loadSeal } from '../seal.js';
import type { SealModule } from '../seal.js';
import { createQuantization, maxTotalWeight } from '../quantize.js';
import type { Quantization, QuantizationOptions } from '../quantize.js';

/** Names of the built-in parameter sets (all 128-bit secure, BFV, batching). */
export type ParameterPresetName = 'bfv-n2048-q44-t29' | 'bfv-n2048-q54-t29';

/** A built-in parameter set, before SEAL picks the primes. */
export interface ParameterPreset {
  readonly name: ParameterPresetName;
  /** Ring dimension N (= number of batching slots). */
  readonly polyModulusDegree: number;
  /** Bit sizes of the coefficient-modulus primes, as passed to `CoeffModulus.Create`. */
  readonly coeffModulusBits: readonly number[];
  /** Bit size of the batching plain modulus (a prime t = 1 mod 2N, from `PlainModulus.Batching`). */
  readonly plainModulusBits: number;
  /** What this preset is for. */
  readonly description: string;
}

/**
 * The built-in presets. Both use one coefficient prime: the modulus chain then has a single
 * level, so there is nothing to mod-switch to, and a seeded symmetric ciphertext uploads only
 * c0 (N words of log2 q bits) plus a 64-byte seed: about log2(q)/8 bytes per value.
 *
 * - `bfv-n2048-q44-t29` (default): 5.64 bytes/value; fresh noise budget 10 bits, 1 bit left after
 *   10^4-15,000 clients sending identical extreme updates (measured); `maxClients` 11,567.
 * - `bfv-n2048-q54-t29`: 10 more bits of noise budget for 6.9 bytes/value (11 bits left after 32,764
 *   clients, measured); 54 bits is the 128-bit-security maximum for N = 2048.
 */
export const PARAMETER_PRESETS: Readonly<Record<ParameterPresetName, ParameterPreset>> = Object.freeze({
  'bfv-n2048-q44-t29': {
    name: 'bfv-n2048-q44-t29',
    polyModulusDegree: 2048,
    coeffModulusBits: [44],
    plainModulusBits: 29,
    description: 'default: smallest upload (<= 7 bytes/value), exact sums of 10^4 clients',
  },
  'bfv-n2048-q54-t29': {
    name: 'bfv-n2048-q54-t29',
    polyModulusDegree: 2048,
    coeffModulusBits: [54],
    plainModulusBits: 29,
    description: 'more noise margin (about 10 bits) for slightly larger uploads',
  },
});

/** The default preset. */
export const DEFAULT_PRESET: ParameterPresetName = 'bfv-n2048-q44-t29';

/** A resolved parameter set, as SEAL accepted it. */
export interface HeParameters {
  readonly scheme: 'bfv';
  /** Ring dimension N; also the number of values per ciphertext (batching slots). */
  readonly polyModulusDegree: number;
  /** The coefficient-modulus primes q_i. */
  readonly coeffModulus: readonly bigint[];
  /** log2 q, the total coefficient-modulus bit count. */
  readonly coeffModulusBitCount: number;
  /** The plain modulus t (prime, t = 1 mod 2N). */
  readonly plainModulus: bigint;
  /** Batching slots per ciphertext (= N). */
  readonly slotCount: number;
  /** Classical security level enforced by SEAL, in bits. */
  readonly securityLevelBits: 128;
  /** Hex SHA-256 of SEAL's uncompressed serialization of the EncryptionParameters. */
  readonly fingerprint: string;
}

/** Builds SEAL EncryptionParameters for a preset; returns their uncompressed serialization. */
export async function encryptionParametersForPreset(name: ParameterPresetName): Promise<Uint8Array> {
  const preset = PARAMETER_PRESETS[name];
  if (preset === undefined) throw new CryptoError('invalid_argument', `unknown parameter preset ${String(name)}`);
  const seal = await loadSeal();
  return callSeal(seal, 'insecure_parameters', `preset ${name}`, () => {
    const parms = new seal.EncryptionParameters(seal.SchemeType.bfv);
    try {
      const n = preset.polyModulusDegree;
      parms.setPolyModulusDegree(n);
      const coeff = seal.CoeffModulus.Create(n, Int32Array.from(preset.coeffModulusBits));
      try {
        parms.setCoeffModulus(coeff);
      } finally {
        coeff.delete();
      }
      const plain = seal.PlainModulus.Batching(n, preset.plainModulusBits);
      try {
        parms.setPlainModulus(plain);
      } finally {
        plain.delete();
      }
      return copyBytes(parms.saveToArray(seal.ComprModeType.none) as Uint8Array);
    } finally {
      parms.delete();
    }
  });
}

/** Hex SHA-256 (FIPS 180-4) of serialized EncryptionParameters: the parameter fingerprint. */
export function parameterFingerprint(encryptionParameters: Uint8Array): string {
  return createHash('sha256').update(encryptionParameters).digest('hex');
}

/** The public description of a task's key that a context is opened from. */
export interface TaskKeyInfo {
  readonly taskId: string;
  /** UUID of the key; payloads carry it, so updates under another key are refused. */
  readonly keyId: string;
  /** Hex SHA-256 of `encryptionParameters`. */
  readonly fingerprint: string;
  /** SEAL's uncompressed serialization of the EncryptionParameters. */
  readonly encryptionParameters: Uint8Array;
  readonly quantization: QuantizationOptions;
}

/**
 * A task's homomorphic-encryption context: SEAL context, batch encoder and evaluator for one
 * parameter set, plus the task's key id and quantization. Holds no key. Share one per task and
 * process; free it with `dispose()` after the encryptors/accumulators/decryptors made from it.
 */
export interface HeContext {
  readonly taskId: string;
  readonly keyId: string;
  readonly parameters: HeParameters;
  readonly quantization: Quantization;
  /** Largest total client weight one sum may hold without overflow: floor(((t-1)/2) / maxAbsLevel). */
  readonly maxTotalWeight: number;
  /** Largest number of client updates one sum may hold with >= 1 bit of noise budget left ({@link maxClientsForNoise}). */
  readonly maxClients: number;
  /** Frees the SEAL objects. Idempotent. */
  dispose(): void;
}

/** Internal: the SEAL objects behind a context. */
export interface ContextInternals {
  readonly seal: SealModule;
  readonly context: SEALContext;
  readonly encoder: BatchEncoder;
  readonly evaluator: Evaluator;
  readonly parmsId: ParmsIdType;
  /** The four 64-bit words of the first data level's parms_id. */
  readonly parmsIdWords: readonly bigint[];
  /** Largest bit count of one coefficient word (max over the primes). */
  readonly wordBits: number;
  readonly fingerprintBytes: Uint8Array;
  readonly keyIdBytes: Uint8Array;
  disposed: boolean;
}

const INTERNALS = new WeakMap<HeContext, ContextInternals>();

/** Internal: the live SEAL objects of `ctx`; throws `disposed` or `invalid_argument`. */
export function contextInternals(ctx: HeContext): ContextInternals {
  const internals = INTERNALS.get(ctx);
  if (internals === undefined) throw new CryptoError('invalid_argument', 'not a context made by createHeContext');
  if (internals.disposed) throw new CryptoError('disposed', 'the HeContext was disposed');
  return internals;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** UUID text to its 16 bytes. Throws `invalid_argument`. */
export function uuidToBytes(uuid: string): Uint8Array {
  if (!UUID.test(uuid)) throw new CryptoError('invalid_argument', `keyId must be a UUID, got ${JSON.stringify(uuid)}`);
  return Uint8Array.from(Buffer.from(uuid.replaceAll('-', ''), 'hex'));
}

/** 16 bytes to UUID text (lower case). */
export function bytesToUuid(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * Opens a task's context from its public key information (the coordinator material, or the
 * public fields of the device material; a secret key, if present, is not read). Verifies the
 * fingerprint, that SEAL accepts the parameters at 128-bit security, that they are BFV with
 * batching, and the quantization. Throws `parameter_mismatch`, `insecure_parameters`,
 * `invalid_argument` or `seal_unavailable`.
 */
export async function createHeContext(info: TaskKeyInfo): Promise<HeContext> {
  const seal = await loadSeal();
  const fingerprint = parameterFingerprint(info.encryptionParameters);
  if (fingerprint !== info.fingerprint) {
    throw new CryptoError(
      'parameter_mismatch',
      `encryption parameters hash to ${fingerprint}, the key material says ${info.fingerprint}`,
    );
  }
  const quantization = createQuantization(info.quantization);
  const keyIdBytes = uuidToBytes(info.keyId);

  const parms = new seal.EncryptionParameters(seal.SchemeType.bfv);
  let context: SEALContext | undefined;
  try {
    context = callSeal(seal, 'insecure_parameters', 'SEAL refused the encryption parameters', () => {
      parms.loadFromArray(info.encryptionParameters);
      return new seal.SEALContext(parms, true, seal.SecLevelType.tc128);
    });
    const description = describeContext(seal, context, parms, fingerprint);
    const encoder = new seal.BatchEncoder(context);
    const evaluator = new seal.Evaluator(context);
    const parmsId = context.firstParmsId();
    const total = maxTotalWeight(quantization, description.plainModulus);
    if (total < quantization.weightCap) {
      throw new CryptoError(
        'headroom_exceeded',
        `one client at weightCap ${quantization.weightCap} can overflow plain modulus ${description.plainModulus} ` +
          `(largest total weight ${total})`,
      );
    }
    const maxClients = maxClientsForNoise(description);
    const internals: ContextInternals = {
      seal,
      context,
      encoder,
      evaluator,
      parmsId,
      parmsIdWords: Array.from(parmsId.values() as BigUint64Array),
      wordBits: Math.max(...description.coeffModulus.map((q) => q.toString(2).length)),
      fingerprintBytes: Uint8Array.from(Buffer.from(fingerprint, 'hex')),
      keyIdBytes,
      disposed: false,
    };
    const ctx: HeContext = Object.freeze({
      taskId: info.taskId,
      keyId: bytesToUuid(keyIdBytes),
      parameters: description,
      quantization,
      maxTotalWeight: total,
      maxClients,
      dispose(): void {
        if (internals.disposed) return;
        internals.disposed = true;
        parmsId.delete();
        evaluator.delete();
        encoder.delete();
        internals.context.delete();
      },
    });
    INTERNALS.set(ctx, internals);
    context = undefined; // owned by ctx now
    return ctx;
  } finally {
    context?.delete();
    parms.delete();
  }
}

function describeContext(
  seal: SealModule,
  context: SEALContext,
  parms: EncryptionParameters,
  fingerprint: string,
): HeParameters {
  if (!context.parametersSet()) {
    throw new CryptoError('insecure_parameters', 'SEAL rejected the encryption parameters at 128-bit security');
  }
  if (parms.scheme().value !== seal.SchemeType.bfv.value) {
    throw new CryptoError('insecure_parameters', 'only BFV parameters are supported');
  }
  const data: ContextData = context.firstContextData();
  try {
    const qualifiers = data.qualifiers();
    try {
      if (!qualifiers.usingBatching) {
        throw new CryptoError('insecure_parameters', 'the plain modulus does not support batching (t = 1 mod 2N prime)');
      }
      if (qualifiers.securityLevel.value !== 128) {
        throw new CryptoError('insecure_parameters', 'parameters are not at 128-bit security');
      }
    } finally {
      qualifiers.delete();
    }
    const coeff = parms.coeffModulus();
    const coeffModulus: bigint[] = [];
    try {
      for (let i = 0; i < coeff.size(); i++) {
        const modulus = coeff.get(i);
        if (modulus === undefined) continue;
        coeffModulus.push(modulus.value());
        modulus.delete();
      }
    } finally {
      coeff.delete();
    }
    const plain = parms.plainModulus();
    const plainModulus = plain.value();
    plain.delete();
    const n = parms.polyModulusDegree();
    return Object.freeze({
      scheme: 'bfv' as const,
      polyModulusDegree: n,
      coeffModulus: Object.freeze(coeffModulus),
      coeffModulusBitCount: data.totalCoeffModulusBitCount(),
      plainModulus,
      slotCount: n,
      securityLevelBits: 128 as const,
      fingerprint,
    });
  } finally {
    data.delete();
  }
}

/** Standard deviation of SEAL's fresh encryption error (centred binomial, `noise_standard_deviation`). */
const NOISE_SIGMA = 3.2;

/**
 * The largest number n of fresh symmetric BFV ciphertexts whose sum keeps at least 1 bit of
 * invariant noise budget, with overwhelming probability for honest clients.
 *
 * Decrypting a sum of n ciphertexts gives t/q · (Σ round(q·mᵢ/t) − Σ eᵢ) (Fan-Vercauteren 2012,
 * §3-4, with SEAL's rounded scaling), which is correct while the error |Σ δᵢ − Σ eᵢ| stays below
 * Δ/2, Δ = q/t. The rounding errors |δᵢ| <= 1/2 may all be equal (clients sending the same clipped
 * value), so they are bounded by n/2; the fresh errors are independent with standard deviation
 * σ = 3.2, bounded by 7σ·sqrt(n) (a 7σ tail, 2.6e-12 per coefficient). Keeping 1 bit of budget
 * (the decryptor's check) means error <= Δ/4:  n/2 + 7σ·sqrt(n) <= q / (4t).
 * Default preset: about 11,500 (measured with identical extreme updates: 1 bit left at 15,000).
 */
export function maxClientsForNoise(parameters: Pick<HeParameters, 'coeffModulus' | 'plainModulus'>): number {
  const q = parameters.coeffModulus.reduce((product, prime) => product * Number(prime), 1);
  const limit = q / (4 * Number(parameters.plainModulus));
  const b = 7 * NOISE_SIGMA;
  // Solve x²/2 + b·x = limit for x = sqrt(n).
  const x = -b + Math.sqrt(b * b + 2 * limit);
  return Math.max(0, Math.min(Math.floor(x * x), 0xffff_ffff));
}

/** Copies bytes that SEAL returned (they may view WebAssembly memory) into a fresh array. */
export function copyBytes(bytes: Uint8Array): Uint8Array {
  return Uint8Array.prototype.slice.call(bytes);
}
