import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type http2 from 'node:http2';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import {
  GRPC_CHANNEL_OPTIONS,
  MAX_CHUNK_BYTES,
  MAX_CLIENT_NAME_LENGTH,
  MAX_METRIC_NAME_LENGTH,
  MAX_METRICS,
  MAX_WAIT_MS,
  encodeModelChunk,
  toConfigMessages,
  federationServiceDefinition,
  type EncodedModelChunk,
  type ModelChunk,
  type Assignment,
  type FederationServiceHandlers,
  type PrivacySpec,
  type TaskSpec,
  type WaitForAssignmentResponse,
  isMalformedMessage,
  MalformedMessage,
} from '@veil/protocol';
import { decodeSubmitUpdateRequest } from '@veil/protocol/wire';
import { chunkPayload } from '@veil/protocol/codec';
import { toGrpcStatus } from './errors.js';
import { VeilError } from '../errors.js';
import { createByteBudget, holdReads } from './backpressure.js';
import { createUploadWindows } from './upload-window.js';
import { installPooledMessageDecoder, releaseMessageBuffer } from './message-pool.js';
import { createIdleTimer, createRateMonitor, createUploadGuard, tooSlowError, type UploadGuard, type UploadSlot } from './upload-guard.js';
import type { SecureContextOptions } from 'node:tls';
import type { TlsMaterial, TlsSource } from '../tls/tls-source.js';
import type { GrpcLimits } from '../config/config.js';
import { surfaceOf, type DeviceAuth } from './device-auth.js';
import type { AssignmentResult, RoundEngine, UpdateHeaderInput } from '../rounds/engine.js';
import type { Client, Task } from '../rounds/model.js';
import type { StoredModel } from '../rounds/model-cache.js';
import type { PrivacySettings } from '../privacy/settings.js';
import type { FederationStore } from '../rounds/ports.js';

export interface FederationServiceOptions {
  engine: RoundEngine;
  store: FederationStore;
  logger: Logger;
  /** Device enrolment, authentication (with lockout) and revocation. */
  deviceAuth: DeviceAuth;
  /**
   * Update payload bytes being read and processed at once. Uploads beyond it
   * wait after their header with nothing more read: HTTP/2 flow control keeps
   * the rest of the payload on the device. Default 32 MiB.
   */
  uploadBudgetBytes?: number;
  /**
   * Model bytes being sent at once (grpc-js serialises each download's
   * messages into buffers of their own, held until the device has read them);
   * downloads beyond it wait before their first message. Default 32 MiB.
   */
  downloadBudgetBytes?: number;
  /**
   * An upload stream that sends nothing for this long (no header; or no chunk since it was
   * admitted to the budget or since its last chunk) is closed with DEADLINE_EXCEEDED and frees its
   * budget share, ms. Default 60 000 (a 1 MiB chunk needs at least ~140 kbit/s).
   */
  uploadIdleTimeoutMs?: number;
  /** Upload streams one device may have open at once; more are refused with RESOURCE_EXHAUSTED. Default 2. */
  maxUploadStreamsPerDevice?: number;
  /**
   * Minimum upload rate of an admitted stream, bytes/s (0: off), measured over windows of
   * `uploadMinRateWindowMs` after `uploadMinRateGraceMs`; a slower stream is cancelled with
   * DEADLINE_EXCEEDED and frees its budget share. Defaults 1024, 30 000, 10 000.
   */
  uploadMinBytesPerSecond?: number;
  uploadMinRateWindowMs?: number;
  uploadMinRateGraceMs?: number;
  /**
   * The upload guard to use instead of one built from the five options above: given, the Connect
   * routes (http/connect.ts) share it, so a device's uploads are counted over both ports. These
   * handlers cancel its uploads when their round closes. Default: one of their own.
   */
  uploadGuard?: UploadGuard;
}

const sha256Hex = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

function sendError(log: Logger, error: unknown): Partial<grpc.StatusObject> {
  const e = VeilError.from(error);
  if (e.code === 'internal') log.error({ err: e.cause ?? e }, 'request failed');
  else log.warn({ code: e.code, reason: e.message }, 'request rejected');
  return toGrpcStatus(e);
}

/** Maps the domain's task status to the protocol enum. */
const taskStatus = (status: Task['status']) => `TASK_STATUS_${status}` as const;

function toTaskSpec(task: Task): TaskSpec {
  return {
    taskId: task.id,
    name: task.name,
    modelTopologyJson: JSON.stringify(task.modelTopology),
    weightSpecsJson: JSON.stringify(task.weightSpecs),
    parameterCount: task.parameterCount,
    totalRounds: task.settings.rounds,
    updateEncoding: UPDATE_ENCODING_NAMES[task.settings.updateEncoding],
    privacy: privacySpec(task.settings.privacy),
    encryption:
      task.encryption === null
        ? null
        : {
            keyId: task.encryption.keyId,
            parameterFingerprint: Buffer.from(task.encryption.fingerprint, 'hex'),
            preset: task.encryption.preset,
            weightCap: task.encryption.weightCap,
          },
    committee:
      task.settings.committee == null
        ? null
        : {
            descriptor: Buffer.from(task.settings.committee.descriptor, 'base64'),
            descriptorSignature: Buffer.from(task.settings.committee.descriptorSignature, 'base64'),
          },
  };
}

function privacySpec(p: PrivacySettings | null): PrivacySpec | null {
  return p === null
    ? null
    : {
        mode: p.mode,
        clipNorm: p.clipNorm,
        noiseMultiplier: p.noiseMultiplier,
        samplingRate: p.samplingRate,
        epsilonCap: p.epsilonCap,
        delta: p.delta,
        distributed:
          p.ddg === null
            ? null
            : {
                scale: p.ddg.scale,
                localStddev: p.ddg.localStddev,
                minNoiseClients: p.ddg.noiseClients,
                modulus: p.ddg.modulus,
                dimension: p.ddg.dimension,
                roundingBeta: p.ddg.roundingBeta,
              },
      };
}

const UPDATE_ENCODING_NAMES = {
  'float32-le': 'UPDATE_ENCODING_FLOAT32_LE',
  'bfv-v1': 'UPDATE_ENCODING_BFV_V1',
  'committee-v1': 'UPDATE_ENCODING_COMMITTEE_V1',
} as const;

function toResponse(result: AssignmentResult): WaitForAssignmentResponse {
  switch (result.kind) {
    case 'assignment': {
      const assignment: Assignment = {
        roundId: result.round.id,
        roundNumber: result.round.number,
        modelVersion: result.model.version,
        modelSha256: Buffer.from(result.model.sha256, 'hex'),
        modelSizeBytes: result.model.sizeBytes,
        deadlineUnixMs: result.round.deadlineAt.getTime(),
        training: { epochs: result.round.config.epochs, batchSize: result.round.config.batchSize, learningRate: result.round.config.learningRate },
        updateEncoding: UPDATE_ENCODING_NAMES[result.updateEncoding],
        maxUpdateBytes: result.maxUpdateBytes,
        maxExampleCount: result.maxExampleCount,
        evaluate: true,
        privacy: privacySpec(result.privacy),
        config: toConfigMessages(result.round.fitConfig),
        ...(result.calibration !== null && {
          calibration: {
            stage: result.calibration.plan.round,
            scale: result.calibration.scale,
            points: result.calibration.plan.points.map((p) =>
              p.grid.kind === 'linear' ? { name: p.name, linear: true, min: p.grid.min, max: p.grid.max, bins: p.grid.bins } : { name: p.name, linear: false },
            ),
            ...(result.calibration.derive !== undefined && {
              rangeSum: Buffer.from(result.calibration.derive.rangeSum, 'base64'),
              bins: result.calibration.derive.bins,
              tailFraction: result.calibration.derive.tailFraction,
              rangeScale: result.calibration.derive.rangeScale ?? 1,
            }),
          },
        }),
      };
      return { assignment };
    }
    case 'idle':
      return { idle: { taskStatus: taskStatus(result.taskStatus), currentRound: result.currentRound } };
    case 'ended':
      return {
        ended: { taskStatus: taskStatus(result.taskStatus), reason: result.reason, finalModelVersion: result.finalModelVersion },
      };
  }
}

/** Long-poll length when a device sends none (wait_ms = 0, the protobuf default) and its bounds. */
const DEFAULT_WAIT_MS = 30_000;
const MIN_WAIT_MS = 1_000;

/** A device's requested long-poll length: 0 means the default; clamped so a poll never busy-loops nor hangs. */
export function effectiveWaitMs(requested: number): number {
  if (!Number.isFinite(requested) || requested <= 0) return DEFAULT_WAIT_MS;
  return Math.min(Math.max(requested, MIN_WAIT_MS), MAX_WAIT_MS);
}

/** Default of {@link FederationServiceOptions.uploadBudgetBytes}. */
const DEFAULT_UPLOAD_BUDGET_BYTES = 32 * 2 ** 20;
/** Default of {@link FederationServiceOptions.downloadBudgetBytes}. */
const DEFAULT_DOWNLOAD_BUDGET_BYTES = 32 * 2 ** 20;

const ENCODINGS: Record<string, UpdateHeaderInput['encoding']> = {
  UPDATE_ENCODING_FLOAT32_LE: 'float32-le',
  UPDATE_ENCODING_BFV_V1: 'bfv-v1',
  UPDATE_ENCODING_COMMITTEE_V1: 'committee-v1',
};

/** An UpdateHeader as the protocol's deserializer yields it. */
export interface RawUpdateHeader {
  roundNumber: number;
  modelVersion: number;
  exampleCount: number;
  trainedExamples?: number;
  /** Absent (proto3 optional) when the device did not report it. */
  trainingLoss?: number;
  encoding: string;
  payloadSizeBytes: number;
  payloadSha256: Uint8Array;
}

/**
 * An update header as the engine takes it (SubmitUpdate, and the HTTP port's resumable uploads):
 * unknown encodings become `unspecified` (the engine refuses them), a digest that is not 32 bytes
 * becomes '' (refused likewise); numbers the database stores as int4 beyond 2^31-1 are refused here.
 */
export function updateHeaderInput(raw: RawUpdateHeader): UpdateHeaderInput {
  // (trainedExamples has its own check, in the engine.)
  for (const [name, value] of [['roundNumber', raw.roundNumber], ['modelVersion', raw.modelVersion], ['exampleCount', raw.exampleCount]] as const) {
    if (value > 2_147_483_647) throw new VeilError('invalid_argument', `update header ${name} is out of range`);
  }
  return {
    roundNumber: raw.roundNumber,
    modelVersion: raw.modelVersion,
    exampleCount: raw.exampleCount,
    // 0 (the proto default): the device did not report it.
    trainedExamples: raw.trainedExamples ? raw.trainedExamples : null,
    trainingLoss: raw.trainingLoss ?? null,
    encoding: ENCODINGS[raw.encoding] ?? 'unspecified',
    payloadSizeBytes: raw.payloadSizeBytes,
    sha256: raw.payloadSha256.length === 32 ? Buffer.from(raw.payloadSha256).toString('hex') : '',
  };
}

/** Encoded download messages kept at most, bytes (a model above it is encoded per download). */
const ENCODED_MODEL_CACHE_BYTES = 64 * 2 ** 20;

/**
 * A model version's DownloadModel messages (header, then chunks), serialized once: every device of
 * a round downloads the same version. Keyed by task, version and digest; least recently used
 * versions go first once the cache holds more than {@link ENCODED_MODEL_CACHE_BYTES}.
 */
function createEncodedModelCache(): (taskId: string, model: { version: number; bytes: Uint8Array; sha256: string; encoding: string }) => EncodedModelChunk[] {
  const cache = new Map<string, { messages: EncodedModelChunk[]; bytes: number }>();
  let total = 0;
  return (taskId, model) => {
    const key = `${taskId}/${model.version}/${model.sha256}`;
    const hit = cache.get(key);
    if (hit !== undefined) {
      cache.delete(key);
      cache.set(key, hit);
      return hit.messages;
    }
    const messages = [
      encodeModelChunk({
        header: {
          modelVersion: model.version,
          encoding: model.encoding === 'bfv-sum-v1' ? 'MODEL_ENCODING_BFV_SUM_V1' : 'MODEL_ENCODING_FLOAT32_LE',
          sizeBytes: model.bytes.byteLength,
          sha256: Buffer.from(model.sha256, 'hex'),
        },
      } satisfies ModelChunk),
      ...[...chunkPayload(model.bytes)].map((chunk) => encodeModelChunk({ data: chunk } as ModelChunk)),
    ];
    const bytes = messages.reduce((n, m) => n + m.bytes.byteLength, 0);
    if (bytes <= ENCODED_MODEL_CACHE_BYTES) {
      cache.set(key, { messages, bytes });
      total += bytes;
      for (const [k, v] of cache) {
        if (total <= ENCODED_MODEL_CACHE_BYTES) break;
        cache.delete(k);
        total -= v.bytes;
      }
    }
    return messages;
  };
}

/** What {@link createFederationHandlers}' model-sending server streams share. */
interface ModelStream {
  /** The call has ended (closed, cancelled, failed, or the client's credential revoked). */
  readonly ended: boolean;
  /** Runs `fn` when the call ends (at once if it has). */
  onEnd(fn: () => void): void;
  /** Authenticates the caller; should its credential be revoked before the call ends, the call ends with UNAUTHENTICATED. */
  authenticate(): Promise<Client>;
  /** Writes one message, waiting while the device is behind. */
  write(message: unknown): Promise<void>;
  /** Ends the stream (status OK). */
  end(): void;
  /** Sends `model` (header, then chunks) within the download budget, ends the stream, and notes the download once the call closes. */
  sendModel(client: Client, model: StoredModel): Promise<void>;
}

/** The gRPC adapter: authenticates devices and translates calls to the round engine. */
export function createFederationHandlers(options: FederationServiceOptions): FederationServiceHandlers {
  const { engine, store } = options;
  const log = options.logger.child({ component: 'grpc' });
  const { deviceAuth } = options;
  /** Settles a unary call: the result, or the error mapped to its gRPC status (and logged). */
  const answer = <T>(result: Promise<T>, callback: (error: Partial<grpc.StatusObject> | null, value?: T) => void): void => {
    result.then(
      (value) => callback(null, value),
      (error) => callback(sendError(log, error)),
    );
  };
  const budget = (bytes: number | undefined, fallback: number, name: string): number => {
    const value = bytes ?? fallback;
    if (!Number.isSafeInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${value}`);
    return value;
  };
  const uploads = createByteBudget(budget(options.uploadBudgetBytes, DEFAULT_UPLOAD_BUDGET_BYTES, 'uploadBudgetBytes'));
  const downloads = createByteBudget(budget(options.downloadBudgetBytes, DEFAULT_DOWNLOAD_BUDGET_BYTES, 'downloadBudgetBytes'));
  const encodedModel = createEncodedModelCache();
  // An admitted upload's connection gets a receive window for the rest of it (upload-window.ts).
  const uploadWindows = createUploadWindows(SERVER_STREAM_WINDOW_BYTES);
  // Upload chunks are reassembled into reused buffers, which SubmitUpdate gives back (message-pool.ts).
  installPooledMessageDecoder();
  const uploadGuard = options.uploadGuard ?? createUploadGuard({
    ...(options.uploadIdleTimeoutMs !== undefined && { idleTimeoutMs: options.uploadIdleTimeoutMs }),
    ...(options.maxUploadStreamsPerDevice !== undefined && { maxStreamsPerDevice: options.maxUploadStreamsPerDevice }),
    ...(options.uploadMinBytesPerSecond !== undefined && { minBytesPerSecond: options.uploadMinBytesPerSecond }),
    ...(options.uploadMinRateWindowMs !== undefined && { minRateWindowMs: options.uploadMinRateWindowMs }),
    ...(options.uploadMinRateGraceMs !== undefined && { minRateGraceMs: options.uploadMinRateGraceMs }),
  });
  // Uploads still receiving when their round closes are cancelled: they could no longer be accepted.
  engine.on('round-closed', ({ taskId, round }) => uploadGuard.roundClosed(taskId, round.number, round.state));
  engine.on('round-failed', ({ taskId, round }) => uploadGuard.roundClosed(taskId, round.number, round.state));

  /** A request that was not valid protobuf is the peer's error: INVALID_ARGUMENT (grpc-js alone would say INTERNAL). */
  const wellFormed = (message: unknown): void => {
    if (isMalformedMessage(message)) throw new VeilError('invalid_argument', 'the request is not a valid protobuf message of its type');
  };
  /** uint32 fields the database stores as int4: above 2^31-1 they name nothing that can exist. */
  const int32 = (value: number, name: string): void => {
    if (value > 2_147_483_647) throw new VeilError('invalid_argument', `${name} is out of range`);
  };
  const authenticate = (call: { getPath(): string; getPeer(): string; metadata: grpc.Metadata }): Promise<Client> =>
    deviceAuth.authenticate(call.getPath().split('/').at(-1) ?? '', call.metadata, () => call.getPeer(), surfaceOf(call));

  /**
   * Runs a server stream that sends a model (DownloadModel, WaitForAssignmentAndModel). Its download
   * budget share and its revocation watch are let go however the call ends (finished, then closed;
   * failed; cancelled by the device); an error thrown by `run` ends it with its status.
   */
  const serveModelStream = <Req, Res>(call: grpc.ServerWritableStream<Req, Res>, run: (stream: ModelStream) => Promise<void>): void => {
    let releaseBudget: (() => void) | null = null;
    let untrack: (() => void) | null = null;
    let ended = false;
    const onEnd: Array<() => void> = [];
    const end = (): void => {
      if (ended) return;
      ended = true;
      releaseBudget?.();
      untrack?.();
      for (const fn of onEnd.splice(0)) fn();
    };
    call.once('close', end);
    call.once('cancelled', end);
    /** Resolves on `event`, or at once when the call has ended (a cancelled call never drains). */
    const until = (event: 'drain' | 'close'): Promise<void> =>
      ended
        ? Promise.resolve()
        : new Promise((resolve) => {
            const done = (): void => {
              call.off(event, done).off('close', done).off('cancelled', done);
              resolve();
            };
            call.once(event, done).once('close', done).once('cancelled', done);
          });
    const write = async (message: unknown): Promise<void> => {
      if (call.cancelled || ended) return;
      if (!call.write(message as Res)) await until('drain');
    };
    const stream: ModelStream = {
      get ended() {
        return ended;
      },
      onEnd(fn) {
        if (ended) fn();
        else onEnd.push(fn);
      },
      async authenticate() {
        const client = await authenticate(call);
        untrack = deviceAuth.track(client, () => {
          if (ended) return;
          // grpc-js ends a server stream with the status of an emitted error (destroy() would send none).
          call.emit('error', Object.assign(new Error('credential revoked'), sendError(log, new VeilError('unauthenticated', 'the client credential was revoked'))));
          end();
        });
        if (ended) untrack();
        return client;
      },
      write,
      end: () => call.end(),
      async sendModel(client, model) {
        // Bounded memory: grpc-js serialises every message into a buffer of its own, held until the device reads it.
        const ids = { taskId: client.taskId, clientId: client.id, modelVersion: model.version };
        log.debug(ids, 'download waiting for the transfer budget');
        const release = await downloads.acquire(model.bytes.byteLength);
        log.debug(ids, 'download admitted');
        if (ended) return release();
        releaseBudget = release;
        // Header, then the chunks: serialized once per model version (the service definition writes them as is).
        for (const message of encodedModel(client.taskId, model)) {
          if (call.cancelled || ended) return;
          await write(message);
        }
        call.end();
        await until('close');
        engine.noteModelDownloaded(ids);
      },
    };
    run(stream).catch((error) => {
      if (!ended) call.emit('error', Object.assign(new Error('stream failed'), sendError(log, error)));
    });
  };

  return {
    Join(call, callback) {
      answer((async () => {
        wellFormed(call.request);
        const { client, credential, task } = await deviceAuth.enrol(call.request, call.getPeer(), surfaceOf(call));
        return { clientId: client.id, credential, task: toTaskSpec(task) };
      })(), callback);
    },

    GetTask(call, callback) {
      answer((async () => {
        wellFormed(call.request);
        const client = await authenticate(call);
        return toTaskSpec(await engine.getTask(client.taskId));
      })(), callback);
    },

    WaitForAssignment(call, callback) {
      const abort = new AbortController();
      call.on('cancelled', () => abort.abort());
      answer((async () => {
        wellFormed(call.request);
        const client = await authenticate(call);
        const waitMs = effectiveWaitMs(call.request.waitMs);
        // Revoking the client ends its long-poll at once, with UNAUTHENTICATED.
        const untrack = deviceAuth.track(client, () => abort.abort());
        try {
          const result = await engine.waitForAssignment(client, waitMs, abort.signal, { afterRoundNumber: call.request.afterRoundNumber });
          deviceAuth.assertActive(client);
          return toResponse(result);
        } finally {
          untrack();
        }
      })(), callback);
    },

    DownloadModel(call) {
      serveModelStream(call, async (stream) => {
        wellFormed(call.request);
        int32(call.request.modelVersion, 'model_version');
        const client = await stream.authenticate();
        if (stream.ended) return;
        const model = call.request.latest
          ? await engine.readModel(client.taskId)
          : await engine.readModelVersion(client.taskId, call.request.modelVersion);
        await stream.sendModel(client, model);
      });
    },

    WaitForAssignmentAndModel(call) {
      serveModelStream(call, async (stream) => {
        wellFormed(call.request);
        const { heldModelVersion } = call.request;
        if (heldModelVersion !== undefined) int32(heldModelVersion, 'held_model_version');
        const abort = new AbortController();
        // Only a poll not yet answered needs aborting when the stream ends: aborting builds a
        // DOMException (with its stack) and dispatches an event, ~70 us per stream in the
        // coordinator's profile, and every stream ends after its model is sent.
        let polling = true;
        stream.onEnd(() => {
          if (polling) abort.abort();
        });
        // Revoking the client ends its long-poll at once, with UNAUTHENTICATED.
        const client = await stream.authenticate();
        if (stream.ended) return;
        const result = await engine.waitForAssignment(client, effectiveWaitMs(call.request.waitMs), abort.signal, {
          afterRoundNumber: call.request.afterRoundNumber,
        });
        polling = false;
        if (stream.ended) return;
        deviceAuth.assertActive(client);
        await stream.write({ answer: toResponse(result) });
        if (result.kind !== 'assignment' || result.model.version === heldModelVersion) return stream.end();
        // The assignment's own version: committed (the round that uses it is open), and in the model cache.
        await stream.sendModel(client, await engine.readModelVersion(client.taskId, result.model.version));
      });
    },

    SubmitUpdate(call, callback) {
      let settled = false;
      let releaseBudget: (() => void) | null = null;
      let slot: UploadSlot | null = null;
      let untrack: (() => void) | null = null;
      // Aborted when the stream ends, so an upload still queued for the budget leaves the queue.
      const gone = new AbortController();
      const idleMs = uploadGuard.idleTimeoutMs;
      const idle = createIdleTimer(idleMs, () =>
        finish(new VeilError('deadline_exceeded', header === null ? `no update header within ${idleMs} ms` : `no update data for ${idleMs} ms`)),
      );
      let rate: { add(bytes: number): void; stop(): void } | null = null;
      /** Lowers the connection's receive window raised for this upload once admitted (upload-window.ts). */
      let narrow: (() => void) | null = null;
      const tooSlow = (observed: number): void => finish(tooSlowError(observed, uploadGuard.minRate));
      /** Whatever the stream holds, let go (idempotent). */
      const letGo = (): void => {
        idle.stop();
        rate?.stop();
        narrow?.();
        untrack?.();
        releaseBudget?.();
        slot?.close();
        // Only an upload not yet admitted can still be queued for the budget (an admitted one's grant
        // removed its abort listener): no error with its stack trace nor abort event for every upload.
        if (releaseBudget === null) gone.abort(new VeilError('aborted', 'upload stream ended'));
        chunks.length = 0;
        // The engine may still be reading the payload: then the end of its processing gives the buffers back.
        if (!processing) releaseReceived();
      };
      /** Gives the received chunks' message buffers back to the pool (message-pool.ts): nothing reads them any more. */
      const releaseReceived = (): void => {
        for (const chunk of taken) releaseMessageBuffer(chunk);
        taken.length = 0;
      };
      const finish = (error: unknown, response?: { acceptedCount: number; payloadSha256: Buffer }): void => {
        if (settled) return;
        settled = true;
        letGo();
        if (error) {
          callback(sendError(log.child({ peer: call.getPeer() }), error));
          call.removeAllListeners('data');
          reads.release();
          call.resume();
        } else callback(null, response);
      };
      const reads = holdReads(call);
      const chunks: Buffer[] = [];
      /** Every chunk taken (to give its buffer back): `chunks` is emptied when the stream ends, whatever the engine still reads. */
      const taken: Buffer[] = [];
      let received = 0;
      let header: UpdateHeaderInput | null = null;
      let maxBytes = 0;
      let client: Client | null = null;
      let ready: Promise<void> | null = null;
      idle.start();

      call.on('data', (message: { header?: unknown; chunk?: Buffer; part?: string }) => {
        if (settled) return;
        if (isMalformedMessage(message)) return finish(new VeilError('invalid_argument', 'the request is not a valid protobuf message of its type'));
        if (message.part === 'header') {
          if (ready !== null) return finish(new VeilError('invalid_argument', 'the update header must be sent once, first'));
          try {
            header = updateHeaderInput(message.header as RawUpdateHeader);
          } catch (error) {
            return finish(error);
          }
          // Nothing more is read (the payload stays with the device) until the header checks out and the budget has room.
          reads.hold();
          call.pause();
          // Waiting for the checks and the budget is not idleness: the device is held back by us.
          idle.stop();
          ready = (async () => {
            client = await authenticate(call);
            // Revoking the client refuses its upload at once, unless the update is already being recorded.
            untrack = deviceAuth.track(client, () => {
              if (!processing) finish(new VeilError('unauthenticated', 'the client credential was revoked'));
            });
            if (settled) untrack();
            ({ maxBytes } = await engine.checkUpdateHeader(client, header!));
            const ids = { taskId: client.taskId, clientId: client.id, roundNumber: header!.roundNumber };
            if (settled) return;
            slot = uploadGuard.open(ids, (error) => finish(error));
            // Bounded memory: the payload is read only once the upload budget has room for it.
            log.debug(ids, 'upload waiting for the transfer budget');
            const release = await uploads.acquire(Math.min(header!.payloadSizeBytes, maxBytes), gone.signal);
            log.debug(ids, 'upload admitted');
            if (settled) release();
            else releaseBudget = release;
          })();
          ready.then(
            () => {
              if (settled) return;
              // Admitted: from now on the budget share is only held while data keeps coming, fast enough.
              idle.start();
              if (received < header!.payloadSizeBytes) {
                rate = createRateMonitor(uploadGuard.minRate, tooSlow);
                narrow = uploadWindows.widen(call, header!.payloadSizeBytes - received);
              }
              reads.release();
              call.resume();
            },
            (error) => finish(error),
          );
          return;
        }
        if (message.part === 'chunk' && message.chunk) {
          if (header === null) return finish(new VeilError('invalid_argument', 'the update header must come before the payload'));
          if (message.chunk.byteLength > MAX_CHUNK_BYTES) {
            return finish(new VeilError('resource_exhausted', `chunks are limited to ${MAX_CHUNK_BYTES} bytes`));
          }
          idle.start();
          received += message.chunk.byteLength;
          if (received > header.payloadSizeBytes || received > maxBytes) {
            return finish(new VeilError('resource_exhausted', `payload exceeds the declared ${header.payloadSizeBytes} bytes`));
          }
          chunks.push(message.chunk);
          taken.push(message.chunk);
          rate?.add(message.chunk.byteLength);
          // Everything declared arrived: what is left (the end of the stream) is no transfer.
          if (received === header.payloadSizeBytes) {
            rate?.stop();
            narrow?.();
          }
          return;
        }
        finish(new VeilError('invalid_argument', 'empty SubmitUpdate message'));
      });
      let processing = false;
      call.on('cancelled', () => {
        // The device went away: free its budget share now unless its update is being processed (finish frees it then).
        if (processing) return;
        settled = true;
        letGo();
      });
      call.on('end', () => {
        if (settled) return;
        processing = true;
        idle.stop();
        rate?.stop();
        narrow?.();
        slot?.processing();
        void (async () => {
          if (ready === null || header === null) throw new VeilError('invalid_argument', 'no update header was sent');
          await ready;
          deviceAuth.assertActive(client!);
          // One chunk (updates up to 1 MiB) is used as received: no copy of the update's size.
          const payload = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, received);
          chunks.length = 0;
          // Hashed by intake (null), which checks it against the header: a committee upload's check
          // hashes the payload in the same pass as its c0. Accepted: its SHA-256 is the header's.
          const { acceptedCount } = await engine.submitUpdate(client!, header, payload, null, engine.now());
          return { acceptedCount, payloadSha256: Buffer.from(header.sha256, 'hex') };
        })().then(
          (response) => {
            releaseReceived();
            finish(null, response);
          },
          (error) => {
            releaseReceived();
            finish(error);
          },
        );
      });
      call.on('error', (error) => {
        settled = true;
        letGo();
        log.debug({ err: error }, 'update stream failed');
      });
    },

    ReportEvaluation(call, callback) {
      answer((async () => {
        wellFormed(call.request);
        const client = await authenticate(call);
        const { roundNumber, modelVersion, exampleCount, metrics } = call.request;
        int32(roundNumber, 'round_number');
        int32(modelVersion, 'model_version');
        int32(exampleCount, 'example_count');
        const entries = Object.entries(metrics);
        if (entries.length > MAX_METRICS) throw new VeilError('invalid_argument', `at most ${MAX_METRICS} metrics`);
        for (const [name, value] of entries) {
          if (name.length === 0 || name.length > MAX_METRIC_NAME_LENGTH || !/^[A-Za-z0-9_.-]+$/.test(name)) {
            throw new VeilError('invalid_argument', `invalid metric name ${JSON.stringify(name.slice(0, 80))}`);
          }
          if (!Number.isFinite(value)) throw new VeilError('invalid_argument', `metric ${name} is not a finite number`);
        }
        if (exampleCount < 1) throw new VeilError('invalid_argument', 'example_count must be positive');
        await engine.reportEvaluation(client, { roundNumber, modelVersion, exampleCount, metrics });
        return {};
      })(), callback);
    },
  };
}

export interface GrpcServerHandle {
  port: number;
  close(): Promise<void>;
}

/** SETTINGS_MAX_FRAME_SIZE the coordinator announces: the protocol's chunk size (HTTP/2 allows up to 2^24-1). */
export const SERVER_MAX_FRAME_BYTES = MAX_CHUNK_BYTES;

/**
 * HTTP/2 receive window of each stream the coordinator announces (SETTINGS_INITIAL_WINDOW_SIZE,
 * RFC 9113 Sec. 6.9.2): HTTP/2's default, 65,535 bytes.
 *
 * It is what a device may send on a stream that the coordinator does not read. Node delivers every
 * received byte of a stream to its reader, and replenishes the stream's window only as the reader
 * consumes; an upload held between its header and its admission to the upload budget (holdReads)
 * therefore holds at most this many bytes. Held uploads are those whose header is being checked
 * and those queued for the budget, at most `maxUploadStreamsPerDevice` per device: the worst case
 * is the upload budget plus one window per queued upload.
 *
 * A window of one chunk (1 MiB) was tried (5ee8e5d): a 400 kB upload then arrives in one flight
 * instead of stopping 6-7 times for a WINDOW_UPDATE (seen through test/http2-frames.ts's proxy),
 * but at 1,000 clients the ~900 uploads queued behind the budget each parked their whole update:
 * `bench:rounds --only scale --sizes 1000 --paths plaintext`, coordinator peak RSS 830-869 MiB
 * against 563-574 MiB with this window (median round 5.3-6.0 s against 6.2-6.8 s); at 10 clients
 * the gain was below the noise. Issue 17 keeps the 1,000-client RSS no worse, so the default stays.
 * An admitted upload's connection is raised to a window for the rest of that upload while it
 * arrives, and comes back to this one after (upload-window.ts): held uploads keep this bound.
 */
export const SERVER_STREAM_WINDOW_BYTES = 65_535;

/**
 * HTTP/2 receive window of each connection (raised with a WINDOW_UPDATE on stream 0 as the
 * connection opens; no setting can announce it). Node consumes the connection window as data
 * arrives, whether or not a stream reads it, so it bounds no memory: it only must not throttle a
 * connection carrying several uploads at once (devices of one process can share a connection).
 */
export const SERVER_CONNECTION_WINDOW_BYTES = 16 * 2 ** 20;

/**
 * Sets what the coordinator announces on each HTTP/2 connection: DATA frames up to
 * {@link SERVER_MAX_FRAME_BYTES} (HTTP/2's default is 16 KiB, RFC 9113 Sec. 6.5.2; Node's own
 * sender, i.e. the SDK and grpc-js, still sends frames of 16 KiB whatever the peer allows, other
 * gRPC stacks use larger ones), the stream window {@link SERVER_STREAM_WINDOW_BYTES}, and raises
 * each connection's window to {@link SERVER_CONNECTION_WINDOW_BYTES}.
 * grpc-js (1.14) has no option for any of these (besides max_concurrent_streams): it reads the
 * settings from `commonServerOptions.settings` and builds each listener's http2 server in
 * `createHttp2Server`. Should a grpc-js version drop either, HTTP/2's defaults apply (slower,
 * nothing else changes), and the transport test that reads the announced settings fails.
 */
function tuneHttp2(server: grpc.Server): void {
  const internals = server as unknown as {
    commonServerOptions?: { settings?: Record<string, unknown> };
    createHttp2Server?: (credentials: grpc.ServerCredentials) => http2.Http2Server | http2.Http2SecureServer;
  };
  if (internals.commonServerOptions !== undefined) {
    internals.commonServerOptions.settings = {
      ...internals.commonServerOptions.settings,
      maxFrameSize: SERVER_MAX_FRAME_BYTES,
      initialWindowSize: SERVER_STREAM_WINDOW_BYTES,
    };
  }
  const create = internals.createHttp2Server;
  if (typeof create !== 'function') return;
  internals.createHttp2Server = (credentials) => {
    const http2Server = create.call(server, credentials);
    http2Server.on('session', (session: http2.ServerHttp2Session) => {
      if (!session.destroyed) session.setLocalWindowSize(SERVER_CONNECTION_WINDOW_BYTES);
    });
    return http2Server;
  };
}

/** Starts the gRPC server with the protocol's message limits and keep-alives for many long-lived devices. */
/**
 * Server credentials whose key, certificate and client CA can be replaced while the server runs:
 * grpc-js applies a new secure context to new connections (existing ones keep theirs). With a
 * client CA, every device must present a certificate that chains to it (mutual TLS).
 */
class ReloadableServerCredentials extends grpc.ServerCredentials {
  constructor(material: TlsMaterial) {
    const mutual = material.clientCa !== null;
    super({ requestCert: mutual, rejectUnauthorized: mutual, minVersion: 'TLSv1.2' }, ReloadableServerCredentials.context(material));
  }
  static context(material: TlsMaterial): SecureContextOptions {
    return { cert: material.cert, key: material.key, ...(material.clientCa && { ca: material.clientCa }) };
  }
  update(material: TlsMaterial): void {
    this.updateSecureContextOptions(ReloadableServerCredentials.context(material));
  }
  _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

export interface GrpcServerOptions {
  host: string;
  port: number;
  /** TLS (reloaded on change); default cleartext. A client CA in it turns mutual TLS on. */
  tls?: TlsSource;
  /** Connection limits. Default {@link DEFAULT_GRPC_LIMITS}. */
  limits?: GrpcLimits;
}

/** Defaults of {@link GrpcServerOptions.limits} (the same as the configuration's). */
export const DEFAULT_GRPC_LIMITS: GrpcLimits = {
  maxConcurrentStreams: 10_000,
  keepaliveTimeMs: 60_000,
  keepaliveTimeoutMs: 20_000,
  maxConnectionIdleMs: 300_000,
  maxConnectionAgeMs: 0,
};

/**
 * The protocol's service definition, with SubmitUpdate's requests decoded by the generated codec
 * (@veil/protocol/wire: proto-loader's deserializer's object, bytes fields as views of the message)
 * instead of protobufjs's decode and toObject: every upload passes here, twice (header, then chunk).
 * A request that is not valid protobuf becomes a {@link MalformedMessage}, as with the protocol's.
 */
function serviceDefinition(): ReturnType<typeof federationServiceDefinition> {
  const definition = federationServiceDefinition();
  return {
    ...definition,
    SubmitUpdate: {
      ...definition.SubmitUpdate,
      requestDeserialize: (bytes: Buffer) => {
        try {
          return decodeSubmitUpdateRequest(bytes);
        } catch (error) {
          return new MalformedMessage(error instanceof Error ? error.message : String(error));
        }
      },
    },
  } as ReturnType<typeof federationServiceDefinition>;
}

export async function startGrpcServer(handlers: FederationServiceHandlers, options: GrpcServerOptions): Promise<GrpcServerHandle> {
  const limits = options.limits ?? DEFAULT_GRPC_LIMITS;
  const server = new grpc.Server({
    ...GRPC_CHANNEL_OPTIONS,
    'grpc.keepalive_time_ms': limits.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': limits.keepaliveTimeoutMs,
    'grpc.http2.min_ping_interval_without_data_ms': 10_000,
    'grpc.max_concurrent_streams': limits.maxConcurrentStreams,
    'grpc.max_connection_idle_ms': limits.maxConnectionIdleMs,
    ...(limits.maxConnectionAgeMs > 0 && { 'grpc.max_connection_age_ms': limits.maxConnectionAgeMs, 'grpc.max_connection_age_grace_ms': 60_000 }),
  });
  tuneHttp2(server);
  server.addService(serviceDefinition(), handlers as unknown as grpc.UntypedServiceImplementation);
  let credentials: grpc.ServerCredentials = grpc.ServerCredentials.createInsecure();
  if (options.tls !== undefined) {
    const reloadable = new ReloadableServerCredentials(options.tls.current());
    options.tls.onChange((material) => reloadable.update(material));
    credentials = reloadable;
  }
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`${options.host}:${options.port}`, credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, 5_000);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      }),
  };
}
