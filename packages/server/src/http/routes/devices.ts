import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { FastifyPluginAsync } from 'fastify';
import { VeilError } from '../../errors.js';
import type { DeviceAuth } from '../../grpc/device-auth.js';
import type { Task } from '../../rounds/model.js';
import type { ClientInfo, EnrolmentTokenInfo, SecurityStore } from '../../security/ports.js';
import { described, errorResponses, rateLimitedResponse } from './common.js';

export interface DeviceRoutesOptions {
  security: SecurityStore;
  deviceAuth: DeviceAuth;
  /** Reads a task (throws not_found). */
  getTask(id: string): Promise<Task>;
  /** Clock, ms since the epoch. */
  now(): number;
}

/** Default lifetime of an enrolment token, s (1 day); at most 365 days. */
const DEFAULT_TOKEN_TTL_SECONDS = 86_400;
const MAX_TOKEN_TTL_SECONDS = 365 * 86_400;

const uuid = { type: 'string', format: 'uuid' } as const;
const idParams = { type: 'object', required: ['id'], properties: { id: uuid } } as const;
const errors = { ...errorResponses, 429: rateLimitedResponse };
const secured = { security: [{ bearer: [] }] };
const dateTime = { type: 'string', format: 'date-time' } as const;
const nullableDateTime = { type: ['string', 'null'], format: 'date-time' } as const;

const tokenSchema = {
  type: 'object',
  properties: {
    id: uuid,
    taskId: uuid,
    label: { type: ['string', 'null'] },
    maxUses: { type: ['integer', 'null'] },
    uses: { type: 'integer' },
    expiresAt: dateTime,
    revokedAt: nullableDateTime,
    createdAt: dateTime,
  },
} as const;

const clientSchema = {
  type: 'object',
  properties: {
    id: uuid,
    taskId: uuid,
    name: { type: ['string', 'null'] },
    joinedAt: dateTime,
    lastSeenAt: dateTime,
    revokedAt: nullableDateTime,
    enrolmentTokenId: { type: ['string', 'null'] },
  },
} as const;

const presentToken = (t: EnrolmentTokenInfo) => ({
  ...t,
  expiresAt: t.expiresAt.toISOString(),
  revokedAt: t.revokedAt?.toISOString() ?? null,
  createdAt: t.createdAt.toISOString(),
});
const presentClient = (c: ClientInfo) => ({
  ...c,
  joinedAt: c.joinedAt.toISOString(),
  lastSeenAt: c.lastSeenAt.toISOString(),
  revokedAt: c.revokedAt?.toISOString() ?? null,
});

/** Admin routes of device enrolment: per-task enrolment tokens, device identities, revocation. */
export const deviceRoutes: FastifyPluginAsync<DeviceRoutesOptions> = async (app, options) => {
  const { security, deviceAuth } = options;

  app.post<{ Params: { id: string }; Body: { label?: string; ttlSeconds?: number; maxUses?: number } | undefined }>(
    '/v1/tasks/:id/enrolment-tokens',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['devices'],
        summary: 'Create an enrolment token for a task (shown once; only its SHA-256 is stored). Devices present it to Join as enrolment_secret.',
        params: idParams,
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            label: { type: 'string', minLength: 1, maxLength: 200, pattern: '^[^\\u0000-\\u001f\\u007f]*$' },
            ttlSeconds: { type: 'integer', minimum: 60, maximum: MAX_TOKEN_TTL_SECONDS, description: `Lifetime. Default ${DEFAULT_TOKEN_TTL_SECONDS} (1 day).` },
            maxUses: { type: 'integer', minimum: 1, maximum: 10_000_000, description: 'Joins allowed at most. Default: no limit but the task\'s maxDevices.' },
          },
        },
        response: { 201: described({ ...tokenSchema, properties: { ...tokenSchema.properties, token: { type: 'string' } } }, 'The new enrolment token, with its secret (shown once)'), ...errors },
      },
    },
    async (request, reply) => {
      const task = await options.getTask(request.params.id);
      const body = request.body ?? {};
      const token = randomBytes(32).toString('base64url');
      const created = await security.createEnrolmentToken({
        id: randomUUID(),
        taskId: task.id,
        tokenHash: createHash('sha256').update(token).digest('hex'),
        label: body.label ?? null,
        maxUses: body.maxUses ?? null,
        expiresAt: new Date(options.now() + (body.ttlSeconds ?? DEFAULT_TOKEN_TTL_SECONDS) * 1000),
      });
      request.auditDetails = { tokenId: created.id, maxUses: created.maxUses, expiresAt: created.expiresAt.toISOString() };
      return reply.status(201).send({ ...presentToken(created), token });
    },
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/enrolment-tokens',
    {
      config: { auth: 'admin' },
      schema: { ...secured, tags: ['devices'], summary: "A task's enrolment tokens (without their secrets)", params: idParams, response: { 200: described({ type: 'object', properties: { tokens: { type: 'array', items: tokenSchema } } }, 'The tokens, without their secrets'), ...errors } },
    },
    async (request) => {
      const task = await options.getTask(request.params.id);
      return { tokens: (await security.listEnrolmentTokens(task.id)).map(presentToken) };
    },
  );

  app.post<{ Params: { id: string; tokenId: string } }>(
    '/v1/tasks/:id/enrolment-tokens/:tokenId/revoke',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['devices'],
        summary: 'Revoke an enrolment token: no device can join with it from now on (devices that joined keep their credentials)',
        params: { type: 'object', required: ['id', 'tokenId'], properties: { id: uuid, tokenId: uuid } },
        response: { 200: described(tokenSchema, 'The token after the change'), ...errors },
      },
    },
    async (request) => {
      const token = await security.revokeEnrolmentToken(request.params.id, request.params.tokenId, new Date(options.now()));
      if (token === null) throw new VeilError('not_found', `task ${request.params.id} has no enrolment token ${request.params.tokenId}`);
      request.auditDetails = { tokenId: token.id };
      return presentToken(token);
    },
  );

  app.get<{ Params: { id: string }; Querystring: { offset: number; limit: number } }>(
    '/v1/tasks/:id/clients',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['devices'],
        summary: "A task's device identities, in joining order, paged",
        params: idParams,
        querystring: {
          type: 'object',
          properties: { offset: { type: 'integer', minimum: 0, maximum: 2_147_483_647, default: 0 }, limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 } },
        },
        response: { 200: described({ type: 'object', properties: { total: { type: 'integer' }, clients: { type: 'array', items: clientSchema } } }, 'A page of the task\'s devices'), ...errors },
      },
    },
    async (request) => {
      const task = await options.getTask(request.params.id);
      const page = await security.listClients(task.id, { offset: request.query.offset, limit: request.query.limit });
      return { total: page.total, clients: page.clients.map(presentClient) };
    },
  );

  app.post<{ Params: { id: string; clientId: string } }>(
    '/v1/tasks/:id/clients/:clientId/revoke',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['devices'],
        summary: "Revoke a device's credential, at once: its calls in flight (long-polls, downloads, uploads not yet being recorded) end with UNAUTHENTICATED, and every later call is refused",
        params: { type: 'object', required: ['id', 'clientId'], properties: { id: uuid, clientId: uuid } },
        response: { 200: described(clientSchema, 'The device after the change'), ...errors },
      },
    },
    async (request) => {
      const client = await security.revokeClient(request.params.id, request.params.clientId, new Date(options.now()));
      if (client === null) throw new VeilError('not_found', `task ${request.params.id} has no client ${request.params.clientId}`);
      deviceAuth.revoked(client.id);
      request.auditDetails = { clientId: client.id };
      return presentClient(client);
    },
  );
};
