import { createCipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { buildAnswer, encodeShareBytes, hashD, signAnswer, verifyAnswer } from './answer.js';
import { buildTaskDescriptor, descriptorHash, validateDescriptor, type TaskDescriptor } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair, type CustodianKeys, type RawKeyPair } from './keys.js';
import { issueDeviceCertificate, verifyManifest } from './manifest.js';
import { N, Q, derivePublicPolynomialNtt } from './ring.js';
import {
  c0PayloadBytes,
  createC0Accumulator,
  decodeC0Payload,
  decryptSum,
  encodeC0Payload,
  encodeUpdate,
  encryptUpdate,
  polynomialCount,
  restoreC0Accumulator,
  sampleTernary,
} from './rlwe.js';
import { openShare } from './sealing.js';
import { addShareInto, reconstructCentred } from './shamir.js';
import { buildCommitteeUpload, type CommitteeUpload } from './upload.js';

function seededBytes(seed: string) {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

/** A deterministic float in [0, 1) stream for update values. */
function seededFloats(seed: string) {
  const bytes = seededBytes(seed);
  return (count: number) => {
    const b = bytes(4 * count);
    const view = new DataView(b.buffer);
    return Float64Array.from({ length: count }, (_, i) => view.getUint32(4 * i, true) / 2 ** 32);
  };
}

const NOW = Date.parse('2026-12-06T15:00:00Z');

interface Committee {
  descriptor: TaskDescriptor;
  dh: Uint8Array;
  authority: RawKeyPair;
  custodians: CustodianKeys[];
}

function makeCommittee(n: number, t: number, weightCap: number, maxDevices = 1000): Committee {
  const authority = generateEd25519KeyPair();
  const custodians = Array.from({ length: n }, () => generateCustodianKeys());
  const descriptor = buildTaskDescriptor({
    taskId: 'fedavg',
    committee: custodians.map((k, i) => ({ address: `127.0.0.1:${9000 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: t,
    minDevices: 10,
    maxDevices,
    maxRounds: 100,
    encoding: { weightCap },
    authorityPublicKey: authority.publicKey,
  });
  validateDescriptor(descriptor, { minDevices: 10 });
  return { descriptor, dh: descriptorHash(descriptor), authority, custodians };
}

const ROUND_SEED = new Uint8Array(32).fill(7);

describe('RLWE encryption under a single-use secret', () => {
  it('one device: Σc0 + a·s decodes to the exact encoded levels, count 1 and weight w', () => {
    const { descriptor, dh } = makeCommittee(3, 2, 8);
    const random = seededBytes('one');
    const values = Float64Array.from(seededFloats('v1')(3000), (u) => 2 * u - 1);
    const m = encodeUpdate(values, 5, descriptor.encoding);
    const s = sampleTernary(random);
    const c0 = encryptUpdate(m, s, { descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, deltaBits: descriptor.encoding.deltaBits, random });
    expect(c0.length).toBe(2 * N);
    expect(c0.every((v) => v >= 0 && v < Q && Number.isInteger(v))).toBe(true);
    const out = decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: Int32Array.from(s), count: 1 });
    expect(out.count).toBe(1);
    expect(out.weightSum).toBe(5);
    expect(Array.from(out.levelSums)).toEqual(Array.from(m.subarray(2, 3002)));
    // Another round's a, or another secret, does not decrypt.
    expect(() => decryptSum({ descriptorHash: dh, round: 2, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: Int32Array.from(s), count: 1 })).toThrow(
      expect.objectContaining({ code: 'integrity_check_failed' }),
    );
    // Public polynomials derived ahead give the same result; another round's are refused.
    const ahead = [0, 1].map((l) => derivePublicPolynomialNtt(dh, 1, ROUND_SEED, l));
    const withAhead = decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, publicPolynomials: ahead, encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: Int32Array.from(s), count: 1 });
    expect(Array.from(withAhead.levelSums)).toEqual(Array.from(out.levelSums));
    const partly = decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, publicPolynomials: ahead.slice(0, 1), encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: Int32Array.from(s), count: 1 });
    expect(Array.from(partly.levelSums)).toEqual(Array.from(out.levelSums));
    const wrong = [0, 1].map((l) => derivePublicPolynomialNtt(dh, 2, ROUND_SEED, l));
    expect(() => decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, publicPolynomials: wrong, encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: Int32Array.from(s), count: 1 })).toThrow(
      expect.objectContaining({ code: 'integrity_check_failed' }),
    );
    const other = Int32Array.from(s);
    other[0] = other[0] === 1 ? 0 : 1;
    expect(() => decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount: 3000, c0Sum: c0, secretSum: other, count: 1 })).toThrow(/count slot/);
  });

  it('refuses a weight slot, a value or a padding slot out of range, in whichever polynomial it decrypts', () => {
    const { descriptor, dh } = makeCommittee(3, 2, 8);
    const random = seededBytes('slots');
    const valueCount = 3000; // slots 0..3001 over two polynomials, padding from 3002 to 4095
    const values = Float64Array.from(seededFloats('v-slots')(valueCount), (u) => 2 * u - 1);
    const m = encodeUpdate(values, 3, descriptor.encoding);
    const s = sampleTernary(random);
    const c0 = encryptUpdate(m, s, { descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, deltaBits: descriptor.encoding.deltaBits, random });
    const delta = 2 ** descriptor.encoding.deltaBits;
    const decrypt = (c: Float64Array) => decryptSum({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount, c0Sum: c, secretSum: Int32Array.from(s), count: 1 });
    /** c0 with `levels` more encoded at `slot` (+ Δ·levels mod q). */
    const shifted = (slot: number, levels: number) => {
      const c = Float64Array.from(c0);
      c[slot] = (((c[slot]! + delta * levels) % Q) + Q) % Q;
      return c;
    };
    const ok = decrypt(c0);
    const maxLevel = Math.max(...Array.from(ok.levelSums, Math.abs));
    expect(decrypt(shifted(2 + 2500, 1)).levelSums[2500]).toBe(ok.levelSums[2500]! + 1);
    expect(() => decrypt(shifted(1, 8))).toThrow(/weight slot decrypted to 11, outside \[1, 8\]/);
    expect(() => decrypt(shifted(1, -3))).toThrow(/weight slot decrypted to 0/);
    // A value beyond w · maxAbsLevel, in the first and in the second polynomial.
    const beyond = 3 * 2 ** 13 + 1;
    expect(maxLevel).toBeLessThan(beyond);
    expect(() => decrypt(shifted(2 + 7, beyond - ok.levelSums[7]!))).toThrow(/value 7 decrypted beyond the clip range/);
    expect(() => decrypt(shifted(2 + 2999, -beyond - ok.levelSums[2999]!))).toThrow(/value 2999 decrypted beyond the clip range/);
    expect(() => decrypt(shifted(3002, 1))).toThrow(/padding slot/);
    expect(() => decrypt(shifted(2 * N - 1, -1))).toThrow(/padding slot/);
  });

  it('c0 payloads: 5.5 bytes per value, refused when truncated, oversized, out of range or of another shape, sum unchanged', () => {
    const { descriptor, dh } = makeCommittee(3, 2, 8);
    const random = seededBytes('payload');
    const c0 = encryptUpdate(encodeUpdate([0.5, -0.25, 0.125], 1, descriptor.encoding), sampleTernary(random), { descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, deltaBits: descriptor.encoding.deltaBits, random });
    const payload = encodeC0Payload(c0, 3);
    expect(payload.length).toBe(c0PayloadBytes(3));
    expect(payload.length).toBe(12 + 11_264);
    expect(c0PayloadBytes(199_210)).toBe(12 + polynomialCount(199_210) * 11_264);
    expect(c0PayloadBytes(199_210) / 199_210).toBeLessThan(5.6);
    const acc = createC0Accumulator({ valueCount: 3 });
    acc.add(payload);
    const before = acc.sum();
    // On shared memory: a decryption pool's workers read it without a copy (decrypt-pool.ts).
    expect(before.buffer).toBeInstanceOf(SharedArrayBuffer);
    const codeOf = (bytes: Uint8Array) => {
      try {
        acc.add(bytes);
        return 'added';
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(codeOf(payload.subarray(0, payload.length - 1))).toBe('invalid_payload');
    expect(codeOf(new Uint8Array([...payload, 0]))).toBe('invalid_payload');
    const bad = Uint8Array.from(payload);
    bad.fill(0xff, 12, 23); // two coefficients = 2^44 - 1 >= q
    expect(codeOf(bad)).toBe('invalid_ciphertext');
    const otherShape = Uint8Array.from(payload);
    otherShape[4] = 4;
    expect(codeOf(otherShape)).toBe('shape_mismatch');
    const badMagic = Uint8Array.from(payload);
    badMagic[3] = 2;
    expect(codeOf(badMagic)).toBe('invalid_payload');
    // A coefficient >= q in the last pair: everything added before it is rolled back exactly.
    const lateBad = Uint8Array.from(payload);
    lateBad.fill(0xff, lateBad.length - 11);
    expect(codeOf(lateBad)).toBe('invalid_ciphertext');
    expect(acc.count).toBe(1);
    expect(acc.sum()).toEqual(before);
    // Durable form round-trips.
    const restored = restoreC0Accumulator({ valueCount: 3, payload: acc.toPayload(), count: acc.count });
    expect(restored.sum()).toEqual(before);
    expect(decodeC0Payload(payload, 3)).toEqual(c0);
  });
});

describe('C0Accumulator over many uploads', () => {
  it('600 random c0 payloads (lazy reduction every 256 adds) sum exactly, as BigInt says', () => {
    const random = seededBytes('many');
    const acc = createC0Accumulator({ valueCount: 10 });
    const expected = new Array<bigint>(N).fill(0n);
    const qb = BigInt(Q);
    for (let j = 0; j < 600; j++) {
      const bytes = random(N * 8);
      const view = new DataView(bytes.buffer);
      const c0 = Float64Array.from({ length: N }, (_, k) => Number(view.getBigUint64(8 * k, true) % qb));
      if (j % 100 === 0) c0[j % N] = Q - 1; // the largest allowed value, too
      c0.forEach((v, k) => (expected[k] = (expected[k]! + BigInt(v)) % qb));
      acc.add(encodeC0Payload(c0, 10));
      if (j === 300) expect(acc.sum().every((v, k) => BigInt(v) === expected[k])).toBe(true);
    }
    expect(acc.count).toBe(600);
    const sum = acc.sum();
    expect(sum.every((v, k) => BigInt(v) === expected[k] && v < Q)).toBe(true);
    expect(decodeC0Payload(acc.toPayload(), 10)).toEqual(sum);
  });

  it('subtract takes an added payload out exactly, across lazy reductions, as BigInt says', () => {
    const random = seededBytes('subtract');
    const acc = createC0Accumulator({ valueCount: 10 });
    const expected = new Array<bigint>(N).fill(0n);
    const qb = BigInt(Q);
    const kept: Uint8Array[] = [];
    for (let j = 0; j < 300; j++) {
      const bytes = random(N * 8);
      const view = new DataView(bytes.buffer);
      const c0 = Float64Array.from({ length: N }, (_, k) => Number(view.getBigUint64(8 * k, true) % qb));
      if (j % 50 === 0) c0.fill(Q - 1); // the largest values: a subtraction below 0 wraps mod q
      const payload = encodeC0Payload(c0, 10);
      acc.add(payload);
      // Every third payload is taken out again, some right away, some after a reduction (256 adds).
      if (j % 3 === 0) {
        if (j % 2 === 0) acc.subtract(payload);
        else kept.push(payload);
      } else {
        c0.forEach((v, k) => (expected[k] = (expected[k]! + BigInt(v)) % qb));
      }
    }
    for (const payload of kept) acc.subtract(payload);
    expect(acc.count).toBe(200);
    expect(acc.sum().every((v, k) => BigInt(v) === expected[k] && v < Q)).toBe(true);
    expect(() => createC0Accumulator({ valueCount: 10 }).subtract(kept[0]!)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => acc.subtract(kept[0]!.subarray(1))).toThrow(expect.objectContaining({ code: 'invalid_payload' }));
  });

  it("on storage reused from an earlier round (dirty), sums exactly as BigInt says, into a dirty copy given to sum(out); wrong lengths are refused", () => {
    const random = seededBytes('storage');
    const qb = BigInt(Q);
    const storage = new Float64Array(N);
    const copy = new Float64Array(new SharedArrayBuffer(N * 8));
    for (let round = 0; round < 2; round++) {
      storage.fill(Q + 12345 * (round + 1)); // whatever the previous round left
      copy.fill(-1);
      const acc = createC0Accumulator({ valueCount: 10, storage });
      const expected = new Array<bigint>(N).fill(0n);
      for (let j = 0; j < 20; j++) {
        const bytes = random(N * 8);
        const view = new DataView(bytes.buffer);
        const c0 = Float64Array.from({ length: N }, (_, k) => Number(view.getBigUint64(8 * k, true) % qb));
        c0.forEach((v, k) => (expected[k] = (expected[k]! + BigInt(v)) % qb));
        acc.add(encodeC0Payload(c0, 10));
      }
      expect(acc.sum(copy)).toBe(copy);
      expect(copy.every((v, k) => BigInt(v) === expected[k] && v < Q)).toBe(true);
      expect(acc.sum()).toEqual(copy);
    }
    expect(() => createC0Accumulator({ valueCount: 10, storage: new Float64Array(N - 1) })).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => createC0Accumulator({ valueCount: 10 }).sum(new Float64Array(2 * N))).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
  });
});

describe('committee aggregation, end to end in one process', () => {
  it('1,000 devices, a 4-of-7 committee with 3 custodians offline: the decrypted average equals plaintext FedAvg within half a step', () => {
    const n = 7;
    const t = 4;
    const weightCap = 8;
    const valueCount = 2000; // one polynomial (the first test covers several)
    const { descriptor, dh, authority, custodians } = makeCommittee(n, t, weightCap);
    const random = seededBytes('fedavg');
    const floats = seededFloats('values');
    const round = 3;

    const uploads: CommitteeUpload[] = [];
    const plainSum = new Float64Array(valueCount);
    let weightSum = 0;
    for (let d = 0; d < 1000; d++) {
      const device = generateEd25519KeyPair(random);
      const deviceId = `device-${d}`;
      const certificate = issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId, devicePublicKey: device.publicKey, notAfterMs: NOW + 86_400_000 });
      // Values in [-1.2, 1.2] so that clipping at 1 is exercised.
      const values = Float64Array.from(floats(valueCount), (u) => 2.4 * u - 1.2);
      const weight = 1 + (d % weightCap);
      for (let i = 0; i < valueCount; i++) plainSum[i]! += weight * Math.max(-1, Math.min(1, values[i]!));
      weightSum += weight;
      uploads.push(
        buildCommitteeUpload({ descriptor, descriptorHash: dh, round, roundSeed: ROUND_SEED, deviceId, devicePrivateKey: device.privateKey, devicePublicKey: device.publicKey, certificate, values, weight, random }),
      );
    }

    // The coordinator adds the c0's; D is every device (at least minDevices).
    const acc = createC0Accumulator({ valueCount });
    for (const u of uploads) acc.add(u.c0);
    const verified = uploads.map((u) => verifyManifest(u.manifest, { descriptor, descriptorHash: dh, round, nowMs: NOW }));
    const hD = hashD(verified.map((v) => v.manifestDigest));

    // Custodians 2, 3, 5 and 7 answer (1, 4 and 6 are offline): each verifies every manifest,
    // checks H(sealed share), opens its share with the aad it builds itself, and sums
    // (the manifests are verified once above; packages/custodian does it per custodian).
    const answering = [2, 3, 5, 7];
    let digestMismatches = 0;
    const answers = answering.map((index) => {
      const keys = custodians[index - 1]!;
      const sum = new Uint16Array(N);
      uploads.forEach((u, d) => {
        const sealed = u.sealedShares[index - 1]!;
        if (!createHash('sha256').update(sealed).digest().equals(verified[d]!.shareSha256[index - 1]!)) digestMismatches++;
        const binding = { descriptorHash: dh, round, deviceId: verified[d]!.deviceId, custodianIndex: index };
        addShareInto(sum, openShare(keys.sealing.privateKey, binding, sealed, { recipientPublicKey: keys.sealing.publicKey }));
      });
      const shareSum = encodeShareBytes(sum);
      return { signed: signAnswer(buildAnswer({ descriptorHash: dh, round, hashD: hD, count: uploads.length, custodianIndex: index, shareSum }), keys.signing.privateKey), shareSum };
    });

    expect(digestMismatches).toBe(0);

    // The coordinator verifies the answers, reconstructs S_D from t of them and decrypts.
    const shares = answers.map(({ signed, shareSum }) => {
      const ok = verifyAnswer(signed, { descriptor, descriptorHash: dh, round, hashD: hD, count: uploads.length, shareSum });
      return { index: ok.custodianIndex, share: ok.shareSum! };
    });
    const secretSum = reconstructCentred(shares, t);
    const result = decryptSum({ descriptorHash: dh, round, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount, c0Sum: acc.sum(), secretSum, count: uploads.length });
    // Into outputs reused from an earlier round (dirty): written there, the same bytes.
    const output = { levelSums: new Float64Array(valueCount).fill(99), mean: new Float32Array(valueCount).fill(-5) };
    const reused = decryptSum({ descriptorHash: dh, round, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount, c0Sum: acc.sum(), secretSum, count: uploads.length, output });
    expect(reused.levelSums).toBe(output.levelSums);
    expect(reused.mean).toBe(output.mean);
    expect(Buffer.from(output.levelSums.buffer).equals(Buffer.from(result.levelSums.buffer))).toBe(true);
    expect(Buffer.from(output.mean.buffer).equals(Buffer.from(result.mean.buffer))).toBe(true);
    expect(() =>
      decryptSum({ descriptorHash: dh, round, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount, c0Sum: acc.sum(), secretSum, count: uploads.length, output: { ...output, mean: new Float32Array(1) } }),
    ).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    secretSum.fill(0);

    expect(result.count).toBe(1000);
    expect(result.weightSum).toBe(weightSum);
    const step = descriptor.encoding.step;
    let worst = 0;
    for (let i = 0; i < valueCount; i++) worst = Math.max(worst, Math.abs(result.mean[i]! - plainSum[i]! / weightSum));
    // Half a quantisation step, plus float32 rounding of the mean (|mean| <= 1: 2^-24).
    expect(worst).toBeLessThanOrEqual(step / 2 + 2 ** -24);
    expect(worst).toBeGreaterThan(0);

    // Any other 4 of the 7 would give the same S_D; and a device whose shares belong to
    // another secret (a retried upload's shares swapped in) makes the count slot fail.
    const tampered = createC0Accumulator({ valueCount });
    const retry = buildCommitteeUpload({
      descriptor, descriptorHash: dh, round, roundSeed: ROUND_SEED, deviceId: 'device-0',
      devicePrivateKey: generateEd25519KeyPair(random).privateKey, devicePublicKey: generateEd25519KeyPair(random).publicKey,
      certificate: uploads[0]!.manifest.manifest.certificate, values: new Float64Array(valueCount), weight: 1, random,
    });
    for (const u of uploads) tampered.add(u.c0);
    const swappedSums = answering.map((index) => {
      const keys = custodians[index - 1]!;
      const sum = new Uint16Array(N);
      uploads.forEach((u, d) => {
        const sealed = d === 0 ? retry.sealedShares[index - 1]! : u.sealedShares[index - 1]!;
        addShareInto(sum, openShare(keys.sealing.privateKey, { descriptorHash: dh, round, deviceId: `device-${d}`, custodianIndex: index }, sealed, { recipientPublicKey: keys.sealing.publicKey }));
      });
      return { index, share: sum };
    });
    expect(() =>
      decryptSum({ descriptorHash: dh, round, roundSeed: ROUND_SEED, encoding: descriptor.encoding, valueCount, c0Sum: tampered.sum(), secretSum: reconstructCentred(swappedSums, t), count: uploads.length }),
    ).toThrow(expect.objectContaining({ code: 'integrity_check_failed' }));
  }, 120_000);
});
