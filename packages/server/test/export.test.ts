/**
 * ONNX export over the admin REST API (coordinator on port 0, PostgreSQL): the exported file runs
 * in onnxruntime-node and matches TF.js on real MNIST digits; int8 static/dynamic; refusals.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runExport } from '../../cli/src/export.js';
import { startTestCoordinator, toBase64, type TestCoordinator } from './helpers.js';

function digits(count: number): Float32Array {
  const require = createRequire(import.meta.url);
  const xs = new Float32Array(count * 784);
  for (let label = 0; label < 10; label++) {
    const { data } = JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${label}.json`), 'utf8')) as { data: number[] };
    for (let k = 0; k < count / 10; k++) xs.set(data.slice(k * 784, (k + 1) * 784), (k * 10 + label) * 784);
  }
  return xs;
}

function mlp(activation = 'relu') {
  const model = tf.sequential({
    name: 'export_mlp',
    layers: [
      tf.layers.dense({ name: 'hidden', inputShape: [784], units: 32, activation: activation as 'relu' }),
      tf.layers.dense({ name: 'output', units: 10, activation: 'softmax' }),
    ],
  });
  const weightSpecs = model.weights.map((v) => ({ name: v.originalName, shape: v.shape as number[], dtype: 'float32' }));
  const weights = new Float32Array(model.countParams());
  let offset = 0;
  for (const v of model.weights) {
    const data = v.read().dataSync() as Float32Array;
    weights.set(data, offset);
    offset += data.length;
  }
  return { model, topology: model.toJSON(null, false) as unknown as Record<string, unknown>, weightSpecs, weights };
}

function taskBody(m: { topology: Record<string, unknown>; weightSpecs: unknown; weights: Float32Array }) {
  return {
    name: 'export task',
    rounds: 1,
    clientsPerRound: 1,
    minClients: 1,
    minAvailableClients: 1,
    roundDeadlineMs: 60_000,
    training: { epochs: 1, batchSize: 8, learningRate: 0.1 },
    encryption: { mode: 'none' },
    model: { topology: m.topology, weightSpecs: m.weightSpecs, weightsBase64: toBase64(m.weights) },
  };
}

async function exportRequest(env: TestCoordinator, id: string, body: unknown, token?: string | null) {
  const response = await fetch(`${env.rest.baseUrl}/v1/tasks/${id}/model/export`, {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(token !== null && { authorization: `Bearer ${token ?? env.coordinator.adminToken}` }),
    },
    body: JSON.stringify(body),
  });
  const bytes = new Uint8Array(await response.arrayBuffer());
  return { status: response.status, headers: response.headers, bytes, json: () => JSON.parse(Buffer.from(bytes).toString('utf8')) };
}

describe('POST /v1/tasks/:id/model/export', () => {
  let env: TestCoordinator;
  let model: ReturnType<typeof mlp>;
  let taskId: string;
  const xs = digits(50);

  beforeAll(async () => {
    await tf.setBackend('cpu');
    env = await startTestCoordinator({ database: 'postgres' });
    model = mlp();
    const created = await env.rest.request('POST', '/v1/tasks', { body: taskBody(model) });
    expect(created.status).toBe(201);
    taskId = created.body.id;
  });
  afterAll(async () => {
    model?.model.dispose();
    await env?.[Symbol.asyncDispose]();
  });

  test('float32: the file runs in onnxruntime-node and matches TF.js within 1e-5 on real digits', async () => {
    const res = await exportRequest(env, taskId, { format: 'onnx', quantize: 'none' });
    expect(res.status).toBe(200);
    expect(res.headers.get('x-veil-export-quantization')).toBe('float32');
    expect(res.headers.get('x-veil-model-version')).toBe('0');
    const session = await ort.InferenceSession.create(res.bytes, { intraOpNumThreads: 1 });
    const out = (await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', xs, [50, 784]) }))[session.outputNames[0]!]!.data as Float32Array;
    await session.release();
    const reference = tf.tidy(() => (model.model.predict(tf.tensor(xs, [50, 784])) as tf.Tensor).dataSync() as Float32Array);
    let maxDiff = 0;
    for (let i = 0; i < reference.length; i++) maxDiff = Math.max(maxDiff, Math.abs(out[i]! - reference[i]!));
    expect(maxDiff).toBeLessThan(1e-5);
  });

  test('int8: dynamic without ranges, static with them; both load in onnxruntime-node', async () => {
    const dynamic = await exportRequest(env, taskId, { format: 'onnx', quantize: 'int8' });
    expect(dynamic.headers.get('x-veil-export-quantization')).toBe('int8-dynamic');
    const ranges = { ':input': { min: 0, max: 1 }, hidden: { min: 0, max: 4 } };
    const stat = await exportRequest(env, taskId, { format: 'onnx', quantize: 'int8', activationRanges: ranges });
    expect(stat.status).toBe(200);
    expect(stat.headers.get('x-veil-export-quantization')).toBe('int8-static');
    for (const bytes of [dynamic.bytes, stat.bytes]) {
      const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
      const out = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', xs, [50, 784]) });
      expect(out[session.outputNames[0]!]!.dims).toEqual([50, 10]);
      await session.release();
    }
  });

  test('veil export against the running coordinator writes the same file as the REST route', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'veil-export-cli-'));
    try {
      for (const quantize of ['none', 'float16', 'int8'] as const) {
        const out = join(dir, `${quantize}.onnx`);
        const result = await runExport({
          taskId,
          format: 'onnx',
          quantize,
          out,
          coordinatorHttp: env.rest.baseUrl,
          adminToken: env.coordinator.adminToken,
          dataDir: null,
          deviceKeyDir: null,
          version: null,
          calibrationFile: null,
        });
        const viaRest = await exportRequest(env, taskId, { format: 'onnx', quantize });
        expect({ quantization: result.quantization, encrypted: result.encrypted }).toEqual({ quantization: viaRest.headers.get('x-veil-export-quantization'), encrypted: false });
        expect(Buffer.compare(await readFile(out), Buffer.from(viaRest.bytes))).toBe(0);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('refusals: no token 401, bad options 400, missing calibration point 400, unknown version 404, unsupported layer 409', async () => {
    expect((await exportRequest(env, taskId, { format: 'onnx', quantize: 'none' }, null)).status).toBe(401);
    const bad = await exportRequest(env, taskId, { format: 'onnx', quantize: 'int4' });
    expect(bad.status).toBe(400);
    const missing = await exportRequest(env, taskId, { format: 'onnx', quantize: 'int8', activationRanges: { ':input': { min: 0, max: 1 } } });
    expect({ status: missing.status, body: missing.json() }).toEqual({ status: 400, body: { code: 'invalid_argument', message: expect.stringMatching(/calibration point "hidden"/) } });
    expect((await exportRequest(env, taskId, { format: 'onnx', quantize: 'none', version: 5 })).status).toBe(404);
    const elu = mlp('elu');
    try {
      const created = await env.rest.request('POST', '/v1/tasks', { body: taskBody(elu) });
      expect(created.status).toBe(201);
      const refused = await exportRequest(env, created.body.id, { format: 'onnx', quantize: 'none' });
      expect({ status: refused.status, body: refused.json() }).toEqual({
        status: 409,
        body: { code: 'failed_precondition', message: expect.stringMatching(/layer "hidden" \(Dense\) uses activation "elu"/) },
      });
    } finally {
      elu.model.dispose();
    }
  });
});
