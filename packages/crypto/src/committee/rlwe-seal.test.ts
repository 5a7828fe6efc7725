/**
 * Known-answer test against an independent implementation: Microsoft SEAL 4.1 (node-seal)
 * decrypts a BFV ciphertext whose c0 was built by our encryptUpdate and whose c1 is our public
 * polynomial a = INTT(â), under our ternary secret s loaded into SEAL as its secret key.
 * SEAL's decryption computes round(t · [c0 + c1·s]_q / q) mod t with its own NTT (smallest
 * primitive 2N-th root, bit-reversed), so agreement checks our ring multiplication, sign
 * convention, XOF-derived a and error distribution.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { encryptionParametersForPreset } from '../he/params.js';
import { loadSeal } from '../seal.js';
import { N, Q, derivePublicPolynomialNtt, nttInverse } from './ring.js';
import { encryptUpdate, sampleTernary } from './rlwe.js';

function seededBytes(seed: string) {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

// SEAL 4.1 serialization offsets (compr_mode none; serialization.h, ciphertext.cpp, plaintext.cpp):
// Plaintext: header 16, parms_id 32, coeff_count u64, scale f64, DynArray header 16, u64 count, words.
const PLAIN_WORDS_AT = 16 + 32 + 8 + 8 + 16 + 8;
// Ciphertext: header 16, parms_id 32, is_ntt_form u8, size, N, k, scale, correction_factor (5 x 8),
// DynArray header 16, u64 count, words (c0 then c1).
const CIPHER_WORDS_AT = 16 + 32 + 1 + 40 + 16 + 8;

describe('known-answer test: SEAL decrypts a c0 built in TypeScript', () => {
  it('SEAL recovers the plaintext with noise budget left, for two rounds and two secrets', async () => {
    const seal = await loadSeal();
    const parms = new seal.EncryptionParameters(seal.SchemeType.bfv);
    parms.loadFromArray(await encryptionParametersForPreset('bfv-n2048-q44-t29'));
    const context = new seal.SEALContext(parms, true, seal.SecLevelType.tc128);
    const evaluator = new seal.Evaluator(context);
    const keygen = new seal.KeyGenerator(context);
    const publicKey = keygen.createPublicKey();
    const encryptor = new seal.Encryptor(context, publicKey);
    const coeff = parms.coeffModulus();
    expect(coeff.size()).toBe(1);
    const qModulus = coeff.get(0)!;
    expect(Number(qModulus.value())).toBe(Q);
    qModulus.delete();
    coeff.delete();
    const plainModulus = parms.plainModulus();
    const t = BigInt(plainModulus.value());
    plainModulus.delete();
    const q = BigInt(Q);
    const random = seededBytes('kat');

    for (const [round, seedByte] of [[1, 3], [2, 200]] as const) {
      const roundSeed = new Uint8Array(32).fill(seedByte);
      const descriptorHash = new Uint8Array(32).fill(0x42);
      const s = sampleTernary(random);

      // s into SEAL: a coefficient plaintext with -1 written as t - 1 (SEAL lifts the upper half
      // of [0, t) to negative residues when transforming a plaintext to NTT form), transformed,
      // and loaded as the secret key (a SecretKey serializes as its NTT-form plaintext).
      const plainTemplate = new seal.Plaintext(N);
      const plainBytes = Uint8Array.from(plainTemplate.saveToArray(seal.ComprModeType.none) as Uint8Array);
      const plainView = new DataView(plainBytes.buffer);
      for (let k = 0; k < N; k++) plainView.setBigUint64(PLAIN_WORDS_AT + 8 * k, s[k] === -1 ? t - 1n : BigInt(s[k]!), true);
      const sPlain = new seal.Plaintext();
      sPlain.loadFromArray(context, plainBytes);
      evaluator.plainTransformToNttInplace(sPlain, context.keyParmsId());
      const secretKey = new seal.SecretKey();
      secretKey.loadFromArray(context, sPlain.saveToArray(seal.ComprModeType.none));
      const decryptor = new seal.Decryptor(context, secretKey);

      // c0 = -a·s + e (our encryptUpdate with m = 0), plus SEAL's scaling round(q·m'/t) of a message m'.
      const c0 = encryptUpdate(new Int32Array(N), s, { descriptorHash, round, roundSeed, deltaBits: 12, random });
      const message = Array.from({ length: N }, (_, k) => (BigInt(k) * 7919n * BigInt(round) + 12345n) % t);
      const a = derivePublicPolynomialNtt(descriptorHash, round, roundSeed, 0);
      nttInverse(a);

      const zero = new seal.Plaintext();
      const template = new seal.Ciphertext();
      encryptor.encrypt(zero, template);
      const ctBytes = Uint8Array.from(template.saveToArray(seal.ComprModeType.none) as Uint8Array);
      const ctView = new DataView(ctBytes.buffer);
      expect(ctView.getBigUint64(16 + 32 + 1, true)).toBe(2n); // two polynomials
      expect(ctBytes[16 + 32]).toBe(0); // coefficient form
      for (let k = 0; k < N; k++) {
        const scaled = (q * message[k]! + t / 2n) / t; // round(q·m'/t)
        ctView.setBigUint64(CIPHER_WORDS_AT + 8 * k, (BigInt(c0[k]!) + scaled) % q, true);
        ctView.setBigUint64(CIPHER_WORDS_AT + 8 * (N + k), BigInt(a[k]!), true);
      }
      const ciphertext = new seal.Ciphertext();
      ciphertext.loadFromArray(context, ctBytes);
      expect(decryptor.invariantNoiseBudget(ciphertext)).toBeGreaterThan(0);
      const decrypted = new seal.Plaintext();
      decryptor.decrypt(ciphertext, decrypted);
      const outBytes = Uint8Array.from(decrypted.saveToArray(seal.ComprModeType.none) as Uint8Array);
      const outView = new DataView(outBytes.buffer);
      const coeffCount = Number(outView.getBigUint64(16 + 32, true));
      const got = Array.from({ length: N }, (_, k) => (k < coeffCount ? outView.getBigUint64(PLAIN_WORDS_AT + 8 * k, true) : 0n));
      expect(got).toEqual(message);

      // Control: the same ciphertext under a secret with one coefficient changed does not decrypt.
      const wrong = Int8Array.from(s);
      wrong[0] = wrong[0] === 1 ? 0 : 1;
      for (let k = 0; k < N; k++) plainView.setBigUint64(PLAIN_WORDS_AT + 8 * k, wrong[k] === -1 ? t - 1n : BigInt(wrong[k]!), true);
      const wrongPlain = new seal.Plaintext();
      wrongPlain.loadFromArray(context, plainBytes);
      evaluator.plainTransformToNttInplace(wrongPlain, context.keyParmsId());
      const wrongKey = new seal.SecretKey();
      wrongKey.loadFromArray(context, wrongPlain.saveToArray(seal.ComprModeType.none));
      const wrongDecryptor = new seal.Decryptor(context, wrongKey);
      const wrongOut = new seal.Plaintext();
      wrongDecryptor.decrypt(ciphertext, wrongOut);
      expect(wrongDecryptor.invariantNoiseBudget(ciphertext)).toBe(0);
      for (const obj of [plainTemplate, sPlain, secretKey, decryptor, zero, template, ciphertext, decrypted, wrongPlain, wrongKey, wrongDecryptor, wrongOut]) obj.delete();
    }
    for (const obj of [encryptor, publicKey, keygen, evaluator, context, parms]) obj.delete();
  }, 60_000);
});
