/**
 * The SDK's transport over fetch, for browsers (and any runtime with fetch and Web Crypto):
 * the device protocol as the coordinator serves it on its HTTP port with the Connect protocol
 * (https://connectrpc.com/docs/protocol). Unary calls use the JSON codec; DownloadModel is a
 * server stream read with the binary codec; an update goes through veil.v1.UploadService
 * (proto/veil/v1/upload.proto): BeginUpload, PutChunk calls with binary bodies (offset and
 * SHA-256 per chunk, so the bytes on the wire per value are the gRPC upload's), CommitUpload.
 * A chunk whose call fails is resumed from the offset the coordinator reports (GetUpload).
 * No Node API and no protobuf library: the few binary messages are written and read here.
 */
import { ClientError, parseRetryAfter, type ClientErrorCode } from '../errors.js';
import type { UpdateEncodingName } from '../middleware.js';
import { calibrationFromWire, type AssignmentResponse, type JoinResult, type ModelEncodingName, type TaskPrivacy, type Transport, type UpdateHeader } from './transport.js';

export interface ConnectTransportOptions {
  /** The coordinator's HTTP(S) base URL, e.g. `https://coordinator.example:8080`. */
  baseUrl: string;
  /** Deadline of calls other than the long-poll and transfers, ms. Default 30 000. */
  callTimeoutMs?: number;
  /** Payload bytes per PutChunk call, at most the coordinator's limit (1 MiB). Default 1 MiB. */
  chunkBytes?: number;
  /** Attempts per chunk (a failed call is resumed from what the coordinator holds). Default 5. */
  chunkAttempts?: number;
  /** The fetch to use. Default `globalThis.fetch`. */
  fetch?: typeof fetch;
  /** Called after each acknowledged chunk (progress; tests). */
  onChunk?: (progress: { uploadId: string; receivedBytes: number; sizeBytes: number }) => void;
}

const MAX_CHUNK_BYTES = 1024 * 1024;

/** Connect error codes (and the coordinator's own, from the `veil-error-code` header) as the SDK's. */
const CODES: Record<string, ClientErrorCode> = {
  invalid_argument: 'invalid_argument',
  unauthenticated: 'unauthenticated',
  permission_denied: 'permission_denied',
  not_found: 'not_found',
  already_exists: 'already_exists',
  already_accepted: 'already_accepted',
  failed_precondition: 'failed_precondition',
  resource_exhausted: 'resource_exhausted',
  rate_limited: 'resource_exhausted',
  deadline_exceeded: 'deadline_exceeded',
  aborted: 'aborted',
  unavailable: 'unavailable',
  canceled: 'cancelled',
  unimplemented: 'unimplemented',
  internal: 'internal',
};

// ------------------------------------------------------------------ bytes

const hex = (bytes: Uint8Array): string => Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
const fromHex = (text: string): Uint8Array => Uint8Array.from(text.match(/../g) ?? [], (h) => parseInt(h, 16));
function toBase64(bytes: Uint8Array): string {
  let text = '';
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}
function fromBase64(text: string | undefined): Uint8Array {
  if (text === undefined || text === '') return new Uint8Array(0);
  const binary = atob(text.replace(/-/g, '+').replace(/_/g, '/'));
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}
async function sha256(data: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest('SHA-256', data as Uint8Array<ArrayBuffer>));
}

/** A protobuf writer for the few binary requests (varints below 2^53, length-delimited fields). */
class ProtoWriter {
  private parts: Uint8Array[] = [];
  private varint(value: number): void {
    const out: number[] = [];
    let v = value;
    while (v >= 0x80) {
      out.push((v % 0x80) | 0x80);
      v = Math.floor(v / 0x80);
    }
    out.push(v);
    this.parts.push(Uint8Array.from(out));
  }
  uint(field: number, value: number): this {
    if (value !== 0) {
      this.varint(field * 8);
      this.varint(value);
    }
    return this;
  }
  bytes(field: number, value: Uint8Array): this {
    this.varint(field * 8 + 2);
    this.varint(value.byteLength);
    this.parts.push(value);
    return this;
  }
  string(field: number, value: string): this {
    return this.bytes(field, new TextEncoder().encode(value));
  }
  finish(): Uint8Array {
    const total = this.parts.reduce((n, p) => n + p.byteLength, 0);
    const out = new Uint8Array(total);
    let at = 0;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.byteLength;
    }
    return out;
  }
}

/** Reads the fields of a protobuf message: field number → varint values or byte views. */
function readProto(bytes: Uint8Array): Map<number, Array<number | Uint8Array>> {
  const fields = new Map<number, Array<number | Uint8Array>>();
  let at = 0;
  const varint = (): number => {
    let value = 0;
    let scale = 1;
    for (;;) {
      if (at >= bytes.length) throw new ClientError('integrity', 'truncated protobuf message');
      const b = bytes[at++]!;
      value += (b & 0x7f) * scale;
      if (b < 0x80) return value;
      scale *= 0x80;
    }
  };
  while (at < bytes.length) {
    const key = varint();
    const field = Math.floor(key / 8);
    const wire = key % 8;
    let value: number | Uint8Array;
    if (wire === 0) value = varint();
    else if (wire === 2) {
      const length = varint();
      if (at + length > bytes.length) throw new ClientError('integrity', 'truncated protobuf message');
      value = bytes.subarray(at, at + length);
      at += length;
    } else if (wire === 1) {
      at += 8;
      continue;
    } else if (wire === 5) {
      at += 4;
      continue;
    } else throw new ClientError('integrity', `unsupported protobuf wire type ${wire}`);
    const list = fields.get(field);
    if (list === undefined) fields.set(field, [value]);
    else list.push(value);
  }
  return fields;
}
const num = (fields: Map<number, Array<number | Uint8Array>>, field: number): number => {
  const v = fields.get(field)?.at(-1);
  return typeof v === 'number' ? v : 0;
};
const bin = (fields: Map<number, Array<number | Uint8Array>>, field: number): Uint8Array | undefined => {
  const v = fields.get(field)?.at(-1);
  return v instanceof Uint8Array ? v : undefined;
};

// ------------------------------------------------------------------ messages (proto3 JSON)

type Json = Record<string, any>;
const n = (value: unknown): number => (value === undefined || value === null ? 0 : Number(value));

function toTask(t: Json): JoinResult['task'] {
  const encryption = t['encryption'] as Json | undefined;
  const committee = t['committee'] as Json | undefined;
  return {
    taskId: t['taskId'] ?? '',
    name: t['name'] ?? '',
    model: { topology: JSON.parse(t['modelTopologyJson'] ?? 'null'), weightSpecs: JSON.parse(t['weightSpecsJson'] ?? '[]') },
    parameterCount: n(t['parameterCount']),
    totalRounds: n(t['totalRounds']),
    encryption:
      encryption && (encryption['keyId'] ?? '') !== ''
        ? {
            keyId: encryption['keyId'],
            parameterFingerprint: hex(fromBase64(encryption['parameterFingerprint'])),
            preset: encryption['preset'] ?? '',
            weightCap: n(encryption['weightCap']),
          }
        : null,
    privacy: toPrivacy(t['privacy']),
    committee:
      committee && (committee['descriptor'] ?? '') !== ''
        ? { descriptor: fromBase64(committee['descriptor']), descriptorSignature: fromBase64(committee['descriptorSignature']) }
        : null,
  };
}

function toPrivacy(p: Json | undefined): TaskPrivacy | null {
  if (!p || (p['mode'] ?? '') === '') return null;
  const mode = p['mode'];
  if (mode !== 'local' && mode !== 'distributed') throw new ClientError('invalid_argument', `unknown privacy mode ${mode}`);
  const d = p['distributed'] as Json | undefined;
  if (mode === 'distributed' && !d) throw new ClientError('invalid_argument', 'distributed privacy without its mechanism parameters');
  return {
    mode,
    clipNorm: n(p['clipNorm']),
    noiseMultiplier: n(p['noiseMultiplier']),
    samplingRate: n(p['samplingRate']),
    epsilonCap: n(p['epsilonCap']),
    delta: n(p['delta']),
    distributed:
      mode === 'distributed' && d
        ? {
            scale: n(d['scale']),
            localStddev: n(d['localStddev']),
            minNoiseClients: n(d['minNoiseClients']),
            modulus: n(d['modulus']),
            dimension: n(d['dimension']),
            roundingBeta: n(d['roundingBeta']),
          }
        : null,
  };
}

const UPDATE_ENCODINGS = {
  'float32-le': 'UPDATE_ENCODING_FLOAT32_LE',
  'bfv-v1': 'UPDATE_ENCODING_BFV_V1',
  'committee-v1': 'UPDATE_ENCODING_COMMITTEE_V1',
} as const;
const fromUpdateEncoding = (e: string | undefined): UpdateEncodingName =>
  e === 'UPDATE_ENCODING_BFV_V1' ? 'bfv-v1' : e === 'UPDATE_ENCODING_COMMITTEE_V1' ? 'committee-v1' : 'float32-le';
/** ModelEncoding enum numbers (federation.proto). */
const MODEL_ENCODINGS: Record<number, ModelEncodingName> = { 1: 'float32-le', 2: 'bfv-sum-v1' };

function fromConfig(config: Json | undefined): Record<string, number | string | boolean> {
  const out: Record<string, number | string | boolean> = {};
  for (const [key, value] of Object.entries(config ?? {})) {
    const v = value as Json;
    if ('numberValue' in v) out[key] = Number(v['numberValue']);
    else if ('stringValue' in v) out[key] = String(v['stringValue']);
    else if ('boolValue' in v) out[key] = Boolean(v['boolValue']);
    // A value with no kind is the proto default of a number (0) dropped from the JSON.
    else out[key] = 0;
  }
  return out;
}

function headerJson(header: UpdateHeader, size: number): Json {
  return {
    roundNumber: header.roundNumber,
    modelVersion: header.modelVersion,
    exampleCount: header.exampleCount,
    trainedExamples: header.trainedExamples ?? 0,
    ...(header.trainingLoss !== undefined && { trainingLoss: header.trainingLoss }),
    encoding: UPDATE_ENCODINGS[header.encoding],
    payloadSizeBytes: size,
    payloadSha256: toBase64(fromHex(header.sha256)),
  };
}

// ------------------------------------------------------------------ transport

/** Whether an error is the network's (the call may or may not have reached the coordinator). */
const isNetworkError = (error: unknown): boolean => error instanceof TypeError;

/** The fetch transport of the SDK (Connect protocol on the coordinator's HTTP port). */
export function createConnectTransport(options: ConnectTransportOptions): Transport {
  const base = options.baseUrl.replace(/\/+$/, '');
  const doFetch = options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args));
  const callTimeoutMs = options.callTimeoutMs ?? 30_000;
  const chunkBytes = options.chunkBytes ?? MAX_CHUNK_BYTES;
  if (!Number.isInteger(chunkBytes) || chunkBytes < 1 || chunkBytes > MAX_CHUNK_BYTES) throw new RangeError(`chunkBytes must be an integer in 1..${MAX_CHUNK_BYTES}`);
  const chunkAttempts = options.chunkAttempts ?? 5;
  const open = new Set<AbortController>();

  /** One call: POST `body` to `/service/method`; resolves to the response, throws ClientError. */
  const post = async (
    path: string,
    body: Uint8Array | string,
    contentType: string,
    credential: string | null,
    timeoutMs: number,
    signal?: AbortSignal,
  ): Promise<Response> => {
    const controller = new AbortController();
    open.add(controller);
    const timer = setTimeout(() => controller.abort(new ClientError('deadline_exceeded', `${path} took longer than ${timeoutMs} ms`)), timeoutMs);
    const onAbort = (): void => controller.abort(new ClientError('cancelled', 'aborted'));
    if (signal?.aborted) onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      const headers: Record<string, string> = { 'content-type': contentType, 'connect-protocol-version': '1' };
      if (credential !== null) headers['authorization'] = `Bearer ${credential}`;
      let response: Response;
      try {
        response = await doFetch(`${base}${path}`, { method: 'POST', headers, body: body as string | Uint8Array<ArrayBuffer>, signal: controller.signal });
      } catch (error) {
        const reason = controller.signal.reason;
        if (controller.signal.aborted && reason instanceof ClientError) throw reason;
        if (isNetworkError(error)) throw new ClientError('unavailable', `${path}: ${(error as Error).message}`, { cause: error });
        throw ClientError.from(error);
      }
      if (!response.ok) {
        let payload: Json = {};
        try {
          payload = (await response.json()) as Json;
        } catch {
          // Not a Connect error body (a proxy's page): the status says enough.
        }
        const veil = response.headers.get('veil-error-code');
        const code = (veil !== null ? CODES[veil] : undefined) ?? CODES[String(payload['code'])] ?? (response.status >= 500 ? 'unavailable' : 'internal');
        throw new ClientError(code, String(payload['message'] ?? `${path}: HTTP ${response.status}`), {
          retryAfterMs: parseRetryAfter(response.headers.get('retry-after')),
        });
      }
      return response;
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      open.delete(controller);
    }
  };
  const unary = async (service: string, method: string, request: Json, credential: string | null, timeoutMs = callTimeoutMs, signal?: AbortSignal): Promise<Json> => {
    const response = await post(`/veil.v1.${service}/${method}`, JSON.stringify(request), 'application/json', credential, timeoutMs, signal);
    return (await response.json()) as Json;
  };
  const federation = (method: string, request: Json, credential: string | null, timeoutMs?: number, signal?: AbortSignal) =>
    unary('FederationService', method, request, credential, timeoutMs, signal);

  return {
    async join(request) {
      const r = await federation('Join', request, null);
      if (!r['task']) throw new ClientError('internal', 'empty Join response');
      return { clientId: r['clientId'], credential: r['credential'], task: toTask(r['task']) };
    },

    async getTask(credential) {
      return toTask(await federation('GetTask', {}, credential));
    },

    async waitForAssignment(credential, waitMs, signal, options) {
      const after = options?.afterRoundNumber ?? 0;
      // Sent only when set: the coordinator's JSON check refuses fields it does not know (an older coordinator).
      const r = await federation('WaitForAssignment', { waitMs, ...(after > 0 && { afterRoundNumber: after }) }, credential, waitMs + callTimeoutMs, signal);
      const a = r['assignment'] as Json | undefined;
      if (a) {
        const training = (a['training'] ?? {}) as Json;
        return {
          kind: 'assignment',
          assignment: {
            roundId: a['roundId'] ?? '',
            roundNumber: n(a['roundNumber']),
            modelVersion: n(a['modelVersion']),
            modelSha256: hex(fromBase64(a['modelSha256'])),
            modelSizeBytes: n(a['modelSizeBytes']),
            deadlineUnixMs: n(a['deadlineUnixMs']),
            training: {
              epochs: training['epochs'] === undefined ? 1 : n(training['epochs']),
              batchSize: training['batchSize'] === undefined ? 32 : n(training['batchSize']),
              learningRate: training['learningRate'] === undefined ? 0.01 : n(training['learningRate']),
            },
            updateEncoding: fromUpdateEncoding(a['updateEncoding']),
            maxUpdateBytes: n(a['maxUpdateBytes']),
            maxExampleCount: n(a['maxExampleCount']),
            evaluate: Boolean(a['evaluate']),
            config: fromConfig(a['config']),
            calibration: calibrationFromWire(a['calibration'] as Parameters<typeof calibrationFromWire>[0]),
          },
        } satisfies AssignmentResponse;
      }
      const ended = r['ended'] as Json | undefined;
      if (ended) return { kind: 'ended', taskStatus: ended['taskStatus'] ?? 'TASK_STATUS_UNSPECIFIED', reason: ended['reason'] ?? '', finalModelVersion: n(ended['finalModelVersion']) };
      const idle = (r['idle'] ?? {}) as Json;
      return { kind: 'idle', taskStatus: idle['taskStatus'] ?? 'TASK_STATUS_UNSPECIFIED', currentRound: n(idle['currentRound']) };
    },

    async downloadModel(credential, which, signal) {
      const request = 'latest' in which ? new ProtoWriter().uint(2, 1).finish() : new ProtoWriter().uint(1, which.version).finish();
      const body = new Uint8Array(5 + request.byteLength);
      new DataView(body.buffer).setUint32(1, request.byteLength);
      body.set(request, 5);
      const response = await post('/veil.v1.FederationService/DownloadModel', body, 'application/connect+proto', credential, 10 * callTimeoutMs, signal);
      const stream = new Uint8Array(await response.arrayBuffer());
      let header: { version: number; size: number; sha256: string; encoding: ModelEncodingName } | null = null;
      const chunks: Uint8Array[] = [];
      let received = 0;
      let at = 0;
      let finished = false;
      while (at < stream.length) {
        if (at + 5 > stream.length) throw new ClientError('integrity', 'truncated model stream');
        const flags = stream[at]!;
        const length = new DataView(stream.buffer, stream.byteOffset + at + 1, 4).getUint32(0);
        const message = stream.subarray(at + 5, at + 5 + length);
        if (message.length !== length) throw new ClientError('integrity', 'truncated model stream');
        at += 5 + length;
        if (flags & 2) {
          const end = JSON.parse(new TextDecoder().decode(message)) as Json;
          if (end['error']) {
            const veil = (end['metadata'] as Json | undefined)?.['veil-error-code']?.[0] as string | undefined;
            throw new ClientError((veil !== undefined ? CODES[veil] : undefined) ?? CODES[String(end['error']['code'])] ?? 'internal', String(end['error']['message'] ?? 'download failed'));
          }
          finished = true;
          break;
        }
        const fields = readProto(message);
        const h = bin(fields, 1);
        const data = bin(fields, 2);
        if (h !== undefined) {
          const hf = readProto(h);
          const encoding = MODEL_ENCODINGS[num(hf, 2)];
          if (encoding === undefined) throw new ClientError('invalid_argument', `unknown model encoding ${num(hf, 2)}`);
          header = { version: num(hf, 1), size: num(hf, 3), sha256: hex(bin(hf, 4) ?? new Uint8Array(0)), encoding };
        } else if (data !== undefined) {
          received += data.byteLength;
          if (header === null || received > header.size) throw new ClientError('integrity', 'model stream is larger than its header declares');
          chunks.push(data);
        }
      }
      if (!finished) throw new ClientError('unavailable', 'the model stream ended early');
      if (header === null) throw new ClientError('integrity', 'model stream had no header');
      const bytes = chunks.length === 1 ? chunks[0]!.slice() : new Uint8Array(received);
      if (chunks.length !== 1) {
        let offset = 0;
        for (const c of chunks) {
          bytes.set(c, offset);
          offset += c.byteLength;
        }
      }
      const digest = hex(await sha256(bytes));
      if (received !== header.size || digest !== header.sha256) throw new ClientError('integrity', 'model download failed its size or SHA-256 check');
      return { version: header.version, bytes, sha256: digest, encoding: header.encoding };
    },

    async submitUpdate(credential, header, payload, signal) {
      const upload = (method: string, request: Json) => unary('UploadService', method, request, credential, callTimeoutMs, signal);
      const began = await upload('BeginUpload', { header: headerJson(header, payload.byteLength) });
      const uploadId = String(began['uploadId']);
      let offset = n(began['receivedBytes']);
      let failures = 0;
      while (offset < payload.byteLength) {
        const data = payload.subarray(offset, Math.min(offset + chunkBytes, payload.byteLength));
        const body = new ProtoWriter().string(1, uploadId).uint(2, offset).bytes(3, data).bytes(4, await sha256(data)).finish();
        try {
          const response = await post('/veil.v1.UploadService/PutChunk', body, 'application/proto', credential, 10 * callTimeoutMs, signal);
          offset = num(readProto(new Uint8Array(await response.arrayBuffer())), 2);
          failures = 0;
          options.onChunk?.({ uploadId, receivedBytes: offset, sizeBytes: payload.byteLength });
        } catch (error) {
          const e = ClientError.from(error);
          // Lost on the way (or its answer was): ask what arrived and go on from there.
          if (!e.retryable || ++failures >= chunkAttempts || signal?.aborted) throw e;
          await new Promise((resolve) => setTimeout(resolve, Math.min(5_000, 200 * 2 ** failures)));
          offset = n((await upload('GetUpload', { uploadId }))['receivedBytes']);
        }
      }
      const committed = await upload('CommitUpload', { uploadId });
      return { acceptedCount: n(committed['acceptedCount']) };
    },

    async reportEvaluation(credential, report) {
      await federation('ReportEvaluation', report, credential);
    },

    close() {
      for (const controller of open) controller.abort(new ClientError('cancelled', 'transport closed'));
      open.clear();
    },
  };
}
