/**
 * gRPC over HTTP/2 (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md) on Node's
 * own `node:http2`: one connection, calls as streams, length-prefixed messages, the status in
 * the trailers. It is all a device needs from gRPC (no name resolution, load balancing,
 * interceptors, retries or compression, which grpc-js runs on every call), at a fraction of
 * grpc-js's CPU per call: a device's round is a long-poll, a model download and an upload.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import { ClientError, parseRetryAfter, type ClientErrorCode } from '../errors.js';

/** gRPC status codes (https://grpc.github.io/grpc/core/md_doc_statuscodes.html) the SDK tells apart. */
const STATUS_CODES: Readonly<Record<number, ClientErrorCode>> = {
  1: 'cancelled',
  3: 'invalid_argument',
  4: 'deadline_exceeded',
  5: 'not_found',
  6: 'already_exists',
  7: 'permission_denied',
  8: 'resource_exhausted',
  9: 'failed_precondition',
  10: 'aborted',
  12: 'unimplemented',
  14: 'unavailable',
  16: 'unauthenticated',
};

/** Coordinator error codes the SDK acts on, read from the `veil-error-code` trailer (the status alone cannot tell them apart). */
const TRAILER_CODES: ReadonlySet<ClientErrorCode> = new Set(['already_accepted']);

/** gRPC status of an HTTP response that is not gRPC (the protocol's table for non-200 answers). */
function statusOfHttp(status: number): number {
  if (status === 400) return 13;
  if (status === 401) return 16;
  if (status === 403) return 7;
  if (status === 404) return 12;
  if (status === 429 || status === 502 || status === 503 || status === 504) return 14;
  return 2;
}

function decodeGrpcMessage(value: unknown): string {
  if (typeof value !== 'string') return '';
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}

const first = (value: string | string[] | undefined): string | undefined => (Array.isArray(value) ? value[0] : value);

/**
 * The status a call ended with, shaped as grpc-js reports one (`code`: the gRPC status number,
 * `details`, `metadata`: the trailers): the `cause` of the ClientError the transport throws.
 */
export class GrpcStatusError extends Error {
  override readonly name = 'GrpcStatusError';
  constructor(
    readonly code: number,
    readonly details: string,
    readonly metadata: Readonly<http2.IncomingHttpHeaders> = {},
    options?: { cause?: unknown },
  ) {
    super(`${code} ${details}`, options);
  }
}

/** The SDK error of a call that ended with gRPC status `status` (not 0), its trailers in `metadata`. */
function statusError(status: number, details: string, metadata: http2.IncomingHttpHeaders = {}, cause?: unknown): ClientError {
  const trailer = first(metadata['veil-error-code']);
  const code = trailer !== undefined && TRAILER_CODES.has(trailer as ClientErrorCode) ? (trailer as ClientErrorCode) : (STATUS_CODES[status] ?? 'internal');
  return new ClientError(code, details, {
    cause: new GrpcStatusError(status, details, metadata, cause === undefined ? undefined : { cause }),
    retryAfterMs: parseRetryAfter(first(metadata['retry-after'])),
  });
}

/**
 * Buffers of messages that spanned chunks, handed back by the caller once it no longer reads them
 * (GrpcChannel.recycle): the next such message is received into one of them instead of into fresh
 * memory. A fresh buffer costs a page fault per 4 KiB page on first write (98 for a 400 kB model),
 * because Node frees a dropped buffer only at a later garbage collection, and a device process
 * collects rarely: every round's model landed in memory the process had never touched.
 */
class BodyPool {
  /** Bodies this pool allocated and has not been given back (only these are accepted back). */
  private readonly lent = new WeakSet<ArrayBuffer>();
  private readonly free: ArrayBuffer[] = [];

  constructor(private readonly maxFree: number) {}

  /** A buffer of `length` bytes: a recycled body at least that large (and not over twice it), or a fresh one. */
  take(length: number): Buffer {
    const i = this.free.findIndex((b) => b.byteLength >= length && b.byteLength <= 2 * length);
    // allocUnsafeSlow: memory of its own (allocUnsafe may slice Node's shared pool, which must never be lent).
    const body = i >= 0 ? Buffer.from(this.free.splice(i, 1)[0]!, 0, length) : Buffer.allocUnsafeSlow(length);
    this.lent.add(body.buffer as ArrayBuffer);
    return body;
  }

  /** Gives back the body that `view` lies in; ignored when it is not one this pool lent (or already came back). */
  give(view: Uint8Array): void {
    const memory = view.buffer;
    if (!(memory instanceof ArrayBuffer) || !this.lent.delete(memory)) return;
    if (this.free.length >= this.maxFree) this.free.shift();
    this.free.push(memory);
  }
}

/**
 * Splits a call's DATA into gRPC messages (1-byte compressed flag, 4-byte big-endian length, the
 * message). A message inside one chunk is passed on as a view of it; one that spans chunks is
 * copied once, into a buffer of its own size (from `bodies`).
 */
class MessageReader {
  private readonly prefix = Buffer.alloc(5);
  private prefixBytes = 0;
  private body: Buffer | null = null;
  private bodyBytes = 0;

  constructor(
    private readonly maxMessageBytes: number,
    private readonly onMessage: (message: Buffer) => void,
    private readonly bodies: BodyPool,
  ) {}

  push(chunk: Buffer): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.body === null) {
        const take = Math.min(5 - this.prefixBytes, chunk.length - at);
        chunk.copy(this.prefix, this.prefixBytes, at, at + take);
        this.prefixBytes += take;
        at += take;
        if (this.prefixBytes < 5) return;
        this.prefixBytes = 0;
        if (this.prefix[0] !== 0) throw statusError(13, 'the coordinator sent a compressed message, which the device did not offer');
        const length = this.prefix.readUInt32BE(1);
        if (length > this.maxMessageBytes) throw statusError(8, `message of ${length} bytes exceeds the ${this.maxMessageBytes}-byte limit`);
        if (chunk.length - at >= length) {
          this.onMessage(chunk.subarray(at, at + length));
          at += length;
          continue;
        }
        this.body = this.bodies.take(length);
        this.bodyBytes = 0;
      }
      const take = Math.min(this.body.length - this.bodyBytes, chunk.length - at);
      chunk.copy(this.body, this.bodyBytes, at, at + take);
      this.bodyBytes += take;
      at += take;
      if (this.bodyBytes === this.body.length) {
        const message = this.body;
        this.body = null;
        this.onMessage(message);
      }
    }
  }

  /** Whether the stream stopped inside a message. */
  get partial(): boolean {
    return this.prefixBytes > 0 || this.body !== null;
  }
}

/** Frames one message: its 5-byte prefix (uncompressed) followed by `parts`, which are written as they are. */
export function frame(parts: readonly Uint8Array[]): Buffer[] {
  const length = parts.reduce((n, p) => n + p.byteLength, 0);
  const prefix = Buffer.allocUnsafe(5);
  prefix[0] = 0;
  prefix.writeUInt32BE(length, 1);
  return [prefix, ...parts.map((p) => (Buffer.isBuffer(p) ? p : Buffer.from(p.buffer, p.byteOffset, p.byteLength)))];
}

export interface GrpcChannelOptions {
  /** `host:port` of the coordinator. */
  target: string;
  /** TLS (ALPN h2) with these settings, or cleartext HTTP/2 (prior knowledge) when null. */
  tls: { ca?: string | Uint8Array; cert?: string | Uint8Array; key?: string | Uint8Array; serverName?: string } | null;
  /** HTTP/2 receive window, per stream and for the connection, bytes. */
  receiveWindowBytes: number;
  /** Largest message accepted from the coordinator, bytes. */
  maxMessageBytes: number;
  /** Interval of the keepalive PING while calls are open, ms; an unanswered PING closes the connection. */
  keepaliveMs: number;
  /** Called with the socket of each connection the channel opens (byte accounting, tests). */
  onConnection?: (socket: net.Socket) => void;
}

export interface CallOptions {
  /** Request metadata (lower-case names). */
  metadata?: Record<string, string>;
  /** The call's deadline from now, ms (sent as `grpc-timeout`, and enforced here). */
  timeoutMs: number;
  signal?: AbortSignal | undefined;
  /** Each response message, in order. Throwing a ClientError ends the call with it. */
  onMessage(message: Buffer): void;
}

/** An open call: write request messages, end, and await its status. */
export interface Call {
  write(message: readonly Uint8Array[]): void;
  end(): void;
  /** Resolves when the coordinator answers OK; rejects with a ClientError otherwise. */
  readonly done: Promise<void>;
  cancel(): void;
}

const CANCEL = http2.constants.NGHTTP2_CANCEL;

/**
 * Hands each DATA chunk of `stream` to `onChunk` as node:http2 reads it, before Readable's machinery:
 * node:http2 delivers a chunk by calling the stream's `push` (lib/internal/stream_base_commons.js,
 * onStreamRead), once per DATA frame (16 KiB from the coordinator: ~25 per model), and Readable's
 * push then buffers it, emits 'data' and schedules a read-ahead tick for each. The reader consumes
 * every chunk at once, so none of that is needed: the stream's own `push` now passes chunks to
 * `onChunk` and answers "read on" (the 'data' path's answer for a consumed chunk); the end of the
 * stream (null) still goes to Readable, which emits 'end' and lets node:http2 close the stream.
 * The caller also listens to 'data' with the same `onChunk`: should a Node version deliver chunks
 * otherwise, they arrive there (and nothing reaches it while this path is taken).
 */
export function takeChunks(stream: http2.ClientHttp2Stream, onChunk: (chunk: Buffer) => void): void {
  const push = stream.push;
  stream.push = function (this: http2.ClientHttp2Stream, chunk: unknown, encoding?: BufferEncoding): boolean {
    if (!Buffer.isBuffer(chunk)) return push.call(this, chunk, encoding);
    onChunk(chunk);
    return true;
  };
}

/** One lazily opened HTTP/2 connection to the coordinator, reopened on the next call after it is lost. */
export class GrpcChannel {
  private session: http2.ClientHttp2Session | null = null;
  private readonly authority: string;
  private readonly host: string;
  private readonly port: number;
  private openCalls = 0;
  private closed = false;
  private keepalive: NodeJS.Timeout | null = null;
  // One free body: a device hands back its previous model about when the next one arrives, so one
  // is reused each round; more would only hold memory (a model's size each) that nothing asks for.
  private readonly bodies = new BodyPool(1);

  constructor(private readonly options: GrpcChannelOptions) {
    const url = new URL(`http://${options.target}`);
    this.host = url.hostname.replace(/^\[(.*)\]$/, '$1');
    this.port = url.port === '' ? 443 : Number(url.port);
    this.authority = options.tls?.serverName ?? options.target;
  }

  private connection(): http2.ClientHttp2Session {
    if (this.closed) throw statusError(1, 'the transport is closed');
    const live = this.session;
    if (live !== null && !live.closed && !live.destroyed) return live;
    const { tls: secure, receiveWindowBytes } = this.options;
    const scheme = secure === null ? 'http' : 'https';
    const session = http2.connect(`${scheme}://${this.options.target}`, {
      settings: { initialWindowSize: receiveWindowBytes, enablePush: false },
      createConnection: () => {
        const socket =
          secure === null
            ? net.connect({ host: this.host, port: this.port })
            : tls.connect({
                host: this.host,
                port: this.port,
                ALPNProtocols: ['h2'],
                servername: secure.serverName ?? (net.isIP(this.host) === 0 ? this.host : ''),
                ...(secure.ca !== undefined && { ca: Buffer.from(secure.ca) }),
                ...(secure.cert !== undefined && { cert: Buffer.from(secure.cert) }),
                ...(secure.key !== undefined && { key: Buffer.from(secure.key) }),
              });
        socket.setNoDelay(true);
        this.options.onConnection?.(socket);
        return socket;
      },
    });
    session.once('connect', () => session.setLocalWindowSize(receiveWindowBytes));
    // A connection error reaches every open stream as its own error; the session's is only noted.
    session.on('error', () => {});
    const forget = (): void => {
      if (this.session === session) this.session = null;
    };
    session.once('goaway', forget);
    session.once('close', forget);
    session.unref();
    this.session = session;
    return session;
  }

  /** PINGs the connection while calls are open; one that is not answered in time closes it. */
  private startKeepalive(): void {
    if (this.keepalive !== null) return;
    this.keepalive = setInterval(() => {
      const session = this.session;
      if (session === null || session.destroyed) return;
      const timer = setTimeout(() => session.destroy(new Error('keepalive PING unanswered')), this.options.keepaliveMs).unref();
      const sent = session.ping((error) => {
        clearTimeout(timer);
        if (error) session.destroy(error);
      });
      if (!sent) clearTimeout(timer);
    }, this.options.keepaliveMs);
    this.keepalive.unref();
  }

  /** Starts a call of `path` (`/package.Service/Method`). */
  call(path: string, options: CallOptions): Call {
    const session = this.connection();
    const timeoutMs = Math.max(1, Math.min(Math.ceil(options.timeoutMs), 99_999_999));
    const stream = session.request(
      {
        ':method': 'POST',
        ':path': path,
        ':authority': this.authority,
        'content-type': 'application/grpc',
        te: 'trailers',
        'grpc-timeout': `${timeoutMs}m`,
        ...options.metadata,
      },
      { endStream: false },
    );
    this.openCalls++;
    if (this.openCalls === 1) {
      session.ref();
      this.startKeepalive();
    }
    let settled = false;
    let resolveDone!: () => void;
    let rejectDone!: (error: ClientError) => void;
    const done = new Promise<void>((resolve, reject) => {
      resolveDone = resolve;
      rejectDone = reject;
    });
    const settle = (error: ClientError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      options.signal?.removeEventListener('abort', onAbort);
      if (--this.openCalls === 0) {
        if (!session.destroyed) session.unref();
        if (this.keepalive !== null) clearInterval(this.keepalive);
        this.keepalive = null;
      }
      if (error === null) resolveDone();
      else rejectDone(error);
    };
    const fail = (error: ClientError): void => {
      if (!stream.destroyed) stream.close(CANCEL);
      settle(error);
    };
    const deadline = setTimeout(() => fail(statusError(4, 'deadline exceeded')), timeoutMs);
    const onAbort = (): void => fail(statusError(1, 'cancelled on the device'));
    if (options.signal?.aborted) queueMicrotask(onAbort);
    else options.signal?.addEventListener('abort', onAbort, { once: true });

    const reader = new MessageReader(this.options.maxMessageBytes, options.onMessage, this.bodies);
    /** Ends the call with the status of `headers` (trailers, or the headers of a trailers-only answer). */
    const finish = (headers: http2.IncomingHttpHeaders): void => {
      const status = Number(first(headers['grpc-status']));
      if (!Number.isInteger(status)) return fail(statusError(13, 'the coordinator ended the call without a gRPC status', headers));
      if (status === 0 && reader.partial) return fail(statusError(13, 'the call ended inside a message', headers));
      settle(status === 0 ? null : statusError(status, decodeGrpcMessage(first(headers['grpc-message'])) || `gRPC status ${status}`, headers));
    };
    stream.on('response', (headers) => {
      const httpStatus = Number(headers[':status']);
      if (httpStatus !== 200) return fail(statusError(statusOfHttp(httpStatus), `HTTP status ${httpStatus}`, headers));
      if (headers['grpc-status'] !== undefined) finish(headers);
    });
    const onData = (chunk: Buffer): void => {
      if (settled) return;
      try {
        reader.push(chunk);
      } catch (error) {
        fail(ClientError.from(error));
      }
    };
    takeChunks(stream, onData);
    stream.on('data', onData);
    stream.on('trailers', finish);
    stream.on('error', (error: Error) => fail(statusError(14, `connection to the coordinator failed: ${error.message}`, {}, error)));
    stream.on('close', () => {
      if (!settled) fail(statusError(14, `the call was closed without a status (HTTP/2 code ${stream.rstCode ?? 'none'})`));
    });
    return {
      write(message) {
        if (settled) return;
        stream.cork();
        for (const part of frame(message)) stream.write(part);
        stream.uncork();
      },
      end() {
        if (!settled) stream.end();
      },
      done,
      cancel: () => fail(statusError(1, 'cancelled on the device')),
    };
  }

  /**
   * The caller no longer reads `message` (nor any other view of the message it came in): a later
   * message may be received into its memory. Ignored for views the channel did not allocate (a
   * message that arrived inside one chunk is a view of node:http2's read buffer and is left alone).
   */
  recycle(message: Uint8Array): void {
    this.bodies.give(message);
  }

  /** Closes the connection: calls still open finish; new calls are refused. */
  close(): void {
    this.closed = true;
    if (this.keepalive !== null) clearInterval(this.keepalive);
    this.keepalive = null;
    this.session?.close();
    this.session = null;
  }
}
