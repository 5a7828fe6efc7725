export { CryptoError } from './errors.js';
export type { CryptoErrorCode } from './errors.js';

export { loadSeal, sealRuntimeStats } from './seal.js';
export type { SealModule, SealRuntimeStats } from './seal.js';

export {
  DEFAULT_CLIP_MAX_ABS,
  DEFAULT_STEP,
  DEFAULT_WEIGHT_CAP,
  createQuantization,
  quantize,
  quantizeValue,
  dequantize,
  roundHalfAwayFromZero,
  toResidue,
  centredDecode,
  capWeight,
  maxTotalWeight,
  checkHeadroom,
} from './quantize.js';
export type { Quantization, QuantizationOptions, Headroom, HeadroomOptions } from './quantize.js';

export {
  DEFAULT_PRESET,
  PARAMETER_PRESETS,
  createHeContext,
  encryptionParametersForPreset,
  parameterFingerprint,
  maxClientsForNoise,
} from './he/params.js';
export type { HeContext, HeParameters, ParameterPreset, ParameterPresetName, TaskKeyInfo } from './he/params.js';

export {
  KEY_FORMAT_VERSION,
  COORDINATOR_KEY_FILE,
  DEVICE_KEY_FILE,
  generateKeyBundle,
  serializeKeyMaterial,
  parseCoordinatorKeyMaterial,
  parseDeviceKeyMaterial,
  writeKeyBundle,
  readCoordinatorKeyMaterial,
  readDeviceKeyMaterial,
} from './he/keys.js';
export type { CoordinatorKeyMaterial, DeviceKeyMaterial, KeyBundle, KeyBundleOptions, KeyBundlePaths } from './he/keys.js';

export { PAYLOAD_FORMAT_VERSION, readPayloadHeader } from './he/payload.js';
export type { CiphertextCodec, PayloadHeader } from './he/payload.js';

export { createUpdateEncryptor } from './he/encrypt.js';
export type { UpdateEncryptor, UpdateEncryptorOptions } from './he/encrypt.js';

export { createCiphertextAccumulator, loadUpdate } from './he/aggregate.js';
export type { CiphertextAccumulator, CiphertextAccumulatorOptions, LoadedUpdate } from './he/aggregate.js';

export { createSumDecryptor } from './he/decrypt.js';
export type { SumDecryptor, SumDecryptorOptions, DecryptedSum, DecryptedMean } from './he/decrypt.js';
