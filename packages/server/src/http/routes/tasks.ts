import type { FastifyPluginAsync } from 'fastify';
import { bytesToFloat32 } from '@veil/protocol/codec';
import { VeilError } from '../../errors.js';
import type { CommitteeInput, EncryptionInput, RoundEngine } from '../../rounds/engine.js';
import type { TaskInput } from '../../rounds/task-settings.js';
import type { TaskOverviewService } from '../../services/task-overview.js';
import { presentTask } from '../present.js';
import { calibrationOptionsSchema, errorSchema, taskCreateExample, taskCreateSchema, taskListSchema, taskSchema } from '../schemas.js';
import { described, errorResponses, idParams, secured } from './common.js';

export interface TaskRoutesOptions {
  engine: RoundEngine;
  tasks: TaskOverviewService;
  /** Largest task-creation body, bytes (initial weights travel in it). */
  createBodyLimitBytes: number;
}

type CreateBody = TaskInput & {
  model: { topology: Record<string, unknown>; weightSpecs: unknown; weightsBase64: string };
  start?: boolean;
  encryption?: EncryptionInput;
  committee?: CommitteeInput;
};

/** Task lifecycle: create, list (admin or audit token), get, start, pause. */
export const taskRoutes: FastifyPluginAsync<TaskRoutesOptions> = async (app, { engine, tasks, createBodyLimitBytes }) => {
  app.post<{ Body: CreateBody }>(
    '/v1/tasks',
    {
      config: { auth: 'admin' },
      bodyLimit: createBodyLimitBytes,
      schema: {
        ...secured,
        tags: ['tasks'],
        summary: 'Create a task',
        body: { ...taskCreateSchema, examples: [taskCreateExample] },
        response: { 201: described(taskSchema, 'The created task (started when start is true)'), ...errorResponses, 413: described(errorSchema, 'resource_exhausted: the body is larger than the limit') },
      },
    },
    async (request, reply) => {
      const { model, start, ...input } = request.body;
      // Strict base64 (RFC 4648 Sec. 4): Buffer.from would silently skip characters outside the alphabet.
      if (model.weightsBase64.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(model.weightsBase64)) {
        throw new VeilError('invalid_argument', 'model.weightsBase64 must be base64 (RFC 4648: A-Z a-z 0-9 + /, padded with = to a multiple of 4 characters)');
      }
      const bytes = Buffer.from(model.weightsBase64, 'base64');
      if (bytes.byteLength % 4 !== 0) throw new VeilError('invalid_argument', 'model.weightsBase64 must decode to float32 values');
      let task = await engine.createTask(input, { topology: model.topology, weightSpecs: model.weightSpecs, weights: bytesToFloat32(bytes) });
      request.auditDetails = { taskId: task.id };
      if (start === true) task = await engine.startTask(task.id);
      return reply.status(201).send(presentTask(await tasks.view(task)));
    },
  );

  app.get(
    '/v1/tasks',
    {
      config: { auth: 'audit' },
      schema: { ...secured, tags: ['tasks'], summary: 'List tasks (admin or audit token; read-only)', response: { 200: described(taskListSchema, 'Every task, oldest first'), ...errorResponses } },
    },
    async () => ({ tasks: (await tasks.list()).map(presentTask) }),
  );

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id',
    { config: { auth: 'admin' }, schema: { ...secured, tags: ['tasks'], summary: 'Get a task', params: idParams, response: { 200: described(taskSchema, 'The task'), ...errorResponses } } },
    async (request) => presentTask(await tasks.get(request.params.id)),
  );

  app.post<{ Params: { id: string }; Body: Record<string, unknown> }>(
    '/v1/tasks/:id/calibration',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['tasks'],
        summary:
          'Request federated int8 calibration (issue 16) for a task created without it: two calibration rounds run after its last training round (see calibration in task creation). On a task that ended with a model (COMPLETED, BUDGET_EXHAUSTED) the task runs again for the two rounds after its last one, on its final model, with the devices connected, then ends with the status it had. 409 when the task already calibrates, ended otherwise, its privacy budget has no room for both rounds (they are charged like training rounds), or a committee descriptor has no rounds left for them.',
        params: idParams,
        body: { ...calibrationOptionsSchema, examples: [{}, { method: 'percentile', percentile: 99.99 }] },
        response: { 200: described(taskSchema, 'The task with its calibration settings'), ...errorResponses },
      },
    },
    async (request) => {
      await tasks.getTask(request.params.id);
      const task = await engine.requestCalibration(request.params.id, request.body ?? {});
      return presentTask(await tasks.view(task));
    },
  );

  for (const action of ['start', 'pause'] as const) {
    app.post<{ Params: { id: string } }>(
      `/v1/tasks/:id/${action}`,
      {
        config: { auth: 'admin' },
        schema: {
          ...secured,
          tags: ['tasks'],
          summary: action === 'start' ? 'Start or resume a task' : 'Pause a task (the open round finishes; no new round opens)',
          params: idParams,
          response: { 200: described(taskSchema, 'The task after the change'), ...errorResponses },
        },
      },
      async (request) => {
        await tasks.getTask(request.params.id);
        const task = action === 'start' ? await engine.startTask(request.params.id) : await engine.pauseTask(request.params.id);
        return presentTask(await tasks.view(task));
      },
    );
  }
};
