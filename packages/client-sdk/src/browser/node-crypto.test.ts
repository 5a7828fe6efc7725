/**
 * The browser build's node:crypto (node-crypto.ts, @noble) against node:crypto (OpenSSL) on
 * random inputs, and against the RFCs' published vectors.
 */
import * as node from 'node:crypto';
import { describe, expect, test } from 'vitest';
import * as shim from './node-crypto.js';

const rand = (n: number): Buffer => node.randomBytes(n);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const X25519_PKCS8 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const ED25519_PKCS8 = Buffer.from('302e020100300506032b657004220420', 'hex');
const ED25519_SPKI = Buffer.from('302a300506032b6570032100', 'hex');
const X25519_SPKI = Buffer.from('302a300506032b656e032100', 'hex');

describe('browser node:crypto shim', () => {
  test('SHA-256, SHA-512, SHAKE256 and HMAC-SHA256 equal OpenSSL on random inputs', () => {
    for (const length of [0, 1, 55, 64, 1000, 70_000]) {
      const data = rand(length);
      const key = rand(1 + (length % 80));
      expect(shim.createHash('sha256').update(data).digest('hex')).toBe(node.createHash('sha256').update(data).digest('hex'));
      expect(hex(shim.createHash('sha512').update(data).update('x').digest())).toBe(node.createHash('sha512').update(data).update('x').digest('hex'));
      expect(hex(shim.createHash('shake256', { outputLength: 6 * 97 }).update(data).digest())).toBe(
        node.createHash('shake256', { outputLength: 6 * 97 }).update(data).digest('hex'),
      );
      expect(hex(shim.createHmac('sha256', key).update(data).digest())).toBe(node.createHmac('sha256', key).update(data).digest('hex'));
    }
    // FIPS 180-4 example "abc".
    expect(shim.createHash('sha256').update('abc').digest('hex')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  });

  test('HKDF-SHA256 equals OpenSSL on random inputs and RFC 5869 test case 1', () => {
    for (const length of [1, 32, 42, 255]) {
      const ikm = rand(length % 70);
      const salt = rand(length % 33);
      const info = rand(length % 50);
      expect(hex(new Uint8Array(shim.hkdfSync('sha256', ikm, salt, info, length)))).toBe(hex(new Uint8Array(node.hkdfSync('sha256', ikm, salt, info, length))));
    }
    // RFC 5869, Appendix A.1.
    const okm = shim.hkdfSync('sha256', Buffer.alloc(22, 0x0b), Buffer.from('000102030405060708090a0b0c', 'hex'), Buffer.from('f0f1f2f3f4f5f6f7f8f9', 'hex'), 42);
    expect(hex(new Uint8Array(okm))).toBe('3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  });

  test('AES-128-GCM: sealed by one side, opened by the other; a flipped bit fails to open', () => {
    for (const length of [0, 16, 33, 1000]) {
      const key = rand(16);
      const nonce = rand(12);
      const aad = rand(20);
      const plaintext = rand(length);
      const c1 = shim.createCipheriv('aes-128-gcm', key, nonce, { authTagLength: 16 }).setAAD(aad);
      const sealed = Buffer.concat([c1.update(plaintext), c1.final(), c1.getAuthTag()]);
      const c2 = node.createCipheriv('aes-128-gcm', key, nonce, { authTagLength: 16 }).setAAD(aad);
      expect(hex(sealed)).toBe(hex(Buffer.concat([c2.update(plaintext), c2.final(), c2.getAuthTag()])));
      const d = shim.createDecipheriv('aes-128-gcm', key, nonce, { authTagLength: 16 }).setAAD(aad).setAuthTag(sealed.subarray(sealed.length - 16));
      expect(hex(Buffer.concat([d.update(sealed.subarray(0, sealed.length - 16)), d.final()]))).toBe(hex(plaintext));
      const bad = Buffer.from(sealed);
      bad[0] = bad[0]! ^ 1;
      const e = shim.createDecipheriv('aes-128-gcm', key, nonce, { authTagLength: 16 }).setAAD(aad).setAuthTag(bad.subarray(bad.length - 16));
      e.update(bad.subarray(0, bad.length - 16));
      if (length > 0) expect(() => e.final()).toThrow();
    }
  });

  test('X25519 and Ed25519 through DER key objects equal OpenSSL; RFC 7748 and RFC 8032 vectors', () => {
    for (let i = 0; i < 8; i++) {
      const a = rand(32);
      const b = rand(32);
      const pubShim = shim.createPublicKey(shim.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, a]), format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' });
      const pubNode = node.createPublicKey(node.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, a]), format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' });
      expect(hex(pubShim)).toBe(hex(pubNode));
      const bPub = node.createPublicKey(node.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, b]), format: 'der', type: 'pkcs8' })).export({ format: 'der', type: 'spki' });
      const sharedShim = shim.diffieHellman({
        privateKey: shim.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, a]), format: 'der', type: 'pkcs8' }),
        publicKey: shim.createPublicKey({ key: bPub, format: 'der', type: 'spki' }),
      });
      const sharedNode = node.diffieHellman({
        privateKey: node.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, a]), format: 'der', type: 'pkcs8' }),
        publicKey: node.createPublicKey({ key: bPub, format: 'der', type: 'spki' }),
      });
      expect(hex(sharedShim)).toBe(hex(sharedNode));

      const seed = rand(32);
      const message = rand(100 + i);
      const sk = shim.createPrivateKey({ key: Buffer.concat([ED25519_PKCS8, seed]), format: 'der', type: 'pkcs8' });
      const skNode = node.createPrivateKey({ key: Buffer.concat([ED25519_PKCS8, seed]), format: 'der', type: 'pkcs8' });
      const sig = shim.sign(null, message, sk);
      expect(hex(sig)).toBe(hex(node.sign(null, message, skNode)));
      const pk = shim.createPublicKey(sk);
      expect(hex(pk.export({ format: 'der', type: 'spki' }))).toBe(hex(node.createPublicKey(skNode).export({ format: 'der', type: 'spki' })));
      expect(shim.verify(null, message, pk, sig)).toBe(true);
      const tampered = Buffer.from(sig);
      tampered[5] = tampered[5]! ^ 0x10;
      expect(shim.verify(null, message, pk, tampered)).toBe(false);
    }
    // RFC 7748 §6.1: Alice's key pair and the shared secret with Bob.
    const alice = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex');
    const bobPub = Buffer.from('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f', 'hex');
    const aliceKey = shim.createPrivateKey({ key: Buffer.concat([X25519_PKCS8, alice]), format: 'der', type: 'pkcs8' });
    expect(hex(shim.createPublicKey(aliceKey).export({ format: 'der', type: 'spki' }).subarray(12))).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    expect(hex(shim.diffieHellman({ privateKey: aliceKey, publicKey: shim.createPublicKey({ key: Buffer.concat([X25519_SPKI, bobPub]), format: 'der', type: 'spki' }) }))).toBe(
      '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742',
    );
    // RFC 8032 §7.1 TEST 1 (empty message).
    const seed = Buffer.from('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60', 'hex');
    const key = shim.createPrivateKey({ key: Buffer.concat([ED25519_PKCS8, seed]), format: 'der', type: 'pkcs8' });
    expect(hex(shim.createPublicKey(key).export({ format: 'der', type: 'spki' }).subarray(12))).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(hex(shim.sign(null, new Uint8Array(0), key))).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
    expect(shim.verify(null, new Uint8Array(0), shim.createPublicKey({ key: Buffer.concat([ED25519_SPKI, Buffer.from('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a', 'hex')]), format: 'der', type: 'spki' }), shim.sign(null, new Uint8Array(0), key))).toBe(true);
  });

  test('randomness fills more than one Web Crypto call; timingSafeEqual compares', () => {
    const big = shim.randomBytes(200_000);
    expect(big.length).toBe(200_000);
    // The last 65,536-byte block was filled too (all zero with probability 2^-524288).
    expect(big.subarray(big.length - 65_536).some((b) => b !== 0)).toBe(true);
    expect(shim.timingSafeEqual(Buffer.from([1, 2]), Buffer.from([1, 2]))).toBe(true);
    expect(shim.timingSafeEqual(Buffer.from([1, 2]), Buffer.from([1, 3]))).toBe(false);
    expect(() => shim.timingSafeEqual(Buffer.from([1]), Buffer.from([1, 2]))).toThrow(RangeError);
    expect(shim.randomUUID()).toMatch(/^[0-9a-f-]{36}$/);
  });
});
