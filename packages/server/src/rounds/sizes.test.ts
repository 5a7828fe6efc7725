import { describe, expect, it } from 'vitest';
import { MAX_MANIFEST_BYTES, PARAMETER_PRESETS, committeeUploadBytesWithoutManifest, maxUpdatePayloadBytes } from '@veil/crypto';
import { maxUpdateBytes, updateValueCount } from './sizes.js';
import type { Task } from './model.js';

const task = (over: Partial<Pick<Task, 'parameterCount' | 'encryption' | 'settings'>>): Pick<Task, 'parameterCount' | 'encryption' | 'settings'> => ({
  parameterCount: 5000,
  encryption: null,
  settings: { privacy: null } as Task['settings'],
  ...over,
});
const encryption = (preset: string) => ({ preset }) as Task['encryption'];

describe('update sizes', () => {
  it('plaintext: exactly 4 bytes per parameter', () => {
    expect(maxUpdateBytes(task({}))).toBe(20_000);
    expect(updateValueCount(task({}))).toBe(5000);
  });

  it("encrypted: @veil/crypto's bound for the task's preset, over the padded length in distributed DP", () => {
    const n = PARAMETER_PRESETS['bfv-n2048-q54-t29'].polyModulusDegree;
    expect(maxUpdateBytes(task({ encryption: encryption('bfv-n2048-q54-t29') }))).toBe(maxUpdatePayloadBytes('bfv-n2048-q54-t29', 5000));
    // 5000 values need ceil(5000 / N) ciphertexts; padded to 8192 for the rotation, ceil(8192 / N).
    const ddg = task({ encryption: encryption('bfv-n2048-q44-t29'), settings: { privacy: { ddg: { dimension: 8192 } } } as Task['settings'] });
    expect(updateValueCount(ddg)).toBe(8192);
    expect(maxUpdateBytes(ddg) - maxUpdateBytes(task({ encryption: encryption('bfv-n2048-q44-t29') }))).toBe(
      (Math.ceil(8192 / n) - Math.ceil(5000 / n)) * (4 + n * 8 + 1024),
    );
    expect(() => maxUpdateBytes(task({ encryption: encryption('bfv-unknown') }))).toThrow(/unknown parameter preset/);
  });

  it("committee: the framing for the descriptor's custodians over the padded length, plus the largest manifest", () => {
    const of = (encoding: object) => {
      const descriptor = Buffer.from(JSON.stringify({ committee: [{}, {}, {}], encoding })).toString('base64');
      return task({ settings: { privacy: { ddg: { dimension: 8192 } }, committee: { descriptor, descriptorSignature: '' } } as Task['settings'] });
    };
    expect(maxUpdateBytes(of({ deltaBits: 12 }))).toBe(committeeUploadBytesWithoutManifest(8192, 3) + MAX_MANIFEST_BYTES);
    // A compressed c0 (encoding.c0Bits): 3 bytes per coefficient instead of 5.5.
    const compressed = of({ deltaBits: 25, c0Bits: 24 });
    expect(maxUpdateBytes(compressed)).toBe(committeeUploadBytesWithoutManifest(8192, 3, 24) + MAX_MANIFEST_BYTES);
    expect(maxUpdateBytes(of({ deltaBits: 12 })) - maxUpdateBytes(compressed)).toBe((Math.ceil((8192 + 2) / 2048) * 2048 * (44 - 24)) / 8);
  });
});
