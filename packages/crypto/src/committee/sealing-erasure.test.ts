// An opened share leaves no plaintext behind: every buffer AES-GCM decryption wrote the share to is
// zero once openShare returns (the custodian erases the decoded share itself after adding it).
// node:crypto is wrapped only to see those buffers; the decryption is node:crypto's own.
import { randomBytes } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';

const decrypted: Buffer[] = [];
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    createDecipheriv: (...args: Parameters<typeof real.createDecipheriv>) => {
      const decipher = real.createDecipheriv(...args);
      const update = decipher.update.bind(decipher) as (data: Uint8Array) => Buffer;
      const final = decipher.final.bind(decipher) as () => Buffer;
      (decipher as unknown as { update: unknown }).update = (data: Uint8Array) => {
        const out = update(data);
        decrypted.push(out);
        return out;
      };
      (decipher as unknown as { final: unknown }).final = () => {
        const out = final();
        decrypted.push(out);
        return out;
      };
      return decipher;
    },
  };
});

const { generateCustodianKeys } = await import('./keys.js');
const { openShare, sealShare } = await import('./sealing.js');

describe('openShare erasure', () => {
  const keys = generateCustodianKeys();
  const binding = { descriptorHash: new Uint8Array(randomBytes(32)), round: 4, deviceId: 'device-7', custodianIndex: 2 };
  const share = Array.from({ length: 2048 }, (_, i) => (i * 7919 + 13) % 65521);

  it('returns the share and leaves every decrypted buffer zeroed', () => {
    const sealed = sealShare(keys.sealing.publicKey, binding, share);
    decrypted.length = 0;
    expect(Array.from(openShare(keys.sealing.privateKey, binding, sealed))).toEqual(share);
    expect(decrypted.reduce((n, b) => n + b.length, 0)).toBeGreaterThanOrEqual(2 * share.length);
    for (const b of decrypted) expect(b.every((x) => x === 0)).toBe(true);
  });

  it('leaves nothing decrypted behind when authentication fails', () => {
    const sealed = sealShare(keys.sealing.publicKey, binding, share);
    decrypted.length = 0;
    expect(() => openShare(keys.sealing.privateKey, { ...binding, round: 5 }, sealed)).toThrow(expect.objectContaining({ code: 'invalid_ciphertext' }));
    expect(decrypted.length).toBeGreaterThan(0);
    for (const b of decrypted) expect(b.every((x) => x === 0)).toBe(true);
  });
});
