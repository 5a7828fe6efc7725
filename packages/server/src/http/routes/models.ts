import type { FastifyPluginAsync } from 'fastify';
import type { RoundEngine } from '../../rounds/engine.js';
import type { FederationStore } from '../../rounds/ports.js';
import { loadModelDocument } from '../../services/model-document.js';
import type { TaskOverviewService } from '../../services/task-overview.js';
import { errorResponses, idParams, secured, MAX_INT32 } from './common.js';

export interface ModelRoutesOptions {
  engine: RoundEngine;
  store: FederationStore;
  tasks: TaskOverviewService;
}

const versionQuery = { type: 'object', properties: { version: { type: 'integer', minimum: 0, maximum: MAX_INT32 } } } as const;

/** Global model versions: model.json (TF.js) and the weights blob. */
export const modelRoutes: FastifyPluginAsync<ModelRoutesOptions> = async (app, { engine, store, tasks }) => {
  app.get<{ Params: { id: string }; Querystring: { version?: number } }>(
    '/v1/tasks/:id/model',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary: 'Current (or a given) global model as a TensorFlow.js model.json (load with tf.loadLayersModel)',
        params: idParams,
        querystring: versionQuery,
        response: {
          200: {
            type: 'object',
            description: 'TF.js model.json; `veil` holds the version, digest and (encrypted tasks) the chain of versions a key holder applies, with distributedDp { scale, modulus, minNoiseClients } when the sums are distributed-DP residues (decoded with version v\'s rotation seed)',
            additionalProperties: true,
            examples: [
              {
                format: 'layers-model',
                generatedBy: 'veil',
                convertedBy: null,
                modelTopology: { class_name: 'Sequential', config: { layers: [] } },
                weightsManifest: [{ paths: ['model/weights.bin?version=3'], weights: [{ name: 'dense/kernel', shape: [784, 10], dtype: 'float32' }] }],
                veil: { taskId: '00000000-0000-4000-8000-000000000000', version: 3, sha256: 'ab…', sizeBytes: 31360, encoding: 'float32-le', encrypted: false },
              },
            ],
          },
          ...errorResponses,
        },
      },
    },
    async (request) => {
      const task = await tasks.getTask(request.params.id);
      return loadModelDocument(store, task, request.query.version ?? task.currentModelVersion);
    },
  );

  app.get<{ Params: { id: string }; Querystring: { version?: number } }>(
    '/v1/tasks/:id/model/weights.bin',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary: 'Weights of a global model version (little-endian float32, weight-spec order; encrypted tasks: the encrypted sum, x-veil-model-encoding bfv-sum-v1)',
        params: idParams,
        querystring: versionQuery,
        response: {
          200: { description: 'The blob', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      // `?version=0` is the initial model (as in model.json's weightsManifest), not "current".
      const version = request.query.version ?? (await tasks.getTask(request.params.id)).currentModelVersion;
      const model = await engine.readModelVersion(request.params.id, version);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('etag', `"${model.sha256}"`)
        .header('x-veil-model-version', String(model.version))
        .header('x-veil-model-encoding', model.encoding)
        .send(model.bytes);
    },
  );
};
