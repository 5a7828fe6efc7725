/**
 * Rounds over real gRPC on loopback, against PostgreSQL and PGlite: devices are
 * driven through the SDK's gRPC transport; results are checked through the
 * REST API (what an operator sees), the blob store and, on PostgreSQL, the
 * database itself.
 */
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { status } from '@grpc/grpc-js';
import { MAX_CHUNK_BYTES } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import type { ClientError } from '../../client-sdk/src/index.js';
import {
  TINY_PARAMETERS,
  TINY_TOPOLOGY,
  TINY_WEIGHT_SPECS,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  grpcStatusOf,
  joinDevice,
  joinDevices,
  listRounds,
  maxAbsDiff,
  pattern,
  rawSubmit,
  sha256Hex,
  startTestCoordinator,
  storedUpdateFiles,
  waitForRounds,
  type DatabaseKind,
  type TestCoordinator,
} from './helpers.js';

/** float32 rounding of values of magnitude ~1, with room for the float64 → float32 step. */
const FLOAT32_TOLERANCE = 1e-6;

describe.each<DatabaseKind>(['postgres', 'pglite'])('federation over gRPC (%s)', (database) => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({ database });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('a full round: three devices train, the global model is their FedAvg, history shows the round', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2 });
    using devices = await joinDevices(coordinator, taskId, 3);
    expect(devices.map((d) => d.task.parameterCount)).toEqual([TINY_PARAMETERS, TINY_PARAMETERS, TINY_PARAMETERS]);
    expect(devices[0]!.task.model.weightSpecs).toEqual(TINY_WEIGHT_SPECS);

    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    for (const a of assignments) {
      expect(a).toMatchObject({ roundNumber: 1, modelVersion: 0, maxUpdateBytes: TINY_PARAMETERS * 4, training: { epochs: 1, batchSize: 8 } });
      expect(a.deadlineUnixMs).toBeGreaterThan(Date.now());
    }
    const updates = [
      { delta: pattern(TINY_PARAMETERS, 2), n: 10, metrics: { accuracy: 0.5, loss: 1.0 } },
      { delta: pattern(TINY_PARAMETERS, 3), n: 30, metrics: { accuracy: 0.7, loss: 0.8 } },
      { delta: pattern(TINY_PARAMETERS, 4), n: 60, metrics: { accuracy: 0.9, loss: 0.2 } },
    ];
    const accepted = await Promise.all(
      devices.map(async (device, k) => {
        const a = assignments[k]!;
        const model = await device.download(a.modelVersion);
        expect(model.sha256).toBe(a.modelSha256);
        expect(model.version).toBe(0);
        expect(Array.from(model.weights)).toEqual(Array.from(base));
        const u = updates[k]!;
        await device.transport.reportEvaluation(device.credential, { roundNumber: 1, modelVersion: 0, exampleCount: u.n, metrics: u.metrics });
        return (await device.submit(a, u.delta, u.n)).acceptedCount;
      }),
    );
    expect(accepted.sort()).toEqual([1, 2, 3]);

    const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    const round = rounds[0];
    expect(round.events.map((e: { to: string }) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
    expect(round.events.map((e: { from: string | null }) => e.from)).toEqual([null, 'SELECTING', 'COLLECTING', 'AGGREGATING']);
    expect(round).toMatchObject({
      number: 1,
      baseModelVersion: 0,
      selected: 3,
      received: 3,
      failureReason: null,
      summary: { participants: 3, dropped: 0, examples: 100, uploadBytes: 3 * TINY_PARAMETERS * 4, modelVersion: 1 },
    });
    expect(round.closedAt).not.toBeNull();
    const evaluation = round.evaluation;
    expect(evaluation).toMatchObject({ modelVersion: 0, clients: 3, examples: 100 });
    expect(evaluation.metrics.accuracy).toBeCloseTo((10 * 0.5 + 30 * 0.7 + 60 * 0.9) / 100, 12);
    expect(evaluation.metrics.loss).toBeCloseTo((10 * 1.0 + 30 * 0.8 + 60 * 0.2) / 100, 12);
    // The next round trains the new model.
    expect(rounds[1]).toMatchObject({ number: 2, baseModelVersion: 1 });

    const expected = expectedFedAvg(base, updates);
    const weights = await fetchWeights(rest, taskId);
    expect(maxAbsDiff(weights, expected)).toBeLessThan(FLOAT32_TOLERANCE);
    // Devices download the same model version 1 over gRPC.
    const fromDevice = await devices[0]!.download(1);
    expect(Array.from(fromDevice.weights)).toEqual(Array.from(weights));
    expect(Array.from(await fetchWeights(rest, taskId, 0))).toEqual(Array.from(base));

    const task = await rest.request('GET', `/v1/tasks/${taskId}`);
    expect(task.body).toMatchObject({ status: 'RUNNING', currentModelVersion: 1 });
    const modelJson = await rest.request('GET', `/v1/tasks/${taskId}/model`);
    expect(modelJson.status).toBe(200);
    expect(modelJson.body.modelTopology).toEqual(TINY_TOPOLOGY);
    expect(modelJson.body.weightsManifest).toEqual([{ paths: ['model/weights.bin?version=1'], weights: TINY_WEIGHT_SPECS }]);
    expect(modelJson.body.veil).toMatchObject({ version: 1, sha256: fromDevice.sha256, sizeBytes: TINY_PARAMETERS * 4 });
    const bin = await rest.bytes(`/v1/tasks/${taskId}/model/weights.bin`);
    expect(bin.headers.get('x-veil-model-version')).toBe('1');
    expect(bin.headers.get('etag')).toBe(`"${fromDevice.sha256}"`);
  });

  test('bad input is rejected with the right gRPC status and leaves the round intact', async () => {
    const { coordinator, rest, storage } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2, maxExampleCount: 1000 });

    // Enrolment and credentials.
    const wrongSecret = await grpcStatusOf(joinDevice(coordinator, taskId, 'intruder', 'not-the-enrolment-secret'));
    expect(wrongSecret.code).toBe(status.UNAUTHENTICATED);
    expect((await grpcStatusOf(joinDevice(coordinator, randomUUID(), 'lost'))).code).toBe(status.NOT_FOUND);
    expect((await grpcStatusOf(joinDevice(coordinator, 'not-a-task', 'lost'))).code).toBe(status.INVALID_ARGUMENT);
    using devices = await joinDevices(coordinator, taskId, 3);
    const [d1, d2, d3] = devices as unknown as [(typeof devices)[0], (typeof devices)[0], (typeof devices)[0]];
    const transport = d1.transport;
    expect((await grpcStatusOf(transport.waitForAssignment('A'.repeat(43), 10))).code).toBe(status.UNAUTHENTICATED);
    expect((await grpcStatusOf(transport.waitForAssignment('not a credential!', 10))).code).toBe(status.UNAUTHENTICATED);
    expect((await grpcStatusOf(transport.getTask(''))).code).toBe(status.UNAUTHENTICATED);

    const assignments = await Promise.all([d1, d2, d3].map((d) => d.nextAssignment()));
    const a = assignments[0]!;
    const roundId = a.roundId;
    // Joined after selection: not a participant of round 1.
    using outsider = await joinDevice(coordinator, taskId, 'outsider');

    const good = pattern(TINY_PARAMETERS, 5);
    const payload = float32ToBytes(good);
    const digest = Buffer.from(sha256Hex(payload), 'hex');
    const header = { roundNumber: 1, modelVersion: 0, exampleCount: 5, encoding: 'UPDATE_ENCODING_FLOAT32_LE' as const, payloadSizeBytes: payload.byteLength, payloadSha256: digest };
    const withNaN = good.slice();
    withNaN[7] = Number.NaN;
    const withInf = good.slice();
    withInf[0] = Number.POSITIVE_INFINITY;

    const rejections: Array<[string, () => Promise<unknown>, status]> = [
      ['unknown credential', () => transport.submitUpdate('B'.repeat(43), { roundNumber: 1, modelVersion: 0, exampleCount: 5, encoding: 'float32-le', sha256: sha256Hex(payload) }, payload), status.UNAUTHENTICATED],
      ['payload one value short', () => d1.submit(a, good.subarray(1), 5), status.INVALID_ARGUMENT],
      ['NaN in the update', () => d1.submit(a, withNaN, 5), status.INVALID_ARGUMENT],
      ['Infinity in the update', () => d1.submit(a, withInf, 5), status.INVALID_ARGUMENT],
      ['digest mismatch', () => d1.submit(a, good, 5, { sha256: sha256Hex(float32ToBytes(base)) }), status.INVALID_ARGUMENT],
      ['exampleCount 0', () => d1.submit(a, good, 0), status.INVALID_ARGUMENT],
      ['exampleCount above the maximum', () => d1.submit(a, good, 1001), status.INVALID_ARGUMENT],
      ['wrong round number', () => d1.submit(a, good, 5, { roundNumber: 2 }), status.FAILED_PRECONDITION],
      ['wrong model version', () => d1.submit(a, good, 5, { modelVersion: 3 }), status.FAILED_PRECONDITION],
    ];
    for (const [what, call, expected] of rejections) {
      const outcome = await grpcStatusOf(call());
      expect({ what, code: status[outcome.code] }).toEqual({ what, code: status[expected] });
      expect(outcome.details.length).toBeGreaterThan(0);
    }

    const raw: Array<[string, Parameters<typeof rawSubmit>[2], status]> = [
      ['declared size above the task limit', [{ header: { ...header, payloadSizeBytes: MAX_CHUNK_BYTES } }, { chunk: Buffer.alloc(1024) }], status.RESOURCE_EXHAUSTED],
      ['oversized chunk', [{ header }, { chunk: Buffer.alloc(MAX_CHUNK_BYTES + 1) }], status.RESOURCE_EXHAUSTED],
      ['more bytes than declared', [{ header }, { chunk: Buffer.from(payload) }, { chunk: Buffer.alloc(4) }], status.RESOURCE_EXHAUSTED],
      ['fewer bytes than declared', [{ header }, { chunk: Buffer.from(payload.subarray(0, 40)) }], status.INVALID_ARGUMENT],
      ['chunk before the header', [{ chunk: Buffer.from(payload) }, { header }], status.INVALID_ARGUMENT],
      ['header twice', [{ header }, { header }, { chunk: Buffer.from(payload) }], status.INVALID_ARGUMENT],
      ['no header at all', [], status.INVALID_ARGUMENT],
      ['unspecified encoding', [{ header: { ...header, encoding: 'UPDATE_ENCODING_UNSPECIFIED' } }, { chunk: Buffer.from(payload) }], status.INVALID_ARGUMENT],
    ];
    for (const [what, messages, expected] of raw) {
      const outcome = await rawSubmit(coordinator, d1.credential, messages);
      expect({ what, outcome: outcome.ok ? 'accepted' : status[outcome.code] }).toEqual({ what, outcome: status[expected] });
    }

    // Nothing of the rejected updates was kept.
    let rounds = await listRounds(rest, taskId);
    expect(rounds[0]).toMatchObject({ state: 'COLLECTING', received: 0, selected: 3 });
    expect((await storedUpdateFiles(storage.dataDir)).filter((f) => f.startsWith(`tasks/${taskId}/`))).toEqual([]);
    if (storage.kind === 'postgres') {
      const rows = await storage.sql('SELECT status FROM "Participation" WHERE "roundId" = $1', [roundId]);
      expect(rows.map((r) => r['status'])).toEqual(['SELECTED', 'SELECTED', 'SELECTED']);
    }

    // The round still works: valid updates are accepted, a second one from the same device is not.
    const u1 = pattern(TINY_PARAMETERS, 6);
    expect(await d1.submit(a, u1, 7)).toEqual({ acceptedCount: 1 });
    const duplicate = await grpcStatusOf(d1.submit(a, pattern(TINY_PARAMETERS, 9), 500));
    expect(duplicate.code).toBe(status.ALREADY_EXISTS);
    expect((await grpcStatusOf(d1.submit(a, u1, 7))).code).toBe(status.ALREADY_EXISTS);
    // The SDK tells the two apart by the code in the veil-error-code trailer, not by the text:
    // the accepted update again is `already_accepted` (it counted), another one `already_exists`.
    expect(await d1.submit(a, u1, 7).catch((e: ClientError) => e.code)).toBe('already_accepted');
    expect(await d1.submit(a, pattern(TINY_PARAMETERS, 9), 500).catch((e: ClientError) => e.code)).toBe('already_exists');
    expect((await grpcStatusOf(outsider.submit(a, good, 5))).code).toBe(status.PERMISSION_DENIED);
    expect((await outsider.transport.waitForAssignment(outsider.credential, 10)).kind).toBe('idle');

    // Evaluation reports are checked too, and a refused one is not recorded.
    const report = { roundNumber: 1, modelVersion: 0, exampleCount: 10, metrics: { accuracy: 0.5 } };
    expect((await grpcStatusOf(outsider.transport.reportEvaluation(outsider.credential, report))).code).toBe(status.PERMISSION_DENIED);
    expect((await grpcStatusOf(d2.transport.reportEvaluation(d2.credential, { ...report, roundNumber: 99 }))).code).toBe(status.NOT_FOUND);
    expect((await grpcStatusOf(d2.transport.reportEvaluation(d2.credential, { ...report, modelVersion: 4 }))).code).toBe(status.FAILED_PRECONDITION);
    expect((await grpcStatusOf(d2.transport.reportEvaluation(d2.credential, { ...report, metrics: { accuracy: Number.NaN } }))).code).toBe(status.INVALID_ARGUMENT);
    expect((await grpcStatusOf(d2.transport.reportEvaluation(d2.credential, { ...report, metrics: { 'bad name!': 1 } }))).code).toBe(status.INVALID_ARGUMENT);
    expect((await grpcStatusOf(d2.transport.reportEvaluation(d2.credential, { ...report, exampleCount: 0 }))).code).toBe(status.INVALID_ARGUMENT);
    expect((await grpcStatusOf(d2.transport.reportEvaluation('C'.repeat(43), report))).code).toBe(status.UNAUTHENTICATED);
    expect((await listRounds(rest, taskId))[0].evaluation).toBeNull();

    const u2 = pattern(TINY_PARAMETERS, 7);
    const u3 = pattern(TINY_PARAMETERS, 8);
    expect(await d2.submit(assignments[1]!, u2, 13)).toEqual({ acceptedCount: 2 });
    expect(await d3.submit(assignments[2]!, u3, 21)).toEqual({ acceptedCount: 3 });

    rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0].summary).toMatchObject({ participants: 3, examples: 7 + 13 + 21, modelVersion: 1 });
    const expected = expectedFedAvg(base, [
      { delta: u1, n: 7 },
      { delta: u2, n: 13 },
      { delta: u3, n: 21 },
    ]);
    expect(maxAbsDiff(await fetchWeights(rest, taskId), expected)).toBeLessThan(FLOAT32_TOLERANCE);
    // Round 1's three updates, the task's only ones (no device has submitted to round 2).
    expect((await storedUpdateFiles(storage.dataDir)).filter((f) => f.startsWith(`tasks/${taskId}/`))).toHaveLength(3);
    if (storage.kind === 'postgres') {
      const rows = await storage.sql<{ clientId: string; status: string; exampleCount: number }>(
        'SELECT "clientId", status, "exampleCount" FROM "Participation" WHERE "roundId" = $1 ORDER BY "exampleCount"',
        [roundId],
      );
      expect(rows).toEqual([
        { clientId: d1.clientId, status: 'SUBMITTED', exampleCount: 7 },
        { clientId: d2.clientId, status: 'SUBMITTED', exampleCount: 13 },
        { clientId: d3.clientId, status: 'SUBMITTED', exampleCount: 21 },
      ]);
    }

    // The round is over: a late update for it is refused.
    expect((await grpcStatusOf(d1.submit(a, u1, 7))).code).toBe(status.FAILED_PRECONDITION);
  });

  test('at the deadline a round with enough updates closes without the missing device', async () => {
    const { coordinator, rest, storage } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2, minClients: 2, roundDeadlineMs: 1500 });
    using devices = await joinDevices(coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const u1 = pattern(TINY_PARAMETERS, 11);
    const u2 = pattern(TINY_PARAMETERS, 12);
    expect(await devices[0]!.submit(assignments[0]!, u1, 3)).toEqual({ acceptedCount: 1 });
    expect(await devices[1]!.submit(assignments[1]!, u2, 9)).toEqual({ acceptedCount: 2 });
    // Still collecting: the third device has until the deadline.
    expect((await listRounds(rest, taskId))[0]).toMatchObject({ state: 'COLLECTING', received: 2 });

    const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ selected: 3, received: 2, summary: { participants: 2, dropped: 1, examples: 12, modelVersion: 1 } });
    expect(rounds[0].events[2]).toMatchObject({ from: 'COLLECTING', to: 'AGGREGATING', reason: expect.stringContaining('deadline') });
    expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta: u1, n: 3 }, { delta: u2, n: 9 }]))).toBeLessThan(FLOAT32_TOLERANCE);

    const late = await grpcStatusOf(devices[2]!.submit(assignments[2]!, pattern(TINY_PARAMETERS, 13), 4));
    expect(late.code).toBe(status.FAILED_PRECONDITION);
    // Round 1's two updates, the task's only ones (the late one was refused; nobody submitted to round 2).
    expect((await storedUpdateFiles(storage.dataDir)).filter((f) => f.startsWith(`tasks/${taskId}/`))).toHaveLength(2);
    if (storage.kind === 'postgres') {
      const rows = await storage.sql('SELECT status FROM "Participation" WHERE "roundId" = $1 AND "clientId" = $2', [assignments[0]!.roundId, devices[2]!.clientId]);
      expect(rows).toEqual([{ status: 'DROPPED' }]);
    }
  });

  test('at the deadline a round with too few updates fails with a reason and the next round opens', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2, minClients: 2, roundDeadlineMs: 1500 });
    using devices = await joinDevices(coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    expect(await devices[0]!.submit(assignments[0]!, pattern(TINY_PARAMETERS, 14), 3)).toEqual({ acceptedCount: 1 });

    const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'FAILED' && r.length === 2);
    expect(rounds[0]).toMatchObject({ number: 1, received: 1, summary: null, failureReason: expect.stringMatching(/fewer than the minimum of 2/) });
    expect(rounds[0].events.map((e: { to: string }) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'FAILED']);
    expect(rounds[0].events[2].reason).toBe(rounds[0].failureReason);
    // The failed round produced no model; the next round trains the unchanged one.
    expect(rounds[1]).toMatchObject({ number: 2, baseModelVersion: 0 });
    expect(Array.from(await fetchWeights(rest, taskId))).toEqual(Array.from(base));
    expect((await rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ currentModelVersion: 0 });

    const late = await grpcStatusOf(devices[1]!.submit(assignments[1]!, pattern(TINY_PARAMETERS, 15), 4));
    expect(late.code).toBe(status.FAILED_PRECONDITION);
  });

  test('a model larger than one protocol chunk travels in several chunks both ways', async () => {
    const { coordinator, rest } = env;
    const parameters = 640 * 1000; // 2.56 MB of float32: three 1 MiB chunks
    const base = Float32Array.from({ length: parameters }, (_, i) => ((i % 997) - 498) / 1000);
    const created = await rest.request('POST', '/v1/tasks', {
      body: {
        name: 'large',
        rounds: 1,
        clientsPerRound: 1,
        training: { epochs: 1, batchSize: 32, learningRate: 0.01 },
        start: true,
        model: { topology: TINY_TOPOLOGY, weightSpecs: [{ name: 'w', shape: [640, 1000], dtype: 'float32' }], weightsBase64: Buffer.from(float32ToBytes(base)).toString('base64') },
      },
    });
    expect(created.status).toBe(201);
    const taskId: string = created.body.id;
    using device = await joinDevice(coordinator, taskId, 'big');
    const a = await device.nextAssignment();
    expect(a.maxUpdateBytes).toBe(parameters * 4);
    const model = await device.download(a.modelVersion);
    expect(model.sha256).toBe(a.modelSha256);
    expect(maxAbsDiff(model.weights, base)).toBe(0);
    const delta = Float32Array.from({ length: parameters }, (_, i) => ((i % 13) - 6) / 100);
    expect(await device.submit(a, delta, 3)).toEqual({ acceptedCount: 1 });
    await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta, n: 3 }]))).toBeLessThan(FLOAT32_TOLERANCE);
    expect((await rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ status: 'COMPLETED', currentModelVersion: 1 });
    // The task is over: devices are told so, and no one can join it any more.
    expect(await device.transport.waitForAssignment(device.credential, 10)).toMatchObject({ kind: 'ended', taskStatus: 'TASK_STATUS_COMPLETED', finalModelVersion: 1 });
    expect((await grpcStatusOf(joinDevice(coordinator, taskId, 'late'))).code).toBe(status.FAILED_PRECONDITION);
  });

  test('pausing lets the open round finish but opens no new round until the task is resumed', async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 2 });
    using devices = await joinDevices(coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    expect((await rest.request('POST', `/v1/tasks/${taskId}/pause`)).status).toBe(200);
    await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, pattern(TINY_PARAMETERS, 30 + k), 5)));
    await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    // Give a wrongly opened round time to show up before asserting there is none.
    expect((await devices[0]!.transport.waitForAssignment(devices[0]!.credential, 300)).kind).toBe('idle');
    expect((await listRounds(rest, taskId)).map((r) => [r.number, r.state])).toEqual([[1, 'CLOSED']]);
    expect((await rest.request('GET', `/v1/tasks/${taskId}`)).body).toMatchObject({ status: 'PAUSED', currentModelVersion: 1 });

    expect((await rest.request('POST', `/v1/tasks/${taskId}/start`)).status).toBe(200);
    const next = await Promise.all(devices.map((d) => d.nextAssignment()));
    expect(next.map((a) => [a.roundNumber, a.modelVersion])).toEqual([[2, 1], [2, 1], [2, 1]]);
  });
});
