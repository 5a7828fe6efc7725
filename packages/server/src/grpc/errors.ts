import * as grpc from '@grpc/grpc-js';
import { VeilError, type VeilErrorCode } from '../errors.js';

/** Each coordinator error code as a gRPC status: the one table. */
export const GRPC_STATUS: Readonly<Record<VeilErrorCode, grpc.status>> = {
  invalid_argument: grpc.status.INVALID_ARGUMENT,
  unauthenticated: grpc.status.UNAUTHENTICATED,
  permission_denied: grpc.status.PERMISSION_DENIED,
  not_found: grpc.status.NOT_FOUND,
  already_exists: grpc.status.ALREADY_EXISTS,
  already_accepted: grpc.status.ALREADY_EXISTS,
  failed_precondition: grpc.status.FAILED_PRECONDITION,
  resource_exhausted: grpc.status.RESOURCE_EXHAUSTED,
  rate_limited: grpc.status.RESOURCE_EXHAUSTED,
  deadline_exceeded: grpc.status.DEADLINE_EXCEEDED,
  aborted: grpc.status.ABORTED,
  unavailable: grpc.status.UNAVAILABLE,
  internal: grpc.status.INTERNAL,
};

/** Trailer carrying the coordinator's error code, so devices act on the code, never on the text. */
export const ERROR_CODE_METADATA_KEY = 'veil-error-code';

/** A coordinator error as a gRPC status: the code's status, the public text, the code (and Retry-After) in the trailers. */
export function toGrpcStatus(error: VeilError): Partial<grpc.StatusObject> {
  const metadata = new grpc.Metadata();
  metadata.set(ERROR_CODE_METADATA_KEY, error.code);
  if (error.retryAfterSeconds !== undefined) metadata.set('retry-after', String(error.retryAfterSeconds));
  return { code: GRPC_STATUS[error.code], details: error.publicMessage, metadata };
}
