/**
 * Connection limits of both servers (issue 12, item 5), as a client on
 * loopback sees them: the gRPC server announces the configured concurrent
 * streams and closes a connection left without calls; the REST server closes
 * a socket that sends nothing.
 */
import http2 from 'node:http2';
import { connect } from 'node:net';
import { describe, expect, test } from 'vitest';
import { loadConfig } from '../src/index.js';
import { startTestCoordinator } from './helpers.js';

describe('server limits', () => {
  test('gRPC: configured concurrent streams announced; an idle connection is closed (GOAWAY)', async () => {
    const defaults = loadConfig({});
    await using t = await startTestCoordinator({
      config: { grpcLimits: { ...defaults.grpcLimits, maxConcurrentStreams: 64, maxConnectionIdleMs: 1_000 } },
    });
    const session = http2.connect(`http://${t.coordinator.grpcAddress}`);
    try {
      const settings = await new Promise<http2.Settings>((resolve, reject) => {
        session.once('remoteSettings', resolve);
        session.once('error', reject);
      });
      expect(settings.maxConcurrentStreams).toBe(64);
      const opened = Date.now();
      await new Promise<void>((resolve) => session.once('goaway', () => resolve()));
      const idleMs = Date.now() - opened;
      expect(idleMs).toBeGreaterThanOrEqual(900);
      expect(idleMs).toBeLessThan(6_000);
    } finally {
      session.destroy();
    }
  });

  test('REST: a socket that sends nothing is closed at the connection timeout', async () => {
    const defaults = loadConfig({});
    await using t = await startTestCoordinator({ config: { httpLimits: { ...defaults.httpLimits, connectionTimeoutMs: 500 } } });
    const url = new URL(t.coordinator.httpUrl);
    const closedAfterMs = await new Promise<number>((resolve, reject) => {
      const opened = Date.now();
      const socket = connect(Number(url.port), url.hostname);
      socket.on('error', reject);
      socket.on('close', () => resolve(Date.now() - opened));
    });
    expect(closedAfterMs).toBeGreaterThanOrEqual(400);
    expect(closedAfterMs).toBeLessThan(5_000);
    // A request still gets its answer.
    expect((await t.rest.request('GET', '/v1/health', { token: null })).status).toBe(200);
  });
});
