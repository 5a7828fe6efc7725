export {
  MAX_CHUNK_BYTES,
  MAX_MESSAGE_BYTES,
  MAX_WAIT_MS,
  MAX_CLIENT_NAME_LENGTH,
  MAX_METRICS,
  MAX_METRIC_NAME_LENGTH,
  GRPC_CHANNEL_OPTIONS,
} from './limits.js';
export { federationServiceDefinition, federationMethods, createFederationServiceClient, protoRoot, EncodedModelChunk, encodeModelChunk, MalformedMessage, isMalformedMessage } from './service.js';
export { sha256, chunkPayload, float32ToBytes, float32Bytes, bytesToFloat32, float32View } from './codec.js';
export { countParameters, toConfigMessages, fromConfigMessages } from './model.js';
export type { WeightSpec, ModelSpec, FitConfigValue, ConfigValueMessage } from './model.js';
export type { CalibrationFileJson, EncryptedCalibrationFileJson, CalibrationRoundsJson } from './calibration.js';

export type { FederationServiceClient, FederationServiceHandlers } from './gen/veil/v1/FederationService.js';
export type { EncryptionSpec, EncryptionSpec__Output } from './gen/veil/v1/EncryptionSpec.js';
export type { PrivacySpec, PrivacySpec__Output } from './gen/veil/v1/PrivacySpec.js';
export type { GetTaskRequest, GetTaskRequest__Output } from './gen/veil/v1/GetTaskRequest.js';
export type { JoinRequest, JoinRequest__Output } from './gen/veil/v1/JoinRequest.js';
export type { JoinResponse, JoinResponse__Output } from './gen/veil/v1/JoinResponse.js';
export type { TaskSpec, TaskSpec__Output } from './gen/veil/v1/TaskSpec.js';
export type { WaitForAssignmentRequest, WaitForAssignmentRequest__Output } from './gen/veil/v1/WaitForAssignmentRequest.js';
export type { WaitForAssignmentResponse, WaitForAssignmentResponse__Output } from './gen/veil/v1/WaitForAssignmentResponse.js';
export type { Assignment, Assignment__Output } from './gen/veil/v1/Assignment.js';
export type { TrainingConfig, TrainingConfig__Output } from './gen/veil/v1/TrainingConfig.js';
export type { ConfigValue, ConfigValue__Output } from './gen/veil/v1/ConfigValue.js';
export type { Idle, Idle__Output } from './gen/veil/v1/Idle.js';
export type { TaskEnded, TaskEnded__Output } from './gen/veil/v1/TaskEnded.js';
export type { DownloadModelRequest, DownloadModelRequest__Output } from './gen/veil/v1/DownloadModelRequest.js';
export type { ModelChunk, ModelChunk__Output } from './gen/veil/v1/ModelChunk.js';
export type { WaitForAssignmentAndModelRequest, WaitForAssignmentAndModelRequest__Output } from './gen/veil/v1/WaitForAssignmentAndModelRequest.js';
export type { AssignmentAndModel, AssignmentAndModel__Output } from './gen/veil/v1/AssignmentAndModel.js';
export type { ModelHeader, ModelHeader__Output } from './gen/veil/v1/ModelHeader.js';
export type { SubmitUpdateRequest, SubmitUpdateRequest__Output } from './gen/veil/v1/SubmitUpdateRequest.js';
export type { UpdateHeader, UpdateHeader__Output } from './gen/veil/v1/UpdateHeader.js';
export type { SubmitUpdateResponse, SubmitUpdateResponse__Output } from './gen/veil/v1/SubmitUpdateResponse.js';
export type { ReportEvaluationRequest, ReportEvaluationRequest__Output } from './gen/veil/v1/ReportEvaluationRequest.js';
export type { ReportEvaluationResponse, ReportEvaluationResponse__Output } from './gen/veil/v1/ReportEvaluationResponse.js';
export type { TaskStatus__Output as TaskStatus } from './gen/veil/v1/TaskStatus.js';
export type { ModelEncoding__Output as ModelEncoding } from './gen/veil/v1/ModelEncoding.js';
export type { UpdateEncoding__Output as UpdateEncoding } from './gen/veil/v1/UpdateEncoding.js';
