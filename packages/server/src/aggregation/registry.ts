import { VeilError } from '../errors.js';
import { fedAvgDefinition } from './fedavg.js';
import { encryptedRefusal } from './round-strategy.js';
import { STRATEGY_DEFINITIONS } from './strategies/index.js';
import type { ConfigValue, FitConfig, Strategy, StrategyDefinition, StrategySpec, StrategyTaskContext } from './strategy.js';

/** The strategies every coordinator offers. Register a new one here. */
export const BUILTIN_STRATEGIES: readonly StrategyDefinition[] = [fedAvgDefinition, ...STRATEGY_DEFINITIONS];

/** The strategy of tasks created without one. */
export const DEFAULT_STRATEGY: StrategySpec = { name: 'fedavg', params: {} };

/** Strategies by name: resolves a task's `strategy` input at creation and makes a stored task's strategy again. */
export interface StrategyRegistry {
  /** Registered names, sorted. */
  names(): string[];
  /**
   * Validates a task's `strategy` input (`{ name, ...params }`, or undefined for
   * {@link DEFAULT_STRATEGY}) against the task: the strategy's own parameter
   * checks, its capabilities (e.g. individual updates are refused for
   * encrypted tasks) and its `validate`. Throws `VeilError('invalid_argument')`.
   */
  resolve(input: unknown, task: StrategyTaskContext): Strategy;
  /** Makes a stored task's strategy (its spec was resolved at creation). */
  create(spec: StrategySpec): Strategy;
}

const invalid = (message: string): never => {
  throw new VeilError('invalid_argument', message);
};

/** `definitions`: besides (or replacing, by name) {@link BUILTIN_STRATEGIES}. */
export function createStrategyRegistry(definitions: readonly StrategyDefinition[] = []): StrategyRegistry {
  const byName = new Map<string, StrategyDefinition>();
  for (const definition of [...BUILTIN_STRATEGIES, ...definitions]) byName.set(definition.name, definition);
  const lookup = (name: string): StrategyDefinition =>
    byName.get(name) ?? invalid(`unknown strategy ${JSON.stringify(name)} (known: ${[...byName.keys()].sort().join(', ')})`);
  const make = (spec: StrategySpec): Strategy => {
    const strategy = lookup(spec.name).create(spec.params);
    if (strategy.name !== spec.name) throw new VeilError('internal', `strategy ${spec.name} made a strategy named ${strategy.name}`);
    checkParams(strategy.params, `strategy ${spec.name}`);
    return strategy;
  };
  return {
    names: () => [...byName.keys()].sort(),
    resolve(input, task) {
      if (input === undefined) return make(DEFAULT_STRATEGY);
      if (typeof input !== 'object' || input === null || Array.isArray(input)) invalid('strategy must be an object { name, ...params }');
      const { name, ...params } = input as Record<string, unknown>;
      if (typeof name !== 'string') return invalid('strategy.name must be a string');
      const strategy = make({ name, params: params as StrategySpec['params'] });
      if (task.encrypted) {
        const refusal = encryptedRefusal(strategy, task.committee === true ? 'committee' : 'shared-key');
        if (refusal !== null) invalid(refusal);
      }
      strategy.validate?.(task);
      return strategy;
    },
    create: make,
  };
}

const KEY = /^[A-Za-z0-9_.-]{1,64}$/;

function checkParams(values: Readonly<Record<string, unknown>>, what: string): asserts values is Record<string, ConfigValue> {
  for (const [key, value] of Object.entries(values)) {
    if (!KEY.test(key)) throw new VeilError('internal', `${what}: key ${JSON.stringify(key)} is not 1-64 characters of [A-Za-z0-9_.-]`);
    const ok = typeof value === 'string' || typeof value === 'boolean' || (typeof value === 'number' && Number.isFinite(value));
    if (!ok) throw new VeilError('internal', `${what}: ${key} is not a finite number, a string or a boolean`);
  }
}

/** Checks a fit config before it is stored and sent (keys and values as {@link FitConfig} documents). */
export function checkFitConfig(config: FitConfig, strategy: string): void {
  checkParams(config, `fit config of strategy ${strategy}`);
}
