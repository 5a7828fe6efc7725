/**
 * An admitted upload's receive window (grpc/upload-window.ts), over real gRPC on loopback through
 * a proxy that records the HTTP/2 frames: the coordinator announces HTTP/2's default 65,535-byte
 * stream window (what an upload held before its admission may park, transfer-budget.test.ts), and
 * raises its connection's window for the rest of an upload once admitted, so the device sends it in
 * one flight instead of stopping every ~32 KiB for a WINDOW_UPDATE; then the default comes back.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { float32ToBytes } from '@veil/protocol/codec';
import { createTinyTask, joinDevice, pattern, startTestCoordinator, type TestCoordinator } from './helpers.js';
import { FRAME, SETTING, recordFrames } from './http2-frames.js';
import { SERVER_STREAM_WINDOW_BYTES } from '../src/grpc/federation-service.js';
import { MAX_UPLOAD_WINDOW_BYTES } from '../src/grpc/upload-window.js';

/** A 400 kB update: 25 DATA frames of 16 KiB, six times the default stream window. */
const PARAMETERS = 100_000;
const model = (base: Float32Array) => ({
  topology: { class_name: 'Sequential', config: { name: 'window', layers: [] } },
  weightSpecs: [{ name: 'w', shape: [PARAMETERS], dtype: 'float32' }],
  weightsBase64: Buffer.from(float32ToBytes(base)).toString('base64'),
});

describe('upload receive window', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator();
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test("an admitted upload's connection is given a window for the rest of it (one flight), and the default window comes back after", async () => {
    const { coordinator, rest } = env;
    const base = pattern(PARAMETERS, 1);
    const { id: taskId } = await createTinyTask(rest, { rounds: 2, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, model: model(base) }, base);
    await using proxy = await recordFrames(coordinator.grpcAddress);
    using device = await joinDevice(coordinator, taskId, 'window-device', undefined, proxy.address);
    const a = await device.nextAssignment();
    const mark = proxy.frames.length;
    const delta = pattern(PARAMETERS, 2);
    expect((await device.submit(a, delta, 1)).acceptedCount).toBe(1);

    const frames = proxy.frames.slice(mark);
    const data = frames.filter((f) => f.direction === 'up' && f.type === FRAME.DATA);
    const upload = Math.max(...data.map((f) => f.streamId));
    expect(data.filter((f) => f.streamId === upload).reduce((n, f) => n + f.length, 0)).toBeGreaterThan(delta.byteLength);
    // The coordinator's SETTINGS (not ACKs) during the upload: the raised window, then the default again.
    const windows = frames
      .filter((f) => f.direction === 'down' && f.type === FRAME.SETTINGS && (f.flags & 0x1) === 0)
      .flatMap((f) => f.settings!.filter(([id]) => id === SETTING.INITIAL_WINDOW_SIZE).map(([, value]) => value));
    expect(windows).toHaveLength(2);
    expect(windows[0]).toBeGreaterThan(delta.byteLength - SERVER_STREAM_WINDOW_BYTES);
    expect(windows[0]).toBeLessThanOrEqual(MAX_UPLOAD_WINDOW_BYTES);
    expect(windows[1]).toBe(SERVER_STREAM_WINDOW_BYTES);
    // With the default window alone the coordinator gives the upload stream window back a dozen
    // times (once per ~32 KiB read); raised, a few (the reader gives half a window back at a time).
    const updates = frames.filter((f) => f.direction === 'down' && f.type === FRAME.WINDOW_UPDATE && f.streamId === upload);
    expect(updates.length).toBeLessThanOrEqual(3);
  });
});
