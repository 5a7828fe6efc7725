import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CryptoError } from '../errors.js';
import { createCiphertextAccumulator } from './aggregate.js';
import { createSumDecryptor } from './decrypt.js';
import type { SumDecryptor } from './decrypt.js';
import { createUpdateEncryptor } from './encrypt.js';
import type { UpdateEncryptor } from './encrypt.js';
import { generateKeyBundle } from './keys.js';
import type { KeyBundle } from './keys.js';
import { createHeContext } from './params.js';
import type { HeContext } from './params.js';
import { readPayloadHeader } from './payload.js';
import { createSeededRng } from '@veil/privacy';

/** Seeded uniform values in [0, 1) (@veil/privacy's test generator), so failures reproduce. */
function rng(seed: number): () => number {
  const generator = createSeededRng(seed);
  return () => generator.nextDouble();
}

/** Reference: Σ w·r_i mod t, centred in [-(t-1)/2, (t-1)/2], computed in bigint. */
function centredModularSum(clients: readonly (readonly number[])[], weights: readonly number[], i: number, t: bigint): number {
  let s = 0n;
  clients.forEach((levels, k) => {
    s += BigInt(levels[i]!) * BigInt(weights[k]!);
  });
  let r = s % t;
  if (r < 0n) r += t;
  return Number(r > (t - 1n) / 2n ? r - t : r);
}

const P = 5000; // 3 ciphertexts of 2048 slots, the last one partly filled
let bundle: KeyBundle;
let ctx: HeContext;
let encryptor: UpdateEncryptor;
let decryptor: SumDecryptor;
let t: bigint;

beforeAll(async () => {
  bundle = await generateKeyBundle({ taskId: 'encrypt-levels-test' });
  ctx = await createHeContext(bundle.coordinator);
  encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
  decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device, valueCount: P });
  t = ctx.parameters.plainModulus;
});
afterAll(() => {
  encryptor.dispose();
  decryptor.dispose();
  ctx.dispose();
});

describe('UpdateEncryptor.encryptLevels', () => {
  it('packs residues in [0, t) exactly: the coordinator sum decrypts to the centred mod-t sum', () => {
    const random = rng(7);
    const tn = Number(t);
    // Uniform residues wrap around t many times when summed: the sum is only right mod t.
    const clients = Array.from({ length: 5 }, () => Array.from({ length: P }, () => Math.floor(random() * tn)));
    clients[0]![0] = tn - 1; // extremes
    clients[1]![0] = 0;
    const weights = clients.map(() => 1);
    const accumulator = createCiphertextAccumulator(ctx, { valueCount: P });
    try {
      for (const levels of clients) {
        const payload = encryptor.encryptLevels(Int32Array.from(levels));
        expect(readPayloadHeader(payload)).toMatchObject({ kind: 'update', valueCount: P, clientCount: 1, totalWeight: 1 });
        accumulator.add(payload);
      }
      const sum = decryptor.decrypt(accumulator.toPayload());
      expect(sum).toMatchObject({ clientCount: 5, totalWeight: 5 });
      for (let i = 0; i < P; i++) expect(sum.levelSums[i]).toBe(centredModularSum(clients, weights, i, t));
    } finally {
      accumulator.dispose();
    }
  });

  it('accepts centred levels (Float64Array) and weights them mod t', () => {
    const random = rng(11);
    const half = (Number(t) - 1) / 2;
    const clients = Array.from({ length: 3 }, () => Array.from({ length: P }, () => Math.round((random() * 2 - 1) * half)));
    clients[2]![1] = -half;
    clients[2]![2] = half;
    const weights = [1, 3, 128];
    const accumulator = createCiphertextAccumulator(ctx, { valueCount: P });
    try {
      clients.forEach((levels, k) => accumulator.add(encryptor.encryptLevels(Float64Array.from(levels), weights[k]!)));
      const sum = decryptor.decrypt(accumulator.toPayload());
      expect(sum.totalWeight).toBe(132);
      for (let i = 0; i < P; i++) expect(sum.levelSums[i]).toBe(centredModularSum(clients, weights, i, t));
    } finally {
      accumulator.dispose();
    }
  });

  it('a residue and its centred representative give the same ciphertext plaintext', () => {
    const tn = Number(t);
    const residues = Int32Array.from({ length: 10 }, (_, i) => tn - 1 - i);
    const centred = Float64Array.from(residues, (r) => r - tn);
    const a = decryptor.decrypt(encryptor.encryptLevels(pad(residues)));
    const b = decryptor.decrypt(encryptor.encryptLevels(pad(centred)));
    expect(Array.from(a.levelSums.subarray(0, 10))).toEqual(Array.from(centred));
    expect(Array.from(b.levelSums.subarray(0, 10))).toEqual(Array.from(centred));
  });

  it('refuses non-integers and values outside [-(t-1)/2, t) instead of rounding or clipping them', () => {
    const tn = Number(t);
    const half = (tn - 1) / 2;
    for (const bad of [0.5, Number.NaN, Number.POSITIVE_INFINITY, tn, -half - 1]) {
      const levels = new Float64Array(P);
      levels[17] = bad;
      expect(() => encryptor.encryptLevels(levels)).toThrowError(CryptoError);
      try {
        encryptor.encryptLevels(levels);
      } catch (error) {
        expect((error as CryptoError).code).toBe('invalid_argument');
      }
    }
    expect(() => encryptor.encryptLevels(new Int32Array(P), 0)).toThrowError(/weight/);
    expect(() => encryptor.encryptLevels(new Int32Array(0))).toThrowError(/valueCount/);
  });

  it('costs the same bytes per value as encrypt(): about 5.6 bytes/value for the default preset', () => {
    const payload = encryptor.encryptLevels(new Int32Array(4096).fill(123));
    const floats = encryptor.encrypt(new Float32Array(4096), 1);
    expect(payload.byteLength).toBe(floats.byteLength);
    expect(payload.byteLength / 4096).toBeLessThanOrEqual(7);
  });
});

function pad(levels: Int32Array | Float64Array): Float64Array {
  const out = new Float64Array(P);
  out.set(levels);
  return out;
}
