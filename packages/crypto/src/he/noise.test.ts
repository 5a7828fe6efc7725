import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { checkHeadroom } from '../quantize.js';
import { createCiphertextAccumulator } from './aggregate.js';
import { createSumDecryptor } from './decrypt.js';
import { createUpdateEncryptor } from './encrypt.js';
import { generateKeyBundle } from './keys.js';
import { createHeContext } from './params.js';
import type { HeContext } from './params.js';
import type { KeyBundle } from './keys.js';

const SLOTS = 2048; // one ciphertext per client keeps the many-client cases fast

/** Sums `clients` updates of extreme values (+clip on even slots, -clip on odd) at `weight`; returns the decrypted sum. */
function sumExtremes(bundle: KeyBundle, ctx: HeContext, clients: number, weight: number) {
  const values = Float32Array.from({ length: SLOTS }, (_, i) => (i % 2 === 0 ? 1 : -1));
  const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
  const accumulator = createCiphertextAccumulator(ctx, { valueCount: SLOTS });
  const decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device });
  try {
    for (let k = 0; k < clients; k++) accumulator.add(encryptor.encrypt(values, weight));
    return decryptor.decrypt(accumulator.toPayload());
  } finally {
    encryptor.dispose();
    accumulator.dispose();
    decryptor.dispose();
  }
}

describe('noise budget at the headroom limit (default preset, q = 44 bits)', () => {
  it('255 clients at weightCap 128 (the default limit): exact, budget > 0', async () => {
    const bundle = await generateKeyBundle({ taskId: 'noise-255' });
    const ctx = await createHeContext(bundle.coordinator);
    try {
      const t = ctx.parameters.plainModulus;
      const headroom = checkHeadroom({ plainModulus: t, maxClients: 255, weightCap: 128 });
      expect(headroom.maxClientsAtWeightCap).toBe(255);
      const sum = sumExtremes(bundle, ctx, 255, 128);
      const extreme = 255 * 128 * 8192; // 267,386,880 <= (t-1)/2 = 268,406,784
      expect(sum.levelSums[0]).toBe(extreme);
      expect(sum.levelSums[1]).toBe(-extreme);
      expect(new Set(sum.levelSums).size).toBe(2);
      expect(sum.noiseBudgetBits).toBeGreaterThan(0);
    } finally {
      ctx.dispose();
    }
  });

  it('2047 clients at weightCap 16 (the limit for that cap): exact, budget > 0', async () => {
    const bundle = await generateKeyBundle({ taskId: 'noise-2047', quantization: { weightCap: 16 } });
    const ctx = await createHeContext(bundle.coordinator);
    try {
      expect(checkHeadroom({ plainModulus: ctx.parameters.plainModulus, maxClients: 2047, weightCap: 16 }).maxClientsAtWeightCap).toBe(2047);
      const sum = sumExtremes(bundle, ctx, 2047, 16);
      expect(sum.levelSums[0]).toBe(2047 * 16 * 8192);
      expect(sum.levelSums[1]).toBe(-2047 * 16 * 8192);
      expect(sum.noiseBudgetBits).toBeGreaterThan(0);
    } finally {
      ctx.dispose();
    }
  }, 60_000);
});

describe('noise budget check', () => {
  let bundle: KeyBundle;
  let ctx: HeContext;
  beforeAll(async () => {
    bundle = await generateKeyBundle({ taskId: 'noise-doubling' });
    ctx = await createHeContext(bundle.coordinator);
  });
  afterAll(() => ctx.dispose());

  it('refuses to decrypt a sum whose noise budget is exhausted', () => {
    // Adding a sum to itself doubles its noise exactly (fully correlated, the worst case); about
    // 10 doublings use up the fresh budget of about 10 bits. 2^13 clients stay within ctx.maxClients.
    const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
    const decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device });
    try {
      let payload = encryptor.encrypt(Float32Array.from([0.5, -0.5, 0.25]), 1);
      const fresh = decryptor.decrypt(payload).noiseBudgetBits;
      expect(fresh).toBeGreaterThanOrEqual(8);
      for (let k = 0; k < 13; k++) {
        const accumulator = createCiphertextAccumulator(ctx, { valueCount: 3 });
        accumulator.add(payload);
        accumulator.add(payload);
        payload = accumulator.toPayload();
        accumulator.dispose();
      }
      expect(() => decryptor.decrypt(payload)).toThrow(expect.objectContaining({ code: 'noise_budget_exhausted' }));
    } finally {
      encryptor.dispose();
      decryptor.dispose();
    }
  });
});
