/**
 * The device protocol on the HTTP port, for browsers: the Connect protocol
 * (https://connectrpc.com/docs/protocol; unary calls with the JSON or binary
 * protobuf codec, server streaming for DownloadModel) in front of the SAME
 * gRPC handlers (grpc/federation-service.ts) that grpc-js serves: every call
 * is handed to the handler as a grpc-js-shaped call object, so
 * authentication, validation, limits, budgets and the error codes are the
 * gRPC port's. Browsers cannot stream a request body over HTTP/1.1, so an
 * update is sent with veil.v1.UploadService (proto/veil/v1/upload.proto):
 * resumable chunk calls into a bounded store, then a commit that replays the
 * payload into the SubmitUpdate handler as one stream (the same intake path).
 * An upload holds one of its device's upload slots of the gRPC port's guard
 * (grpc/upload-guard.ts) from BeginUpload to its commit, with that guard's idle
 * timeout, minimum rate and cancellation when its round closes.
 *
 * A call's `connect-timeout-ms` header is its deadline (Connect protocol, "Timeout"): past it the
 * call is answered `deadline_exceeded` and the handler's call is cancelled, as grpc-js does at a
 * gRPC deadline. A path of no method (`/veil.v2.X/Y`, an unknown method) is answered with a
 * Connect error, `unimplemented` with HTTP 404 (the status the protocol maps to that code).
 */
import { createHash, randomBytes } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { join } from 'node:path';
import { Readable, Transform, pipeline } from 'node:stream';
import type { ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { StatusObject } from '@grpc/grpc-js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import protobuf from 'protobufjs';
import type { Logger } from 'pino';
import { EncodedModelChunk, MAX_CHUNK_BYTES, federationServiceDefinition, protoRoot, type FederationServiceHandlers } from '@veil/protocol';
import { VeilError, type VeilErrorCode } from '../errors.js';
import { hasLoneSurrogate } from './body-guard.js';
import type { RoundEngine } from '../rounds/engine.js';
import type { Client } from '../rounds/model.js';
import { DEVICE_SURFACE, type DeviceAuth } from '../grpc/device-auth.js';
import { updateHeaderInput, type RawUpdateHeader } from '../grpc/federation-service.js';
import { createIdleTimer, createRateMonitor, createUploadGuard, tooSlowError, type UploadGuard, type UploadSlot } from '../grpc/upload-guard.js';

export interface ConnectOptions {
  /** The gRPC handlers (createFederationHandlers): one implementation behind both ports. */
  handlers: FederationServiceHandlers;
  engine: RoundEngine;
  /** The gRPC port's device authentication (the same instance). */
  deviceAuth: DeviceAuth;
  logger: Logger;
  /** Bytes of begun, uncommitted uploads held at once (reserved at BeginUpload). Default 64 MiB. */
  uploadStoreBytes?: number;
  /**
   * The gRPC port's upload guard (pass the same instance). An upload holds one of its device's
   * slots from BeginUpload until its commit (the device's uploads are counted over both ports);
   * it is dropped, its bytes freed, after the guard's idle timeout without a call or chunk bytes
   * (DEADLINE_EXCEEDED), under the guard's minimum rate once begun (DEADLINE_EXCEEDED, the gRPC
   * port's text) and when its round closes (FAILED_PRECONDITION, through the guard, whose owner
   * is subscribed to the engine). Default: a guard of its own with the guard's defaults, which
   * these routes subscribe to the engine's round-closed and round-failed events.
   */
  uploadGuard?: UploadGuard;
  /**
   * Whether devices must present a client certificate (mutual TLS for devices, as on the gRPC port):
   * then every call (Join included, before its body is read) on a connection whose certificate the
   * TLS layer did not verify is refused with UNAUTHENTICATED. Default: never.
   */
  requireClientCertificate?: () => boolean;
  /** Origins allowed to call from a browser (CORS), or '*'. Default '*' (credentials are bearer headers, never cookies). */
  allowedOrigins?: '*' | readonly string[];
}

/** Connect's code names (https://connectrpc.com/docs/protocol#error-codes) and HTTP statuses of the coordinator's codes. */
const CONNECT: Readonly<Record<VeilErrorCode, [string, number]>> = {
  invalid_argument: ['invalid_argument', 400],
  unauthenticated: ['unauthenticated', 401],
  permission_denied: ['permission_denied', 403],
  not_found: ['not_found', 404],
  already_exists: ['already_exists', 409],
  already_accepted: ['already_exists', 409],
  failed_precondition: ['failed_precondition', 400],
  resource_exhausted: ['resource_exhausted', 429],
  rate_limited: ['resource_exhausted', 429],
  deadline_exceeded: ['deadline_exceeded', 504],
  aborted: ['aborted', 409],
  unavailable: ['unavailable', 503],
  internal: ['internal', 500],
};

/** gRPC status numbers, for a status without the veil-error-code trailer. */
const BY_GRPC_STATUS: Record<number, VeilErrorCode> = {
  1: 'aborted', 3: 'invalid_argument', 4: 'deadline_exceeded', 5: 'not_found', 6: 'already_exists', 7: 'permission_denied',
  8: 'resource_exhausted', 9: 'failed_precondition', 10: 'aborted', 13: 'internal', 14: 'unavailable', 16: 'unauthenticated',
};

interface ConnectError {
  code: VeilErrorCode;
  message: string;
  retryAfter?: string;
}

/** A gRPC status (as the handlers report it) or a thrown error, as the coordinator's code and public text. */
function fromStatus(status: Partial<StatusObject> | unknown): ConnectError {
  const s = status as Partial<StatusObject>;
  if (s !== null && typeof s === 'object' && typeof s.code === 'number' && 'details' in s) {
    const trailer = s.metadata?.get('veil-error-code')[0];
    const code = typeof trailer === 'string' && trailer in CONNECT ? (trailer as VeilErrorCode) : (BY_GRPC_STATUS[s.code] ?? 'internal');
    const retry = s.metadata?.get('retry-after')[0];
    return { code, message: s.details ?? '', ...(typeof retry === 'string' && { retryAfter: retry }) };
  }
  const e = VeilError.from(status);
  return { code: e.code, message: e.publicMessage, ...(e.retryAfterSeconds !== undefined && { retryAfter: String(e.retryAfterSeconds) }) };
}

type Codec = 'json' | 'proto';

/** Calls of the two services, with the protobuf types of their messages. */
const UNARY = {
  'veil.v1.FederationService': ['Join', 'GetTask', 'WaitForAssignment', 'ReportEvaluation'],
  'veil.v1.UploadService': ['BeginUpload', 'PutChunk', 'GetUpload', 'CommitUpload'],
} as const;

let root: protobuf.Root | undefined;
function protoTypes(): protobuf.Root {
  if (root === undefined) {
    const dir = protoRoot();
    const r = new protobuf.Root();
    r.resolvePath = (_origin, target) => (target.startsWith(dir) ? target : join(dir, target));
    r.loadSync(['veil/v1/federation.proto', 'veil/v1/upload.proto'], { keepCase: false });
    r.resolveAll();
    root = r;
  }
  return root;
}

const TO_JSON: protobuf.IConversionOptions = { longs: String, enums: String, bytes: String, json: true };

/** A request body in `codec` as the message object grpc-js would hand the handler (its own deserializer, same options). */
function decodeRequest(type: protobuf.Type, codec: Codec, body: Buffer, deserialize: (bytes: Buffer) => unknown): unknown {
  if (codec === 'proto') return deserialize(body);
  let json: unknown;
  try {
    json = body.length === 0 ? {} : JSON.parse(body.toString('utf8'));
  } catch {
    throw new VeilError('invalid_argument', 'the request body is not valid JSON');
  }
  if (json === null || typeof json !== 'object' || Array.isArray(json)) throw new VeilError('invalid_argument', 'the request body must be a JSON object');
  const problem = checkJson(type, json as Record<string, unknown>, 0);
  if (problem !== null) throw new VeilError('invalid_argument', `invalid ${type.name}: ${problem}`);
  let bytes: Uint8Array;
  try {
    bytes = type.encode(type.fromObject(json as Record<string, unknown>)).finish();
  } catch {
    throw new VeilError('invalid_argument', `invalid ${type.name}`);
  }
  return deserialize(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

const INTEGER = /^-?\d+$/;
const BASE64 = /^[A-Za-z0-9+/_-]*={0,2}$/;

/**
 * Checks a proto3 JSON object (https://protobuf.dev/programming-guides/json/) against `type`
 * before protobufjs's lenient conversion: no unknown field, and each value of its field's JSON
 * kind (strings, numbers or decimal strings for integers, base64 for bytes, enum names or
 * numbers, objects for messages and maps). Returns the first problem, or null.
 */
function checkJson(type: protobuf.Type, json: Record<string, unknown>, depth: number): string | null {
  if (depth > 16) return 'nested too deeply';
  for (const [key, value] of Object.entries(json)) {
    const field = type.fields[key];
    if (field === undefined) return `unknown field ${JSON.stringify(key.slice(0, 40))}`;
    if (value === null) continue;
    field.resolve();
    const values = field.map ? Object.values(value as object) : field.repeated ? (value as unknown[]) : [value];
    if ((field.map || field.repeated) && (typeof value !== 'object' || Array.isArray(value) !== field.repeated)) return `${key}: ${field.map ? 'object' : 'array'} expected`;
    for (const v of values) {
      const problem = checkValue(field, v, depth);
      if (problem !== null) return `${key}: ${problem}`;
    }
  }
  return null;
}

function checkValue(field: protobuf.Field, v: unknown, depth: number): string | null {
  if (field.resolvedType instanceof protobuf.Type) {
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? checkJson(field.resolvedType, v as Record<string, unknown>, depth + 1) : 'object expected';
  }
  if (field.resolvedType instanceof protobuf.Enum) {
    return (typeof v === 'string' && v in field.resolvedType.values) || Number.isInteger(v) ? null : 'enum name expected';
  }
  switch (field.type) {
    case 'string':
      // Proto3 strings are UTF-8: a lone surrogate (JSON's "\ud800") has no encoding.
      return typeof v !== 'string' ? 'string expected' : hasLoneSurrogate(v) ? 'well-formed Unicode string expected' : null;
    case 'bool':
      return typeof v === 'boolean' ? null : 'boolean expected';
    case 'bytes':
      // Padded: a whole number of 4-character groups; unpadded: never 1 character past one (6 bits, no byte).
      return typeof v === 'string' && BASE64.test(v) && (v.endsWith('=') ? v.length % 4 === 0 : v.length % 4 !== 1) ? null : 'base64 string expected';
    case 'double':
    case 'float':
      return typeof v === 'number' || (typeof v === 'string' && ['NaN', 'Infinity', '-Infinity'].includes(v)) ? null : 'number expected';
    default: {
      const ok = (typeof v === 'number' && Number.isSafeInteger(v)) || (typeof v === 'string' && INTEGER.test(v) && Number.isSafeInteger(Number(v)));
      if (!ok) return 'integer expected';
      const value = Number(v);
      return field.type.startsWith('u') || field.type.startsWith('fixed') ? (value < 0 ? 'non-negative integer expected' : null) : null;
    }
  }
}

/** A response message (serialized by `serialize`, as grpc-js would send it) in `codec`. */
function encodeResponse(type: protobuf.Type, codec: Codec, bytes: Uint8Array): Buffer | string {
  if (codec === 'proto') return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return JSON.stringify(type.toObject(type.decode(bytes), TO_JSON));
}

/** Connect's envelope: flags byte, big-endian length, message. */
function envelope(flags: number, message: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(5 + message.byteLength);
  out[0] = flags;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
}

function codecOf(contentType: string | undefined, streaming: boolean): Codec | null {
  const base = (contentType ?? '').split(';', 1)[0]!.trim().toLowerCase();
  if (streaming) return base === 'application/connect+proto' ? 'proto' : base === 'application/connect+json' ? 'json' : null;
  return base === 'application/proto' ? 'proto' : base === 'application/json' ? 'json' : null;
}

/** The peer as grpc-js names it (`ipv4:1.2.3.4:5678`), for the handlers' throttling and logs. */
function peerOf(request: FastifyRequest): string {
  const address = request.socket.remoteAddress ?? 'unknown';
  return address.includes(':') ? `ipv6:[${address}]:${request.socket.remotePort ?? 0}` : `ipv4:${address}:${request.socket.remotePort ?? 0}`;
}

const metadataOf = (request: FastifyRequest): { get(key: string): unknown[] } => ({
  get: (key) => {
    const value = request.headers[key.toLowerCase()];
    return value === undefined ? [] : Array.isArray(value) ? value : [value];
  },
});

/** A grpc-js server call as the handlers use it (request, metadata, peer, path; `cancelled` when the device goes away). */
type ShimCall = EventEmitter & { cancelled: boolean };
function baseCall(request: FastifyRequest, path: string, message: unknown): ShimCall {
  const call: ShimCall = Object.assign(new EventEmitter(), {
    request: message,
    metadata: metadataOf(request),
    cancelled: false,
    getPeer: () => peerOf(request),
    getPath: () => path,
    [DEVICE_SURFACE]: 'connect' as const,
  });
  return call;
}

interface StoredUpload {
  id: string;
  clientId: string;
  taskId: string;
  roundNumber: number;
  /** The header as sent (for the replay into SubmitUpdate). */
  header: Record<string, unknown>;
  sha256: string;
  size: number;
  chunks: Buffer[];
  received: number;
  /** Store bytes this upload holds (its size until committed or dropped, then 0). */
  reservedBytes: number;
  /** Its slot in the upload guard, held until it is committed (the SubmitUpdate replay takes one of its own) or dropped. */
  slot: UploadSlot;
  /** Restarted by every call naming it and by every PutChunk body byte credited to it. */
  idle: { start(): void; stop(): void };
  /** The guard's minimum rate, from BeginUpload until every declared byte arrived. */
  rate: { add(bytes: number): void; stop(): void };
  /** Ends the revocation watch (a revoked device's upload is dropped at once, until its commit). */
  untrack: () => void;
  state: 'open' | 'committing' | 'committed';
  result?: Buffer;
}

/** A call's deadline from its connect-timeout-ms header: when (epoch ms) and the header's value. */
interface CallDeadline {
  at: number;
  timeoutMs: number;
}

/** `connect-timeout-ms` as the protocol defines it: a positive integer of at most 10 digits. */
const TIMEOUT_MS = /^[0-9]{1,10}$/;

/** The route that answers every POST or GET to a path of the veil packages that names no method. */
const NO_METHOD_ROUTE = '/veil.*';

function deadlineExceeded(deadline: CallDeadline): VeilError {
  return new VeilError('deadline_exceeded', `the call's deadline passed (connect-timeout-ms ${deadline.timeoutMs})`);
}

/** How many cancelled uploads' reasons are kept (for the calls that still name them), and how long, ms. */
const MAX_ENDED_UPLOADS = 4096;
const ENDED_UPLOAD_TTL_MS = 600_000;

/**
 * The upload id a binary PutChunk body starts with (field 1, length-delimited, as the SDK writes
 * it first): the id, `undefined` while `head` is too short to tell, or null when the body does not
 * start with it (the call's bytes are then credited once its chunk is accepted).
 */
function leadingUploadId(head: Buffer): string | null | undefined {
  if (head.length < 2) return undefined;
  const length = head[1]!;
  if (head[0] !== 0x0a || length > 64) return null;
  return head.length < 2 + length ? undefined : head.subarray(2, 2 + length).toString('latin1');
}

/** Fastify plugin: Connect routes for the device protocol and resumable uploads. */
export async function connectRoutes(app: FastifyInstance, options: ConnectOptions): Promise<void> {
  const { handlers, engine } = options;
  const log = options.logger.child({ component: 'connect' });
  const types = protoTypes();
  const definition = federationServiceDefinition() as unknown as Record<string, { requestDeserialize(b: Buffer): unknown; responseSerialize(v: unknown): Buffer }>;
  const storeBytes = options.uploadStoreBytes ?? 64 * 2 ** 20;
  const origins = options.allowedOrigins ?? '*';
  const guard = options.uploadGuard ?? createUploadGuard();
  const idleMs = guard.idleTimeoutMs;
  const uploads = new Map<string, StoredUpload>();
  /** Each device's uploads (BeginUpload looks only at the caller's). */
  const byClient = new Map<string, Set<StoredUpload>>();
  /** Why an upload was cancelled, for the calls that still name it (the newest, for a while). */
  const ended = new Map<string, { clientId: string; error: VeilError }>();
  /**
   * PutChunk calls whose body bytes were credited to their upload's rate while they arrived; when
   * the call ends the credit is settled to the chunk bytes it added (none if refused).
   */
  const credits = new WeakMap<FastifyRequest, { upload: StoredUpload; credited: number; settled: boolean }>();
  /** Settles a PutChunk call's credit: its upload's rate keeps `accepted` bytes of what it was credited. */
  const settle = (request: FastifyRequest, accepted: number): boolean => {
    const credit = credits.get(request);
    if (credit === undefined || credit.settled) return false;
    credit.settled = true;
    credit.upload.rate.add(accepted - credit.credited);
    return true;
  };
  let reserved = 0;

  const release = (upload: StoredUpload): void => {
    reserved -= upload.reservedBytes;
    upload.reservedBytes = 0;
  };
  /** Forgets an upload and frees what it holds; with `error`, calls still naming it get that error. */
  const drop = (upload: StoredUpload, why: string, error?: VeilError): void => {
    if (uploads.get(upload.id) !== upload) return;
    uploads.delete(upload.id);
    const own = byClient.get(upload.clientId);
    own?.delete(upload);
    if (own?.size === 0) byClient.delete(upload.clientId);
    upload.idle.stop();
    upload.rate.stop();
    upload.slot.close();
    upload.untrack();
    release(upload);
    upload.chunks.length = 0;
    if (error !== undefined) {
      ended.set(upload.id, { clientId: upload.clientId, error });
      if (ended.size > MAX_ENDED_UPLOADS) ended.delete(ended.keys().next().value!);
      setTimeout(() => ended.delete(upload.id), ENDED_UPLOAD_TTL_MS).unref();
    }
    log.info({ taskId: upload.taskId, clientId: upload.clientId, roundNumber: upload.roundNumber, received: upload.received, size: upload.size, why }, 'upload dropped');
  };
  if (options.uploadGuard === undefined) {
    // A guard of our own: nobody else cancels its uploads when their round closes.
    const roundClosed = ({ taskId, round }: { taskId: string; round: { number: number; state: string } }): void => guard.roundClosed(taskId, round.number, round.state);
    engine.on('round-closed', roundClosed);
    engine.on('round-failed', roundClosed);
    app.addHook('onClose', async () => {
      engine.off('round-closed', roundClosed);
      engine.off('round-failed', roundClosed);
    });
  }
  app.addHook('onClose', async () => {
    for (const upload of [...uploads.values()]) drop(upload, 'closing');
    ended.clear();
  });
  /** A call named the upload: its idle timeout starts again (not while it is being committed). */
  const touch = (upload: StoredUpload): void => {
    if (upload.state !== 'committing') upload.idle.start();
  };

  const cors = (request: FastifyRequest, reply: FastifyReply | ServerResponse): void => {
    const origin = request.headers.origin;
    if (origin === undefined) return;
    const allowed = origins === '*' ? '*' : origins.includes(origin) ? origin : null;
    if (allowed === null) return;
    const set = (k: string, v: string): void => void ('raw' in reply ? reply.header(k, v) : reply.setHeader(k, v));
    set('access-control-allow-origin', allowed);
    if (allowed !== '*') set('vary', 'origin');
    set('access-control-expose-headers', 'veil-error-code, retry-after, grpc-status, grpc-message');
  };

  const sendError = (request: FastifyRequest, reply: FastifyReply, error: ConnectError): FastifyReply => {
    const [code, status] = CONNECT[error.code];
    if (error.code === 'internal') log.error({ reason: error.message }, 'request failed');
    cors(request, reply);
    void reply.header('veil-error-code', error.code);
    if (error.retryAfter !== undefined) void reply.header('retry-after', error.retryAfter);
    return reply.status(status).type('application/json').send({ code, message: error.message });
  };

  /** Each call's deadline, from its connect-timeout-ms header (checked before anything else of the call). */
  const deadlines = new WeakMap<FastifyRequest, CallDeadline>();
  /**
   * Calls `onExpiry` when `request`'s deadline passes before `stop` is called (at once if it has
   * passed); returns `stop`. No deadline: nothing is armed.
   */
  const armDeadline = (request: FastifyRequest, onExpiry: (error: VeilError) => void): (() => void) => {
    const deadline = deadlines.get(request);
    if (deadline === undefined) return () => {};
    const timer = setTimeout(() => onExpiry(deadlineExceeded(deadline)), Math.max(0, deadline.at - Date.now()));
    return () => clearTimeout(timer);
  };

  /** Runs a unary grpc handler with `message`; resolves to its serialized response. Cancelled at the call's deadline. */
  const runUnary = (request: FastifyRequest, reply: FastifyReply, path: string, method: string, message: unknown): Promise<Buffer> =>
    new Promise((resolve, reject) => {
      const call = baseCall(request, path, message);
      const cancel = (): void => {
        if (call.cancelled) return;
        call.cancelled = true;
        call.emit('cancelled');
      };
      reply.raw.once('close', () => {
        if (!reply.raw.writableEnded) cancel();
      });
      const stop = armDeadline(request, (error) => {
        cancel();
        reject(error);
      });
      const handler = (handlers as unknown as Record<string, (call: unknown, cb: (e: unknown, v?: unknown) => void) => void>)[method]!;
      handler(call, (error, value) => {
        stop();
        if (error) reject(error);
        else resolve(definition[method]!.responseSerialize(value));
      });
    });

  /**
   * An upload call, answered `deadline_exceeded` at the call's deadline. The call itself runs to its
   * end (a chunk stored, a commit recorded), as a gRPC call may after the device's deadline: the
   * device asks GetUpload, or commits again, which answers with the first commit's result.
   */
  const runUploadCall = (request: FastifyRequest, work: Promise<Uint8Array>): Promise<Uint8Array> =>
    new Promise((resolve, reject) => {
      const stop = armDeadline(request, reject);
      work.then(
        (value) => {
          stop();
          resolve(value);
        },
        (error: unknown) => {
          stop();
          reject(error);
        },
      );
    });

  // ------------------------------------------------------------------ UploadService
  const ownUpload = (id: string, clientId: string): StoredUpload => {
    const upload = typeof id === 'string' ? uploads.get(id) : undefined;
    if (upload === undefined || upload.clientId !== clientId) {
      const end = typeof id === 'string' ? ended.get(id) : undefined;
      if (end !== undefined && end.clientId === clientId) throw end.error;
      throw new VeilError('not_found', 'unknown or expired upload');
    }
    return upload;
  };
  const status = (u: StoredUpload): Uint8Array =>
    types.lookupType('veil.v1.UploadStatus').encode({ uploadId: u.id, receivedBytes: u.received, sizeBytes: u.size, maxChunkBytes: MAX_CHUNK_BYTES }).finish();
  /** The client a call's credential names (the gRPC port's authentication: same throttling, lockout and revocation). */
  const authenticated = new WeakMap<FastifyRequest, Client>();
  const authenticate = async (request: FastifyRequest, path: string): Promise<Client> =>
    authenticated.get(request) ?? options.deviceAuth.authenticate(path.split('/').at(-1) ?? '', metadataOf(request), peerOf(request), 'connect');

  const uploadCalls: Record<string, (request: FastifyRequest, reply: FastifyReply, path: string, message: Record<string, unknown>) => Promise<Uint8Array>> = {
    async BeginUpload(request, _reply, path, message) {
      const client = await authenticate(request, path);
      const raw = message['header'] as Record<string, unknown> | null | undefined;
      if (raw == null) throw new VeilError('invalid_argument', 'BeginUpload needs the update header');
      // The SubmitUpdate handler's own header checks, then the engine's (round open, selected, sizes).
      const header = updateHeaderInput(raw as unknown as RawUpdateHeader);
      const { maxBytes } = await engine.checkUpdateHeader(client, header);
      const h = { roundNumber: header.roundNumber, sha256: header.sha256, size: header.payloadSizeBytes, maxBytes };
      if (h.size > h.maxBytes) throw new VeilError('resource_exhausted', `payload_size_bytes exceeds the task's ${h.maxBytes} bytes`);
      if (h.size < 1) throw new VeilError('invalid_argument', 'payload_size_bytes must be positive');
      // The same update begun again (a page that lost the answer) resumes the upload it has.
      const mine = [...(byClient.get(client.id) ?? [])].filter((u) => u.state !== 'committed');
      const same = mine.find((u) => u.roundNumber === h.roundNumber && u.sha256 === h.sha256 && u.size === h.size);
      if (same !== undefined) {
        touch(same);
        return status(same);
      }
      const id = randomBytes(18).toString('base64url');
      const ids = { clientId: client.id, taskId: client.taskId, roundNumber: h.roundNumber };
      // The device's uploads over both ports (RESOURCE_EXHAUSTED beyond the guard's limit); cancelled when the round closes.
      const slot = guard.open(ids, (error) => {
        const upload = uploads.get(id);
        if (upload !== undefined) drop(upload, 'round closed', error);
      });
      if (reserved + h.size > storeBytes) {
        slot.close();
        throw new VeilError('rate_limited', 'the coordinator holds as many uploads as it can; retry later', { retryAfterMs: 2_000 });
      }
      reserved += h.size;
      const { minBytesPerSecond, windowMs } = guard.minRate;
      const upload: StoredUpload = {
        id,
        clientId: client.id,
        taskId: client.taskId,
        roundNumber: h.roundNumber,
        header: raw,
        sha256: h.sha256,
        size: h.size,
        chunks: [],
        received: 0,
        reservedBytes: h.size,
        slot,
        idle: createIdleTimer(idleMs, () => {
          if (upload.state === 'open') drop(upload, 'idle', new VeilError('deadline_exceeded', `no upload call or data for ${idleMs} ms`));
          else drop(upload, 'expired');
        }),
        // Like a gRPC stream's: a device that keeps the upload alive with a byte now and then holds the store's bytes.
        rate: createRateMonitor(guard.minRate, (observed) => drop(upload, 'too slow', tooSlowError(observed, { minBytesPerSecond, windowMs }))),
        untrack: () => {},
        state: 'open',
      };
      // Revoking the device drops what it holds at once (its calls are refused from then on anyway).
      upload.untrack = options.deviceAuth.track(client, () => drop(upload, 'revoked', new VeilError('unauthenticated', 'the client credential was revoked')));
      upload.idle.start();
      uploads.set(upload.id, upload);
      const own = byClient.get(client.id);
      if (own === undefined) byClient.set(client.id, new Set([upload]));
      else own.add(upload);
      return status(upload);
    },

    async PutChunk(request, _reply, path, message) {
      const client = await authenticate(request, path);
      const upload = ownUpload(message['uploadId'] as string, client.id);
      if (upload.state !== 'open') throw new VeilError('failed_precondition', 'the upload was committed');
      touch(upload);
      const data = message['data'] as Buffer;
      const offset = message['offset'] as number;
      const digest = message['sha256'] as Buffer;
      if (data.byteLength === 0) throw new VeilError('invalid_argument', 'empty chunk');
      if (data.byteLength > MAX_CHUNK_BYTES) throw new VeilError('resource_exhausted', `chunks are limited to ${MAX_CHUNK_BYTES} bytes`);
      const actual = createHash('sha256').update(data).digest();
      if (digest.byteLength !== 32 || !actual.equals(digest)) throw new VeilError('invalid_argument', 'the chunk does not match its sha256');
      if (offset + data.byteLength <= upload.received) {
        // Sent again (its answer was lost): acknowledged if it is the same bytes.
        const held = Buffer.concat(upload.chunks, upload.received).subarray(offset, offset + data.byteLength);
        if (!held.equals(data)) throw new VeilError('failed_precondition', `bytes at offset ${offset} differ from those received`);
        return status(upload);
      }
      if (offset !== upload.received) throw new VeilError('failed_precondition', `the next chunk starts at offset ${upload.received}`);
      if (upload.received + data.byteLength > upload.size) throw new VeilError('resource_exhausted', `payload exceeds the declared ${upload.size} bytes`);
      upload.chunks.push(Buffer.from(data));
      upload.received += data.byteLength;
      // Counted while the body arrived (less the message's framing), or now (JSON codec, or a body that does not start with the id).
      if (credits.get(request)?.upload !== upload || !settle(request, data.byteLength)) upload.rate.add(data.byteLength);
      // Everything declared arrived: waiting for the commit is no transfer (the idle timeout still applies).
      if (upload.received === upload.size) upload.rate.stop();
      return status(upload);
    },

    async GetUpload(request, _reply, path, message) {
      const client = await authenticate(request, path);
      const upload = ownUpload(message['uploadId'] as string, client.id);
      touch(upload);
      return status(upload);
    },

    async CommitUpload(request, reply, path, message) {
      const client = await authenticate(request, path);
      const upload = ownUpload(message['uploadId'] as string, client.id);
      if (upload.state === 'committed') throw new VeilError('already_accepted', 'this upload was already accepted');
      if (upload.state === 'committing') throw new VeilError('aborted', 'this upload is being committed');
      if (upload.received !== upload.size) throw new VeilError('failed_precondition', `${upload.received} of ${upload.size} bytes received`);
      upload.state = 'committing';
      upload.idle.stop();
      upload.rate.stop();
      // The SubmitUpdate stream below takes a slot of its own (and is cancelled at round close or revocation, as any).
      upload.slot.close();
      upload.untrack();
      // The payload goes to the SubmitUpdate handler as a stream of header + chunks: the gRPC intake, unchanged.
      const items: unknown[] = [{ part: 'header', header: upload.header }, ...upload.chunks.map((chunk) => ({ part: 'chunk', chunk }))];
      const stream = Object.assign(new Readable({ objectMode: true, read() {} }), {
        metadata: metadataOf(request),
        cancelled: false,
        getPeer: () => peerOf(request),
        getPath: () => '/veil.v1.FederationService/SubmitUpdate',
        [DEVICE_SURFACE]: 'connect' as const,
      });
      try {
        const response = await new Promise<Buffer>((resolve, reject) => {
          (handlers.SubmitUpdate as unknown as (call: unknown, cb: (e: unknown, v?: unknown) => void) => void)(stream, (error, value) =>
            error ? reject(error) : resolve(definition['SubmitUpdate']!.responseSerialize(value)),
          );
          for (const item of items) stream.push(item);
          stream.push(null);
        });
        void reply;
        upload.state = 'committed';
        release(upload);
        upload.chunks.length = 0;
        upload.result = response;
        // The record answers a repeated commit until it has been left alone for the idle timeout.
        upload.idle.start();
        return response;
      } catch (error) {
        // Refused (e.g. its round closed, or already accepted): nothing of it is kept.
        drop(Object.assign(upload, { state: 'open' as const }), 'commit refused');
        throw error;
      }
    },
  };

  /**
   * A binary PutChunk body as it arrives: once its leading upload id names an open upload of the
   * caller, every byte restarts that upload's idle timeout and counts for its minimum rate, so a
   * device on a slow link is judged by the bytes it sends, not by how often a whole chunk (up to
   * 1 MiB) completes. When the call ends, the credit is settled to the chunk bytes accepted: the
   * message's framing and a refused or aborted chunk count for nothing (a device cannot keep an
   * upload alive with calls that add no data). Other bodies are counted when their chunk is accepted.
   */
  const creditWhileArriving = (request: FastifyRequest, reply: FastifyReply, payload: NodeJS.ReadableStream): NodeJS.ReadableStream => {
    const client = authenticated.get(request);
    if (client === undefined || codecOf(request.headers['content-type'], false) !== 'proto') return payload;
    let head: Buffer | null = Buffer.alloc(0);
    let target: StoredUpload | null = null;
    let seen = 0;
    const counter: Transform & { receivedEncodedLength?: number } = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        seen += chunk.byteLength;
        counter.receivedEncodedLength = seen;
        if (head !== null) {
          head = Buffer.concat([head, chunk]);
          const id = leadingUploadId(head);
          if (id !== undefined) {
            const upload = id === null ? undefined : uploads.get(id);
            if (upload !== undefined && upload.clientId === client.id && upload.state === 'open') {
              target = upload;
              credits.set(request, { upload, credited: head.byteLength, settled: false });
              upload.rate.add(head.byteLength);
              upload.idle.start();
              reply.raw.once('close', () => settle(request, 0));
            }
            head = null;
          } else if (head.byteLength > 80) head = null;
        } else if (target !== null && target.state === 'open' && uploads.get(target.id) === target) {
          credits.get(request)!.credited += chunk.byteLength;
          target.rate.add(chunk.byteLength);
          target.idle.start();
        }
        callback(null, chunk);
      },
    });
    pipeline(payload, counter, () => {});
    return counter;
  };

  const smallBody = 64 * 1024;
  // A PutChunk body: the chunk, its digest and id (+ base64's third with the JSON codec).
  const chunkBody = Math.ceil((MAX_CHUNK_BYTES * 4) / 3) + 4096;

  await app.register(async (scope) => {
    // Bodies are read raw: the codec is the call's, decoded with the protocol's own deserializers.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: chunkBody }, (_request, body, done) => done(null, body));
    // The framework's own refusals (a body over the limit, a body shorter than its content-length) as
    // Connect errors: the JSON error body with a Connect code and the coordinator's code header.
    scope.setErrorHandler((error: unknown, request, reply) => {
      const statusCode = (error as { statusCode?: unknown }).statusCode;
      if (!(error instanceof VeilError) && typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
        cors(request, reply);
        // A Content-Type the parser cannot read: as the routes answer one they do not speak.
        if (statusCode === 415) return reply.status(415).type('application/json').send({ code: 'unknown', message: 'unsupported Content-Type' });
        const tooLarge = statusCode === 413;
        const code: VeilErrorCode = tooLarge ? 'resource_exhausted' : 'invalid_argument';
        return reply
          .status(tooLarge ? 413 : 400)
          .header('veil-error-code', code)
          .type('application/json')
          .send({ code, message: tooLarge ? 'the request body is larger than this call allows' : 'malformed request body' });
      }
      return sendError(request, reply, fromStatus(error));
    });
    // Authentication before the body is read (every call but Join and the CORS preflight), as on the gRPC port.
    scope.addHook('onRequest', async (request, reply) => {
      const path = request.url.split('?', 1)[0]!;
      // A path of no method is answered as such, whoever asks (as grpc-js answers UNIMPLEMENTED).
      if (request.method !== 'POST' || request.routeOptions.url === NO_METHOD_ROUTE) return;
      if (options.requireClientCertificate?.() === true && (request.raw.socket as Partial<TLSSocket>).authorized !== true) {
        log.warn({ peer: peerOf(request), call: path.split('/').at(-1) }, 'device call without a verified client certificate');
        return sendError(request, reply, { code: 'unauthenticated', message: 'a client certificate from the device CA is required' });
      }
      const timeout = request.headers['connect-timeout-ms'];
      if (timeout !== undefined) {
        if (typeof timeout !== 'string' || !TIMEOUT_MS.test(timeout) || Number(timeout) === 0) {
          return sendError(request, reply, { code: 'invalid_argument', message: 'connect-timeout-ms must be a positive integer of at most 10 digits' });
        }
        deadlines.set(request, { at: Date.now() + Number(timeout), timeoutMs: Number(timeout) });
      }
      if (path === '/veil.v1.FederationService/Join') return;
      try {
        authenticated.set(request, await options.deviceAuth.authenticate(path.split('/').at(-1) ?? '', metadataOf(request), peerOf(request), 'connect'));
      } catch (error) {
        return sendError(request, reply, fromStatus(error));
      }
    });

    for (const [service, methods] of Object.entries(UNARY)) {
      for (const method of methods) {
        const path = `/${service}/${method}`;
        const uploadCall = service === 'veil.v1.UploadService';
        const rpc = types.lookupService(service).methods[method]!;
        rpc.resolve();
        const requestType = rpc.resolvedRequestType!;
        const responseType = rpc.resolvedResponseType!;
        const deserialize = uploadCall
          ? (bytes: Buffer): unknown => {
              try {
                return requestType.toObject(requestType.decode(bytes), { longs: Number, enums: String, defaults: true, oneofs: true });
              } catch {
                throw new VeilError('invalid_argument', 'the request is not a valid protobuf message of its type');
              }
            }
          : definition[method]!.requestDeserialize;
        const preParsing =
          method === 'PutChunk' ? async (request: FastifyRequest, reply: FastifyReply, payload: NodeJS.ReadableStream) => creditWhileArriving(request, reply, payload) : undefined;
        scope.post(path, { bodyLimit: method === 'PutChunk' ? chunkBody : smallBody, config: { auth: 'public' }, schema: { hide: true }, ...(preParsing && { preParsing }) }, async (request, reply) => {
          const codec = codecOf(request.headers['content-type'], false);
          if (codec === null) {
            cors(request, reply);
            return reply.status(415).header('accept-post', 'application/json, application/proto').send({ code: 'unknown', message: 'Content-Type must be application/json or application/proto' });
          }
          try {
            const message = decodeRequest(requestType, codec, (request.body as Buffer | undefined) ?? Buffer.alloc(0), deserialize);
            const bytes = uploadCall
              ? await runUploadCall(request, uploadCalls[method]!(request, reply, path, message as Record<string, unknown>))
              : await runUnary(request, reply, path, method, message);
            cors(request, reply);
            return reply.status(200).type(codec === 'proto' ? 'application/proto' : 'application/json').send(encodeResponse(responseType, codec, bytes));
          } catch (error) {
            return sendError(request, reply, fromStatus(error));
          }
        });
      }
    }

    // DownloadModel: Connect server streaming (one enveloped request; header then chunk messages; an end-stream message).
    const downloadPath = '/veil.v1.FederationService/DownloadModel';
    const chunkType = types.lookupType('veil.v1.ModelChunk');
    const downloadRequestType = types.lookupType('veil.v1.DownloadModelRequest');
    scope.post(downloadPath, { bodyLimit: smallBody, config: { auth: 'public' }, schema: { hide: true } }, async (request, reply) => {
      const codec = codecOf(request.headers['content-type'], true);
      if (codec === null) {
        cors(request, reply);
        return reply.status(415).send({ code: 'unknown', message: 'Content-Type must be application/connect+json or application/connect+proto' });
      }
      const body = (request.body as Buffer | undefined) ?? Buffer.alloc(0);
      let message: unknown;
      try {
        if (body.length < 5 || body.readUInt32BE(1) !== body.length - 5 || body[0] !== 0) throw new VeilError('invalid_argument', 'the request must be one Connect envelope');
        message = decodeRequest(downloadRequestType, codec, body.subarray(5), definition['DownloadModel']!.requestDeserialize);
      } catch (error) {
        return sendError(request, reply, fromStatus(error));
      }
      const res = reply.raw;
      reply.hijack();
      const headers: Record<string, string> = { 'content-type': codec === 'proto' ? 'application/connect+proto' : 'application/connect+json' };
      const origin = request.headers.origin;
      if (origin !== undefined && (origins === '*' || origins.includes(origin))) {
        headers['access-control-allow-origin'] = origins === '*' ? '*' : origin;
        headers['access-control-expose-headers'] = 'veil-error-code, retry-after';
      }
      res.writeHead(200, headers);
      const call = baseCall(request, downloadPath, message);
      let ended = false;
      const endStream = (error: ConnectError | null): void => {
        if (ended) return;
        ended = true;
        const end = error === null ? {} : { error: { code: CONNECT[error.code][0], message: error.message }, metadata: { 'veil-error-code': [error.code] } };
        res.end(envelope(2, Buffer.from(JSON.stringify(end))));
      };
      Object.assign(call, {
        write(value: unknown): boolean {
          const bytes = value instanceof EncodedModelChunk ? value.bytes : definition['DownloadModel']!.responseSerialize(value);
          const out = codec === 'proto' ? bytes : Buffer.from(JSON.stringify(chunkType.toObject(chunkType.decode(bytes), TO_JSON)));
          return res.write(envelope(0, out));
        },
        end(): void {
          endStream(null);
        },
      });
      res.on('drain', () => call.emit('drain'));
      res.once('close', () => {
        if (!res.writableFinished) {
          call.cancelled = true;
          call.emit('cancelled');
        }
        call.emit('close');
      });
      call.on('error', (error: unknown) => endStream(fromStatus(error)));
      // At the call's deadline the stream ends with deadline_exceeded and the handler's call is cancelled.
      const stop = armDeadline(request, (error) => {
        if (ended) return;
        call.cancelled = true;
        call.emit('cancelled');
        endStream(fromStatus(error));
      });
      res.once('close', stop);
      (handlers.DownloadModel as unknown as (call: unknown) => void)(call);
    });

    // A path of no method: a Connect error, not the framework's plain 404 (a client of a newer
    // protocol version learns that this coordinator does not have the call).
    scope.route({
      method: ['POST', 'GET'],
      url: NO_METHOD_ROUTE,
      bodyLimit: smallBody,
      config: { auth: 'public' },
      schema: { hide: true },
      handler: async (request, reply) => {
        cors(request, reply);
        const path = request.url.split('?', 1)[0]!.slice(0, 200);
        return reply.status(404).type('application/json').send({ code: 'unimplemented', message: `${path} is not a method of this coordinator` });
      },
    });

    // CORS preflight of every call.
    scope.options('/veil.v1.:service/:method', { config: { auth: 'public' }, schema: { hide: true } }, async (request, reply) => {
      cors(request, reply);
      return reply
        .status(204)
        .header('access-control-allow-methods', 'POST')
        .header('access-control-allow-headers', 'authorization, content-type, connect-protocol-version, connect-timeout-ms')
        .header('access-control-max-age', '600')
        .send();
    });
  });
}
