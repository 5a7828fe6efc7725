export { PrivacyError } from './errors.js';
export type { PrivacyErrorCode } from './errors.js';

export { createCryptoRng, createSeededRng, createSequenceRng } from './rng.js';
export type { Rng } from './rng.js';

export { DDG_RDP_ORDERS, DEFAULT_RDP_ORDERS } from './accounting/orders.js';
export { computeRdp } from './accounting/sampled-gaussian.js';
export type { ComputeRdpOptions } from './accounting/sampled-gaussian.js';
export { rdpToEpsilon } from './accounting/conversion.js';
export type { EpsilonResult, RdpToEpsilonOptions } from './accounting/conversion.js';
export { computeEpsilon, createRdpAccountant } from './accounting/accountant.js';
export type {
  ComputeEpsilonOptions,
  PrivacyBudget,
  PrivacyEvent,
  RdpAccountant,
  RdpAccountantOptions,
  RdpVectorEvent,
  SampledGaussianEvent,
} from './accounting/accountant.js';
export { calibrateNoiseMultiplier } from './accounting/calibration.js';
export type { CalibrateNoiseMultiplierOptions, CalibrationResult } from './accounting/calibration.js';
export { createLocalPrivacyTracker } from './accounting/local-tracker.js';
export type { LocalPrivacyTracker, LocalPrivacyTrackerOptions } from './accounting/local-tracker.js';

export { addGaussianNoise, clipToNorm, fillGaussian, getDefaultRng, privatizeLocalUpdate } from './mechanisms/gaussian.js';
export type {
  ClipResult,
  GaussianNoiseOptions,
  LocalPrivatizeResult,
  UpdateVector,
} from './mechanisms/gaussian.js';
export { createDiscreteGaussianSampler, discreteGaussianPmf, fastDiscreteGaussianVariance } from './mechanisms/discrete-gaussian.js';
export type { DiscreteGaussianSampler, DiscreteGaussianSamplerOptions } from './mechanisms/discrete-gaussian.js';
export {
  DEFAULT_ROUNDING_BETA,
  centerModulo,
  checkModularHeadroom,
  computeDistributedDiscreteGaussianEpsilon,
  computeDistributedDiscreteGaussianRdp,
  conditionalRandomizedRound,
  ddgTau,
  decodeDistributedDiscreteGaussian,
  encodeDistributedDiscreteGaussian,
  inverseRandomizedHadamard,
  nextPowerOfTwo,
  randomizedHadamard,
  reduceModulo,
  roundedL2NormBound,
} from './mechanisms/distributed-discrete-gaussian.js';
export type {
  ConditionalRoundingOptions,
  DdgAccountingParams,
  DdgClientOptions,
  DdgClientResult,
  DdgServerOptions,
  ModularHeadroomOptions,
  ModularHeadroomResult,
} from './mechanisms/distributed-discrete-gaussian.js';

export {
  formatPrivacyResult,
  parsePrivacyArgs,
  runCalibrateCommand,
  runEpsilonCommand,
  runPrivacyCommand,
} from './cli.js';
export type {
  CalibrateCommandArgs,
  EpsilonCommandArgs,
  PrivacyCommandArgs,
  PrivacyCommandResult,
} from './cli.js';
