/**
 * The coordinator's transfer budgets over real gRPC on loopback (PostgreSQL):
 * with budgets of one byte every upload and every download runs alone, so the
 * tests see devices queue behind a transfer in progress, and see that a device
 * vanishing mid-transfer, or while waiting, frees its share for the others.
 * Which transfer is admitted or waiting is read from the coordinator's debug log.
 * (How much memory the budgets save is the benchmark's business:
 * `npm run bench:rounds -- --only scale`.)
 */
import http2 from 'node:http2';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { createFederationServiceClient, federationServiceDefinition, GRPC_CHANNEL_OPTIONS } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import {
  captureLogger,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  joinDevice,
  joinDevices,
  maxAbsDiff,
  pattern,
  sha256Hex,
  startTestCoordinator,
  storedUpdateFiles,
  waitForRounds,
  type Device,
  type TestCoordinator,
} from './helpers.js';
import { FRAME, recordFrames } from './http2-frames.js';
import { SERVER_STREAM_WINDOW_BYTES } from '../src/grpc/federation-service.js';

/** An update of 200 kB: a payload of many HTTP/2 DATA frames (16 KiB each). */
const PARAMETERS = 50_000;
const model = (base: Float32Array, parameters = PARAMETERS) => ({
  topology: { class_name: 'Sequential', config: { name: 'budget', layers: [] } },
  weightSpecs: [{ name: 'w', shape: [parameters], dtype: 'float32' }],
  weightsBase64: Buffer.from(float32ToBytes(base)).toString('base64'),
});

/** A grpc-js client on a channel of its own, for calls the SDK never makes (stalling mid-transfer). */
function rawClient(env: TestCoordinator, credential: string) {
  const client = createFederationServiceClient(env.coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  return { client, metadata };
}

/** An upload that sends its header and the first 150 kB of its payload, then stalls until cancelled. */
function stalledUpload(env: TestCoordinator, credential: string, delta: Float32Array, exampleCount: number): { cancel(): void } {
  const payload = float32ToBytes(delta);
  const { client, metadata } = rawClient(env, credential);
  const call = client.SubmitUpdate(metadata, { deadline: Date.now() + 60_000 }, () => {});
  call.on('error', () => {});
  call.write({
    header: {
      roundNumber: 1,
      modelVersion: 0,
      exampleCount,
      encoding: 'UPDATE_ENCODING_FLOAT32_LE',
      payloadSizeBytes: payload.byteLength,
      payloadSha256: Buffer.from(sha256Hex(payload), 'hex'),
    },
  });
  call.write({ chunk: Buffer.from(payload.subarray(0, 150_000)) });
  return {
    cancel() {
      call.cancel();
      client.close();
    },
  };
}

/**
 * A download by a device that stops reading after the first bytes, over a bare HTTP/2 stream:
 * a paused grpc-js client would still read ahead whole messages, a paused HTTP/2 stream really
 * stops (flow control: the coordinator can send no more than the stream's 64 KiB window).
 */
async function stalledDownload(env: TestCoordinator, credential: string): Promise<{ cancel(): void }> {
  const session = http2.connect(`http://${env.coordinator.grpcAddress}`);
  session.on('error', () => {});
  const request = federationServiceDefinition().DownloadModel.requestSerialize({ modelVersion: 0, latest: true });
  const framed = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), request]);
  framed.writeUInt32BE(request.byteLength, 1);
  const stream = session.request({
    ':method': 'POST',
    ':path': '/veil.v1.FederationService/DownloadModel',
    'content-type': 'application/grpc',
    te: 'trailers',
    authorization: `Bearer ${credential}`,
  });
  stream.on('error', () => {});
  stream.end(framed);
  await new Promise<void>((resolve, reject) => {
    stream.once('data', () => {
      stream.pause();
      resolve();
    });
    stream.once('close', () => reject(new Error('the download ended before stalling')));
  });
  return {
    cancel() {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    },
  };
}

describe('transfer budgets', () => {
  let env: TestCoordinator;
  const log = captureLogger('debug');
  /** Resolves once the coordinator logged `message` for `clientId` (the test's timeout bounds the wait). */
  const logged = async (clientId: string, message: string): Promise<void> => {
    const seen = (): boolean => log.text().split('\n').some((line) => line.includes(clientId) && line.includes(`"msg":"${message}"`));
    while (!seen()) await new Promise((resolve) => setTimeout(resolve, 10));
  };
  beforeAll(async () => {
    env = await startTestCoordinator({ uploadBudgetBytes: 1, downloadBudgetBytes: 1, logger: log.logger });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('uploads wait for the one in progress; uploaders vanishing mid-upload or while waiting free the budget; every update counts once', async () => {
    const { coordinator, rest, storage } = env;
    const base = pattern(PARAMETERS, 1);
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, model: model(base) }, base);
    using devices = await joinDevices(coordinator, taskId, 3);
    const [holder, quitter, waiter] = devices as unknown as [Device, Device, Device];
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const a = assignments[0]!;
    const updates = [
      { device: holder, delta: pattern(PARAMETERS, 2), n: 10 },
      { device: quitter, delta: pattern(PARAMETERS, 3), n: 20 },
      { device: waiter, delta: pattern(PARAMETERS, 4), n: 30 },
    ];

    // The holder is admitted, sends part of its payload and stalls; two more uploads queue behind it.
    const holding = stalledUpload(env, holder.credential, updates[0]!.delta, 10);
    await logged(holder.clientId, 'upload admitted');
    const quitting = stalledUpload(env, quitter.credential, updates[1]!.delta, 20);
    await logged(quitter.clientId, 'upload waiting for the transfer budget');
    const waiting = waiter.submit(a, updates[2]!.delta, 30);
    await logged(waiter.clientId, 'upload waiting for the transfer budget');

    // One gives up while waiting, then the holder vanishes mid-upload: the remaining upload goes
    // through (it would wait forever if either had kept its share), then both others resubmit.
    quitting.cancel();
    holding.cancel();
    expect((await waiting).acceptedCount).toBe(1);
    expect((await quitter.submit(a, updates[1]!.delta, 20)).acceptedCount).toBe(2);
    expect((await holder.submit(a, updates[0]!.delta, 10)).acceptedCount).toBe(3);

    const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ received: 3, selected: 3 });
    const weights = await fetchWeights(rest, taskId);
    expect(maxAbsDiff(weights, expectedFedAvg(base, updates))).toBeLessThan(1e-6);
    // The abandoned attempts left nothing behind: one stored update per device (the task's only round).
    expect((await storedUpdateFiles(storage.dataDir)).filter((f) => f.startsWith(`tasks/${taskId}/`))).toHaveLength(3);
  });

  test('an upload queued for the budget holds at most about one stream window (64 KiB) at the coordinator; the rest of it stays on the device', async () => {
    const { coordinator, rest } = env;
    // A 2.4 MB update: far more than the coordinator's stream window.
    const parameters = 600_000;
    const base = pattern(parameters, 11);
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 2, minClients: 2, minAvailableClients: 2, model: model(base, parameters) }, base);
    await using proxy = await recordFrames(coordinator.grpcAddress);
    using holder = await joinDevice(coordinator, taskId, 'window-holder');
    using waiter = await joinDevice(coordinator, taskId, 'window-waiter', undefined, proxy.address);
    const [a] = await Promise.all([holder.nextAssignment(), waiter.nextAssignment()]);
    const holding = stalledUpload(env, holder.credential, pattern(parameters, 12), 10);
    await logged(holder.clientId, 'upload admitted');

    const mark = proxy.frames.length;
    const delta = pattern(parameters, 13);
    const waiting = waiter.submit(a!, delta, 30);
    await logged(waiter.clientId, 'upload waiting for the transfer budget');
    /** DATA bytes the waiting device has sent on its upload stream so far. */
    const sent = (): number => {
      const data = proxy.frames.slice(mark).filter((f) => f.direction === 'up' && f.type === FRAME.DATA);
      const stream = Math.max(...data.map((f) => f.streamId));
      return data.filter((f) => f.streamId === stream).reduce((n, f) => n + f.length, 0);
    };
    // The device sends ahead up to the window, then stops: the coordinator reads nothing while the upload waits.
    while (sent() < SERVER_STREAM_WINDOW_BYTES) await new Promise((resolve) => setTimeout(resolve, 10));
    await new Promise((resolve) => setTimeout(resolve, 500));
    const held = sent();
    // Measured: the window, plus two 16 KiB DATA frames that reached Node's stream before the
    // coordinator paused it (their window was given back) and the header message.
    expect(held).toBeLessThanOrEqual(SERVER_STREAM_WINDOW_BYTES + 3 * 16 * 1024);
    expect(held).toBeLessThan(delta.byteLength / 16);

    // Once the holder goes, the waiting upload is read through and counted.
    holding.cancel();
    expect((await waiting).acceptedCount).toBe(1);
    expect(sent()).toBeGreaterThan(delta.byteLength);
  });

  test('downloads wait for the one in progress; a device that stops reading and vanishes frees the budget', async () => {
    const { coordinator, rest } = env;
    const base = pattern(PARAMETERS, 7);
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, model: model(base) }, base);
    using devices = await joinDevices(coordinator, taskId, 4, 'reader');
    const [stalling, ...readers] = devices as unknown as [Device, ...Device[]];

    // The stalling device is admitted, then stops reading (so the model cannot be sent in full).
    const stalled = await stalledDownload(env, stalling.credential);
    await logged(stalling.clientId, 'download admitted');

    // Others queue behind it; one of them gives up while waiting. Once it vanishes, they all complete.
    const abort = new AbortController();
    const quitting = readers[0]!.transport.downloadModel(readers[0]!.credential, { latest: true }, abort.signal);
    quitting.catch(() => {});
    await logged(readers[0]!.clientId, 'download waiting for the transfer budget');
    const pending = readers.map((d) => d.download());
    for (const d of readers.slice(1)) await logged(d.clientId, 'download waiting for the transfer budget');
    abort.abort();
    await expect(quitting).rejects.toThrow();
    stalled.cancel();
    for (const model of await Promise.all(pending)) {
      expect(model.version).toBe(0);
      expect(Array.from(model.weights)).toEqual(Array.from(base));
    }
    // Nothing leaked: later downloads are still admitted.
    expect((await readers[1]!.download(0)).version).toBe(0);
  });

  test("a Connect download still waiting for the budget at its connect-timeout-ms ends with deadline_exceeded; its place is given back", async () => {
    const { coordinator, rest } = env;
    const base = pattern(PARAMETERS, 8);
    const { id: taskId } = await createTinyTask(rest, { rounds: 1, model: model(base) }, base);
    using devices = await joinDevices(coordinator, taskId, 2, 'deadline');
    const [stalling, browser] = devices as unknown as [Device, Device];
    const stalled = await stalledDownload(env, stalling.credential);
    try {
      await logged(stalling.clientId, 'download admitted');
      // DownloadModel over Connect (a server stream) with a 300 ms deadline, behind the stalled download.
      const request = Buffer.from(JSON.stringify({ modelVersion: 0, latest: true }));
      const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), request]);
      envelope.writeUInt32BE(request.byteLength, 1);
      const response = await fetch(`${coordinator.httpUrl}/veil.v1.FederationService/DownloadModel`, {
        method: 'POST',
        headers: { 'content-type': 'application/connect+json', authorization: `Bearer ${browser.credential}`, 'connect-timeout-ms': '300' },
        body: envelope,
        // Only bounds the test without the deadline (the stalled download holds the budget until cancelled).
        signal: AbortSignal.timeout(30_000),
      });
      const bytes = Buffer.from(await response.arrayBuffer());
      // One message, the end of the stream (flags 2), with the error.
      expect([response.status, bytes[0], bytes.readUInt32BE(1) + 5]).toEqual([200, 2, bytes.length]);
      expect(JSON.parse(bytes.subarray(5).toString('utf8'))).toEqual({
        error: { code: 'deadline_exceeded', message: "the call's deadline passed (connect-timeout-ms 300)" },
        metadata: { 'veil-error-code': ['deadline_exceeded'] },
      });
    } finally {
      stalled.cancel();
    }
    // Its place in the queue is given back once the budget frees (the handler's call was cancelled:
    // admitted, it lets go at once): the same device's next download completes.
    const again = await browser.download(0);
    expect(Array.from(again.weights)).toEqual(Array.from(base));
  });
});
