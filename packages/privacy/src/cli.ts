import { computeEpsilon, type ComputeEpsilonOptions } from './accounting/accountant.js';
import { calibrateNoiseMultiplier, type CalibrationResult } from './accounting/calibration.js';
import type { EpsilonResult } from './accounting/conversion.js';
import { PrivacyError } from './errors.js';

/** Parsed `epsilon` command. */
export interface EpsilonCommandArgs {
  readonly command: 'epsilon';
  readonly samplingRate: number;
  readonly noiseMultiplier: number;
  readonly rounds: number;
  readonly delta: number;
  readonly json: boolean;
}

/** Parsed `calibrate` command. */
export interface CalibrateCommandArgs {
  readonly command: 'calibrate';
  readonly targetEpsilon: number;
  readonly delta: number;
  readonly samplingRate: number;
  readonly rounds: number;
  readonly json: boolean;
}

/** Result of {@link parsePrivacyArgs}. */
export type PrivacyCommandArgs = EpsilonCommandArgs | CalibrateCommandArgs;

const USAGE =
  'usage: epsilon --sampling-rate Q --noise-multiplier Z --rounds T --delta D [--json]\n' +
  '       calibrate --target-epsilon E --delta D --sampling-rate Q --rounds T [--json]';

const FLAGS = {
  epsilon: ['--sampling-rate', '--noise-multiplier', '--rounds', '--delta'],
  calibrate: ['--target-epsilon', '--delta', '--sampling-rate', '--rounds'],
} as const;

function usageError(message: string, details: Record<string, unknown> = {}): PrivacyError {
  return new PrivacyError('invalid_argument', `${message}\n${USAGE}`, { details });
}

function parseNumber(flag: string, raw: string): number {
  const trimmed = raw.trim();
  const value = trimmed === '' ? Number.NaN : Number(trimmed);
  if (!Number.isFinite(value)) throw usageError(`${flag} expects a number, got "${raw}"`, { flag, value: raw });
  return value;
}

/**
 * Parses the privacy sub-commands (no `process.argv` access: pass the
 * arguments after the program name):
 *
 *   epsilon --sampling-rate Q --noise-multiplier Z --rounds T --delta D [--json]
 *   calibrate --target-epsilon E --delta D --sampling-rate Q --rounds T [--json]
 *
 * Flags accept `--flag value` or `--flag=value`, in any order. Validation:
 * q in (0, 1], z > 0, T a positive integer, δ in (0, 1), E > 0. Throws
 * `PrivacyError('invalid_argument')` with a message naming the flag.
 */
export function parsePrivacyArgs(argv: readonly string[]): PrivacyCommandArgs {
  const [command, ...rest] = argv;
  if (command !== 'epsilon' && command !== 'calibrate') {
    throw usageError(
      command === undefined ? 'missing command' : `unknown command "${command}" (expected "epsilon" or "calibrate")`,
      { command },
    );
  }
  const allowed: readonly string[] = FLAGS[command];
  const values = new Map<string, string>();
  let json = false;
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i] as string;
    if (arg === '--json') {
      json = true;
      continue;
    }
    const eq = arg.indexOf('=');
    const flag = eq >= 0 ? arg.slice(0, eq) : arg;
    if (!allowed.includes(flag)) throw usageError(`unknown option "${flag}" for "${command}"`, { flag });
    if (values.has(flag)) throw usageError(`${flag} given more than once`, { flag });
    let value: string | undefined;
    if (eq >= 0) {
      value = arg.slice(eq + 1);
    } else {
      value = rest[i + 1];
      i++;
    }
    if (value === undefined || (value.startsWith('--') && !/^--?\d/.test(value))) {
      throw usageError(`${flag} requires a value`, { flag });
    }
    values.set(flag, value);
  }
  const missing = allowed.filter((f) => !values.has(f));
  if (missing.length > 0) throw usageError(`missing required option(s): ${missing.join(', ')}`, { missing });
  const get = (flag: string): number => parseNumber(flag, values.get(flag) as string);

  const samplingRate = get('--sampling-rate');
  if (!(samplingRate > 0 && samplingRate <= 1)) {
    throw usageError(`--sampling-rate must be in (0, 1], got ${samplingRate}`, { samplingRate });
  }
  const rounds = get('--rounds');
  if (!(Number.isSafeInteger(rounds) && rounds >= 1)) {
    throw usageError(`--rounds must be a positive integer, got ${values.get('--rounds')}`, { rounds });
  }
  const delta = get('--delta');
  if (!(delta > 0 && delta < 1)) throw usageError(`--delta must be in (0, 1), got ${delta}`, { delta });
  if (command === 'epsilon') {
    const noiseMultiplier = get('--noise-multiplier');
    if (!(noiseMultiplier > 0)) {
      throw usageError(`--noise-multiplier must be > 0, got ${noiseMultiplier}`, { noiseMultiplier });
    }
    return { command, samplingRate, noiseMultiplier, rounds, delta, json };
  }
  const targetEpsilon = get('--target-epsilon');
  if (!(targetEpsilon > 0)) throw usageError(`--target-epsilon must be > 0, got ${targetEpsilon}`, { targetEpsilon });
  return { command, targetEpsilon, delta, samplingRate, rounds, json };
}

/** `veil privacy epsilon`: ε after T rounds (same as `computeEpsilon`). */
export function runEpsilonCommand(options: ComputeEpsilonOptions): EpsilonResult {
  return computeEpsilon(options);
}

/** `veil privacy calibrate`: smallest z meeting the target (same as `calibrateNoiseMultiplier`). */
export function runCalibrateCommand(options: {
  targetEpsilon: number;
  delta: number;
  samplingRate: number;
  rounds: number;
  orders?: readonly number[];
}): CalibrationResult {
  return calibrateNoiseMultiplier(options);
}

/** Result of either command. */
export type PrivacyCommandResult = EpsilonResult | CalibrationResult;

/** Runs a parsed command. */
export function runPrivacyCommand(args: PrivacyCommandArgs): PrivacyCommandResult {
  if (args.command === 'epsilon') {
    const { samplingRate, noiseMultiplier, rounds, delta } = args;
    return runEpsilonCommand({ samplingRate, noiseMultiplier, rounds, delta });
  }
  const { targetEpsilon, delta, samplingRate, rounds } = args;
  return runCalibrateCommand({ targetEpsilon, delta, samplingRate, rounds });
}

const jsonNumber = (x: number): number | null => (Number.isFinite(x) ? x : null);

/**
 * Renders a command result. JSON: `{"epsilon":E,"order":A}` for `epsilon`
 * and `{"noiseMultiplier":Z}` for `calibrate` (non-finite numbers become
 * `null`). Human: one line, e.g. `epsilon = 0.7242 (optimal RDP order 19)`.
 */
export function formatPrivacyResult(result: PrivacyCommandResult, options: { json: boolean }): string {
  if ('noiseMultiplier' in result) {
    if (options.json) return JSON.stringify({ noiseMultiplier: result.noiseMultiplier });
    return `noise multiplier = ${result.noiseMultiplier.toPrecision(6)} (epsilon = ${result.epsilon.toPrecision(6)}, optimal RDP order ${result.order})`;
  }
  if (options.json) return JSON.stringify({ epsilon: jsonNumber(result.epsilon), order: jsonNumber(result.order) });
  const eps = Number.isFinite(result.epsilon) ? result.epsilon.toPrecision(6) : 'infinity';
  return `epsilon = ${eps} (optimal RDP order ${result.order})`;
}
