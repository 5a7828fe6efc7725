import { createHash } from 'node:crypto';
import type net from 'node:net';
import type { ModelHeader__Output, TaskSpec__Output, WaitForAssignmentResponse__Output, PrivacySpec__Output } from '@veil/protocol';
import { chunkPayload } from '@veil/protocol/codec';
import { MAX_MESSAGE_BYTES } from '@veil/protocol/limits';
import { fromConfigMessages } from '@veil/protocol/model';
import { FederationServiceWire } from '@veil/protocol/wire';
import { ClientError } from '../errors.js';
import type { UpdateEncodingName } from '../middleware.js';
import { GrpcChannel } from './grpc-channel.js';
import {
  calibrationFromWire,
  type Assignment,
  type AssignmentResponse,
  type DownloadedModel,
  type JoinResult,
  type ModelEncodingName,
  type TaskPrivacy,
  type Transport,
  type WaitOptions,
} from './transport.js';

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

/** A WaitForAssignmentResponse as the SDK uses it. */
function toAssignmentResponse(r: WaitForAssignmentResponse__Output): AssignmentResponse {
  if (r.assignment) {
    const a = r.assignment;
    let calibration: NonNullable<Assignment['calibration']> | null;
    try {
      calibration = calibrationFromWire(a.calibration);
    } catch (e) {
      throw ClientError.from(e);
    }
    return {
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
    };
  }
  if (r.ended) return { kind: 'ended', taskStatus: r.ended.taskStatus, reason: r.ended.reason, finalModelVersion: r.ended.finalModelVersion };
  return { kind: 'idle', taskStatus: r.idle?.taskStatus ?? 'TASK_STATUS_UNSPECIFIED', currentRound: r.idle?.currentRound ?? 0 };
}

/**
 * Collects a model's messages (one ModelHeader, then data chunks) as DownloadModel and
 * WaitForAssignmentAndModel send them, hashing as they arrive; `result` checks size and SHA-256
 * against the header (null: no header came).
 */
function createModelReceiver(): {
  header(h: ModelHeader__Output): void;
  data(chunk: Buffer): void;
  result(): DownloadedModel | null;
} {
  let header: { version: number; size: number; sha256: string; encoding: ModelEncodingName } | null = null;
  const chunks: Buffer[] = [];
  let received = 0;
  const hash = createHash('sha256');
  return {
    header(h) {
      if (header !== null) throw new ClientError('integrity', 'model stream has two headers');
      const encoding = MODEL_ENCODINGS[h.encoding];
      if (encoding === undefined) throw new ClientError('invalid_argument', `unknown model encoding ${h.encoding}`);
      header = { version: h.modelVersion, size: h.sizeBytes, sha256: Buffer.from(h.sha256).toString('hex'), encoding };
    },
    data(chunk) {
      received += chunk.byteLength;
      if (header === null || received > header.size) throw new ClientError('integrity', 'model stream is larger than its header declares');
      hash.update(chunk);
      chunks.push(chunk);
    },
    result() {
      if (header === null) return null;
      const sha256 = hash.digest('hex');
      if (received !== header.size || sha256 !== header.sha256) throw new ClientError('integrity', 'model download failed its size or SHA-256 check');
      // A model of one chunk (up to 1 MiB) is returned as received (a view of its message), without a copy.
      const bytes = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
      return { version: header.version, bytes, sha256, encoding: header.encoding };
    },
  };
}

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
  /** Called with the socket of each connection the transport opens (byte accounting, tests). Default none. */
  onConnection?: (socket: net.Socket) => void;
  /** Interval of the HTTP/2 PING that checks the connection while calls are open, ms; an unanswered one (within the same time) drops it. Default 60 000. */
  keepaliveMs?: number;
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

/** The address without its scheme, and the TLS settings to use (null: cleartext). */
export function resolveCoordinatorAddress(address: string, tls?: TlsOptions): { target: string; tls: TlsOptions | null; secure: boolean } {
  const match = /^(grpcs?):\/\/(.+)$/.exec(address);
  const scheme = match?.[1] ?? null;
  const target = match?.[2] ?? address;
  if (scheme === 'grpc' && tls !== undefined) throw new ClientError('invalid_argument', 'grpc:// is cleartext: drop it or the tls option');
  if (scheme === 'grpc' || (scheme === null && tls === undefined)) return { target, tls: null, secure: false };
  if ((tls?.cert === undefined) !== (tls?.key === undefined)) throw new ClientError('invalid_argument', 'tls.cert and tls.key go together');
  return { target, tls: tls ?? {}, secure: true };
}

/**
 * The service's codecs, generated from the .proto ahead of time (packages/protocol/scripts/gen-wire.mjs):
 * a device neither parses the .proto nor loads protobufjs or grpc-js (that was ~250 ms of CPU and
 * ~5.8 MB of heap per device process at start, and a larger heap for every later garbage collection).
 */
const service = FederationServiceWire;

/**
 * The SDK's gRPC transport: the device protocol over one HTTP/2 connection of Node's own
 * `node:http2` (see grpc-channel.ts). Calls carry the credential as `authorization` metadata and a
 * `grpc-timeout`; nothing is compressed; a model arrives with one copy (the gRPC message) and an
 * update leaves with none (its chunks are written as they are, after their framing).
 */
export function createGrpcTransport(options: GrpcTransportOptions): Transport {
  const resolved = resolveCoordinatorAddress(options.address, options.tls);
  const channel = new GrpcChannel({
    target: resolved.target,
    tls: resolved.tls,
    receiveWindowBytes: receiveWindow(options.receiveWindowBytes),
    maxMessageBytes: MAX_MESSAGE_BYTES,
    keepaliveMs: options.keepaliveMs ?? 60_000,
    ...(options.onConnection && { onConnection: options.onConnection }),
  });
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const auth = (credential: string): Record<string, string> => ({ authorization: `Bearer ${credential}` });

  /** A unary call: one request message, one response message. */
  function unary<Req, Res>(
    method: { path: string; requestSerialize: (request: Req) => Buffer; responseDeserialize: (bytes: Buffer) => Res },
    request: Req,
    metadata: Record<string, string>,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Res> {
    let response: { value: Res } | undefined;
    let call;
    try {
      call = channel.call(method.path, {
        metadata,
        timeoutMs,
        signal,
        onMessage: (bytes) => {
          if (response !== undefined) throw new ClientError('internal', `${method.path} answered with more than one message`);
          response = { value: method.responseDeserialize(bytes) };
        },
      });
    } catch (error) {
      return Promise.reject(ClientError.from(error));
    }
    call.write([method.requestSerialize(request)]);
    call.end();
    return call.done.then(() => {
      if (response === undefined) throw new ClientError('internal', `empty ${method.path} response`);
      return response.value;
    });
  }

  /** Whether to try WaitForAssignmentAndModel (false once the coordinator answered that it does not have it). */
  let combinedCall = true;

  async function waitForAssignment(credential: string, waitMs: number, signal?: AbortSignal, options?: WaitOptions): Promise<AssignmentResponse> {
    const r = await unary(service.WaitForAssignment, { waitMs, afterRoundNumber: options?.afterRoundNumber ?? 0 }, auth(credential), waitMs + callTimeoutMs, signal);
    return toAssignmentResponse(r);
  }

  return {
    async join(request) {
      const response = await unary(service.Join, request, {}, callTimeoutMs);
      if (!response.task) throw new ClientError('internal', 'empty Join response');
      return { clientId: response.clientId, credential: response.credential, task: toTask(response.task) };
    },

    async getTask(credential) {
      return toTask(await unary(service.GetTask, {}, auth(credential), callTimeoutMs));
    },

    waitForAssignment,

    async waitForAssignmentAndModel(credential, waitMs, signal, options) {
      if (!combinedCall) return { response: await waitForAssignment(credential, waitMs, signal, options), model: null };
      const definition = service.WaitForAssignmentAndModel;
      let response: AssignmentResponse | null = null;
      const model = createModelReceiver();
      const onMessage = (bytes: Buffer): void => {
        const message = definition.responseDeserialize(bytes);
        if (message.answer) {
          if (response !== null) throw new ClientError('internal', 'WaitForAssignmentAndModel answered twice');
          response = toAssignmentResponse(message.answer);
        } else if (response === null) {
          throw new ClientError('internal', 'WaitForAssignmentAndModel sent a model before its answer');
        } else if (message.modelHeader) {
          model.header(message.modelHeader);
        } else if (message.modelData) {
          model.data(message.modelData);
        }
      };
      const request = {
        waitMs,
        afterRoundNumber: options?.afterRoundNumber ?? 0,
        ...(options?.heldModelVersion !== undefined && { heldModelVersion: options.heldModelVersion }),
      };
      let call;
      try {
        call = channel.call(definition.path, { metadata: auth(credential), timeoutMs: waitMs + 10 * callTimeoutMs, signal, onMessage });
      } catch (error) {
        throw ClientError.from(error);
      }
      call.write([definition.requestSerialize(request)]);
      call.end();
      try {
        await call.done;
      } catch (error) {
        // A coordinator that predates the call: the two calls from now on.
        if (ClientError.from(error).code === 'unimplemented' && response === null) {
          combinedCall = false;
          return { response: await waitForAssignment(credential, waitMs, signal, options), model: null };
        }
        throw error;
      }
      const answer = response as AssignmentResponse | null;
      if (answer === null) throw new ClientError('internal', 'empty WaitForAssignmentAndModel response');
      const sent = model.result();
      if (sent !== null && (answer.kind !== 'assignment' || sent.version !== answer.assignment.modelVersion)) {
        throw new ClientError('integrity', 'the model sent with the assignment is not the version it names');
      }
      return { response: answer, model: sent };
    },

    async downloadModel(credential, which, signal) {
      const definition = service.DownloadModel;
      const request = 'latest' in which ? { modelVersion: 0, latest: true } : { modelVersion: which.version, latest: false };
      const model = createModelReceiver();
      const onMessage = (bytes: Buffer): void => {
        const message = definition.responseDeserialize(bytes);
        if (message.header) model.header(message.header);
        else if (message.data) model.data(message.data);
      };
      let call;
      try {
        call = channel.call(definition.path, { metadata: auth(credential), timeoutMs: 10 * callTimeoutMs, signal, onMessage });
      } catch (error) {
        throw ClientError.from(error);
      }
      call.write([definition.requestSerialize(request)]);
      call.end();
      await call.done;
      const downloaded = model.result();
      if (downloaded === null) throw new ClientError('integrity', 'model stream had no header');
      return downloaded;
    },

    async submitUpdate(credential, header, payload, signal) {
      const definition = service.SubmitUpdate;
      let response: { acceptedCount: number } | undefined;
      let call;
      try {
        call = channel.call(definition.path, {
          metadata: auth(credential),
          timeoutMs: 10 * callTimeoutMs,
          signal,
          onMessage: (bytes) => {
            response = definition.responseDeserialize(bytes);
          },
        });
      } catch (error) {
        throw ClientError.from(error);
      }
      call.write([
        definition.requestSerialize({
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
        }),
      ]);
      // SubmitUpdateRequest.chunk (field 2, bytes): its tag and length, then the chunk itself, not copied.
      for (const chunk of chunkPayload(payload)) call.write([bytesFieldPrefix(2, chunk.byteLength), chunk]);
      call.end();
      await call.done;
      if (response === undefined) throw new ClientError('internal', 'empty SubmitUpdate response');
      return { acceptedCount: response.acceptedCount };
    },

    releaseModel(model) {
      channel.recycle(model.bytes);
    },

    async reportEvaluation(credential, report) {
      await unary(service.ReportEvaluation, report, auth(credential), callTimeoutMs);
    },

    close() {
      channel.close();
    },
  };
}

/** The tag and length of a length-delimited protobuf field (wire type 2) whose value follows. */
function bytesFieldPrefix(field: number, length: number): Uint8Array {
  const out: number[] = [];
  for (let v = field * 8 + 2; ; v >>>= 7) {
    if (v < 0x80) {
      out.push(v);
      break;
    }
    out.push((v & 0x7f) | 0x80);
  }
  for (let v = length; ; v = Math.floor(v / 0x80)) {
    if (v < 0x80) {
      out.push(v);
      break;
    }
    out.push((v % 0x80) | 0x80);
  }
  return Uint8Array.from(out);
}
