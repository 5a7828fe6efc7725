/**
 * WaitForAssignmentAndModel over real gRPC on loopback (PostgreSQL): the long-poll's answer and
 * the assigned model in one server stream, through the SDK's transport (behind a proxy that
 * records the HTTP/2 frames: how many requests a round costs) and a raw grpc-js client (what
 * the coordinator sends, message by message; requests the SDK never makes).
 */
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createFederationServiceClient, GRPC_CHANNEL_OPTIONS, type AssignmentAndModel__Output } from '@veil/protocol';
import { float32View } from '@veil/protocol/codec';
import {
  createTinyTask,
  grpcStatusOf,
  joinDevice,
  pattern,
  sha256Hex,
  startTestCoordinator,
  TINY_PARAMETERS,
  type TestCoordinator,
} from './helpers.js';
import { FRAME, recordFrames } from './http2-frames.js';

/** A grpc-js client calling WaitForAssignmentAndModel; resolves with every message and the final status. */
function rawPoll(
  env: TestCoordinator,
  credential: string,
  request: { waitMs: number; afterRoundNumber?: number; heldModelVersion?: number },
): Promise<{ messages: AssignmentAndModel__Output[]; code: grpc.status; details: string }> {
  const client = createFederationServiceClient(env.coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  const messages: AssignmentAndModel__Output[] = [];
  return new Promise((resolve) => {
    const call = client.WaitForAssignmentAndModel(request, metadata, { deadline: Date.now() + 20_000 });
    call.on('data', (m: AssignmentAndModel__Output) => messages.push(m));
    call.on('error', () => {});
    call.on('status', (s: grpc.StatusObject) => {
      client.close();
      resolve({ messages, code: s.code, details: s.details });
    });
  });
}

describe('WaitForAssignmentAndModel', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator();
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('the assignment arrives with its model in one request (two with WaitForAssignment + DownloadModel); the next round brings the next version', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    await using proxy = await recordFrames(coordinator.grpcAddress);
    using device = await joinDevice(coordinator, taskId, 'combined', undefined, proxy.address);
    const requests = (from: number): number => proxy.frames.slice(from).filter((f) => f.direction === 'up' && f.type === FRAME.HEADERS).length;

    let mark = proxy.frames.length;
    const first = await device.transport.waitForAssignmentAndModel!(device.credential, 5_000);
    expect(requests(mark)).toBe(1);
    if (first.response.kind !== 'assignment') throw new Error(`expected an assignment, got ${first.response.kind}`);
    const a = first.response.assignment;
    expect(first.model).toMatchObject({ version: 0, encoding: 'float32-le', sha256: a.modelSha256 });
    expect(Array.from(float32View(first.model!.bytes))).toEqual(Array.from(base));
    expect(a.modelSizeBytes).toBe(TINY_PARAMETERS * 4);

    const delta = pattern(TINY_PARAMETERS, 2);
    expect(await device.submit(a, delta, 10)).toEqual({ acceptedCount: 1 });
    // The device holds version 0; round 2 trains version 1, which comes with the assignment.
    mark = proxy.frames.length;
    const second = await device.transport.waitForAssignmentAndModel!(device.credential, 5_000, undefined, { afterRoundNumber: 1, heldModelVersion: 0 });
    expect(requests(mark)).toBe(1);
    if (second.response.kind !== 'assignment') throw new Error(`expected an assignment, got ${second.response.kind}`);
    expect(second.response.assignment).toMatchObject({ roundNumber: 2, modelVersion: 1 });
    expect(second.model).toMatchObject({ version: 1, sha256: second.response.assignment.modelSha256 });
    const expected = base.map((w, i) => w + delta[i]!);
    expect(Math.max(...float32View(second.model!.bytes).map((w, i) => Math.abs(w - expected[i]!)))).toBeLessThan(1e-6);
    // The plain calls still work, and DownloadModel sends the very bytes.
    mark = proxy.frames.length;
    const again = await device.transport.waitForAssignment(device.credential, 5_000);
    const downloaded = await device.transport.downloadModel(device.credential, { version: 1 });
    expect(requests(mark)).toBe(2);
    expect(again).toMatchObject({ kind: 'assignment', assignment: { roundNumber: 2 } });
    expect(Buffer.from(downloaded.bytes).equals(Buffer.from(second.model!.bytes))).toBe(true);
  });

  test('a device that holds the assigned version gets the answer alone; idle answers come alone', async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    using chosen = await joinDevice(coordinator, taskId, 'holder');
    const a = await chosen.nextAssignment();
    expect(a.modelVersion).toBe(0);
    const held = await rawPoll(env, chosen.credential, { waitMs: 1_000, heldModelVersion: 0 });
    expect(held.code).toBe(grpc.status.OK);
    expect(held.messages.map((m) => m.part)).toEqual(['answer']);
    expect(held.messages[0]!.answer!.assignment).toMatchObject({ roundId: a.roundId, modelVersion: 0 });
    const viaSdk = await chosen.transport.waitForAssignmentAndModel!(chosen.credential, 1_000, undefined, { heldModelVersion: 0 });
    expect(viaSdk).toMatchObject({ response: { kind: 'assignment' }, model: null });

    // Without the held version: the answer, the model header, then one chunk (a tiny model).
    const full = await rawPoll(env, chosen.credential, { waitMs: 1_000 });
    expect(full.messages.map((m) => m.part)).toEqual(['answer', 'modelHeader', 'modelData']);
    expect(full.messages[1]!.modelHeader).toMatchObject({ modelVersion: 0, sizeBytes: TINY_PARAMETERS * 4 });
    expect(sha256Hex(full.messages[2]!.modelData!)).toBe(a.modelSha256);

    // A second device is not selected (one client per round): idle, no model.
    using other = await joinDevice(coordinator, taskId, 'bystander');
    const idle = await rawPoll(env, other.credential, { waitMs: 1_000 });
    expect(idle.code).toBe(grpc.status.OK);
    expect(idle.messages.map((m) => m.part)).toEqual(['answer']);
    expect(idle.messages[0]!.answer!.idle).toBeTruthy();
    await chosen.submit(a, pattern(TINY_PARAMETERS, 3), 5);
  });

  test("revoking the device's credential ends its long-poll at once with UNAUTHENTICATED", async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    using chosen = await joinDevice(coordinator, taskId, 'selected');
    await chosen.nextAssignment();
    using waiting = await joinDevice(coordinator, taskId, 'revoked');
    const started = Date.now();
    const poll = rawPoll(env, waiting.credential, { waitMs: 20_000 });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect((await rest.request('POST', `/v1/tasks/${taskId}/clients/${waiting.clientId}/revoke`)).status).toBe(200);
    const ended = await poll;
    expect([ended.code, ended.messages]).toEqual([grpc.status.UNAUTHENTICATED, []]);
    expect(Date.now() - started).toBeLessThan(10_000);
  });

  test('refused: no or a wrong credential is UNAUTHENTICATED; a held version beyond int4 or a malformed request is INVALID_ARGUMENT', async () => {
    const { coordinator, rest } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    using device = await joinDevice(coordinator, taskId, 'refused');
    expect((await rawPoll(env, 'A'.repeat(43), { waitMs: 1_000 })).code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await grpcStatusOf(device.transport.waitForAssignmentAndModel!('A'.repeat(43), 1_000))).code).toBe(grpc.status.UNAUTHENTICATED);
    const outOfRange = await rawPoll(env, device.credential, { waitMs: 1_000, heldModelVersion: 2 ** 31 });
    expect([outOfRange.code, outOfRange.details, outOfRange.messages]).toEqual([grpc.status.INVALID_ARGUMENT, 'held_model_version is out of range', []]);

    // Bytes that are not a WaitForAssignmentAndModelRequest (field 1, a varint cut off after its first byte).
    const session = http2.connect(`http://${coordinator.grpcAddress}`);
    try {
      const stream = session.request({
        ':method': 'POST',
        ':path': '/veil.v1.FederationService/WaitForAssignmentAndModel',
        'content-type': 'application/grpc',
        te: 'trailers',
        authorization: `Bearer ${device.credential}`,
      });
      stream.end(Buffer.from([0, 0, 0, 0, 2, 0x08, 0x80]));
      stream.resume();
      // The status comes in the trailers, or in the headers of a trailers-only answer.
      const grpcStatus = await new Promise<unknown>((resolve, reject) => {
        stream.once('response', (headers) => {
          if (headers['grpc-status'] !== undefined) resolve(headers['grpc-status']);
        });
        stream.once('trailers', (trailers) => resolve(trailers['grpc-status']));
        stream.once('error', reject);
      });
      expect(grpcStatus).toBe(String(grpc.status.INVALID_ARGUMENT));
    } finally {
      session.close();
    }
    // Nothing of the above took the device's place: it is still selected, and its model comes.
    const ok = await device.transport.waitForAssignmentAndModel!(device.credential, 5_000);
    expect(ok.response.kind).toBe('assignment');
    expect(ok.model?.version).toBe(0);
  });

  test('gRPC only: the Connect port answers `unimplemented` (404)', async () => {
    const response = await fetch(`${env.coordinator.httpUrl}/veil.v1.FederationService/WaitForAssignmentAndModel`, {
      method: 'POST',
      headers: { 'content-type': 'application/connect+json' },
      body: Buffer.from([0, 0, 0, 0, 2, 0x7b, 0x7d]),
    });
    expect(response.status).toBe(404);
    expect(await response.json()).toMatchObject({ code: 'unimplemented' });
  });
});
