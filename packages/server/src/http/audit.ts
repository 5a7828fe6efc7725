import type { FastifyPluginAsync } from 'fastify';
import fp from 'fastify-plugin';
import type { AuditTrail } from '../security/audit-trail.js';
import type { AuthFailure } from './auth.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Facts a route adds to its audit event (ids it created or changed); never a secret. */
    auditDetails: Record<string, string | number | boolean | null> | null;
  }
}

export interface HttpAuditOptions {
  trail: AuditTrail;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/**
 * Writes every admin action (a request that authenticated and is not a GET/HEAD) to the audit
 * trail once it was answered: who (token kind), what (method and route), when, the source address
 * and the outcome (HTTP status).
 */
const httpAudit: FastifyPluginAsync<HttpAuditOptions> = async (app, { trail }) => {
  app.decorateRequest('auditDetails', null);
  app.addHook('onResponse', async (request, reply) => {
    if (request.principal === null || request.method === 'GET' || request.method === 'HEAD') return;
    const params = (request.params ?? {}) as Record<string, unknown>;
    const details = request.auditDetails ?? {};
    const paramTask = typeof params['id'] === 'string' && UUID.test(params['id']) ? params['id'] : null;
    const detailTask = typeof details['taskId'] === 'string' ? details['taskId'] : null;
    trail.record({
      at: new Date(),
      actor: request.principal,
      action: `${request.method} ${request.routeOptions.url ?? request.url.split('?', 1)[0]}`,
      outcome: String(reply.statusCode),
      taskId: paramTask ?? detailTask,
      sourceAddress: request.ip,
      details: Object.keys(details).length === 0 ? null : details,
    });
  });
};

export const httpAuditPlugin = fp(httpAudit, { name: 'veil-http-audit', fastify: '5.x', dependencies: ['veil-http-auth'] });

/** The audit event of a failed REST authentication (wrong token). */
export function authFailureEvent(failure: AuthFailure) {
  return {
    at: new Date(),
    actor: 'anonymous' as const,
    action: 'auth.failed',
    outcome: failure.reason === 'locked_out' ? '429' : failure.reason === 'missing' ? '401' : '403',
    taskId: null,
    sourceAddress: failure.sourceAddress,
    details: { surface: 'rest', method: failure.method, route: failure.route.slice(0, 200), reason: failure.reason },
  };
}
