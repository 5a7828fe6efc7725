/**
 * One device of the end-to-end federation test, run as its own process
 * (`node --import tsx e2e/device.ts`). Like a device app it holds only its own
 * data (its shard file of MNIST training digits) and takes part in the task
 * through the public client SDK until the task ends.
 *
 * Configured by the environment variable VEIL_E2E_DEVICE (JSON {@link DeviceConfig}).
 * Reports on stdout one JSON {@link DeviceMessage} per line: one per round and
 * one at the end. SDK logs go to stderr.
 */
import { createClient, type CommitteePins, type RoundReport, type RunSummary, type SdkLogger } from '@veil/client-sdk';
import { requestDeviceCertificate } from '@veil/custodian';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { readFile } from 'node:fs/promises';
import { readShard, type ShardFile } from './shard.js';

export interface DeviceConfig {
  /** Coordinator gRPC address, `host:port`. */
  coordinator: string;
  taskId: string;
  enrolmentSecret: string;
  /** This device's number, 0-based. */
  index: number;
  /** This device's training examples. */
  shard: ShardFile;
  /** Directory of the federation's device key bundle (encrypted tasks). */
  deviceKeyDir?: string;
  /** TLS to the coordinator: the CA file to pin, and a client certificate and key (mutual TLS). */
  tls?: { caFile: string; certFile?: string; keyFile?: string };
  /** Committee tasks: the app's pins and the enrolment authority's service (not the coordinator). */
  committee?: { pins: CommitteePins; enrolmentUrl: string; enrolmentSecret: string };
}

export type DeviceMessage =
  | ({ type: 'round'; index: number } & RoundReport)
  | { type: 'done'; index: number; examples: number; summary: RunSummary }
  | { type: 'error'; index: number; message: string };

const raw = process.env['VEIL_E2E_DEVICE'];
if (raw === undefined) throw new Error('VEIL_E2E_DEVICE is not set: this script is started by e2e/federation.test.ts');
const config = JSON.parse(raw) as DeviceConfig;

const report = (message: DeviceMessage): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};
const line = (level: string) => (obj: object, msg: string) => process.stderr.write(`${JSON.stringify({ level, msg, ...obj })}\n`);
const logger: SdkLogger = { debug: () => {}, info: line('info'), warn: line('warn'), error: line('error') };

const data = await readShard(config.shard);
const deviceKey = config.deviceKeyDir === undefined ? null : await readDeviceKeyMaterial(config.deviceKeyDir);
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
  ...(config.committee !== undefined && {
    committee: {
      pins: config.committee.pins,
      certify: async ({ taskId, deviceId, devicePublicKey }) =>
        (await requestDeviceCertificate({ url: config.committee!.enrolmentUrl, enrolmentSecret: config.committee!.enrolmentSecret, taskId, deviceId, devicePublicKey })).certificate,
    },
  }),
  coordinator: config.coordinator,
  ...(tls !== undefined && { tls }),
  taskId: config.taskId,
  credentials: { enrolmentSecret: config.enrolmentSecret },
  name: `e2e-device-${config.index}`,
  logger,
  backend: 'wasm',
});
try {
  const summary = await client.run({ data, onRound: (r) => report({ type: 'round', index: config.index, ...r }) });
  report({ type: 'done', index: config.index, examples: data.count, summary });
} catch (error) {
  report({ type: 'error', index: config.index, message: (error as Error).message });
  process.exitCode = 1;
} finally {
  client.close();
}
