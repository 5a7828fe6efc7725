import { createHash, randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { committeeDdgParams, committeeRotationSeed, committeeValueCount } from './dp.js';
import { buildTaskDescriptor } from './descriptor.js';

describe('committee DP parameters', () => {
  const descriptor = (dp: { colludingDevices: number; noiseMultiplier: number } | null) =>
    buildTaskDescriptor({
      taskId: 't',
      committee: [1, 2, 3].map(() => ({ address: 'a:1', sealingPublicKey: randomBytes(32), signingPublicKey: randomBytes(32) })),
      threshold: 2,
      minDevices: 12,
      maxRounds: 3,
      encoding: { step: 2 ** -10 },
      dp: dp === null ? null : { mechanism: 'distributed-discrete-gaussian', clipNorm: 0.5, delta: 1e-6, ...dp },
      authorityPublicKey: randomBytes(32),
    });

  it('sizes each share for minDevices - colludingDevices honest shares, never below z·C/√n', () => {
    const p = committeeDdgParams(descriptor({ colludingDevices: 3, noiseMultiplier: 1.1 }), 1000)!;
    expect(p).toMatchObject({ noiseClients: 9, scale: 1024, dimension: 1024, clipNorm: 0.5, noiseMultiplier: 1.1, delta: 1e-6 });
    const exact = (1.1 * 0.5) / 3;
    expect(p.localStddev).toBeGreaterThanOrEqual(exact);
    expect(p.localStddev - exact).toBeLessThan(exact * 1e-11);
    expect(Number(p.localStddev.toPrecision(12))).toBe(p.localStddev);
    expect(committeeValueCount(descriptor({ colludingDevices: 0, noiseMultiplier: 1 }), 1000)).toBe(1024);
    expect(committeeValueCount(descriptor(null), 1000)).toBe(1000);
    expect(committeeDdgParams(descriptor(null), 1000)).toBeNull();
  });

  it('derives the rotation seed as the first 32 bits (LE) of SHA-256("veil/ddg-rotation/v1" || descriptorHash || round u32 BE)', () => {
    const dh = createHash('sha256').update('some descriptor').digest();
    for (const round of [1, 2, 0xffff_ffff]) {
      const r = Buffer.alloc(4);
      r.writeUInt32BE(round);
      const expected = createHash('sha256').update('veil/ddg-rotation/v1').update(dh).update(r).digest().readUInt32LE(0);
      expect(committeeRotationSeed(dh, round)).toBe(expected);
    }
    expect(committeeRotationSeed(dh, 1)).not.toBe(committeeRotationSeed(dh, 2));
  });
});
