import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sha256, toBase64, toHex } from './bytes.js';
import { buildTaskDescriptor, descriptorHash, type TaskDescriptor } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair, type RawKeyPair } from './keys.js';
import {
  encodeManifest,
  issueDeviceCertificate,
  manifestDigest,
  signManifest,
  verifyDeviceCertificate,
  verifyManifest,
  type UploadManifest,
} from './manifest.js';

const NOW = Date.parse('2026-12-06T15:00:00Z');

function setup() {
  const authority = generateEd25519KeyPair();
  const keys = Array.from({ length: 3 }, () => generateCustodianKeys());
  const descriptor: TaskDescriptor = buildTaskDescriptor({
    taskId: 'task-1',
    committee: keys.map((k, i) => ({ address: `c${i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: 2,
    minDevices: 2,
    maxRounds: 10,
    authorityPublicKey: authority.publicKey,
  });
  return { authority, descriptor };
}

function deviceManifest(authority: RawKeyPair, descriptor: TaskDescriptor, deviceId = 'device-7', device = generateEd25519KeyPair()) {
  const certificate = issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId, devicePublicKey: device.publicKey, notAfterMs: NOW + 3_600_000 });
  const manifest: UploadManifest = {
    descriptorHash: toHex(descriptorHash(descriptor)),
    round: 3,
    deviceId,
    c0Sha256: toHex(sha256(Uint8Array.of(1, 2, 3))),
    shareSha256: [1, 2, 3].map((i) => toHex(sha256(Uint8Array.of(i)))),
    devicePublicKey: toBase64(device.publicKey),
    certificate,
  };
  return { device, manifest, signed: signManifest(manifest, device.privateKey) };
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return (e as { code?: string }).code;
  }
};

describe('device certificates', () => {
  it('binds task, device, key and expiry; length prefixes keep ("ab","c") apart from ("a","bc")', () => {
    const authority = generateEd25519KeyPair();
    const device = generateEd25519KeyPair();
    const subject = { taskId: 'ab', deviceId: 'c', devicePublicKey: device.publicKey };
    const cert = issueDeviceCertificate(authority.privateKey, { ...subject, notAfterMs: NOW });
    expect(verifyDeviceCertificate(authority.publicKey, subject, cert, NOW)).toBe(true);
    expect(verifyDeviceCertificate(authority.publicKey, subject, cert, NOW + 1)).toBe(false);
    expect(verifyDeviceCertificate(authority.publicKey, { ...subject, taskId: 'a', deviceId: 'bc' }, cert, NOW)).toBe(false);
    expect(verifyDeviceCertificate(authority.publicKey, { ...subject, devicePublicKey: generateEd25519KeyPair().publicKey }, cert, NOW)).toBe(false);
    expect(verifyDeviceCertificate(authority.publicKey, subject, { ...cert, notAfterMs: NOW + 1 }, NOW)).toBe(false);
    expect(verifyDeviceCertificate(generateEd25519KeyPair().publicKey, subject, cert, NOW)).toBe(false);
  });
});

describe('upload manifests', () => {
  it('verifies a certified, signed manifest and returns its digest and parsed hashes', () => {
    const { authority, descriptor } = setup();
    const { manifest, signed, device } = deviceManifest(authority, descriptor);
    const verified = verifyManifest(signed, { descriptor, round: 3, nowMs: NOW });
    expect(verified.manifestDigest).toEqual(manifestDigest(manifest));
    expect(verified.deviceId).toBe('device-7');
    expect(verified.devicePublicKey).toEqual(device.publicKey);
    expect(toHex(verified.shareSha256[2]!)).toBe(manifest.shareSha256[2]);
    // Given the canonical bytes (as intake and custodians receive them), the digest is their hash: the same one.
    const withBytes = verifyManifest(signed, { descriptor, round: 3, nowMs: NOW, canonicalBytes: encodeManifest(manifest) });
    expect(withBytes.manifestDigest).toEqual(manifestDigest(manifest));
    // The signature is still checked over that digest: bytes of another manifest do not verify.
    const other = encodeManifest({ ...manifest, round: 4 });
    expect(codeOf(() => verifyManifest(signed, { descriptor, round: 3, nowMs: NOW, canonicalBytes: other }))).toBe('invalid_signature');
  });

  it('refuses another round or descriptor, a tampered field, an uncertified key, an expired certificate', () => {
    const { authority, descriptor } = setup();
    const { manifest, signed } = deviceManifest(authority, descriptor);
    expect(codeOf(() => verifyManifest(signed, { descriptor, round: 4, nowMs: NOW }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyManifest(signed, { descriptor: { ...descriptor, minDevices: 1 }, round: 3, nowMs: NOW }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyManifest({ ...signed, manifest: { ...manifest, c0Sha256: toHex(sha256(Uint8Array.of(9))) } }, { descriptor, round: 3, nowMs: NOW }))).toBe('invalid_signature');
    expect(codeOf(() => verifyManifest(signed, { descriptor, round: 3, nowMs: NOW + 3_600_001 }))).toBe('invalid_signature');
    // A phantom device: the coordinator makes its own key pair and signs a manifest; without
    // the authority's key it can only reuse another device's certificate, which names another key.
    const phantom = generateEd25519KeyPair();
    const phantomManifest = { ...manifest, devicePublicKey: toBase64(phantom.publicKey) };
    expect(codeOf(() => verifyManifest(signManifest(phantomManifest, phantom.privateKey), { descriptor, round: 3, nowMs: NOW }))).toBe('invalid_signature');
    // A certificate for another device id.
    const other = deviceManifest(authority, descriptor, 'device-8');
    expect(codeOf(() => verifyManifest(signManifest({ ...other.manifest, deviceId: 'device-7' }, other.device.privateKey), { descriptor, round: 3, nowMs: NOW }))).toBe('invalid_signature');
  });

  it('a certificate cache skips re-verifying the same certificate, and lets nothing else through', () => {
    const { authority, descriptor } = setup();
    const { manifest, signed } = deviceManifest(authority, descriptor);
    const cache = new Set<string>();
    const options = { descriptor, round: 3, nowMs: NOW, certificateCache: cache };
    expect(verifyManifest(signed, options).deviceId).toBe('device-7');
    expect(cache.size).toBe(1);
    expect(verifyManifest(signed, options).deviceId).toBe('device-7');
    expect(cache.size).toBe(1);
    // Expired: refused although the certificate is cached.
    expect(codeOf(() => verifyManifest(signed, { ...options, nowMs: NOW + 3_600_001 }))).toBe('invalid_signature');
    // The cached certificate with another key, another device id, another expiry or a changed signature: verified, refused.
    const phantom = generateEd25519KeyPair();
    expect(codeOf(() => verifyManifest(signManifest({ ...manifest, devicePublicKey: toBase64(phantom.publicKey) }, phantom.privateKey), options))).toBe('invalid_signature');
    const other = deviceManifest(authority, descriptor, 'device-8');
    expect(codeOf(() => verifyManifest(signManifest({ ...other.manifest, deviceId: 'device-7' }, other.device.privateKey), options))).toBe('invalid_signature');
    const longer = { ...manifest, certificate: { ...manifest.certificate, notAfterMs: NOW + 7_200_000 } };
    expect(codeOf(() => verifyManifest(signManifest(longer, deviceManifest(authority, descriptor).device.privateKey), options))).toBe('invalid_signature');
    const sig = Buffer.from(manifest.certificate.signature, 'base64');
    sig[0]! ^= 1;
    const { device } = deviceManifest(authority, descriptor);
    const forged = { ...manifest, devicePublicKey: toBase64(device.publicKey), certificate: { ...manifest.certificate, signature: sig.toString('base64') } };
    expect(codeOf(() => verifyManifest(signManifest(forged, device.privateKey), options))).toBe('invalid_signature');
    // Another authority's descriptor with the same cache: the key names the authority.
    const { descriptor: otherDescriptor } = setup();
    expect(codeOf(() => verifyManifest(signed, { ...options, descriptor: { ...otherDescriptor, taskId: descriptor.taskId } }))).not.toBe('accepted');
    expect(cache.size).toBe(1);
  });

  it('takes the signature as raw bytes and the authority key decoded, with the same checks and the same cache keys', () => {
    const { authority, descriptor } = setup();
    const { manifest, signed } = deviceManifest(authority, descriptor);
    const raw = new Uint8Array(Buffer.from(signed.signature, 'base64'));
    const options = { descriptor, round: 3, nowMs: NOW, canonicalBytes: encodeManifest(manifest), authorityKey: authority.publicKey };
    const verified = verifyManifest({ manifest, signatureBytes: raw }, options);
    // The digest is SHA-256 of the canonical bytes, as computed independently here.
    expect(toHex(verified.manifestDigest)).toBe(createHash('sha256').update(encodeManifest(manifest)).digest('hex'));
    expect(verified.manifestDigest).toEqual(verifyManifest(signed, { descriptor, round: 3, nowMs: NOW }).manifestDigest);
    // A flipped bit, a short or long signature: refused like their base64 spellings.
    const flipped = Uint8Array.from(raw);
    flipped[10]! ^= 1;
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: flipped }, options))).toBe('invalid_signature');
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: raw.subarray(0, 63) }, options))).toBe('invalid_signature');
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: Uint8Array.of(...raw, 0) }, options))).toBe('invalid_signature');
    // Another authority key than the one that certified the device: the certificate does not verify.
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: raw }, { ...options, authorityKey: generateEd25519KeyPair().publicKey }))).toBe('invalid_signature');
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: raw }, { ...options, authorityKey: authority.publicKey.subarray(0, 31) }))).toBe('invalid_key_material');
    // A certificate cached through one form is a hit for the other (one entry), and the cache
    // entry names the authority: a cache filled under one key does not vouch under another.
    const cache = new Set<string>();
    verifyManifest(signed, { descriptor, round: 3, nowMs: NOW, certificateCache: cache });
    verifyManifest({ manifest, signatureBytes: raw }, { ...options, certificateCache: cache });
    expect(cache.size).toBe(1);
    expect([...cache][0]).toContain(toBase64(authority.publicKey));
    expect(codeOf(() => verifyManifest({ manifest, signatureBytes: raw }, { ...options, authorityKey: generateEd25519KeyPair().publicKey, certificateCache: cache }))).toBe('invalid_signature');
  });

  it('refuses malformed manifests with invalid_payload', () => {
    const { authority, descriptor } = setup();
    const { manifest, device } = deviceManifest(authority, descriptor);
    const check = (m: unknown) => codeOf(() => verifyManifest(signManifest(m as UploadManifest, device.privateKey), { descriptor, round: 3, nowMs: NOW }));
    expect(check({ ...manifest, shareSha256: manifest.shareSha256.slice(0, 2) })).toBe('invalid_payload');
    expect(check({ ...manifest, c0Sha256: 'zz' })).toBe('invalid_payload');
    expect(check({ ...manifest, deviceId: '' })).toBe('invalid_payload');
    expect(check({ ...manifest, extra: 1 })).toBe('invalid_payload');
    expect(codeOf(() => verifyManifest({ manifest, signature: 'AA==' }, { descriptor, round: 3, nowMs: NOW }))).toBe('invalid_signature');
  });
});
