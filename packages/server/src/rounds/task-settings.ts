import { VeilError } from '../errors.js';
import type { TaskSettings, TrainingSettings, UpdateBound, WeightSpecJson } from './model.js';
import { resolveUpdateBound } from '../aggregation/update-bound.js';
import { resolvePrivacySettings, type PrivacyInput } from '../privacy/settings.js';
import { DEFAULT_STRATEGY } from '../aggregation/registry.js';

/** Task creation input, as the REST API and the CLI accept it. */
export interface TaskInput {
  name: string;
  rounds: number;
  /** Clients per round (exclusive with `clientFraction`). */
  clientsPerRound?: number;
  /** Fraction of available clients per round, in (0, 1] (exclusive with `clientsPerRound`). */
  clientFraction?: number;
  /** Default: 1. */
  minClients?: number;
  /** Default: `clientsPerRound`, or `minClients` with a fraction. */
  minAvailableClients?: number;
  /** Default: 60 000 ms. */
  roundDeadlineMs?: number;
  /** Default: 1 000 000. */
  maxExampleCount?: number;
  training: TrainingSettings;
  /**
   * Differential privacy with an enforced budget. Selection becomes Poisson
   * sampling with `privacy.samplingRate` (clientsPerRound, if given, caps a
   * round's participants), and every update weighs 1 (DP-FedAvg). Default none.
   */
  privacy?: PrivacyInput;
  /**
   * Aggregation strategy, `{ name, ...params }` (e.g. `{ name: 'fedadam', eta: 0.01 }`),
   * validated by the strategy itself against the task when it is created. Default `{ name: 'fedavg' }`.
   */
  strategy?: unknown;
  /** Bound on plaintext updates (norm, maxNorm, clip or reject). Default L∞ 1000, reject. Not for encrypted tasks. */
  updateBound?: UpdateBound;
  /** Device identities (not revoked) the task admits at most. Default {@link DEFAULT_MAX_DEVICES}. */
  maxDevices?: number;
}

/** Default cap on a task's device identities. */
export const DEFAULT_MAX_DEVICES = 100_000;

export const TASK_LIMITS = {
  maxRounds: 100_000,
  maxClientsPerRound: 100_000,
  minDeadlineMs: 100,
  maxDeadlineMs: 7 * 24 * 3600 * 1000,
  maxParameters: 50_000_000,
  maxNameLength: 200,
  maxDevices: 10_000_000,
} as const;

function invalid(message: string): never {
  throw new VeilError('invalid_argument', message);
}

function positiveInt(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
    invalid(`${name} must be an integer from 1 to ${max}`);
  }
  return value;
}

/** Validates the cross-field rules of a task and resolves defaults. */
export function resolveTaskSettings(input: TaskInput): TaskSettings {
  const rounds = positiveInt(input.rounds, 'rounds', TASK_LIMITS.maxRounds);
  if (input.privacy !== undefined) return resolvePrivateTaskSettings(input, rounds);
  if ((input.clientsPerRound === undefined) === (input.clientFraction === undefined)) {
    invalid('give exactly one of clientsPerRound and clientFraction');
  }
  const minClients = positiveInt(input.minClients ?? 1, 'minClients', TASK_LIMITS.maxClientsPerRound);
  let selection: TaskSettings['selection'];
  let defaultAvailable: number;
  if (input.clientsPerRound !== undefined) {
    const count = positiveInt(input.clientsPerRound, 'clientsPerRound', TASK_LIMITS.maxClientsPerRound);
    if (minClients > count) invalid('minClients cannot exceed clientsPerRound');
    selection = { kind: 'count', count };
    defaultAvailable = count;
  } else {
    const fraction = input.clientFraction!;
    if (typeof fraction !== 'number' || !(fraction > 0 && fraction <= 1)) invalid('clientFraction must be in (0, 1]');
    selection = { kind: 'fraction', fraction };
    defaultAvailable = minClients;
  }
  const minAvailableClients = positiveInt(
    input.minAvailableClients ?? defaultAvailable,
    'minAvailableClients',
    TASK_LIMITS.maxClientsPerRound,
  );
  if (minAvailableClients < minClients) invalid('minAvailableClients cannot be below minClients');
  const maxExampleCount = positiveInt(input.maxExampleCount ?? 1_000_000, 'maxExampleCount', 2 ** 31 - 1);
  const { roundDeadlineMs, training } = resolveCommon(input);
  const updateBound = resolveUpdateBound(input.updateBound);
  const maxDevices = resolveMaxDevices(input, minAvailableClients);
  return { rounds, selection, minClients, minAvailableClients, roundDeadlineMs, maxExampleCount, training, updateEncoding: 'float32-le', updateBound, privacy: null, strategy: DEFAULT_STRATEGY, maxDevices };
}

function resolveMaxDevices(input: TaskInput, minAvailableClients: number): number {
  const maxDevices = positiveInt(input.maxDevices ?? DEFAULT_MAX_DEVICES, 'maxDevices', TASK_LIMITS.maxDevices);
  if (maxDevices < minAvailableClients) invalid('maxDevices cannot be below minAvailableClients (no round could ever open)');
  return maxDevices;
}

function resolveCommon(input: TaskInput) {
  const roundDeadlineMs = input.roundDeadlineMs ?? 60_000;
  if (!Number.isInteger(roundDeadlineMs) || roundDeadlineMs < TASK_LIMITS.minDeadlineMs || roundDeadlineMs > TASK_LIMITS.maxDeadlineMs) {
    invalid(`roundDeadlineMs must be an integer from ${TASK_LIMITS.minDeadlineMs} to ${TASK_LIMITS.maxDeadlineMs}`);
  }
  const t = input.training;
  const training: TrainingSettings = {
    epochs: positiveInt(t?.epochs, 'training.epochs', 1000),
    batchSize: positiveInt(t?.batchSize, 'training.batchSize', 1_000_000),
    learningRate: t?.learningRate as number,
  };
  if (typeof training.learningRate !== 'number' || !Number.isFinite(training.learningRate) || training.learningRate <= 0) {
    invalid('training.learningRate must be a positive number');
  }
  return { roundDeadlineMs, training };
}

/** DP tasks: Poisson selection, unit weights, the budget settings. */
function resolvePrivateTaskSettings(input: TaskInput, rounds: number): TaskSettings {
  if (input.clientFraction !== undefined) invalid('DP tasks select by Poisson sampling (privacy.samplingRate); omit clientFraction');
  const minClients = positiveInt(input.minClients ?? 1, 'minClients', TASK_LIMITS.maxClientsPerRound);
  const maxCount = positiveInt(input.clientsPerRound ?? TASK_LIMITS.maxClientsPerRound, 'clientsPerRound', TASK_LIMITS.maxClientsPerRound);
  const minAvailableClients = positiveInt(input.minAvailableClients ?? minClients, 'minAvailableClients', TASK_LIMITS.maxClientsPerRound);
  if (minAvailableClients < minClients) invalid('minAvailableClients cannot be below minClients');
  const privacy = resolvePrivacySettings(input.privacy!, minClients);
  const { roundDeadlineMs, training } = resolveCommon(input);
  return {
    rounds,
    selection: { kind: 'poisson', samplingRate: privacy.samplingRate, maxCount },
    minClients,
    minAvailableClients,
    roundDeadlineMs,
    // DP-FedAvg weighs every device's clipped update equally: sensitivity is the clip norm.
    maxExampleCount: 1,
    training,
    updateEncoding: 'float32-le',
    updateBound: resolveUpdateBound(input.updateBound),
    privacy,
    strategy: DEFAULT_STRATEGY,
    maxDevices: resolveMaxDevices(input, minAvailableClients),
  };
}

/** Checks TF.js weight specs and returns the parameter count. */
export function validateWeightSpecs(specs: unknown): { specs: WeightSpecJson[]; parameterCount: number } {
  if (!Array.isArray(specs) || specs.length === 0) invalid('model.weightSpecs must be a non-empty array');
  let total = 0;
  const out: WeightSpecJson[] = [];
  const names = new Set<string>();
  for (const [i, spec] of specs.entries()) {
    const s = spec as Partial<WeightSpecJson>;
    if (typeof s?.name !== 'string' || s.name.length === 0) invalid(`model.weightSpecs[${i}].name must be a string`);
    // TF.js maps weights to layers by name: a repeated name would load the wrong tensor.
    if (names.has(s.name)) invalid(`model.weightSpecs[${i}].name ${JSON.stringify(s.name.slice(0, 80))} is used twice; tensor names must be unique`);
    names.add(s.name);
    if (s.dtype !== 'float32') invalid(`model.weightSpecs[${i}].dtype must be float32`);
    if (!Array.isArray(s.shape) || !s.shape.every((d) => Number.isInteger(d) && d > 0)) {
      invalid(`model.weightSpecs[${i}].shape must be positive integers`);
    }
    total += s.shape.reduce((a, b) => a * b, 1);
    if (total > TASK_LIMITS.maxParameters) invalid(`model has more than ${TASK_LIMITS.maxParameters} parameters`);
    out.push({ name: s.name, shape: [...s.shape], dtype: 'float32' });
  }
  return { specs: out, parameterCount: total };
}

/** Checks that every value is finite (no NaN or ±Infinity). */
export function assertFinite(values: Float32Array, what: string): void {
  const i = firstNonFinite(values);
  if (i >= 0) invalid(`${what} contains a non-finite value at index ${i}`);
}

/**
 * Index of the first NaN or ±Infinity in `values`, or -1. IEEE 754 binary32:
 * those are exactly the values whose 8 exponent bits are all ones, so the test
 * reads the bits through an Int32 view (several times faster than
 * Number.isFinite on every float). The loop bound is a local and the loop
 * calls nothing: once any ArrayBuffer in the process has been detached (a
 * WebAssembly memory growing does that, e.g. node-seal's), V8 re-checks a
 * typed array's length on every `.length` read, which made the same loop
 * about four times slower in the coordinator.
 */
function firstNonFinite(values: Float32Array): number {
  const bits = new Int32Array(values.buffer, values.byteOffset, values.length);
  const n = bits.length;
  for (let i = 0; i < n; i++) {
    if ((bits[i]! & 0x7f800000) === 0x7f800000) return i;
  }
  return -1;
}
