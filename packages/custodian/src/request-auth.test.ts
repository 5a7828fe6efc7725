import { describe, expect, it } from 'vitest';
import { requestSigningBytes } from './request-auth.js';

describe('coordinator request signing bytes', () => {
  it('lays out the fields as documented in custodian.proto', () => {
    const bytes = requestSigningBytes({
      descriptorHash: new Uint8Array(32).fill(0x11),
      round: 0x01020304,
      hashD: new Uint8Array(32).fill(0x22),
      deviceCount: 1000,
      custodianIndex: 7,
      issuedAtMs: 1_765_000_000_000,
    });
    const hex = Buffer.from(bytes).toString('hex');
    const expected =
      Buffer.from('veil/custodian-request/v1').toString('hex') +
      '11'.repeat(32) +
      '01020304' +
      '22'.repeat(32) +
      '000003e8' +
      '07' +
      (1_765_000_000_000).toString(16).padStart(16, '0');
    expect(hex).toBe(expected);
  });

  it('refuses out-of-range fields', () => {
    const base = { descriptorHash: new Uint8Array(32), round: 1, hashD: new Uint8Array(32), deviceCount: 3, custodianIndex: 1, issuedAtMs: 0 };
    expect(() => requestSigningBytes({ ...base, custodianIndex: 0 })).toThrow(RangeError);
    expect(() => requestSigningBytes({ ...base, custodianIndex: 256 })).toThrow(RangeError);
    expect(() => requestSigningBytes({ ...base, hashD: new Uint8Array(31) })).toThrow(RangeError);
    expect(() => requestSigningBytes({ ...base, round: -1 })).toThrow(RangeError);
  });
});
