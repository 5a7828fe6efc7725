/**
 * "Your own model": a TF.js layers model to the `model` part of a task body
 * (POST /v1/tasks), and a task's global model back as a TF.js layers model,
 * in every encryption mode.
 */
import type { LayersModel } from '@tensorflow/tfjs';
import { bytesToFloat32, float32ToBytes } from '@veil/protocol/codec';
import type { DeviceKeyMaterial } from '@veil/crypto';
import { ClientError, type ClientErrorCode } from '../errors.js';
import { decryptGlobalModel } from '../mods/encrypt.js';
import { buildModel, describeModel, flattenWeights } from './model.js';
import type { ModelSpec, Tf, WeightSpec } from './types.js';

/** The `model` field of a task creation body: topology, weight specs and the initial weights (float32 LE, base64). */
export interface TaskModelBody {
  topology: Record<string, unknown>;
  weightSpecs: WeightSpec[];
  weightsBase64: string;
}

/** The task body's `model` for a model description and its flat initial weights. */
export function taskModelBodyFromSpec(spec: ModelSpec, weights: Float32Array): TaskModelBody {
  const expected = spec.weightSpecs.reduce((sum, w) => sum + w.shape.reduce((a, b) => a * b, 1), 0);
  if (weights.length !== expected) {
    throw new RangeError(`weight vector has ${weights.length} values but the model's weightSpecs describe ${expected}`);
  }
  return {
    topology: spec.topology,
    weightSpecs: spec.weightSpecs.map((w) => ({ ...w, shape: [...w.shape] })),
    weightsBase64: Buffer.from(float32ToBytes(weights)).toString('base64'),
  };
}

/** The task body's `model` for a live TF.js layers model (its current weights are the initial global model). */
export function taskModelBody(model: LayersModel): TaskModelBody {
  return taskModelBodyFromSpec(describeModel(model), flattenWeights(model));
}

/**
 * A whole task creation body: `settings` (name, rounds, clientsPerRound,
 * encryption or committee, privacy, training, ...; see the OpenAPI document's
 * POST /v1/tasks) plus the `model` of {@link taskModelBody}.
 */
export function taskBody<S extends Record<string, unknown>>(model: LayersModel, settings: S): S & { model: TaskModelBody } {
  if ('model' in settings) throw new TypeError('settings must not contain `model`: it is taken from the TF.js model');
  return { ...settings, model: taskModelBody(model) };
}

/** Options of {@link loadGlobalModel}. */
export interface LoadGlobalModelOptions {
  /** The coordinator's REST base URL, e.g. `http://127.0.0.1:8080`. */
  coordinatorUrl: string;
  taskId: string;
  /** Bearer token allowed to read models (the admin token). */
  token: string;
  /** Model version; default the task's current version. */
  version?: number;
  /**
   * Shared-key tasks (`encryption.mode: 'bfv'`) only: the device key material
   * (`readDeviceKeyMaterial(dir)` of @veil/crypto) that opens the round sums.
   */
  deviceKey?: DeviceKeyMaterial;
  /** fetch implementation (e.g. one with a TLS dispatcher); default the global fetch. */
  fetch?: typeof fetch;
}

/** The result of {@link loadGlobalModel}; the caller owns `model` and must `dispose()` it. */
export interface GlobalModel {
  model: LayersModel;
  version: number;
  spec: ModelSpec;
  weights: Float32Array;
}

const HTTP_CODES: Readonly<Record<number, ClientErrorCode>> = {
  400: 'invalid_argument',
  401: 'unauthenticated',
  403: 'permission_denied',
  404: 'not_found',
  409: 'failed_precondition',
  429: 'resource_exhausted',
};

interface ModelDocument {
  modelTopology: Record<string, unknown>;
  weightsManifest?: Array<{ paths: string[]; weights: WeightSpec[] }>;
  veil: {
    version: number;
    encrypted: boolean;
    weightSpecs?: WeightSpec[];
    chain?: Array<{ version: number; path: string; encoding: string }>;
    /** Shared-key tasks with distributed DP: how the sums decode. */
    distributedDp?: { scale: number; modulus: number; minNoiseClients: number };
  };
}

/**
 * A task's global model as a TF.js layers model, through the coordinator's
 * REST API (GET /v1/tasks/:id/model and its weights.bin). Plaintext and
 * committee tasks serve the model in clear; shared-key tasks serve version 0
 * and the encrypted round sums, applied here with `deviceKey`.
 */
export async function loadGlobalModel(tf: Tf, options: LoadGlobalModelOptions): Promise<GlobalModel> {
  const doFetch = options.fetch ?? fetch;
  const base = `${options.coordinatorUrl.replace(/\/+$/, '')}/v1/tasks/${encodeURIComponent(options.taskId)}/`;
  const get = async (path: string): Promise<Response> => {
    const response = await doFetch(base + path, { headers: { authorization: `Bearer ${options.token}` } });
    if (!response.ok) {
      const code: ClientErrorCode =
        HTTP_CODES[response.status] ?? (response.status >= 500 ? 'unavailable' : 'invalid_argument');
      throw new ClientError(code, `GET ${path}: HTTP ${response.status} ${await response.text()}`);
    }
    return response;
  };
  const doc = (await (await get(`model${options.version === undefined ? '' : `?version=${options.version}`}`)).json()) as ModelDocument;
  const blob = async (path: string): Promise<Uint8Array> => new Uint8Array(await (await get(path)).arrayBuffer());
  let spec: ModelSpec;
  let weights: Float32Array;
  if (!doc.veil.encrypted) {
    const manifest = doc.weightsManifest?.[0];
    if (manifest === undefined) throw new ClientError('integrity', 'model.json has no weights manifest');
    spec = { topology: doc.modelTopology, weightSpecs: manifest.weights };
    weights = bytesToFloat32(await blob(manifest.paths[0]!));
  } else {
    if (options.deviceKey === undefined) {
      throw new ClientError('failed_precondition', 'the task is encrypted with a shared key: pass deviceKey to open its global model');
    }
    const chain = doc.veil.chain ?? [];
    if (chain[0]?.version !== 0 || doc.veil.weightSpecs === undefined) throw new ClientError('integrity', 'model.json of an encrypted task lacks its chain');
    spec = { topology: doc.modelTopology, weightSpecs: doc.veil.weightSpecs };
    const initial = bytesToFloat32(await blob(chain[0].path));
    const sums: Uint8Array[] = [];
    for (const link of chain.slice(1)) sums.push(await blob(link.path));
    const ddg = doc.veil.distributedDp;
    weights = await decryptGlobalModel({ deviceKey: options.deviceKey, initial, sums, ...(ddg !== undefined && { distributedDp: { ...ddg, taskId: options.taskId } }) });
  }
  const model = await buildModel(tf, spec, weights);
  return { model, version: doc.veil.version, spec, weights };
}
