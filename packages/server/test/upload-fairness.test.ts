/**
 * A fair upload budget (issue 12, item 3): a selected device that opens
 * SubmitUpdate streams, sends a valid header and then nothing cannot hold the
 * upload budget. Honest uploads go through, the round completes with them, and
 * the idle streams are closed with a clear status at the idle timeout or when
 * their round closes. Real gRPC on loopback, real PostgreSQL. The same guard
 * holds for chunked uploads over Connect (the HTTP port, browsers): slow and
 * idle uploads are cancelled and free the bytes they hold, a device's uploads
 * are counted over both ports, and a round's close cancels them (real HTTP
 * clients that trickle bytes, on loopback).
 */
import { request as httpRequest } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import { describe, expect, test } from 'vitest';
import { createFederationServiceClient, GRPC_CHANNEL_OPTIONS, type SubmitUpdateRequest } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import {
  TINY_PARAMETERS,
  createTinyTask,
  joinConnectDevice,
  expectedFedAvg,
  fetchWeights,
  joinDevices,
  maxAbsDiff,
  pattern,
  sha256Hex,
  startTestCoordinator,
  waitForRounds,
  type Device,
  type TestCoordinator,
} from './helpers.js';
import type { Coordinator } from '../src/index.js';

/** The SHA-256 of `bytes` in base64, as proto3 JSON writes a bytes field. */
const sha256Base64 = (bytes: Uint8Array): string => Buffer.from(sha256Hex(bytes), 'hex').toString('base64');

/** A task of `rounds` rounds for two devices; a round closes at its deadline with one update. */
const twoDeviceTask = (rest: TestCoordinator['rest'], rounds: number, roundDeadlineMs: number) =>
  createTinyTask(rest, { rounds, clientsPerRound: 2, minClients: 1, minAvailableClients: 2, roundDeadlineMs });

/** The slow-loris tests' minimum upload rate. */
const MIN_RATE = { bytesPerSecond: 200, windowMs: 400, graceMs: 200 };

/**
 * A coordinator that holds one tiny update at a time (`holds`: the gRPC port's transfer budget, or
 * the Connect store), with {@link MIN_RATE}. The idle timeout alone would never end an upload that
 * sends a byte now and then.
 */
const oneUpdateCoordinator = (holds: 'budget' | 'store') =>
  startTestCoordinator({
    ...(holds === 'budget' ? { uploadBudgetBytes: TINY_PARAMETERS * 4 } : { uploadStoreBytes: TINY_PARAMETERS * 4 }),
    config: { uploadIdleTimeoutMs: 600_000, uploadMinRate: MIN_RATE },
  });

/** How an upload call ended: its status, when (ms after it was opened), and its place among the calls of this file that ended. */
interface Outcome {
  code: grpc.status;
  details: string;
  afterMs: number;
  /** 1 for the first call of this file to end, 2 for the next, ...: which of two calls ended first, whatever the machine's load. */
  order: number;
}
let ended = 0;

interface OpenStream {
  write(message: SubmitUpdateRequest): void;
  readonly outcome: Promise<Outcome>;
  close(): void;
}

/** A SubmitUpdate stream left open: messages are written, the stream is never ended. */
function openUpload(coordinator: Coordinator, credential: string): OpenStream {
  const client = createFederationServiceClient(coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  const opened = Date.now();
  let call!: grpc.ClientWritableStream<SubmitUpdateRequest>;
  const outcome = new Promise<Outcome>((resolve) => {
    call = client.SubmitUpdate(metadata, (error) => {
      resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? '', afterMs: Date.now() - opened, order: ++ended });
    });
    call.on('error', () => {});
  });
  return {
    write: (message) => call.write(message),
    outcome,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

/** An honest header for `delta` (valid for the device's assignment). */
function headerFor(roundNumber: number, delta: Float32Array, exampleCount: number): SubmitUpdateRequest {
  const payload = float32ToBytes(delta);
  return {
    header: {
      roundNumber,
      modelVersion: 0,
      exampleCount,
      encoding: 'UPDATE_ENCODING_FLOAT32_LE',
      payloadSizeBytes: payload.byteLength,
      payloadSha256: Buffer.from(sha256Hex(payload), 'hex'),
    },
  };
}

describe('fair upload budget', () => {
  test('streams that send a header and then nothing neither starve honest uploads nor outlive the idle timeout', async () => {
    const idleMs = 700;
    // The budget holds one update at a time: one stalled upload admitted to it would block every other.
    await using env = await startTestCoordinator({
      uploadBudgetBytes: TINY_PARAMETERS * 4,
      config: { uploadIdleTimeoutMs: idleMs, maxUploadStreamsPerDevice: 2 },
    });
    const { rest, coordinator } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 3, minClients: 2, minAvailableClients: 3, roundDeadlineMs: 6_000 });
    using devices = await joinDevices(coordinator, taskId, 3);
    const [attacker, h1, h2] = devices as unknown as [Device, Device, Device];
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));

    // The attacker: three streams with a valid header and then nothing, one with nothing at all.
    const stalled = [0, 1, 2].map(() => openUpload(coordinator, attacker.credential));
    for (const s of stalled) s.write(headerFor(1, pattern(TINY_PARAMETERS, 3), 5));
    const silent = openUpload(coordinator, attacker.credential);
    try {
      await new Promise((resolve) => setTimeout(resolve, 150));
      const d1 = pattern(TINY_PARAMETERS, 11);
      const d2 = pattern(TINY_PARAMETERS, 12);
      // Accepted, so before the round closed: the stalled streams held the budget only until their idle timeouts.
      const honest = await Promise.all([h1.submit(assignments[1]!, d1, 4), h2.submit(assignments[2]!, d2, 6)]);
      expect(honest.map((h) => h.acceptedCount).sort()).toEqual([1, 2]);

      const outcomes = await Promise.all(stalled.map((s) => s.outcome));
      const byCode = outcomes.map((o) => grpc.status[o.code]).sort();
      // One stream over the per-device limit is refused at once; the other two are closed when idle.
      expect(byCode).toEqual(['DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED']);
      const refused = outcomes.find((o) => o.code === grpc.status.RESOURCE_EXHAUSTED)!;
      expect(refused.details).toMatch(/already has 2 uploads open \(at most 2\)/);
      // At once: while the device's two other streams were still open, i.e. before either was closed
      // (by its idle timer, as its text says, not by the round's close).
      const idled = outcomes.filter((x) => x.code === grpc.status.DEADLINE_EXCEEDED);
      for (const o of idled) expect(refused.order).toBeLessThan(o.order);
      for (const o of idled) {
        expect(o.details).toBe(`no update data for ${idleMs} ms`);
        expect(o.afterMs).toBeGreaterThanOrEqual(idleMs - 50);
      }
      const none = await silent.outcome;
      expect(grpc.status[none.code]).toBe('DEADLINE_EXCEEDED');
      expect(none.details).toBe(`no update header within ${idleMs} ms`);

      // The round completes at its deadline with the honest updates.
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED', 15_000);
      expect(rounds[0]).toMatchObject({ received: 2, summary: { participants: 2, dropped: 1, modelVersion: 1 } });
      const expected = expectedFedAvg(base, [
        { delta: d1, n: 4 },
        { delta: d2, n: 6 },
      ]);
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expected)).toBeLessThan(1e-6);
    } finally {
      for (const s of [...stalled, silent]) s.close();
    }
  });

  test("a stream still receiving when its round closes is cancelled then, with the round's state", async () => {
    // Idle timeout far beyond the test: only the round's close can end the stalled stream.
    await using env = await startTestCoordinator({ config: { uploadIdleTimeoutMs: 600_000 } });
    const { rest, coordinator } = env;
    const { id: taskId } = await twoDeviceTask(rest, 2, 1_500);
    using devices = await joinDevices(coordinator, taskId, 2);
    const [attacker, honest] = devices as unknown as [Device, Device];
    const [a, h] = await Promise.all([attacker.nextAssignment(), honest.nextAssignment()]);
    const delta = pattern(TINY_PARAMETERS, 4);
    const stalled = openUpload(coordinator, attacker.credential);
    try {
      // A valid header and the first half of the payload, then nothing.
      stalled.write(headerFor(1, delta, 5));
      stalled.write({ chunk: Buffer.from(float32ToBytes(delta)).subarray(0, 28) });
      expect(await honest.submit(h, pattern(TINY_PARAMETERS, 5), 3)).toEqual({ acceptedCount: 1 });
      const deadline = a.deadlineUnixMs;
      const outcome = await stalled.outcome;
      expect(grpc.status[outcome.code]).toBe('FAILED_PRECONDITION');
      expect(outcome.details).toBe('round 1 is CLOSED: this upload did not finish in time');
      // Closed with the round (which closes at its deadline; the idle timeout is 10 minutes), not before it.
      expect(Date.now()).toBeGreaterThanOrEqual(deadline);
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
      expect(rounds[0]).toMatchObject({ received: 1, summary: { participants: 1 } });
      // The attacker's slot is free again: it takes part in round 2 normally.
      const next = await attacker.nextAssignment();
      expect(next.roundNumber).toBe(2);
      expect(await attacker.submit(next, delta, 5)).toEqual({ acceptedCount: 1 });
    } finally {
      stalled.close();
    }
  });

  test('a slow-loris upload (a byte now and then, never idle) is cancelled under the minimum rate and frees the budget for a fast device', async () => {
    // The budget holds one update: while the slow-loris holds it, the fast device waits for it.
    await using env = await oneUpdateCoordinator('budget');
    const { rest, coordinator } = env;
    const { id: taskId, base } = await twoDeviceTask(rest, 1, 4_000);
    using devices = await joinDevices(coordinator, taskId, 2);
    const [loris, fast] = devices as unknown as [Device, Device];
    const [, f] = await Promise.all([loris.nextAssignment(), fast.nextAssignment()]);
    const delta = pattern(TINY_PARAMETERS, 7);
    const payload = Buffer.from(float32ToBytes(delta));
    const stream = openUpload(coordinator, loris.credential);
    // A real slow-loris over loopback: a valid header, then one byte every 100 ms (10 bytes/s).
    stream.write(headerFor(1, delta, 5));
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < payload.byteLength - 1) stream.write({ chunk: payload.subarray(sent, ++sent) });
    }, 100);
    try {
      // Queued behind the slow-loris's budget share until that stream is cancelled.
      const fastDelta = pattern(TINY_PARAMETERS, 8);
      const fastResult = fast.submit(f, fastDelta, 3);
      const outcome = await stream.outcome;
      expect(grpc.status[outcome.code]).toBe('DEADLINE_EXCEEDED');
      expect(outcome.details).toMatch(/^upload too slow: \d+ bytes\/s over 400 ms, at least 200 bytes\/s required$/);
      // It was still sending (never idle for long), and had not sent its whole payload.
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(payload.byteLength - 1);
      expect(await fastResult).toEqual({ acceptedCount: 1 });
      // Nothing of the slow-loris was recorded: the round closes with the fast device's update alone.
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED', 10_000);
      expect(rounds[0]).toMatchObject({ received: 1, summary: { participants: 1, modelVersion: 1 } });
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta: fastDelta, n: 3 }]))).toBeLessThan(1e-6);
    } finally {
      clearInterval(drip);
      stream.close();
    }
  });
});

// ------------------------------------------------------------------ Connect (HTTP port)

interface ConnectAnswer {
  status: number;
  /** The coordinator's own code (veil-error-code header), null on success. */
  code: string | null;
  body: Record<string, unknown>;
}

/** A unary UploadService call with the JSON codec. */
async function uploadCall(coordinator: Coordinator, method: string, body: unknown, credential: string): Promise<ConnectAnswer> {
  const r = await fetch(`${coordinator.httpUrl}/veil.v1.UploadService/${method}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${credential}` },
    body: JSON.stringify(body),
  });
  return { status: r.status, code: r.headers.get('veil-error-code'), body: (await r.json()) as Record<string, unknown> };
}

/** BeginUpload of `delta` as a float32-LE update for round `roundNumber`. */
const beginUpload = (coordinator: Coordinator, credential: string, roundNumber: number, delta: Float32Array, exampleCount = 5): Promise<ConnectAnswer> => {
  const payload = float32ToBytes(delta);
  return uploadCall(
    coordinator,
    'BeginUpload',
    {
      header: {
        roundNumber,
        modelVersion: 0,
        exampleCount,
        encoding: 'UPDATE_ENCODING_FLOAT32_LE',
        payloadSizeBytes: payload.byteLength,
        payloadSha256: sha256Base64(payload),
      },
    },
    credential,
  );
};

const varint = (n: number): Buffer => {
  const out: number[] = [];
  for (; n > 0x7f; n = Math.floor(n / 128)) out.push((n & 0x7f) | 0x80);
  out.push(n);
  return Buffer.from(out);
};
/** A PutChunkRequest in the binary codec, as the SDK writes it (upload id first). */
function putChunkBody(uploadId: string, offset: number, data: Uint8Array): Buffer {
  const id = Buffer.from(uploadId);
  const digest = Buffer.from(sha256Hex(data), 'hex');
  return Buffer.concat([
    Buffer.from([0x0a, id.length]), id,
    Buffer.from([0x10]), varint(offset),
    Buffer.from([0x1a]), varint(data.byteLength), Buffer.from(data),
    Buffer.from([0x22, digest.length]), digest,
  ]);
}

/**
 * A binary PutChunk over a slow link: the first `first` bytes at once (the first segment, with the
 * upload id), then `piece` bytes every `everyMs`; resolves with the HTTP status.
 */
function slowPutChunk(coordinator: Coordinator, credential: string, body: Buffer, first: number, piece: number, everyMs: number): Promise<number> {
  const url = new URL(`${coordinator.httpUrl}/veil.v1.UploadService/PutChunk`);
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      url,
      { method: 'POST', headers: { 'content-type': 'application/proto', 'content-length': body.length, authorization: `Bearer ${credential}` } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    let sent = 0;
    const next = (): void => {
      const n = sent === 0 ? first : piece;
      req.write(body.subarray(sent, sent + n));
      sent += n;
      if (sent < body.length) setTimeout(next, everyMs);
      else req.end();
    };
    next();
  });
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('fair upload budget over Connect (chunked uploads, HTTP port)', () => {
  test('a slow-loris (one-byte PutChunk calls, never idle) is cancelled under the minimum rate; its stored bytes go to an honest browser', async () => {
    // The store holds one tiny update (60 bytes): while the slow-loris holds it, nobody else can begin.
    await using env = await oneUpdateCoordinator('store');
    const { rest, coordinator } = env;
    const { id: taskId, base } = await twoDeviceTask(rest, 1, 6_000);
    const loris = await joinConnectDevice(coordinator, taskId, 'loris');
    const honest = await joinConnectDevice(coordinator, taskId, 'honest');
    const [, h] = await Promise.all([loris.nextAssignment(), honest.nextAssignment()]);
    try {
      const delta = pattern(TINY_PARAMETERS, 7);
      const payload = Buffer.from(float32ToBytes(delta));
      const began = await beginUpload(coordinator, loris.credential, 1, delta);
      expect(began.status).toBe(200);
      const uploadId = String(began.body['uploadId']);
      // Meanwhile the store is full: the honest device is told to retry later.
      const full = await beginUpload(coordinator, honest.credential, 1, pattern(TINY_PARAMETERS, 8), 3);
      expect([full.status, full.code]).toEqual([429, 'rate_limited']);
      // One payload byte per call every 100 ms (10 bytes/s; each call's ~65 bytes of framing count for nothing).
      const started = Date.now();
      const statuses: number[] = [];
      let answer: ConnectAnswer | null = null;
      for (let sent = 0; sent < payload.length - 1 && Date.now() - started < 5_000; sent++) {
        const r = await fetch(`${coordinator.httpUrl}/veil.v1.UploadService/PutChunk`, {
          method: 'POST',
          headers: { 'content-type': 'application/proto', authorization: `Bearer ${loris.credential}` },
          body: putChunkBody(uploadId, sent, payload.subarray(sent, sent + 1)),
        });
        if (r.status !== 200) {
          answer = { status: r.status, code: r.headers.get('veil-error-code'), body: (await r.json()) as Record<string, unknown> };
          break;
        }
        statuses.push(r.status);
        await r.arrayBuffer();
        await sleep(100);
      }
      expect(answer).not.toBeNull();
      expect([answer!.status, answer!.code, answer!.body['code']]).toEqual([504, 'deadline_exceeded', 'deadline_exceeded']);
      expect(String(answer!.body['message'])).toMatch(/^upload too slow: \d+ bytes\/s over 400 ms, at least 200 bytes\/s required$/);
      // It was still sending, and had not sent its whole payload.
      expect(statuses.length).toBeGreaterThan(0);
      expect(statuses.length).toBeLessThan(payload.length - 1);
      // Its bytes are freed: the honest browser's upload (the SDK's transport) goes through.
      const honestDelta = pattern(TINY_PARAMETERS, 8);
      expect(await honest.submit(h, honestDelta, 3)).toEqual({ acceptedCount: 1 });
      // The cancelled upload stays cancelled (no resume of it), and nothing of it was recorded.
      const again = await uploadCall(coordinator, 'GetUpload', { uploadId }, loris.credential);
      expect([again.status, again.code]).toEqual([504, 'deadline_exceeded']);
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED', 15_000);
      expect(rounds[0]).toMatchObject({ received: 1, summary: { participants: 1, modelVersion: 1 } });
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta: honestDelta, n: 3 }]))).toBeLessThan(1e-6);
    } finally {
      loris.close();
      honest.close();
    }
  });

  test('an honest device on a slow link (one chunk arriving over many rate windows, above the minimum) is not cancelled', async () => {
    // 5x the minimum: after a first segment with the upload id, 4 bytes every 100 ms (~40 bytes/s)
    // against 8 bytes/s over 500 ms windows. The chunk's body takes ~2.4 s: counted only once whole
    // (as a gRPC message is), the first windows would be empty.
    const minRate = { bytesPerSecond: 8, windowMs: 500, graceMs: 100 };
    await using env = await startTestCoordinator({ config: { uploadIdleTimeoutMs: 600_000, uploadMinRate: minRate } });
    const { rest, coordinator } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, roundDeadlineMs: 20_000 });
    const device = await joinConnectDevice(coordinator, taskId, 'slow-link');
    try {
      await device.nextAssignment();
      const delta = pattern(TINY_PARAMETERS, 9);
      const payload = Buffer.from(float32ToBytes(delta));
      const began = await beginUpload(coordinator, device.credential, 1, delta, 4);
      expect(began.status).toBe(200);
      const uploadId = String(began.body['uploadId']);
      const body = putChunkBody(uploadId, 0, payload);
      const started = Date.now();
      expect(await slowPutChunk(coordinator, device.credential, body, 32, 4, 100)).toBe(200);
      expect(Date.now() - started).toBeGreaterThan(minRate.graceMs + 2 * minRate.windowMs);
      const status = await uploadCall(coordinator, 'GetUpload', { uploadId }, device.credential);
      expect(status.body['receivedBytes']).toBe(String(payload.length));
      const committed = await uploadCall(coordinator, 'CommitUpload', { uploadId }, device.credential);
      expect([committed.status, committed.body['acceptedCount']]).toEqual([200, 1]);
      await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta, n: 4 }]))).toBeLessThan(1e-6);
    } finally {
      device.close();
    }
  });

  test("a device's uploads are counted over both ports; Connect uploads still receiving when their round closes are cancelled then", async () => {
    await using env = await startTestCoordinator({ config: { uploadIdleTimeoutMs: 600_000, maxUploadStreamsPerDevice: 2 } });
    const { rest, coordinator } = env;
    const { id: taskId } = await twoDeviceTask(rest, 2, 2_000);
    using devices = await joinDevices(coordinator, taskId, 2);
    const [device, other] = devices as unknown as [Device, Device];
    const [a] = await Promise.all([device.nextAssignment(), other.nextAssignment()]);
    const delta = pattern(TINY_PARAMETERS, 4);
    const payload = Buffer.from(float32ToBytes(pattern(TINY_PARAMETERS, 21)));
    const streams: OpenStream[] = [];
    try {
      // The device begins two Connect uploads (its two slots; the first gets half its payload)...
      const ids: string[] = [];
      for (const seed of [21, 22]) {
        const began = await beginUpload(coordinator, device.credential, 1, pattern(TINY_PARAMETERS, seed));
        expect(began.status).toBe(200);
        ids.push(String(began.body['uploadId']));
      }
      const half = payload.subarray(0, 28);
      const put = await uploadCall(
        coordinator,
        'PutChunk',
        { uploadId: ids[0], offset: 0, data: half.toString('base64'), sha256: sha256Base64(half) },
        device.credential,
      );
      expect(put.status).toBe(200);
      // ...so a gRPC stream of the same device is refused at once.
      const refused = openUpload(coordinator, device.credential);
      streams.push(refused);
      refused.write(headerFor(1, delta, 5));
      const outcome = await refused.outcome;
      expect([grpc.status[outcome.code], outcome.details]).toEqual(['RESOURCE_EXHAUSTED', 'this device already has 2 uploads open (at most 2)']);
      // Another device's gRPC stream: a header, then nothing.
      const stalled = openUpload(coordinator, other.credential);
      streams.push(stalled);
      stalled.write(headerFor(1, delta, 5));
      // The round closes at its deadline with nothing received: the stream and both Connect uploads are cancelled then.
      const closed = await stalled.outcome;
      expect(grpc.status[closed.code]).toBe('FAILED_PRECONDITION');
      expect(Date.now()).toBeGreaterThanOrEqual(a.deadlineUnixMs);
      for (const uploadId of ids) {
        const after = await uploadCall(coordinator, 'GetUpload', { uploadId }, device.credential);
        expect([after.status, after.code, after.body['message']]).toEqual([400, 'failed_precondition', closed.details]);
      }
      expect(closed.details).toMatch(/^round 1 is (CLOSED|FAILED): this upload did not finish in time$/);
      // Its slots and stored bytes are free again: in round 2 it uploads over Connect and is accepted.
      const next = await device.nextAssignment();
      expect(next.roundNumber).toBe(2);
      const began = await beginUpload(coordinator, device.credential, 2, delta);
      expect(began.status).toBe(200);
      const whole = Buffer.from(float32ToBytes(delta));
      const uploadId = began.body['uploadId'];
      expect((await uploadCall(coordinator, 'PutChunk', { uploadId, offset: 0, data: whole.toString('base64'), sha256: sha256Base64(whole) }, device.credential)).status).toBe(200);
      expect((await uploadCall(coordinator, 'CommitUpload', { uploadId }, device.credential)).body).toEqual({ acceptedCount: 1, payloadSha256: sha256Base64(whole) });
    } finally {
      for (const s of streams) s.close();
    }
  });

  test('revoking a device drops its Connect upload at once: the bytes it held go to another device', async () => {
    await using env = await startTestCoordinator({ uploadStoreBytes: TINY_PARAMETERS * 4, config: { uploadIdleTimeoutMs: 600_000 } });
    const { rest, coordinator } = env;
    const { id: taskId } = await twoDeviceTask(rest, 1, 30_000);
    using devices = await joinDevices(coordinator, taskId, 2);
    const [revoked, other] = devices as unknown as [Device, Device];
    await Promise.all([revoked.nextAssignment(), other.nextAssignment()]);
    const began = await beginUpload(coordinator, revoked.credential, 1, pattern(TINY_PARAMETERS, 5));
    expect(began.status).toBe(200);
    // The store (one update) is full.
    expect((await beginUpload(coordinator, other.credential, 1, pattern(TINY_PARAMETERS, 6))).code).toBe('rate_limited');
    expect((await rest.request('POST', `/v1/tasks/${taskId}/clients/${revoked.clientId}/revoke`)).status).toBe(200);
    // Freed at once (the idle timeout is 10 minutes): the other device begins.
    expect((await beginUpload(coordinator, other.credential, 1, pattern(TINY_PARAMETERS, 6))).status).toBe(200);
    expect((await uploadCall(coordinator, 'GetUpload', { uploadId: began.body['uploadId'] }, revoked.credential)).status).toBe(401);
  });
});
