import { createCalibrationCollector, planRangeRound, statisticsLength } from '@veil/export';
import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import type { PrivacySettings } from '../privacy/settings.js';
import { calibrationRoundConfig, calibrationRounds, calibrationStage, encryptedReportLength, encryptedValueCount, checkCalibrationReport, decodeStatistics, encodeStatistics, readStatistics, reportScale, resolveCalibrationSettings, totalRounds } from './calibration.js';

/** A 4-8-3 MLP in TF.js layers JSON (what tasks store). */
function mlp(hidden = 8) {
  const topology = {
    class_name: 'Sequential',
    config: {
      name: 'm',
      layers: [
        { class_name: 'Dense', config: { name: 'hidden', units: hidden, activation: 'relu', use_bias: true, batch_input_shape: [null, 4] } },
        { class_name: 'Dense', config: { name: 'out', units: 3, activation: 'softmax', use_bias: true } },
      ],
    },
  };
  const weightSpecs = [
    { name: 'hidden/kernel', shape: [4, hidden], dtype: 'float32' },
    { name: 'hidden/bias', shape: [hidden], dtype: 'float32' },
    { name: 'out/kernel', shape: [hidden, 3], dtype: 'float32' },
    { name: 'out/bias', shape: [3], dtype: 'float32' },
  ];
  const count = 4 * hidden + hidden + hidden * 3 + 3;
  return { topology, weightSpecs, weights: new Float32Array(count).fill(0.1), count };
}

const local: PrivacySettings = { mode: 'local', epsilonCap: 10, delta: 1e-5, noiseMultiplier: 1.1, clipNorm: 0.5, samplingRate: 1, distributed: null } as unknown as PrivacySettings;

describe('calibration settings', () => {
  const big = mlp(600); // 600 x 4 + 600 + 1800 + 3 = 4803 parameters: room for 2 points x 2048 bins
  const context: Parameters<typeof resolveCalibrationSettings>[2] = { parameterCount: big.count, privacy: null, sharedKey: false };

  it('resolves defaults against the model: its calibration points, bins that fit its size', () => {
    expect(resolveCalibrationSettings(undefined, big, context)).toBeNull();
    expect(resolveCalibrationSettings(false, big, context)).toBeNull();
    const s = resolveCalibrationSettings(true, big, context)!;
    expect(s).toEqual({ points: [':input', 'hidden'], method: 'percentile', percentile: 99.99, bins: 2048, tailFraction: 0.001 });
    expect(resolveCalibrationSettings({ method: 'kl', bins: 512 }, big, context)).toMatchObject({ method: 'kl', bins: 512 });
  });

  it('refuses what it cannot run, with the reason', () => {
    const refuse = (input: unknown, ctx: Partial<typeof context> & { privacy?: PrivacySettings | null }, model = big) => {
      try {
        resolveCalibrationSettings(input as never, model, { ...context, ...ctx });
      } catch (error) {
        expect(error).toBeInstanceOf(VeilError);
        expect((error as VeilError).code).toBe('invalid_argument');
        return (error as Error).message;
      }
      throw new Error('not refused');
    };
    expect(resolveCalibrationSettings(true, big, { ...context, sharedKey: true })).toMatchObject({ points: [':input', 'hidden'] });
    // Shared key with local DP: accepted (each device noises its report before encrypting it).
    expect(resolveCalibrationSettings(true, big, { ...context, sharedKey: true, privacy: local })).toMatchObject({ points: [':input', 'hidden'] });
    const ddg = { noiseClients: 2, scale: 8192, localStddev: 0.7, dimension: 8192, modulus: 0, roundingBeta: Math.exp(-0.5) };
    // Shared key with distributed DP: accepted (reports DDG-encoded over the padded dimension, as updates).
    expect(resolveCalibrationSettings(true, big, { ...context, sharedKey: true, privacy: { ...local, mode: 'distributed', ddg: { ...ddg, modulus: 2 ** 20 } } as PrivacySettings })).toMatchObject({
      points: [':input', 'hidden'],
    });
    // Distributed DP without encrypted aggregation (no noise share may be seen alone).
    expect(refuse(true, { privacy: { ...local, mode: 'distributed', ddg: { ...ddg, modulus: 2 ** 20 } } as PrivacySettings })).toMatch(/need encrypted aggregation/);
    // In committee mode the committee opens the noisy sum for the coordinator: accepted.
    expect(resolveCalibrationSettings(true, big, { ...context, privacy: { ...local, mode: 'distributed', ddg: { ...ddg, committee: true } } as PrivacySettings })).toMatchObject({ points: [':input', 'hidden'] });
    expect(refuse({ method: 'median' }, {})).toMatch(/method/);
    expect(refuse({ bins: 100 }, {})).toMatch(/bins/);
    expect(refuse({ colour: 1 }, {})).toMatch(/no option colour/);
    const small = mlp(8); // 67 parameters: a range report alone needs 386 values per point
    expect(refuse(true, { parameterCount: small.count }, small)).toMatch(/exceed the model's 67 parameters/);
  });

  it('numbers the calibration rounds after the training rounds', () => {
    const settings = { rounds: 4, calibration: resolveCalibrationSettings(true, big, context) };
    expect(totalRounds(settings)).toBe(6);
    expect([4, 5, 6, 7].map((n) => calibrationStage(n, settings))).toEqual([null, 'range', 'histogram', null]);
    expect(totalRounds({ rounds: 4, calibration: null })).toBe(4);
    expect(calibrationStage(5, { rounds: 4 })).toBeNull();
    // An ended task calibrated afterwards (a budget-exhausted one may have stopped after round 2).
    const late = { rounds: 4, calibration: { ...settings.calibration!, firstRound: 3 } };
    expect(totalRounds(late)).toBe(4);
    expect(calibrationRounds(late)).toEqual({ range: 3, histogram: 4 });
    expect([2, 3, 4, 5].map((n) => calibrationStage(n, late))).toEqual([null, 'range', 'histogram', null]);
    // The histogram round needs a closed range round's plan.
    expect(calibrationRoundConfig('histogram', settings.calibration!, null, null)).toBeNull();
    // Shared key: the range round's outcome is an encrypted sum; the histogram round sends it for the devices to plan from.
    const encrypted = { stage: 'range' as const, modelVersion: 4, statistics: { key: 'k', sha256: 's', sizeBytes: 3, length: 772 }, encrypted: true as const };
    expect(calibrationRoundConfig('histogram', settings.calibration!, null, encrypted)).toBeNull(); // without the sum's bytes
    expect(calibrationRoundConfig('histogram', settings.calibration!, null, encrypted, Uint8Array.of(1, 2, 3))).toEqual({
      plan: { round: 'histogram', points: [{ name: ':input', grid: { kind: 'log' } }, { name: 'hidden', grid: { kind: 'log' } }] },
      scale: 1,
      derive: { rangeSum: 'AQID', bins: 2048, tailFraction: 0.001, rangeScale: 1 },
    });
    // Under local DP both scales are C / sqrt(m): m = points in the histogram round, 2·points in the range round.
    expect(calibrationRoundConfig('histogram', settings.calibration!, local, encrypted, Uint8Array.of(1, 2, 3))).toMatchObject({
      scale: 0.5 / Math.sqrt(2),
      derive: { rangeScale: 0.5 / Math.sqrt(4) },
    });
    expect([encryptedReportLength('range', settings.calibration!), encryptedReportLength('histogram', settings.calibration!)]).toEqual([2 * 386, 2 * 2048]);
    // What the ciphertexts hold: the report, or under shared-key distributed DP the model's padded dimension d.
    const sharedDdg = { ...local, mode: 'distributed', ddg: { noiseClients: 2, scale: 1024, localStddev: 0.3, dimension: 8192, modulus: 2 ** 29, roundingBeta: Math.exp(-0.5) } } as PrivacySettings;
    expect((['range', 'histogram'] as const).map((stage) => encryptedValueCount(stage, settings.calibration!, null))).toEqual([2 * 386, 2 * 2048]);
    expect((['range', 'histogram'] as const).map((stage) => encryptedValueCount(stage, settings.calibration!, local))).toEqual([2 * 386, 2 * 2048]);
    expect((['range', 'histogram'] as const).map((stage) => encryptedValueCount(stage, settings.calibration!, sharedDdg))).toEqual([8192, 8192]);
    expect(calibrationRoundConfig('range', settings.calibration!, null, null)).toEqual({ plan: planRangeRound([':input', 'hidden']), scale: 1 });
  });
});

describe('the DP scale of a report', () => {
  it('puts any frequency report within the clip norm: each part sums to 1, so its L2 norm is at most 1', () => {
    const plan = planRangeRound([':input', 'a', 'b']);
    const scale = reportScale(plan, local);
    expect(scale).toBeCloseTo(0.5 / Math.sqrt(6), 15);
    // The worst case: every part's mass on one bin (norm sqrt(6) before scaling).
    const collector = createCalibrationCollector(plan);
    for (const p of plan.points) collector.add(p.name, new Float32Array([3, 3, 3, 3]), 1);
    const report = collector.finish();
    const norm = Math.hypot(...Array.from(report, (v) => v * scale));
    expect(norm).toBeCloseTo(0.5, 6);
    expect(reportScale(plan, null)).toBe(1);
  });

  it('reads the statistics back from a padded mean in frequency units, and stores them losslessly', () => {
    const plan = planRangeRound(['x']);
    const length = statisticsLength(plan);
    const mean = new Float32Array(length + 10).map((_, i) => (i < length ? 0.25 * (i % 3) : 99));
    const stats = readStatistics(mean, { plan, scale: 0.25 });
    expect(stats).toHaveLength(length);
    expect(stats[1]).toBe(1);
    expect(stats[2]).toBe(2);
    expect(decodeStatistics(encodeStatistics(stats))).toEqual(stats);
  });
});

describe('checking a plaintext report without DP', () => {
  const plan = planRangeRound([':input', 'hidden']);
  const collect = () => {
    const c = createCalibrationCollector(plan);
    c.add(':input', new Float32Array([0, 0.5, 1, 0.25, 0, 0.75]), 2);
    c.add('hidden', new Float32Array([-1, 2, 3, 0.1, 0.2, 0.3]), 2);
    return c.finish();
  };
  const padded = (report: Float32Array, extra = 20) => {
    const out = new Float32Array(report.length + extra);
    out.set(report);
    return out;
  };

  it('accepts what a device computes, padded with zeros', () => {
    expect(() => checkCalibrationReport(padded(collect()), { plan, scale: 1 })).not.toThrow();
  });

  it('refuses a model update, non-zero padding, a negative value, and a part that does not sum to 1', () => {
    const refuse = (values: Float32Array) => {
      try {
        checkCalibrationReport(values, { plan, scale: 1 });
      } catch (error) {
        expect((error as VeilError).code).toBe('invalid_argument');
        return (error as Error).message;
      }
      throw new Error('not refused');
    };
    const update = new Float32Array(statisticsLength(plan) + 20).map((_, i) => 0.01 * Math.sin(i));
    expect(refuse(update)).toMatch(/not a calibration report for this range round/);
    const tail = padded(collect());
    tail[tail.length - 1] = 1e-3;
    expect(refuse(tail)).toMatch(/beyond the report/);
    const negative = padded(collect());
    const k = negative.findIndex((v) => v > 0);
    negative[k] = -negative[k]!;
    expect(refuse(negative)).toMatch(/not a frequency/);
    const half = padded(collect().map((v) => v / 2));
    expect(refuse(half)).toMatch(/sum to 0.5, not 1/);
  });
});
