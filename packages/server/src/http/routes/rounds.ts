import type { FastifyPluginAsync } from 'fastify';
import type { TaskOverviewService } from '../../services/task-overview.js';
import { presentDevice, presentRound } from '../present.js';
import { deviceListSchema, evaluationListSchema, roundSchema } from '../schemas.js';
import { described, errorResponses, idParams, pageQuery, secured } from './common.js';

export interface RoundRoutesOptions {
  tasks: TaskOverviewService;
}

/** Round history (one query per page) and the devices of a task. */
export const roundRoutes: FastifyPluginAsync<RoundRoutesOptions> = async (app, { tasks }) => {
  app.get<{ Params: { id: string }; Querystring: { offset: number; limit: number; events: boolean } }>(
    '/v1/tasks/:id/rounds',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['rounds'],
        summary: 'Round history with state transitions, participation, aggregation summaries and reported evaluation metrics',
        params: idParams,
        querystring: {
          type: 'object',
          properties: {
            ...pageQuery(1000).properties,
            events: { type: 'boolean', default: true, description: 'Include each round\'s state transitions (false: an empty list, a smaller response for plots)' },
          },
        },
        response: { 200: described({ type: 'object', properties: { rounds: { type: 'array', items: roundSchema } } }, 'A page of rounds in number order'), ...errorResponses },
      },
    },
    async (request) => ({ rounds: (await tasks.rounds(request.params.id, request.query)).map(presentRound) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/evaluations',
    {
      config: { auth: 'admin' },
      schema: { ...secured, tags: ['rounds'], summary: 'Federated evaluation of each model version, the final model included', params: idParams, response: { 200: described(evaluationListSchema, 'Evaluations by model version') , ...errorResponses } },
    },
    async (request) => ({ evaluations: await tasks.evaluations(request.params.id) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/devices',
    {
      config: { auth: 'admin' },
      schema: { ...secured, tags: ['rounds'], summary: 'Devices that joined the task: name, last seen, rounds taken part in, credential state', params: idParams, response: { 200: described(deviceListSchema, 'The devices, in join order'), ...errorResponses } },
    },
    async (request) => ({ devices: (await tasks.devices(request.params.id)).map(presentDevice) }),
  );
};
