import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sha256, sha256WithPrefix, toHex, utf8 } from './bytes.js';
import { buildTaskDescriptor, descriptorHash, type TaskDescriptor } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair } from './keys.js';
import { issueDeviceCertificate, signManifest } from './manifest.js';
import { openShare, SEALED_SHARE_BYTES } from './sealing.js';
import { maxUpdateBytes } from '../update-size.js';
import { createC0Accumulator, decodeC0Payload } from './rlwe.js';
import {
  MAX_MANIFEST_BYTES,
  buildCommitteeUpload,
  committeeUploadBytesWithoutManifest,
  deriveRoundSeed,
  encodeCommitteeUploadPayload,
  verifyCommitteeUpload,
} from './upload.js';

const NOW = Date.parse('2026-12-06T16:00:00Z');

function setup() {
  const authority = generateEd25519KeyPair();
  const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
  const descriptor: TaskDescriptor = buildTaskDescriptor({
    taskId: 'task-u',
    committee: custodians.map((k, i) => ({ address: `c${i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: 2,
    minDevices: 2,
    maxRounds: 10,
    authorityPublicKey: authority.publicKey,
  });
  const dh = descriptorHash(descriptor);
  const device = generateEd25519KeyPair();
  const certificate = issueDeviceCertificate(authority.privateKey, { taskId: 'task-u', deviceId: 'dev-1', devicePublicKey: device.publicKey, notAfterMs: NOW + 60_000 });
  const build = (round = 2, values: ArrayLike<number> = [0.5, -0.25, 1, 0]) =>
    buildCommitteeUpload({ descriptor, descriptorHash: dh, round, roundSeed: deriveRoundSeed(dh, round), deviceId: 'dev-1', devicePrivateKey: device.privateKey, devicePublicKey: device.publicKey, certificate, values, weight: 1 });
  return { authority, custodians, descriptor, dh, device, certificate, build };
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return (e as { code?: string }).code;
  }
};

describe('sha256WithPrefix (one pass for a message and its prefix)', () => {
  it('gives the FIPS 180-2 appendix B digests of "abc" and of the 448-bit message it begins', () => {
    const digests = sha256WithPrefix(utf8('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'), 3);
    expect(toHex(digests.prefix)).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(toHex(digests.whole)).toBe('248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1');
    expect(toHex(sha256WithPrefix(utf8('abc'), 0).prefix)).toBe('e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});

describe('committee upload payloads', () => {
  it('round-trip through encode and the coordinator check, which returns what custodians need', () => {
    const { custodians, descriptor, dh, build } = setup();
    const upload = build();
    const payload = encodeCommitteeUploadPayload(upload);
    const manifestLength = payload.length - committeeUploadBytesWithoutManifest(4, 3);
    expect(manifestLength).toBeGreaterThan(100);
    expect(manifestLength).toBeLessThan(1500);
    const verified = verifyCommitteeUpload(payload, { descriptor, round: 2, valueCount: 4, deviceId: 'dev-1', nowMs: NOW });
    expect(verified.c0).toEqual(upload.c0);
    expect(verified.sealedShares.map((s) => s.length)).toEqual([SEALED_SHARE_BYTES, SEALED_SHARE_BYTES, SEALED_SHARE_BYTES]);
    expect(toHex(verified.manifestDigest)).toBe(toHex(sha256(verified.manifest)));
    const share = openShare(custodians[1]!.sealing.privateKey, { descriptorHash: dh, round: 2, deviceId: 'dev-1', custodianIndex: 2 }, verified.sealedShares[1]!);
    expect(share.length).toBe(2048);
  });

  it('puts the c0 first, so one SHA-256 pass gives the payload digest and the c0 digest the manifest signs', () => {
    const { descriptor, build } = setup();
    const upload = build();
    const payload = encodeCommitteeUploadPayload(upload);
    // Version 2: c0 || "VCU" || 2 || n || shares || u32le |manifest| || manifest || signature.
    expect(payload.subarray(0, upload.c0.length)).toEqual(upload.c0);
    expect([...payload.subarray(upload.c0.length, upload.c0.length + 5)]).toEqual([0x56, 0x43, 0x55, 2, 3]);
    const verified = verifyCommitteeUpload(payload, { descriptor, round: 2, valueCount: 4, deviceId: 'dev-1', nowMs: NOW });
    // Independently computed: node:crypto over the whole payload, and over the c0 bytes the manifest names.
    expect(Buffer.from(verified.payloadSha256).toString('hex')).toBe(createHash('sha256').update(payload).digest('hex'));
    expect(upload.manifest.manifest.c0Sha256).toBe(createHash('sha256').update(payload.subarray(0, upload.c0.length)).digest('hex'));
  });

  it('refuses a version-1 upload (magic and c0 length first) with a message naming both versions', () => {
    const { descriptor, build } = setup();
    const upload = build();
    const v2 = encodeCommitteeUploadPayload(upload);
    const rest = v2.subarray(upload.c0.length + 4);
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, upload.c0.length, true);
    const v1 = new Uint8Array([0x56, 0x43, 0x55, 1, ...length, ...upload.c0, ...rest]);
    let error: unknown;
    try {
      verifyCommitteeUpload(v1, { descriptor, round: 2, valueCount: 4, deviceId: 'dev-1', nowMs: NOW });
    } catch (e) {
      error = e;
    }
    expect(error).toMatchObject({ code: 'invalid_payload', message: expect.stringMatching(/upload version 1 .*reads version 2/) });
  });

  it('refuses truncation, padding, another device, round or shape, swapped shares and re-signed tampering', () => {
    const { descriptor, device, build } = setup();
    const upload = build();
    const payload = encodeCommitteeUploadPayload(upload);
    const check = { descriptor, round: 2, valueCount: 4, deviceId: 'dev-1', nowMs: NOW };
    expect(codeOf(() => verifyCommitteeUpload(payload.subarray(0, payload.length - 1), check))).toBe('invalid_payload');
    expect(codeOf(() => verifyCommitteeUpload(new Uint8Array([...payload, 0]), check))).toBe('invalid_payload');
    expect(codeOf(() => verifyCommitteeUpload(payload, { ...check, deviceId: 'dev-2' }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyCommitteeUpload(payload, { ...check, round: 3 }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyCommitteeUpload(payload, { ...check, valueCount: 5000 }))).toBe('shape_mismatch');
    expect(codeOf(() => verifyCommitteeUpload(payload, { ...check, nowMs: NOW + 60_001 }))).toBe('invalid_signature');
    // Sealed shares swapped between custodians: the manifest digests no longer match.
    const other = build();
    const swapped = encodeCommitteeUploadPayload({ ...upload, sealedShares: [other.sealedShares[0]!, ...upload.sealedShares.slice(1)] });
    expect(codeOf(() => verifyCommitteeUpload(swapped, check))).toBe('invalid_signature');
    // c0 of another upload with this upload's manifest.
    expect(codeOf(() => verifyCommitteeUpload(encodeCommitteeUploadPayload({ ...upload, c0: other.c0 }), check))).toBe('invalid_signature');
    // A coefficient >= q in c0 (re-signed by the device, so only the range check catches it).
    const badC0 = Uint8Array.from(upload.c0);
    badC0.fill(0xff, 12, 23);
    const resigned = signManifest({ ...upload.manifest.manifest, c0Sha256: toHex(sha256(badC0)) }, device.privateKey);
    expect(codeOf(() => verifyCommitteeUpload(encodeCommitteeUploadPayload({ ...upload, c0: badC0, manifest: resigned }), check))).toBe('invalid_ciphertext');
    // The same in the last coefficient (odd position) of the last polynomial.
    const lateBadC0 = Uint8Array.from(upload.c0);
    lateBadC0.fill(0xff, lateBadC0.length - 6);
    const lateResigned = signManifest({ ...upload.manifest.manifest, c0Sha256: toHex(sha256(lateBadC0)) }, device.privateKey);
    expect(codeOf(() => verifyCommitteeUpload(encodeCommitteeUploadPayload({ ...upload, c0: lateBadC0, manifest: lateResigned }), check))).toBe('invalid_ciphertext');
    // A flipped bit in the manifest bytes.
    const flipped = Uint8Array.from(payload);
    flipped[payload.length - 80]! ^= 1;
    expect(['invalid_payload', 'invalid_signature', 'parameter_mismatch']).toContain(codeOf(() => verifyCommitteeUpload(flipped, check)));
    // Not canonical: the same manifest with one space, re-framed (the signature is over the
    // canonical digest, so only the canonical-form check can refuse it).
    const manifestLength = payload.length - committeeUploadBytesWithoutManifest(4, 3);
    const manifestAt = payload.length - 64 - manifestLength;
    const spaced = utf8(' ' + new TextDecoder().decode(payload.subarray(manifestAt, manifestAt + manifestLength)));
    const reframed = new Uint8Array([...payload.subarray(0, manifestAt - 4), 0, 0, 0, 0, ...spaced, ...payload.subarray(payload.length - 64)]);
    new DataView(reframed.buffer).setUint32(manifestAt - 4, spaced.length, true);
    expect(codeOf(() => verifyCommitteeUpload(reframed, check))).toBe('invalid_payload');
  });

  it('with a sum to fold into, a verified c0 is added to it once (its range check) and a refused upload leaves it unchanged', () => {
    const { descriptor, device, build } = setup();
    const upload = build();
    const payload = encodeCommitteeUploadPayload(upload);
    const fold = createC0Accumulator({ valueCount: 4 });
    const check = { descriptor, round: 2, valueCount: 4, deviceId: 'dev-1', nowMs: NOW, fold };
    const verified = verifyCommitteeUpload(payload, check);
    expect(fold.count).toBe(1);
    expect(fold.sum()).toEqual(decodeC0Payload(verified.c0, 4));
    const before = fold.sum();
    // Refused after the framing check (another device), and by the range check itself (re-signed).
    expect(codeOf(() => verifyCommitteeUpload(payload, { ...check, deviceId: 'dev-2' }))).toBe('parameter_mismatch');
    const lateBadC0 = Uint8Array.from(upload.c0);
    lateBadC0.fill(0xff, lateBadC0.length - 6);
    const resigned = signManifest({ ...upload.manifest.manifest, c0Sha256: toHex(sha256(lateBadC0)) }, device.privateKey);
    expect(codeOf(() => verifyCommitteeUpload(encodeCommitteeUploadPayload({ ...upload, c0: lateBadC0, manifest: resigned }), check))).toBe('invalid_ciphertext');
    expect(codeOf(() => verifyCommitteeUpload(payload.subarray(0, payload.length - 1), check))).toBe('invalid_payload');
    expect(fold.count).toBe(1);
    expect(fold.sum()).toEqual(before);
  });

  it("real uploads are the exact framing plus their manifest, within the coordinator's limit (maxUpdateBytes)", () => {
    const { descriptor, build } = setup();
    for (const valueCount of [1, 2048, 5000]) {
      const payload = encodeCommitteeUploadPayload(build(2, Array.from({ length: valueCount }, (_, i) => Math.sin(i) * 0.5)));
      const verified = verifyCommitteeUpload(payload, { descriptor, round: 2, valueCount, deviceId: 'dev-1', nowMs: NOW });
      expect(payload.length - verified.manifest.length).toBe(committeeUploadBytesWithoutManifest(valueCount, 3));
      expect(verified.manifest.length).toBeLessThanOrEqual(MAX_MANIFEST_BYTES);
      expect(payload.length).toBeLessThanOrEqual(maxUpdateBytes({ encoding: 'committee-v1', valueCount, committeeSize: 3 }));
    }
  });

  it('deriveRoundSeed is SHA-256("veil/round-seed/v1" || descriptorHash || u32be(round))', () => {
    const dh = new Uint8Array(32).fill(5);
    expect(deriveRoundSeed(dh, 258)).toEqual(sha256(utf8('veil/round-seed/v1'), dh, Uint8Array.of(0, 0, 1, 2)));
    expect(deriveRoundSeed(dh, 1)).not.toEqual(deriveRoundSeed(dh, 2));
  });

  it('the secret is fresh per call: two uploads of the same update differ in c0 and every share', () => {
    const { build } = setup();
    const a = build();
    const b = build();
    expect(toHex(sha256(a.c0))).not.toBe(toHex(sha256(b.c0)));
    a.sealedShares.forEach((s, i) => expect(toHex(sha256(s))).not.toBe(toHex(sha256(b.sealedShares[i]!))));
  });
});
