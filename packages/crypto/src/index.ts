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

export { PAYLOAD_FORMAT_VERSION, maxUpdatePayloadBytes, readPayloadHeader } from './he/payload.js';
export type { CiphertextCodec, PayloadHeader } from './he/payload.js';

export { maxUpdateBytes } from './update-size.js';
export type { UpdateSizeInput } from './update-size.js';

export { createUpdateEncryptor } from './he/encrypt.js';
export type { UpdateEncryptor, UpdateEncryptorOptions } from './he/encrypt.js';

export { createCiphertextAccumulator, loadUpdate } from './he/aggregate.js';
export type { CiphertextAccumulator, CiphertextAccumulatorOptions, LoadedUpdate } from './he/aggregate.js';

export { createSumDecryptor } from './he/decrypt.js';
export type { SumDecryptor, SumDecryptorOptions, DecryptedSum, DecryptedMean } from './he/decrypt.js';

// Committee secure aggregation (issue 11): see committee/README.md.
export { canonicalJson, canonicalBytes } from './committee/canonical.js';
export {
  secureRandomBytes,
  generateX25519KeyPair,
  generateEd25519KeyPair,
  generateCustodianKeys,
  x25519PublicKey,
  prepareX25519PrivateKey,
  type X25519PrivateKey,
  prepareEd25519PrivateKey,
  type Ed25519PrivateKey,
  ed25519PublicKey,
  ed25519Sign,
  ed25519Verify,
  custodianFingerprint,
  formatFingerprint,
} from './committee/keys.js';
export type { RandomBytes, RawKeyPair, CustodianKeys } from './committee/keys.js';
export { sealBase, openBase, HPKE_ENC_LENGTH, HPKE_TAG_LENGTH } from './committee/hpke.js';
export type { OpenBaseOptions } from './committee/hpke.js';
export type { SealBaseOptions } from './committee/hpke.js';
export {
  COMMITTEE_PARAMS_ID,
  COMMITTEE_SHARE_MODULUS,
  COMMITTEE_RING_DEGREE,
  COMMITTEE_Q,
  COMMITTEE_NOISE_SIGMA,
  MAX_COMMITTEE_SIZE,
  buildTaskDescriptor,
  chooseC0Width,
  encodeDescriptor,
  descriptorHash,
  descriptorHashHex,
  parseDescriptorHash,
  signDescriptor,
  verifyDescriptorSignature,
  validateDescriptor,
  minimumDeltaBits,
  committeeMember,
} from './committee/descriptor.js';
export type {
  BuildTaskDescriptorOptions,
  CommitteeMember,
  DescriptorCheck,
  DescriptorDp,
  DescriptorEncoding,
  DescriptorFloors,
  SignedTaskDescriptor,
  TaskDescriptor,
} from './committee/descriptor.js';
export {
  MAX_DEVICE_ID_LENGTH,
  issueDeviceCertificate,
  verifyDeviceCertificate,
  encodeManifest,
  manifestDigest,
  signManifest,
  verifyManifest,
  sha256Hex,
} from './committee/manifest.js';
export type {
  CertificateSubject,
  DeviceCertificate,
  CertificateCache,
  ManifestCheckOptions,
  SignedManifest,
  UploadManifest,
  VerifiedManifest,
} from './committee/manifest.js';
export { committeeDdgParams, committeeRotationSeed, committeeValueCount } from './committee/dp.js';
export type { CommitteeDdgParams } from './committee/dp.js';
export {
  SHARE_BYTES,
  hashD,
  encodeAnswer,
  buildAnswer,
  signAnswer,
  verifyAnswer,
  encodeShareBytes,
  decodeShareBytes,
  verifyAnswerStatement,
} from './committee/answer.js';
export type { AnswerCheckOptions, AnswerStatement, CustodianAnswer, SignedCustodianAnswer } from './committee/answer.js';
export { SEALED_SHARE_BYTES, shareAad, sealShare, openShare } from './committee/sealing.js';
export type { ShareBinding } from './committee/sealing.js';
export { fillUniformModP, shareSecret, addShareInto, lagrangeAtZero, reconstructCentred } from './committee/shamir.js';
export type { IndexedShare, ShareSecretOptions } from './committee/shamir.js';
export {
  Q as COMMITTEE_RING_MODULUS,
  PACKED_POLY_BYTES,
  mulModQ,
  nttForward,
  nttInverse,
  negacyclicMultiply,
  derivePublicPolynomialNtt,
  pack44,
  packed44InRange,
  unpack44,
} from './committee/ring.js';
export {
  COMMITTEE_HEADER_SLOTS,
  C0_HEADER_BYTES,
  polynomialCount,
  c0PayloadBytes,
  sampleTernary,
  encodeUpdate,
  encryptUpdate,
  quantizationOf,
  encodeC0Payload,
  checkC0Payload,
  checkC0PayloadRange,
  decodeC0Payload,
  createC0Accumulator,
  restoreC0Accumulator,
  decryptSum,
} from './committee/rlwe.js';
// The worker-thread decryption pool (createDecryptPool) is Node only: it is the subpath
// `@veil/crypto/decrypt-pool`, so that this index stays bundlable for browsers (the SDK's browser build).
export { C0_BITS, isC0Bits } from './committee/compress.js';
export type { C0Bits } from './committee/compress.js';
export type {
  C0Accumulator,
  C0AccumulatorOptions,
  DecryptSumOptions,
  DecryptedAggregate,
  EncryptUpdateOptions,
  RoundBinding,
} from './committee/rlwe.js';
export {
  MAX_MANIFEST_BYTES,
  buildCommitteeUpload,
  deriveRoundSeed,
  encodeCommitteeUploadPayload,
  committeeUploadBytesWithoutManifest,
  verifyCommitteeUpload,
} from './committee/upload.js';
export type { CommitteeUpload, CommitteeUploadCheck, CommitteeUploadOptions, VerifiedCommitteeUpload } from './committee/upload.js';
