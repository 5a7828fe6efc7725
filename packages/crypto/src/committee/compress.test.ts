import { createCipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addCompressed, droppedBits, packCompressed, subtractCompressed, type C0Bits } from './compress.js';
import { buildTaskDescriptor, chooseC0Width, descriptorHash, minimumDeltaBits, validateDescriptor, type DescriptorEncoding } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair } from './keys.js';
import { N, Q } from './ring.js';
import { c0PayloadBytes, createC0Accumulator, decryptSum, encodeC0Payload, encodeUpdate, encryptUpdate, sampleTernary } from './rlwe.js';

function seededBytes(seed: string) {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

/** Uniform coefficients in [0, q), and the extremes (0, q - 1 and the values that round up to 2^c0Bits). */
function coefficients(seed: string, c0Bits: C0Bits): Float64Array {
  const bytes = seededBytes(seed)(N * 8);
  const view = new DataView(bytes.buffer);
  const qb = BigInt(Q);
  const c = Float64Array.from({ length: N }, (_, k) => Number(view.getBigUint64(8 * k, true) % qb));
  const d = droppedBits(c0Bits);
  c[0] = 0;
  c[1] = Q - 1;
  c[2] = 2 ** 44 - 2 ** (d - 1) < Q ? 2 ** 44 - 2 ** (d - 1) : Q - 1; // rounds to 2^c0Bits: wraps to 0
  c[3] = 2 ** (d - 1); // half-way: rounds up
  c[4] = 2 ** (d - 1) - 1;
  return c;
}

describe('compressed c0 (FIPS 203 §4.2.1 bit dropping)', () => {
  it.each([36, 32, 24, 16] as const)('c0Bits %i: c0 ≡ c\'·2^d + r (mod q) with |r| <= 2^(d-1); subtract undoes add exactly', (c0Bits) => {
    const c = coefficients(`c-${c0Bits}`, c0Bits);
    // 36 bits: two coefficients in 9 bytes, so N / 2 · 9 bytes.
    const packed = new Uint8Array(12 + (N * c0Bits) / 8);
    expect(packCompressed(c, c0Bits, packed, 12)).toBe((N * c0Bits) / 8);
    const acc = new Float64Array(N);
    addCompressed(packed, 12, c0Bits, acc);
    const bound = 2 ** (droppedBits(c0Bits) - 1);
    for (let k = 0; k < N; k++) {
      const v = acc[k]!;
      expect(v).toBeLessThan(2 ** 44);
      // r = c0 - c'·2^d, centred mod q.
      const qb = BigInt(Q);
      const half = qb / 2n;
      const r = Number((((BigInt(c[k]!) - BigInt(v)) % qb) + qb + half) % qb - half);
      expect(Math.abs(r), `coefficient ${k}`).toBeLessThanOrEqual(bound);
    }
    // Subtract from a reduced sum: the result is in [0, 2^53) and congruent to the sum without it.
    const base = Float64Array.from({ length: N }, (_, k) => (k * 7919) % Q);
    const sum = Float64Array.from(base);
    addCompressed(packed, 12, c0Bits, sum);
    subtractCompressed(packed, 12, c0Bits, sum);
    for (let k = 0; k < N; k++) {
      expect(sum[k]!).toBeGreaterThanOrEqual(0);
      expect(sum[k]! % Q).toBe(base[k]);
    }
  });

  it.each([
    [36, 2050],
    [32, 2049],
    [24, 2051],
    [16, 2049],
    // Several of the kernels' 2,048-coefficient chunks, the last one partial.
    [36, 3 * 2048 + 2],
    [24, 3 * 2048 + 3],
    [16, 2 * 2048 + 1],
  ] as const)('c0Bits %i: addCompressed reads every coefficient of the documented layout, from an unaligned offset and a count the word loop does not divide (%i)', (c0Bits, count) => {
    // Each c' read byte by byte from the layout packCompressed documents (little-endian; 36 bits:
    // u32le(a mod 2^32) || (a >> 32 | (b >> 32) << 4) || u32le(b mod 2^32)), not by addCompressed's word reads.
    const offset = 13;
    const bytes = seededBytes(`layout-${c0Bits}`)(offset + Math.ceil((count * c0Bits) / 8) + 5);
    const le = (at: number, n: number): number => {
      let v = 0;
      for (let j = n - 1; j >= 0; j--) v = v * 256 + bytes[at + j]!;
      return v;
    };
    const expected = Array.from({ length: count }, (_, k) => {
      if (c0Bits !== 36) return le(offset + (k * c0Bits) / 8, c0Bits / 8);
      const at = offset + Math.floor(k / 2) * 9;
      return k % 2 === 0 ? le(at, 4) + (bytes[at + 4]! & 15) * 2 ** 32 : le(at + 5, 4) + (bytes[at + 4]! >> 4) * 2 ** 32;
    });
    const base = Float64Array.from({ length: count }, (_, k) => (k * 7919) % Q);
    const acc = Float64Array.from(base);
    addCompressed(bytes, offset, c0Bits, acc);
    const scale = 2 ** droppedBits(c0Bits);
    for (let k = 0; k < count; k++) expect(acc[k], `coefficient ${k}`).toBe(base[k]! + expected[k]! * scale);
  });

  it('a compressed task decrypts the exact sum: 10 devices at c0Bits 24 with the largest Δ; c0Bits 16 is refused for that noise budget', () => {
    const authority = generateEd25519KeyPair();
    const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
    const build = (c0Bits: C0Bits) =>
      buildTaskDescriptor({
        taskId: 'compressed',
        committee: custodians.map((k, i) => ({ address: `c${i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
        threshold: 2,
        minDevices: 2,
        maxDevices: 10,
        maxRounds: 10,
        encoding: { weightCap: 3, c0Bits },
        authorityPublicKey: authority.publicKey,
      });
    const descriptor = build(24);
    validateDescriptor(descriptor, { minDevices: 2 });
    expect(descriptor.encoding).toMatchObject({ c0Bits: 24, deltaBits: 25 });
    expect(() => validateDescriptor(build(16), { minDevices: 2 })).toThrow(/rounding sum/);
    expect(() => validateDescriptor({ ...descriptor, encoding: { ...descriptor.encoding, c0Bits: 33 as C0Bits } }, { minDevices: 2 })).toThrow(/c0Bits must be 36, 32, 24 or 16/);
    // The exact c0 at the same Δ passes: only the rounding made 16 bits too few.
    const { c0Bits: _dropped, ...exact } = build(16).encoding;
    expect(() => validateDescriptor({ ...build(16), encoding: exact }, { minDevices: 2 })).not.toThrow();

    const dh = descriptorHash(descriptor);
    const random = seededBytes('devices');
    const roundSeed = new Uint8Array(32).fill(3);
    const valueCount = 3000;
    const step = descriptor.encoding.step;
    const acc = createC0Accumulator({ valueCount, c0Bits: 24 });
    const secretSum = new Int32Array(N);
    const expected = new Float64Array(valueCount);
    let weightSum = 0;
    for (let j = 0; j < 10; j++) {
      // Values at the clip bound on every coordinate for some devices: the largest sums.
      const values = Float64Array.from({ length: valueCount }, (_, i) => (j % 3 === 0 ? (i % 2 === 0 ? 1 : -1) : Math.sin(i * 0.37 + j) * 0.9));
      const weight = 1 + (j % 3);
      const m = encodeUpdate(values, weight, descriptor.encoding);
      for (let i = 0; i < valueCount; i++) expected[i] = expected[i]! + m[2 + i]!;
      weightSum += weight;
      const s = sampleTernary(random);
      for (let k = 0; k < N; k++) secretSum[k] = secretSum[k]! + s[k]!;
      const payload = encodeC0Payload(encryptUpdate(m, s, { descriptorHash: dh, round: 1, roundSeed, deltaBits: descriptor.encoding.deltaBits, random }), valueCount, 24);
      expect(payload.length).toBe(c0PayloadBytes(valueCount, 24));
      acc.add(payload);
    }
    const out = decryptSum({ descriptorHash: dh, round: 1, roundSeed, encoding: descriptor.encoding, valueCount, c0Sum: acc.sum(), secretSum, count: 10 });
    expect(out.weightSum).toBe(weightSum);
    expect(Array.from(out.levelSums)).toEqual(Array.from(expected));
    expect(out.mean[0]).toBeCloseTo((expected[0]! * step) / weightSum, 6);
    // 3 bytes per coefficient: c0 is 24/44 of the exact one.
    expect(c0PayloadBytes(valueCount, 24) - 12).toBe(((c0PayloadBytes(valueCount) - 12) * 24) / 44);
  });

  it('an accumulator refuses a c0 of another width (version and size are checked), leaving the sum unchanged', () => {
    const c = coefficients('width', 32);
    const polys = c;
    const exact = encodeC0Payload(polys, 100);
    const compressed = encodeC0Payload(polys, 100, 32);
    const acc32 = createC0Accumulator({ valueCount: 100, c0Bits: 32 });
    acc32.add(compressed);
    const before = acc32.sum();
    expect(() => acc32.add(exact)).toThrow(expect.objectContaining({ code: 'invalid_payload' }));
    expect(() => acc32.add(encodeC0Payload(polys, 100, 24))).toThrow(expect.objectContaining({ code: 'invalid_payload' }));
    expect(() => createC0Accumulator({ valueCount: 100 }).add(compressed)).toThrow(expect.objectContaining({ code: 'invalid_payload' }));
    expect(acc32.sum()).toEqual(before);
    expect(acc32.count).toBe(1);
  });
});

describe('the c0 width policy (chooseC0Width): the narrowest c0 that still decrypts exactly', () => {
  const authority = generateEd25519KeyPair();
  const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
  const build = (maxDevices: number, encoding: Partial<DescriptorEncoding>) =>
    buildTaskDescriptor({
      taskId: 'width',
      committee: custodians.map((k, i) => ({ address: `c${i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
      threshold: 2,
      minDevices: 1,
      maxDevices,
      maxRounds: 10,
      encoding,
      authorityPublicKey: authority.publicKey,
    });

  // Computed apart from the TypeScript (Python, exact integers): for clip 1, weightCap 1 and the
  // step, Δ = the largest 2^b with floor((q - 1) / 2 / 2^b) - 1 >= M / step, and the largest M with
  // 2^(b-1) - M·2^(43 - c0Bits) >= 12·√10.5·√M. At M + 1 the sum bound halves Δ and the rounding
  // no longer fits.
  const boundaries = [
    { step: 2 ** -13, c0Bits: 24, maxDevices: 31, deltaBits: 25, next: 32 },
    { step: 2 ** -13, c0Bits: 32, maxDevices: 511, deltaBits: 21, next: 36 },
    { step: 2 ** -6, c0Bits: 16, maxDevices: 15, deltaBits: 33, next: 24 },
    { step: 2 ** -6, c0Bits: 24, maxDevices: 255, deltaBits: 29, next: 32 },
    { step: 2 ** -6, c0Bits: 32, maxDevices: 4095, deltaBits: 25, next: 36 },
    { step: 2 ** -6, c0Bits: 36, maxDevices: 16383, deltaBits: 23, next: 44 },
  ] as const;

  it.each(boundaries)('step $step: $c0Bits bits up to $maxDevices devices (Δ = 2^$deltaBits), then $next; the check refuses $c0Bits bits for one device more', ({ step, c0Bits, maxDevices, deltaBits, next }) => {
    expect(chooseC0Width(maxDevices, { step })).toEqual({ c0Bits, deltaBits });
    expect(chooseC0Width(maxDevices + 1, { step }).c0Bits).toBe(next);
    expect(validateDescriptor(build(maxDevices, { step, c0Bits }), { minDevices: 1 })).toMatchObject({ c0Bits });
    // One device more at this width: at the same Δ the sum no longer fits; at half of it the rounding does not.
    const wider = { ...build(maxDevices, { step, c0Bits }), maxDevices: maxDevices + 1 };
    expect(() => validateDescriptor(wider, { minDevices: 1 })).toThrow(/exceeds the decodable sum/);
    expect(() => validateDescriptor({ ...wider, encoding: { ...wider.encoding, deltaBits: deltaBits - 1 } }, { minDevices: 1 })).toThrow(/rounding sum/);
  });

  // 36 bits at step 2^-13 end inside a Δ (2^19 from 1,024 devices): at 2,035 the rounding sum, not the sum bound, is what no longer fits.
  it('step 2^-13: 36 bits from 512 to 2,034 devices (Δ = 2^20, then 2^19 from 1,024); at 2,035 the rounding sum leaves fewer than 12 noise deviations', () => {
    expect(chooseC0Width(512)).toEqual({ c0Bits: 36, deltaBits: 20 });
    expect(chooseC0Width(1000)).toEqual({ c0Bits: 36, deltaBits: 20 });
    expect(chooseC0Width(1024)).toEqual({ c0Bits: 36, deltaBits: 19 });
    expect(chooseC0Width(2034)).toEqual({ c0Bits: 36, deltaBits: 19 });
    expect(validateDescriptor(build(2034, { c0Bits: 36 }), { minDevices: 1 })).toMatchObject({ c0Bits: 36 });
    expect(chooseC0Width(2035)).toEqual({ c0Bits: 44, deltaBits: minimumDeltaBits(2035) });
    const wider = { ...build(2034, { c0Bits: 36 }), maxDevices: 2035 };
    expect(wider.encoding.deltaBits).toBe(19);
    expect(() => validateDescriptor(wider, { minDevices: 1 })).toThrow(/rounding sum/);
  });

  it('keeps an explicit width (44: exact) and an explicit Δ; past 2,034 devices at step 2^-13 only the exact c0 fits', () => {
    expect(chooseC0Width(2035)).toEqual({ c0Bits: 44, deltaBits: minimumDeltaBits(2035) });
    expect(chooseC0Width(1000, { c0Bits: 44 })).toEqual({ c0Bits: 44, deltaBits: minimumDeltaBits(1000) });
    expect(chooseC0Width(10, { c0Bits: 44 })).toEqual({ c0Bits: 44, deltaBits: minimumDeltaBits(10) });
    expect(chooseC0Width(10, { c0Bits: 32 })).toEqual({ c0Bits: 32, deltaBits: 26 });
    expect(chooseC0Width(10, { deltaBits: 20 })).toEqual({ c0Bits: 32, deltaBits: 20 });
    // The low-level builder stays exact unless told otherwise.
    expect(build(10, {}).encoding.c0Bits).toBeUndefined();
    expect(validateDescriptor(build(10, {}), { minDevices: 1 }).c0Bits).toBe(44);
  });

  // Each device's decompressed c0 is c0 - r with |r| <= 2^(d-1) (first test of this file). The worst
  // case the budget allows for is every coefficient of every device at its rounding boundary, all
  // with the same sign; real c0's are never all there at once, so the worst case is applied to the
  // exact sum of the same devices' c0's, beside their real compressed uploads.
  it.each([boundaries[2], boundaries[0], boundaries[1], { step: 2 ** -13, c0Bits: 36 as const, maxDevices: 2034 }])(
    '$maxDevices devices at $c0Bits bits with the largest sums: real and worst-case rounding decrypt to the exact integer sum',
    ({ step, c0Bits, maxDevices }) => {
      const descriptor = build(maxDevices, { step, ...chooseC0Width(maxDevices, { step }) });
      expect(descriptor.encoding.c0Bits).toBe(c0Bits);
      validateDescriptor(descriptor, { minDevices: 1 });
      const { deltaBits } = descriptor.encoding;
      const dh = descriptorHash(descriptor);
      const random = seededBytes(`worst-${c0Bits}`);
      const roundSeed = new Uint8Array(32).fill(7);
      const valueCount = N - 2; // one polynomial
      const maxLevel = 1 / step;
      // Levels: +clip and -clip on every device (the largest |sum|), a spread, and zeros.
      const levelOf = (j: number, i: number): number => (i % 4 === 0 ? maxLevel : i % 4 === 1 ? -maxLevel : i % 4 === 2 ? ((i * 7 + j * 13) % (2 * maxLevel + 1)) - maxLevel : 0);
      const exactSum = createC0Accumulator({ valueCount });
      const compressedSum = createC0Accumulator({ valueCount, c0Bits });
      const secretSum = new Int32Array(N);
      const expected = new Float64Array(valueCount);
      for (let j = 0; j < maxDevices; j++) {
        const values = Float64Array.from({ length: valueCount }, (_, i) => levelOf(j, i) * step);
        for (let i = 0; i < valueCount; i++) expected[i] = expected[i]! + levelOf(j, i);
        const s = sampleTernary(random);
        for (let k = 0; k < N; k++) secretSum[k] = secretSum[k]! + s[k]!;
        const c0 = encryptUpdate(encodeUpdate(values, 1, descriptor.encoding), s, { descriptorHash: dh, round: 1, roundSeed, deltaBits, random });
        exactSum.add(encodeC0Payload(c0, valueCount));
        compressedSum.add(encodeC0Payload(c0, valueCount, c0Bits));
      }
      const decrypt = (c0Sum: Float64Array) => decryptSum({ descriptorHash: dh, round: 1, roundSeed, encoding: descriptor.encoding, valueCount, c0Sum, secretSum, count: maxDevices });
      const shifted = (by: number) => exactSum.sum().map((v) => (((v + by) % Q) + Q) % Q);

      // Integers compared as numbers (+ 0 maps a decoded -0 to 0).
      const integers = (a: Float64Array) => Array.from(a, (v) => v + 0);
      const real = decrypt(compressedSum.sum());
      expect(real.weightSum).toBe(maxDevices);
      expect(integers(real.levelSums)).toEqual(Array.from(expected));
      // FedAvg within half a quantisation step of the plaintext mean.
      for (let i = 0; i < valueCount; i++) expect(Math.abs(real.mean[i]! - (expected[i]! * step) / maxDevices)).toBeLessThanOrEqual(step / 2);
      const bound = maxDevices * 2 ** (droppedBits(c0Bits) - 1);
      for (const sign of [1, -1]) expect(integers(decrypt(shifted(sign * bound)).levelSums)).toEqual(Array.from(expected));
      // The test can fail: a rounding sum past Δ/2 (what a width too narrow for |D| would allow) breaks the count slot.
      expect(() => decrypt(shifted(2 ** (deltaBits - 1) + 2 ** (droppedBits(c0Bits) - 1)))).toThrow(/count slot decrypted to/);
    },
    120_000,
  );
});
