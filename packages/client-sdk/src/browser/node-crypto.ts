/**
 * The part of `node:crypto` the SDK and @veil/crypto's committee code use, for browsers (the
 * browser bundle aliases `node:crypto` to this module; scripts/build-browser.mjs). The Node code
 * calls these synchronously, and Web Crypto's digest, HMAC, AES-GCM, X25519 and Ed25519 are
 * asynchronous only, so the primitives come from the audited pure-JS @noble libraries:
 *   - SHA-256 / SHA-512 (FIPS 180-4), SHAKE256 (FIPS 202), HMAC (RFC 2104): @noble/hashes;
 *   - AES-GCM (NIST SP 800-38D): @noble/ciphers;
 *   - X25519 (RFC 7748) and Ed25519 (RFC 8032, strict verification as OpenSSL does: zip215 off):
 *     @noble/curves.
 * Randomness is Web Crypto's `getRandomValues` (at most 65,536 bytes per call). Keys are the
 * PKCS#8 / SPKI DER forms of RFC 8410 that committee/keys.ts builds. Tested against node:crypto
 * (OpenSSL) and the RFCs' vectors in node-crypto.test.ts.
 */
import { Buffer } from 'buffer';
import { sha256, sha512 } from '@noble/hashes/sha2.js';
import { shake256 } from '@noble/hashes/sha3.js';
import { hkdf } from '@noble/hashes/hkdf.js';
import { hmac } from '@noble/hashes/hmac.js';
import { gcm } from '@noble/ciphers/aes.js';
import { ed25519, x25519 } from '@noble/curves/ed25519.js';

type Data = string | Uint8Array;
const bytesOf = (data: Data): Uint8Array => (typeof data === 'string' ? new TextEncoder().encode(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
const out = (bytes: Uint8Array, encoding?: string): Buffer | string => {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return encoding === undefined ? b : b.toString(encoding as BufferEncoding);
};

interface IncrementalHash {
  update(data: Uint8Array): unknown;
  digest(): Uint8Array;
}

class Hash {
  constructor(private readonly inner: IncrementalHash) {}
  update(data: Data): this {
    this.inner.update(bytesOf(data));
    return this;
  }
  digest(): Buffer;
  digest(encoding: string): string;
  digest(encoding?: string): Buffer | string {
    return out(this.inner.digest(), encoding);
  }
}

export function createHash(algorithm: string, options?: { outputLength?: number }): Hash {
  switch (algorithm.toLowerCase()) {
    case 'sha256':
      return new Hash(sha256.create());
    case 'sha512':
      return new Hash(sha512.create());
    case 'shake256':
      return new Hash(shake256.create({ dkLen: options?.outputLength ?? 32 }));
    default:
      throw new Error(`createHash: ${algorithm} is not available in the browser build`);
  }
}

export function createHmac(algorithm: string, key: Data): Hash {
  if (algorithm.toLowerCase() !== 'sha256') throw new Error(`createHmac: ${algorithm} is not available in the browser build`);
  return new Hash(hmac.create(sha256, bytesOf(key)));
}

/** HKDF (RFC 5869: Expand(Extract(salt, ikm), info, length)) with SHA-256, as node:crypto's: an ArrayBuffer of `length` bytes. */
export function hkdfSync(digest: string, ikm: Data, salt: Data, info: Data, length: number): ArrayBuffer {
  if (digest.toLowerCase() !== 'sha256') throw new Error(`hkdfSync: ${digest} is not available in the browser build`);
  const okm = hkdf(sha256, bytesOf(ikm), bytesOf(salt), bytesOf(info), length);
  return okm.buffer.slice(okm.byteOffset, okm.byteOffset + okm.byteLength) as ArrayBuffer;
}

const GCM_KEY_BYTES: Record<string, number> = { 'aes-128-gcm': 16, 'aes-256-gcm': 32 };

/** AES-GCM as node:crypto's cipher object; the whole message is processed at `final()` (one-shot AEAD). */
class GcmCipher {
  private readonly parts: Uint8Array[] = [];
  private aad: Uint8Array = new Uint8Array(0);
  private tag: Uint8Array | null = null;
  constructor(
    private readonly decrypt: boolean,
    algorithm: string,
    private readonly key: Uint8Array,
    private readonly nonce: Uint8Array,
    options?: { authTagLength?: number },
  ) {
    const keyBytes = GCM_KEY_BYTES[algorithm.toLowerCase()];
    if (keyBytes === undefined) throw new Error(`${algorithm} is not available in the browser build`);
    if (key.length !== keyBytes) throw new RangeError('Invalid key length');
    if ((options?.authTagLength ?? 16) !== 16) throw new RangeError('only 16-byte GCM tags are available in the browser build');
  }
  setAAD(aad: Uint8Array): this {
    this.aad = bytesOf(aad).slice();
    return this;
  }
  setAuthTag(tag: Uint8Array): this {
    this.tag = bytesOf(tag).slice();
    return this;
  }
  update(data: Uint8Array): Buffer {
    this.parts.push(bytesOf(data).slice());
    return Buffer.alloc(0);
  }
  final(): Buffer {
    const input = concat(this.parts);
    const aead = gcm(this.key, this.nonce, this.aad);
    if (!this.decrypt) {
      const sealed = aead.encrypt(input);
      this.tag = sealed.subarray(sealed.length - 16);
      return Buffer.from(sealed.subarray(0, sealed.length - 16));
    }
    if (this.tag === null) throw new Error('Unsupported state or unable to authenticate data');
    try {
      return Buffer.from(aead.decrypt(concat([input, this.tag])));
    } catch {
      throw new Error('Unsupported state or unable to authenticate data');
    }
  }
  getAuthTag(): Buffer {
    if (this.tag === null) throw new Error('getAuthTag before final');
    return Buffer.from(this.tag);
  }
}

function concat(parts: Uint8Array[]): Uint8Array {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const all = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    all.set(p, at);
    at += p.length;
  }
  return all;
}

export function createCipheriv(algorithm: string, key: Uint8Array, iv: Uint8Array, options?: { authTagLength?: number }): GcmCipher {
  return new GcmCipher(false, algorithm, bytesOf(key), bytesOf(iv), options);
}

export function createDecipheriv(algorithm: string, key: Uint8Array, iv: Uint8Array, options?: { authTagLength?: number }): GcmCipher {
  return new GcmCipher(true, algorithm, bytesOf(key), bytesOf(iv), options);
}

// ------------------------------------------------------------------ X25519 / Ed25519 keys (RFC 8410 DER)

type Curve = 'x25519' | 'ed25519';
/** The algorithm OID's last byte in the DER forms: 1.3.101.110 (X25519), 1.3.101.112 (Ed25519). */
const OID_BYTE: Record<number, Curve> = { 0x6e: 'x25519', 0x70: 'ed25519' };
const SPKI_PREFIX = (oid: number): Uint8Array => Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, oid, 0x03, 0x21, 0x00]);
const PKCS8_PREFIX = (oid: number): Uint8Array => Uint8Array.from([0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, oid, 0x04, 0x22, 0x04, 0x20]);
const OID_OF: Record<Curve, number> = { x25519: 0x6e, ed25519: 0x70 };

export class KeyObject {
  constructor(
    readonly type: 'private' | 'public',
    readonly asymmetricKeyType: Curve,
    /** @internal raw 32 bytes */
    readonly raw: Uint8Array,
  ) {}
  export(options: { format: 'der'; type: 'spki' | 'pkcs8' }): Buffer {
    if (options.format !== 'der') throw new Error('only DER export is available in the browser build');
    const oid = OID_OF[this.asymmetricKeyType];
    if (options.type === 'spki') {
      const pub = this.type === 'public' ? this.raw : publicOf(this).raw;
      return Buffer.from(concat([SPKI_PREFIX(oid), pub]));
    }
    if (this.type !== 'private') throw new Error('a public key has no PKCS#8 form');
    return Buffer.from(concat([PKCS8_PREFIX(oid), this.raw]));
  }
}

function parseDer(der: Uint8Array, prefix: (oid: number) => Uint8Array, what: string): { curve: Curve; raw: Uint8Array } {
  for (const [oidText, name] of Object.entries(OID_BYTE)) {
    const p = prefix(Number(oidText));
    if (der.length === p.length + 32 && p.every((b, i) => der[i] === b)) return { curve: name, raw: der.slice(p.length) };
  }
  throw new Error(`unsupported ${what} (only X25519 and Ed25519 in RFC 8410 DER)`);
}

function publicOf(key: KeyObject): KeyObject {
  const raw = key.asymmetricKeyType === 'x25519' ? x25519.getPublicKey(key.raw) : ed25519.getPublicKey(key.raw);
  return new KeyObject('public', key.asymmetricKeyType, raw);
}

export function createPrivateKey(input: { key: Uint8Array; format: 'der'; type: 'pkcs8' }): KeyObject {
  const { curve, raw } = parseDer(bytesOf(input.key), PKCS8_PREFIX, 'private key');
  return new KeyObject('private', curve, raw);
}

export function createPublicKey(input: KeyObject | { key: Uint8Array; format: 'der'; type: 'spki' }): KeyObject {
  if (input instanceof KeyObject) return input.type === 'public' ? input : publicOf(input);
  const { curve, raw } = parseDer(bytesOf(input.key), SPKI_PREFIX, 'public key');
  return new KeyObject('public', curve, raw);
}

export function diffieHellman(options: { privateKey: KeyObject; publicKey: KeyObject }): Buffer {
  const { privateKey, publicKey } = options;
  if (privateKey.asymmetricKeyType !== 'x25519' || publicKey.asymmetricKeyType !== 'x25519') throw new Error('diffieHellman: X25519 keys only');
  // Throws for a small-order public key (all-zero shared secret), as OpenSSL does.
  return Buffer.from(x25519.getSharedSecret(privateKey.raw, publicKey.raw));
}

export function sign(algorithm: null | undefined, data: Uint8Array, key: KeyObject): Buffer {
  if (algorithm != null || key.asymmetricKeyType !== 'ed25519' || key.type !== 'private') throw new Error('sign: Ed25519 private keys only');
  return Buffer.from(ed25519.sign(bytesOf(data), key.raw));
}

export function verify(algorithm: null | undefined, data: Uint8Array, key: KeyObject, signature: Uint8Array): boolean {
  if (algorithm != null || key.asymmetricKeyType !== 'ed25519') throw new Error('verify: Ed25519 keys only');
  const pub = key.type === 'public' ? key.raw : publicOf(key).raw;
  return ed25519.verify(bytesOf(signature), bytesOf(data), pub, { zip215: false });
}

// ------------------------------------------------------------------ randomness and comparison

/** Fills `view`'s bytes from Web Crypto (65,536 bytes per call at most). */
export function randomFillSync<T extends ArrayBufferView>(view: T): T {
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  for (let at = 0; at < bytes.length; at += 65_536) globalThis.crypto.getRandomValues(bytes.subarray(at, Math.min(at + 65_536, bytes.length)));
  return view;
}

export function randomBytes(length: number): Buffer {
  return randomFillSync(Buffer.alloc(length));
}

export function randomUUID(): string {
  return globalThis.crypto.randomUUID();
}

export function timingSafeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.byteLength !== b.byteLength) throw new RangeError('Input buffers must have the same byte length');
  let diff = 0;
  for (let i = 0; i < a.byteLength; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Web Crypto, as node:crypto exposes it. */
export const webcrypto = globalThis.crypto;
