import { describe, expect, it } from 'vitest';
import { fromHex, toHex, utf8 } from './bytes.js';
import {
  aeadOpen,
  aeadSeal,
  hpkeDecap,
  hpkeDeriveKeyPair,
  hpkeEncap,
  hpkeExport,
  hpkeKeySchedule,
  hpkeNonce,
  openBase,
  sealBase,
} from './hpke.js';
import { generateX25519KeyPair, prepareX25519PrivateKey } from './keys.js';

// RFC 9180, Appendix A.1.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM, mode_base.
// Values copied from the RFC's published test vectors.
const A11 = {
  info: '4f6465206f6e2061204772656369616e2055726e',
  ikmE: '7268600d403fce431561aef583ee1613527cff655c1343f29812e66706df3234',
  pkEm: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
  skEm: '52c4a758a802cd8b936eceea314432798d5baf2d7e9235dc084ab1b9cfa2f736',
  ikmR: '6db9df30aa07dd42ee5e8181afdb977e538f5e1fec8a06223f33f7013e525037',
  pkRm: '3948cfe0ad1ddb695d780e59077195da6c56506b027329794ab02bca80815c4d',
  skRm: '4612c550263fc8ad58375df3f557aac531d26850903e55a9f23f21d8534e8ac8',
  enc: '37fda3567bdbd628e88668c3c8d7e97d1d1253b6d4ea6d44c150f741f1bf4431',
  sharedSecret: 'fe0e18c9f024ce43799ae393c7e8fe8fce9d218875e8227b0187c04e7d2ea1fc',
  keyScheduleContext:
    '00725611c9d98c07c03f60095cd32d400d8347d45ed67097bbad50fc56da742d07cb6cffde367bb0565ba28bb02c90744a20f5ef37f30523526106f637abb05449',
  key: '4531685d41d65f03dc48f6b8302c05b0',
  baseNonce: '56d890e5accaaf011cff4b7d',
  exporterSecret: '45ff1c2e220db587171952c0592d5f5ebe103f1561a2614e38f2ffd47e99e3f8',
  pt: '4265617574792069732074727574682c20747275746820626561757479',
};

// RFC 9180 A.1.1.1 encryptions (sequence number, aad, nonce, ciphertext).
const ENCRYPTIONS = [
  { seq: 0, aad: '436f756e742d30', nonce: '56d890e5accaaf011cff4b7d', ct: 'f938558b5d72f1a23810b4be2ab4f84331acc02fc97babc53a52ae8218a355a96d8770ac83d07bea87e13c512a' },
  { seq: 1, aad: '436f756e742d31', nonce: '56d890e5accaaf011cff4b7c', ct: 'af2d7e9ac9ae7e270f46ba1f975be53c09f8d875bdc8535458c2494e8a6eab251c03d0c22a56b8ca42c2063b84' },
  { seq: 2, aad: '436f756e742d32', nonce: '56d890e5accaaf011cff4b7f', ct: '498dfcabd92e8acedc281e85af1cb4e3e31c7dc394a1ca20e173cb72516491588d96a19ad4a683518973dcc180' },
  { seq: 4, aad: '436f756e742d34', nonce: '56d890e5accaaf011cff4b79', ct: '583bd32bc67a5994bb8ceaca813d369bca7b2a42408cddef5e22f880b631215a09fc0012bc69fccaa251c0246d' },
  { seq: 255, aad: '436f756e742d323535', nonce: '56d890e5accaaf011cff4b82', ct: '7175db9717964058640a3a11fb9007941a5d1757fda1a6935c805c21af32505bf106deefec4a49ac38d71c9e0a' },
  { seq: 256, aad: '436f756e742d323536', nonce: '56d890e5accaaf011cff4a7d', ct: '957f9800542b0b8891badb026d79cc54597cb2d225b54c00c5238c25d05c30e3fbeda97d2e0e1aba483a2df9f2' },
];

// RFC 9180 A.1.1.2 exported values (exporter context, 32-byte value).
const EXPORTS = [
  { context: '', value: '3853fe2b4035195a573ffc53856e77058e15d9ea064de3e59f4961d0095250ee' },
  { context: '00', value: '2e8f0b54673c7029649d4eb9d5e33bf1872cf76d623ff164ac185da9e88c21a5' },
  { context: '54657374436f6e74657874', value: 'e9e43065102c3836401bed8c3c3c75ae46be1639869391d62c61f1ec7af54931' },
];

const h = (text: string) => fromHex(text, 'vector');

describe('HPKE against RFC 9180 Appendix A.1.1', () => {
  it('DeriveKeyPair reproduces the ephemeral and recipient key pairs', () => {
    const e = hpkeDeriveKeyPair(h(A11.ikmE));
    expect(toHex(e.privateKey)).toBe(A11.skEm);
    expect(toHex(e.publicKey)).toBe(A11.pkEm);
    const r = hpkeDeriveKeyPair(h(A11.ikmR));
    expect(toHex(r.privateKey)).toBe(A11.skRm);
    expect(toHex(r.publicKey)).toBe(A11.pkRm);
  });

  it('Encap and Decap give the published enc and shared secret', () => {
    const encap = hpkeEncap(h(A11.pkRm), { privateKey: h(A11.skEm), publicKey: h(A11.pkEm) });
    expect(toHex(encap.enc)).toBe(A11.enc);
    expect(toHex(encap.sharedSecret)).toBe(A11.sharedSecret);
    expect(toHex(hpkeDecap(h(A11.enc), h(A11.skRm)))).toBe(A11.sharedSecret);
  });

  it('the key schedule gives the published context, key, base nonce and exporter secret', () => {
    const ctx = hpkeKeySchedule(h(A11.sharedSecret), h(A11.info));
    expect(toHex(ctx.keyScheduleContext)).toBe(A11.keyScheduleContext);
    expect(toHex(ctx.key)).toBe(A11.key);
    expect(toHex(ctx.baseNonce)).toBe(A11.baseNonce);
    expect(toHex(ctx.exporterSecret)).toBe(A11.exporterSecret);
    for (const { context, value } of EXPORTS) expect(toHex(hpkeExport(ctx, h(context), 32))).toBe(value);
    // The context handed out is the caller's copy: writing to it changes no later key schedule.
    ctx.keyScheduleContext.fill(0);
    const again = hpkeKeySchedule(h(A11.sharedSecret), h(A11.info));
    expect(toHex(again.keyScheduleContext)).toBe(A11.keyScheduleContext);
    expect(toHex(again.key)).toBe(A11.key);
    expect(toHex(again.baseNonce)).toBe(A11.baseNonce);
  });

  it.each(ENCRYPTIONS)('encryption $seq gives the published nonce and ciphertext', ({ seq, aad, nonce, ct }) => {
    const n = hpkeNonce(h(A11.baseNonce), seq);
    expect(toHex(n)).toBe(nonce);
    expect(toHex(aeadSeal(h(A11.key), n, h(aad), h(A11.pt)))).toBe(ct);
    expect(toHex(aeadOpen(h(A11.key), n, h(aad), h(ct)))).toBe(A11.pt);
  });

  it('single-shot sealBase with the vector ikmE equals enc || the sequence-0 ciphertext, and openBase opens it', () => {
    const sealed = sealBase(h(A11.pkRm), h(A11.info), h(ENCRYPTIONS[0]!.aad), h(A11.pt), { random: () => h(A11.ikmE) });
    expect(toHex(sealed)).toBe(A11.enc + ENCRYPTIONS[0]!.ct);
    expect(toHex(openBase(h(A11.skRm), h(A11.info), h(ENCRYPTIONS[0]!.aad), sealed))).toBe(A11.pt);
  });

  it('openBase with a prepared recipient key opens the vector too', () => {
    const sealed = sealBase(h(A11.pkRm), h(A11.info), h(ENCRYPTIONS[0]!.aad), h(A11.pt), { random: () => h(A11.ikmE) });
    const recipient = prepareX25519PrivateKey(h(A11.skRm));
    expect(toHex(recipient.publicKey)).toBe(A11.pkRm);
    expect(toHex(openBase(recipient, h(A11.info), h(ENCRYPTIONS[0]!.aad), sealed))).toBe(A11.pt);
  });
});

describe('sealBase / openBase', () => {
  const info = utf8('veil/committee-share/v1');
  const aad = utf8('aad');
  const pt = new Uint8Array(4096).map((_, i) => i & 0xff);

  it('uses a fresh ephemeral key per message and round-trips', () => {
    const r = generateX25519KeyPair();
    const a = sealBase(r.publicKey, info, aad, pt);
    const b = sealBase(r.publicKey, info, aad, pt);
    expect(a.length).toBe(pt.length + 48);
    expect(toHex(a.subarray(0, 32))).not.toBe(toHex(b.subarray(0, 32)));
    expect(openBase(r.privateKey, info, aad, a)).toEqual(pt);
    expect(openBase(r.privateKey, info, aad, b)).toEqual(pt);
  });

  it('refuses another recipient, another aad, another info, flipped bits and truncation', () => {
    const r = generateX25519KeyPair();
    const other = generateX25519KeyPair();
    const sealed = sealBase(r.publicKey, info, aad, pt);
    const codeOf = (fn: () => unknown) => {
      try {
        fn();
        return 'opened';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(codeOf(() => openBase(other.privateKey, info, aad, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openBase(r.privateKey, info, utf8('aae'), sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openBase(r.privateKey, utf8('veil/other/v1'), aad, sealed))).toBe('invalid_ciphertext');
    for (const at of [0, 40, sealed.length - 1]) {
      const bad = Uint8Array.from(sealed);
      bad[at]! ^= 1;
      expect(codeOf(() => openBase(r.privateKey, info, aad, bad))).toBe('invalid_ciphertext');
    }
    expect(codeOf(() => openBase(r.privateKey, info, aad, sealed.subarray(0, 47)))).toBe('invalid_ciphertext');
    expect(codeOf(() => openBase(r.privateKey, info, aad, sealed.subarray(0, sealed.length - 1)))).toBe('invalid_ciphertext');
  });

  it('refuses the same with a prepared recipient key, and a small-order ephemeral key', () => {
    const r = generateX25519KeyPair();
    const prepared = prepareX25519PrivateKey(r.privateKey);
    const other = prepareX25519PrivateKey(generateX25519KeyPair().privateKey);
    const sealed = sealBase(r.publicKey, info, aad, pt);
    const codeOf = (fn: () => unknown) => {
      try {
        fn();
        return 'opened';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(openBase(prepared, info, aad, sealed)).toEqual(pt);
    expect(codeOf(() => openBase(other, info, aad, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openBase(prepared, info, utf8('aae'), sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openBase(prepared, utf8('veil/other/v1'), aad, sealed))).toBe('invalid_ciphertext');
    for (const at of [0, 40, sealed.length - 1]) {
      const bad = Uint8Array.from(sealed);
      bad[at]! ^= 1;
      expect(codeOf(() => openBase(prepared, info, aad, bad))).toBe('invalid_ciphertext');
    }
    const smallOrder = Uint8Array.from(sealed);
    smallOrder.fill(0, 0, 32);
    expect(codeOf(() => openBase(prepared, info, aad, smallOrder))).toBe('invalid_ciphertext');
  });

  it('refuses a small-order ephemeral key (all-zero DH output, RFC 9180 §7.1.4)', () => {
    const r = generateX25519KeyPair();
    const sealed = sealBase(r.publicKey, info, aad, pt);
    const bad = Uint8Array.from(sealed);
    bad.fill(0, 0, 32); // u = 0 is a small-order point
    expect(() => openBase(r.privateKey, info, aad, bad)).toThrow(expect.objectContaining({ code: 'invalid_ciphertext' }));
  });
});
