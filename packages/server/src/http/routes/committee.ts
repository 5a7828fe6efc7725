import type { FastifyPluginAsync } from 'fastify';
import type { TaskOverviewService } from '../../services/task-overview.js';
import { described, errorResponses, idParams, secured } from './common.js';

export interface CommitteeRoutesOptions {
  tasks: TaskOverviewService;
}

const committeeAuditSchema = {
  type: 'object',
  properties: {
    taskId: { type: 'string' },
    descriptorHash: { type: 'string' },
    threshold: { type: 'integer' },
    committeeSize: { type: 'integer' },
    corruptTolerated: { type: 'integer' },
    minDevices: { type: 'integer' },
    valid: { type: 'boolean' },
    rounds: {
      type: 'array',
      items: {
        type: 'object',
        properties: {
          roundNumber: { type: 'integer' },
          state: { type: 'string' },
          deviceCount: { type: ['integer', 'null'] },
          approvedBy: { type: 'array', items: { type: 'integer' } },
          valid: { type: 'boolean' },
          problems: { type: 'array', items: { type: 'string' } },
        },
      },
    },
  },
} as const;

/** The committee audit route (audit or admin token, read-only). */
export const committeeRoutes: FastifyPluginAsync<CommitteeRoutesOptions> = async (app, { tasks }) => {
  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/committee/audit',
    {
      config: { auth: 'audit' },
      schema: {
        ...secured,
        tags: ['privacy audit'],
        summary: "Committee tasks: which custodians approved each round's decryption and for how many devices; every stored answer's signature is checked against the task descriptor",
        params: idParams,
        response: { 200: described(committeeAuditSchema, 'The committee audit'), ...errorResponses },
      },
    },
    async (request) => tasks.committeeAudit(request.params.id),
  );
};
