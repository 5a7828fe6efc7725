/**
 * End to end over TLS: `veil tls dev-ca` makes a CA, server and client
 * certificates; a `veil server` process serves gRPC and REST over TLS with
 * mutual TLS for devices; three device processes (the SDK, CA pinned, client
 * certificate) train MNIST for two rounds. Cleartext clients and devices
 * without a certificate are refused; SIGHUP takes up a renewed certificate
 * without a restart; in production the server refuses to serve beyond
 * loopback without TLS.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, readFile } from 'node:fs/promises';
import https from 'node:https';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { MNIST_TRAINING_DEFAULTS } from '@veil/cli';
import { ClientError, createGrpcTransport, evaluateLocal } from '@veil/client-sdk';
import type { DeviceConfig, DeviceMessage } from './device.js';
import {
  REPO_ROOT,
  VEIL_BIN,
  assertBuilt,
  childEnv,
  createDatabase,
  createTempDir,
  float32Base64,
  randomSecret,
  setUpMnist,
  startFederation,
  startDeviceProcess,
  tail,
  withTimeout,
  type DeviceProcess,
} from './support.js';

const DEVICES = 3;
const ROUNDS = 2;

/** An HTTPS request trusting only `ca` (a fresh connection each time); resolves with the status and body. */
function httpsRequest(url: string, ca: Buffer, options: { method?: string; token?: string; body?: unknown } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const request = https.request(
      url,
      {
        method: options.method ?? 'GET',
        ca,
        agent: false,
        timeout: 10_000,
        headers: {
          ...(options.token && { authorization: `Bearer ${options.token}` }),
          ...(options.body !== undefined && { 'content-type': 'application/json' }),
        },
      },
      (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    request.on('error', reject);
    request.end(options.body === undefined ? undefined : JSON.stringify(options.body));
  });
}

/** `veil tls dev-ca` through the real binary. */
function devCa(out: string, ...args: string[]): void {
  const run = spawnSync(process.execPath, [VEIL_BIN, 'tls', 'dev-ca', '--out', out, ...args], { cwd: REPO_ROOT, env: childEnv(), encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
  expect(run.stdout).toContain('server certificate (VEIL_TLS_CERT_FILE)');
}

test('a federation over mutual TLS; cleartext and certificate-less clients refused; SIGHUP reloads the certificate', async () => {
  assertBuilt();
  await using database = await createDatabase();
  await using dataDir = await createTempDir('veil-e2e-tls-');
  const pki = join(dataDir.path, 'pki');
  const renewed = join(dataDir.path, 'pki-renewed');
  devCa(pki, '--client', 'device');
  devCa(renewed);
  // The coordinator serves its own copies of the server pair (replaced below, as a renewal would).
  const live = { cert: join(dataDir.path, 'server.crt'), key: join(dataDir.path, 'server.key') };
  await copyFile(join(pki, 'server.crt'), live.cert);
  await copyFile(join(pki, 'server.key'), live.key);
  const ca = await readFile(join(pki, 'ca.crt'));
  const clientCert = await readFile(join(pki, 'client.crt'));
  const clientKey = await readFile(join(pki, 'client.key'));

  // Production refuses a non-loopback bind without TLS, with a clear message and exit status 2.
  const refused = spawnSync(process.execPath, [VEIL_BIN, 'server'], {
    cwd: REPO_ROOT,
    env: childEnv({ NODE_ENV: 'production', VEIL_HOST: '0.0.0.0', VEIL_ADMIN_TOKEN: randomSecret(), VEIL_AUDIT_TOKEN: randomSecret(), VEIL_ENROLMENT_SECRET: randomSecret(), DATABASE_URL: database.url }),
    encoding: 'utf8',
    timeout: 60_000,
  });
  expect(refused.status).toBe(2);
  expect(refused.stderr).toMatch(/refuses to serve 0\.0\.0\.0 without TLS/);

  await using federation = await startFederation({
    dataDir: dataDir.path,
    database,
    env: {
      NODE_ENV: 'production',
      // Production requires every secret explicitly (the audit token too).
      VEIL_AUDIT_TOKEN: randomSecret(),
      VEIL_TLS_CERT_FILE: live.cert,
      VEIL_TLS_KEY_FILE: live.key,
      VEIL_TLS_CLIENT_CA_FILE: join(pki, 'ca.crt'),
      // Polling far beyond the test: only SIGHUP can reload.
      VEIL_TLS_RELOAD_INTERVAL_MS: '3600000',
    },
  });
  const { coordinator, adminToken, enrolmentSecret } = federation;
  expect(coordinator.httpUrl).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
  const httpPort = Number(new URL(coordinator.httpUrl).port);
  const grpcPort = Number(coordinator.grpcAddress.split(':')[1]);

  // REST: HTTPS with the pinned CA; cleartext HTTP gets no answer.
  expect((await httpsRequest(`${coordinator.httpUrl}/v1/health`, ca)).status).toBe(200);
  await expect(fetch(`http://127.0.0.1:${httpPort}/v1/health`)).rejects.toThrow();

  const { tf, spec, initialWeights, heldOut, shards } = await setUpMnist(dataDir.path, { devices: DEVICES, partitionSeed: 2, trainCount: 1500, testCount: 500 });
  const created = await httpsRequest(`${coordinator.httpUrl}/v1/tasks`, ca, {
    method: 'POST',
    token: adminToken,
    body: {
      name: 'e2e-tls',
      encryption: { mode: 'none' },
      rounds: ROUNDS,
      clientsPerRound: DEVICES,
      minClients: DEVICES,
      minAvailableClients: DEVICES,
      roundDeadlineMs: 240_000,
      training: { ...MNIST_TRAINING_DEFAULTS, epochs: 1 },
      start: true,
      model: { topology: spec.topology, weightSpecs: spec.weightSpecs, weightsBase64: float32Base64(initialWeights) },
    },
  });
  expect(created.status, created.body).toBe(201);
  const taskId = (JSON.parse(created.body) as { id: string }).id;

  // gRPC: cleartext, and TLS without a client certificate, are refused before any call is served.
  // (The probe presents a made-up credential: UNAUTHENTICATED means the service was reached.)
  const probe = async (address: string, tls?: { ca: Buffer; cert?: Buffer; key?: Buffer }): Promise<string> => {
    const transport = createGrpcTransport({ address, callTimeoutMs: 10_000, ...(tls && { tls }) });
    try {
      await transport.getTask('A'.repeat(43));
      return 'ok';
    } catch (error) {
      return error instanceof ClientError ? error.code : String(error);
    } finally {
      transport.close();
    }
  };
  expect(await probe(`127.0.0.1:${grpcPort}`)).toBe('unavailable');
  expect(await probe(`grpcs://127.0.0.1:${grpcPort}`, { ca })).toBe('unavailable');
  expect(await probe(`grpcs://127.0.0.1:${grpcPort}`, { ca, cert: clientCert, key: clientKey })).toBe('unauthenticated');

  // The federation: three device processes over mutual TLS.
  const devices: DeviceProcess<DeviceMessage>[] = [];
  try {
    for (let index = 0; index < DEVICES; index++) {
      const config: DeviceConfig = {
        coordinator: `grpcs://127.0.0.1:${grpcPort}`,
        taskId,
        enrolmentSecret,
        index,
        shard: shards[index]!,
        tls: { caFile: join(pki, 'ca.crt'), certFile: join(pki, 'client.crt'), keyFile: join(pki, 'client.key') },
      };
      devices.push(startDeviceProcess('device.ts', 'VEIL_E2E_DEVICE', config, join(dataDir.path, `device-${index}.log`)));
    }
    const exits = await withTimeout('the device processes to finish', Promise.all(devices.map((d) => d.exit)), 600_000);
    exits.forEach((status, index) => {
      expect(status, `device ${index} exit status; its log:\n${tail(devices[index]!.logFile)}`).toEqual({ exitCode: 0, signalCode: null });
    });
  } finally {
    await Promise.all(devices.map((d) => d[Symbol.asyncDispose]()));
  }
  for (const device of devices) {
    expect(device.messages.find((m) => m.type === 'done')).toMatchObject({ summary: { rounds: ROUNDS, taskStatus: 'TASK_STATUS_COMPLETED' } });
  }
  const rounds = JSON.parse((await httpsRequest(`${coordinator.httpUrl}/v1/tasks/${taskId}/rounds`, ca, { token: adminToken })).body) as {
    rounds: Array<{ state: string; received: number }>;
  };
  expect(rounds.rounds.map((r) => [r.state, r.received])).toEqual([
    ['CLOSED', DEVICES],
    ['CLOSED', DEVICES],
  ]);
  // The model learned (it came over HTTPS too).
  const weights = await new Promise<Float32Array>((resolve, reject) => {
    https
      .get(`${coordinator.httpUrl}/v1/tasks/${taskId}/model/weights.bin`, { ca, agent: false, headers: { authorization: `Bearer ${adminToken}` } }, (response) => {
        const chunks: Buffer[] = [];
        response.on('data', (c: Buffer) => chunks.push(c));
        response.on('end', () => {
          const bytes = Buffer.concat(chunks);
          resolve(Float32Array.from({ length: bytes.byteLength / 4 }, (_, i) => bytes.readFloatLE(i * 4)));
        });
      })
      .on('error', reject);
  });
  const before = await evaluateLocal(tf, { spec, weights: initialWeights, data: heldOut });
  const after = await evaluateLocal(tf, { spec, weights, data: heldOut });
  expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.3);

  // Renewal: new certificate files, then SIGHUP; new connections get it, no restart.
  await copyFile(join(renewed, 'server.crt'), live.cert);
  await copyFile(join(renewed, 'server.key'), live.key);
  const renewedCa = await readFile(join(renewed, 'ca.crt'));
  const pid = coordinator.child.pid!;
  process.kill(pid, 'SIGHUP');
  const until = Date.now() + 15_000;
  while ((await httpsRequest(`${coordinator.httpUrl}/v1/health`, renewedCa).catch(() => ({ status: 0 }))).status !== 200) {
    if (Date.now() > until) throw new Error(`the renewed certificate was not taken up after SIGHUP\n${tail(coordinator.logFile)}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  await expect(httpsRequest(`${coordinator.httpUrl}/v1/health`, ca)).rejects.toThrow(/certificate|self-signed|verify/i);
  // Devices pinning the renewed CA (still with their client certificate) get in; the process never restarted.
  expect(await probe(`grpcs://127.0.0.1:${grpcPort}`, { ca: renewedCa, cert: clientCert, key: clientKey })).toBe('unauthenticated');
  expect(await probe(`grpcs://127.0.0.1:${grpcPort}`, { ca, cert: clientCert, key: clientKey })).toBe('unavailable');
  expect(coordinator.child.pid).toBe(pid);
  expect(coordinator.child.exitCode).toBeNull();
  expect(await readFile(coordinator.logFile, 'utf8')).toContain('TLS material reloaded');
});
