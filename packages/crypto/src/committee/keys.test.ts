import { describe, expect, it } from 'vitest';
import { fromHex, sha256, toHex } from './bytes.js';
import {
  custodianFingerprint,
  ed25519PublicKey,
  ed25519Sign,
  ed25519Verify,
  formatFingerprint,
  generateCustodianKeys,
  prepareX25519PrivateKey,
  prepareEd25519PrivateKey,
  x25519,
  x25519PublicKey,
} from './keys.js';

const h = (text: string) => fromHex(text, 'vector');

describe('X25519 (RFC 7748 §6.1 test vector)', () => {
  const alicePriv = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a';
  const alicePub = '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a';
  const bobPriv = '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb';
  const bobPub = 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f';
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';

  it('derives the published public keys and shared secret', () => {
    expect(toHex(x25519PublicKey(h(alicePriv)))).toBe(alicePub);
    expect(toHex(x25519PublicKey(h(bobPriv)))).toBe(bobPub);
    expect(toHex(x25519(h(alicePriv), h(bobPub)))).toBe(shared);
    expect(toHex(x25519(h(bobPriv), h(alicePub)))).toBe(shared);
  });

  it('refuses the all-zero output of a small-order point', () => {
    expect(() => x25519(h(alicePriv), new Uint8Array(32))).toThrow(expect.objectContaining({ code: 'invalid_key_material' }));
  });

  it('a prepared private key gives the published public key and shared secret, and the same refusals', () => {
    const alice = prepareX25519PrivateKey(h(alicePriv));
    expect(toHex(alice.publicKey)).toBe(alicePub);
    expect(toHex(alice.agree(h(bobPub)))).toBe(shared);
    expect(toHex(alice.agree(h(bobPub)))).toBe(shared); // reusable
    expect(() => alice.agree(new Uint8Array(32))).toThrow(expect.objectContaining({ code: 'invalid_key_material' }));
    expect(() => alice.agree(new Uint8Array(31))).toThrow(expect.objectContaining({ code: 'invalid_key_material' }));
    expect(() => prepareX25519PrivateKey(new Uint8Array(31))).toThrow(expect.objectContaining({ code: 'invalid_key_material' }));
  });

  it('reads a public key given as a view into a larger buffer (the 32 bytes at its offset, nothing else)', () => {
    const alice = prepareX25519PrivateKey(h(alicePriv));
    const padded = new Uint8Array(40).fill(0xaa);
    padded.set(h(bobPub), 5);
    expect(toHex(alice.agree(padded.subarray(5, 37)))).toBe(shared);
    expect(toHex(x25519(h(alicePriv), padded.subarray(5, 37)))).toBe(shared);
    expect(toHex(alice.agree(padded.subarray(4, 36)))).not.toBe(shared);
  });
});

describe('Ed25519 (RFC 8032 §7.1 TEST 1 and TEST 2)', () => {
  it('derives the published keys and signatures, and verifies them', () => {
    const sk1 = h('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60');
    const pk1 = 'd75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a';
    const sig1 = 'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b';
    expect(toHex(ed25519PublicKey(sk1))).toBe(pk1);
    expect(toHex(ed25519Sign(sk1, new Uint8Array(0)))).toBe(sig1);
    expect(ed25519Verify(h(pk1), new Uint8Array(0), h(sig1))).toBe(true);

    const sk2 = h('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb');
    const pk2 = '3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c';
    const sig2 = '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00';
    expect(toHex(ed25519PublicKey(sk2))).toBe(pk2);
    expect(toHex(ed25519Sign(sk2, h('72')))).toBe(sig2);
    expect(ed25519Verify(h(pk2), h('72'), h(sig2))).toBe(true);
    // Another message, another key, a flipped bit, a short signature, a key that is not a point.
    expect(ed25519Verify(h(pk2), h('73'), h(sig2))).toBe(false);
    expect(ed25519Verify(h(pk1), h('72'), h(sig2))).toBe(false);
    const flipped = h(sig2);
    flipped[10]! ^= 4;
    expect(ed25519Verify(h(pk2), h('72'), flipped)).toBe(false);
    expect(ed25519Verify(h(pk2), h('72'), h(sig2).subarray(0, 63))).toBe(false);
    expect(ed25519Verify(new Uint8Array(31), h('72'), h(sig2))).toBe(false);
  });

  it('a signing key parsed once signs the published signatures and derives the published public key', () => {
    const sk1 = prepareEd25519PrivateKey(h('9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60'));
    expect(toHex(sk1.publicKey)).toBe('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a');
    expect(toHex(ed25519Sign(sk1, new Uint8Array(0)))).toBe(
      'e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b',
    );
    const sk2 = prepareEd25519PrivateKey(h('4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb'));
    // The same key object signs again: still the RFC's signature for each message.
    for (let i = 0; i < 2; i++) {
      expect(toHex(sk2.sign(h('72')))).toBe(
        '92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00',
      );
    }
    expect(() => prepareEd25519PrivateKey(new Uint8Array(31))).toThrow(expect.objectContaining({ code: 'invalid_key_material' }));
  });

  it('a key verified before (kept parsed) gives the same answers: valid, another message, another key, a view into a larger buffer', () => {
    const pk2 = h('3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c');
    const sig2 = h('92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00');
    for (let i = 0; i < 3; i++) {
      expect(ed25519Verify(pk2, h('72'), sig2)).toBe(true);
      expect(ed25519Verify(pk2, h('73'), sig2)).toBe(false);
    }
    // The same 32 bytes at an offset in another buffer are the same key; other bytes are another key.
    const padded = new Uint8Array(40);
    padded.set(pk2, 5);
    expect(ed25519Verify(padded.subarray(5, 37), h('72'), sig2)).toBe(true);
    expect(ed25519Verify(padded.subarray(4, 36), h('72'), sig2)).toBe(false);
    // 32 bytes that are not a curve point: refused every time (y = 2 has no x on edwards25519).
    const notAPoint = new Uint8Array(32);
    notAPoint[0] = 2;
    expect(ed25519Verify(notAPoint, h('72'), sig2)).toBe(false);
    expect(ed25519Verify(notAPoint, h('72'), sig2)).toBe(false);
  });
});

describe('custodian keys and fingerprints', () => {
  it('fingerprint = SHA-256(signing || sealing), shown as the first 16 bytes in groups of four hex digits', () => {
    const keys = generateCustodianKeys();
    const fp = custodianFingerprint(keys.signing.publicKey, keys.sealing.publicKey);
    const expected = toHex(sha256(new Uint8Array([...keys.signing.publicKey, ...keys.sealing.publicKey])));
    expect(fp).toBe(expected);
    const shown = formatFingerprint(fp);
    expect(shown).toMatch(/^([0-9a-f]{4} ){7}[0-9a-f]{4}$/);
    expect(shown.replaceAll(' ', '')).toBe(fp.slice(0, 32));
    // The order matters: swapping the keys gives another fingerprint.
    expect(custodianFingerprint(keys.sealing.publicKey, keys.signing.publicKey)).not.toBe(fp);
    expect(x25519PublicKey(keys.sealing.privateKey)).toEqual(keys.sealing.publicKey);
    expect(ed25519PublicKey(keys.signing.privateKey)).toEqual(keys.signing.publicKey);
  });

  it('two generations differ (CSPRNG), and an injected RNG is deterministic', () => {
    const a = generateCustodianKeys();
    const b = generateCustodianKeys();
    expect(toHex(a.sealing.privateKey)).not.toBe(toHex(b.sealing.privateKey));
    let counter = 0;
    const rng = (n: number) => new Uint8Array(n).fill(++counter);
    const c = generateCustodianKeys(rng);
    counter = 0;
    const d = generateCustodianKeys(rng);
    expect(c).toEqual(d);
  });
});
