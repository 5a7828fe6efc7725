/**
 * Message size limits of the Veil protocol, enforced by both sides.
 * They are part of the protocol: a peer that exceeds them gets
 * RESOURCE_EXHAUSTED (gRPC) and its data is discarded.
 */

/** Largest payload chunk in a DownloadModel / SubmitUpdate stream: 1 MiB. */
export const MAX_CHUNK_BYTES = 1024 * 1024;

/** Largest single gRPC message either side accepts: 2 MiB (a chunk plus framing). */
export const MAX_MESSAGE_BYTES = 2 * 1024 * 1024;

/** Longest a WaitForAssignment long-poll may be held open: 60 s. */
export const MAX_WAIT_MS = 60_000;

/** Longest client name accepted by Join. */
export const MAX_CLIENT_NAME_LENGTH = 128;

/** Most metrics one ReportEvaluation may carry. */
export const MAX_METRICS = 32;

/** Longest metric name. */
export const MAX_METRIC_NAME_LENGTH = 64;

/** gRPC channel options matching the limits above; pass to both server and client. */
export const GRPC_CHANNEL_OPTIONS = {
  'grpc.max_receive_message_length': MAX_MESSAGE_BYTES,
  'grpc.max_send_message_length': MAX_MESSAGE_BYTES,
} as const;
