import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from 'pino';
import { bytesToFloat32 } from '@veil/protocol/codec';
import { VeilError } from '../errors.js';
import { createAuthThrottle, type AuthThrottle } from '../security/auth-throttle.js';
import { httpAuthPlugin, type AuthFailure } from './auth.js';
import type { RoundEngine } from '../rounds/engine.js';
import type { Round, Task } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';
import type { TaskInput } from '../rounds/task-settings.js';
import type { EncryptionInput } from '../rounds/engine.js';
import { errorSchema, ledgerEntrySchema, privacySummarySchema, roundSchema, taskCreateSchema, taskSchema, verifySchema } from './schemas.js';
import { clientEpsilon, epsilonOfEntries, mechanismName } from '../privacy/accounting.js';
import { verifyLedger, type LedgerEntry } from '../privacy/ledger.js';
import type { PrivacySettings } from '../privacy/settings.js';

export interface HttpAppOptions {
  engine: RoundEngine;
  store: FederationStore;
  logger: Logger;
  /** Bearer token for every /v1/tasks call (mutations and reads). */
  adminToken: string;
  /** Read-only bearer token of the privacy audit routes (`/v1/tasks/:id/privacy*`); the admin token works there too. */
  auditToken: string;
  /** Largest task-creation body (admin only), in bytes. Default 64 MiB (a model's initial weights travel in the body). */
  bodyLimitBytes?: number;
  /** Largest body of every other request, in bytes. Default 64 KiB. */
  smallBodyLimitBytes?: number;
  /** Backoff on failed authentication (per peer address and per token). Default a new {@link createAuthThrottle}. */
  authThrottle?: AuthThrottle;
  /** Told of every failed authentication (the audit trail). Default none. */
  onAuthFailure?: (failure: AuthFailure) => void;
}

/** Builds the admin REST API (Fastify). The caller listens and closes it. */
export async function buildHttpApp(options: HttpAppOptions): Promise<FastifyInstance> {
  const { engine, store } = options;
  const app = Fastify({
    loggerInstance: options.logger.child({ component: 'http' }) as FastifyBaseLogger,
    // Every route reads at most this much; only task creation (admin, checked before the body is read) more.
    bodyLimit: options.smallBodyLimitBytes ?? 64 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Veil coordinator API',
        version: '1',
        description: 'Admin and audit API of the Veil federated-learning coordinator. Devices use the gRPC protocol (proto/veil/v1).',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  // Route `config.auth`: 'admin' (the default under /v1/), 'audit' (audit or admin token), 'public'.
  await app.register(httpAuthPlugin, {
    adminToken: options.adminToken,
    auditToken: options.auditToken,
    throttle: options.authThrottle ?? createAuthThrottle(),
    ...(options.onAuthFailure && { onFailure: options.onAuthFailure }),
  });

  app.setErrorHandler((error: unknown, request, reply: FastifyReply) => {
    const validation = (error as { validation?: unknown; statusCode?: number; message?: string }) ?? {};
    if (validation.validation !== undefined) {
      return reply.status(400).send({ code: 'invalid_argument', message: validation.message ?? 'invalid request' });
    }
    if (!(error instanceof VeilError) && typeof validation.statusCode === 'number' && validation.statusCode < 500) {
      return reply.status(validation.statusCode).send({ code: 'invalid_argument', message: validation.message ?? 'bad request' });
    }
    const e = VeilError.from(error);
    if (e.code === 'internal') request.log.error({ err: e.cause ?? e }, 'request failed');
    if (e.retryAfterSeconds !== undefined) void reply.header('retry-after', String(e.retryAfterSeconds));
    return reply.status(e.httpStatus).send({ code: e.code, message: e.publicMessage });
  });

  const secured = { security: [{ bearer: [] }] };
  const idParams = { type: 'object', required: ['id'], properties: { id: { type: 'string', format: 'uuid' } } } as const;
  const errors = { 400: errorSchema, 401: errorSchema, 403: errorSchema, 404: errorSchema, 409: errorSchema };

  app.get('/v1/health', { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Liveness', response: { 200: { type: 'object', properties: { status: { type: 'string' } } } } } }, async () => ({ status: 'ok' }));

  app.get(
    '/v1/ready',
    { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Readiness: the database answers', response: { 200: { type: 'object', properties: { status: { type: 'string' } } }, 503: errorSchema } } },
    async () => {
      try {
        await store.ping();
      } catch (error) {
        throw new VeilError('unavailable', 'database unavailable', { cause: error });
      }
      return { status: 'ready' };
    },
  );

  app.post<{
    Body: TaskInput & {
      model: { topology: Record<string, unknown>; weightSpecs: unknown; weightsBase64: string };
      start?: boolean;
      encryption?: EncryptionInput;
    };
  }>(
    '/v1/tasks',
    {
      config: { auth: 'admin' },
      bodyLimit: options.bodyLimitBytes ?? 64 * 1024 * 1024,
      schema: { ...secured, tags: ['tasks'], summary: 'Create a task', body: taskCreateSchema, response: { 201: taskSchema, ...errors, 413: errorSchema } },
    },
    async (request, reply) => {
      const { model, start, ...input } = request.body;
      const bytes = Buffer.from(model.weightsBase64, 'base64');
      if (bytes.byteLength % 4 !== 0) throw new VeilError('invalid_argument', 'model.weightsBase64 must decode to float32 values');
      let task = await engine.createTask(input, { topology: model.topology, weightSpecs: model.weightSpecs, weights: bytesToFloat32(bytes) });
      if (start === true) task = await engine.startTask(task.id);
      return reply.status(201).send(presentTask(task));
    },
  );

  app.get('/v1/tasks', { config: { auth: 'admin' }, schema: { ...secured, tags: ['tasks'], summary: 'List tasks', response: { 200: { type: 'object', properties: { tasks: { type: 'array', items: taskSchema } } }, ...errors } } }, async () => ({
    tasks: (await store.listTasks()).map(presentTask),
  }));

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id',
    { config: { auth: 'admin' }, schema: { ...secured, tags: ['tasks'], summary: 'Get a task', params: idParams, response: { 200: taskSchema, ...errors } } },
    async (request) => presentTask(await getTask(request.params.id)),
  );

  for (const action of ['start', 'pause'] as const) {
    app.post<{ Params: { id: string } }>(
      `/v1/tasks/:id/${action}`,
      {
        config: { auth: 'admin' },
        schema: { ...secured, tags: ['tasks'], summary: action === 'start' ? 'Start or resume a task' : 'Pause a task (the open round finishes; no new round opens)', params: idParams, response: { 200: taskSchema, ...errors } },
      },
      async (request) => {
        await getTask(request.params.id);
        const task = action === 'start' ? await engine.startTask(request.params.id) : await engine.pauseTask(request.params.id);
        return presentTask(task);
      },
    );
  }

  app.get<{ Params: { id: string }; Querystring: { offset: number; limit: number } }>(
    '/v1/tasks/:id/rounds',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['rounds'],
        summary: 'Round history with state transitions, aggregation summaries and reported evaluation metrics',
        params: idParams,
        querystring: {
          type: 'object',
          properties: { offset: { type: 'integer', minimum: 0, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: 500, default: 100 } },
        },
        response: { 200: { type: 'object', properties: { rounds: { type: 'array', items: roundSchema } } }, ...errors },
      },
    },
    async (request) => {
      await getTask(request.params.id);
      const rounds = await store.listRounds(request.params.id, { offset: request.query.offset, limit: request.query.limit });
      return {
        rounds: await Promise.all(
          rounds.map(async (round) => ({
            ...presentRound(round),
            evaluation: await store.getRoundEvaluation(round.id),
            events: (await store.listRoundEvents(round.id)).map((e) => ({ ...e, at: e.at.toISOString() })),
          })),
        ),
      };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { version?: number } }>(
    '/v1/tasks/:id/model',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary: 'Current (or a given) global model as a TensorFlow.js model.json (load with tf.loadLayersModel)',
        params: idParams,
        querystring: { type: 'object', properties: { version: { type: 'integer', minimum: 0 } } },
        response: { 200: { type: 'object', additionalProperties: true }, ...errors },
      },
    },
    async (request) => {
      const task = await getTask(request.params.id);
      const version = request.query.version ?? task.currentModelVersion;
      const meta = await store.getModelVersion(task.id, version);
      if (meta === null) throw new VeilError('not_found', `task has no model version ${version}`);
      if (task.encryption === null) {
        return {
          format: 'layers-model',
          generatedBy: 'veil',
          convertedBy: null,
          modelTopology: task.modelTopology,
          weightsManifest: [{ paths: [`model/weights.bin?version=${version}`], weights: task.weightSpecs }],
          veil: { taskId: task.id, version, sha256: meta.sha256, sizeBytes: meta.sizeBytes, encoding: meta.encoding, encrypted: false },
        };
      }
      // Encrypted task: version 0 is the plaintext initial model, each later version the encrypted
      // sum of a round; key holders apply them in order (@veil/client-sdk decryptGlobalModel).
      const chain = [];
      for (let v = 0; v <= version; v++) {
        const m = v === version ? meta : await store.getModelVersion(task.id, v);
        if (m === null) throw new VeilError('internal', `model version ${v} is missing`);
        chain.push({ version: v, path: `model/weights.bin?version=${v}`, sha256: m.sha256, sizeBytes: m.sizeBytes, encoding: m.encoding });
      }
      return {
        format: 'layers-model',
        generatedBy: 'veil',
        convertedBy: null,
        modelTopology: task.modelTopology,
        veil: {
          taskId: task.id,
          version,
          encrypted: true,
          keyId: task.encryption.keyId,
          weightSpecs: task.weightSpecs,
          chain,
        },
      };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { version?: number } }>(
    '/v1/tasks/:id/model/weights.bin',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary: 'Weights of a global model version (little-endian float32, weight-spec order)',
        params: idParams,
        querystring: { type: 'object', properties: { version: { type: 'integer', minimum: 0 } } },
      },
    },
    async (request, reply) => {
      // `?version=0` is the initial model (as in model.json's weightsManifest), not "current".
      const version = request.query.version ?? (await getTask(request.params.id)).currentModelVersion;
      const model = await engine.readModelVersion(request.params.id, version);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('etag', `"${model.sha256}"`)
        .header('x-veil-model-version', String(model.version))
        .header('x-veil-model-encoding', model.encoding)
        .send(model.bytes);
    },
  );

  const privacyTask = async (id: string): Promise<Task & { settings: { privacy: PrivacySettings } }> => {
    const task = await getTask(id);
    if (task.settings.privacy === null) throw new VeilError('failed_precondition', `task ${id} runs without differential privacy`);
    return task as Task & { settings: { privacy: PrivacySettings } };
  };

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/privacy',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: 'Privacy budget of a task: cap, spent, remaining, accountant, per-round series and per-client spend',
        params: idParams,
        response: { 200: privacySummarySchema, ...errors },
      },
    },
    async (request) => {
      const task = await privacyTask(request.params.id);
      const p = task.settings.privacy;
      const entries = await store.listLedger(task.id);
      const spent = entries.at(-1)?.epsilon ?? 0;
      const perClient = new Map<string, LedgerEntry[]>();
      for (const e of entries) {
        for (const id of e.participantIds) {
          const list = perClient.get(id);
          if (list === undefined) perClient.set(id, [e]);
          else list.push(e);
        }
      }
      return {
        taskId: task.id,
        status: task.status,
        mode: p.mode,
        mechanism: mechanismName(p.mode),
        accountant: {
          name: 'rdp',
          description: p.ddg
            ? 'Renyi DP of the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021, Theorem 1 and Proposition 14, with conditional-rounding sensitivity), Poisson-subsampled (Zhu & Wang 2019, Theorem 5), composed over rounds, converted to (epsilon, delta) as in dp_accounting (Balle et al. 2020; Canonne, Kamath & Steinke 2020), with dp_accounting default orders'
            : 'Renyi DP of the Poisson-subsampled Gaussian (Mironov 2017; Mironov, Talwar & Zhang 2019), composed over rounds, converted to (epsilon, delta) as in dp_accounting (Balle et al. 2020; Canonne, Kamath & Steinke 2020), with dp_accounting default orders',
          samplingRate: p.samplingRate,
          noiseMultiplier: p.noiseMultiplier,
          clipNorm: p.clipNorm,
          ...(p.ddg && { distributedDiscreteGaussian: p.ddg }),
        },
        epsilonCap: p.epsilonCap,
        delta: p.delta,
        spent,
        remaining: Math.max(0, p.epsilonCap - spent),
        rounds: entries.map((e) => ({ roundNumber: e.roundNumber, epsilon: e.epsilon, participants: e.participants, at: e.createdAt })),
        clients: [...perClient.entries()].map(([clientId, rounds]) => ({
          clientId,
          participations: rounds.length,
          // A device knows when it took part: its own guarantee composes the unamplified mechanism (q = 1).
          epsilon: clientEpsilon(rounds, p.delta).epsilon,
        })),
      };
    },
  );

  app.get<{ Params: { id: string }; Querystring: { offset: number; limit: number } }>(
    '/v1/tasks/:id/privacy/ledger',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: 'The append-only privacy ledger, paged; each entry holds the SHA-256 of the previous one',
        params: idParams,
        querystring: {
          type: 'object',
          properties: { offset: { type: 'integer', minimum: 0, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
        response: { 200: { type: 'object', properties: { total: { type: 'integer' }, entries: { type: 'array', items: ledgerEntrySchema } } }, ...errors },
      },
    },
    async (request) => {
      const task = await privacyTask(request.params.id);
      const total = (await store.lastLedgerEntry(task.id))?.sequence ?? 0;
      return { total, entries: await store.listLedger(task.id, { offset: request.query.offset, limit: request.query.limit }) };
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/privacy/verify',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: 'Recomputes the hash chain and every cumulative epsilon from the recorded parameters; names the first entry that does not match',
        params: idParams,
        response: { 200: verifySchema, ...errors },
      },
    },
    async (request) => {
      const task = await privacyTask(request.params.id);
      const entries = await store.listLedger(task.id);
      const overCap = entries.find((e) => e.epsilon > task.settings.privacy.epsilonCap);
      const result = verifyLedger(entries, (upTo) => epsilonOfEntries(upTo, upTo.at(-1)!.delta).epsilon);
      return { ...result, withinCap: overCap === undefined };
    },
  );

  async function getTask(id: string): Promise<Task> {
    const task = await store.getTask(id);
    if (task === null) throw new VeilError('not_found', `task ${id} does not exist`);
    return task;
  }

  return app;
}

function presentTask(task: Task) {
  return {
    id: task.id,
    name: task.name,
    status: task.status,
    statusReason: task.statusReason,
    settings: task.settings,
    parameterCount: task.parameterCount,
    encryption:
      task.encryption === null
        ? null
        : {
            keyId: task.encryption.keyId,
            fingerprint: task.encryption.fingerprint,
            preset: task.encryption.preset,
            weightCap: task.encryption.weightCap,
            clipMaxAbs: task.encryption.clipMaxAbs,
            step: task.encryption.step,
          },
    currentModelVersion: task.currentModelVersion,
    createdAt: task.createdAt.toISOString(),
    updatedAt: task.updatedAt.toISOString(),
  };
}

function presentRound(round: Round) {
  return {
    number: round.number,
    state: round.state,
    failureReason: round.failureReason,
    baseModelVersion: round.baseModelVersion,
    selected: round.targetCount,
    received: round.receivedCount,
    minClients: round.minClients,
    deadlineAt: round.state === 'SELECTING' ? null : round.deadlineAt.toISOString(),
    training: round.config,
    summary: round.summary,
    openedAt: round.openedAt.toISOString(),
    closedAt: round.closedAt?.toISOString() ?? null,
  };
}
