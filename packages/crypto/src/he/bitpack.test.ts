import { describe, expect, it } from 'vitest';
import { packSealCiphertext, unpackSealCiphertext, unpackSealCiphertextBytewise } from './bitpack.js';

/** A synthetic SEAL 4.1 uncompressed ciphertext serialization with the given words and suffix. */
function sealBytes(words: bigint[], suffix: Uint8Array): Uint8Array {
  const total = 113 + 8 * words.length + suffix.length;
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  const header = (at: number, size: number): void => {
    view.setUint16(at, 0xa15e, true);
    out[at + 2] = 16;
    out[at + 3] = 4;
    out[at + 4] = 1;
    view.setBigUint64(at + 8, BigInt(size), true);
  };
  header(0, total);
  for (let i = 16; i < 89; i++) out[i] = (i * 7) & 0xff; // metadata is copied verbatim
  header(89, 16 + 8 + 8 * words.length);
  view.setBigUint64(105, BigInt(words.length), true);
  words.forEach((w, i) => view.setBigUint64(113 + 8 * i, w, true));
  out.set(suffix, 113 + 8 * words.length);
  return out;
}

describe('bit packing of SEAL ciphertexts', () => {
  it('round-trips words of every width and keeps header and suffix verbatim', () => {
    for (const bits of [1, 13, 16, 17, 31, 32, 33, 44, 54, 60, 64]) {
      const max = (1n << BigInt(bits)) - 1n;
      const words = [0n, max, 1n, max >> 1n, 0x1234_5678_9abc_def0n & max, max - 1n, 5n & max];
      const raw = sealBytes(words, Uint8Array.from([9, 8, 7]));
      const packed = packSealCiphertext(raw, bits);
      expect(packed.byteLength).toBe(113 + Math.ceil((words.length * bits) / 8) + 3);
      expect(unpackSealCiphertext(packed, bits)).toEqual(raw);
    }
  });

  it('packs 2048 words of 44 bits into 11,264 bytes (44/64 of SEAL size)', () => {
    const words = Array.from({ length: 2048 }, (_, i) => (BigInt(i) * 0x9e37_79b9_7f4an) % (1n << 44n));
    const packed = packSealCiphertext(sealBytes(words, new Uint8Array(81)), 44);
    expect(packed.byteLength).toBe(113 + 11_264 + 81);
  });

  it('refuses words that do not fit, wrong lengths and set padding bits', () => {
    const raw = sealBytes([1n << 44n], new Uint8Array(0));
    expect(() => packSealCiphertext(raw, 44)).toThrow(expect.objectContaining({ code: 'invalid_ciphertext' }));
    const packed = packSealCiphertext(sealBytes([3n], new Uint8Array(0)), 4);
    expect(() => unpackSealCiphertext(packed.subarray(0, packed.length - 1), 4)).toThrow(
      expect.objectContaining({ code: 'invalid_ciphertext' }),
    );
    const padded = packed.slice();
    padded[113] = padded[113]! | 0x80; // bit 7 is padding for one 4-bit word
    expect(() => unpackSealCiphertext(padded, 4)).toThrow(expect.objectContaining({ code: 'invalid_ciphertext' }));
    const notSeal = raw.slice();
    notSeal[0] = 0;
    expect(() => packSealCiphertext(notSeal, 45)).toThrow(expect.objectContaining({ code: 'invalid_ciphertext' }));
  });

  it('unpacks exactly like the byte-wise reference for every width, length and call order', () => {
    // Deterministic 64-bit words (splitmix-like), masked to the width.
    let state = 0x9e37_79b9_7f4a_7c15n;
    const next = (): bigint => {
      state = (state + 0x9e37_79b9_7f4a_7c15n) & 0xffff_ffff_ffff_ffffn;
      let z = state;
      z = ((z ^ (z >> 30n)) * 0xbf58_476d_1ce4_e5b9n) & 0xffff_ffff_ffff_ffffn;
      z = ((z ^ (z >> 27n)) * 0x94d0_49bb_1331_11ebn) & 0xffff_ffff_ffff_ffffn;
      return z ^ (z >> 31n);
    };
    // Long and short inputs alternate, so a reused scratch buffer must not leak bits between calls.
    for (const length of [2048, 1, 7, 2048, 3, 64, 5]) {
      for (let bits = 1; bits <= 64; bits++) {
        const mask = (1n << BigInt(bits)) - 1n;
        const words = Array.from({ length }, () => next() & mask);
        const packed = packSealCiphertext(sealBytes(words, Uint8Array.from([1, 2, 3, 4, 5])), bits);
        const fast = unpackSealCiphertext(packed, bits);
        const reference = unpackSealCiphertextBytewise(packed, bits);
        if (Buffer.compare(Buffer.from(fast.buffer, fast.byteOffset, fast.byteLength), Buffer.from(reference)) !== 0) {
          expect.fail(`${length} words of ${bits} bits`);
        }
      }
    }
    expect(unpackSealCiphertextBytewise(packSealCiphertext(sealBytes([3n, 1n], new Uint8Array(0)), 2), 2)).toEqual(sealBytes([3n, 1n], new Uint8Array(0)));
  });
});
