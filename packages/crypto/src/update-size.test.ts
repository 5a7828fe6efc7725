/**
 * Upload limits by encoding. Each is held against real payloads where it is
 * computed: BFV in he/payload-size.test.ts (node-seal serialisations of every
 * preset), committee uploads in committee/upload.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { MAX_MANIFEST_BYTES, committeeUploadBytesWithoutManifest } from './committee/upload.js';
import { PARAMETER_PRESETS, type ParameterPresetName } from './he/params.js';
import { maxUpdatePayloadBytes } from './he/payload.js';
import { maxUpdateBytes } from './update-size.js';

describe('maxUpdateBytes: the upload limit of each update encoding', () => {
  it('float32-le: exactly 4 bytes a value', () => {
    expect(maxUpdateBytes({ encoding: 'float32-le', valueCount: 5000 })).toBe(20_000);
  });

  it("bfv-v1: the preset's bound (he/payload-size.test.ts holds it against real node-seal payloads of every preset)", () => {
    for (const preset of Object.keys(PARAMETER_PRESETS) as ParameterPresetName[]) {
      const n = PARAMETER_PRESETS[preset].polyModulusDegree;
      for (const valueCount of [1, n, n + 1]) expect(maxUpdateBytes({ encoding: 'bfv-v1', preset, valueCount })).toBe(maxUpdatePayloadBytes(preset, valueCount));
    }
  });

  it("committee-v1: the exact framing for the committee's size plus the largest manifest (committee/upload.test.ts holds it against real uploads)", () => {
    expect(maxUpdateBytes({ encoding: 'committee-v1', valueCount: 5000, committeeSize: 3 })).toBe(committeeUploadBytesWithoutManifest(5000, 3) + MAX_MANIFEST_BYTES);
  });

  it('refuses what it cannot size', () => {
    expect(() => maxUpdateBytes({ encoding: 'bfv-v1', preset: 'bfv-n4096-nope', valueCount: 10 })).toThrow(/unknown parameter preset/);
    expect(() => maxUpdateBytes({ encoding: 'committee-v1', valueCount: 10, committeeSize: 0 })).toThrow(/1-255 custodians/);
    expect(() => maxUpdateBytes({ encoding: 'float32-le', valueCount: 0 })).toThrow(/positive integer/);
    expect(() => maxUpdateBytes({ encoding: 'float16' as 'float32-le', valueCount: 1 })).toThrow(/unknown update encoding float16/);
  });
});
