import { createHash, randomBytes } from 'node:crypto';
import { float32Bytes, float32View } from '@veil/protocol/codec';
import { ClientError } from './errors.js';
import { composeMiddleware, type LocalUpdate, type RoundContext, type UpdateMiddleware } from './middleware.js';
import { sleep, withRetry, type RetryOptions } from './retry.js';
import { initTensorflow, type TensorflowBackend } from './training/backend.js';
import { evaluateLocalOn, trainLocalOn } from './training/train.js';
import { buildModel } from './training/model.js';
import type { LayersModel } from '@tensorflow/tfjs';
import type { LocalDataset, ModelSpec, Tf } from './training/types.js';
import type { DeviceKeyMaterial } from '@veil/crypto';
import { createDeviceEncryption, type DeviceEncryption } from './mods/encrypt.js';
import { createCommitteeEncryption, type CommitteeEncryption, type CommitteePins } from './mods/committee.js';
import { generateEd25519KeyPair, type DeviceCertificate, type RawKeyPair } from '@veil/crypto';
import { computeCalibrationStatistics } from './export/onnx.js';
import { ExportError, meanNoiseStddev, planHistogramRound, planRangeRound, statisticsLength, type CalibrationPlan } from '@veil/export';
import {
  createDistributedDpMiddleware,
  createLocalDpMiddleware,
  paddedDimension,
  rotationSeedForVersion,
  type DistributedDpMiddleware,
  type LocalDpMiddleware,
  type LocalDpState,
} from './mods/dp.js';
import { createGrpcTransport, type TlsOptions } from './transport/grpc-transport.js';
import type { Assignment, AssignmentResponse, DistributedDpParams, DownloadedModel, JoinResult, Transport } from './transport/transport.js';

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
  /** Coordinator gRPC address: `host:port`, `grpcs://host:port` (TLS) or `grpc://host:port` (see GrpcTransportOptions). */
  coordinator: string;
  /** TLS to the coordinator: pinned CA, client certificate for mutual TLS. Default none (cleartext unless `grpcs://`). */
  tls?: TlsOptions;
  /** Task to take part in. */
  taskId: string;
  credentials: ClientCredentials;
  /** Device label shown to the operator. Default none. */
  name?: string;
  /** Transport. Default the SDK's gRPC transport (`createGrpcTransport`, over node:http2) to `coordinator`. */
  transport?: Transport;
  /** Update middleware applied in order (clipping, noise, encryption). Default none. */
  middleware?: readonly UpdateMiddleware[];
  /** Default: `consoleLogger`. */
  logger?: SdkLogger;
  /** Backoff for transient errors. Defaults in RetryOptions. */
  retry?: RetryOptions;
  /** Long-poll duration of WaitForAssignment, ms. Default 30 000. */
  pollWaitMs?: number;
  /**
   * TensorFlow.js backend preference; the SDK falls back node → wasm → cpu in Node, webgpu →
   * webgl → wasm → cpu in a browser. Default the first of those.
   */
  backend?: 'node' | 'webgpu' | 'webgl' | 'wasm' | 'cpu';
  /**
   * The federation's device key bundle (from `veil keys generate`), required by
   * tasks with encrypted aggregation: updates leave the device encrypted and
   * global models are decrypted here. Default none (plaintext tasks only).
   */
  encryption?: { deviceKey: DeviceKeyMaterial };
  /**
   * Committee mode (tasks whose updates custodians aggregate, issue 11): the committee and
   * enrolment authority the app pins, and how the device gets its key certified. Required by
   * committee tasks; the SDK refuses a descriptor that fails these pins. Default none.
   */
  committee?: CommitteeClientOptions;
  /**
   * The device's own differential-privacy budget, for tasks in local DP mode:
   * the SDK clips and noises every update (CSPRNG) and refuses to train past
   * this cap. Default: the task's cap and δ, no persistence (pass `persist`
   * and `restore` so a restart does not reset the device's spend).
   */
  privacy?: { epsilonCap?: number; delta?: number; restore?: LocalDpState; persist?: (state: LocalDpState) => void | Promise<void> };
  /**
   * Seed (uint32) of local training's minibatch shuffle: round r shuffles with `trainingSeed + r`,
   * so tests and benchmarks train reproducibly. Not privacy noise (that always comes from a
   * CSPRNG). Default: a fresh random seed per round.
   */
  trainingSeed?: number;
}

/** The app's side of committee mode. */
export interface CommitteeClientOptions {
  /** Pinned custodian fingerprints, enrolment authority key and floors. */
  pins: CommitteePins;
  /** The device's Ed25519 key pair. Default: generated at first use (keep it to avoid re-enrolment). */
  deviceKey?: RawKeyPair;
  /**
   * Obtains the enrolment authority's certificate of the device key for (task, client id):
   * an attestation service, an offline enrolment step, or in the demo a process apart from the
   * coordinator. Called once per client after join.
   */
  certify: (request: { taskId: string; deviceId: string; devicePublicKey: Uint8Array }) => Promise<DeviceCertificate>;
}

/** What `onRound` receives after each round the device took part in. */
export interface RoundReport {
  roundNumber: number;
  modelVersion: number;
  /** The update's weight in FedAvg: the examples trained on, capped by the round, or 1 under differential privacy. */
  exampleCount: number;
  /** Local examples the device trained on this round (reported to the coordinator beside the weight). */
  trainedExamples: number;
  trainLoss: number;
  /** F_k(w_t), the round's model's mean loss on the training data before training, sent with the update when the round asked (q-FedAvg); null otherwise. */
  trainingLoss: number | null;
  trainMs: number;
  uploadBytes: number;
  acceptedCount: number;
  /** Evaluation of the received global model on `evalData`, if given. */
  evaluation: { accuracy: number; loss: number; exampleCount: number } | null;
  /** The strategy's fit config of the round (`assignment.config`), as training used it. */
  config: Readonly<Record<string, number | string | boolean>>;
  /** A calibration round's stage (the device reported statistics; `trainLoss` is NaN); absent for training rounds. */
  calibration?: 'range' | 'histogram';
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
  /**
   * The final model evaluated on `evalData` after the task ended (and reported
   * to the coordinator as round 0); null without `evalData`, or when the task
   * did not end with a model (failed, cancelled). Absent on early returns.
   */
  finalEvaluation?: FinalEvaluation | null;
}

/** The device's evaluation of the task's final model. */
export interface FinalEvaluation {
  modelVersion: number;
  accuracy: number;
  loss: number;
  exampleCount: number;
}

export interface VeilClient {
  /** Joins the task if needed; returns the credential to store for later runs. */
  join(): Promise<{ clientId: string; credential: string }>;
  /** Takes part in rounds until the task ends, `maxRounds`, or `signal`. */
  run(options: RunOptions): Promise<RunSummary>;
  /** The device's local-DP budget (tasks in local DP mode, after join), else null. */
  privacyStatus(): { spentEpsilon: number; epsilonCap: number; delta: number; participations: number } | null;
  /** Downloads (and, for encrypted tasks, decrypts) a global model version; default the current one. */
  downloadModel(version?: number): Promise<{ version: number; spec: ModelSpec; weights: Float32Array }>;
  close(): void;
}

/**
 * The distributed discrete Gaussian middleware of a task in distributed DP
 * mode (Kairouz, Liu & Steinke 2021), with the parameters the coordinator's
 * ledger accounts; refuses tasks whose parameters the device cannot honour.
 */
function distributedDpFor(task: JoinResult['task'], encryption: DeviceEncryption | null): DistributedDpMiddleware {
  const p = task.privacy!;
  const d = p.distributed;
  if (d === null) throw new ClientError('failed_precondition', 'distributed privacy without its mechanism parameters');
  if (encryption === null) throw new ClientError('failed_precondition', 'distributed differential privacy requires an encrypted task');
  if (d.modulus !== encryption.plainModulus) {
    throw new ClientError('failed_precondition', `distributed DP modulus ${d.modulus} is not the key's plain modulus ${encryption.plainModulus}`);
  }
  if (d.dimension !== paddedDimension(task.parameterCount)) {
    throw new ClientError('failed_precondition', `distributed DP dimension ${d.dimension} does not pad the model's ${task.parameterCount} parameters`);
  }
  return createDistributedDpMiddleware({
    clipNorm: p.clipNorm,
    scale: d.scale,
    localStddev: d.localStddev,
    modulus: d.modulus,
    beta: d.roundingBeta,
    // The round's sum becomes the next model version; key holders derive the same seed to decode it.
    rotationSeed: (ctx) => rotationSeedForVersion(task.taskId, ctx.modelVersion + 1),
  });
}

/**
 * σ_r: the noise one of the task's DP reports carries per value, in model units (z·C under local
 * DP, the discrete Gaussian share under distributed DP), 0 without DP: as the coordinator states it
 * (server rounds/calibration.ts `reportNoiseStddev`) for key holders' planning.
 */
function reportNoiseStddev(task: JoinResult['task'] | null): number {
  const p = task?.privacy ?? null;
  if (p === null) return 0;
  return p.mode === 'local' ? p.noiseMultiplier * p.clipNorm : (p.distributed?.localStddev ?? 0);
}

/** A long-poll opened ahead of time (see `pollAhead` in `createClient`). */
interface PollAhead {
  response: Promise<AssignmentResponse | null>;
  cancel(): void;
}

/** Creates a device-side client. */
export function createClient(options: ClientOptions): VeilClient {
  const log = options.logger ?? consoleLogger;
  const transport = options.transport ?? createGrpcTransport({ address: options.coordinator, ...(options.tls && { tls: options.tls }) });
  const pollWaitMs = options.pollWaitMs ?? 30_000;
  const chain = composeMiddleware(options.middleware ?? [], async (update) => update);
  let identity: { clientId: string; credential: string } | null =
    'credential' in options.credentials ? { clientId: options.credentials.clientId, credential: options.credentials.credential } : null;
  let task: JoinResult['task'] | null = null;
  let runtime: { tf: Tf; backend: TensorflowBackend } | null = null;
  let encryption: DeviceEncryption | null = null;
  let committee: CommitteeEncryption | null = null;
  let localDp: LocalDpMiddleware | null = null;
  let distributedDp: { middleware: DistributedDpMiddleware; params: DistributedDpParams } | null = null;
  let cached: { version: number; weights: Float32Array } = { version: -1, weights: new Float32Array(0) };
  // Plaintext tasks: the transport's model that `cached.weights` views, and how many readers (a round,
  // the final evaluation, downloadModel) hold it. Once superseded and unread it goes back to the
  // transport (releaseModel), which receives a later model into its memory instead of fresh memory.
  let cachedModel: { model: DownloadedModel; readers: number } | null = null;
  const releaseIfUnread = (m: { model: DownloadedModel; readers: number }): void => {
    if (m !== cachedModel && m.readers === 0) transport.releaseModel?.(m.model);
  };
  /** A hold on the model behind `cached` until the returned `done` (taken where `cached` is read, in the same tick). */
  const hold = (): (() => void) => {
    const m = cachedModel;
    if (m === null) return () => {};
    m.readers++;
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      m.readers--;
      releaseIfUnread(m);
    };
  };
  // Models that came with an assignment (waitForAssignmentAndModel), by version, until fetchWeights takes them.
  const prefetched = new Map<number, DownloadedModel>();
  // The task's model, built once (topology parsed, layers created) and given each round's weights.
  let localModel: Promise<LayersModel> | null = null;

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
    task = result.task;
    log.info({ taskId: options.taskId, clientId: result.clientId }, 'joined task');
    return identity;
  }

  async function ensureTask(): Promise<JoinResult['task']> {
    const { credential } = await join();
    task ??= await retry('get task', () => transport.getTask(credential));
    if (task.encryption !== null && encryption === null) {
      if (options.encryption === undefined) {
        throw new ClientError('failed_precondition', 'the task uses encrypted aggregation: pass the device key bundle as `encryption`');
      }
      if (options.encryption.deviceKey.keyId !== task.encryption.keyId) {
        throw new ClientError('failed_precondition', `the device key ${options.encryption.deviceKey.keyId} is not the task's key ${task.encryption.keyId}`);
      }
      encryption = await createDeviceEncryption(options.encryption.deviceKey);
    }
    if (task.committee && committee === null) {
      if (options.committee === undefined) {
        throw new ClientError('failed_precondition', 'the task uses committee aggregation: pass `committee` (pinned custodians, authority key, certify)');
      }
      const deviceKey = options.committee.deviceKey ?? generateEd25519KeyPair();
      const { clientId } = await join();
      const certificate = await options.committee.certify({ taskId: options.taskId, deviceId: clientId, devicePublicKey: deviceKey.publicKey });
      const announced = task.privacy?.mode === 'distributed' ? task.privacy.distributed : null;
      committee = createCommitteeEncryption({
        committee: task.committee,
        pins: options.committee.pins,
        deviceId: clientId,
        deviceKey,
        certificate,
        parameterCount: task.parameterCount,
        // The descriptor fixes a DP committee task's noise; the coordinator's announcement must agree with it.
        announcedDp:
          announced == null
            ? null
            : { scale: announced.scale, localStddev: announced.localStddev, minNoiseClients: announced.minNoiseClients, dimension: announced.dimension, clipNorm: task.privacy!.clipNorm, noiseMultiplier: task.privacy!.noiseMultiplier },
      });
      log.info({ descriptorHash: committee.descriptorHash, committeeSize: committee.check.committeeSize, threshold: committee.descriptor.threshold }, 'committee aggregation on');
    }
    // Committee tasks apply the descriptor's distributed DP inside the committee middleware.
    if (task.privacy !== null && task.privacy.mode === 'distributed' && distributedDp === null && !task.committee) {
      distributedDp = { middleware: distributedDpFor(task, encryption), params: task.privacy.distributed! };
      log.info({ minNoiseClients: distributedDp.params.minNoiseClients }, 'distributed differential privacy on');
    } else if (task.privacy !== null && task.privacy.mode === 'local' && localDp === null) {
      const own = options.privacy ?? {};
      localDp = createLocalDpMiddleware({
        clipNorm: task.privacy.clipNorm,
        noiseMultiplier: task.privacy.noiseMultiplier,
        epsilonCap: own.epsilonCap ?? task.privacy.epsilonCap,
        delta: own.delta ?? task.privacy.delta,
        ...(own.restore && { restore: own.restore }),
        ...(own.persist && { persist: own.persist }),
      });
      log.info({ epsilonCap: localDp.privacy.epsilonCap, spent: localDp.privacy.spentEpsilon }, 'local differential privacy on');
    }
    return task;
  }

  const download = async (which: { version: number } | { latest: true }, signal?: AbortSignal) => {
    const { credential } = await join();
    return retry('download', () => transport.downloadModel(credential, which, signal), signal);
  };

  /** Model `version` as it came with an assignment, or downloaded. */
  const modelVersion = async (version: number, signal?: AbortSignal): Promise<DownloadedModel> => {
    const sent = prefetched.get(version);
    prefetched.delete(version);
    return sent ?? download({ version }, signal);
  };

  /**
   * One long-poll. With a transport that has waitForAssignmentAndModel, an assignment to a model
   * version other than `heldModelVersion` brings that model in the same call (kept for
   * fetchWeights; the two most recent are kept).
   */
  async function poll(credential: string, signal: AbortSignal | undefined, afterRoundNumber: number | undefined, heldModelVersion: number): Promise<AssignmentResponse> {
    const wait = afterRoundNumber === undefined ? undefined : { afterRoundNumber };
    if (transport.waitForAssignmentAndModel === undefined) return transport.waitForAssignment(credential, pollWaitMs, signal, wait);
    const { response, model } = await transport.waitForAssignmentAndModel(credential, pollWaitMs, signal, {
      ...wait,
      ...(heldModelVersion >= 0 && { heldModelVersion }),
    });
    if (model !== null) {
      prefetched.set(model.version, model);
      for (const [version, unused] of prefetched) {
        if (prefetched.size <= 2) break;
        prefetched.delete(version);
        transport.releaseModel?.(unused); // never read
      }
    }
    return response;
  }

  /**
   * The global model at `version`. Plaintext tasks store every version's
   * weights; encrypted tasks store the initial weights and each round's
   * encrypted sum, so the device replays the sums it has not applied yet.
   * The caller reads `weights` until it calls `done()` (plaintext tasks: their memory is the
   * transport's, handed back once a later version replaced them and no reader holds them).
   */
  async function fetchWeights(version: number, sha256: string | null, signal?: AbortSignal): Promise<{ version: number; weights: Float32Array; done(): void }> {
    if (cached.version === version) return { ...cached, done: hold() };
    await ensureTask();
    if (encryption === null || version === 0) {
      const d = await modelVersion(version, signal);
      if (sha256 !== null && d.sha256 !== sha256) throw new ClientError('integrity', 'downloaded model does not match the assignment digest');
      if (d.encoding !== 'float32-le') throw new ClientError('integrity', `model version ${version} is ${d.encoding}, expected float32`);
      // The download is the transport's own buffer: the weights are read where they arrived.
      cached = { version, weights: float32View(d.bytes) };
      if (encryption === null) {
        const previous = cachedModel;
        cachedModel = { model: d, readers: 0 };
        if (previous !== null) releaseIfUnread(previous);
      }
      return { ...cached, done: hold() };
    }
    let current: { version: number; weights: Float32Array } = cached.version >= 0 && cached.version < version ? cached : await fetchWeights(0, null, signal);
    for (let v = current.version + 1; v <= version; v++) {
      const d = await modelVersion(v, signal);
      if (v === version && sha256 !== null && d.sha256 !== sha256) {
        throw new ClientError('integrity', 'downloaded model does not match the assignment digest');
      }
      if (d.encoding !== 'bfv-sum-v1') throw new ClientError('integrity', `model version ${v} is ${d.encoding}, expected an encrypted sum`);
      const weights =
        distributedDp === null
          ? encryption.applySum(current.weights, d.bytes)
          : encryption.applyDistributedDpSum(current.weights, d.bytes, {
              scale: distributedDp.params.scale,
              modulus: distributedDp.params.modulus,
              rotationSeed: rotationSeedForVersion(options.taskId, v),
              minClients: distributedDp.params.minNoiseClients,
            });
      current = { version: v, weights };
      cached = current;
    }
    // Encrypted tasks: the weights are the device's own sums, not a model's memory (nothing to hold).
    return { ...current, done: () => {} };
  }

  async function ensureRuntime(): Promise<{ tf: Tf; backend: TensorflowBackend }> {
    runtime ??= await initTensorflow({ ...(options.backend !== undefined && { preferred: options.backend }), logger: log });
    return runtime;
  }

  /** The task's model, built on first use with `weights` (which also checks them against the spec). */
  function ensureModel(tf: Tf, spec: ModelSpec, weights: Float32Array): Promise<LayersModel> {
    localModel ??= buildModel(tf, spec, weights).catch((error: unknown) => {
      localModel = null;
      throw error;
    });
    return localModel;
  }

  /**
   * After the task ended with a model: the last round's devices never receive
   * the model it produced, so each device evaluates it on its held-out data and
   * reports it as round 0. A failed report is logged, not thrown.
   */
  async function evaluateFinal(taskStatus: string, version: number, run: RunOptions): Promise<FinalEvaluation | null> {
    if (taskStatus !== 'TASK_STATUS_COMPLETED' && taskStatus !== 'TASK_STATUS_BUDGET_EXHAUSTED') return null;
    if (!run.evalData || run.evalData.count === 0 || version < 1) return null;
    try {
      const { tf } = await ensureRuntime();
      const { model } = await ensureTask();
      const { credential } = await join();
      const global = await fetchWeights(version, null, run.signal);
      let e;
      try {
        e = await evaluateLocalOn(tf, await ensureModel(tf, model, global.weights), { spec: model, weights: global.weights, data: run.evalData });
      } finally {
        global.done();
      }
      await transport.reportEvaluation(credential, { roundNumber: 0, modelVersion: version, exampleCount: e.exampleCount, metrics: { accuracy: e.accuracy, loss: e.loss } });
      log.info({ modelVersion: version, accuracy: e.accuracy, loss: e.loss, exampleCount: e.exampleCount }, 'final model evaluated');
      return { modelVersion: version, accuracy: e.accuracy, loss: e.loss, exampleCount: e.exampleCount };
    } catch (error) {
      log.warn({ code: ClientError.from(error).code, modelVersion: version }, 'final model evaluation failed');
      return null;
    }
  }

  async function participate(a: Assignment, run: RunOptions): Promise<RoundReport> {
    const { tf } = await ensureRuntime();
    const { credential, clientId } = await join();
    const { model } = await ensureTask();
    const global = await fetchWeights(a.modelVersion, a.modelSha256, run.signal);
    try {
      return await participateWith(a, run, { tf, credential, clientId, model, weights: global.weights });
    } finally {
      global.done();
    }
  }

  /** A round on the global weights `on.weights` (held by the caller). */
  async function participateWith(
    a: Assignment,
    run: RunOptions,
    on: { tf: Tf; credential: string; clientId: string; model: ModelSpec; weights: Float32Array },
  ): Promise<RoundReport> {
    const { tf, credential, clientId, model } = on;
    const global = { weights: on.weights };
    const built = await ensureModel(tf, model, global.weights);

    let evaluation: RoundReport['evaluation'] = null;
    if (a.evaluate && run.evalData && run.evalData.count > 0) {
      const e = await evaluateLocalOn(tf, built, { spec: model, weights: global.weights, data: run.evalData });
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

    if (a.calibration) return calibrate(a, a.calibration, run, { clientId, credential, model, weights: global.weights, evaluation });
    // q-FedAvg (Li et al. 2020) weighs each update by F_k(w_t), the round's model's loss on the
    // device's training data before it trains: measured here when the round's fit config asks.
    const trainingLoss =
      a.config['reportTrainingLoss'] === true ? (await evaluateLocalOn(tf, built, { spec: model, weights: global.weights, data: run.data })).loss : null;
    const trained = await trainLocalOn(tf, built, {
      spec: model,
      weights: global.weights,
      data: run.data,
      epochs: a.training.epochs,
      batchSize: a.training.batchSize,
      learningRate: a.training.learningRate,
      ...fitTrainingOptions(a.config),
      ...(run.signal && { signal: run.signal }),
      ...(options.trainingSeed !== undefined && { seed: (options.trainingSeed + a.roundNumber) >>> 0 }),
    });
    const ctx: RoundContext = {
      taskId: options.taskId,
      clientId,
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      maxExampleCount: a.maxExampleCount,
      config: a.config,
      signal: run.signal,
    };
    const initial: LocalUpdate = {
      delta: trained.delta,
      exampleCount: Math.min(trained.exampleCount, a.maxExampleCount),
      encoding: 'float32-le',
      notes: {},
    };
    // Order: the app's middleware, then DP (clip + noise, accounted), then encryption, last.
    const { uploadBytes, acceptedCount, exampleCount } = await upload(a, await chain(initial, ctx), ctx, credential, trained.exampleCount, run, trainingLoss);
    return {
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      exampleCount,
      trainedExamples: trained.exampleCount,
      trainingLoss,
      trainLoss: trained.loss,
      trainMs: trained.durationMs,
      uploadBytes,
      acceptedCount,
      evaluation,
      config: a.config,
    };
  }

  /**
   * A calibration round (issue 16): the device runs the model on its local data and reports its
   * activation statistics on the round's grid (`computeCalibrationStatistics`), multiplied by the
   * round's scale and zero-padded to the model's size, through the same DP and encryption as an
   * update (not the app's middleware, which is written for model deltas); a shared-key task's report
   * is encrypted unpadded (padded and DDG-encoded under distributed DP), and its histogram plan
   * derived here from the range round's encrypted sum (`derive`). In committee mode without
   * DP the frequencies are first rounded stochastically to the encoding's step, so the sum stays
   * unbiased (under distributed DP the DDG encoder rounds them on its own grid, KLS21 Algorithm 1).
   */
  async function calibrate(
    a: Assignment,
    calibration: NonNullable<Assignment['calibration']>,
    run: RunOptions,
    on: { clientId: string; credential: string; model: ModelSpec; weights: Float32Array; evaluation: RoundReport['evaluation'] },
  ): Promise<RoundReport> {
    const { tf } = await ensureRuntime();
    const started = performance.now();
    // Without DP a report weighs its examples (capped by the round), so it summarises that many. Under
    // DP every report weighs 1 (the round's cap is 1) and its norm is bounded whatever it summarises
    // (rounds/calibration.ts): it summarises all the device's data, not one example.
    const examples = task?.privacy != null ? run.data.count : Math.min(run.data.count, a.maxExampleCount);
    let plan: CalibrationPlan = calibration.plan;
    if (calibration.derive !== undefined) {
      // Shared key: the coordinator cannot read the range round's sum; this device (a key holder)
      // opens it and derives the histogram plan as every other device does (deterministically).
      const rangePlan = planRangeRound(plan.points.map((p) => p.name));
      const { mean, clientCount } = openCalibrationSum(a, calibration.derive.rangeSum, statisticsLength(rangePlan), on.weights.length);
      // In frequency units (the reports were multiplied by the range round's scale); under DP the plan
      // thresholds the mean's noise, as key holders do (rounds/calibration.ts of the server).
      const rangeScale = calibration.derive.rangeScale;
      for (let i = 0; i < mean.length; i++) mean[i] = mean[i]! / rangeScale;
      const noiseStddev = meanNoiseStddev(reportNoiseStddev(task), Math.max(1, clientCount), rangeScale);
      try {
        plan = planHistogramRound(rangePlan, mean, { bins: calibration.derive.bins, tailFraction: calibration.derive.tailFraction, noiseStddev });
      } catch (error) {
        throw new ClientError('invalid_argument', `calibration: ${ExportError.from(error).message}`, { cause: error });
      }
    }
    // Rounded stochastically to the encryption's step, so the sum stays unbiased (committee without
    // DP, shared key without DP); with DP the noise dwarfs the step (the DDG encoder also rounds by itself).
    const step =
      encryption !== null && localDp === null && distributedDp === null
        ? encryption.quantizationStep / calibration.scale
        : committee === null || localDp !== null || committee.dp !== null
          ? undefined
          : committee.descriptor.encoding.step / calibration.scale;
    const statistics = await computeCalibrationStatistics(tf, on.model, on.weights, run.data, plan, {
      maxExamples: examples,
      ...(step !== undefined && { roundingStep: step, random: () => randomBytes(4).readUInt32LE(0) / 2 ** 32 }),
    });
    if (statistics.length > on.weights.length) {
      throw new ClientError('failed_precondition', `the calibration report has ${statistics.length} values, more than the model's ${on.weights.length}`);
    }
    // A shared-key task's report is encrypted unpadded; the others travel zero-padded to the model's size
    // (under distributed DP, the DDG encoder then pads it to d as an update: rounds/calibration.ts).
    const delta = new Float32Array(encryption !== null && distributedDp === null ? statistics.length : on.weights.length);
    for (let i = 0; i < statistics.length; i++) delta[i] = statistics[i]! * calibration.scale;
    const ctx: RoundContext = {
      taskId: options.taskId,
      clientId: on.clientId,
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      maxExampleCount: a.maxExampleCount,
      config: a.config,
      signal: run.signal,
    };
    const initial: LocalUpdate = { delta, exampleCount: examples, encoding: 'float32-le', notes: {} };
    const { uploadBytes, acceptedCount, exampleCount } = await upload(a, initial, ctx, on.credential, examples, run);
    return {
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      exampleCount,
      trainedExamples: examples,
      trainingLoss: null,
      trainLoss: Number.NaN,
      trainMs: performance.now() - started,
      uploadBytes,
      acceptedCount,
      evaluation: on.evaluation,
      config: a.config,
      calibration: calibration.plan.round,
    };
  }

  /**
   * A shared-key calibration round's encrypted sum opened with the task's key: the mean of its
   * reports' first `length` values (under distributed DP, the DDG sum of reports padded to the
   * model's `parameterCount` values, decoded as the round's training sum would be, with the
   * rotation seed of the version after the round's model: the seed its DDG encoder used).
   */
  function openCalibrationSum(a: Assignment, sum: Uint8Array, length: number, parameterCount: number): { mean: Float64Array; clientCount: number } {
    if (encryption === null) throw new ClientError('failed_precondition', "a derived calibration plan needs the task's shared key (ClientOptions.encryption)");
    if (distributedDp === null) return encryption.decryptMean(sum, length);
    const { mean, clientCount } = encryption.decryptDistributedDpMean(sum, {
      scale: distributedDp.params.scale,
      modulus: distributedDp.params.modulus,
      rotationSeed: rotationSeedForVersion(options.taskId, a.modelVersion + 1),
      originalDimension: parameterCount,
      minClients: distributedDp.params.minNoiseClients,
    });
    return { mean: mean.slice(0, length), clientCount };
  }

  /** DP, encryption, then the upload with retries (a retry finding its own payload accepted is success). */
  async function upload(
    a: Assignment,
    start: LocalUpdate,
    ctx: RoundContext,
    credential: string,
    trainedExamples: number,
    run: RunOptions,
    /** F_k(w_t) when the round asked for it (q-FedAvg), else null. */
    trainingLoss: number | null = null,
  ): Promise<{ uploadBytes: number; acceptedCount: number; exampleCount: number }> {
    let update = start;
    if (localDp !== null) update = await localDp.middleware(update, ctx, async (x) => x);
    if (distributedDp !== null) update = await distributedDp.middleware.middleware(update, ctx, async (x) => x);
    if (encryption !== null) update = await encryption.middleware(update, ctx, async (x) => x);
    if (committee !== null) update = await committee.middleware(update, ctx, async (x) => x);
    if (committee !== null && update.encoding !== 'committee-v1') throw new ClientError('internal', 'committee task, but the update was not encrypted for the committee');
    if (update.levels !== undefined && encryption === null) throw new ClientError('failed_precondition', 'distributed DP requires an encrypted task');
    if (encryption !== null && update.encoding !== 'bfv-v1') throw new ClientError('internal', 'encrypted task, but the update was not encrypted');
    // The delta's own memory (little-endian platforms): it is not changed until upload() returns.
    const payload = update.payload ?? float32Bytes(update.delta);
    if (payload.byteLength > a.maxUpdateBytes) {
      throw new ClientError('resource_exhausted', `update of ${payload.byteLength} bytes exceeds the round's ${a.maxUpdateBytes}`);
    }
    const sha256 = createHash('sha256').update(payload).digest('hex');
    const header = {
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      exampleCount: update.exampleCount,
      trainedExamples,
      ...(trainingLoss !== null && { trainingLoss }),
      encoding: update.encoding,
      sha256,
    };
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
          if (attempts > 1 && e.code === 'already_accepted') return { acceptedCount: 0 };
          throw e;
        }
      },
      run.signal,
    );
    return { uploadBytes: payload.byteLength, acceptedCount, exampleCount: update.exampleCount };
  }

  /**
   * Opens the long-poll for a round after `roundNumber` (`afterRoundNumber`). Its answer is null when
   * the poll failed (the caller polls again, with retries) or came back with `roundNumber` or an
   * earlier round (a coordinator or transport that ignores the option).
   */
  function pollAhead(credential: string, roundNumber: number, heldModelVersion: number, signal: AbortSignal | undefined): PollAhead {
    const controller = new AbortController();
    const onAbort = (): void => controller.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    const response = poll(credential, controller.signal, roundNumber, heldModelVersion)
      .then(
        (r) => (r.kind === 'assignment' && r.assignment.roundNumber <= roundNumber ? null : r),
        () => null,
      )
      .finally(() => signal?.removeEventListener('abort', onAbort));
    return { response, cancel: () => controller.abort() };
  }

  return {
    join,

    async run(run) {
      const { credential } = await join();
      let rounds = 0;
      // The long-poll for the round after the one being worked on, opened when work on it starts.
      let ahead: PollAhead | null = null;
      try {
        for (;;) {
          if (run.signal?.aborted) return { rounds, taskStatus: 'CANCELLED', reason: 'aborted', finalModelVersion: null };
          if (run.maxRounds !== undefined && rounds >= run.maxRounds) {
            return { rounds, taskStatus: 'RUNNING', reason: 'maxRounds reached', finalModelVersion: null };
          }
          const early: AssignmentResponse | null = ahead === null ? null : await ahead.response;
          ahead = null;
          const response = early ?? (await retry('wait', () => poll(credential, run.signal, undefined, cached.version), run.signal));
          if (response.kind === 'ended') {
            log.info({ taskStatus: response.taskStatus, rounds }, 'task ended');
            const finalEvaluation = await evaluateFinal(response.taskStatus, response.finalModelVersion, run);
            return { rounds, taskStatus: response.taskStatus, reason: response.reason, finalModelVersion: response.finalModelVersion, finalEvaluation };
          }
          if (response.kind === 'idle') continue;
          const a = response.assignment;
          await ensureTask();
          if (localDp !== null && !localDp.privacy.canParticipate) {
            log.warn({ spent: localDp.privacy.spentEpsilon, cap: localDp.privacy.epsilonCap }, 'device privacy budget exhausted; not training');
            return { rounds, taskStatus: 'DEVICE_BUDGET_EXHAUSTED', reason: "the device's own privacy budget is exhausted", finalModelVersion: null };
          }
          // The coordinator acknowledges a round's last updates only once it has opened the next round:
          // a poll opened now hears of that round when it opens, not a round trip after the acknowledgement.
          // It is opened holding this round's model version (fetched meanwhile): the next round's model comes with it when it is another.
          if (run.maxRounds === undefined || rounds + 1 < run.maxRounds) ahead = pollAhead(credential, a.roundNumber, a.modelVersion, run.signal);
          try {
            const report = await participate(a, run);
            rounds++;
            log.info({ roundNumber: a.roundNumber, trainedExamples: report.trainedExamples, weight: report.exampleCount, uploadBytes: report.uploadBytes, trainMs: Math.round(report.trainMs) }, 'update submitted');
            run.onRound?.(report);
          } catch (raw) {
            const error = ClientError.from(raw);
            if (error.code === 'cancelled' || run.signal?.aborted) continue;
            if (error.code === 'failed_precondition' || error.code === 'permission_denied' || error.code === 'already_exists' || error.code === 'already_accepted') {
              // The round moved on (deadline, closed early): wait for the next one.
              log.warn({ roundNumber: a.roundNumber, code: error.code, reason: error.message }, 'update not accepted');
              await sleep(100, run.signal);
              continue;
            }
            throw error;
          }
        }
      } finally {
        ahead?.cancel();
      }
    },

    privacyStatus() {
      if (localDp === null) return null;
      const p = localDp.privacy;
      return { spentEpsilon: p.spentEpsilon, epsilonCap: p.epsilonCap, delta: p.delta, participations: p.participations };
    },

    async downloadModel(version) {
      const { model: spec } = await ensureTask();
      const target = version ?? (await download({ latest: true })).version;
      const global = await fetchWeights(target, null);
      try {
        return { version: global.version, spec, weights: global.weights.slice() };
      } finally {
        global.done();
      }
    },

    close() {
      encryption?.dispose();
      void localModel?.then((m) => m.dispose(), () => {});
      localModel = null;
      transport.close();
    },
  };
}

/**
 * Local-training options a round's fit config sets (the strategy's `configureFit`):
 * `proximalMu` (FedProx's μ) and `momentum` (local SGD momentum). Other keys are
 * left to the app's middleware (`RoundContext.config`).
 */
export function fitTrainingOptions(config: Readonly<Record<string, number | string | boolean>>): { proximalMu?: number; momentum?: number } {
  const out: { proximalMu?: number; momentum?: number } = {};
  for (const key of ['proximalMu', 'momentum'] as const) {
    const value = config[key];
    if (value === undefined) continue;
    if (typeof value !== 'number') throw new ClientError('invalid_argument', `fit config ${key} must be a number, got ${typeof value}`);
    out[key] = value;
  }
  return out;
}
