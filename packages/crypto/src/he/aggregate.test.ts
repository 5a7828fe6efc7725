import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCiphertextAccumulator, loadUpdate } from './aggregate.js';
import type { CiphertextAccumulator } from './aggregate.js';
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

/** Independent reference quantizer: clip to [-1, 1], scale by 2^13, round half away from zero. */
function referenceLevel(x: number): number {
  const clipped = Math.max(-1, Math.min(1, x));
  const scaled = Math.abs(clipped) * 8192;
  return Math.sign(clipped) * Math.floor(scaled + 0.5);
}

/** Recomputes the payload digest (SHA-256 of every byte except the digest field at 96..128). */
function redigest(payload: Uint8Array): Uint8Array {
  const digest = createHash('sha256').update(payload.subarray(0, 96)).update(payload.subarray(128)).digest();
  const out = payload.slice();
  out.set(digest, 96);
  return out;
}

const P = 199_210; // the 784-200-200-10 MLP
let bundle: KeyBundle;
let ctx: HeContext;
let encryptor: UpdateEncryptor;
let decryptor: SumDecryptor;

beforeAll(async () => {
  bundle = await generateKeyBundle({ taskId: 'aggregate-test' });
  ctx = await createHeContext(bundle.coordinator);
  encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
  decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device });
});
afterAll(() => {
  encryptor.dispose();
  decryptor.dispose();
  ctx.dispose();
});

describe('encrypted weighted FedAvg', () => {
  it('20 clients x 199,210 values: exact integer sums, mean within step/2 of float64 FedAvg, <= 7 bytes/value', () => {
    const random = rng(20);
    const clients = Array.from({ length: 20 }, () => {
      const values = new Float32Array(P);
      for (let i = 0; i < P; i++) values[i] = random() < 0.01 ? (random() - 0.5) * 6 : random() * 2 - 1; // 1% clipped
      return { values, weight: 1 + Math.floor(random() * 128) };
    });
    const accumulator = createCiphertextAccumulator(ctx, { valueCount: P });
    try {
      for (const { values, weight } of clients) {
        const payload = encryptor.encrypt(values, weight);
        expect(payload.byteLength / P).toBeLessThanOrEqual(7);
        accumulator.add(payload);
      }
      const totalWeight = clients.reduce((s, c) => s + c.weight, 0);
      expect(accumulator.count).toBe(20);
      expect(accumulator.totalWeight).toBe(totalWeight);

      const result = decryptor.decryptMean(accumulator.toPayload());
      expect(result).toMatchObject({ clientCount: 20, totalWeight });
      expect(result.noiseBudgetBits).toBeGreaterThan(0);
      let maxError = 0;
      for (let i = 0; i < P; i++) {
        let levels = 0;
        let weighted = 0;
        for (const { values, weight } of clients) {
          levels += weight * referenceLevel(values[i]!);
          weighted += weight * Math.max(-1, Math.min(1, values[i]!));
        }
        if (result.levelSums[i] !== levels) expect.fail(`level sum ${i}: ${result.levelSums[i]} !== ${levels}`);
        maxError = Math.max(maxError, Math.abs(result.mean[i]! - weighted / totalWeight));
      }
      expect(maxError).toBeLessThanOrEqual(2 ** -14 + 1e-12);
      expect(maxError).toBeGreaterThan(0);
    } finally {
      accumulator.dispose();
    }
  });
});

describe('CiphertextAccumulator.add refuses bad payloads and stays unchanged', () => {
  const V = 5000; // 3 ciphertexts
  const values = Float32Array.from({ length: V }, (_, i) => Math.sin(i) * 0.9);
  let accumulator: CiphertextAccumulator;
  let good: Uint8Array;
  let snapshot: Uint8Array;

  beforeAll(() => {
    accumulator = createCiphertextAccumulator(ctx, { valueCount: V });
    good = encryptor.encrypt(values, 3);
    accumulator.add(good);
    snapshot = accumulator.toPayload();
  });
  afterAll(() => accumulator.dispose());

  const expectRefused = (payload: Uint8Array, code: string, message: RegExp = /./): void => {
    expect(() => accumulator.add(payload)).toThrow(
      expect.objectContaining({ name: 'CryptoError', code, message: expect.stringMatching(message) }),
    );
    // The coordinator's check before recording (loadUpdate) refuses it the same way.
    expect(() => loadUpdate(ctx, payload, { valueCount: V })).toThrow(
      expect.objectContaining({ name: 'CryptoError', code, message: expect.stringMatching(message) }),
    );
    expect(accumulator.count).toBe(1);
    expect(accumulator.totalWeight).toBe(3);
    expect(accumulator.toPayload()).toEqual(snapshot);
  };

  it('a flipped ciphertext byte (digest mismatch)', () => {
    const tampered = good.slice();
    tampered[tampered.length - 5000]! ^= 0x01;
    expectRefused(tampered, 'invalid_ciphertext', /digest/);
  });

  it('a coefficient >= q with a recomputed digest', () => {
    const header = readPayloadHeader(good);
    const tampered = good.slice();
    const at = header.headerBytes + 113; // first packed 44-bit coefficient of the first ciphertext
    tampered.fill(0xff, at, at + 5);
    tampered[at + 5] = tampered[at + 5]! | 0x0f; // bits 0..43 all set: 2^44 - 1 > q
    expectRefused(redigest(tampered), 'invalid_ciphertext', /coefficient 0 is not below its prime/);
  });

  it('a last ciphertext cut short, with a consistent header and digest', () => {
    const header = readPayloadHeader(good);
    const view = new DataView(good.buffer.slice(0));
    const last = header.ciphertextCount - 1;
    view.setUint32(128 + 4 * last, header.ciphertextBytes[last]! - 100, true);
    const shortened = new Uint8Array(view.buffer).subarray(0, good.length - 100);
    expectRefused(redigest(shortened), 'invalid_ciphertext', /packed length/);
  });

  it('truncated bytes and bad magic', () => {
    expectRefused(good.subarray(0, good.length - 1), 'invalid_payload');
    expectRefused(good.subarray(0, 100), 'invalid_payload');
    const magic = good.slice();
    magic[0] = 0;
    expectRefused(magic, 'invalid_payload');
  });

  it('another value count or ciphertext count', () => {
    const other = encryptor.encrypt(values.subarray(0, V - 1), 3);
    expectRefused(other, 'shape_mismatch');
    const lying = good.slice();
    new DataView(lying.buffer).setUint32(72, 4000, true); // 4000 values need 2 ciphertexts, it has 3
    expectRefused(lying, 'shape_mismatch');
  });

  it('a sum claiming more clients than the noise bound allows', () => {
    const crowded = snapshot.slice();
    const view = new DataView(crowded.buffer);
    view.setUint32(80, ctx.maxClients + 1, true);
    view.setBigUint64(88, BigInt(ctx.maxClients + 1), true);
    expectRefused(redigest(crowded), 'headroom_exceeded', /noise bound/);
  });

  it('a weight above the cap', () => {
    const heavy = good.slice();
    new DataView(heavy.buffer).setBigUint64(88, 129n, true);
    expectRefused(redigest(heavy), 'invalid_payload');
  });

  it('a payload from another parameter set, another key, or another quantization', async () => {
    const otherParams = await generateKeyBundle({ taskId: 'x', preset: 'bfv-n2048-q54-t29' });
    const otherKey = await generateKeyBundle({ taskId: 'x' });
    const otherStep = await generateKeyBundle({ taskId: 'x', keyId: bundle.device.keyId, quantization: { step: 2 ** -12 } });
    for (const [other, code] of [
      [otherParams, 'parameter_mismatch'],
      [otherKey, 'key_mismatch'],
      [otherStep, 'parameter_mismatch'],
    ] as const) {
      const otherCtx = await createHeContext(other.device);
      const otherEncryptor = createUpdateEncryptor(otherCtx, { deviceKey: other.device });
      try {
        expectRefused(otherEncryptor.encrypt(values, 3), code);
      } finally {
        otherEncryptor.dispose();
        otherCtx.dispose();
      }
    }
    expect(() => createSumDecryptor(ctx, { deviceKey: otherKey.device })).toThrow(
      expect.objectContaining({ code: 'key_mismatch' }),
    );
  });

  it('a bad seed record or parms_id with a recomputed digest', () => {
    const header = readPayloadHeader(good);
    const seedType = good.slice();
    seedType[header.headerBytes + header.ciphertextBytes[0]! - 65] = 7; // prng_type byte before the 64-byte seed
    expectRefused(redigest(seedType), 'invalid_ciphertext', /seed record/);
    const parmsId = good.slice();
    parmsId[header.headerBytes + 20]! ^= 1;
    expectRefused(redigest(parmsId), 'invalid_ciphertext', /parms_id/);
  });

  it('still adds good payloads afterwards', () => {
    accumulator.add(encryptor.encrypt(values, 2));
    const sum = decryptor.decrypt(accumulator.toPayload());
    expect(sum).toMatchObject({ clientCount: 2, totalWeight: 5 });
    for (let i = 0; i < V; i++) {
      if (sum.levelSums[i] !== 5 * referenceLevel(values[i]!)) expect.fail(`value ${i}`);
    }
  });
});

describe('loadUpdate and addLoaded: one parse per update', () => {
  const V = 5000; // 3 ciphertexts
  const values = (k: number): Float32Array => Float32Array.from({ length: V }, (_, i) => Math.sin(i * (k + 1)) * 0.9);

  it('gives exactly the sum add gives (same ciphertext bytes), and consumes what it adds', () => {
    const inputs = [1, 2, 3, 4].map((k) => values(k));
    const payloads = inputs.map((v, j) => encryptor.encrypt(v, j + 1));
    const byPayload = createCiphertextAccumulator(ctx, { valueCount: V });
    const byLoaded = createCiphertextAccumulator(ctx, { valueCount: V });
    try {
      for (const p of payloads) byPayload.add(p);
      for (const p of payloads) {
        const loaded = loadUpdate(ctx, p, { valueCount: V });
        expect(loaded).toMatchObject({ valueCount: V, clientCount: 1, totalWeight: readPayloadHeader(p).totalWeight });
        byLoaded.addLoaded(loaded);
        // Consumed: adding it again is refused, disposing it is a no-op.
        expect(() => byLoaded.addLoaded(loaded)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
        loaded.dispose();
      }
      expect(byLoaded).toMatchObject({ count: 4, totalWeight: 10 });
      expect(byLoaded.toPayload()).toEqual(byPayload.toPayload());
      const sum = decryptor.decrypt(byLoaded.toPayload());
      for (let i = 0; i < V; i++) {
        const expected = inputs.reduce((a, v, j) => a + (j + 1) * referenceLevel(v[i]!), 0);
        if (sum.levelSums[i] !== expected) expect.fail(`value ${i}: ${sum.levelSums[i]} != ${expected}`);
      }
    } finally {
      byPayload.dispose();
      byLoaded.dispose();
    }
  });

  it('refuses, unchanged and still owned by the caller: headroom, another value count, another context, after dispose', async () => {
    const wide = await generateKeyBundle({ taskId: 'wide-loaded', quantization: { clipMaxAbs: 1000, weightCap: 20 } });
    const wideCtx = await createHeContext(wide.coordinator);
    const wideEncryptor = createUpdateEncryptor(wideCtx, { deviceKey: wide.device });
    const full = createCiphertextAccumulator(wideCtx, { valueCount: 10 });
    const other = createCiphertextAccumulator(wideCtx, { valueCount: 10 });
    const shorter = createCiphertextAccumulator(wideCtx, { valueCount: 9 });
    const foreign = createCiphertextAccumulator(ctx, { valueCount: 10 });
    try {
      const update = wideEncryptor.encrypt(new Float32Array(10).fill(-1000), 20);
      full.addLoaded(loadUpdate(wideCtx, update, { valueCount: 10 }));
      const before = full.toPayload();
      const second = loadUpdate(wideCtx, update, { valueCount: 10 });
      // 20 + 20 > 32, the overflow-free total weight of this quantization.
      expect(() => full.addLoaded(second)).toThrow(expect.objectContaining({ code: 'headroom_exceeded' }));
      expect(() => shorter.addLoaded(second)).toThrow(expect.objectContaining({ code: 'shape_mismatch' }));
      expect(() => foreign.addLoaded(second)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
      expect(full).toMatchObject({ count: 1, totalWeight: 20 });
      expect(full.toPayload()).toEqual(before);
      // Refused means not consumed: it can still be added elsewhere.
      other.addLoaded(second);
      expect(other.toPayload()).toEqual(before);
      const third = loadUpdate(wideCtx, update, { valueCount: 10 });
      third.dispose();
      third.dispose();
      expect(() => other.addLoaded(third)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
      expect(() => loadUpdate(wideCtx, update, { valueCount: 11 })).toThrow(expect.objectContaining({ code: 'shape_mismatch' }));
    } finally {
      for (const a of [full, other, shorter, foreign]) a.dispose();
      wideEncryptor.dispose();
      wideCtx.dispose();
    }
  });
});

describe('headroom and sums of sums', () => {
  it('refuses an add whose total weight could overflow t, unchanged', async () => {
    // clip 1000 at step 2^-13: 8,192,000 levels; (t-1)/2 / 8,192,000 = 32 total weight.
    const wide = await generateKeyBundle({ taskId: 'wide', quantization: { clipMaxAbs: 1000, weightCap: 20 } });
    const wideCtx = await createHeContext(wide.coordinator);
    const wideEncryptor = createUpdateEncryptor(wideCtx, { deviceKey: wide.device });
    const accumulator = createCiphertextAccumulator(wideCtx, { valueCount: 10 });
    try {
      expect(wideCtx.maxTotalWeight).toBe(32);
      const update = wideEncryptor.encrypt(new Float32Array(10).fill(-1000), 20);
      accumulator.add(update);
      expect(() => accumulator.add(update)).toThrow(expect.objectContaining({ code: 'headroom_exceeded' }));
      expect(accumulator.totalWeight).toBe(20);
    } finally {
      accumulator.dispose();
      wideEncryptor.dispose();
      wideCtx.dispose();
    }
  });

  it('adds partial sums (hierarchical aggregation) and refuses an empty sum', () => {
    const V = 100;
    const a = createCiphertextAccumulator(ctx, { valueCount: V });
    const b = createCiphertextAccumulator(ctx, { valueCount: V });
    const total = createCiphertextAccumulator(ctx, { valueCount: V });
    try {
      expect(() => total.toPayload()).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
      const ones = new Float32Array(V).fill(1 / 8);
      a.add(encryptor.encrypt(ones, 1));
      a.add(encryptor.encrypt(ones, 2));
      b.add(encryptor.encrypt(ones, 4));
      total.add(a.toPayload());
      total.add(b.toPayload());
      const sum = decryptor.decryptMean(total.toPayload());
      expect(sum).toMatchObject({ clientCount: 3, totalWeight: 7 });
      expect(Array.from(new Set(sum.levelSums))).toEqual([7 * 1024]);
      expect(Array.from(new Set(sum.mean))).toEqual([1 / 8]);
    } finally {
      a.dispose();
      b.dispose();
      total.dispose();
    }
  });

  it('refuses use after dispose', () => {
    const accumulator = createCiphertextAccumulator(ctx, { valueCount: 1 });
    accumulator.dispose();
    accumulator.dispose();
    expect(() => accumulator.toPayload()).toThrow(expect.objectContaining({ code: 'disposed' }));
  });
});
