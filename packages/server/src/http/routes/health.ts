import type { FastifyPluginAsync } from 'fastify';
import { VeilError } from '../../errors.js';
import type { FederationStore } from '../../rounds/ports.js';
import { errorSchema, sessionSchema, statusSchema } from '../schemas.js';
import { secured } from './common.js';

export interface HealthRoutesOptions {
  store: FederationStore;
}

/** Liveness, readiness, and which role a token has (the dashboard's sign-in). */
export const healthRoutes: FastifyPluginAsync<HealthRoutesOptions> = async (app, { store }) => {
  app.get('/v1/health', { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Liveness', response: { 200: { ...statusSchema, examples: [{ status: 'ok' }] } } } }, async () => ({ status: 'ok' }));

  app.get(
    '/v1/ready',
    { config: { auth: 'public' }, schema: { tags: ['health'], summary: 'Readiness: the database answers', response: { 200: { ...statusSchema, examples: [{ status: 'ready' }] }, 503: errorSchema } } },
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
    { config: { auth: 'audit' }, schema: { ...secured, tags: ['health'], summary: 'The role of the bearer token (admin or audit)', response: { 200: sessionSchema, 401: errorSchema, 403: errorSchema } } },
    async (request) => ({ role: request.principal }),
  );
};
