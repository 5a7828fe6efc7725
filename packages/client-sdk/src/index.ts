export { createClient, consoleLogger } from './client.js';
export type { ClientCredentials, ClientOptions, CommitteeClientOptions, FinalEvaluation, RoundReport, RunOptions, RunSummary, SdkLogger, VeilClient } from './client.js';
export { createCommitteeEncryption } from './mods/committee.js';
export type { CommitteeDpPins, CommitteeEncryption, CommitteeEncryptionOptions, CommitteePins } from './mods/committee.js';
export { ClientError } from './errors.js';
export type { ClientErrorCode } from './errors.js';
export { composeMiddleware } from './middleware.js';
export type { LocalUpdate, RoundContext, UpdateEncodingName, UpdateHandler, UpdateMiddleware } from './middleware.js';
export { createDeviceEncryption, decryptGlobalModel } from './mods/encrypt.js';
export type { DeviceEncryption } from './mods/encrypt.js';
export { withRetry } from './retry.js';
export type { RetryOptions } from './retry.js';
export { createGrpcTransport, resolveCoordinatorAddress } from './transport/grpc-transport.js';
export type { GrpcTransportOptions, TlsOptions } from './transport/grpc-transport.js';
export { createConnectTransport } from './transport/connect-transport.js';
export type { ConnectTransportOptions } from './transport/connect-transport.js';
export type {
  Assignment,
  AssignmentResponse,
  DownloadedModel,
  JoinResult,
  ModelEncodingName,
  TaskCommittee,
  TaskEncryption,
  Transport,
  UpdateHeader,
  WaitOptions,
  WaitWithModelOptions,
} from './transport/transport.js';
export { initTensorflow } from './training/backend.js';
export type { InitTensorflowOptions, TensorflowBackend, TensorflowRuntime } from './training/backend.js';
export { buildModel, flattenWeights, describeModel } from './training/model.js';
export { loadGlobalModel, taskBody, taskModelBody, taskModelBodyFromSpec } from './training/task-model.js';
export type { GlobalModel, LoadGlobalModelOptions, TaskModelBody } from './training/task-model.js';
export { trainLocal, evaluateLocal } from './training/train.js';
export type { EvaluateLocalResult, TrainLocalResult } from './training/train.js';
export type { LocalDataset, ModelSpec, Tf, WeightSpec } from './training/types.js';
export { createDistributedDpMiddleware, createLocalDpMiddleware, paddedDimension, rotationSeedForVersion } from './mods/dp.js';
export type {
  DistributedDpMiddleware,
  DistributedDpOptions,
  LocalDpMiddleware,
  LocalDpOptions,
  LocalDpState,
  LocalPrivacyStatus,
} from './mods/dp.js';
export type { DistributedDpSumOptions } from './mods/encrypt.js';
export type { IntegerLevels } from './middleware.js';
export { computeCalibrationStatistics, exportModelOnnx } from './export/onnx.js';
export type { CalibrationStatisticsOptions } from './export/onnx.js';
