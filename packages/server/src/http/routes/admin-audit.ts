import type { FastifyPluginAsync } from 'fastify';
import type { AuditTrail } from '../../security/audit-trail.js';
import type { SecurityStore } from '../../security/ports.js';
import { described, errorResponses, rateLimitedResponse } from './common.js';

export interface AuditRoutesOptions {
  security: SecurityStore;
  trail: AuditTrail;
}

const eventSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    at: { type: 'string', format: 'date-time' },
    actor: { type: 'string', enum: ['admin', 'audit', 'device', 'anonymous', 'system'] },
    action: { type: 'string' },
    outcome: { type: 'string' },
    taskId: { type: ['string', 'null'] },
    sourceAddress: { type: ['string', 'null'] },
    details: { type: ['object', 'null'], additionalProperties: true },
  },
} as const;

/** GET /v1/audit: the audit trail (admin actions and failed authentications), newest first, paged. Admin token only. */
export const auditRoutes: FastifyPluginAsync<AuditRoutesOptions> = async (app, { security, trail }) => {
  app.get<{ Querystring: { offset: number; limit: number; taskId?: string } }>(
    '/v1/audit',
    {
      config: { auth: 'admin' },
      schema: {
        security: [{ bearer: [] }],
        tags: ['audit trail'],
        summary: 'The audit trail: admin actions (who: token kind, what: method and route, outcome) and failed authentications on REST and gRPC, with source addresses; newest first',
        querystring: {
          type: 'object',
          additionalProperties: false,
          properties: {
            offset: { type: 'integer', minimum: 0, maximum: 2_147_483_647, default: 0 },
            limit: { type: 'integer', minimum: 1, maximum: 1000, default: 100 },
            taskId: { type: 'string', format: 'uuid' },
          },
        },
        response: {
          200: described({ type: 'object', properties: { total: { type: 'integer' }, events: { type: 'array', items: eventSchema } } }, 'A page of audit events'),
          400: errorResponses[400],
          401: errorResponses[401],
          403: errorResponses[403],
          429: rateLimitedResponse,
        },
      },
    },
    async (request) => {
      // Read your own writes: events recorded before this request are in the database first.
      await trail.flush();
      const { total, events } = await security.listAudit({
        offset: request.query.offset,
        limit: request.query.limit,
        ...(request.query.taskId !== undefined && { taskId: request.query.taskId.toLowerCase() }),
      });
      return { total, events: events.map((e) => ({ ...e, at: e.at.toISOString() })) };
    },
  );
};
