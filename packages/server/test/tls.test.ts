/**
 * TLS on both servers (issue 12, item 1): certificates from files, reloaded
 * without a restart, optional mutual TLS for devices, cleartext clients
 * refused. Certificates come from `veil tls dev-ca`'s generator; devices use
 * the SDK's gRPC transport with a pinned CA. Real servers on loopback.
 */
import { copyFile, mkdtemp, readFile, rm } from 'node:fs/promises';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createDevCa, type DevCaFiles } from '../../cli/src/tls/dev-ca.js';
import { createGrpcTransport } from '../../client-sdk/src/transport/grpc-transport.js';
import { ClientError } from '../../client-sdk/src/errors.js';
import { TINY_PARAMETERS, pattern, secretOf, startTestCoordinator, tinyTaskBody, type TestCoordinator } from './helpers.js';

/** GET over HTTPS trusting only `ca`; resolves with the status or rejects with the TLS error. */
function httpsGet(url: string, ca: Buffer, path = '/v1/health'): Promise<number> {
  return new Promise((resolve, reject) => {
    const request = https.get(new URL(path, url), { ca, timeout: 5_000, agent: false }, (response) => {
      response.resume();
      resolve(response.statusCode ?? 0);
    });
    request.on('error', reject);
  });
}

/** A device's first call (Join) over TLS with `ca` pinned (and a client certificate): 'ok', or the error code. */
async function tryJoin(t: TestCoordinator, taskId: string, tls: { ca?: Buffer; cert?: Buffer; key?: Buffer } | null): Promise<string> {
  const address = tls === null ? t.coordinator.grpcAddress : `grpcs://${t.coordinator.grpcAddress}`;
  const transport = createGrpcTransport({ address, callTimeoutMs: 5_000, ...(tls !== null && { tls }) });
  try {
    await transport.join({ taskId, enrolmentSecret: secretOf(t.coordinator), clientName: 'tls-device' });
    return 'ok';
  } catch (error) {
    return error instanceof ClientError ? error.code : String(error);
  } finally {
    transport.close();
  }
}

describe('TLS', () => {
  let dir: string;
  let first: DevCaFiles;
  let second: DevCaFiles;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'veil-tls-'));
    first = await createDevCa({ outDir: join(dir, 'first'), clientName: 'device-1' });
    second = await createDevCa({ outDir: join(dir, 'second') });
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('both servers speak TLS only; a renewed certificate is taken up without a restart', async () => {
    // The coordinator reads its own copies, which are replaced below as a renewal would.
    const live = { cert: join(dir, 'live.crt'), key: join(dir, 'live.key') };
    await copyFile(first.serverCertFile, live.cert);
    await copyFile(first.serverKeyFile, live.key);
    await using t = await startTestCoordinator({
      config: { tls: { certFile: live.cert, keyFile: live.key, clientCaFile: undefined, reloadIntervalMs: 100 } },
    });
    expect(t.coordinator.tls).toBe(true);
    expect(t.coordinator.httpUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ca1 = await readFile(first.caCertFile);
    const ca2 = await readFile(second.caCertFile);

    // REST: HTTPS with the pinned CA; another CA is refused; cleartext HTTP gets no answer.
    expect(await httpsGet(t.coordinator.httpUrl, ca1)).toBe(200);
    await expect(httpsGet(t.coordinator.httpUrl, ca2)).rejects.toThrow(/self-signed|unable to verify|certificate/i);
    await expect(fetch(t.coordinator.httpUrl.replace('https:', 'http:') + '/v1/health')).rejects.toThrow();
    // The test REST client (plain fetch) cannot reach it either, so create the task over HTTPS by hand.
    const { id: taskId } = await createTinyTaskOverHttps(t, ca1);

    // gRPC: a device pinning the CA joins; one pinning another CA, or speaking cleartext, is refused.
    expect(await tryJoin(t, taskId, { ca: ca1 })).toBe('ok');
    expect(await tryJoin(t, taskId, { ca: ca2 })).toBe('unavailable');
    expect(await tryJoin(t, taskId, null)).toBe('unavailable');

    // Renewal: the files change; new connections get the new certificate (no restart).
    await copyFile(second.serverCertFile, live.cert);
    await copyFile(second.serverKeyFile, live.key);
    const until = Date.now() + 10_000;
    while ((await httpsGet(t.coordinator.httpUrl, ca2).catch(() => 0)) !== 200) {
      if (Date.now() > until) throw new Error('the renewed certificate was not taken up');
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    await expect(httpsGet(t.coordinator.httpUrl, ca1)).rejects.toThrow(/self-signed|unable to verify|certificate/i);
    expect(await tryJoin(t, taskId, { ca: ca2 })).toBe('ok');
    expect(await tryJoin(t, taskId, { ca: ca1 })).toBe('unavailable');
    // Nothing new on disk: reloading again changes nothing. Bad material is refused and the old stays.
    expect(await t.coordinator.reloadTls()).toBe(false);
    await copyFile(first.serverKeyFile, live.key); // the key no longer matches the certificate
    expect(await t.coordinator.reloadTls()).toBe(false);
    expect(await httpsGet(t.coordinator.httpUrl, ca2)).toBe(200);
    expect(await tryJoin(t, taskId, { ca: ca2 })).toBe('ok');
  });

  test('mutual TLS: with a client CA, devices without a certificate from it are refused', async () => {
    await using t = await startTestCoordinator({
      config: { tls: { certFile: first.serverCertFile, keyFile: first.serverKeyFile, clientCaFile: first.caCertFile, reloadIntervalMs: 10_000 } },
    });
    const ca = await readFile(first.caCertFile);
    const { id: taskId } = await createTinyTaskOverHttps(t, ca);
    const cert = await readFile(first.clientCertFile!);
    const key = await readFile(first.clientKeyFile!);
    expect(await tryJoin(t, taskId, { ca, cert, key })).toBe('ok');
    expect(await tryJoin(t, taskId, { ca })).toBe('unavailable');
    // A certificate from another CA (the second CA's server certificate, used as a client's) is refused.
    expect(await tryJoin(t, taskId, { ca, cert: await readFile(second.serverCertFile), key: await readFile(second.serverKeyFile) })).toBe('unavailable');
    // The same on the HTTP port's device routes (Connect, browsers): no way around the certificate there.
    const join = { taskId, enrolmentSecret: t.coordinator.enrolmentSecret, clientName: 'connect-tls-device' };
    const withoutCert = await connectJoin(t, ca, join, null);
    expect(withoutCert).toEqual({ status: 401, body: { code: 'unauthenticated', message: 'a client certificate from the device CA is required' } });
    const otherCa = await connectJoin(t, ca, join, { cert: await readFile(second.serverCertFile), key: await readFile(second.serverKeyFile) });
    expect(otherCa.status).toBe(401);
    const joined = await connectJoin(t, ca, join, { cert, key });
    expect(joined.status).toBe(200);
    expect(joined.body).toMatchObject({ clientId: expect.any(String), credential: expect.any(String) });
    // Admin REST calls need no certificate on that port (no REST client CA): the task above was created without one.
    expect(await httpsGet(t.coordinator.httpUrl, ca)).toBe(200);
  });

  test('mutual TLS on REST: with a REST client CA, a caller without a certificate from it is refused at the handshake', async () => {
    await using t = await startTestCoordinator({
      config: { tls: { certFile: first.serverCertFile, keyFile: first.serverKeyFile, clientCaFile: undefined, restClientCaFile: first.caCertFile, reloadIntervalMs: 10_000 } },
    });
    const ca = await readFile(first.caCertFile);
    const cert = await readFile(first.clientCertFile!);
    const key = await readFile(first.clientKeyFile!);
    const adminGet = (client: { cert: Buffer; key: Buffer } | null): Promise<number> =>
      new Promise((resolve, reject) => {
        const request = https.get(
          new URL('/v1/tasks', t.coordinator.httpUrl),
          { ca, ...(client ?? {}), timeout: 5_000, agent: false, headers: { authorization: `Bearer ${t.coordinator.adminToken}` } },
          (response) => {
            response.resume();
            resolve(response.statusCode ?? 0);
          },
        );
        request.on('error', reject);
      });
    // The admin token alone is not enough: no HTTP is exchanged without a client certificate.
    await expect(adminGet(null)).rejects.toThrow(/certificate|socket hang up|ECONNRESET|alert/i);
    expect(await adminGet({ cert, key })).toBe(200);
    // A certificate from another CA is refused too.
    await expect(adminGet({ cert: await readFile(second.serverCertFile), key: await readFile(second.serverKeyFile) })).rejects.toThrow(
      /certificate|socket hang up|ECONNRESET|alert/i,
    );
    // The client certificate does not replace the token.
    const noToken = await new Promise<number>((resolve, reject) => {
      https
        .get(new URL('/v1/tasks', t.coordinator.httpUrl), { ca, cert, key, agent: false }, (response) => {
          response.resume();
          resolve(response.statusCode ?? 0);
        })
        .on('error', reject);
    });
    expect(noToken).toBe(401);
    // gRPC is not affected (no VEIL_TLS_CLIENT_CA_FILE): a device without a certificate joins.
    const { id: taskId } = await new Promise<{ id: string }>((resolve, reject) => {
      const request = https.request(
        new URL('/v1/tasks', t.coordinator.httpUrl),
        { method: 'POST', ca, cert, key, agent: false, headers: { authorization: `Bearer ${t.coordinator.adminToken}`, 'content-type': 'application/json' } },
        (response) => {
          const chunks: Buffer[] = [];
          response.on('data', (c: Buffer) => chunks.push(c));
          response.on('end', () => (response.statusCode === 201 ? resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')) as { id: string }) : reject(new Error(String(response.statusCode)))));
        },
      );
      request.on('error', reject);
      request.end(JSON.stringify(tinyTaskBody(pattern(TINY_PARAMETERS, 1), { start: true })));
    });
    expect(await tryJoin(t, taskId, { ca })).toBe('ok');
  });

  test('bad TLS files stop the start with a clear error', async () => {
    await expect(
      startTestCoordinator({ config: { tls: { certFile: first.serverCertFile, keyFile: second.serverKeyFile, clientCaFile: undefined, reloadIntervalMs: 1000 } } }),
    ).rejects.toThrow(/TLS material refused .*key does not belong to the certificate/);
    await expect(
      startTestCoordinator({ config: { tls: { certFile: join(dir, 'missing.crt'), keyFile: first.serverKeyFile, clientCaFile: undefined, reloadIntervalMs: 1000 } } }),
    ).rejects.toThrow(/cannot read the TLS certificate/);
  });
});

/** Join over Connect (JSON) on the HTTPS port, with `client` as the client certificate. */
function connectJoin(t: TestCoordinator, ca: Buffer, join: Record<string, unknown>, client: { cert: Buffer; key: Buffer } | null): Promise<{ status: number; body: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      new URL('/veil.v1.FederationService/Join', t.coordinator.httpUrl),
      { method: 'POST', ca, ...(client ?? {}), agent: false, headers: { 'content-type': 'application/json' } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> }));
      },
    );
    request.on('error', reject);
    request.end(JSON.stringify(join));
  });
}

/** Creates the tiny task over HTTPS (the fixture's REST client speaks cleartext). */
async function createTinyTaskOverHttps(t: TestCoordinator, ca: Buffer): Promise<{ id: string }> {
  const body = JSON.stringify(tinyTaskBody(pattern(TINY_PARAMETERS, 1), { start: true }));
  return new Promise((resolve, reject) => {
    const request = https.request(
      new URL('/v1/tasks', t.coordinator.httpUrl),
      { method: 'POST', ca, headers: { authorization: `Bearer ${t.coordinator.adminToken}`, 'content-type': 'application/json' } },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => {
          const text = Buffer.concat(chunks).toString('utf8');
          if (response.statusCode !== 201) reject(new Error(`task creation failed: ${response.statusCode} ${text}`));
          else resolve(JSON.parse(text) as { id: string });
        });
      },
    );
    request.on('error', reject);
    request.end(body);
  });
}
