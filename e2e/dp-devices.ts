/**
 * Many light devices of the end-to-end DP test in one process (`node --import
 * tsx e2e/dp-devices.ts`): each is its own client SDK instance with its own
 * gRPC channel, credential and data shard, taking part through the public SDK
 * until the task ends; only the process (and the TF.js runtime) is shared.
 *
 * Configured by the environment variable VEIL_E2E_DP_DEVICES (JSON
 * {@link DpDevicesConfig}). Reports on stdout one JSON {@link DpDevicesMessage}
 * per device when it finishes, then `all-done`. SDK logs go to stderr.
 */
import { createClient, type RunSummary, type SdkLogger } from '@veil/client-sdk';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { readShard, type ShardFile } from './shard.js';

export interface DpDevicesConfig {
  coordinator: string;
  taskId: string;
  enrolmentSecret: string;
  /** Device numbers and their shards. */
  devices: Array<{ index: number; shard: ShardFile }>;
  /** Directory of the federation's device key bundle. */
  deviceKeyDir: string;
}

export type DpDevicesMessage =
  | { type: 'done'; index: number; rounds: number; uploadBytes: number[]; summary: RunSummary }
  | { type: 'error'; index: number; message: string }
  | { type: 'all-done'; devices: number };

const raw = process.env['VEIL_E2E_DP_DEVICES'];
if (raw === undefined) throw new Error('VEIL_E2E_DP_DEVICES is not set: this script is started by e2e/dp.test.ts');
const config = JSON.parse(raw) as DpDevicesConfig;
const report = (message: DpDevicesMessage): void => {
  process.stdout.write(`${JSON.stringify(message)}\n`);
};
const line = (level: string) => (obj: object, msg: string) => process.stderr.write(`${JSON.stringify({ level, msg, ...obj })}\n`);
const logger: SdkLogger = { debug: () => {}, info: () => {}, warn: line('warn'), error: line('error') };
const deviceKey = await readDeviceKeyMaterial(config.deviceKeyDir);

let failed = false;
await Promise.all(
  config.devices.map(async ({ index, shard }) => {
    const data = await readShard(shard);
    const client = createClient({
      encryption: { deviceKey },
      coordinator: config.coordinator,
      taskId: config.taskId,
      credentials: { enrolmentSecret: config.enrolmentSecret },
      name: `e2e-dp-device-${index}`,
      logger,
      backend: 'wasm',
      // Long-polls answer at once on selection; a short wait keeps presence fresh for Poisson sampling.
      pollWaitMs: 10_000,
    });
    const uploadBytes: number[] = [];
    try {
      const summary = await client.run({ data, onRound: (r) => uploadBytes.push(r.uploadBytes) });
      report({ type: 'done', index, rounds: uploadBytes.length, uploadBytes: [...new Set(uploadBytes)], summary });
    } catch (error) {
      failed = true;
      report({ type: 'error', index, message: (error as Error).message });
    } finally {
      client.close();
    }
  }),
);
report({ type: 'all-done', devices: config.devices.length });
if (failed) process.exitCode = 1;
