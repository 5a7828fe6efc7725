/**
 * What the coordinator's gRPC server announces to every device connection
 * (HTTP/2 SETTINGS and WINDOW_UPDATE frames), read by a plain HTTP/2 client on
 * loopback, and what that does to a device's upload: the frames between the
 * SDK and the coordinator, recorded by a proxy between them.
 */
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { MAX_CHUNK_BYTES } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import { SERVER_CONNECTION_WINDOW_BYTES, SERVER_STREAM_WINDOW_BYTES } from '../src/grpc/federation-service.js';
import { createTinyTask, joinDevice, pattern, startTestCoordinator } from './helpers.js';
import { END_STREAM, FRAME, recordFrames } from './http2-frames.js';

describe('gRPC server HTTP/2 settings', () => {
  it('announces 1 MiB frames, a 1 MiB stream window, a 16 MiB connection window and 10,000 concurrent streams', async () => {
    await using t = await startTestCoordinator();
    const session = http2.connect(`http://${t.coordinator.grpcAddress}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxFrameSize).toBe(MAX_CHUNK_BYTES);
      expect(settings.maxConcurrentStreams).toBe(10_000);
      expect(SERVER_STREAM_WINDOW_BYTES).toBe(MAX_CHUNK_BYTES);
      expect(settings.initialWindowSize).toBe(SERVER_STREAM_WINDOW_BYTES);
      // The connection's WINDOW_UPDATE follows the SETTINGS frame; a ping round trip makes sure it has arrived.
      await new Promise<void>((resolve, reject) => session.ping((error) => (error ? reject(error) : resolve())));
      expect(SERVER_CONNECTION_WINDOW_BYTES).toBe(16 * 2 ** 20);
      expect(session.state.remoteWindowSize).toBe(SERVER_CONNECTION_WINDOW_BYTES);
    } finally {
      session.destroy();
    }
  });

  it("a device's 400 kB update reaches the coordinator in one flight: no WINDOW_UPDATE before its last DATA frame", async () => {
    const parameters = 100_000;
    await using t = await startTestCoordinator();
    const base = pattern(parameters, 1);
    const model = {
      topology: { class_name: 'Sequential', config: { name: 'flight', layers: [] } },
      weightSpecs: [{ name: 'w', shape: [parameters], dtype: 'float32' }],
      weightsBase64: Buffer.from(float32ToBytes(base)).toString('base64'),
    };
    const { id: taskId } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, model }, base);
    await using proxy = await recordFrames(t.coordinator.grpcAddress);
    using device = await joinDevice(t.coordinator, taskId, 'device-1', undefined, proxy.address);
    const assignment = await device.nextAssignment();
    const before = proxy.frames.length;
    expect(await device.submit(assignment, pattern(parameters, 2), 5)).toEqual({ acceptedCount: 1 });

    const upload = proxy.frames.slice(before);
    const data = upload.filter((f) => f.direction === 'up' && f.type === FRAME.DATA);
    const streamId = data[0]!.streamId;
    const last = upload.findIndex((f) => f.direction === 'up' && f.type === FRAME.DATA && f.streamId === streamId && (f.flags & END_STREAM) !== 0);
    expect(last).toBeGreaterThan(0);
    // Everything the device sent on the upload's stream: the header message and the 400 kB chunk.
    expect(data.filter((f) => f.streamId === streamId).reduce((n, f) => n + f.length, 0)).toBeGreaterThan(parameters * 4);
    // With HTTP/2's 64 KiB default windows the device stopped 6-7 times for the coordinator's WINDOW_UPDATE.
    const waits = upload.slice(0, last).filter((f) => f.direction === 'down' && f.type === FRAME.WINDOW_UPDATE);
    expect(waits).toEqual([]);
  });
});
