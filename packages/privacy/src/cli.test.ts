import { describe, expect, it } from 'vitest';
import { formatPrivacyResult, parsePrivacyArgs, runPrivacyCommand } from './cli.js';
import { PrivacyError } from './errors.js';

const code = (fn: () => unknown): string => {
  try {
    fn();
  } catch (error) {
    return PrivacyError.from(error).code;
  }
  return 'none';
};

describe('privacy CLI helpers', () => {
  it('parses the epsilon command (both flag styles) and renders JSON', () => {
    const args = parsePrivacyArgs(['epsilon', '--sampling-rate', '0.0025', '--noise-multiplier=1.3', '--rounds', '6000', '--delta', '1e-5', '--json']);
    expect(args).toEqual({ command: 'epsilon', samplingRate: 0.0025, noiseMultiplier: 1.3, rounds: 6000, delta: 1e-5, json: true });
    const out = JSON.parse(formatPrivacyResult(runPrivacyCommand(args), { json: true })) as { epsilon: number; order: number };
    expect(Object.keys(out)).toEqual(['epsilon', 'order']);
    expect(out.epsilon).toBeGreaterThan(0);
  });

  it('parses calibrate and renders {"noiseMultiplier": z} or a human line', () => {
    const args = parsePrivacyArgs(['calibrate', '--target-epsilon', '2', '--delta', '1e-6', '--sampling-rate', '0.01', '--rounds', '1000']);
    expect(args.json).toBe(false);
    const result = runPrivacyCommand(args);
    const json = JSON.parse(formatPrivacyResult(result, { json: true })) as Record<string, number>;
    expect(Object.keys(json)).toEqual(['noiseMultiplier']);
    expect(formatPrivacyResult(result, { json: false })).toMatch(/^noise multiplier = /);
  });

  it('rejects invalid input with clear invalid_argument errors', () => {
    const base = ['--noise-multiplier', '1', '--rounds', '10', '--delta', '1e-5'];
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '0', ...base]))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '1.5', ...base]))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', 'abc', ...base]))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '0.1', '--noise-multiplier', '0', '--rounds', '10', '--delta', '1e-5']))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '0.1', '--noise-multiplier', '1', '--rounds', '2.5', '--delta', '1e-5']))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '0.1', '--noise-multiplier', '1', '--rounds', '10', '--delta', '1']))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '0.1']))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['frobnicate']))).toBe('invalid_argument');
    expect(code(() => parsePrivacyArgs(['epsilon', '--bogus', '1']))).toBe('invalid_argument');
    expect(() => parsePrivacyArgs(['epsilon', '--sampling-rate', '2', ...base])).toThrow(/--sampling-rate must be in \(0, 1\]/);
  });

  it('human epsilon line', () => {
    expect(formatPrivacyResult({ epsilon: 1.23456789, order: 13 }, { json: false })).toBe('epsilon = 1.23457 (optimal RDP order 13)');
    expect(formatPrivacyResult({ epsilon: Infinity, order: 2 }, { json: true })).toBe('{"epsilon":null,"order":2}');
  });
});
