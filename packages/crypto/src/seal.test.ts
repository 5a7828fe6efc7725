import { describe, expect, it } from 'vitest';
import { unpackSealCiphertext } from './he/bitpack.js';
import { createUpdateEncryptor } from './he/encrypt.js';
import { generateKeyBundle } from './he/keys.js';
import { contextInternals, createHeContext } from './he/params.js';
import { readPayloadHeader } from './he/payload.js';
import { callSeal, loadSeal, sealRuntimeStats } from './seal.js';

describe('callSeal', () => {
  it('survives 10,000 refused ciphertext loads (unguarded, node-seal aborts after about 4,000)', async () => {
    const seal = await loadSeal();
    expect(sealRuntimeStats().stackGuard).toBe(true);
    const bundle = await generateKeyBundle({ taskId: 'seal-guard' });
    const ctx = await createHeContext(bundle.coordinator);
    const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
    const ciphertext = new seal.Ciphertext();
    try {
      const payload = encryptor.encrypt(new Float32Array(10), 1);
      const bad = unpackSealCiphertext(payload.subarray(readPayloadHeader(payload).headerBytes), 44);
      bad.fill(0xff, 113, 119); // first coefficient >= q: SEAL throws "ciphertext data is invalid"
      const { context } = contextInternals(ctx);
      for (let i = 0; i < 20; i++) expect(() => callSeal(seal, 'invalid_ciphertext', 'load', () => ciphertext.loadFromArray(context, bad))).toThrow();
      const heapBefore = sealRuntimeStats().heapBytes;
      for (let i = 0; i < 10_000; i++) {
        expect(() => callSeal(seal, 'invalid_ciphertext', 'load', () => ciphertext.loadFromArray(context, bad))).toThrow(
          expect.objectContaining({ name: 'CryptoError', code: 'invalid_ciphertext', message: 'load: std::logic_error: ciphertext data is invalid' }),
        );
      }
      // The runtime still works, and the exception objects were freed (about 90 bytes each otherwise).
      expect(encryptor.encrypt(new Float32Array(10), 1).byteLength).toBe(payload.byteLength);
      expect(sealRuntimeStats().heapBytes).toBe(heapBefore);
    } finally {
      ciphertext.delete();
      encryptor.dispose();
      ctx.dispose();
    }
  });

  it('passes results and non-SEAL errors through', async () => {
    const seal = await loadSeal();
    expect(callSeal(seal, 'internal', 'x', () => 42)).toBe(42);
    expect(() =>
      callSeal(seal, 'internal', 'x', () => {
        throw new Error('js');
      }),
    ).toThrow(expect.objectContaining({ code: 'internal', message: 'x: js' }));
  });
});
