/**
 * Edge inputs (issue 12, item 8) over real HTTP and gRPC with PostgreSQL: each is a 4xx /
 * INVALID_ARGUMENT with nothing stored, where they were 500/INTERNAL or silently accepted before.
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GRPC_CHANNEL_OPTIONS, createFederationServiceClient } from '@veil/protocol';
import {
  TINY_PARAMETERS,
  TINY_TOPOLOGY,
  TINY_WEIGHT_SPECS,
  createTinyTask,
  grpcStatusOf,
  joinDevice,
  listRounds,
  pattern,
  startTestCoordinator,
  tinyTaskBody,
  type TestCoordinator,
} from './helpers.js';

async function blobFiles(dataDir: string): Promise<string[]> {
  try {
    return (await readdir(join(dataDir, 'blobs'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
  } catch {
    return [];
  }
}

const deep = (depth: number): Record<string, unknown> => {
  let v: Record<string, unknown> = { leaf: true };
  for (let i = 0; i < depth; i++) v = { nested: v };
  return v;
};

describe('edge inputs', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({ database: 'postgres' });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('task bodies: NUL, deep nesting, invalid base64, duplicate tensor names are 400 with nothing stored (no task, no blob)', async () => {
    const { rest, storage } = env;
    const base = pattern(TINY_PARAMETERS, 1);
    const tasksBefore = (await rest.request('GET', '/v1/tasks')).body.tasks.length;
    const blobsBefore = await blobFiles(storage.dataDir);
    const good = tinyTaskBody(base) as { model: { weightsBase64: string } };
    const cases: Array<[string, Record<string, unknown>, RegExp]> = [
      ['NUL in the name', tinyTaskBody(base, { name: 'digits\u0000' }), /NUL/],
      ['NUL deep in the topology', tinyTaskBody(base, { model: { ...good.model, topology: { ...TINY_TOPOLOGY, note: 'a\u0000b' } } }), /NUL/],
      ['NUL in a tensor name', tinyTaskBody(base, { model: { ...good.model, weightSpecs: [{ ...TINY_WEIGHT_SPECS[0]!, name: 'k\u0000' }, TINY_WEIGHT_SPECS[1]] } }), /NUL/],
      ['topology nested 1,000 levels', tinyTaskBody(base, { model: { ...good.model, topology: deep(1_000) } }), /nested deeper/],
      ['a character outside base64', tinyTaskBody(base, { model: { ...good.model, weightsBase64: '*' + good.model.weightsBase64.slice(1) } }), /base64/],
      ['padding inside base64', tinyTaskBody(base, { model: { ...good.model, weightsBase64: good.model.weightsBase64.slice(0, 4) + '=' + good.model.weightsBase64.slice(5) } }), /base64/],
      ['whitespace inside base64', tinyTaskBody(base, { model: { ...good.model, weightsBase64: good.model.weightsBase64.slice(0, 8) + '\n' + good.model.weightsBase64.slice(8, -1) } }), /base64/],
      ['the same tensor name twice', tinyTaskBody(base, { model: { ...good.model, weightSpecs: [TINY_WEIGHT_SPECS[0], { ...TINY_WEIGHT_SPECS[1]!, name: TINY_WEIGHT_SPECS[0]!.name }] } }), /used twice/],
    ];
    for (const [what, body, message] of cases) {
      const response = await rest.request('POST', '/v1/tasks', { body });
      expect({ what, status: response.status, message: response.body?.message }).toEqual({ what, status: 400, message: expect.stringMatching(message) });
    }
    expect((await rest.request('GET', '/v1/tasks')).body.tasks).toHaveLength(tasksBefore);
    expect(await blobFiles(storage.dataDir)).toEqual(blobsBefore);
    // The same body without the flaw is accepted (the cases above differ only by it).
    expect((await rest.request('POST', '/v1/tasks', { body: good })).status).toBe(201);
  });

  test('huge version and offset query values are 400, not 500', async () => {
    const { rest } = env;
    const { id } = await createTinyTask(rest, { start: false });
    for (const path of [
      `/v1/tasks/${id}/model?version=99999999999`,
      `/v1/tasks/${id}/model/weights.bin?version=1e30`,
      `/v1/tasks/${id}/rounds?offset=99999999999999999999`,
      `/v1/tasks/${id}/rounds?offset=2147483648`,
      `/v1/tasks/${id}/clients?offset=1e300`,
      `/v1/audit?offset=99999999999`,
    ]) {
      const response = await rest.request('GET', path);
      expect({ path, status: response.status }).toEqual({ path, status: 400 });
    }
    expect((await rest.request('GET', `/v1/tasks/${id}/rounds?offset=2147483647`)).status).toBe(200);
  });

  test('Join: a malformed task id or a control character in the name is INVALID_ARGUMENT, nothing stored', async () => {
    const { coordinator, storage } = env;
    const client = createFederationServiceClient(coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
    const join = (taskId: string, clientName = '') =>
      new Promise<grpc.status>((resolve) =>
        client.Join({ taskId, enrolmentSecret: coordinator.enrolmentSecret!, clientName }, { deadline: Date.now() + 20_000 }, (error) => resolve(error?.code ?? grpc.status.OK)),
      );
    const { id } = await createTinyTask(env.rest);
    const before = await storage.sql('SELECT count(*)::int AS n FROM "Client"');
    try {
      for (const taskId of ['------------------------------------', 'zzzzzzzz-zzzz-zzzz-zzzz-zzzzzzzzzzzz', `${id}\u0000`, id.replace(/-/g, ''), '']) {
        expect({ taskId, code: await join(taskId) }).toEqual({ taskId, code: grpc.status.INVALID_ARGUMENT });
      }
      expect(await join(id, 'name\u0000')).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await join(id, 'line\nbreak')).toBe(grpc.status.INVALID_ARGUMENT);
      expect(await join(id.toUpperCase(), 'upper-case id')).toBe(grpc.status.OK);
    } finally {
      client.close();
    }
    const after = await storage.sql('SELECT count(*)::int AS n FROM "Client"');
    expect(after[0]!['n']).toBe((before[0]!['n'] as number) + 1);
  });

  test('a plaintext update replayed by its device in a later round is refused; a retry in its own round stays "already accepted"', async () => {
    const { rest, coordinator } = env;
    const { id } = await createTinyTask(rest, { rounds: 3, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
    using a = await joinDevice(coordinator, id, 'a');
    using b = await joinDevice(coordinator, id, 'b');
    const update = (seed: number) => pattern(TINY_PARAMETERS, seed).map((x) => x * 0.01);
    const [a1, b1] = await Promise.all([a.nextAssignment(), b.nextAssignment()]);
    expect((await a.submit(a1!, update(5), 5)).acceptedCount).toBe(1);
    // The same bytes again from the same device in the same round: a retry, ALREADY_EXISTS as before.
    expect((await grpcStatusOf(a.submit(a1!, update(5), 5))).code).toBe(grpc.status.ALREADY_EXISTS);
    expect((await b.submit(b1!, update(6), 5)).acceptedCount).toBe(2);
    const [a2, b2] = await Promise.all([a.nextAssignment(), b.nextAssignment()]);
    expect(a2!.roundNumber).toBe(2);
    // a's round-1 update again in round 2: refused; b sending a's round-1 bytes is b's own (equal) update.
    expect(await grpcStatusOf(a.submit(a2!, update(5), 5))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/replay/) });
    expect((await a.submit(a2!, update(7), 5)).acceptedCount).toBe(1);
    expect((await b.submit(b2!, update(5), 5)).acceptedCount).toBe(2);
    const rounds = await listRounds(rest, id);
    expect(rounds.filter((r: { state: string }) => r.state === 'CLOSED').map((r: { received: number }) => r.received)).toEqual([2, 2]);
  });
});
