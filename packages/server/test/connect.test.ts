/**
 * The device protocol on the HTTP port (Connect, http/connect.ts) driven by the SDK's fetch
 * transport (the browser's), beside gRPC devices in the same rounds, on PostgreSQL: the same
 * handlers, auth and error codes as gRPC; resumable chunked uploads accepted once; abandoned
 * uploads expire.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { float32ToBytes } from '@veil/protocol/codec';
import { ClientError } from '../../client-sdk/src/errors.js';
import {
  TINY_PARAMETERS,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  joinConnectDevice,
  joinDevice,
  maxAbsDiff,
  pattern,
  sha256Hex,
  startTestCoordinator,
  waitForRounds,
  type TestCoordinator,
} from './helpers.js';

/** A Connect JSON reply's body: the response message, or the error's `code` and `message`. */
const json = async (r: Response): Promise<Record<string, unknown>> => (await r.json()) as Record<string, unknown>;
const post = (env: TestCoordinator, path: string, body: unknown, headers: Record<string, string> = {}) =>
  fetch(env.coordinator.httpUrl + path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

describe('device protocol over Connect (HTTP port)', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    // Uploads idle for 1.5 s expire (the gRPC port's idle timeout applies to both); at most 150 bytes
    // of uncommitted uploads are held (two updates of the tiny task, 60 bytes each, and not three).
    env = await startTestCoordinator({ database: 'postgres', config: { uploadIdleTimeoutMs: 1_500 }, uploadStoreBytes: 150 });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('Connect and gRPC devices in one round: FedAvg of all three; a chunked upload resumed after lost calls is accepted once', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1 });
    // 15 floats = 60 bytes in 16-byte chunks: 4 PutChunk calls. The 2nd reaches the coordinator but
    // its answer is lost; the 3rd fails before it is sent: the transport asks GetUpload each time.
    let putCalls = 0;
    const lossy: typeof fetch = async (input, init) => {
      const url = String(input);
      if (url.endsWith('/PutChunk')) {
        putCalls++;
        if (putCalls === 2) {
          await fetch(input, init);
          throw new TypeError('network error (answer lost)');
        }
        if (putCalls === 3) throw new TypeError('network error (not sent)');
      }
      return fetch(input, init);
    };
    const progress: number[] = [];
    const browser1 = await joinConnectDevice(coordinator, taskId, 'browser-1', { chunkBytes: 16, fetch: lossy, onChunk: (p) => progress.push(p.receivedBytes) });
    const browser2 = await joinConnectDevice(coordinator, taskId, 'browser-2');
    const node = await joinDevice(coordinator, taskId, 'node-1');
    expect(browser1.task.parameterCount).toBe(TINY_PARAMETERS);
    expect(browser1.task.model.weightSpecs).toEqual(node.task.model.weightSpecs);

    const [a1, a2, a3] = await Promise.all([browser1.nextAssignment(), browser2.nextAssignment(), node.nextAssignment()]);
    expect(a1).toEqual({ ...a3, deadlineUnixMs: a1!.deadlineUnixMs });
    const model = await browser2.download(a2!.modelVersion);
    expect(maxAbsDiff(model.weights, base)).toBe(0);
    expect(model.sha256).toBe(a2!.modelSha256);

    const updates = [
      { device: browser1, a: a1!, delta: pattern(TINY_PARAMETERS, 11), n: 5 },
      { device: browser2, a: a2!, delta: pattern(TINY_PARAMETERS, 12), n: 7 },
      { device: node, a: a3!, delta: pattern(TINY_PARAMETERS, 13), n: 9 },
    ];
    const results = [];
    results.push(await updates[0]!.device.submit(a1!, updates[0]!.delta, updates[0]!.n));
    // Acknowledged at 16; the 2nd call's answer (32) lost and the 3rd call lost: both times
    // GetUpload said 32 and the upload went on from there (48, 60), five PutChunk calls in all.
    expect(progress).toEqual([16, 48, 60]);
    expect(putCalls).toBe(5);
    // The same update sent again through a fresh upload is refused as already accepted (counted once).
    const again = await browser1.submit(a1!, updates[0]!.delta, 5).catch((e: unknown) => e);
    expect(again).toBeInstanceOf(ClientError);
    expect((again as ClientError).code).toBe('already_accepted');
    for (const u of updates.slice(1)) results.push(await u.device.submit(u.a, u.delta, u.n));
    expect(results.map((r) => r.acceptedCount)).toEqual([1, 2, 3]);

    const rounds = await waitForRounds(rest, taskId, (rs) => rs[0]?.state === 'CLOSED');
    // 60 bytes per update whatever the port: the bytes per value of a Connect upload are gRPC's.
    expect(rounds[0]).toMatchObject({ number: 1, received: 3, summary: { participants: 3, uploadBytes: 3 * 4 * TINY_PARAMETERS } });
    const weights = await fetchWeights(rest, taskId, 1);
    expect(maxAbsDiff(weights, expectedFedAvg(base, updates.map((u) => ({ delta: u.delta, n: u.n }))))).toBeLessThan(1e-6);
    for (const d of [browser1, browser2, node]) d.close();
  });

  test('errors: the gRPC port codes as Connect codes and HTTP statuses; bad chunks refused; a commit is answered once; idle uploads expire', async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
    // Unauthenticated, malformed JSON, wrong content type, bad enrolment.
    let r = await post(env, '/veil.v1.FederationService/GetTask', {}, { authorization: 'Bearer ' + 'x'.repeat(40) });
    expect(r.status).toBe(401);
    expect(await json(r)).toMatchObject({ code: 'unauthenticated' });
    r = await post(env, '/veil.v1.FederationService/Join', '{"taskId": ');
    expect([r.status, (await json(r)).code]).toEqual([400, 'invalid_argument']);
    r = await post(env, '/veil.v1.FederationService/Join', { taskId: 7 });
    expect([r.status, (await json(r)).code]).toEqual([400, 'invalid_argument']);
    r = await post(env, '/veil.v1.FederationService/Join', { taskId: 'not-a-uuid', enrolmentSecret: coordinator.enrolmentSecret });
    expect([r.status, (await json(r)).message]).toEqual([400, 'task_id must be a UUID']);
    // A lone surrogate has no UTF-8 form: refused as proto3 JSON, before it could reach the database.
    r = await post(env, '/veil.v1.FederationService/Join', `{"taskId": "${taskId}", "enrolmentSecret": "${coordinator.enrolmentSecret}", "clientName": "a\\ud800"}`);
    expect([r.status, await json(r)]).toEqual([400, { code: 'invalid_argument', message: 'invalid JoinRequest: clientName: well-formed Unicode string expected' }]);
    r = await fetch(coordinator.httpUrl + '/veil.v1.FederationService/Join', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: '{}' });
    expect(r.status).toBe(415);

    const device = await joinConnectDevice(coordinator, taskId, 'browser-e');
    const other = await joinConnectDevice(coordinator, taskId, 'browser-f');
    const auth = { authorization: `Bearer ${device.credential}` };
    const [a, b] = await Promise.all([device.nextAssignment(), other.nextAssignment()]);
    const payload = float32ToBytes(pattern(TINY_PARAMETERS, 21));
    const header = {
      roundNumber: a.roundNumber,
      modelVersion: a.modelVersion,
      exampleCount: 3,
      encoding: 'UPDATE_ENCODING_FLOAT32_LE',
      payloadSizeBytes: payload.byteLength,
      payloadSha256: createHash('sha256').update(payload).digest('base64'),
    };
    // Declared larger than the task allows: the engine's check, before anything is stored.
    r = await post(env, '/veil.v1.UploadService/BeginUpload', { header: { ...header, payloadSizeBytes: 10_000 } }, auth);
    expect([r.status, (await json(r)).code]).toEqual([429, 'resource_exhausted']);
    r = await post(env, '/veil.v1.UploadService/BeginUpload', { header: { ...header, roundNumber: 9 } }, auth);
    expect(r.status).toBe(400);
    r = await post(env, '/veil.v1.UploadService/BeginUpload', { header }, auth);
    expect(r.status).toBe(200);
    const { uploadId, sizeBytes } = await json(r);
    expect(sizeBytes).toBe(String(payload.byteLength));
    const chunk = (offset: number, data: Uint8Array, digest = createHash('sha256').update(data).digest('base64')) =>
      post(env, '/veil.v1.UploadService/PutChunk', { uploadId, offset, data: Buffer.from(data).toString('base64'), sha256: digest }, auth);
    r = await chunk(0, payload.subarray(0, 20), createHash('sha256').update('other').digest('base64'));
    expect([r.status, (await json(r)).message]).toEqual([400, 'the chunk does not match its sha256']);
    // Base64 that decodes to no whole number of bytes (a stray character, misplaced padding) is refused, not truncated.
    for (const data of ['AAAAA', 'AB=', 'A===']) {
      r = await post(env, '/veil.v1.UploadService/PutChunk', { uploadId, offset: 0, data, sha256: createHash('sha256').update(payload.subarray(0, 3)).digest('base64') }, auth);
      expect([r.status, (await json(r)).message]).toEqual([400, 'invalid PutChunkRequest: data: base64 string expected']);
    }
    r = await chunk(8, payload.subarray(8, 20));
    expect([r.status, (await json(r)).code]).toEqual([400, 'failed_precondition']);
    r = await post(env, '/veil.v1.UploadService/CommitUpload', { uploadId }, auth);
    expect([r.status, (await json(r)).code]).toEqual([400, 'failed_precondition']);
    expect((await chunk(0, payload.subarray(0, 32))).status).toBe(200);
    // Another device cannot see or touch it.
    r = await post(env, '/veil.v1.UploadService/GetUpload', { uploadId }, { authorization: `Bearer ${other.credential}` });
    expect([r.status, (await json(r)).code]).toEqual([404, 'not_found']);
    r = await chunk(32, payload.subarray(32));
    expect(await json(r)).toMatchObject({ receivedBytes: String(payload.byteLength) });
    r = await post(env, '/veil.v1.UploadService/CommitUpload', { uploadId }, auth);
    expect([r.status, await json(r)]).toEqual([200, { acceptedCount: 1, payloadSha256: header.payloadSha256 }]);
    r = await post(env, '/veil.v1.UploadService/CommitUpload', { uploadId }, auth);
    expect([r.status, r.headers.get('veil-error-code'), (await json(r)).code]).toEqual([409, 'already_accepted', 'already_exists']);

    // An abandoned upload (begun, then nothing) is cancelled at the idle timeout, as a gRPC stream:
    // DEADLINE_EXCEEDED for the calls that still name it.
    const otherAuth = { authorization: `Bearer ${other.credential}` };
    r = await post(env, '/veil.v1.UploadService/BeginUpload', { header: { ...header, roundNumber: b.roundNumber } }, otherAuth);
    const abandoned = (await json(r)).uploadId as string;
    r = await post(env, '/veil.v1.UploadService/GetUpload', { uploadId: abandoned }, otherAuth);
    expect(r.status).toBe(200);
    await new Promise((resolve) => setTimeout(resolve, 3_000));
    r = await post(env, '/veil.v1.UploadService/GetUpload', { uploadId: abandoned }, otherAuth);
    expect([r.status, r.headers.get('veil-error-code'), await json(r)]).toEqual([
      504,
      'deadline_exceeded',
      { code: 'deadline_exceeded', message: 'no upload call or data for 1500 ms' },
    ]);
    // Only its device is told why; to another it is unknown.
    r = await post(env, '/veil.v1.UploadService/GetUpload', { uploadId: abandoned }, auth);
    expect([r.status, (await json(r)).code]).toEqual([404, 'not_found']);
    expect(sha256Hex(payload)).toHaveLength(64);
    device.close();
    other.close();
  });

  test('bounded storage: two open uploads per device, a cap on the bytes held; refused calls are told when to retry; authentication comes before the body', async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
    const a = await joinConnectDevice(coordinator, taskId, 'browser-a');
    const b = await joinConnectDevice(coordinator, taskId, 'browser-b');
    const [assignment] = await Promise.all([a.nextAssignment(), b.nextAssignment()]);
    const begin = (device: typeof a, seed: number) => {
      const payload = float32ToBytes(pattern(TINY_PARAMETERS, seed));
      return post(
        env,
        '/veil.v1.UploadService/BeginUpload',
        {
          header: {
            roundNumber: assignment!.roundNumber,
            modelVersion: assignment!.modelVersion,
            exampleCount: 2,
            encoding: 'UPDATE_ENCODING_FLOAT32_LE',
            payloadSizeBytes: payload.byteLength,
            payloadSha256: createHash('sha256').update(payload).digest('base64'),
          },
        },
        { authorization: `Bearer ${device.credential}` },
      );
    };
    const first = await begin(a, 31);
    expect(first.status).toBe(200);
    expect((await begin(a, 32)).status).toBe(200);
    let r = await begin(a, 33);
    expect([r.status, (await json(r)).message]).toEqual([429, 'this device already has 2 uploads open (at most 2)']);
    // 120 of 150 bytes reserved: another device's 60 do not fit until one upload goes.
    r = await begin(b, 34);
    expect([r.status, r.headers.get('veil-error-code'), r.headers.get('retry-after')]).toEqual([429, 'rate_limited', '2']);
    expect((await json(r)).code).toBe('resource_exhausted');
    // Device a's first upload: filled and committed, its bytes are freed.
    const { uploadId } = await json(first);
    const payload = float32ToBytes(pattern(TINY_PARAMETERS, 31));
    r = await post(
      env,
      '/veil.v1.UploadService/PutChunk',
      { uploadId, offset: 0, data: Buffer.from(payload).toString('base64'), sha256: createHash('sha256').update(payload).digest('base64') },
      { authorization: `Bearer ${a.credential}` },
    );
    expect(r.status).toBe(200);
    r = await post(env, '/veil.v1.UploadService/CommitUpload', { uploadId }, { authorization: `Bearer ${a.credential}` });
    expect(await json(r)).toMatchObject({ acceptedCount: 1 });
    expect((await begin(b, 34)).status).toBe(200);
    // A wrong credential is refused before its body is read: a PutChunk body over the limit is still 401, not 413.
    const oversized = await fetch(coordinator.httpUrl + '/veil.v1.UploadService/PutChunk', {
      method: 'POST',
      headers: { 'content-type': 'application/proto', authorization: 'Bearer ' + 'y'.repeat(40) },
      body: new Uint8Array(3 * 1024 * 1024),
    }).catch((error: unknown) => error as Error);
    expect(oversized instanceof Response ? oversized.status : String(oversized)).toBe(401);
    a.close();
    b.close();
  });

  test("Connect protocol: a path of no method is an `unimplemented` error (404), whoever asks; connect-timeout-ms is the call's deadline", async () => {
    const { coordinator, rest } = env;
    // An unknown method, service or package version: the Connect error body, before any credential is asked for.
    for (const path of ['/veil.v1.UploadService/Nothing', '/veil.v1.NoService/GetTask', '/veil.v2.FederationService/Join']) {
      const r = await post(env, path, {});
      expect([path, r.status, r.headers.get('content-type'), await json(r)]).toEqual([
        path,
        404,
        'application/json; charset=utf-8',
        { code: 'unimplemented', message: `${path} is not a method of this coordinator` },
      ]);
    }

    // One device of the two a round needs: its long poll waits (up to the 20 s it asks for).
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
    const device = await joinConnectDevice(coordinator, taskId, 'deadline');
    try {
      const auth = { authorization: `Bearer ${device.credential}` };
      // With a 300 ms deadline it is answered deadline_exceeded (without it: an Idle answer after 20 s).
      const poll = await post(env, '/veil.v1.FederationService/WaitForAssignment', { waitMs: 20_000 }, { ...auth, 'connect-timeout-ms': '300' });
      expect([poll.status, poll.headers.get('veil-error-code'), await json(poll)]).toEqual([
        504,
        'deadline_exceeded',
        { code: 'deadline_exceeded', message: "the call's deadline passed (connect-timeout-ms 300)" },
      ]);
      // A call done within its deadline is answered as ever; a deadline the protocol does not allow is refused.
      const task = await post(env, '/veil.v1.FederationService/GetTask', {}, { ...auth, 'connect-timeout-ms': '60000' });
      expect([task.status, (await json(task)).taskId]).toEqual([200, taskId]);
      for (const bad of ['0', 'soon', '12345678901', '-5', '1.5']) {
        const r = await post(env, '/veil.v1.FederationService/GetTask', {}, { ...auth, 'connect-timeout-ms': bad });
        expect([bad, r.status, await json(r)]).toEqual([bad, 400, { code: 'invalid_argument', message: 'connect-timeout-ms must be a positive integer of at most 10 digits' }]);
      }
    } finally {
      device.close();
    }
  });

  test('the binary codec answers the same as JSON; CORS preflight allows the bearer header', async () => {
    const { coordinator } = env;
    const r = await fetch(coordinator.httpUrl + '/veil.v1.FederationService/GetTask', {
      method: 'OPTIONS',
      headers: { origin: 'http://example.test', 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization, content-type' },
    });
    expect(r.status).toBe(204);
    expect(r.headers.get('access-control-allow-origin')).toBe('*');
    expect(r.headers.get('access-control-allow-headers')).toContain('authorization');
    // GetTask with an empty protobuf body and no credential: UNAUTHENTICATED in the binary codec too.
    const p = await fetch(coordinator.httpUrl + '/veil.v1.FederationService/GetTask', { method: 'POST', headers: { 'content-type': 'application/proto' }, body: new Uint8Array(0) });
    expect([p.status, (await json(p)).code]).toEqual([401, 'unauthenticated']);
  });
});
