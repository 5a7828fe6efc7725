import type { FastifyPluginAsync } from 'fastify';
import type { PrivacyAuditService } from '../../services/privacy-audit.js';
import { checkpointSchema, ledgerPageSchema, privacySummarySchema, verifySchema } from '../schemas.js';
import { described, errorResponses, idParams, pageQuery, secured } from './common.js';

export interface PrivacyRoutesOptions {
  privacy: PrivacyAuditService;
}

/** The privacy audit routes (audit or admin token, read-only). */
export const privacyRoutes: FastifyPluginAsync<PrivacyRoutesOptions> = async (app, { privacy }) => {
  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/privacy',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: 'Privacy budget of a task: cap, cumulative spend, remaining, projection, accountant, per-round cumulative series and per-device spend',
        params: idParams,
        response: { 200: described(privacySummarySchema, 'The budget summary'), ...errorResponses },
      },
    },
    async (request) => privacy.summary(request.params.id),
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
        querystring: pageQuery(1000),
        response: { 200: described(ledgerPageSchema, 'A page of ledger entries in sequence order'), ...errorResponses },
      },
    },
    async (request) => ({ ...(await privacy.ledger(request.params.id, request.query)), cumulativeFields: ['epsilon'] }),
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
        response: { 200: described(verifySchema, 'The verification result (ok false names the first entry that does not match)'), ...errorResponses },
      },
    },
    async (request) => privacy.verify(request.params.id),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/privacy/checkpoint',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: 'The head of the ledger (sequence, head hash, cumulative epsilon) as a JSON document to keep outside Veil',
        params: idParams,
        response: { 200: described(checkpointSchema, 'The checkpoint, as a JSON attachment'), ...errorResponses },
      },
    },
    async (request, reply) => {
      const checkpoint = await privacy.checkpoint(request.params.id);
      return reply.header('content-disposition', `attachment; filename="veil-ledger-${checkpoint.taskId}-${checkpoint.sequence}.json"`).send(checkpoint);
    },
  );
};
