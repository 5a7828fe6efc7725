/**
 * Key pairs of the committee protocol, as raw 32-byte strings (RFC 7748 X25519 for sealing
 * shares, RFC 8032 Ed25519 for signatures), on top of node:crypto (OpenSSL). Custodians, the
 * enrolment authority and devices all use these; a custodian's public identity is its
 * fingerprint, hex SHA-256(signingPublicKey || sealingPublicKey).
 */
import {
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  randomBytes as nodeRandomBytes,
  sign as nodeSign,
  verify as nodeVerify,
  type KeyObject,
} from 'node:crypto';
import { CryptoError } from '../errors.js';
import { concatBytes, sha256, toHex } from './bytes.js';

/** A source of uniformly random bytes (a CSPRNG in production; injected in tests). */
export type RandomBytes = (length: number) => Uint8Array;

/** node:crypto's CSPRNG. */
export const secureRandomBytes: RandomBytes = (length) => new Uint8Array(nodeRandomBytes(length));

/** A raw key pair: 32-byte private key and 32-byte public key. */
export interface RawKeyPair {
  readonly privateKey: Uint8Array;
  readonly publicKey: Uint8Array;
}

/** A custodian's two key pairs. */
export interface CustodianKeys {
  /** X25519 key pair: devices seal shares to its public half (HPKE, RFC 9180). */
  readonly sealing: RawKeyPair;
  /** Ed25519 key pair: signs the custodian's answers. */
  readonly signing: RawKeyPair;
}

// DER prefixes of PKCS#8 private keys and SPKI public keys for the two curves (RFC 8410):
// the raw 32 bytes follow the prefix.
const X25519_PKCS8 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20]);
const X25519_SPKI = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00]);
const ED25519_PKCS8 = Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]);
const ED25519_SPKI = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]);

function checkLength(bytes: Uint8Array, what: string): void {
  if (!(bytes instanceof Uint8Array) || bytes.length !== 32) {
    throw new CryptoError('invalid_key_material', `${what} must be 32 bytes`);
  }
}

function privateKeyObject(prefix: Uint8Array, raw: Uint8Array, what: string): KeyObject {
  checkLength(raw, what);
  const der = concatBytes(prefix, raw);
  try {
    return createPrivateKey({ key: Buffer.from(der.buffer, der.byteOffset, der.byteLength), format: 'der', type: 'pkcs8' });
  } finally {
    der.fill(0);
  }
}

/**
 * Whether this Node.js imports raw public keys (`format: 'raw-public'`, recent Node.js 24): one
 * EVP_PKEY_new_raw_public_key, where the DER SubjectPublicKeyInfo path runs OpenSSL's decoder
 * framework (about four times the CPU; a custodian imports one X25519 key, each share's ephemeral
 * `enc`, per share it opens). Older releases refuse the format: the DER path is used there.
 */
const RAW_PUBLIC_IMPORT = ((): boolean => {
  try {
    return createPublicKey({ key: Buffer.alloc(32, 9), format: 'raw-public', asymmetricKeyType: 'x25519' }).asymmetricKeyType === 'x25519';
  } catch {
    return false;
  }
})();

function publicKeyObject(prefix: Uint8Array, raw: Uint8Array, what: string, type: 'x25519' | 'ed25519'): KeyObject {
  checkLength(raw, what);
  try {
    // The same key either way: the SPKI structure (RFC 8410 §4) is the fixed prefix and the raw 32 bytes.
    if (RAW_PUBLIC_IMPORT) {
      return createPublicKey({ key: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength), format: 'raw-public', asymmetricKeyType: type });
    }
    return createPublicKey({ key: Buffer.from(concatBytes(prefix, raw)), format: 'der', type: 'spki' });
  } catch (cause) {
    throw new CryptoError('invalid_key_material', `${what} is not a valid public key`, { cause });
  }
}

function rawPublic(key: KeyObject): Uint8Array {
  const der = key.export({ format: 'der', type: 'spki' });
  return new Uint8Array(der.subarray(der.length - 32));
}

/** The X25519 public key of a 32-byte private key (RFC 7748 §6.1; the scalar is clamped on use). */
export function x25519PublicKey(privateKey: Uint8Array): Uint8Array {
  return rawPublic(createPublicKey(privateKeyObject(X25519_PKCS8, privateKey, 'X25519 private key')));
}

/** An X25519 key pair from 32 random bytes. */
export function generateX25519KeyPair(random: RandomBytes = secureRandomBytes): RawKeyPair {
  const privateKey = random(32);
  return { privateKey, publicKey: x25519PublicKey(privateKey) };
}

/**
 * X25519(privateKey, publicKey) (RFC 7748 §5). Throws `CryptoError('invalid_key_material')` when
 * the result is all zeros (a small-order public key), as RFC 9180 §7.1.4 requires.
 */
export function x25519(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  return agreeX25519(privateKeyObject(X25519_PKCS8, privateKey, 'X25519 private key'), publicKey);
}

/**
 * An X25519 private key parsed once for many key agreements: a custodian opens every share sealed
 * to it with the same key, and parsing the raw key into OpenSSL's form ({@link x25519} does it on
 * every call) cost more than the agreement itself (createPrivateKey was the custodian's largest
 * self time in a CPU profile of bench:committee-round-end).
 */
export interface X25519PrivateKey {
  /** The raw 32-byte public half. */
  readonly publicKey: Uint8Array;
  /** {@link x25519} with this key: the same result, the same refusals. */
  agree(publicKey: Uint8Array): Uint8Array;
}

/** Parses a raw 32-byte X25519 private key once (see {@link X25519PrivateKey}). */
export function prepareX25519PrivateKey(privateKey: Uint8Array): X25519PrivateKey {
  const key = privateKeyObject(X25519_PKCS8, privateKey, 'X25519 private key');
  const publicKey = rawPublic(createPublicKey(key));
  return { publicKey, agree: (peer) => agreeX25519(key, peer) };
}

function agreeX25519(priv: KeyObject, publicKey: Uint8Array): Uint8Array {
  const pub = publicKeyObject(X25519_SPKI, publicKey, 'X25519 public key', 'x25519');
  let shared: Uint8Array;
  try {
    shared = new Uint8Array(diffieHellman({ privateKey: priv, publicKey: pub }));
  } catch (cause) {
    // OpenSSL refuses an all-zero shared secret itself.
    throw new CryptoError('invalid_key_material', 'X25519 produced no valid shared secret (small-order public key)', { cause });
  }
  if (shared.every((b) => b === 0)) {
    throw new CryptoError('invalid_key_material', 'X25519 produced the all-zero shared secret (small-order public key)');
  }
  return shared;
}

/** The Ed25519 public key of a 32-byte private key (seed), RFC 8032 §5.1.5. */
export function ed25519PublicKey(privateKey: Uint8Array): Uint8Array {
  return rawPublic(createPublicKey(privateKeyObject(ED25519_PKCS8, privateKey, 'Ed25519 private key')));
}

/** An Ed25519 key pair from a 32-byte random seed. */
export function generateEd25519KeyPair(random: RandomBytes = secureRandomBytes): RawKeyPair {
  const privateKey = random(32);
  return { privateKey, publicKey: ed25519PublicKey(privateKey) };
}

/**
 * An Ed25519 private key parsed once for many signatures: a custodian signs every answer with the
 * same key, and {@link ed25519Sign} of a raw key parses it into OpenSSL's form on every call.
 */
export interface Ed25519PrivateKey {
  /** The raw 32-byte public half. */
  readonly publicKey: Uint8Array;
  /** {@link ed25519Sign} with this key: the same 64 bytes (Ed25519 signatures are deterministic). */
  sign(message: Uint8Array): Uint8Array;
}

/** Parses a raw 32-byte Ed25519 private key (seed) once (see {@link Ed25519PrivateKey}). */
export function prepareEd25519PrivateKey(privateKey: Uint8Array): Ed25519PrivateKey {
  const key = privateKeyObject(ED25519_PKCS8, privateKey, 'Ed25519 private key');
  return { publicKey: rawPublic(createPublicKey(key)), sign: (message) => new Uint8Array(nodeSign(null, message, key)) };
}

/** Ed25519 signature (RFC 8032 §5.1.6, pure Ed25519) of `message`: 64 bytes. */
export function ed25519Sign(privateKey: Uint8Array | Ed25519PrivateKey, message: Uint8Array): Uint8Array {
  if (!(privateKey instanceof Uint8Array)) return privateKey.sign(message);
  return new Uint8Array(nodeSign(null, message, privateKeyObject(ED25519_PKCS8, privateKey, 'Ed25519 private key')));
}

/**
 * Parsed Ed25519 public keys by their raw bytes. A device's key is verified again every round (its
 * manifest, by the coordinator at intake and by each custodian), the authority's and the
 * coordinator's on every request; parsing the raw key into OpenSSL's form (createPublicKey) is a
 * sizeable part of one verification (bench/committee-verify.ts). Public keys only, nothing to
 * erase; a key that does not parse is not kept. Bounded: cleared past 8,192 keys.
 */
const ed25519PublicKeys = new Map<string, KeyObject>();
const MAX_CACHED_PUBLIC_KEYS = 8192;

function ed25519PublicKeyObject(raw: Uint8Array): KeyObject {
  checkLength(raw, 'Ed25519 public key');
  const id = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64');
  let key = ed25519PublicKeys.get(id);
  if (key === undefined) {
    key = publicKeyObject(ED25519_SPKI, raw, 'Ed25519 public key', 'ed25519');
    if (ed25519PublicKeys.size >= MAX_CACHED_PUBLIC_KEYS) ed25519PublicKeys.clear();
    ed25519PublicKeys.set(id, key);
  }
  return key;
}

/**
 * Verifies an Ed25519 signature (RFC 8032 §5.1.7). Returns false for a wrong signature, a
 * signature of the wrong length or a public key that is not a curve point; never throws for
 * those, so callers map every failure to one refusal.
 */
export function ed25519Verify(publicKey: Uint8Array, message: Uint8Array, signature: Uint8Array): boolean {
  if (!(signature instanceof Uint8Array) || signature.length !== 64) return false;
  let key: KeyObject;
  try {
    key = ed25519PublicKeyObject(publicKey);
  } catch {
    return false;
  }
  try {
    return nodeVerify(null, message, key, signature);
  } catch {
    return false;
  }
}

/** Fresh custodian keys: an X25519 sealing pair and an Ed25519 signing pair. */
export function generateCustodianKeys(random: RandomBytes = secureRandomBytes): CustodianKeys {
  return { sealing: generateX25519KeyPair(random), signing: generateEd25519KeyPair(random) };
}

/** A custodian's fingerprint: hex SHA-256(signingPublicKey || sealingPublicKey), 64 hex digits. */
export function custodianFingerprint(signingPublicKey: Uint8Array, sealingPublicKey: Uint8Array): string {
  checkLength(signingPublicKey, 'signing public key');
  checkLength(sealingPublicKey, 'sealing public key');
  return toHex(sha256(signingPublicKey, sealingPublicKey));
}

/**
 * The fingerprint as people compare it: its first 16 bytes as eight groups of four hex digits,
 * e.g. `3f2a 91c0 …`. Accepts the 64-digit fingerprint.
 */
export function formatFingerprint(fingerprint: string): string {
  if (!/^[0-9a-f]{64}$/.test(fingerprint)) {
    throw new CryptoError('invalid_argument', 'a fingerprint is 64 lower-case hex digits');
  }
  return fingerprint.slice(0, 32).match(/.{4}/g)!.join(' ');
}
