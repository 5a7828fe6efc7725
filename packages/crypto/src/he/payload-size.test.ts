import { describe, expect, it } from 'vitest';
import { createUpdateEncryptor } from './encrypt.js';
import { generateKeyBundle } from './keys.js';
import { PARAMETER_PRESETS, createHeContext, type ParameterPresetName } from './params.js';
import { maxUpdatePayloadBytes, readPayloadHeader } from './payload.js';

describe('maxUpdatePayloadBytes: the size a coordinator accepts for an encrypted update', () => {
  for (const preset of Object.keys(PARAMETER_PRESETS) as ParameterPresetName[]) {
    it(`bounds real updates under ${preset}, within a factor 2 (per-preset N and primes)`, async () => {
      const bundle = await generateKeyBundle({ taskId: `size-${preset}`, preset });
      const ctx = await createHeContext(bundle.coordinator);
      const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
      try {
        for (const valueCount of [1, 2048, 5000]) {
          const delta = Float32Array.from({ length: valueCount }, (_, i) => Math.sin(i * 12.9898) * 0.9);
          const payload = encryptor.encrypt(delta, 3);
          const bound = maxUpdatePayloadBytes(preset, valueCount);
          expect(readPayloadHeader(payload).valueCount).toBe(valueCount);
          expect(payload.byteLength).toBeLessThanOrEqual(bound);
          expect(bound).toBeLessThan(2 * payload.byteLength);
        }
      } finally {
        encryptor.dispose();
        ctx.dispose();
      }
    });
  }

  it('grows with the ring dimension: one ciphertext per N values', () => {
    const n = PARAMETER_PRESETS['bfv-n2048-q44-t29'].polyModulusDegree;
    const one = maxUpdatePayloadBytes('bfv-n2048-q44-t29', n);
    expect(maxUpdatePayloadBytes('bfv-n2048-q44-t29', n + 1)).toBe(one + 4 + n * 8 + 1024);
    expect(() => maxUpdatePayloadBytes('bfv-n4096-nope', 10)).toThrow(/unknown parameter preset/);
  });
});
