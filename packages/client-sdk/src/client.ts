import { createHash } from 'node:crypto';
import { bytesToFloat32, float32ToBytes } from '@veil/protocol/codec';
import { ClientError } from './errors.js';
import { composeMiddleware, type LocalUpdate, type RoundContext, type UpdateMiddleware } from './middleware.js';
import { sleep, withRetry, type RetryOptions } from './retry.js';
import { initTensorflow, type TensorflowBackend } from './training/backend.js';
import { evaluateLocal, trainLocal } from './training/train.js';
import type { LocalDataset, ModelSpec, Tf } from './training/types.js';
import { createGrpcTransport } from './transport/grpc-transport.js';
import type { Assignment, JoinResult, Transport } from './transport/transport.js';

/** Minimal structured logger (pino-compatible). */
export interface SdkLogger {
  debug(obj: object, msg: string): void;
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

/** Writes `veil-sdk LEVEL msg {json}` lines to stderr. */
export const consoleLogger: SdkLogger = {
  debug: () => {},
  info: (obj, msg) => process.stderr.write(`veil-sdk info ${msg} ${JSON.stringify(obj)}\n`),
  warn: (obj, msg) => process.stderr.write(`veil-sdk warn ${msg} ${JSON.stringify(obj)}\n`),
  error: (obj, msg) => process.stderr.write(`veil-sdk error ${msg} ${JSON.stringify(obj)}\n`),
};

/** How the device proves it may take part: the task's enrolment secret (first run), or a stored credential. */
export type ClientCredentials = { enrolmentSecret: string } | { clientId: string; credential: string };

export interface ClientOptions {
  /** Coordinator gRPC address, `host:port`. */
  coordinator: string;
  /** Task to take part in. */
  taskId: string;
  credentials: ClientCredentials;
  /** Device label shown to the operator. Default none. */
  name?: string;
  /** Transport. Default grpc-js to `coordinator`. */
  transport?: Transport;
  /** Update middleware applied in order (clipping, noise, encryption). Default none. */
  middleware?: readonly UpdateMiddleware[];
  /** Default: `consoleLogger`. */
  logger?: SdkLogger;
  /** Backoff for transient errors. Defaults in RetryOptions. */
  retry?: RetryOptions;
  /** Long-poll duration of WaitForAssignment, ms. Default 30 000. */
  pollWaitMs?: number;
  /** TensorFlow.js backend preference; the SDK falls back node → wasm → cpu. Default `node`. */
  backend?: 'node' | 'wasm' | 'cpu';
}

/** What `onRound` receives after each round the device took part in. */
export interface RoundReport {
  roundNumber: number;
  modelVersion: number;
  exampleCount: number;
  trainLoss: number;
  trainMs: number;
  uploadBytes: number;
  acceptedCount: number;
  /** Evaluation of the received global model on `evalData`, if given. */
  evaluation: { accuracy: number; loss: number; exampleCount: number } | null;
}

export interface RunOptions {
  /** Local training examples. */
  data: LocalDataset;
  /** Local held-out examples to evaluate each received global model on. Default none. */
  evalData?: LocalDataset;
  /** Stops the loop (between steps; a training run aborts between mini-batches). */
  signal?: AbortSignal;
  onRound?: (report: RoundReport) => void;
  /** Stop after this many rounds of participation. Default: until the task ends. */
  maxRounds?: number;
}

export interface RunSummary {
  rounds: number;
  taskStatus: string;
  reason: string;
  finalModelVersion: number | null;
}

export interface VeilClient {
  /** Joins the task if needed; returns the credential to store for later runs. */
  join(): Promise<{ clientId: string; credential: string }>;
  /** Takes part in rounds until the task ends, `maxRounds`, or `signal`. */
  run(options: RunOptions): Promise<RunSummary>;
  /** Downloads and returns the current global model (weights flat). */
  downloadModel(version?: number): Promise<{ version: number; spec: ModelSpec; weights: Float32Array }>;
  close(): void;
}

/** Creates a device-side client. */
export function createClient(options: ClientOptions): VeilClient {
  const log = options.logger ?? consoleLogger;
  const transport = options.transport ?? createGrpcTransport({ address: options.coordinator });
  const pollWaitMs = options.pollWaitMs ?? 30_000;
  const chain = composeMiddleware(options.middleware ?? [], async (update) => update);
  let identity: { clientId: string; credential: string } | null =
    'credential' in options.credentials ? { clientId: options.credentials.clientId, credential: options.credentials.credential } : null;
  let model: ModelSpec | null = null;
  let runtime: { tf: Tf; backend: TensorflowBackend } | null = null;
  const cached: { version: number; weights: Float32Array } = { version: -1, weights: new Float32Array(0) };

  const retry = <T>(what: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> =>
    withRetry(fn, {
      ...options.retry,
      ...(signal && { signal }),
      onRetry: (error, attempt, delayMs) => log.warn({ what, code: error.code, attempt, delayMs: Math.round(delayMs) }, 'transient error, retrying'),
    });

  async function join(): Promise<{ clientId: string; credential: string }> {
    if (identity !== null) return identity;
    if (!('enrolmentSecret' in options.credentials)) throw new ClientError('unauthenticated', 'no credential');
    const secret = options.credentials.enrolmentSecret;
    const result: JoinResult = await retry('join', () =>
      transport.join({ taskId: options.taskId, enrolmentSecret: secret, clientName: options.name ?? '' }),
    );
    identity = { clientId: result.clientId, credential: result.credential };
    model = result.task.model;
    log.info({ taskId: options.taskId, clientId: result.clientId }, 'joined task');
    return identity;
  }

  async function ensureModel(): Promise<ModelSpec> {
    const { credential } = await join();
    model ??= (await retry('get task', () => transport.getTask(credential))).model;
    return model;
  }

  async function fetchWeights(version: number, sha256: string | null, signal?: AbortSignal): Promise<{ version: number; weights: Float32Array }> {
    if (cached.version === version && version > 0) return cached;
    const { credential } = await join();
    const downloaded = await retry('download', () => transport.downloadModel(credential, version, signal), signal);
    if (sha256 !== null && downloaded.sha256 !== sha256) throw new ClientError('integrity', 'downloaded model does not match the assignment digest');
    cached.version = downloaded.version;
    cached.weights = bytesToFloat32(downloaded.bytes);
    return cached;
  }

  async function ensureRuntime(): Promise<{ tf: Tf; backend: TensorflowBackend }> {
    runtime ??= await initTensorflow({ preferred: options.backend ?? 'node', logger: log });
    return runtime;
  }

  async function participate(a: Assignment, run: RunOptions): Promise<RoundReport> {
    const { tf } = await ensureRuntime();
    const { credential, clientId } = await join();
    const model = await ensureModel();
    const global = await fetchWeights(a.modelVersion, a.modelSha256, run.signal);

    let evaluation: RoundReport['evaluation'] = null;
    if (a.evaluate && run.evalData && run.evalData.count > 0) {
      const e = await evaluateLocal(tf, { spec: model, weights: global.weights, data: run.evalData });
      evaluation = { accuracy: e.accuracy, loss: e.loss, exampleCount: e.exampleCount };
      await transport
        .reportEvaluation(credential, {
          roundNumber: a.roundNumber,
          modelVersion: a.modelVersion,
          exampleCount: e.exampleCount,
          metrics: { accuracy: e.accuracy, loss: e.loss },
        })
        .catch((error: unknown) => log.warn({ code: ClientError.from(error).code }, 'evaluation report failed'));
    }

    const trained = await trainLocal(tf, {
      spec: model,
      weights: global.weights,
      data: run.data,
      epochs: a.training.epochs,
      batchSize: a.training.batchSize,
      learningRate: a.training.learningRate,
      ...(run.signal && { signal: run.signal }),
    });
    const ctx: RoundContext = {
      taskId: options.taskId,
      clientId,
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      maxExampleCount: a.maxExampleCount,
      signal: run.signal,
    };
    const initial: LocalUpdate = {
      delta: trained.delta,
      exampleCount: Math.min(trained.exampleCount, a.maxExampleCount),
      encoding: 'float32-le',
      notes: {},
    };
    const update = await chain(initial, ctx);
    const payload = update.payload ?? float32ToBytes(update.delta);
    if (payload.byteLength > a.maxUpdateBytes) {
      throw new ClientError('resource_exhausted', `update of ${payload.byteLength} bytes exceeds the round's ${a.maxUpdateBytes}`);
    }
    const sha256 = createHash('sha256').update(payload).digest('hex');
    const header = { roundNumber: a.roundNumber, modelVersion: a.modelVersion, exampleCount: update.exampleCount, encoding: update.encoding, sha256 };
    let attempts = 0;
    const { acceptedCount } = await retry(
      'submit',
      async () => {
        attempts++;
        try {
          return await transport.submitUpdate(credential, header, payload, run.signal);
        } catch (error) {
          // A retry after a lost acknowledgement finds the same payload already accepted: that is success.
          const e = ClientError.from(error);
          if (attempts > 1 && e.code === 'already_exists' && e.message.includes('same payload')) return { acceptedCount: 0 };
          throw e;
        }
      },
      run.signal,
    );
    return {
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      exampleCount: update.exampleCount,
      trainLoss: trained.loss,
      trainMs: trained.durationMs,
      uploadBytes: payload.byteLength,
      acceptedCount,
      evaluation,
    };
  }

  return {
    join,

    async run(run) {
      const { credential } = await join();
      let rounds = 0;
      for (;;) {
        if (run.signal?.aborted) return { rounds, taskStatus: 'CANCELLED', reason: 'aborted', finalModelVersion: null };
        if (run.maxRounds !== undefined && rounds >= run.maxRounds) {
          return { rounds, taskStatus: 'RUNNING', reason: 'maxRounds reached', finalModelVersion: null };
        }
        const response = await retry('wait', () => transport.waitForAssignment(credential, pollWaitMs, run.signal), run.signal);
        if (response.kind === 'ended') {
          log.info({ taskStatus: response.taskStatus, rounds }, 'task ended');
          return { rounds, taskStatus: response.taskStatus, reason: response.reason, finalModelVersion: response.finalModelVersion };
        }
        if (response.kind === 'idle') continue;
        const a = response.assignment;
        try {
          const report = await participate(a, run);
          rounds++;
          log.info({ roundNumber: a.roundNumber, uploadBytes: report.uploadBytes, trainMs: Math.round(report.trainMs) }, 'update submitted');
          run.onRound?.(report);
        } catch (raw) {
          const error = ClientError.from(raw);
          if (error.code === 'cancelled' || run.signal?.aborted) continue;
          if (error.code === 'failed_precondition' || error.code === 'permission_denied' || error.code === 'already_exists') {
            // The round moved on (deadline, closed early): wait for the next one.
            log.warn({ roundNumber: a.roundNumber, code: error.code, reason: error.message }, 'update not accepted');
            await sleep(100, run.signal);
            continue;
          }
          throw error;
        }
      }
    },

    async downloadModel(version = 0) {
      const spec = await ensureModel();
      const { version: v, weights } = await fetchWeights(version, null);
      return { version: v, spec, weights: weights.slice() };
    },

    close() {
      transport.close();
    },
  };
}
