import type { FastifyPluginAsync } from 'fastify';
import type { CalibrationStatisticsService } from '../../services/calibration-statistics.js';
import type { ModelExportRequest, ModelExportService } from '../../services/model-export.js';
import { described, errorResponses, idParams, secured } from './common.js';

export interface ExportRoutesOptions {
  exporter: ModelExportService;
  calibration: CalibrationStatisticsService;
}

const rangeSchema = {
  type: 'object',
  required: ['min', 'max'],
  additionalProperties: false,
  properties: { min: { type: 'number' }, max: { type: 'number' } },
} as const;

/**
 * `POST /v1/tasks/:id/model/export` (admin token): the task's global model as
 * an ONNX file (`application/octet-stream`), float32, float16 or int8.
 */
export const exportRoutes: FastifyPluginAsync<ExportRoutesOptions> = async (app, options) => {
  app.post<{ Params: { id: string }; Body: ModelExportRequest }>(
    '/v1/tasks/:id/model/export',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary:
          "The global model as ONNX (float32, float16, or int8: static with the request's activation ranges or else the task's own calibration rounds' (x-veil-calibration: request | federated), else dynamic). When the DP noise swamped the task's calibration statistics (its file's noiseSwamped) the model is written int8-dynamic instead, x-veil-calibration-fallback: noise-swamped; points=P1,P2 (URI-encoded names; else none); forceStatic: true writes int8-static regardless",
        params: idParams,
        body: {
          type: 'object',
          required: ['format', 'quantize'],
          additionalProperties: false,
          properties: {
            format: { type: 'string', enum: ['onnx'] },
            quantize: { type: 'string', enum: ['none', 'float16', 'int8'] },
            version: { type: 'integer', minimum: 0, maximum: 2_147_483_647 },
            activationRanges: { type: 'object', maxProperties: 1024, additionalProperties: rangeSchema },
            forceStatic: { type: 'boolean' },
          },
          examples: [{ format: 'onnx', quantize: 'int8' }],
        },
        response: {
          200: { description: 'The ONNX model file', content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const out = await options.exporter.exportModel(request.params.id, request.body);
      return reply
        .header('content-type', 'application/octet-stream')
        .header('content-disposition', `attachment; filename="model-v${out.version}.onnx"`)
        .header('x-veil-model-version', String(out.version))
        .header('x-veil-export-quantization', out.quantization)
        .header('x-veil-calibration', out.calibration ?? 'none')
        // Point names are URI-encoded: a header carries ASCII only.
        .header('x-veil-calibration-fallback', out.fallback === undefined ? 'none' : `${out.fallback.reason}; points=${out.fallback.points.map(encodeURIComponent).join(',')}`)
        .send(Buffer.from(out.bytes.buffer, out.bytes.byteOffset, out.bytes.byteLength));
    },
  );

  app.get<{ Params: { id: string }; Querystring: { version?: number } }>(
    '/v1/tasks/:id/calibration',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['models'],
        summary:
          "The task's federated calibration statistics (the file veil calibration writes and veil export --calibration reads): the activation ranges chosen for the calibrated model version and the aggregated histograms",
        params: idParams,
        querystring: { type: 'object', additionalProperties: false, properties: { version: { type: 'integer', minimum: 0, maximum: 2_147_483_647 } } },
        response: {
          200: described(
            { type: 'object', additionalProperties: true },
            'The statistics file (format veil-calibration-v1): modelVersion, activationRanges, rounds, histogram { plan, statistics }. A shared-key task\'s (format veil-calibration-bfv-v1): the encrypted sums of both rounds (range { plan, sum, length, scale }, histogram { sum, length, scale }, base64 bfv-sum-v1; divide the decrypted means by scale, C/sqrt(m) under DP, else 1) with bins and tailFraction, and under distributed DP distributedDp { scale, modulus, dimension, parameterCount, minNoiseClients } (the sums are DDG residues, decoded with the rotation seed of version modelVersion + 1), under DP reportNoiseStddev (the noise one report carries per value; the range round\'s plan thresholds the mean\'s noise with it), which only a key holder opens (veil calibration --device-key)',
          ),
          ...errorResponses,
        },
      },
    },
    async (request) => options.calibration.get(request.params.id, request.query.version),
  );
};
