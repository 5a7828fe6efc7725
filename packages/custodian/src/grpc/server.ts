/**
 * The thin gRPC adapter around {@link CustodianService}: decodes the ShareSum stream into a
 * header and lazily read batches, maps {@link CustodianError} codes to gRPC statuses, logs
 * refusals (never shares, share sums or keys).
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CustodianError, ERROR_CODE_METADATA_KEY, wireMessage } from '../errors.js';
import type { CustodianService, DeviceEntry, ShareSumHeader, StageHeader, StagedMessage } from '../service.js';
import { custodianFingerprint } from '@veil/crypto';
import type { CustodianServiceHandlers } from '../gen/veil/v1/CustodianService.js';
import type { ShareSumRequest__Output } from '../gen/veil/v1/ShareSumRequest.js';
import type { ShareSumResponse } from '../gen/veil/v1/ShareSumResponse.js';
import { CUSTODIAN_CHANNEL_OPTIONS, MAX_DEVICES_PER_BATCH, custodianServiceDefinition } from './proto.js';

/** Options of {@link startCustodianServer}. */
export interface CustodianServerOptions {
  readonly service: CustodianService;
  readonly logger: Logger;
  /** `host:port` to listen on; port 0 picks a free port. Default `127.0.0.1:0`. */
  readonly listen?: string;
  /** Server credentials. Default insecure (loopback or a TLS-terminating proxy; see the README). */
  readonly credentials?: grpc.ServerCredentials;
  /**
   * Longest wait for the next message of a ShareSum stream, ms. Default 60,000. A caller that
   * goes quiet is refused, so it cannot hold its round's lock.
   */
  readonly idleTimeoutMs?: number;
  /**
   * Longest wait for the next message of a staged ShareSum stream, ms (it holds no lock while it
   * waits: a round collects between its messages). Default 3,600,000.
   */
  readonly stagedIdleTimeoutMs?: number;
}

/** A running custodian gRPC server. */
export interface CustodianServer extends AsyncDisposable {
  /** The bound port. */
  readonly port: number;
  /** `host:port` as bound. */
  readonly address: string;
  /** Graceful shutdown (in-flight calls finish; 5 s later they are cancelled). */
  close(): Promise<void>;
}

const u8 = (b: Buffer): Uint8Array => new Uint8Array(b.buffer, b.byteOffset, b.byteLength);

function toHeader(message: ShareSumRequest__Output): ShareSumHeader {
  const h = message.header;
  if (message.kind !== 'header' || h === null || h === undefined) {
    throw new CustodianError('invalid_request', 'the first ShareSum message must be a header or a stage header');
  }
  return {
    descriptor: u8(h.descriptor),
    descriptorSignature: u8(h.descriptorSignature),
    round: h.round,
    hashD: u8(h.hashD),
    deviceCount: h.deviceCount,
    custodianIndex: h.custodianIndex,
    issuedAtMs: h.issuedAtMs,
    coordinatorSignature: u8(h.coordinatorSignature),
  };
}

function toStageHeader(h: NonNullable<ShareSumRequest__Output['stage']>): StageHeader {
  return {
    descriptor: u8(h.descriptor),
    descriptorSignature: u8(h.descriptorSignature),
    round: h.round,
    custodianIndex: h.custodianIndex,
    issuedAtMs: h.issuedAtMs,
    coordinatorSignature: u8(h.coordinatorSignature),
  };
}

const toEntries = (batch: NonNullable<ShareSumRequest__Output['batch']>): DeviceEntry[] => {
  if (batch.devices.length > MAX_DEVICES_PER_BATCH) {
    throw new CustodianError('request_too_large', `a DeviceBatch holds at most ${MAX_DEVICES_PER_BATCH} devices`);
  }
  return batch.devices.map((d) => ({ manifest: u8(d.manifest), manifestSignature: u8(d.manifestSignature), sealedShare: u8(d.sealedShare) }));
};

/** A client stream's messages, one at a time (see {@link readMessages}). */
interface MessageReader<T> {
  /**
   * The next message; done at the end of the stream; rejected when the call breaks (cancelled:
   * "Premature close", as a stream's async iterator rejects) or after `idleMs` of waiting with
   * none (a caller that goes quiet is refused, so that it cannot hold a lock or a staged slot).
   */
  next(idleMs: number): Promise<IteratorResult<T, undefined>>;
  /** Stops reading: no more timer, messages or waits. Idempotent. */
  close(): void;
}

/** Messages queued before a reader pauses the call (the objectMode highWaterMark of the stream it replaces). */
const READ_AHEAD_MESSAGES = 16;

/**
 * Reads a client stream through its 'data' events. A staged request is a dozen small messages per
 * round at 10 devices; the stream's own async iterator (Readable machinery, end-of-stream
 * tracking) and a Promise.race with a new idle timer per message were a visible part of the
 * custodian's CPU for each. Here each message resolves a waiting `next` directly, or waits in a
 * queue (the call paused past {@link READ_AHEAD_MESSAGES}, so flow control still holds a fast
 * sender back), and one timer, restarted when a wait begins, enforces the idle limit.
 */
function readMessages<T>(call: NodeJS.ReadableStream): MessageReader<T> {
  const queue: T[] = [];
  let head = 0;
  let ended = false;
  let failure: Error | null = null;
  let paused = false;
  let waiter: { resolve: (r: IteratorResult<T, undefined>) => void; reject: (e: unknown) => void } | null = null;
  let timer: NodeJS.Timeout | undefined;
  let timerMs = 0;
  let closed = false;
  const settle = (): void => {
    const w = waiter;
    if (w === null) return;
    if (head < queue.length) {
      waiter = null;
      w.resolve({ value: take(), done: false });
    } else if (failure !== null) {
      waiter = null;
      w.reject(failure);
    } else if (ended) {
      waiter = null;
      w.resolve({ value: undefined, done: true });
    }
  };
  const take = (): T => {
    const value = queue[head] as T;
    queue[head] = undefined as T;
    head += 1;
    if (head === queue.length) {
      queue.length = 0;
      head = 0;
    }
    if (paused && queue.length - head < READ_AHEAD_MESSAGES / 2) {
      paused = false;
      call.resume();
    }
    return value;
  };
  const onData = (message: T): void => {
    queue.push(message);
    if (!paused && queue.length - head >= READ_AHEAD_MESSAGES) {
      paused = true;
      call.pause();
    }
    settle();
  };
  const onEnd = (): void => {
    ended = true;
    settle();
  };
  const onError = (error: Error): void => {
    failure ??= error;
    settle();
  };
  // Destroyed without an end (the call cancelled): what a stream's async iterator rejects with.
  const onClose = (): void => {
    if (!ended) failure ??= Object.assign(new Error('Premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' });
    settle();
  };
  call.on('data', onData);
  call.on('end', onEnd);
  call.on('error', onError);
  call.on('close', onClose);
  const onIdle = (): void => {
    const w = waiter;
    if (w === null) return; // not waiting: the timer restarts when a wait begins
    waiter = null;
    w.reject(new CustodianError('invalid_request', `no request message for ${timerMs} ms`));
  };
  return {
    next(idleMs) {
      if (closed) return Promise.resolve({ value: undefined, done: true });
      if (waiter !== null) return Promise.reject(new Error('readMessages: one next() at a time'));
      return new Promise((resolve, reject) => {
        waiter = { resolve, reject };
        settle();
        if (waiter === null) return;
        // The wait begins now: the idle limit counts from here.
        if (timer !== undefined && timerMs === idleMs) {
          timer.refresh();
        } else {
          clearTimeout(timer);
          timerMs = idleMs;
          timer = setTimeout(onIdle, idleMs);
        }
      });
    },
    close() {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      // 'error' stays listened to: an error emitted with no listener would crash the process.
      call.off('data', onData);
      call.off('end', onEnd);
      call.off('close', onClose);
      queue.length = 0;
      head = 0;
      if (paused) call.resume();
    },
  };
}

/** Starts a custodian gRPC server. */
export async function startCustodianServer(options: CustodianServerOptions): Promise<CustodianServer> {
  const { service, logger } = options;
  const listen = options.listen ?? '127.0.0.1:0';
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const stagedIdleTimeoutMs = options.stagedIdleTimeoutMs ?? 3_600_000;
  const server = new grpc.Server(CUSTODIAN_CHANNEL_OPTIONS);

  const fail = (error: unknown, peer: string): grpc.ServiceError => {
    const e = CustodianError.from(error);
    if (e.code === 'internal' || e.code === 'state_unavailable') {
      logger.error({ err: e, cause: e.cause, peer }, 'request failed');
    } else {
      logger.warn({ code: e.code, reason: e.message, peer }, 'request refused');
    }
    const metadata = new grpc.Metadata();
    metadata.set(ERROR_CODE_METADATA_KEY, e.code);
    return Object.assign(new Error(wireMessage(e)), { code: e.grpcStatus, details: wireMessage(e), metadata });
  };

  const handlers: CustodianServiceHandlers = {
    Describe(_call, callback) {
      callback(null, {
        sealingKey: Buffer.from(service.sealingPublicKey),
        signingKey: Buffer.from(service.signingPublicKey),
        fingerprint: custodianFingerprint(service.signingPublicKey, service.sealingPublicKey),
      });
    },
    ShareSum(call, callback) {
      const peer = call.getPeer();
      const reader = readMessages<ShareSumRequest__Output>(call);
      let done = false;
      const finish = (error: grpc.ServiceError | null, value?: ShareSumResponse): void => {
        if (done) return;
        done = true;
        if (error === null) callback(null, value);
        else callback(error);
      };
      call.on('cancelled', () => {
        done = true;
      });
      void (async () => {
        const first = await reader.next(idleTimeoutMs);
        if (first.done === true) throw new CustodianError('invalid_request', 'empty ShareSum stream');
        const stage = first.value.kind === 'stage' ? first.value.stage : null;
        let answer;
        if (stage !== null && stage !== undefined) {
          // Staged: device batches as the round accepts them, then the final D's header.
          async function* messages(): AsyncGenerator<StagedMessage> {
            for (;;) {
              const next = await reader.next(stagedIdleTimeoutMs);
              if (next.done === true) return;
              const { kind, batch, header } = next.value;
              if (kind === 'batch' && batch !== null && batch !== undefined) yield { kind: 'batch', devices: toEntries(batch) };
              else if (kind === 'header' && header !== null && header !== undefined) yield { kind: 'header', header: toHeader(next.value) };
              else throw new CustodianError('invalid_request', 'only DeviceBatch messages and the final header may follow a stage header');
            }
          }
          answer = await service.stagedShareSum(toStageHeader(stage), messages());
        } else {
          const header = toHeader(first.value);
          async function* batches(): AsyncGenerator<readonly DeviceEntry[]> {
            for (;;) {
              const next = await reader.next(idleTimeoutMs);
              if (next.done === true) return;
              const batch = next.value.batch;
              if (next.value.kind !== 'batch' || batch === null || batch === undefined) {
                throw new CustodianError('invalid_request', 'only DeviceBatch messages may follow the header');
              }
              yield toEntries(batch);
            }
          }
          answer = await service.shareSum(header, batches());
        }
        return { statement: Buffer.from(answer.statement), signature: Buffer.from(answer.signature), shareSum: Buffer.from(answer.shareSum) };
      })()
        .finally(() => reader.close())
        .then(
          (response) => finish(null, response),
          (error: unknown) => finish(fail(error, peer)),
        );
    },
  };

  server.addService(custodianServiceDefinition(), handlers);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(listen, options.credentials ?? grpc.ServerCredentials.createInsecure(), (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  const host = listen.slice(0, listen.lastIndexOf(':'));
  const close = async (): Promise<void> => {
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        server.forceShutdown();
        resolve();
      }, 5_000);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  };
  logger.info({ address: `${host}:${port}` }, 'custodian listening');
  return { port, address: `${host}:${port}`, close, [Symbol.asyncDispose]: close };
}
