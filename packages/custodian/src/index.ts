export { CustodianError, grpcStatusOf, isCustodianErrorCode, ERROR_CODE_METADATA_KEY } from './errors.js';
export type { CustodianErrorCode } from './errors.js';

export {
  CUSTODIAN_KEY_FILE,
  CUSTODIAN_PUBLIC_FILE,
  CUSTODIAN_KEY_FORMAT_VERSION,
  custodianPublicInfo,
  initCustodianDir,
  readCustodianKeys,
} from './keys.js';
export type { CustodianKeys, CustodianPublicInfo } from './keys.js';

export { openCustodianState, readCustodianAnswers } from './state.js';
export type { CustodianState, StoredAnswer } from './state.js';

export { REQUEST_MAX_SKEW_MS, requestSigningBytes, stageSigningBytes } from './request-auth.js';
export type { RequestClaims, StageClaims } from './request-auth.js';

export { DEFAULT_MAX_STAGED_REQUESTS, MAX_DEVICES_PER_REQUEST, createCustodianService } from './service.js';
export type { CustodianService, CustodianServiceOptions, DeviceEntry, ShareSumHeader, SignedAnswer, StageHeader, StagedMessage } from './service.js';

export { startCustodianServer } from './grpc/server.js';
export type { CustodianServer, CustodianServerOptions } from './grpc/server.js';
export { MAX_CUSTODIAN_MESSAGE_BYTES, MAX_DEVICES_PER_BATCH } from './grpc/proto.js';

export { createCommitteeClient } from './client.js';
export type {
  CommitteeClient,
  CommitteeClientOptions,
  CommitteeDevice,
  CommitteeRequest,
  CommitteeResult,
  CustodianFailure,
  StagedRound,
  VerifiedAnswer,
} from './client.js';

export { signedAnswerOf } from './protocol.js';
export type { TaskDescriptorView, CommitteeMemberView } from './protocol.js';

export { AUTHORITY_USAGE, CUSTODIAN_USAGE, CustodianUsageError, runAuthorityCommand, runCustodianCommand } from './cli.js';
export {
  AUTHORITY_KEY_FILE,
  AUTHORITY_PUBLIC_FILE,
  certifyDevice,
  createSignedDescriptor,
  initAuthorityDir,
  readAuthorityKey,
  signValidated,
} from './authority.js';
export type { AuthorityKey, CertifyDeviceOptions, CommitteeMemberInput, CreateDescriptorOptions } from './authority.js';
export {
  CUSTODIAN_STATE_FILE,
  REQUEST_KEY_FILE,
  REQUEST_PUBLIC_FILE,
  createCustodianLogger,
  initRequestKey,
  readPublicKeyFile,
  readRequestSigner,
  runCustodian,
} from './main.js';
export type { RunCustodianOptions, RunningCustodian } from './main.js';

export { requestDeviceCertificate, startEnrolmentServer } from './enrolment.js';
export type { EnrolmentServer, EnrolmentServerOptions } from './enrolment.js';

export { startLocalCommittee } from './local-committee.js';
export type { LocalCommittee, LocalCommitteeOptions } from './local-committee.js';

export { committeeChannelCredentials, parseCustodianAddress, readTlsFiles, reloadableServerCredentials, watchTlsFiles } from './tls.js';
export { readTlsFileSet, sameBytes, watchTlsMaterial } from './tls-files.js';
export type { TlsFileContents, TlsFileSetOf, WatchTlsMaterialOptions, WatchedTlsMaterial } from './tls-files.js';
export type { TlsFileMaterial, TlsFileSet, WatchTlsFilesOptions, WatchedTlsFiles } from './tls.js';
