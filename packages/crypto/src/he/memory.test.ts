import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sealRuntimeStats } from '../seal.js';
import { createCiphertextAccumulator, loadUpdate } from './aggregate.js';
import { createSumDecryptor } from './decrypt.js';
import { createUpdateEncryptor } from './encrypt.js';
import { generateKeyBundle } from './keys.js';
import { createHeContext } from './params.js';
import { readPayloadHeader } from './payload.js';

describe('SEAL memory', () => {
  it('does not grow across 200 encrypt/add/loadUpdate iterations (including refused payloads)', async () => {
    const bundle = await generateKeyBundle({ taskId: 'memory' });
    const ctx = await createHeContext(bundle.coordinator);
    const V = 3 * 2048 + 7; // 4 ciphertexts
    const values = Float32Array.from({ length: V }, (_, i) => Math.cos(i) * 0.7);
    const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
    const decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device });
    const iteration = (k: number): void => {
      const accumulator = createCiphertextAccumulator(ctx, { valueCount: V });
      try {
        const payload = encryptor.encrypt(values, 1 + (k % 7));
        accumulator.add(payload);
        accumulator.add(encryptor.encrypt(values, 1));
        // Loaded once and added (consumed), loaded and disposed unused, and refused by loadUpdate.
        accumulator.addLoaded(loadUpdate(ctx, encryptor.encrypt(values, 2), { valueCount: V }));
        loadUpdate(ctx, payload, { valueCount: V }).dispose();
        // A payload refused after unpacking (a coefficient >= q, digest recomputed).
        const bad = payload.slice();
        const at = readPayloadHeader(payload).headerBytes + 113;
        bad.fill(0xff, at, at + 6);
        bad.set(createHash('sha256').update(bad.subarray(0, 96)).update(bad.subarray(128)).digest(), 96);
        expect(() => accumulator.add(bad)).toThrow(expect.objectContaining({ message: expect.stringContaining('not below its prime') }));
        expect(() => loadUpdate(ctx, bad, { valueCount: V })).toThrow(expect.objectContaining({ message: expect.stringContaining('not below its prime') }));
        if (k % 50 === 0) decryptor.decrypt(accumulator.toPayload());
        else accumulator.toPayload();
      } finally {
        accumulator.dispose();
      }
    };
    try {
      for (let k = 0; k < 20; k++) iteration(k); // warm SEAL's memory pool
      const before = sealRuntimeStats().heapBytes;
      expect(before).toBeGreaterThan(0);
      for (let k = 0; k < 200; k++) iteration(k);
      expect(sealRuntimeStats().heapBytes).toBe(before);
    } finally {
      encryptor.dispose();
      decryptor.dispose();
      ctx.dispose();
    }
  }, 60_000);
});
