/**
 * What the coordinator's gRPC server announces to every device connection
 * (HTTP/2 SETTINGS and WINDOW_UPDATE frames), read by a plain HTTP/2 client on
 * loopback. (What the stream window lets a held upload park: transfer-budget.test.ts.)
 */
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { MAX_CHUNK_BYTES } from '@veil/protocol';
import { SERVER_CONNECTION_WINDOW_BYTES, SERVER_STREAM_WINDOW_BYTES } from '../src/grpc/federation-service.js';
import { startTestCoordinator } from './helpers.js';

describe('gRPC server HTTP/2 settings', () => {
  it("announces 1 MiB frames, HTTP/2's default 65,535-byte stream window (what a held upload may park), a 16 MiB connection window and 10,000 concurrent streams", async () => {
    await using t = await startTestCoordinator();
    const session = http2.connect(`http://${t.coordinator.grpcAddress}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxFrameSize).toBe(MAX_CHUNK_BYTES);
      expect(settings.maxConcurrentStreams).toBe(10_000);
      expect(SERVER_STREAM_WINDOW_BYTES).toBe(65_535);
      expect(settings.initialWindowSize).toBe(SERVER_STREAM_WINDOW_BYTES);
      // The connection's WINDOW_UPDATE follows the SETTINGS frame; a ping round trip makes sure it has arrived.
      await new Promise<void>((resolve, reject) => session.ping((error) => (error ? reject(error) : resolve())));
      expect(SERVER_CONNECTION_WINDOW_BYTES).toBe(16 * 2 ** 20);
      expect(session.state.remoteWindowSize).toBe(SERVER_CONNECTION_WINDOW_BYTES);
    } finally {
      session.destroy();
    }
  });

});
