import type { FastifyPluginAsync } from 'fastify';
import { VeilError } from '../../errors.js';
import type { FederationStore } from '../../rounds/ports.js';
import { errorSchema, sessionSchema, statusSchema } from '../schemas.js';
import { described, secured } from './common.js';

export interface HealthRoutesOptions {
  store: FederationStore;
}

/** Liveness, readiness, and which role a token has (the dashboard's sign-in). */
export const healthRoutes: FastifyPluginAsync<HealthRoutesOptions> = async (app, { store }) => {
  app.get('/v1/health', { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Liveness', response: { 200: described({ ...statusSchema, examples: [{ status: 'ok' }] }, 'The process is alive') } } }, async () => ({ status: 'ok' }));

  app.get(
    '/v1/ready',
    { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Readiness: the database answers', response: { 200: described({ ...statusSchema, examples: [{ status: 'ready' }] }, 'The database answers'), 503: described(errorSchema, 'unavailable: the database does not answer') } } },
    async () => {
      try {
        await store.ping();
      } catch (error) {
        throw new VeilError('unavailable', 'database unavailable', { cause: error });
      }
      return { status: 'ready' };
    },
  );

  app.get(
    '/v1/session',
    { config: { auth: 'audit' }, schema: { ...secured, tags: ['health'], summary: 'The role of the bearer token (admin or audit)', response: { 200: described(sessionSchema, 'The role of the token'), 401: described(errorSchema, 'No bearer token'), 403: described(errorSchema, 'Neither the admin nor the audit token') } } },
    async (request) => ({ role: request.principal }),
  );
};
