/**
 * The admin REST API over real HTTP (coordinator on port 0, PostgreSQL):
 * authentication, the task lifecycle, validation messages, 404s, health and
 * the OpenAPI document.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import {
  TINY_PARAMETERS,
  TINY_WEIGHT_SPECS,
  createTinyTask,
  listRounds,
  pattern,
  tinyTaskBody,
  toBase64,
  startTestCoordinator,
  type TestCoordinator,
} from './helpers.js';

describe('REST API', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({ database: 'postgres' });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('every /v1/tasks call needs the admin token: 401 without it, 403 with a wrong one', async () => {
    const { rest } = env;
    const { id } = await createTinyTask(rest, { start: false });
    const calls: Array<[string, string, unknown?]> = [
      ['GET', '/v1/tasks'],
      ['POST', '/v1/tasks', tinyTaskBody(pattern(TINY_PARAMETERS, 1))],
      ['GET', `/v1/tasks/${id}`],
      ['POST', `/v1/tasks/${id}/start`],
      ['POST', `/v1/tasks/${id}/pause`],
      ['GET', `/v1/tasks/${id}/rounds`],
      ['GET', `/v1/tasks/${id}/model`],
      ['GET', `/v1/tasks/${id}/model/weights.bin`],
    ];
    for (const [method, path, body] of calls) {
      const none = await rest.request(method, path, { body, token: null });
      expect({ method, path, status: none.status, code: none.body?.code }).toEqual({ method, path, status: 401, code: 'unauthenticated' });
      const wrong = await rest.request(method, path, { body, token: 'x'.repeat(32) });
      expect({ method, path, status: wrong.status, code: wrong.body?.code }).toEqual({ method, path, status: 403, code: 'permission_denied' });
    }
    const basic = await fetch(`${rest.baseUrl}/v1/tasks`, { headers: { authorization: `Basic ${Buffer.from('admin:' + env.coordinator.adminToken).toString('base64')}` } });
    expect(basic.status).toBe(401);
    // Nothing was created or started by the refused calls.
    const tasks = (await rest.request('GET', '/v1/tasks')).body.tasks;
    expect(tasks.filter((t: { id: string }) => t.id === id)).toEqual([expect.objectContaining({ status: 'DRAFT' })]);
  });

  test('create, list, get, start, pause and resume a task', async () => {
    const { rest } = env;
    const base = pattern(TINY_PARAMETERS, 1);
    const created = await rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(base, { name: '  digits  ', clientsPerRound: 4, minClients: 2, minAvailableClients: undefined }),
    });
    expect(created.status).toBe(201);
    const task = created.body;
    expect(task).toMatchObject({
      name: 'digits',
      status: 'DRAFT',
      statusReason: null,
      parameterCount: TINY_PARAMETERS,
      currentModelVersion: 0,
      settings: {
        rounds: 3,
        selection: { kind: 'count', count: 4 },
        minClients: 2,
        minAvailableClients: 4,
        roundDeadlineMs: 60_000,
        maxExampleCount: 1_000_000,
        training: { epochs: 1, batchSize: 8, learningRate: 0.1 },
        updateEncoding: 'float32-le',
      },
    });
    expect(Date.parse(task.createdAt)).not.toBeNaN();

    const list = await rest.request('GET', '/v1/tasks');
    expect(list.status).toBe(200);
    expect(list.body.tasks).toContainEqual(task);
    expect((await rest.request('GET', `/v1/tasks/${task.id}`)).body).toEqual(task);
    expect((await listRounds(rest, task.id))).toEqual([]);

    const started = await rest.request('POST', `/v1/tasks/${task.id}/start`);
    expect(started).toMatchObject({ status: 200, body: { id: task.id, status: 'RUNNING' } });
    // A running task opens its first round and waits for devices.
    const rounds = await listRounds(rest, task.id);
    expect(rounds).toEqual([
      expect.objectContaining({ number: 1, state: 'SELECTING', baseModelVersion: 0, selected: 0, received: 0, minClients: 2, deadlineAt: null, summary: null }),
    ]);
    expect(rounds[0].events).toEqual([expect.objectContaining({ from: null, to: 'SELECTING' })]);
    const again = await rest.request('POST', `/v1/tasks/${task.id}/start`);
    expect(again).toMatchObject({ status: 409, body: { code: 'failed_precondition', message: expect.stringContaining('RUNNING') } });

    expect(await rest.request('POST', `/v1/tasks/${task.id}/pause`)).toMatchObject({ status: 200, body: { status: 'PAUSED' } });
    expect((await rest.request('POST', `/v1/tasks/${task.id}/pause`)).status).toBe(409);
    expect((await rest.request('GET', `/v1/tasks/${task.id}`)).body.status).toBe('PAUSED');
    expect(await rest.request('POST', `/v1/tasks/${task.id}/start`)).toMatchObject({ status: 200, body: { status: 'RUNNING' } });
    // Resuming does not open a second round while the first is still selecting.
    expect((await listRounds(rest, task.id)).map((r) => [r.number, r.state])).toEqual([[1, 'SELECTING']]);

    const startNow = await rest.request('POST', '/v1/tasks', { body: tinyTaskBody(base, { start: true }) });
    expect(startNow).toMatchObject({ status: 201, body: { status: 'RUNNING' } });

    const model = await rest.request('GET', `/v1/tasks/${task.id}/model`);
    expect(model.status).toBe(200);
    expect(model.body.weightsManifest).toEqual([{ paths: ['model/weights.bin?version=0'], weights: TINY_WEIGHT_SPECS }]);
    const bin = await rest.bytes(`/v1/tasks/${task.id}/model/weights.bin?version=0`);
    expect(bin.status).toBe(200);
    expect(bin.headers.get('content-type')).toBe('application/octet-stream');
    expect(bin.bytes.toString('base64')).toBe(toBase64(base));
  });

  test('invalid task bodies are refused with 400 and a message saying what is wrong', async () => {
    const { rest } = env;
    const base = pattern(TINY_PARAMETERS, 1);
    const nanWeights = base.slice();
    nanWeights[4] = Number.NaN;
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['minClients above clientsPerRound', tinyTaskBody(base, { clientsPerRound: 2, minClients: 3, minAvailableClients: 3 }), /minClients cannot exceed clientsPerRound/],
      ['minAvailableClients below minClients', tinyTaskBody(base, { minAvailableClients: 2 }), /minAvailableClients cannot be below minClients/],
      ['both selection modes', tinyTaskBody(base, { clientFraction: 0.5 }), /exactly one of clientsPerRound and clientFraction/],
      ['neither selection mode', tinyTaskBody(base, { clientsPerRound: undefined, minClients: 1, minAvailableClients: 1 }), /exactly one of clientsPerRound and clientFraction/],
      ['weights shorter than the specs', tinyTaskBody(base.subarray(1)), /14 values but weightSpecs describe 15/],
      ['weights not float32 (length not a multiple of 4)', tinyTaskBody(base, { model: { ...(tinyTaskBody(base)['model'] as object), weightsBase64: Buffer.alloc(59).toString('base64') } }), /float32/],
      ['NaN in the initial weights', tinyTaskBody(nanWeights), /non-finite value at index 4/],
      ['non-float32 dtype', tinyTaskBody(base, { model: { ...(tinyTaskBody(base)['model'] as object), weightSpecs: [{ name: 'w', shape: [15], dtype: 'int32' }] } }), /dtype|allowed values/],
      ['empty weightSpecs', tinyTaskBody(base, { model: { ...(tinyTaskBody(base)['model'] as object), weightSpecs: [] } }), /weightSpecs/],
      ['missing name', tinyTaskBody(base, { name: undefined }), /name/],
      ['zero rounds', tinyTaskBody(base, { rounds: 0 }), /rounds/],
      ['deadline below 100 ms', tinyTaskBody(base, { roundDeadlineMs: 10 }), /roundDeadlineMs/],
      ['non-positive learning rate', tinyTaskBody(base, { training: { epochs: 1, batchSize: 8, learningRate: 0 } }), /learningRate/],
      ['unknown field', tinyTaskBody(base, { colour: 'blue' }), /additional properties|colour/],
    ];
    const before = (await rest.request('GET', '/v1/tasks')).body.tasks.length;
    for (const [what, body, message] of cases) {
      const response = await rest.request('POST', '/v1/tasks', { body: JSON.parse(JSON.stringify(body)) });
      expect({ what, status: response.status, code: response.body?.code }).toEqual({ what, status: 400, code: 'invalid_argument' });
      expect({ what, message: response.body.message }).toEqual({ what, message: expect.stringMatching(message) });
    }
    const malformed = await fetch(`${rest.baseUrl}/v1/tasks`, {
      method: 'POST',
      headers: { authorization: `Bearer ${env.coordinator.adminToken}`, 'content-type': 'application/json' },
      body: '{"name": ',
    });
    expect(malformed.status).toBe(400);
    expect((await rest.request('GET', '/v1/tasks')).body.tasks).toHaveLength(before);
  });

  test('unknown tasks and model versions are 404, malformed ids 400', async () => {
    const { rest } = env;
    const unknown = randomUUID();
    for (const [method, path] of [
      ['GET', `/v1/tasks/${unknown}`],
      ['POST', `/v1/tasks/${unknown}/start`],
      ['POST', `/v1/tasks/${unknown}/pause`],
      ['GET', `/v1/tasks/${unknown}/rounds`],
      ['GET', `/v1/tasks/${unknown}/model`],
      ['GET', `/v1/tasks/${unknown}/model/weights.bin`],
    ] as const) {
      const response = await rest.request(method, path);
      expect({ method, path, status: response.status, code: response.body?.code }).toEqual({ method, path, status: 404, code: 'not_found' });
    }
    const { id } = await createTinyTask(rest, { start: false });
    expect((await rest.request('GET', `/v1/tasks/${id}/model?version=7`)).status).toBe(404);
    expect((await rest.bytes(`/v1/tasks/${id}/model/weights.bin?version=7`)).status).toBe(404);
    expect((await rest.request('GET', '/v1/tasks/not-a-uuid')).status).toBe(400);
    expect((await rest.request('GET', `/v1/tasks/${id}/rounds?limit=0`)).status).toBe(400);
    expect((await rest.request('GET', '/v1/nothing-here')).status).toBe(404);
  });

  test('health, readiness and the OpenAPI document need no token', async () => {
    const { rest } = env;
    expect(await rest.request('GET', '/v1/health', { token: null })).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await rest.request('GET', '/v1/ready', { token: null })).toMatchObject({ status: 200, body: { status: 'ready' } });
    const docs = await rest.request('GET', '/docs/json', { token: null });
    expect(docs.status).toBe(200);
    expect(docs.body.openapi).toMatch(/^3\./);
    expect(Object.keys(docs.body.paths).sort()).toEqual([
      '/v1/audit',
      '/v1/health',
      '/v1/ready',
      '/v1/session',
      '/v1/tasks',
      '/v1/tasks/{id}',
      '/v1/tasks/{id}/calibration',
      '/v1/tasks/{id}/clients',
      '/v1/tasks/{id}/clients/{clientId}/revoke',
      '/v1/tasks/{id}/committee/audit',
      '/v1/tasks/{id}/devices',
      '/v1/tasks/{id}/enrolment-tokens',
      '/v1/tasks/{id}/enrolment-tokens/{tokenId}/revoke',
      '/v1/tasks/{id}/evaluations',
      '/v1/tasks/{id}/events',
      '/v1/tasks/{id}/model',
      '/v1/tasks/{id}/model/export',
      '/v1/tasks/{id}/model/weights.bin',
      '/v1/tasks/{id}/pause',
      '/v1/tasks/{id}/privacy',
      '/v1/tasks/{id}/privacy/checkpoint',
      '/v1/tasks/{id}/privacy/ledger',
      '/v1/tasks/{id}/privacy/verify',
      '/v1/tasks/{id}/rounds',
      '/v1/tasks/{id}/start',
    ]);
    expect(docs.body.paths['/v1/tasks'].post.security).toEqual([{ bearer: [] }]);
    // Every route documents its responses (no generic "Default Response"), and task creation has an example body.
    const undocumented = Object.entries(docs.body.paths as Record<string, Record<string, { responses: Record<string, { description: string }> }>>).flatMap(([path, methods]) =>
      Object.entries(methods).flatMap(([method, op]) => Object.entries(op.responses).filter(([, r]) => r.description === 'Default Response').map(([code]) => `${method} ${path} ${code}`)),
    );
    expect(undocumented).toEqual([]);
    expect(docs.body.paths['/v1/tasks'].post.requestBody.content['application/json'].example).toMatchObject({ name: 'digits', privacy: { epsilonCap: 8 } });
    expect(docs.body.paths['/v1/tasks/{id}/model/export'].post.requestBody.content['application/json'].example).toEqual({ format: 'onnx', quantize: 'int8' });
    expect(docs.body.components.securitySchemes.bearer).toMatchObject({ type: 'http', scheme: 'bearer' });
  });
});
