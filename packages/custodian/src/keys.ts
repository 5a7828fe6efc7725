/**
 * A custodian's key directory: an X25519 sealing key pair (RFC 7748; devices seal their shares to
 * it with RFC 9180 HPKE) and an Ed25519 signing key pair (RFC 8032; answers are signed with it).
 *
 *   DIR/                       mode 0700
 *     custodian-key.json       mode 0600, secret: both private keys (and their public halves)
 *     custodian-public.json    public: both public keys and the fingerprint, for the task descriptor
 *
 * Fingerprint = hex SHA-256(signingPublicKey || sealingPublicKey); people compare its first 16
 * bytes, shown in groups of 4 hex digits ({@link formatFingerprint}).
 */
import { chmod, mkdir, open, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { custodianFingerprint, ed25519PublicKey, generateCustodianKeys, x25519PublicKey, type CustodianKeys } from '@veil/crypto';
import { CustodianError } from './errors.js';

export type { CustodianKeys };

export const CUSTODIAN_KEY_FILE = 'custodian-key.json';
export const CUSTODIAN_PUBLIC_FILE = 'custodian-public.json';
export const CUSTODIAN_KEY_FORMAT_VERSION = 1;

/** What `custodian-public.json` holds (and what a descriptor's committee entry copies). */
export interface CustodianPublicInfo {
  readonly version: 1;
  readonly kind: 'veil-custodian-public';
  /** base64 X25519 public key. */
  readonly sealingKey: string;
  /** base64 Ed25519 public key. */
  readonly signingKey: string;
  /** hex SHA-256(signingKey || sealingKey). */
  readonly fingerprint: string;
}

/** The public half of a custodian's keys. */
export function custodianPublicInfo(keys: CustodianKeys): CustodianPublicInfo {
  return {
    version: 1,
    kind: 'veil-custodian-public',
    sealingKey: b64(keys.sealing.publicKey),
    signingKey: b64(keys.signing.publicKey),
    fingerprint: custodianFingerprint(keys.signing.publicKey, keys.sealing.publicKey),
  };
}

function hide(keys: CustodianKeys): CustodianKeys {
  Object.defineProperty(keys, 'toJSON', { value: () => ({ custodianKeys: '[redacted]' }), enumerable: false });
  return keys;
}

/**
 * Creates DIR (0700) with new keys: `custodian-key.json` (0600) and `custodian-public.json` (0644).
 * Refuses to overwrite existing keys (a custodian that lost its keys must be replaced in the
 * descriptor, and one restored from a backup must rotate its sealing key: see the README).
 */
export async function initCustodianDir(dir: string): Promise<CustodianPublicInfo> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await chmod(dir, 0o700);
  const keys = generateCustodianKeys();
  const secret = {
    version: CUSTODIAN_KEY_FORMAT_VERSION,
    kind: 'veil-custodian-secret',
    sealingPrivateKey: b64(keys.sealing.privateKey),
    sealingPublicKey: b64(keys.sealing.publicKey),
    signingPrivateKey: b64(keys.signing.privateKey),
    signingPublicKey: b64(keys.signing.publicKey),
  };
  const info = custodianPublicInfo(keys);
  await writeNew(join(dir, CUSTODIAN_KEY_FILE), `${JSON.stringify(secret, null, 2)}\n`, 0o600);
  await writeNew(join(dir, CUSTODIAN_PUBLIC_FILE), `${JSON.stringify(info, null, 2)}\n`, 0o644);
  return info;
}

async function writeNew(path: string, text: string, mode: number): Promise<void> {
  let handle;
  try {
    handle = await open(path, 'wx', mode);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') {
      throw new CustodianError('invalid_key_material', `${path} already exists; refusing to overwrite custodian keys`);
    }
    throw error;
  }
  try {
    await handle.writeFile(text);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');

function key32(value: unknown, what: string): Uint8Array {
  if (typeof value !== 'string') throw new CustodianError('invalid_key_material', `${what} missing`);
  const bytes = Buffer.from(value, 'base64');
  if (bytes.length !== 32 || bytes.toString('base64') !== value) throw new CustodianError('invalid_key_material', `${what} is not 32 base64 bytes`);
  return new Uint8Array(bytes);
}

/**
 * Reads `DIR/custodian-key.json`. Refuses a file readable by group or others, keys of another
 * format version, and public keys that do not match their private keys.
 */
export async function readCustodianKeys(dir: string): Promise<CustodianKeys> {
  const path = join(dir, CUSTODIAN_KEY_FILE);
  let text: string;
  try {
    const info = await stat(path);
    if ((info.mode & 0o077) !== 0) {
      throw new CustodianError('invalid_key_material', `${path} is readable by others (mode ${(info.mode & 0o777).toString(8)}); chmod 600 it`);
    }
    text = await readFile(path, 'utf8');
  } catch (error) {
    if (error instanceof CustodianError) throw error;
    throw new CustodianError('invalid_key_material', `cannot read ${path}`, { cause: error });
  }
  let parsed: Record<string, unknown>;
  try {
    parsed = JSON.parse(text) as Record<string, unknown>;
  } catch (error) {
    throw new CustodianError('invalid_key_material', `${path} is not JSON`, { cause: error });
  }
  if (parsed.kind !== 'veil-custodian-secret' || parsed.version !== CUSTODIAN_KEY_FORMAT_VERSION) {
    throw new CustodianError('invalid_key_material', `${path} is not a version ${CUSTODIAN_KEY_FORMAT_VERSION} custodian key file`);
  }
  const keys: CustodianKeys = {
    sealing: { privateKey: key32(parsed.sealingPrivateKey, 'sealingPrivateKey'), publicKey: key32(parsed.sealingPublicKey, 'sealingPublicKey') },
    signing: { privateKey: key32(parsed.signingPrivateKey, 'signingPrivateKey'), publicKey: key32(parsed.signingPublicKey, 'signingPublicKey') },
  };
  if (!Buffer.from(x25519PublicKey(keys.sealing.privateKey)).equals(keys.sealing.publicKey)) {
    throw new CustodianError('invalid_key_material', `${path}: sealingPublicKey does not match sealingPrivateKey`);
  }
  if (!Buffer.from(ed25519PublicKey(keys.signing.privateKey)).equals(keys.signing.publicKey)) {
    throw new CustodianError('invalid_key_material', `${path}: signingPublicKey does not match signingPrivateKey`);
  }
  return hide(keys);
}
