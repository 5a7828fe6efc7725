import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { loadSeal, sealRuntimeStats } from '../seal.js';
import { createHeContext, encryptionParametersForPreset, maxClientsForNoise, parameterFingerprint } from './params.js';

const KEY_ID = '0f8fad5b-d9cb-469f-a165-70867728950e';

function isPrime(n: bigint): boolean {
  if (n < 2n) return false;
  for (let d = 2n; d * d <= n; d++) if (n % d === 0n) return false;
  return true;
}

describe('parameter presets', () => {
  it('loads node-seal once and reports its init time', async () => {
    const [a, b] = await Promise.all([loadSeal(), loadSeal()]);
    expect(a).toBe(b);
    expect(sealRuntimeStats().initMs).toBeGreaterThan(0);
    expect(sealRuntimeStats().heapBytes).toBeGreaterThan(0);
  });

  it('default preset: BFV N=2048, one 44-bit prime, 29-bit batching prime, 128-bit security', async () => {
    const bytes = await encryptionParametersForPreset('bfv-n2048-q44-t29');
    const fingerprint = createHash('sha256').update(bytes).digest('hex');
    expect(parameterFingerprint(bytes)).toBe(fingerprint);
    const ctx = await createHeContext({ taskId: 't', keyId: KEY_ID, fingerprint, encryptionParameters: bytes, quantization: {} });
    try {
      const { parameters } = ctx;
      expect(parameters).toMatchObject({ scheme: 'bfv', polyModulusDegree: 2048, slotCount: 2048, coeffModulusBitCount: 44, securityLevelBits: 128 });
      expect(parameters.coeffModulus).toHaveLength(1);
      const [q] = parameters.coeffModulus;
      const t = parameters.plainModulus;
      // Independent checks: q is a 44-bit prime = 1 mod 2N (NTT-friendly); t a 29-bit prime = 1 mod 2N (batching).
      expect(q!.toString(2)).toHaveLength(44);
      expect(q! % 4096n).toBe(1n);
      expect(t.toString(2)).toHaveLength(29);
      expect(t % 4096n).toBe(1n);
      expect(isPrime(t)).toBe(true);
      expect(ctx.maxTotalWeight).toBe(Number((t - 1n) / 2n / 8192n));
    } finally {
      ctx.dispose();
    }
  });

  it('the fingerprint identifies the parameter set', async () => {
    const a = await encryptionParametersForPreset('bfv-n2048-q44-t29');
    const b = await encryptionParametersForPreset('bfv-n2048-q44-t29');
    const c = await encryptionParametersForPreset('bfv-n2048-q54-t29');
    expect(parameterFingerprint(a)).toBe(parameterFingerprint(b));
    expect(parameterFingerprint(a)).not.toBe(parameterFingerprint(c));
  });

  it('refuses parameters above the 128-bit security bound (N=2048, 60-bit q)', async () => {
    const seal = await loadSeal();
    const parms = new seal.EncryptionParameters(seal.SchemeType.bfv);
    parms.setPolyModulusDegree(2048);
    const coeff = seal.CoeffModulus.Create(2048, Int32Array.from([60]));
    parms.setCoeffModulus(coeff);
    const plain = seal.PlainModulus.Batching(2048, 29);
    parms.setPlainModulus(plain);
    const bytes = Uint8Array.from(parms.saveToArray(seal.ComprModeType.none) as Uint8Array);
    coeff.delete();
    plain.delete();
    parms.delete();
    await expect(
      createHeContext({ taskId: 't', keyId: KEY_ID, fingerprint: parameterFingerprint(bytes), encryptionParameters: bytes, quantization: {} }),
    ).rejects.toMatchObject({ code: 'insecure_parameters' });
  });

  it('refuses parameters whose fingerprint does not match', async () => {
    const bytes = await encryptionParametersForPreset('bfv-n2048-q44-t29');
    await expect(
      createHeContext({ taskId: 't', keyId: KEY_ID, fingerprint: '00'.repeat(32), encryptionParameters: bytes, quantization: {} }),
    ).rejects.toMatchObject({ code: 'parameter_mismatch' });
  });

  it('refuses a quantization whose single client could overflow t', async () => {
    const bytes = await encryptionParametersForPreset('bfv-n2048-q44-t29');
    await expect(
      createHeContext({
        taskId: 't',
        keyId: KEY_ID,
        fingerprint: parameterFingerprint(bytes),
        encryptionParameters: bytes,
        quantization: { step: 2 ** -22, weightCap: 128 }, // 2^22 levels * 128 = 2^29 > (t-1)/2
      }),
    ).rejects.toMatchObject({ code: 'headroom_exceeded' });
  });
});

describe('maxClientsForNoise', () => {
  it('solves n/2 + 7·3.2·sqrt(n) <= q/(4t) (hand-computed for the default preset)', () => {
    const q = 17_592_186_028_033n; // the 44-bit prime SEAL picks for N = 2048
    const t = 536_813_569n;
    // q/(4t) = 8192.9; x = -22.4 + sqrt(22.4^2 + 2·8192.9) = 107.55; n = floor(x^2) = 11,567.
    const limit = 17_592_186_028_033 / (4 * 536_813_569);
    const x = -22.4 + Math.sqrt(22.4 ** 2 + 2 * limit);
    expect(maxClientsForNoise({ coeffModulus: [q], plainModulus: t })).toBe(Math.floor(x * x));
    expect(Math.floor(x * x)).toBeGreaterThan(11_500);
    expect(Math.floor(x * x)).toBeLessThan(11_600);
    const n = maxClientsForNoise({ coeffModulus: [q], plainModulus: t });
    expect(n / 2 + 22.4 * Math.sqrt(n)).toBeLessThanOrEqual(limit);
    expect((n + 1) / 2 + 22.4 * Math.sqrt(n + 1)).toBeGreaterThan(limit);
  });
});
