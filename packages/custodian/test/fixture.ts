/**
 * Test fixtures for committee tasks: an enrolment authority, a coordinator request key, n
 * custodian directories, a signed descriptor, and certified devices that Shamir-share a ternary
 * secret and seal one share per custodian — built with @veil/crypto exactly as a device does.
 * Shamir sharing and Lagrange reconstruction here are an independent implementation (plain
 * BigInt-free integer arithmetic mod p) used to check what the custodians' answers reconstruct.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import {
  encodeDescriptor,
  encodeManifest,
  ed25519Sign,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  sealShare,
  sha256Hex,
  signDescriptor,
  signManifest,
  type RawKeyPair,
  type TaskDescriptor,
  type UploadManifest,
  type DeviceCertificate,
} from '@veil/crypto';
import { fromBase64, toBase64, toHex, sha256 } from '../src/bytes.js';
import { initCustodianDir, type CustodianPublicInfo } from '../src/keys.js';

export const P = 65521;
export const N = 2048;

export interface CommitteeFixture extends AsyncDisposable {
  readonly root: string;
  readonly authority: RawKeyPair;
  readonly requestKey: RawKeyPair;
  readonly authorityKeyFile: string;
  readonly requestKeyFile: string;
  readonly custodianDirs: readonly string[];
  readonly custodians: readonly CustodianPublicInfo[];
  readonly descriptor: TaskDescriptor;
  readonly descriptorBytes: Uint8Array;
  readonly descriptorSignature: Uint8Array;
  readonly descriptorHash: Uint8Array;
  signRequest(message: Uint8Array): Uint8Array;
}

export interface FixtureOptions {
  readonly n?: number;
  readonly threshold?: number;
  readonly minDevices?: number;
  readonly maxRounds?: number;
  readonly taskId?: string;
}

/** Builds a descriptor over existing custodians (to test changed or re-signed descriptors). */
export function makeDescriptor(
  custodians: readonly CustodianPublicInfo[],
  authorityPublicKey: Uint8Array,
  overrides: Partial<TaskDescriptor> = {},
): TaskDescriptor {
  const n = custodians.length;
  return {
    version: 1,
    taskId: 'task-committee-1',
    params: 'rlwe-n2048-q44-v1',
    committee: custodians.map((c, i) => ({ index: i + 1, address: `127.0.0.1:${20000 + i}`, sealingKey: c.sealingKey, signingKey: c.signingKey })),
    threshold: Math.floor(n / 2) + 1,
    corruptTolerated: 0,
    minDevices: 3,
    maxDevices: 1000,
    shareModulus: P,
    maxRounds: 5,
    encoding: { deltaBits: 12, clipMaxAbs: 1, step: 2 ** -13, weightCap: 128 },
    dp: null,
    authorityKey: toBase64(authorityPublicKey),
    createdAt: '2026-12-06T15:00:00.000Z',
    ...overrides,
  };
}

export async function createCommitteeFixture(options: FixtureOptions = {}): Promise<CommitteeFixture> {
  const n = options.n ?? 7;
  const root = await mkdtemp(join(tmpdir(), 'veil-custodian-'));
  const authority = generateEd25519KeyPair();
  const requestKey = generateEd25519KeyPair();
  const custodianDirs: string[] = [];
  const custodians: CustodianPublicInfo[] = [];
  for (let i = 1; i <= n; i += 1) {
    const dir = join(root, `custodian-${i}`);
    custodians.push(await initCustodianDir(dir));
    custodianDirs.push(dir);
  }
  const { writeFile } = await import('node:fs/promises');
  const authorityKeyFile = join(root, 'authority-public.json');
  await writeFile(authorityKeyFile, JSON.stringify({ publicKey: toBase64(authority.publicKey) }));
  const requestKeyFile = join(root, 'coordinator-request-public.json');
  await writeFile(requestKeyFile, JSON.stringify({ publicKey: toBase64(requestKey.publicKey) }));
  const descriptor = makeDescriptor(custodians, authority.publicKey, {
    ...(options.threshold !== undefined && { threshold: options.threshold }),
    ...(options.minDevices !== undefined && { minDevices: options.minDevices }),
    ...(options.maxRounds !== undefined && { maxRounds: options.maxRounds }),
    ...(options.taskId !== undefined && { taskId: options.taskId }),
  });
  const signed = signDescriptor(descriptor, authority.privateKey);
  const descriptorBytes = encodeDescriptor(descriptor);
  const dispose = async (): Promise<void> => {
    await rm(root, { recursive: true, force: true });
  };
  return {
    root,
    authority,
    requestKey,
    authorityKeyFile,
    requestKeyFile,
    custodianDirs,
    custodians,
    descriptor,
    descriptorBytes,
    descriptorSignature: fromBase64(signed.signature, 'signature', 64),
    descriptorHash: sha256(descriptorBytes),
    signRequest: (message) => ed25519Sign(requestKey.privateKey, message),
    [Symbol.asyncDispose]: dispose,
  };
}

/** A device's upload as the coordinator stores it. */
export interface DeviceUpload {
  readonly deviceId: string;
  readonly key: RawKeyPair;
  /** The secret s_j as residues mod p ({-1, 0, 1} → {p-1, 0, 1}). */
  readonly secret: Uint16Array;
  readonly manifest: UploadManifest;
  readonly manifestBytes: Uint8Array;
  readonly manifestSignature: Uint8Array;
  /** Element i-1: the share sealed to custodian i. */
  readonly sealedShares: readonly Uint8Array[];
}

/** Shamir t-of-n over F_p, coefficient-wise (Shamir 1979): share_i[k] = s[k] + Σ_m a_m[k]·i^m mod p. */
export function shamirShares(secret: Uint16Array, t: number, n: number): Uint16Array[] {
  const coefficients: Uint16Array[] = [];
  for (let m = 1; m < t; m += 1) {
    const a = new Uint16Array(secret.length);
    for (let k = 0; k < a.length; k += 1) a[k] = randomInt(P);
    coefficients.push(a);
  }
  const shares: Uint16Array[] = [];
  for (let x = 1; x <= n; x += 1) {
    const share = new Uint16Array(secret.length);
    for (let k = 0; k < secret.length; k += 1) {
      let value = secret[k] as number;
      let power = 1;
      for (const a of coefficients) {
        power = (power * x) % P;
        value = (value + (a[k] as number) * power) % P;
      }
      share[k] = value;
    }
    shares.push(share);
  }
  return shares;
}

function inverse(a: number): number {
  // Fermat: a^(p-2) mod p, with products below 2^32 (p < 2^16).
  let result = 1;
  let base = ((a % P) + P) % P;
  let e = P - 2;
  while (e > 0) {
    if (e & 1) result = (result * base) % P;
    base = (base * base) % P;
    e >>= 1;
  }
  return result;
}

/** Lagrange interpolation at 0 from (x_i, y_i) share sums (each N × u16 LE bytes). */
export function reconstructAtZero(points: readonly { x: number; shareSum: Uint8Array }[]): Uint16Array {
  const out = new Uint16Array(N);
  const lambdas = points.map((pi) => {
    let num = 1;
    let den = 1;
    for (const pj of points) {
      if (pj.x === pi.x) continue;
      num = (num * (P - pj.x)) % P;
      den = (den * (((pi.x - pj.x) % P) + P)) % P;
    }
    return (num * inverse(den)) % P;
  });
  points.forEach((point, i) => {
    const view = new DataView(point.shareSum.buffer, point.shareSum.byteOffset, point.shareSum.byteLength);
    const lambda = lambdas[i] as number;
    for (let k = 0; k < N; k += 1) out[k] = ((out[k] as number) + ((view.getUint16(2 * k, true) * lambda) % P)) % P;
  });
  return out;
}

/** Σ secrets mod p. */
export function sumSecrets(devices: readonly DeviceUpload[]): Uint16Array {
  const out = new Uint16Array(N);
  for (const d of devices) for (let k = 0; k < N; k += 1) out[k] = ((out[k] as number) + (d.secret[k] as number)) % P;
  return out;
}

export interface DeviceOptions {
  readonly round: number;
  readonly deviceId: string;
  /** Certify with this authority key (default: the fixture's). */
  readonly authorityPrivateKey?: Uint8Array;
  /** Seal with another binding (to test refusals). */
  readonly sealBinding?: { descriptorHash?: Uint8Array; round?: number; deviceId?: string };
  /** Reuse this device key (a retry, or a duplicate). */
  readonly key?: RawKeyPair;
  readonly notAfterMs?: number;
  /** A certificate issued elsewhere (e.g. by `veil authority certify-device`) for `key`. */
  readonly certificate?: DeviceCertificate;
}

/** A device: a fresh ternary secret, its Shamir shares sealed to every custodian, a signed manifest. */
export function makeDevice(f: Pick<CommitteeFixture, 'descriptor' | 'descriptorHash'> & { readonly authority?: RawKeyPair }, options: DeviceOptions): DeviceUpload {
  const n = f.descriptor.committee.length;
  const key = options.key ?? generateEd25519KeyPair();
  const secret = new Uint16Array(N);
  for (let k = 0; k < N; k += 1) secret[k] = [P - 1, 0, 1][randomInt(3)] as number;
  const shares = shamirShares(secret, f.descriptor.threshold, n);
  const binding = {
    descriptorHash: options.sealBinding?.descriptorHash ?? f.descriptorHash,
    round: options.sealBinding?.round ?? options.round,
    deviceId: options.sealBinding?.deviceId ?? options.deviceId,
  };
  const sealedShares = shares.map((share, i) =>
    sealShare(fromBase64(f.descriptor.committee[i]!.sealingKey, 'sealingKey', 32), { ...binding, custodianIndex: i + 1 }, share),
  );
  const certificate =
    options.certificate ??
    issueDeviceCertificate(options.authorityPrivateKey ?? f.authority!.privateKey, {
      taskId: f.descriptor.taskId,
      deviceId: options.deviceId,
      devicePublicKey: key.publicKey,
      notAfterMs: options.notAfterMs ?? Date.now() + 3_600_000,
    });
  const manifest: UploadManifest = {
    descriptorHash: toHex(f.descriptorHash),
    round: options.round,
    deviceId: options.deviceId,
    c0Sha256: sha256Hex(randomBytes(64)),
    shareSha256: sealedShares.map((s) => sha256Hex(s)),
    devicePublicKey: toBase64(key.publicKey),
    certificate,
  };
  const signed = signManifest(manifest, key.privateKey);
  return {
    deviceId: options.deviceId,
    key,
    secret,
    manifest,
    manifestBytes: encodeManifest(manifest),
    manifestSignature: fromBase64(signed.signature, 'signature', 64),
    sealedShares,
  };
}

export function makeDevices(f: CommitteeFixture, round: number, count: number, prefix = 'device'): DeviceUpload[] {
  return Array.from({ length: count }, (_, j) => makeDevice(f, { round, deviceId: `${prefix}-${round}-${j}` }));
}

/** A CommitteeRequest for `devices`. */
export function committeeRequest(round: number, devices: readonly DeviceUpload[]) {
  return {
    round,
    devices: devices.map((d) => ({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature })),
    sealedShare: (j: number, i: number) => devices[j]!.sealedShares[i - 1]!,
  };
}

export async function readJson(path: string): Promise<unknown> {
  return JSON.parse(await readFile(path, 'utf8'));
}
