import { describe, expect, it } from 'vitest';
import { ClientError } from '../errors.js';
import { calibrationFromWire } from './transport.js';

describe('calibrationFromWire', () => {
  const points = [{ name: ':input' }, { name: 'hidden1' }];
  it('decodes a shared-key histogram round: the range sum from grpc-js bytes or Connect base64 alike', () => {
    const sum = Uint8Array.of(0, 1, 2, 250, 251, 255);
    const fromGrpc = calibrationFromWire({ stage: 'histogram', scale: 1, points, rangeSum: sum, bins: 2048, tailFraction: 0.001 });
    const fromConnect = calibrationFromWire({ stage: 'histogram', scale: 1, points, rangeSum: Buffer.from(sum).toString('base64'), bins: 2048, tailFraction: '0.001' });
    for (const c of [fromGrpc, fromConnect]) {
      expect(c).toEqual({
        plan: { round: 'histogram', points: [{ name: ':input', grid: { kind: 'log' } }, { name: 'hidden1', grid: { kind: 'log' } }] },
        scale: 1,
        derive: { rangeSum: sum, bins: 2048, tailFraction: 0.001, rangeScale: 1 },
      });
    }
    // The range round's scale (local DP), as a number or a proto3 JSON string; 0 (absent) reads as 1.
    expect(calibrationFromWire({ stage: 'histogram', scale: 0.1, points, rangeSum: sum, bins: 2048, tailFraction: 0.001, rangeScale: 0.05 })?.derive?.rangeScale).toBe(0.05);
    expect(calibrationFromWire({ stage: 'histogram', scale: 0.1, points, rangeSum: sum, bins: 2048, tailFraction: 0.001, rangeScale: '0.05' })?.derive?.rangeScale).toBe(0.05);
    expect(calibrationFromWire({ stage: 'histogram', scale: 1, points, rangeSum: sum, bins: 2048, tailFraction: 0.001, rangeScale: 0 })?.derive?.rangeScale).toBe(1);
    // URL-safe base64 too; no range sum: an ordinary round without `derive`.
    expect(calibrationFromWire({ stage: 'histogram', scale: 1, points, rangeSum: Buffer.from(sum).toString('base64url'), bins: 256, tailFraction: 0 })?.derive?.rangeSum).toEqual(sum);
    expect(calibrationFromWire({ stage: 'range', scale: 1, points, rangeSum: '' })).toEqual({ plan: { round: 'range', points: [{ name: ':input', grid: { kind: 'log' } }, { name: 'hidden1', grid: { kind: 'log' } }] }, scale: 1 });
  });

  it('refuses a derived plan no device could follow', () => {
    const bad = [
      { stage: 'range', bins: 2048, tailFraction: 0.001 },
      { stage: 'histogram', bins: 100, tailFraction: 0.001 },
      { stage: 'histogram', bins: 2048, tailFraction: 0.5 },
      { stage: 'histogram', bins: 2048, tailFraction: 0.001, rangeScale: -1 },
      { stage: 'histogram', bins: 2048, tailFraction: 0.001, rangeScale: 'x' },
    ];
    for (const b of bad) {
      expect(() => calibrationFromWire({ ...b, scale: 1, points, rangeSum: Uint8Array.of(1) })).toThrow(ClientError);
    }
  });
});
