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

/** Starts a custodian gRPC server. */
export async function startCustodianServer(options: CustodianServerOptions): Promise<CustodianServer> {
  const { service, logger } = options;
  const listen = options.listen ?? '127.0.0.1:0';
  const idleTimeoutMs = options.idleTimeoutMs ?? 60_000;
  const stagedIdleTimeoutMs = options.stagedIdleTimeoutMs ?? 3_600_000;
  /** The next stream message, or a refusal after `idleTimeoutMs` of silence. */
  const nextWithin = async <T>(iterator: AsyncIterator<T>, idleMs = idleTimeoutMs): Promise<IteratorResult<T>> => {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        iterator.next(),
        new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new CustodianError('invalid_request', `no request message for ${idleMs} ms`)), idleMs);
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  };
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
      const iterator = call[Symbol.asyncIterator]() as AsyncIterator<ShareSumRequest__Output>;
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
        const first = await nextWithin(iterator);
        if (first.done === true) throw new CustodianError('invalid_request', 'empty ShareSum stream');
        const stage = first.value.kind === 'stage' ? first.value.stage : null;
        let answer;
        if (stage !== null && stage !== undefined) {
          // Staged: device batches as the round accepts them, then the final D's header.
          async function* messages(): AsyncGenerator<StagedMessage> {
            for (;;) {
              const next = await nextWithin(iterator, stagedIdleTimeoutMs);
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
              const next = await nextWithin(iterator);
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
      })().then(
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
