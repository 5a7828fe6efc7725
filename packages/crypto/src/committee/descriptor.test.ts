import { describe, expect, it } from 'vitest';
import { sha256, toBase64, toHex, utf8 } from './bytes.js';
import { canonicalJson } from './canonical.js';
import {
  buildTaskDescriptor,
  descriptorHashHex,
  encodeDescriptor,
  minimumDeltaBits,
  signDescriptor,
  validateDescriptor,
  verifyDescriptorSignature,
  type TaskDescriptor,
} from './descriptor.js';
import { custodianFingerprint, generateCustodianKeys, generateEd25519KeyPair } from './keys.js';

function committeeOf(n: number) {
  return Array.from({ length: n }, () => generateCustodianKeys());
}

function makeDescriptor(n = 7, t = 5, overrides: Partial<TaskDescriptor> = {}) {
  const authority = generateEd25519KeyPair();
  const keys = committeeOf(n);
  const base = buildTaskDescriptor({
    taskId: 'task-1',
    committee: keys.map((k, i) => ({ address: `127.0.0.1:${7000 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: t,
    minDevices: 10,
    maxDevices: 1000,
    maxRounds: 50,
    authorityPublicKey: authority.publicKey,
    createdAt: new Date('2026-12-06T15:00:00Z'),
  });
  const descriptor = { ...base, ...overrides } as TaskDescriptor;
  const fingerprints = keys.map((k) => custodianFingerprint(k.signing.publicKey, k.sealing.publicKey));
  return { descriptor, authority, keys, fingerprints };
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return (e as { code?: string }).code + ': ' + (e as Error).message;
  }
};

describe('task descriptor encoding and signature', () => {
  it('hashes the RFC 8785 canonical bytes, independent of key order', () => {
    const { descriptor } = makeDescriptor();
    const shuffled = Object.fromEntries(Object.entries(descriptor).reverse()) as unknown as TaskDescriptor;
    expect(encodeDescriptor(shuffled)).toEqual(encodeDescriptor(descriptor));
    expect(descriptorHashHex(descriptor)).toBe(toHex(sha256(utf8(canonicalJson(descriptor)))));
    expect(new TextDecoder().decode(encodeDescriptor(descriptor))).not.toMatch(/\s/);
  });

  it('verifies the authority signature and refuses a descriptor changed after signing', () => {
    const { descriptor, authority } = makeDescriptor();
    const signed = signDescriptor(descriptor, authority.privateKey);
    expect(verifyDescriptorSignature(signed)).toBe(true);
    expect(verifyDescriptorSignature({ ...signed, descriptor: { ...descriptor, minDevices: 2 } })).toBe(false);
    const otherAuthority = generateEd25519KeyPair();
    // The coordinator swaps in its own authority key and re-signs: the signature verifies, so
    // the pinned authority key is what catches it.
    const forged = signDescriptor({ ...descriptor, authorityKey: toBase64(otherAuthority.publicKey) }, otherAuthority.privateKey);
    expect(verifyDescriptorSignature(forged)).toBe(true);
    expect(codeOf(() => validateDescriptor(forged.descriptor, { minDevices: 10, authorityKey: descriptor.authorityKey }))).toMatch(/^parameter_mismatch: .*pinned enrolment authority/);
  });
});

describe('validateDescriptor', () => {
  it('accepts a 5-of-7 committee with c = 2 and reports the proven figures', () => {
    const { descriptor, fingerprints } = makeDescriptor(7, 5);
    const check = validateDescriptor(descriptor, { minDevices: 10, maxRounds: 100, pinnedFingerprints: fingerprints, authorityKey: descriptor.authorityKey });
    expect(check).toMatchObject({ committeeSize: 7, maxCorruptTolerated: 2, livenessSlack: 2, descriptorHash: descriptorHashHex(descriptor) });
    expect(descriptor.corruptTolerated).toBe(2);
    expect(check.noiseMarginSigmas).toBeGreaterThanOrEqual(12);
    expect(check.maxAbsEncodedSum).toBe(1000 * 8192);
  });

  it('refuses c > 2t - n - 1, t < 2, t > n', () => {
    const { descriptor } = makeDescriptor(7, 5);
    expect(codeOf(() => validateDescriptor({ ...descriptor, corruptTolerated: 3 }, { minDevices: 1 }))).toMatch(/^parameter_mismatch: .*exceeds 2t - n - 1 = 2/);
    const four = makeDescriptor(7, 4).descriptor;
    expect(four.corruptTolerated).toBe(0);
    expect(codeOf(() => validateDescriptor({ ...four, corruptTolerated: 1 }, { minDevices: 1 }))).toMatch(/exceeds 2t - n - 1 = 0/);
    // t = 3 of 7 cannot even tolerate c = 0 (2t - n - 1 = -2).
    expect(codeOf(() => validateDescriptor({ ...four, threshold: 3, corruptTolerated: 0 }, { minDevices: 1 }))).toMatch(/exceeds 2t - n - 1 = -2/);
    expect(codeOf(() => validateDescriptor({ ...four, threshold: 1 }, { minDevices: 1 }))).toMatch(/threshold must be an integer in \[2, n = 7\]/);
    expect(codeOf(() => validateDescriptor({ ...four, threshold: 8 }, { minDevices: 1 }))).toMatch(/threshold/);
    expect(codeOf(() => validateDescriptor(four, { minDevices: 1, minThreshold: 5 }))).toMatch(/threshold must be an integer in \[5/);
  });

  it('refuses minDevices below the floor, maxRounds above the cap, a share modulus that cannot hold |D|', () => {
    const { descriptor } = makeDescriptor();
    expect(codeOf(() => validateDescriptor(descriptor, { minDevices: 11 }))).toMatch(/minDevices 10 is below the floor 11/);
    expect(codeOf(() => validateDescriptor(descriptor, { minDevices: 10, maxRounds: 49 }))).toMatch(/maxRounds 50 exceeds the cap 49/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, maxDevices: 32761, encoding: { ...descriptor.encoding, deltaBits: 14 } }, { minDevices: 10 }))).toMatch(/cannot hold \|D\| up to 32761/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, shareModulus: 65519 }, { minDevices: 10 }))).toMatch(/shareModulus must be 65521/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, maxDevices: 5 }, { minDevices: 1 }))).toMatch(/maxDevices must be an integer >= minDevices/);
  });

  it('refuses a committee other than the pinned fingerprints', () => {
    const { descriptor, fingerprints } = makeDescriptor();
    const replaced = generateCustodianKeys();
    const swapped = {
      ...descriptor,
      committee: descriptor.committee.map((m) => (m.index === 3 ? { ...m, sealingKey: toBase64(replaced.sealing.publicKey) } : m)),
    };
    expect(codeOf(() => validateDescriptor(swapped, { minDevices: 10, pinnedFingerprints: fingerprints }))).toMatch(/pinned custodian fingerprints/);
    expect(codeOf(() => validateDescriptor(descriptor, { minDevices: 10, pinnedFingerprints: fingerprints.slice(1) }))).toMatch(/pinned/);
    expect(validateDescriptor(descriptor, { minDevices: 10, pinnedFingerprints: [...fingerprints].reverse() }).committeeSize).toBe(7);
  });

  it('refuses malformed committees and encodings that do not fit q', () => {
    const { descriptor } = makeDescriptor();
    const [first, second, ...rest] = descriptor.committee;
    expect(codeOf(() => validateDescriptor({ ...descriptor, committee: [second!, first!, ...rest] }, { minDevices: 1 }))).toMatch(/index must be 1/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, committee: [first!, { ...second!, signingKey: first!.signingKey }, ...rest] }, { minDevices: 1 }))).toMatch(/reuses a key/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, committee: [{ ...first!, sealingKey: 'AAAA' }, second!, ...rest] }, { minDevices: 1 }))).toMatch(/32 bytes/);
    // weightCap 1000 x 8192 levels x 1000 devices = 8.2e9 > 2^31 at Δ = 2^12.
    expect(codeOf(() => validateDescriptor({ ...descriptor, encoding: { ...descriptor.encoding, weightCap: 1000 } }, { minDevices: 1 }))).toMatch(/exceeds the decodable sum/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, encoding: { ...descriptor.encoding, deltaBits: 10 } }, { minDevices: 1 }))).toMatch(/noise standard deviations/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, params: 'other' } as unknown as TaskDescriptor, { minDevices: 1 }))).toMatch(/params/);
    expect(codeOf(() => validateDescriptor({ ...descriptor, extra: 1 } as unknown as TaskDescriptor, { minDevices: 1 }))).toMatch(/unknown field extra/);
    expect(codeOf(() => validateDescriptor(descriptor, { minDevices: 1, requireDp: true }))).toMatch(/differential privacy is required/);
    expect(
      codeOf(() =>
        validateDescriptor(
          { ...descriptor, dp: { mechanism: 'distributed-discrete-gaussian', clipNorm: 1, noiseMultiplier: 1, colludingDevices: 10, delta: 1e-5 } },
          { minDevices: 1 },
        ),
      ),
    ).toMatch(/colludingDevices/);
  });

  it('minimumDeltaBits gives at least 12 noise sigmas and no more bits than needed', () => {
    for (const devices of [1, 10, 1000, 32760]) {
      const bits = minimumDeltaBits(devices);
      const sigma = Math.sqrt(10.5) * Math.sqrt(devices);
      expect(2 ** bits / 2 / sigma).toBeGreaterThanOrEqual(12);
      expect(2 ** (bits - 1) / 2 / sigma).toBeLessThan(12);
    }
    expect(minimumDeltaBits(32760)).toBe(14);
  });
});
