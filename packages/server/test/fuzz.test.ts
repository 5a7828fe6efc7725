/**
 * Fuzz suite (issue 12, item 9): property-based inputs (fast-check) against a real coordinator
 * (REST and gRPC on loopback, PostgreSQL). REST: structured mutations of a valid task body,
 * random bodies on every mutating route, random query strings on every read route. gRPC: random
 * bytes and structured mutations of valid messages for every call. Each input must end in a
 * documented status (never HTTP 5xx, never gRPC INTERNAL or UNKNOWN), a refused input must
 * persist nothing (row counts and blob files unchanged), and the coordinator must still serve
 * good requests afterwards. Runs are bounded (about 30 s in all).
 */
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { federationServiceDefinition } from '@veil/protocol';
import { TINY_PARAMETERS, createTinyTask, joinDevice, pattern, startTestCoordinator, tinyTaskBody, type Device, type TestCoordinator } from './helpers.js';

const SERVICE = '/veil.v1.FederationService/';
/** gRPC statuses that would mean the server failed (or threw) rather than refused the input. */
const SERVER_FAULTS = new Set([grpc.status.INTERNAL, grpc.status.UNKNOWN, grpc.status.DATA_LOSS]);

interface Counts {
  tasks: number;
  clients: number;
  tokens: number;
  submitted: number;
  blobs: number;
}

describe('fuzz', () => {
  let env: TestCoordinator;
  let device: Device;
  let taskId: string;
  let raw: grpc.Client;

  const counts = async (): Promise<Counts> => {
    const [row] = await env.storage.sql<{ tasks: number; clients: number; tokens: number; submitted: number }>(
      `SELECT (SELECT count(*)::int FROM "Task") AS tasks, (SELECT count(*)::int FROM "Client") AS clients,
              (SELECT count(*)::int FROM "EnrolmentToken") AS tokens,
              (SELECT count(*)::int FROM "Participation" WHERE status = 'SUBMITTED') AS submitted`,
    );
    let blobs = 0;
    try {
      blobs = (await readdir(join(env.storage.dataDir, 'blobs'), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).length;
    } catch {
      blobs = 0;
    }
    return { ...row!, blobs };
  };

  const request = async (method: string, path: string, options: { body?: string | undefined; contentType?: string; token?: string | null } = {}) => {
    const headers: Record<string, string> = {};
    const token = options.token === undefined ? env.coordinator.adminToken : options.token;
    if (token !== null) headers['authorization'] = `Bearer ${token}`;
    if (options.contentType !== undefined && options.contentType !== '') headers['content-type'] = options.contentType;
    const response = await fetch(env.rest.baseUrl + path, { method, headers, ...(options.body !== undefined && { body: options.body }) });
    await response.arrayBuffer();
    return response.status;
  };

  beforeAll(async () => {
    // Failed authentications are part of the input space: no lockout, so later runs are not all 429s.
    env = await startTestCoordinator({ database: 'postgres', authThrottle: { freeFailures: 1_000_000 } });
    ({ id: taskId } = await createTinyTask(env.rest, { rounds: 1000, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, roundDeadlineMs: 600_000 }));
    device = await joinDevice(env.coordinator, taskId, 'fuzz-device');
    raw = new grpc.Client(env.coordinator.grpcAddress, grpc.credentials.createInsecure());
  });
  afterAll(async () => {
    raw?.close();
    device?.close();
    await env?.[Symbol.asyncDispose]();
  });

  // ------------------------------------------------------------------ REST

  const weird = fc.oneof(
    fc.jsonValue(),
    fc.string(),
    fc.string({ unit: 'binary' }),
    fc.integer(),
    fc.double(),
    fc.constantFrom(1e308, -1, 0, 2 ** 31, 2 ** 53 + 2, -0, null, true, '', '\u0000', 'a\u0000b', '\ud800', '9'.repeat(40)),
    fc.integer({ min: 60, max: 1200 }).map((depth) => JSON.parse('['.repeat(depth) + ']'.repeat(depth)) as unknown),
    fc.array(fc.jsonValue(), { maxLength: 50 }),
  );

  const TASK_PATHS = [
    'name', 'rounds', 'clientsPerRound', 'clientFraction', 'minClients', 'minAvailableClients', 'roundDeadlineMs',
    'maxExampleCount', 'maxDevices', 'training', 'training.epochs', 'training.batchSize', 'training.learningRate',
    'model', 'model.topology', 'model.topology.class_name', 'model.topology.config', 'model.weightSpecs', 'model.weightSpecs.0',
    'model.weightSpecs.0.name', 'model.weightSpecs.0.shape', 'model.weightSpecs.1.dtype', 'model.weightsBase64',
    'privacy', 'encryption', 'encryption.mode', 'strategy', 'start', 'updateBound', 'committee', 'unexpected',
  ];

  /** Sets (or deletes, for `undefined`) `path` in a clone of `body`. */
  const mutate = (body: Record<string, unknown>, path: string, value: unknown): Record<string, unknown> => {
    const copy = structuredClone(body);
    const keys = path.split('.');
    let target: Record<string, unknown> = copy;
    for (const key of keys.slice(0, -1)) {
      const next = target[key];
      if (next === null || typeof next !== 'object') target[key] = {};
      target = target[key] as Record<string, unknown>;
    }
    const last = keys.at(-1)!;
    if (value === undefined) delete target[last];
    else target[last] = value;
    return copy;
  };

  test('REST: structured mutations of a valid task body never give a 5xx, and a refused one stores nothing', async () => {
    const valid = tinyTaskBody(pattern(TINY_PARAMETERS, 1), { maxDevices: 10 });
    let before = await counts();
    await fc.assert(
      fc.asyncProperty(fc.array(fc.tuple(fc.constantFrom(...TASK_PATHS), fc.option(weird, { nil: undefined })), { minLength: 1, maxLength: 3 }), async (mutations) => {
        let body = valid;
        for (const [path, value] of mutations) body = mutate(body, path, value);
        const status = await request('POST', '/v1/tasks', { body: JSON.stringify(body), contentType: 'application/json' });
        expect(status).toBeLessThan(500);
        const after = await counts();
        if (status === 201) before = after;
        else {
          expect([400, 409, 413]).toContain(status);
          expect(after).toEqual(before);
        }
      }),
      { numRuns: 150 },
    );
  });

  test('REST: random bodies, content types and tokens on every mutating route never give a 5xx', async () => {
    const routes = [
      'POST /v1/tasks',
      `POST /v1/tasks/${taskId}/start`,
      `POST /v1/tasks/${taskId}/enrolment-tokens`,
      `POST /v1/tasks/${taskId}/enrolment-tokens/00000000-0000-4000-8000-000000000000/revoke`,
      `POST /v1/tasks/${taskId}/clients/00000000-0000-4000-8000-000000000000/revoke`,
      `POST /v1/tasks/${taskId}/model/export`,
      'POST /v1/tasks/not-a-uuid/start',
      'PUT /v1/tasks',
      'DELETE /v1/audit',
    ];
    let before = await counts();
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...routes),
        fc.oneof(weird.map((v) => JSON.stringify(v) ?? 'null'), fc.string(), fc.string({ unit: 'binary' }), fc.constant(undefined)),
        fc.constantFrom('application/json', 'text/plain', 'application/octet-stream', 'application/json; charset=latin1', ''),
        fc.constantFrom<string | null | undefined>(undefined, null, 'wrong-token-xxxxxxxxxxxx', '\u00ff'.repeat(20)),
        async (route, body, contentType, token) => {
          const [method, path] = route.split(' ') as [string, string];
          let status: number;
          try {
            status = await request(method, path, { body, contentType, token });
          } catch (error) {
            // fetch refuses some header values itself (not the coordinator's doing).
            if (token !== undefined && token !== null && /header/i.test(String(error))) return;
            throw error;
          }
          expect(status).toBeLessThan(500);
          const after = await counts();
          if (status >= 200 && status < 300) before = after;
          else expect(after).toEqual(before);
        },
      ),
      { numRuns: 150 },
    );
  });

  test('REST: random query strings on every read route never give a 5xx', async () => {
    const paths = [
      '/v1/tasks',
      `/v1/tasks/${taskId}`,
      `/v1/tasks/${taskId}/rounds`,
      `/v1/tasks/${taskId}/model`,
      `/v1/tasks/${taskId}/model/weights.bin`,
      `/v1/tasks/${taskId}/clients`,
      `/v1/tasks/${taskId}/enrolment-tokens`,
      `/v1/tasks/${taskId}/devices`,
      `/v1/tasks/${taskId}/privacy/ledger`,
      '/v1/audit',
      '/v1/health',
    ];
    const value = fc.oneof(
      fc.string(),
      fc.integer().map(String),
      fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map(String),
      fc.double().map(String),
      fc.constantFrom('1e308', '-0', 'NaN', 'Infinity', '2147483648', '99999999999999999999', '', '0x10', ' 1', '1 ', '[]', '{}'),
    );
    const names = fc.oneof(fc.constantFrom('offset', 'limit', 'version', 'taskId', 'format', 'since'), fc.string({ maxLength: 8 }));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...paths), fc.array(fc.tuple(names, value), { maxLength: 4 }), async (path, pairs) => {
        const query = new URLSearchParams(pairs).toString();
        const status = await request('GET', query === '' ? path : `${path}?${query}`);
        expect(status).toBeLessThan(500);
      }),
      { numRuns: 200 },
    );
  });

  // ------------------------------------------------------------------ gRPC

  const identity = (b: Buffer): Buffer => b;
  const deadline = (ms: number) => ({ deadline: Date.now() + ms });
  const credential = (): grpc.Metadata => {
    const m = new grpc.Metadata();
    m.set('authorization', `Bearer ${device.credential}`);
    return m;
  };

  /** Sends raw request bytes to a method; resolves with the final status code. */
  function call(method: string, messages: Buffer[], metadata: grpc.Metadata): Promise<grpc.status> {
    const path = SERVICE + method;
    return new Promise((resolve) => {
      if (method === 'SubmitUpdate') {
        const stream = raw.makeClientStreamRequest(path, identity, identity, metadata, deadline(5_000), (error) => resolve(error?.code ?? grpc.status.OK));
        stream.on('error', () => {});
        for (const m of messages) stream.write(m);
        stream.end();
      } else if (method === 'DownloadModel') {
        const stream = raw.makeServerStreamRequest(path, identity, identity, messages[0]!, metadata, deadline(5_000));
        stream.on('data', () => {});
        stream.on('error', (error: grpc.ServiceError) => resolve(error.code));
        stream.on('status', (s: grpc.StatusObject) => resolve(s.code));
      } else {
        raw.makeUnaryRequest(path, identity, identity, messages[0]!, metadata, deadline(method === 'WaitForAssignment' ? 1_500 : 5_000), (error) =>
          resolve(error?.code ?? grpc.status.OK),
        );
      }
    });
  }

  const METHODS = ['Join', 'GetTask', 'WaitForAssignment', 'DownloadModel', 'SubmitUpdate', 'ReportEvaluation'] as const;
  const definition = federationServiceDefinition() as unknown as Record<string, { requestSerialize(value: unknown): Buffer }>;

  /** A valid message of each call's request type (structured mutations start from these). */
  const validMessages = (): Record<(typeof METHODS)[number], unknown[]> => ({
    Join: [{ taskId, enrolmentSecret: env.coordinator.enrolmentSecret!, clientName: 'fuzzed' }],
    GetTask: [{}],
    WaitForAssignment: [{ waitMs: 1_000 }],
    DownloadModel: [{ modelVersion: 0, latest: false }],
    SubmitUpdate: [
      { header: { roundNumber: 1, modelVersion: 0, exampleCount: 5, encoding: 'UPDATE_ENCODING_FLOAT32_LE', payloadSizeBytes: 60, payloadSha256: Buffer.alloc(32, 1) } },
      { chunk: Buffer.alloc(60, 2) },
    ],
    ReportEvaluation: [{ roundNumber: 1, modelVersion: 0, exampleCount: 10, metrics: { accuracy: 0.5 } }],
  });

  const byteMutation = fc.oneof(
    fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
    fc.record({ kind: fc.constant('truncate' as const), at: fc.nat() }),
    fc.record({ kind: fc.constant('append' as const), bytes: fc.uint8Array({ maxLength: 64 }) }),
    fc.record({ kind: fc.constant('replace' as const), bytes: fc.uint8Array({ maxLength: 256 }) }),
  );
  const applyBytes = (bytes: Buffer, m: { kind: string; at?: number; value?: number; bytes?: Uint8Array }): Buffer => {
    const copy = Buffer.from(bytes);
    switch (m.kind) {
      case 'flip':
        if (copy.length > 0) copy[m.at! % copy.length] = m.value!;
        return copy;
      case 'truncate':
        return copy.subarray(0, copy.length === 0 ? 0 : m.at! % copy.length);
      case 'append':
        return Buffer.concat([copy, Buffer.from(m.bytes!)]);
      default:
        return Buffer.from(m.bytes!);
    }
  };

  /** Field-level mutations: every field of the request types set to arbitrary values of its wire type. */
  const fieldMessages: Record<(typeof METHODS)[number], fc.Arbitrary<unknown[]>> = {
    Join: fc.record({ taskId: fc.oneof(fc.string(), fc.uuid()), enrolmentSecret: fc.string({ maxLength: 300 }), clientName: fc.string({ maxLength: 200 }) }).map((m) => [m]),
    GetTask: fc.constant([{}]),
    WaitForAssignment: fc.record({ waitMs: fc.integer({ min: 0, max: 2 ** 32 - 1 }) }).map((m) => [m]),
    DownloadModel: fc.record({ modelVersion: fc.integer({ min: 0, max: 2 ** 32 - 1 }), latest: fc.boolean() }).map((m) => [m]),
    SubmitUpdate: fc
      .tuple(
        fc.record({
          roundNumber: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          modelVersion: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          exampleCount: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
          encoding: fc.constantFrom('UPDATE_ENCODING_UNSPECIFIED', 'UPDATE_ENCODING_FLOAT32_LE', 'UPDATE_ENCODING_BFV_V1'),
          payloadSizeBytes: fc.oneof(fc.integer({ min: 0, max: 200 }), fc.constant(Number.MAX_SAFE_INTEGER)),
          payloadSha256: fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b)),
        }),
        fc.array(fc.uint8Array({ maxLength: 128 }).map((b) => ({ chunk: Buffer.from(b) })), { maxLength: 3 }),
        fc.boolean(),
      )
      .map(([header, chunks, headerFirst]) => (headerFirst ? [{ header }, ...chunks] : [...chunks, { header }])),
    ReportEvaluation: fc
      .record({
        roundNumber: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        modelVersion: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        exampleCount: fc.integer({ min: 0, max: 2 ** 32 - 1 }),
        metrics: fc.dictionary(fc.string({ maxLength: 70 }), fc.double(), { maxKeys: 40 }),
      })
      .map((m) => [m]),
  };

  const checkGrpc = async (method: string, messages: Buffer[], withCredential: boolean, before: { value: Counts }) => {
    const code = await call(method, messages, withCredential ? credential() : new grpc.Metadata());
    expect(SERVER_FAULTS.has(code), `${method} answered ${grpc.status[code]}`).toBe(false);
    const after = await counts();
    if (code === grpc.status.OK) before.value = after;
    else expect({ method, counts: after }).toEqual({ method, counts: before.value });
  };

  test('gRPC: random bytes to every call never give INTERNAL/UNKNOWN, and store nothing', async () => {
    const before = { value: await counts() };
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...METHODS),
        fc.array(fc.uint8Array({ maxLength: 200 }).map((b) => Buffer.from(b)), { minLength: 1, maxLength: 3 }),
        fc.boolean(),
        async (method, messages, withCredential) => checkGrpc(method, messages, withCredential, before),
      ),
      { numRuns: 150 },
    );
  });

  test('gRPC: byte-level and field-level mutations of valid messages never give INTERNAL/UNKNOWN; refused ones store nothing', async () => {
    const before = { value: await counts() };
    const valid = validMessages();
    const encode = (method: string, messages: unknown[]) => messages.map((m) => definition[method]!.requestSerialize(m));
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(...METHODS), fc.array(byteMutation, { minLength: 1, maxLength: 3 }), async (method, mutations) => {
        const messages = encode(method, valid[method]);
        const index = mutations.length % messages.length;
        for (const m of mutations) messages[index] = applyBytes(messages[index]!, m);
        await checkGrpc(method, messages, true, before);
      }),
      { numRuns: 120 },
    );
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...METHODS).chain((method) => fc.tuple(fc.constant(method), fieldMessages[method])),
        async ([method, messages]) => checkGrpc(method, encode(method, messages), true, before),
      ),
      { numRuns: 150 },
    );
  });

  test('afterwards the coordinator is alive: REST answers, a device is served, a task can be created', async () => {
    expect(await request('GET', '/v1/health', { token: null })).toBe(200);
    expect(await request('GET', '/v1/ready', { token: null })).toBe(200);
    expect((await device.transport.getTask(device.credential)).taskId).toBe(taskId);
    const { id } = await createTinyTask(env.rest, { clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    using fresh = await joinDevice(env.coordinator, id, 'after-fuzz');
    const assignment = await fresh.nextAssignment();
    expect((await fresh.submit(assignment, pattern(TINY_PARAMETERS, 9).map((x) => x * 0.01), 5)).acceptedCount).toBe(1);
  });
});
