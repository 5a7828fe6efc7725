/**
 * What the coordinator's gRPC server announces to every device connection
 * (HTTP/2 SETTINGS frame), read by a plain HTTP/2 client on loopback.
 */
import http2 from 'node:http2';
import { describe, expect, it } from 'vitest';
import { MAX_CHUNK_BYTES } from '@veil/protocol';
import { startTestCoordinator } from './helpers.js';

describe('gRPC server HTTP/2 settings', () => {
  it('announces 1 MiB frames (not the 16 KiB default) and 10,000 concurrent streams', async () => {
    await using t = await startTestCoordinator();
    const session = http2.connect(`http://${t.coordinator.grpcAddress}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxFrameSize).toBe(MAX_CHUNK_BYTES);
      expect(settings.maxConcurrentStreams).toBe(10_000);
      // The receive window stays HTTP/2's default: an upload held for the transfer budget stays on the device.
      expect(settings.initialWindowSize).toBe(65_535);
    } finally {
      session.destroy();
    }
  });
});
