import { describe, expect, it } from 'vitest';
import { sha256, toHex, utf8 } from './bytes.js';
import { buildAnswer, decodeShareBytes, encodeShareBytes, hashD, signAnswer, verifyAnswer, verifyAnswerStatement, SHARE_BYTES } from './answer.js';
import { buildTaskDescriptor, descriptorHash, type TaskDescriptor } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair } from './keys.js';
import { openShare, sealShare, shareAad, SEALED_SHARE_BYTES } from './sealing.js';

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
  return { keys, descriptor, dh: descriptorHash(descriptor) };
}

const codeOf = (fn: () => unknown) => {
  try {
    fn();
    return 'accepted';
  } catch (e) {
    return (e as { code?: string }).code;
  }
};

describe('hash(D)', () => {
  it('is SHA-256("veil/D/v1" || sorted digests), independent of order, refusing duplicates', () => {
    const digests = [3, 1, 2].map((i) => sha256(Uint8Array.of(i)));
    const sorted = [...digests].sort((a, b) => toHex(a).localeCompare(toHex(b)));
    expect(hashD(digests)).toEqual(sha256(utf8('veil/D/v1'), ...sorted));
    expect(hashD([...digests].reverse())).toEqual(hashD(digests));
    expect(hashD(digests.slice(1))).not.toEqual(hashD(digests));
    expect(codeOf(() => hashD([digests[0]!, digests[0]!]))).toBe('invalid_argument');
  });
});

describe('custodian answers', () => {
  it('sign and verify with the share sum; a forged, re-targeted or tampered answer is refused', () => {
    const { keys, descriptor, dh } = setup();
    const shareSum = encodeShareBytes(Array.from({ length: 2048 }, (_, i) => (i * 37) % 65521));
    const hD = hashD([sha256(Uint8Array.of(1)), sha256(Uint8Array.of(2))]);
    const answer = buildAnswer({ descriptorHash: dh, round: 4, hashD: hD, count: 2, custodianIndex: 2, shareSum });
    const signed = signAnswer(answer, keys[1]!.signing.privateKey);
    const ok = verifyAnswer(signed, { descriptor, round: 4, hashD: hD, count: 2, shareSum });
    expect(ok.custodianIndex).toBe(2);
    expect(ok.shareSum![1]).toBe(37);

    // Signed by custodian 3 but claiming index 2: refused.
    expect(codeOf(() => verifyAnswer(signAnswer(answer, keys[2]!.signing.privateKey), { descriptor, round: 4, hashD: hD, count: 2 }))).toBe('invalid_signature');
    // A swapped share sum.
    const otherSum = Uint8Array.from(shareSum);
    otherSum[0] = (otherSum[0]! + 1) & 0xff;
    expect(codeOf(() => verifyAnswer(signed, { descriptor, round: 4, hashD: hD, count: 2, shareSum: otherSum }))).toBe('invalid_signature');
    // Answers to another question.
    expect(codeOf(() => verifyAnswer(signed, { descriptor, round: 5, hashD: hD, count: 2 }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyAnswer(signed, { descriptor, round: 4, hashD: sha256(hD), count: 2 }))).toBe('parameter_mismatch');
    expect(codeOf(() => verifyAnswer(signed, { descriptor, round: 4, hashD: hD, count: 3 }))).toBe('parameter_mismatch');
    // The coordinator edits a field of a genuine answer.
    expect(codeOf(() => verifyAnswer({ ...signed, answer: { ...answer, count: 3 } }, { descriptor, round: 4, hashD: hD, count: 3 }))).toBe('invalid_signature');
    expect(codeOf(() => verifyAnswer({ ...signed, answer: { ...answer, custodianIndex: 9 } }, { descriptor, round: 4, hashD: hD, count: 2 }))).toBe('invalid_signature');
  });

  it('verifyAnswerStatement checks a stored answer (no share sum) and returns what the custodian attested', () => {
    const { keys, descriptor, dh } = setup();
    const shareSum = encodeShareBytes(new Array(2048).fill(1));
    const hD = hashD([sha256(Uint8Array.of(7)), sha256(Uint8Array.of(8))]);
    const signed = signAnswer(buildAnswer({ descriptorHash: dh, round: 9, hashD: hD, count: 2, custodianIndex: 3, shareSum }), keys[2]!.signing.privateKey);
    expect(verifyAnswerStatement(signed, { descriptor })).toEqual({ custodianIndex: 3, round: 9, count: 2, hashD: toHex(hD) });
    // The coordinator inflates |D| in its record: the signature no longer verifies.
    expect(codeOf(() => verifyAnswerStatement({ ...signed, answer: { ...signed.answer, count: 3 } }, { descriptor }))).toBe('invalid_signature');
    // An answer for another task's descriptor.
    const other = setup();
    expect(codeOf(() => verifyAnswerStatement(signed, { descriptor: other.descriptor }))).toBe('parameter_mismatch');
  });

  it('share bytes are N x u16 LE and refuse coefficients >= p', () => {
    const coeffs = Array.from({ length: 2048 }, (_, i) => (i === 5 ? 65520 : i));
    const bytes = encodeShareBytes(coeffs);
    expect(bytes.length).toBe(SHARE_BYTES);
    expect([bytes[10], bytes[11]]).toEqual([0xf0, 0xff]);
    expect(Array.from(decodeShareBytes(bytes))).toEqual(coeffs);
    bytes[11] = 0xff;
    bytes[10] = 0xf1; // 65521 = p
    expect(codeOf(() => decodeShareBytes(bytes))).toBe('invalid_payload');
    expect(codeOf(() => decodeShareBytes(bytes.subarray(2)))).toBe('invalid_payload');
    expect(codeOf(() => encodeShareBytes([...coeffs.slice(1), 65521]))).toBe('invalid_argument');
  });

  it('decodes the same values from an odd offset into a larger buffer (read byte by byte there) as from an aligned one', () => {
    const coeffs = Array.from({ length: 2048 }, (_, i) => (i * 40_503) % 65521);
    const bytes = encodeShareBytes(coeffs);
    const padded = new Uint8Array(SHARE_BYTES + 3);
    padded.set(bytes, 1);
    expect(Array.from(decodeShareBytes(padded.subarray(1, 1 + SHARE_BYTES)))).toEqual(coeffs);
    // The last coefficient read as p from the unaligned view is refused there too.
    padded[SHARE_BYTES - 1] = 0xf1;
    padded[SHARE_BYTES] = 0xff;
    expect(codeOf(() => decodeShareBytes(padded.subarray(1, 1 + SHARE_BYTES)))).toBe('invalid_payload');
  });
});

describe('sealed shares', () => {
  it('open only for the custodian, task, round, device and index they were sealed for', () => {
    const { keys, dh } = setup();
    const share = Array.from({ length: 2048 }, (_, i) => (i * 7919) % 65521);
    const binding = { descriptorHash: dh, round: 2, deviceId: 'device-1', custodianIndex: 1 };
    const sealed = sealShare(keys[0]!.sealing.publicKey, binding, share);
    expect(sealed.length).toBe(SEALED_SHARE_BYTES);
    expect(Array.from(openShare(keys[0]!.sealing.privateKey, binding, sealed))).toEqual(share);
    expect(codeOf(() => openShare(keys[1]!.sealing.privateKey, binding, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openShare(keys[0]!.sealing.privateKey, { ...binding, round: 3 }, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openShare(keys[0]!.sealing.privateKey, { ...binding, deviceId: 'device-2' }, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openShare(keys[0]!.sealing.privateKey, { ...binding, custodianIndex: 2 }, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openShare(keys[0]!.sealing.privateKey, { ...binding, descriptorHash: sha256(dh) }, sealed))).toBe('invalid_ciphertext');
    expect(codeOf(() => openShare(keys[0]!.sealing.privateKey, binding, sealed.subarray(1)))).toBe('invalid_ciphertext');
  });

  it('the aad is "veil/share-aad/v1" || descriptorHash || u32be(round) || utf8(deviceId) || u8(index)', () => {
    const dh = new Uint8Array(32).fill(0xab);
    const aad = shareAad({ descriptorHash: dh, round: 0x01020304, deviceId: 'dé', custodianIndex: 7 });
    expect(toHex(aad)).toBe(toHex(utf8('veil/share-aad/v1')) + 'ab'.repeat(32) + '01020304' + toHex(utf8('dé')) + '07');
  });
});
