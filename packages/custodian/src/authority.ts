/**
 * The enrolment authority's tools: its Ed25519 key (RFC 8032), signed task descriptors, device
 * certificates. The authority's key must live outside the coordinator process (an offline
 * machine, an HSM-backed service, or in the demo a directory the coordinator never reads): a
 * coordinator that could certify device keys could pad D with devices of its own (design note,
 * "Phantom devices").
 *
 *   DIR/                      mode 0700
 *     authority-key.json      mode 0600, secret
 *     authority-public.json   public: { publicKey } for custodians' --authority-key and apps
 */
import { chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  buildTaskDescriptor,
  chooseC0Width,
  ed25519PublicKey,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  validateDescriptor,
  type DescriptorCheck,
  type DescriptorDp,
  type DescriptorEncoding,
  type DeviceCertificate,
  type SignedTaskDescriptor,
  type TaskDescriptor,
} from '@veil/crypto';
import { CustodianError } from './errors.js';
import { fromBase64, toBase64 } from './bytes.js';
import type { CustodianPublicInfo } from './keys.js';

export const AUTHORITY_KEY_FILE = 'authority-key.json';
export const AUTHORITY_PUBLIC_FILE = 'authority-public.json';

/** The authority's key, loaded. `privateKey` is never logged (`toJSON` hides it). */
export interface AuthorityKey {
  readonly publicKey: Uint8Array;
  readonly privateKey: Uint8Array;
}

async function writeNew(path: string, value: object, mode: number): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'wx', mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') throw new CustodianError('invalid_key_material', `${path} already exists; refusing to overwrite`);
    throw error;
  }
  try {
    await handle.writeFile(`${JSON.stringify(value, null, 2)}\n`);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Creates DIR (0700) with a new authority key: `authority-key.json` (0600) and `authority-public.json`. */
export async function initAuthorityDir(dir: string): Promise<{ publicKey: string }> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const pair = generateEd25519KeyPair();
  const publicKey = toBase64(pair.publicKey);
  await writeNew(join(dir, AUTHORITY_KEY_FILE), { version: 1, kind: 'veil-authority-secret', privateKey: toBase64(pair.privateKey), publicKey }, 0o600);
  await writeNew(join(dir, AUTHORITY_PUBLIC_FILE), { version: 1, kind: 'veil-authority-public', publicKey }, 0o644);
  pair.privateKey.fill(0);
  return { publicKey };
}

/** Reads `DIR/authority-key.json` (or the file itself); refuses a file readable by others. */
export async function readAuthorityKey(dirOrFile: string): Promise<AuthorityKey> {
  let path = dirOrFile;
  try {
    if ((await stat(dirOrFile)).isDirectory()) path = join(dirOrFile, AUTHORITY_KEY_FILE);
    const mode = (await stat(path)).mode;
    if ((mode & 0o077) !== 0) throw new CustodianError('invalid_key_material', `${path} is readable by others (mode ${(mode & 0o777).toString(8)}); chmod 600 it`);
  } catch (error) {
    if (error instanceof CustodianError) throw error;
    throw new CustodianError('invalid_key_material', `cannot read ${path}`, { cause: error });
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
  } catch (error) {
    throw new CustodianError('invalid_key_material', `${path} is not JSON`, { cause: error });
  }
  if (parsed.kind !== 'veil-authority-secret' || typeof parsed.privateKey !== 'string') {
    throw new CustodianError('invalid_key_material', `${path} is not an enrolment authority key file`);
  }
  const privateKey = fromBase64(parsed.privateKey, 'privateKey', 32);
  const key = { publicKey: ed25519PublicKey(privateKey), privateKey };
  Object.defineProperty(key, 'toJSON', { value: () => ({ publicKey: toBase64(key.publicKey) }), enumerable: false });
  return key;
}

/** One committee member as the authority learns it: an address and the custodian's public file. */
export interface CommitteeMemberInput {
  readonly address: string;
  readonly custodian: Pick<CustodianPublicInfo, 'sealingKey' | 'signingKey'>;
}

/** Options of {@link createSignedDescriptor}. */
export interface CreateDescriptorOptions {
  readonly taskId: string;
  /** Custodians in index order (index = position + 1). */
  readonly committee: readonly CommitteeMemberInput[];
  readonly threshold: number;
  /** Default 2t - n - 1 (the largest the threshold allows, at least 0). */
  readonly corruptTolerated?: number;
  readonly minDevices: number;
  /** Default 1000. */
  readonly maxDevices?: number;
  readonly maxRounds: number;
  /**
   * Default: clip 1, step 2^-13, weight cap 1, and the narrowest c0 that still decrypts exactly at
   * maxDevices (chooseC0Width: 16, 24, 32 or 36 bits with the largest Δ, else exact). c0Bits 44: the
   * exact c0 with the smallest Δ; 36, 32, 24 or 16: that width (refused when it does not fit).
   */
  readonly encoding?: Partial<DescriptorEncoding>;
  readonly dp?: DescriptorDp | null;
  readonly createdAt?: Date;
}

/**
 * Builds, validates (with the descriptor's own minimum as the floor: the authority refuses to
 * sign what custodians would refuse) and signs a task descriptor.
 */
export function createSignedDescriptor(authority: AuthorityKey, options: CreateDescriptorOptions): { signed: SignedTaskDescriptor; check: DescriptorCheck } {
  const build = (encoding: Partial<DescriptorEncoding> | undefined): TaskDescriptor => buildTaskDescriptor({
    taskId: options.taskId,
    committee: options.committee.map((m) => ({
      address: m.address,
      sealingPublicKey: fromBase64(m.custodian.sealingKey, 'sealingKey', 32),
      signingPublicKey: fromBase64(m.custodian.signingKey, 'signingKey', 32),
    })),
    threshold: options.threshold,
    ...(options.corruptTolerated !== undefined && { corruptTolerated: options.corruptTolerated }),
    minDevices: options.minDevices,
    ...(options.maxDevices !== undefined && { maxDevices: options.maxDevices }),
    maxRounds: options.maxRounds,
    ...(encoding !== undefined && { encoding }),
    ...(options.dp !== undefined && { dp: options.dp }),
    authorityPublicKey: authority.publicKey,
    ...(options.createdAt !== undefined && { createdAt: options.createdAt }),
  });
  let descriptor = build(options.encoding);
  // No width given: the narrowest that decrypts exactly at the descriptor's maxDevices (its default included).
  if (options.encoding?.c0Bits === undefined) descriptor = build({ ...options.encoding, ...chooseC0Width(descriptor.maxDevices, options.encoding) });
  return signValidated(authority, descriptor);
}

/** Validates and signs an existing descriptor (e.g. one edited by hand); it must name this authority. */
export function signValidated(authority: AuthorityKey, descriptor: TaskDescriptor): { signed: SignedTaskDescriptor; check: DescriptorCheck } {
  let check: DescriptorCheck;
  try {
    check = validateDescriptor(descriptor, { minDevices: Math.max(1, Number(descriptor.minDevices) || 1), authorityKey: toBase64(authority.publicKey) });
  } catch (error) {
    throw new CustodianError('invalid_descriptor', (error as Error).message);
  }
  return { signed: signDescriptor(descriptor, authority.privateKey), check };
}

/** Options of {@link certifyDevice}. */
export interface CertifyDeviceOptions {
  readonly taskId: string;
  readonly deviceId: string;
  /** The device's Ed25519 public key (32 bytes; generated on the device). */
  readonly devicePublicKey: Uint8Array;
  /** Validity, ms. Default 30 days. */
  readonly validForMs?: number;
  /** Milliseconds since the epoch. Default `Date.now()`. */
  readonly nowMs?: number;
}

/** The authority certifies one device key for one task. */
export function certifyDevice(authority: AuthorityKey, options: CertifyDeviceOptions): DeviceCertificate {
  const notAfterMs = (options.nowMs ?? Date.now()) + (options.validForMs ?? 30 * 24 * 3_600_000);
  try {
    return issueDeviceCertificate(authority.privateKey, { taskId: options.taskId, deviceId: options.deviceId, devicePublicKey: options.devicePublicKey, notAfterMs });
  } catch (error) {
    throw new CustodianError('invalid_request', (error as Error).message);
  }
}
