/**
 * Key material of a task, and its serialization.
 *
 * Trust model: devices hold the BFV secret key (they encrypt with it, symmetric and seeded, and
 * key holders among them decrypt the aggregate). The coordinator only adds ciphertexts, so it
 * gets the public material alone: encryption parameters, their fingerprint, the key id and the
 * quantization. Symmetric encryption needs no public key, so none is issued. The coordinator's
 * loaders refuse anything that looks like secret material (`secret_key_material`).
 */
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, readdir, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CryptoError } from '../errors.js';
import { callSeal } from '../seal.js';
import { createQuantization } from '../quantize.js';
import type { QuantizationOptions } from '../quantize.js';
import { contextInternals, copyBytes, createHeContext, DEFAULT_PRESET, encryptionParametersForPreset, parameterFingerprint, uuidToBytes } from './params.js';
import type { ParameterPresetName, TaskKeyInfo } from './params.js';

/** Version of the key material format. */
export const KEY_FORMAT_VERSION = 1;
/** File name of the coordinator's (public) material inside `<outDir>/coordinator/`. */
export const COORDINATOR_KEY_FILE = 'coordinator-key.json';
/** File name of the device (secret) material inside `<outDir>/device/`. */
export const DEVICE_KEY_FILE = 'device-key.json';

const FORMAT = 'veil-he-key';
const MAX_KEY_FILE_BYTES = 1 << 20;

/** The coordinator's material: everything needed to add ciphertexts, and no secret. */
export interface CoordinatorKeyMaterial extends TaskKeyInfo {
  readonly kind: 'coordinator';
  readonly formatVersion: number;
  /** Preset the parameters came from (informational; the parameters bytes are authoritative). */
  readonly preset: string;
  /** ISO-8601 creation time. */
  readonly createdAt: string;
  readonly quantization: Required<QuantizationOptions>;
}

/** A device's material: the public fields plus the BFV secret key. Keep it secret. */
export interface DeviceKeyMaterial extends Omit<CoordinatorKeyMaterial, 'kind'> {
  readonly kind: 'device';
  /** SEAL serialization of the secret key (zstd). */
  readonly secretKey: Uint8Array;
}

/** Both halves of a task's keys. */
export interface KeyBundle {
  readonly device: DeviceKeyMaterial;
  readonly coordinator: CoordinatorKeyMaterial;
}

/** Options of {@link generateKeyBundle}. */
export interface KeyBundleOptions {
  /** The task these keys belong to. Required. */
  readonly taskId: string;
  /** Key id, a UUID. Default: a random UUID (v4). */
  readonly keyId?: string;
  /** Parameter preset. Default `bfv-n2048-q44-t29`. */
  readonly preset?: ParameterPresetName;
  /** Quantization (clip range, step, weight cap); defaults as in `createQuantization`. */
  readonly quantization?: QuantizationOptions;
  /** Clock for `createdAt`. Default `() => new Date()`. */
  readonly now?: () => Date;
}

/**
 * Generates a task's BFV secret key (SEAL KeyGenerator; randomness from the platform CSPRNG via
 * WebAssembly `getentropy`) and splits the material into device (secret) and coordinator (public)
 * halves.
 */
export async function generateKeyBundle(options: KeyBundleOptions): Promise<KeyBundle> {
  if (typeof options.taskId !== 'string' || options.taskId.length === 0) {
    throw new CryptoError('invalid_argument', 'taskId must be a non-empty string');
  }
  const keyId = options.keyId ?? randomUUID();
  uuidToBytes(keyId);
  const preset = options.preset ?? DEFAULT_PRESET;
  const q = createQuantization(options.quantization);
  const encryptionParameters = await encryptionParametersForPreset(preset);
  const coordinator: CoordinatorKeyMaterial = Object.freeze({
    kind: 'coordinator',
    formatVersion: KEY_FORMAT_VERSION,
    taskId: options.taskId,
    keyId: keyId.toLowerCase(),
    preset,
    createdAt: (options.now ?? (() => new Date()))().toISOString(),
    fingerprint: parameterFingerprint(encryptionParameters),
    encryptionParameters,
    quantization: Object.freeze({ clipMaxAbs: q.clipMaxAbs, step: q.step, weightCap: q.weightCap }),
  });
  const ctx = await createHeContext(coordinator);
  try {
    const { seal, context } = contextInternals(ctx);
    const secretKey = callSeal(seal, 'internal', 'key generation failed', () => {
      const generator = new seal.KeyGenerator(context);
      try {
        const key = generator.secretKey();
        try {
          return copyBytes(key.saveToArray(seal.ComprModeType.zstd) as Uint8Array);
        } finally {
          key.delete();
        }
      } finally {
        generator.delete();
      }
    });
    const { kind: _kind, ...shared } = coordinator;
    return { coordinator, device: Object.freeze({ ...shared, kind: 'device' as const, secretKey }) };
  } finally {
    ctx.dispose();
  }
}

/** Key material to UTF-8 JSON bytes (binary fields as base64). */
export function serializeKeyMaterial(material: CoordinatorKeyMaterial | DeviceKeyMaterial): Uint8Array {
  const json: Record<string, unknown> = {
    format: FORMAT,
    formatVersion: material.formatVersion,
    kind: material.kind,
    taskId: material.taskId,
    keyId: material.keyId,
    preset: material.preset,
    createdAt: material.createdAt,
    fingerprint: material.fingerprint,
    encryptionParameters: Buffer.from(material.encryptionParameters).toString('base64'),
    quantization: { ...material.quantization },
  };
  if (material.kind === 'device') json['secretKey'] = Buffer.from(material.secretKey).toString('base64');
  return new TextEncoder().encode(`${JSON.stringify(json, null, 2)}\n`);
}

/**
 * Parses the coordinator's material. Throws `secret_key_material` when the bytes hold a secret
 * key or device material (the coordinator must never load one), `invalid_key_material` when
 * malformed.
 */
export function parseCoordinatorKeyMaterial(bytes: Uint8Array): CoordinatorKeyMaterial {
  const json = parseJson(bytes);
  if (json['kind'] === 'device' || 'secretKey' in json) {
    throw new CryptoError('secret_key_material', 'refusing secret key material: the coordinator may load public material only');
  }
  if (json['kind'] !== 'coordinator') throw invalid(`kind ${JSON.stringify(json['kind'])} is not "coordinator"`);
  return Object.freeze({ ...publicFields(json), kind: 'coordinator' as const });
}

/** Parses a device's (secret) material. Throws `invalid_key_material`. */
export function parseDeviceKeyMaterial(bytes: Uint8Array): DeviceKeyMaterial {
  const json = parseJson(bytes);
  if (json['kind'] !== 'device') throw invalid(`kind ${JSON.stringify(json['kind'])} is not "device"`);
  const secretKey = base64Field(json, 'secretKey');
  return Object.freeze({ ...publicFields(json), kind: 'device' as const, secretKey });
}

/** Where {@link writeKeyBundle} put the files. */
export interface KeyBundlePaths {
  /** `<outDir>/device/device-key.json`: secret, mode 0600. */
  readonly deviceKeyFile: string;
  /** `<outDir>/coordinator/coordinator-key.json`: public. */
  readonly coordinatorKeyFile: string;
}

/**
 * Writes `<outDir>/device/` (secret: directory 0700, file 0600) and `<outDir>/coordinator/`
 * (public only). Refuses to overwrite existing key files (`invalid_argument`).
 */
export async function writeKeyBundle(bundle: KeyBundle, outDir: string): Promise<KeyBundlePaths> {
  const deviceDir = join(outDir, 'device');
  const coordinatorDir = join(outDir, 'coordinator');
  await mkdir(deviceDir, { recursive: true, mode: 0o700 });
  await mkdir(coordinatorDir, { recursive: true, mode: 0o755 });
  const deviceKeyFile = join(deviceDir, DEVICE_KEY_FILE);
  const coordinatorKeyFile = join(coordinatorDir, COORDINATOR_KEY_FILE);
  try {
    await writeFile(deviceKeyFile, serializeKeyMaterial(bundle.device), { mode: 0o600, flag: 'wx' });
    await writeFile(coordinatorKeyFile, serializeKeyMaterial(bundle.coordinator), { mode: 0o644, flag: 'wx' });
  } catch (reason) {
    if ((reason as { code?: unknown }).code === 'EEXIST') {
      throw new CryptoError('invalid_argument', `key files already exist under ${outDir}; refusing to overwrite`, { cause: reason });
    }
    throw reason;
  }
  return { deviceKeyFile, coordinatorKeyFile };
}

/**
 * Loads the coordinator's material from a directory (`<outDir>/coordinator`). Scans the whole
 * directory tree first and throws `secret_key_material` if any file holds device material, a
 * `secretKey` field, or a raw SEAL object (a raw secret key cannot be told from other SEAL
 * objects, so none is accepted). Throws `invalid_key_material` when the file is missing or malformed.
 */
export async function readCoordinatorKeyMaterial(dir: string): Promise<CoordinatorKeyMaterial> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  for (const entry of entries) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isDirectory()) {
      if (entry.name === 'device') throw secretIn(path);
      continue;
    }
    if (entry.name === DEVICE_KEY_FILE) throw secretIn(path);
    if (!entry.isFile()) continue;
    if ((await stat(path)).size > MAX_KEY_FILE_BYTES) continue;
    const bytes = await readFile(path);
    if (bytes[0] === 0x5e && bytes[1] === 0xa1) throw secretIn(path);
    const text = bytes.toString('utf8');
    if (/"kind"\s*:\s*"device"|"secretKey"\s*:/.test(text)) throw secretIn(path);
  }
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, COORDINATOR_KEY_FILE));
  } catch (reason) {
    throw new CryptoError('invalid_key_material', `no ${COORDINATOR_KEY_FILE} in ${dir}`, { cause: reason });
  }
  return parseCoordinatorKeyMaterial(bytes);
}

/** Loads a device's (secret) material from `<outDir>/device`. Throws `invalid_key_material`. */
export async function readDeviceKeyMaterial(dir: string): Promise<DeviceKeyMaterial> {
  let bytes: Uint8Array;
  try {
    bytes = await readFile(join(dir, DEVICE_KEY_FILE));
  } catch (reason) {
    throw new CryptoError('invalid_key_material', `no ${DEVICE_KEY_FILE} in ${dir}`, { cause: reason });
  }
  return parseDeviceKeyMaterial(bytes);
}

function secretIn(path: string): CryptoError {
  return new CryptoError(
    'secret_key_material',
    `refusing to load coordinator keys: ${path} holds (or may hold) secret key material`,
  );
}

function invalid(what: string): CryptoError {
  return new CryptoError('invalid_key_material', `key material is malformed: ${what}`);
}

function parseJson(bytes: Uint8Array): Record<string, unknown> {
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (reason) {
    throw new CryptoError('invalid_key_material', 'key material is not UTF-8 JSON', { cause: reason });
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw invalid('not a JSON object');
  const record = json as Record<string, unknown>;
  if (record['format'] !== FORMAT) throw invalid(`format is not "${FORMAT}"`);
  if (record['formatVersion'] !== KEY_FORMAT_VERSION) {
    throw invalid(`format version ${String(record['formatVersion'])} is not ${KEY_FORMAT_VERSION}`);
  }
  return record;
}

function stringField(json: Record<string, unknown>, name: string): string {
  const value = json[name];
  if (typeof value !== 'string' || value.length === 0) throw invalid(`${name} must be a non-empty string`);
  return value;
}

function base64Field(json: Record<string, unknown>, name: string): Uint8Array {
  const text = stringField(json, name);
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(text)) throw invalid(`${name} is not base64`);
  return new Uint8Array(Buffer.from(text, 'base64'));
}

function publicFields(json: Record<string, unknown>): Omit<CoordinatorKeyMaterial, 'kind'> {
  const encryptionParameters = base64Field(json, 'encryptionParameters');
  const fingerprint = stringField(json, 'fingerprint');
  if (parameterFingerprint(encryptionParameters) !== fingerprint) {
    throw new CryptoError('parameter_mismatch', 'encryption parameters do not match their fingerprint');
  }
  const keyId = stringField(json, 'keyId');
  try {
    uuidToBytes(keyId);
  } catch (reason) {
    throw new CryptoError('invalid_key_material', 'keyId is not a UUID', { cause: reason });
  }
  const raw = json['quantization'];
  if (typeof raw !== 'object' || raw === null) throw invalid('quantization must be an object');
  const { clipMaxAbs, step, weightCap } = raw as Record<string, unknown>;
  if (typeof clipMaxAbs !== 'number' || typeof step !== 'number' || typeof weightCap !== 'number') {
    throw invalid('quantization needs numeric clipMaxAbs, step and weightCap');
  }
  let q;
  try {
    q = createQuantization({ clipMaxAbs, step, weightCap });
  } catch (reason) {
    throw new CryptoError('invalid_key_material', 'quantization is invalid', { cause: reason });
  }
  return {
    formatVersion: KEY_FORMAT_VERSION,
    taskId: stringField(json, 'taskId'),
    keyId,
    preset: stringField(json, 'preset'),
    createdAt: stringField(json, 'createdAt'),
    fingerprint,
    encryptionParameters,
    quantization: Object.freeze({ clipMaxAbs: q.clipMaxAbs, step: q.step, weightCap: q.weightCap }),
  };
}
