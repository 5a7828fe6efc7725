import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { createGrpcTransport, DEFAULT_RECEIVE_WINDOW_BYTES, resolveCoordinatorAddress } from './grpc-transport.js';

/**
 * What the device announces on the wire: an HTTP/2 listener on loopback (no
 * gRPC service; it only records the SETTINGS frame and the connection-level
 * WINDOW_UPDATE the device sends, then answers every request UNAVAILABLE).
 */
async function observeDevice(receiveWindowBytes?: number): Promise<{ initialWindowSize: number; connectionWindow: number }> {
  const server = http2.createServer();
  const seen = new Promise<{ initialWindowSize: number; connectionWindow: number }>((resolve) => {
    server.on('session', (session) => {
      session.once('remoteSettings', (settings) => {
        // The device raises its connection window right after the peer's settings; give the frame a moment.
        setTimeout(() => resolve({ initialWindowSize: settings.initialWindowSize ?? 65_535, connectionWindow: session.state.remoteWindowSize ?? 0 }), 200);
      });
    });
  });
  server.on('stream', (stream) => stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': '14' }, { endStream: true }));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const { port } = server.address() as AddressInfo;
  const transport = createGrpcTransport({ address: `127.0.0.1:${port}`, callTimeoutMs: 2_000, ...(receiveWindowBytes !== undefined && { receiveWindowBytes }) });
  cleanups.push(async () => transport.close());
  // Any call makes grpc-js connect; its answer (UNAVAILABLE) does not matter here.
  transport.getTask('a'.repeat(43)).catch(() => undefined);
  return seen;
}

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn();
});

describe('grpc transport receive window', () => {
  it('announces the 8 MiB default per stream and for the connection', async () => {
    const seen = await observeDevice();
    expect(DEFAULT_RECEIVE_WINDOW_BYTES).toBe(8 * 1024 * 1024);
    expect(seen.initialWindowSize).toBe(DEFAULT_RECEIVE_WINDOW_BYTES);
    expect(seen.connectionWindow).toBe(DEFAULT_RECEIVE_WINDOW_BYTES);
  });

  it('announces a configured window', async () => {
    const seen = await observeDevice(1_000_000);
    expect(seen.initialWindowSize).toBe(1_000_000);
    expect(seen.connectionWindow).toBe(1_000_000);
  });

  it('refuses windows HTTP/2 cannot express or below its default', () => {
    for (const bad of [0, 65_534, 2 ** 31, 1.5, Number.NaN]) {
      expect(() => createGrpcTransport({ address: '127.0.0.1:1', receiveWindowBytes: bad })).toThrow(RangeError);
    }
  });
});

describe('coordinator address and TLS', () => {
  it('host:port and grpc:// are cleartext; grpcs:// or a tls option mean TLS; contradictions are refused', () => {
    expect(resolveCoordinatorAddress('127.0.0.1:50051')).toMatchObject({ target: '127.0.0.1:50051', secure: false });
    expect(resolveCoordinatorAddress('grpc://coordinator:50051')).toMatchObject({ target: 'coordinator:50051', secure: false });
    expect(resolveCoordinatorAddress('grpcs://coordinator:50051')).toMatchObject({ target: 'coordinator:50051', secure: true });
    expect(resolveCoordinatorAddress('coordinator:50051', { ca: 'pem' })).toMatchObject({ target: 'coordinator:50051', secure: true });
    expect(() => resolveCoordinatorAddress('grpc://coordinator:50051', { ca: 'pem' })).toThrow(/cleartext/);
    expect(() => resolveCoordinatorAddress('grpcs://coordinator:50051', { cert: 'pem' })).toThrow(/go together/);
  });
});
