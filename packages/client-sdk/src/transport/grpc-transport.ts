import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import {
  GRPC_CHANNEL_OPTIONS,
  createFederationServiceClient,
  fromConfigMessages,
  type FederationServiceClient,
  type ModelChunk__Output,
  type TaskSpec__Output,
  type PrivacySpec__Output,
} from '@veil/protocol';
import { chunkPayload } from '@veil/protocol/codec';
import { ClientError, parseRetryAfter, type ClientErrorCode } from '../errors.js';
import type { UpdateEncodingName } from '../middleware.js';
import { calibrationFromWire, type Assignment, type AssignmentResponse, type JoinResult, type ModelEncodingName, type TaskPrivacy, type Transport } from './transport.js';

const CODES: Partial<Record<grpc.status, ClientErrorCode>> = {
  [grpc.status.INVALID_ARGUMENT]: 'invalid_argument',
  [grpc.status.UNAUTHENTICATED]: 'unauthenticated',
  [grpc.status.PERMISSION_DENIED]: 'permission_denied',
  [grpc.status.NOT_FOUND]: 'not_found',
  [grpc.status.ALREADY_EXISTS]: 'already_exists',
  [grpc.status.FAILED_PRECONDITION]: 'failed_precondition',
  [grpc.status.RESOURCE_EXHAUSTED]: 'resource_exhausted',
  [grpc.status.DEADLINE_EXCEEDED]: 'deadline_exceeded',
  [grpc.status.ABORTED]: 'aborted',
  [grpc.status.UNAVAILABLE]: 'unavailable',
  [grpc.status.CANCELLED]: 'cancelled',
};

/** Coordinator error codes the SDK acts on, read from the `veil-error-code` trailer (the status alone cannot tell them apart). */
const TRAILER_CODES: ReadonlySet<ClientErrorCode> = new Set(['already_accepted']);

function toClientError(error: unknown): ClientError {
  const e = error as Partial<grpc.ServiceError>;
  if (typeof e?.code === 'number') {
    const trailer = e.metadata?.get('veil-error-code')[0];
    const code = typeof trailer === 'string' && TRAILER_CODES.has(trailer as ClientErrorCode) ? (trailer as ClientErrorCode) : CODES[e.code as grpc.status];
    const retryAfterMs = parseRetryAfter(e.metadata?.get('retry-after')[0]);
    return new ClientError(code ?? 'internal', e.details || e.message || 'gRPC error', { cause: error, retryAfterMs });
  }
  return ClientError.from(error);
}

function toTask(t: TaskSpec__Output): JoinResult['task'] {
  return {
    taskId: t.taskId,
    name: t.name,
    model: { topology: JSON.parse(t.modelTopologyJson), weightSpecs: JSON.parse(t.weightSpecsJson) },
    parameterCount: t.parameterCount,
    totalRounds: t.totalRounds,
    encryption:
      t.encryption && t.encryption.keyId !== ''
        ? {
            keyId: t.encryption.keyId,
            parameterFingerprint: Buffer.from(t.encryption.parameterFingerprint).toString('hex'),
            preset: t.encryption.preset,
            weightCap: t.encryption.weightCap,
          }
        : null,
    privacy: toPrivacy(t.privacy),
    committee:
      t.committee && t.committee.descriptor.length > 0
        ? { descriptor: new Uint8Array(t.committee.descriptor), descriptorSignature: new Uint8Array(t.committee.descriptorSignature) }
        : null,
  };
}

function toPrivacy(p: PrivacySpec__Output | null | undefined): TaskPrivacy | null {
  if (!p || p.mode === '') return null;
  if (p.mode !== 'local' && p.mode !== 'distributed') throw new ClientError('invalid_argument', `unknown privacy mode ${p.mode}`);
  const d = p.distributed;
  if (p.mode === 'distributed' && !d) throw new ClientError('invalid_argument', 'distributed privacy without its mechanism parameters');
  return {
    mode: p.mode,
    clipNorm: p.clipNorm,
    noiseMultiplier: p.noiseMultiplier,
    samplingRate: p.samplingRate,
    epsilonCap: p.epsilonCap,
    delta: p.delta,
    distributed:
      p.mode === 'distributed' && d
        ? { scale: d.scale, localStddev: d.localStddev, minNoiseClients: d.minNoiseClients, modulus: Number(d.modulus), dimension: d.dimension, roundingBeta: d.roundingBeta }
        : null,
  };
}

const UPDATE_ENCODINGS = {
  'float32-le': 'UPDATE_ENCODING_FLOAT32_LE',
  'bfv-v1': 'UPDATE_ENCODING_BFV_V1',
  'committee-v1': 'UPDATE_ENCODING_COMMITTEE_V1',
} as const;
const MODEL_ENCODINGS: Record<string, ModelEncodingName> = {
  MODEL_ENCODING_FLOAT32_LE: 'float32-le',
  MODEL_ENCODING_BFV_SUM_V1: 'bfv-sum-v1',
};
const fromUpdateEncoding = (e: string): UpdateEncodingName =>
  e === 'UPDATE_ENCODING_BFV_V1' ? 'bfv-v1' : e === 'UPDATE_ENCODING_COMMITTEE_V1' ? 'committee-v1' : 'float32-le';

/** TLS to the coordinator: the CA to trust (pinned), and a client certificate for mutual TLS. */
export interface TlsOptions {
  /** PEM CA certificate(s) the coordinator's certificate must chain to. Default: the system's CAs. */
  ca?: string | Uint8Array;
  /** PEM client certificate (mutual TLS, VEIL_TLS_CLIENT_CA_FILE on the coordinator). Needs `key`. */
  cert?: string | Uint8Array;
  /** PEM private key of `cert`. */
  key?: string | Uint8Array;
  /** Name the certificate must carry when it differs from the address's host (e.g. connecting by IP). Default the host. */
  serverName?: string;
}

export interface GrpcTransportOptions {
  /**
   * Coordinator address: `host:port` (cleartext unless `tls` is given), `grpcs://host:port` (TLS,
   * with `tls` or the system's CAs) or `grpc://host:port` (cleartext).
   */
  address: string;
  /** TLS settings (CA pinning, client certificate). Default none: see `address`. */
  tls?: TlsOptions;
  /** Channel credentials, overriding `tls` and the scheme. Default from them. */
  channelCredentials?: grpc.ChannelCredentials;
  /** Deadline of unary calls other than the long-poll, ms. Default 30 000. */
  callTimeoutMs?: number;
  /**
   * HTTP/2 receive window of the device, per stream and per connection,
   * bytes. Default 8 MiB: a model download streams without waiting for a
   * WINDOW_UPDATE every 64 KiB (HTTP/2's default window, RFC 9113 Sec. 6.9.2),
   * i.e. one round trip per 64 KiB and a wake-up of both ends for each. The
   * device holds at most this much unread; the SDK reads every download
   * through as it arrives.
   */
  receiveWindowBytes?: number;
}

/** Default of {@link GrpcTransportOptions.receiveWindowBytes}. */
export const DEFAULT_RECEIVE_WINDOW_BYTES = 8 * 2 ** 20;

/** HTTP/2 windows are 1..2^31-1 bytes (RFC 9113 Sec. 6.9.1); below the 65,535-byte default is refused too. */
function receiveWindow(bytes: number | undefined): number {
  const value = bytes ?? DEFAULT_RECEIVE_WINDOW_BYTES;
  if (!Number.isSafeInteger(value) || value < 65_535 || value > 2 ** 31 - 1) {
    throw new RangeError(`receiveWindowBytes must be an integer in 65535..2147483647, got ${value}`);
  }
  return value;
}

const pem = (value: string | Uint8Array | undefined): Buffer | null => (value === undefined ? null : Buffer.from(value));

/** The address without its scheme and the credentials it calls for. */
export function resolveCoordinatorAddress(address: string, tls?: TlsOptions): { target: string; credentials: grpc.ChannelCredentials; secure: boolean } {
  const match = /^(grpcs?):\/\/(.+)$/.exec(address);
  const scheme = match?.[1] ?? null;
  const target = match?.[2] ?? address;
  if (scheme === 'grpc' && tls !== undefined) throw new ClientError('invalid_argument', 'grpc:// is cleartext: drop it or the tls option');
  if (scheme === 'grpc' || (scheme === null && tls === undefined)) return { target, credentials: grpc.credentials.createInsecure(), secure: false };
  if ((tls?.cert === undefined) !== (tls?.key === undefined)) throw new ClientError('invalid_argument', 'tls.cert and tls.key go together');
  const credentials = grpc.credentials.createSsl(pem(tls?.ca), pem(tls?.key), pem(tls?.cert));
  return { target, credentials, secure: true };
}

/** The grpc-js transport of the SDK. */
export function createGrpcTransport(options: GrpcTransportOptions): Transport {
  const resolved = resolveCoordinatorAddress(options.address, options.tls);
  const client: FederationServiceClient = createFederationServiceClient(
    resolved.target,
    options.channelCredentials ?? resolved.credentials,
    {
      ...GRPC_CHANNEL_OPTIONS,
      ...(options.tls?.serverName !== undefined && { 'grpc.ssl_target_name_override': options.tls.serverName, 'grpc.default_authority': options.tls.serverName }),
      'grpc.keepalive_time_ms': 60_000,
      'grpc.keepalive_timeout_ms': 20_000,
      'grpc-node.flow_control_window': receiveWindow(options.receiveWindowBytes),
    },
  );
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const auth = (credential: string): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('authorization', `Bearer ${credential}`);
    return m;
  };
  const deadline = (ms: number): grpc.CallOptions => ({ deadline: Date.now() + ms });
  const onAbort = (signal: AbortSignal | undefined, call: { cancel(): void }): void => {
    if (signal?.aborted) call.cancel();
    signal?.addEventListener('abort', () => call.cancel(), { once: true });
  };

  return {
    join(request) {
      return new Promise<JoinResult>((resolve, reject) => {
        client.Join(request, deadline(callTimeoutMs), (error, response) => {
          if (error || !response?.task) return reject(toClientError(error ?? new Error('empty Join response')));
          resolve({ clientId: response.clientId, credential: response.credential, task: toTask(response.task) });
        });
      });
    },

    getTask(credential) {
      return new Promise<JoinResult['task']>((resolve, reject) => {
        client.GetTask({}, auth(credential), deadline(callTimeoutMs), (error, response) => {
          if (error || !response) return reject(toClientError(error ?? new Error('empty GetTask response')));
          resolve(toTask(response));
        });
      });
    },

    waitForAssignment(credential, waitMs, signal, options) {
      return new Promise<AssignmentResponse>((resolve, reject) => {
        const call = client.WaitForAssignment({ waitMs, afterRoundNumber: options?.afterRoundNumber ?? 0 }, auth(credential), deadline(waitMs + callTimeoutMs), (error, r) => {
          if (error || !r) return reject(toClientError(error ?? new Error('empty response')));
          if (r.assignment) {
            const a = r.assignment;
            let calibration: NonNullable<Assignment['calibration']> | null;
            try {
              calibration = calibrationFromWire(a.calibration);
            } catch (e) {
              return reject(ClientError.from(e));
            }
            return resolve({
              kind: 'assignment',
              assignment: {
                roundId: a.roundId,
                roundNumber: a.roundNumber,
                modelVersion: a.modelVersion,
                modelSha256: Buffer.from(a.modelSha256).toString('hex'),
                modelSizeBytes: a.modelSizeBytes,
                deadlineUnixMs: a.deadlineUnixMs,
                training: {
                  epochs: a.training?.epochs ?? 1,
                  batchSize: a.training?.batchSize ?? 32,
                  learningRate: a.training?.learningRate ?? 0.01,
                },
                updateEncoding: fromUpdateEncoding(a.updateEncoding),
                maxUpdateBytes: a.maxUpdateBytes,
                maxExampleCount: a.maxExampleCount,
                evaluate: a.evaluate,
                config: fromConfigMessages(a.config),
                calibration,
              },
            });
          }
          if (r.ended) return resolve({ kind: 'ended', taskStatus: r.ended.taskStatus, reason: r.ended.reason, finalModelVersion: r.ended.finalModelVersion });
          resolve({ kind: 'idle', taskStatus: r.idle?.taskStatus ?? 'TASK_STATUS_UNSPECIFIED', currentRound: r.idle?.currentRound ?? 0 });
        });
        onAbort(signal, call);
      });
    },

    downloadModel(credential, which, signal) {
      return new Promise((resolve, reject) => {
        const request = 'latest' in which ? { modelVersion: 0, latest: true } : { modelVersion: which.version, latest: false };
        const call = client.DownloadModel(request, auth(credential), deadline(10 * callTimeoutMs));
        onAbort(signal, call);
        let header: { version: number; size: number; sha256: string; encoding: ModelEncodingName } | null = null;
        const chunks: Buffer[] = [];
        let received = 0;
        const hash = createHash('sha256');
        call.on('data', (message: ModelChunk__Output) => {
          if (message.header) {
            header = {
              version: message.header.modelVersion,
              size: message.header.sizeBytes,
              sha256: Buffer.from(message.header.sha256).toString('hex'),
              encoding: MODEL_ENCODINGS[message.header.encoding] ?? 'float32-le',
            };
            if (MODEL_ENCODINGS[message.header.encoding] === undefined) {
              call.cancel();
              reject(new ClientError('invalid_argument', `unknown model encoding ${message.header.encoding}`));
            }
          } else if (message.data) {
            received += message.data.byteLength;
            if (header === null || received > header.size) {
              call.cancel();
              reject(new ClientError('integrity', 'model stream is larger than its header declares'));
              return;
            }
            hash.update(message.data);
            chunks.push(message.data);
          }
        });
        call.on('error', (error) => reject(toClientError(error)));
        call.on('end', () => {
          if (header === null) return reject(new ClientError('integrity', 'model stream had no header'));
          const sha256 = hash.digest('hex');
          if (received !== header.size || sha256 !== header.sha256) {
            return reject(new ClientError('integrity', 'model download failed its size or SHA-256 check'));
          }
          // A model of one chunk (up to 1 MiB) is returned as received, without a copy.
          const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
          resolve({ version: header.version, bytes, sha256, encoding: header.encoding });
        });
      });
    },

    submitUpdate(credential, header, payload, signal) {
      return new Promise((resolve, reject) => {
        const call = client.SubmitUpdate(auth(credential), deadline(10 * callTimeoutMs), (error, response) => {
          if (error || !response) return reject(toClientError(error ?? new Error('empty response')));
          resolve({ acceptedCount: response.acceptedCount });
        });
        onAbort(signal, call);
        call.write({
          header: {
            roundNumber: header.roundNumber,
            modelVersion: header.modelVersion,
            exampleCount: header.exampleCount,
            trainedExamples: header.trainedExamples ?? 0,
            ...(header.trainingLoss !== undefined && { trainingLoss: header.trainingLoss }),
            encoding: UPDATE_ENCODINGS[header.encoding],
            payloadSizeBytes: payload.byteLength,
            payloadSha256: Buffer.from(header.sha256, 'hex'),
          },
        });
        for (const chunk of chunkPayload(payload)) call.write({ chunk: Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) });
        call.end();
      });
    },

    reportEvaluation(credential, report) {
      return new Promise((resolve, reject) => {
        client.ReportEvaluation(report, auth(credential), deadline(callTimeoutMs), (error) => (error ? reject(toClientError(error)) : resolve()));
      });
    },

    close() {
      client.close();
    },
  };
}

