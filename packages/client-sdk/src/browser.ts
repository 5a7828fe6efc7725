/**
 * The SDK's browser entry (bundled by scripts/build-browser.mjs into dist-browser/): the same
 * client, training, differential privacy and committee encryption as in Node, over the fetch
 * transport (Connect protocol on the coordinator's HTTP port). TF.js and its backend
 * (webgpu → webgl → wasm → cpu) and node-seal (shared-key BFV tasks only) load lazily, as
 * separate chunks, when a task first needs them.
 */
export { createClient } from './client.js';
export type { ClientCredentials, ClientOptions, CommitteeClientOptions, RoundReport, RunOptions, RunSummary, SdkLogger, VeilClient } from './client.js';
export { createConnectTransport } from './transport/connect-transport.js';
export type { ConnectTransportOptions } from './transport/connect-transport.js';
export type { Transport } from './transport/transport.js';
export { ClientError } from './errors.js';
export { initTensorflow } from './training/backend.js';
export type { InitTensorflowOptions, TensorflowBackend, TensorflowRuntime } from './training/backend.js';
export { buildModel, flattenWeights, describeModel } from './training/model.js';
export { trainLocal, evaluateLocal } from './training/train.js';
export type { LocalDataset, ModelSpec } from './training/types.js';
export { createLocalDpMiddleware } from './mods/dp.js';
export type { LocalDpState } from './mods/dp.js';
export type { CommitteePins } from './mods/committee.js';
// Shared-key BFV tasks: the device key (from `veil keys generate`, device-key.json's bytes) and its encryption; node-seal loads here.
export { createDeviceEncryption } from './mods/encrypt.js';
export type { DeviceEncryption } from './mods/encrypt.js';
export { parseDeviceKeyMaterial } from '@veil/crypto';

/** A logger for pages: console.debug/info/warn/error with the record. */
export const browserLogger = {
  debug: (obj: object, msg: string): void => console.debug(`veil-sdk ${msg}`, obj),
  info: (obj: object, msg: string): void => console.info(`veil-sdk ${msg}`, obj),
  warn: (obj: object, msg: string): void => console.warn(`veil-sdk ${msg}`, obj),
  error: (obj: object, msg: string): void => console.error(`veil-sdk ${msg}`, obj),
};
