import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import { assertFinite, resolveTaskSettings, validateWeightSpecs, type TaskInput } from './task-settings.js';

const base: TaskInput = { name: 't', rounds: 5, clientsPerRound: 10, training: { epochs: 1, batchSize: 32, learningRate: 0.1 } };
/** `base` without a fixed count (selection by fraction or Poisson sampling). */
const { clientsPerRound: _count, ...noCount } = base;

function rejects(input: Partial<TaskInput>, message: RegExp, from: TaskInput = base): void {
  try {
    resolveTaskSettings({ ...from, ...input });
  } catch (error) {
    expect(error).toBeInstanceOf(VeilError);
    expect((error as VeilError).code).toBe('invalid_argument');
    expect((error as VeilError).message).toMatch(message);
    return;
  }
  throw new Error('expected a rejection');
}

describe('task settings', () => {
  it('resolves defaults', () => {
    expect(resolveTaskSettings(base)).toEqual({
      rounds: 5,
      selection: { kind: 'count', count: 10 },
      minClients: 1,
      minAvailableClients: 10,
      roundDeadlineMs: 60_000,
      maxExampleCount: 1_000_000,
      training: { epochs: 1, batchSize: 32, learningRate: 0.1 },
      updateEncoding: 'float32-le',
      updateBound: { norm: 'linf', maxNorm: 1000, onExceed: 'reject' },
      privacy: null,
      strategy: { name: 'fedavg', params: {} },
      maxDevices: 100_000,
    });
  });

  it('caps device identities: default 100 000, never below minAvailableClients', () => {
    expect(resolveTaskSettings({ ...base, maxDevices: 50 }).maxDevices).toBe(50);
    expect(() => resolveTaskSettings({ ...base, maxDevices: 9 })).toThrow(/maxDevices cannot be below minAvailableClients/);
    expect(() => resolveTaskSettings({ ...base, maxDevices: 0 })).toThrow(/maxDevices must be an integer/);
  });

  it('accepts a fraction of available clients', () => {
    const s = resolveTaskSettings({ ...noCount, clientFraction: 0.25, minClients: 3 });
    expect(s.selection).toEqual({ kind: 'fraction', fraction: 0.25 });
    expect(s.minAvailableClients).toBe(3);
  });

  it('refuses impossible settings with a clear message', () => {
    rejects({ rounds: 0 }, /rounds must be an integer/);
    rejects({ minClients: 11 }, /minClients cannot exceed clientsPerRound/);
    rejects({ clientFraction: 0.5 }, /exactly one of clientsPerRound and clientFraction/);
    rejects({ minAvailableClients: 1, minClients: 2 }, /minAvailableClients cannot be below minClients/);
    rejects({ roundDeadlineMs: 5 }, /roundDeadlineMs/);
    rejects({ training: { epochs: 1, batchSize: 32, learningRate: Number.NaN } }, /learningRate/);
    rejects({ training: { epochs: 0, batchSize: 32, learningRate: 0.1 } }, /training.epochs/);
  });

  it('counts parameters from TF.js weight specs and refuses malformed ones', () => {
    expect(validateWeightSpecs([{ name: 'k', shape: [784, 200], dtype: 'float32' }, { name: 'b', shape: [200], dtype: 'float32' }]).parameterCount).toBe(157_000);
    expect(() => validateWeightSpecs([])).toThrow(/non-empty/);
    expect(() => validateWeightSpecs([{ name: 'k', shape: [2, 0], dtype: 'float32' }])).toThrow(/shape/);
    expect(() => validateWeightSpecs([{ name: 'k', shape: [2], dtype: 'int32' }])).toThrow(/float32/);
  });

  it('DP tasks select by Poisson sampling, weigh every update 1, and validate the budget', () => {
    const s = resolveTaskSettings({
      ...base,
      clientsPerRound: 50,
      minClients: 2,
      privacy: { mode: 'local', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1.1, clipNorm: 0.5, samplingRate: 0.1 },
    });
    expect(s.selection).toEqual({ kind: 'poisson', samplingRate: 0.1, maxCount: 50 });
    expect(s.maxExampleCount).toBe(1);
    expect(s.privacy).toMatchObject({ mode: 'local', epsilonCap: 8, delta: 1e-5, ddg: null });
    const dp = { mode: 'local' as const, epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1.1, clipNorm: 0.5, samplingRate: 0.1 };
    rejects({ privacy: { ...dp, delta: 1 } }, /delta/);
    rejects({ privacy: { ...dp, samplingRate: 1.5 } }, /samplingRate/);
    rejects({ privacy: { ...dp, epsilonCap: 0 } }, /epsilonCap/);
    rejects({ clientFraction: 0.5, privacy: dp }, /Poisson/, noCount);
  });

  it('finds non-finite values', () => {
    expect(() => assertFinite(Float32Array.from([1, Number.NaN]), 'update')).toThrow(/non-finite value at index 1/);
    expect(() => assertFinite(Float32Array.from([1, Number.POSITIVE_INFINITY]), 'update')).toThrow(/index 1/);
    expect(() => assertFinite(Float32Array.from([0, 0, Number.NEGATIVE_INFINITY]), 'update')).toThrow(/index 2/);
    // Every NaN bit pattern (signalling, negative, any payload) is caught; the largest finite, subnormals and -0 pass.
    for (const pattern of [0x7fc00000, 0x7f800001, 0xffffffff, 0xff800001, 0x7fbfffff]) {
      const values = new Float32Array(3);
      new Uint32Array(values.buffer)[1] = pattern;
      expect(() => assertFinite(values, 'update')).toThrow(/index 1/);
    }
    const edge = new Float32Array(4);
    new Uint32Array(edge.buffer).set([0x7f7fffff, 0xff7fffff, 0x00000001, 0x80000000]);
    expect(() => assertFinite(edge, 'update')).not.toThrow();
    // A view into a larger buffer is checked at its own offset.
    const buffer = new Float32Array([Number.NaN, 1, 2]);
    expect(() => assertFinite(buffer.subarray(1), 'update')).not.toThrow();
    expect(() => assertFinite(Float32Array.from([1, -2]), 'update')).not.toThrow();
  });
});
