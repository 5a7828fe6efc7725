import { mkdtemp, readFile, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createDeviceEncryption, evaluateLocal, initTensorflow, taskModelBodyFromSpec, type DeviceEncryption } from '@veil/client-sdk';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { bytesToFloat32 } from '@veil/protocol/codec';
import { loadMnist } from './mnist.js';
import { createMnistMlp } from './model.js';
import type { DemoTlsFiles } from './client-worker.js';
import { calibrationLine, calibrationSummary, demoTaskSettings, readDemoCalibration, round4, startDevices, waitForExit, type DemoOptions, type DemoRound, type DemoSummary } from './run-demo.js';

export interface RemoteDemoOptions extends DemoOptions {
  /** gRPC address devices use, `host:port`. */
  coordinatorGrpc: string;
  /** REST base URL, e.g. `http://coordinator:8080`. */
  coordinatorHttp: string;
  adminToken: string;
  enrolmentSecret: string;
  /**
   * Device key bundle directory (`veil keys generate`'s `device/`) when the
   * coordinator encrypts with its VEIL_KEYS_DIR key; null for a plaintext task.
   */
  deviceKeyDir: string | null;
  /** TLS: the CA to pin for REST and gRPC, and a client certificate for mutual TLS (PEM files). Default none. */
  tls?: DemoTlsFiles;
}

/** One REST call over http or https (with the pinned CA): node:https, since fetch cannot pin a CA. */
function restCall(url: string, init: { method: string; headers: Record<string, string>; body?: string }, tls: { ca: Buffer; cert?: Buffer; key?: Buffer } | null): Promise<{ status: number; contentType: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const target = new URL(url);
    const send = target.protocol === 'https:' ? https.request : http.request;
    const request = send(target, { method: init.method, headers: init.headers, ...(tls && { ca: tls.ca, cert: tls.cert, key: tls.key }) }, (response) => {
      const chunks: Buffer[] = [];
      response.on('data', (c: Buffer) => chunks.push(c));
      response.on('end', () => resolve({ status: response.statusCode ?? 0, contentType: String(response.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }));
      response.on('error', reject);
    });
    request.on('error', reject);
    request.end(init.body);
  });
}

/**
 * `veil demo --coordinator-grpc … --coordinator-http …`: the MNIST demo against
 * a coordinator that is already running (for example the docker-compose
 * stack): creates the task over REST, starts the device processes, and
 * evaluates each round's global model (as a key holder when encrypted).
 */
export async function runRemoteDemo(
  options: RemoteDemoOptions,
): Promise<{ rounds: DemoRound[]; finalAccuracy: number; taskId: string; taskStatus: string; encrypted: boolean } & Pick<DemoSummary, 'calibrated' | 'calibrationNoiseSwamped'>> {
  const say = (line: string): void => {
    if (!options.json) process.stderr.write(`${line}\n`);
  };
  const tlsFiles = options.tls;
  const tls =
    tlsFiles === undefined
      ? null
      : {
          ca: await readFile(tlsFiles.caFile),
          ...(tlsFiles.certFile !== undefined && { cert: await readFile(tlsFiles.certFile) }),
          ...(tlsFiles.keyFile !== undefined && { key: await readFile(tlsFiles.keyFile) }),
        };
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const response = await restCall(
      options.coordinatorHttp + path,
      {
        method,
        headers: { authorization: `Bearer ${options.adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
        ...(body !== undefined && { body: JSON.stringify(body) }),
      },
      tls,
    );
    if (response.status < 200 || response.status > 299) throw new Error(`${method} ${path}: HTTP ${response.status} ${response.body.toString('utf8')}`);
    const bytes = response.body;
    return (response.contentType.includes('json') ? JSON.parse(bytes.toString('utf8')) : bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)) as T;
  };
  const logDir = await mkdtemp(join(tmpdir(), 'veil-remote-demo-'));
  const workers: ChildProcess[] = [];
  let evaluator: DeviceEncryption | null = null;
  try {
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const { test } = loadMnist();
    const { spec, weights } = createMnistMlp(tf, { seed: options.seed });
    const task = await api<{ id: string; encryption: { keyId: string } | null }>('POST', '/v1/tasks', {
      ...demoTaskSettings(options),
      ...(options.deviceKeyDir === null && { encryption: { mode: 'none' } }),
      model: taskModelBodyFromSpec(spec, weights),
      start: true,
    });
    if (options.deviceKeyDir !== null) evaluator = await createDeviceEncryption(await readDeviceKeyMaterial(options.deviceKeyDir));
    say(`task ${task.id} on ${options.coordinatorHttp}: ${task.encryption ? `encrypted (key ${task.encryption.keyId})` : 'plaintext'}, ${options.rounds} rounds x ${options.clients} devices`);
    process.stderr.write(`veil demo: dashboard ${options.coordinatorHttp.replace(/\/$/, '')}/dashboard/#/tasks/${task.id} (sign in with VEIL_ADMIN_TOKEN)\n`);
    const failures: string[] = [];
    workers.push(
      ...startDevices({
        address: options.coordinatorGrpc,
        taskId: task.id,
        enrolmentSecret: options.enrolmentSecret,
        options,
        deviceKeyDir: options.deviceKeyDir,
        ...(options.tls && { tls: options.tls }),
        logDir,
        failures,
      }),
    );
    const rounds: DemoRound[] = [];
    const seen = new Set<number>();
    let current = { version: 0, weights };
    let status = 'RUNNING';
    const deadline = Date.now() + options.rounds * options.roundDeadlineMs + 120_000;
    while (Date.now() < deadline) {
      const history = await api<{
        rounds: Array<{
          number: number;
          state: string;
          summary: { participants: number; uploadBytes: number; modelVersion: number | null; calibration?: { stage: string; modelVersion: number } } | null;
          openedAt: string;
          closedAt: string | null;
        }>;
      }>(
        'GET',
        `/v1/tasks/${task.id}/rounds`,
      );
      for (const round of history.rounds.filter((r) => r.state === 'CLOSED' && !seen.has(r.number))) {
        seen.add(round.number);
        const calibration = round.summary?.calibration;
        if (calibration !== undefined) {
          // A calibration round produces no model: report what it aggregated (as the local demo does).
          say(`calibration ${calibration.stage} round: statistics of ${round.summary?.participants ?? 0} devices on model version ${calibration.modelVersion}`);
          continue;
        }
        const version = round.summary?.modelVersion ?? current.version;
        for (let v = current.version + 1; v <= version; v++) {
          const bytes = new Uint8Array(await api<ArrayBuffer>('GET', `/v1/tasks/${task.id}/model/weights.bin?version=${v}`));
          current = { version: v, weights: evaluator === null ? bytesToFloat32(bytes) : evaluator.applySum(current.weights, bytes) };
        }
        const e = await evaluateLocal(tf, { spec, weights: current.weights, data: test });
        const entry: DemoRound = {
          round: round.number,
          accuracy: round4(e.accuracy),
          loss: round4(e.loss),
          clients: round.summary?.participants ?? 0,
          uploadBytes: round.summary?.uploadBytes ?? 0,
          durationMs: new Date(round.closedAt ?? Date.now()).getTime() - new Date(round.openedAt).getTime(),
        };
        rounds.push(entry);
        say(`round ${entry.round}/${options.rounds}  accuracy ${(entry.accuracy * 100).toFixed(2)}%  ${entry.clients} updates  ${(entry.uploadBytes / 1e6).toFixed(2)} MB up`);
      }
      status = (await api<{ status: string }>('GET', `/v1/tasks/${task.id}`)).status;
      if (status !== 'RUNNING' && seen.size >= history.rounds.filter((r) => r.state === 'CLOSED').length) break;
      await new Promise((r) => setTimeout(r, 1000));
    }
    let calibration: Awaited<ReturnType<typeof readDemoCalibration>> | undefined;
    if (options.calibrate) {
      // As the local demo: the task's statistics, opened with the device key when they are encrypted.
      const response = await restCall(`${options.coordinatorHttp}/v1/tasks/${task.id}/calibration`, { method: 'GET', headers: { authorization: `Bearer ${options.adminToken}` } }, tls);
      calibration = await readDemoCalibration(response.status, response.body.toString('utf8'), options.deviceKeyDir);
      say(calibrationLine(calibration, status, task.encryption !== null));
    }
    await Promise.all(workers.map((w) => waitForExit(w, 30_000)));
    for (const failure of failures) say(`warning: ${failure}`);
    return {
      rounds,
      finalAccuracy: rounds.at(-1)?.accuracy ?? 0,
      taskId: task.id,
      taskStatus: status,
      encrypted: task.encryption !== null,
      ...(calibration !== undefined && calibrationSummary(calibration)),
    };
  } finally {
    evaluator?.dispose();
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await rm(logDir, { recursive: true, force: true });
  }
}
