import { createWriteStream } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { decryptGlobalModel, exportModelOnnx, type WeightSpec } from '@veil/client-sdk';
import { readDeviceKeyMaterial } from '@veil/crypto';
import type { ActivationRanges, CalibrationFallback, Quantization } from '@veil/export';

/** A failure the user can act on (missing key, refused request, bad calibration file): printed without a stack. */
export class ExportCommandError extends Error {
  override readonly name = 'ExportCommandError';
}

/** Options of {@link runExport}. */
export interface ExportCommandOptions {
  taskId: string;
  format: 'onnx';
  quantize: Quantization;
  out: string;
  /** A running coordinator's REST URL (with `adminToken`), or null to open `dataDir`. */
  coordinatorHttp: string | null;
  adminToken: string | null;
  /** Data directory of a stopped coordinator (e.g. `veil demo --data-dir DIR`); opened for the export, then closed. */
  dataDir: string | null;
  /** Key holder's device key directory: needed for encrypted tasks (their model versions are ciphertext sums). */
  deviceKeyDir: string | null;
  /** Model version; default the current one. */
  version: number | null;
  /** JSON file of calibrated activation ranges (`{ ":input": {min, max}, layer: {min, max}, ... }`); int8 only. Without it int8 is dynamic. */
  calibrationFile: string | null;
  /** int8: write int8-static even when the calibration statistics say the DP noise swamped them (else int8-dynamic). Default false. */
  forceStatic?: boolean;
}

/** What {@link runExport} wrote. */
export interface ExportCommandResult {
  out: string;
  bytes: number;
  version: number;
  quantization: string;
  encrypted: boolean;
  /** int8: where the static ranges came from (`--calibration` file, the task's calibration rounds), or null (dynamic, or not int8). */
  calibration: 'file' | 'federated' | null;
  /** Set when the calibrated ranges were not trusted (the DP noise swamped their statistics) and int8-dynamic was written instead. */
  fallback?: CalibrationFallback;
}

export type Rest = (path: string) => Promise<Response>;

/**
 * `veil export`: fetches a task's global model through the admin REST API
 * (model.json and weights.bin; for an encrypted task the chain of round sums,
 * decrypted with the device key as a device would), and writes it as ONNX
 * with `@veil/export`. With `dataDir` instead of a URL it starts the
 * coordinator on that directory (loopback, port 0) for the duration.
 */
export async function runExport(options: ExportCommandOptions): Promise<ExportCommandResult> {
  const { baseUrl, token, close } = await openCoordinator(options, 'export.log');
  try {
    const rest = taskRest(baseUrl, token, options.taskId);
    const modelJson = (await (await rest(`/model${options.version === null ? '' : `?version=${options.version}`}`)).json()) as {
      modelTopology: Record<string, unknown>;
      weightsManifest?: { weights: WeightSpec[] }[];
      veil: {
        version: number;
        encrypted: boolean;
        weightSpecs?: WeightSpec[];
        chain?: { version: number }[];
        /** Shared key with distributed DP: the sums are DDG residues, decoded with these. */
        distributedDp?: { scale: number; modulus: number; minNoiseClients: number };
      };
    };
    const weightsOf = async (version: number) => new Uint8Array(await (await rest(`/model/weights.bin?version=${version}`)).arrayBuffer());
    let weights: Float32Array;
    let weightSpecs: WeightSpec[];
    if (modelJson.veil.encrypted) {
      if (options.deviceKeyDir === null) {
        throw new ExportCommandError('the task is encrypted: its model versions are ciphertext sums; give --device-key DIR (a key holder\'s device/ key bundle) to decrypt them');
      }
      const deviceKey = await readDeviceKeyMaterial(options.deviceKeyDir);
      const chain = modelJson.veil.chain ?? [];
      const [initial, ...sums] = await Promise.all(chain.map((link) => weightsOf(link.version)));
      if (initial === undefined) throw new ExportCommandError('the model chain is empty');
      const ddg = modelJson.veil.distributedDp;
      weights = await decryptGlobalModel({ deviceKey, initial: toFloat32(initial), sums, ...(ddg !== undefined && { distributedDp: { ...ddg, taskId: options.taskId } }) });
      weightSpecs = modelJson.veil.weightSpecs ?? [];
    } else {
      weights = toFloat32(await weightsOf(modelJson.veil.version));
      weightSpecs = modelJson.weightsManifest?.[0]?.weights ?? [];
    }
    let activationRanges: ActivationRanges | undefined;
    let noiseSwamped: string[] = [];
    let calibration: ExportCommandResult['calibration'] = null;
    if (options.calibrationFile !== null) {
      if (options.quantize !== 'int8') throw new ExportCommandError('--calibration applies to --quantize int8 only');
      const parsed = JSON.parse(await readFile(options.calibrationFile, 'utf8')) as { activationRanges?: ActivationRanges; noiseSwamped?: string[] } & ActivationRanges;
      activationRanges = (parsed.activationRanges ?? parsed) as ActivationRanges;
      // A statistics file (veil calibration) says which points the DP noise swamped; a bare ranges file says nothing.
      if (parsed.activationRanges !== undefined) noiseSwamped = parsed.noiseSwamped ?? [];
      calibration = 'file';
    } else if (options.quantize === 'int8') {
      // The task's own calibration rounds, when they ran for this version (404 otherwise: dynamic int8).
      const found = await fetch(`${baseUrl}/v1/tasks/${encodeURIComponent(options.taskId)}/calibration?version=${modelJson.veil.version}`, { headers: { authorization: `Bearer ${token}` } });
      if (found.ok) {
        // A shared-key task's statistics are encrypted: opened with the device key (calibration.ts).
        const { readCalibrationFile } = await import('./calibration.js');
        const file = await readCalibrationFile((await found.json()) as Parameters<typeof readCalibrationFile>[0], options.deviceKeyDir);
        activationRanges = file.activationRanges;
        noiseSwamped = file.noiseSwamped ?? [];
        calibration = 'federated';
      } else if (found.status !== 404) {
        throw new ExportCommandError(`GET /calibration: ${found.status} ${await found.text()}`);
      } else {
        await found.body?.cancel();
      }
    }
    const out = exportModelOnnx({ topology: modelJson.modelTopology, weightSpecs }, weights, {
      quantize: options.quantize,
      ...(activationRanges !== undefined && { activationRanges, noiseSwamped, forceStatic: options.forceStatic === true }),
    });
    await writeFile(options.out, out.bytes);
    return {
      out: options.out,
      bytes: out.bytes.byteLength,
      version: modelJson.veil.version,
      quantization: out.quantization,
      encrypted: modelJson.veil.encrypted,
      calibration,
      ...(out.fallback !== undefined && { fallback: out.fallback }),
    };
  } finally {
    await close?.();
  }
}

/** Where a command reaches the coordinator: a running one's REST URL and token, or a stopped one's data directory (started on loopback for the command). */
export interface CoordinatorAccess {
  coordinatorHttp: string | null;
  adminToken: string | null;
  dataDir: string | null;
}

/** Opens the REST API of `access`; `close` stops a coordinator started for the command. */
export async function openCoordinator(access: CoordinatorAccess, logFile: string): Promise<{ baseUrl: string; token: string; close: (() => Promise<void>) | null }> {
  if (access.coordinatorHttp !== null) {
    if (access.adminToken === null) throw new ExportCommandError('--coordinator-http needs VEIL_ADMIN_TOKEN in the environment');
    return { baseUrl: access.coordinatorHttp.replace(/\/$/, ''), token: access.adminToken, close: null };
  }
  if (access.dataDir === null) throw new ExportCommandError('give --coordinator-http URL (a running coordinator) or --data-dir DIR (a stopped one)');
  const { createLogger, loadConfig, startCoordinator } = await import('@veil/server');
  const config = { ...loadConfig({ ...process.env, VEIL_DATA_DIR: access.dataDir }), host: '127.0.0.1', grpcPort: 0, httpPort: 0 };
  const logger = createLogger({ level: config.logLevel, destination: createWriteStream(join(access.dataDir, logFile), { flags: 'a' }) });
  const coordinator = await startCoordinator({ config, logger });
  return { baseUrl: coordinator.httpUrl, token: coordinator.adminToken, close: () => coordinator.close() };
}

/** GET under /v1/tasks/ID, refusing non-2xx answers with the coordinator's message. */
export function taskRest(baseUrl: string, token: string, taskId: string): Rest {
  return async (path) => {
    const response = await fetch(`${baseUrl}/v1/tasks/${encodeURIComponent(taskId)}${path}`, { headers: { authorization: `Bearer ${token}` } });
    if (!response.ok) {
      const text = await response.text();
      throw new ExportCommandError(`GET ${path}: ${response.status} ${text}`);
    }
    return response;
  };
}

function toFloat32(bytes: Uint8Array): Float32Array {
  if (bytes.byteLength % 4 !== 0) throw new ExportCommandError(`a float32 model blob of ${bytes.byteLength} bytes`);
  // Copy: the fetched buffer may not be 4-byte aligned for a view.
  return new Float32Array(bytes.slice().buffer);
}
