import { describe, expect, it } from 'vitest';
import { createSequenceRng, type Rng } from '@veil/privacy';
import { VeilError } from '../errors.js';
import { createFedAvgAggregator, rejectUnknownParams, sampleClients } from './fedavg.js';
import { createStrategyRegistry } from './registry.js';
import { withPoissonSampling } from './round-strategy.js';
import type { Strategy, StrategyDefinition, StrategyTaskContext } from './strategy.js';

const plaintextTask: StrategyTaskContext = {
  parameterCount: 4,
  encrypted: false,
  privacy: null,
  selection: { kind: 'count', count: 5 },
  minClients: 2,
};
const encryptedTask: StrategyTaskContext = { ...plaintextTask, encrypted: true };

/** A test strategy that reads individual updates and takes one parameter, `f` (like Krum's). */
const robust: StrategyDefinition = {
  name: 'robust-test',
  create(params) {
    rejectUnknownParams('robust-test', params, ['f']);
    const f = params['f'] ?? 1;
    if (typeof f !== 'number' || !Number.isInteger(f) || f < 0) throw new VeilError('invalid_argument', 'strategy robust-test: f must be a non-negative integer');
    const strategy: Strategy = {
      name: 'robust-test',
      params: { f },
      capabilities: { individualUpdates: true, plaintextAggregate: false },
      validate(task) {
        if (task.selection.kind !== 'count' || task.selection.count <= 2 * f + 2) {
          throw new VeilError('invalid_argument', `strategy robust-test needs clientsPerRound > ${2 * f + 2}`);
        }
      },
      configureFit: (input) => sampleClients(input, { f }),
      createAggregator: ({ parameterCount }) => createFedAvgAggregator(parameterCount),
    };
    return strategy;
  },
};

describe('strategy registry', () => {
  const registry = createStrategyRegistry([robust]);

  it('defaults to fedavg and lists what is registered', () => {
    const strategy = registry.resolve(undefined, plaintextTask);
    expect(strategy.name).toBe('fedavg');
    expect(strategy.params).toEqual({});
    expect(registry.names()).toEqual([
      'bulyan', 'fedadagrad', 'fedadam', 'fedavg', 'fedavgm', 'fedmedian', 'fedprox', 'fedtrimmedavg', 'fedyogi', 'krum', 'multikrum', 'qfedavg', 'robust-test',
    ]);
  });

  it('refuses an unknown strategy, naming the known ones', () => {
    expect(() => registry.resolve({ name: 'fedsgd' }, plaintextTask)).toThrow(/unknown strategy "fedsgd" \(known: bulyan, fedadagrad, fedadam, fedavg, fedavgm, fedmedian, fedprox, fedtrimmedavg, fedyogi, krum, multikrum, qfedavg, robust-test\)/);
    expect(() => registry.resolve({ params: {} }, plaintextTask)).toThrow(/strategy.name must be a string/);
    expect(() => registry.resolve('fedavg', plaintextTask)).toThrow(/must be an object/);
  });

  it("validates parameters with the strategy's own checks and stores the resolved ones", () => {
    expect(() => registry.resolve({ name: 'fedavg', eta: 0.1 }, plaintextTask)).toThrow(/fedavg has no parameter eta \(it takes none\)/);
    expect(() => registry.resolve({ name: 'robust-test', f: -1 }, plaintextTask)).toThrow(/f must be a non-negative integer/);
    const strategy = registry.resolve({ name: 'robust-test' }, plaintextTask);
    expect(strategy.params).toEqual({ f: 1 });
    // A stored spec makes the same strategy again.
    expect(registry.create({ name: 'robust-test', params: strategy.params }).params).toEqual({ f: 1 });
  });

  it("runs the strategy's task validation", () => {
    expect(() => registry.resolve({ name: 'robust-test', f: 2 }, plaintextTask)).toThrow(/needs clientsPerRound > 6/);
  });

  it('refuses a strategy that reads individual updates for an encrypted task, with the reason', () => {
    let error: unknown;
    try {
      registry.resolve({ name: 'robust-test' }, encryptedTask);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(VeilError);
    expect((error as VeilError).code).toBe('invalid_argument');
    expect((error as VeilError).message).toMatch(/robust-test reads individual updates, but an encrypted task's coordinator only holds their encrypted sum/);
    expect(registry.resolve({ name: 'fedavg' }, encryptedTask).name).toBe('fedavg');
  });

  it('refuses a server-optimizer strategy for an encrypted task', () => {
    const optimizer: StrategyDefinition = {
      name: 'optimizer-test',
      create: () => ({ ...registry.create({ name: 'fedavg', params: {} }), name: 'optimizer-test', capabilities: { individualUpdates: false, plaintextAggregate: true } }),
    };
    const withOptimizer = createStrategyRegistry([optimizer]);
    expect(() => withOptimizer.resolve({ name: 'optimizer-test' }, encryptedTask)).toThrow(/updates the model from the aggregate in the clear/);
    expect(withOptimizer.resolve({ name: 'optimizer-test' }, plaintextTask).name).toBe('optimizer-test');
  });

  it('committee tasks: the built-in server optimizers run on the decrypted average, the strategies that read individual updates are refused naming why', () => {
    const committeeTask: StrategyTaskContext = { ...plaintextTask, encrypted: true, committee: true, selection: { kind: 'count', count: 10 } };
    for (const name of ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']) {
      expect(registry.resolve({ name }, committeeTask).name).toBe(name);
    }
    for (const name of ['fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']) {
      expect(() => registry.resolve({ name }, encryptedTask)).toThrow(/updates the model from the aggregate in the clear, but an encrypted task's coordinator only holds the encrypted sum/);
    }
    for (const name of ['qfedavg', 'fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan']) {
      let error: unknown;
      try {
        registry.resolve({ name }, committeeTask);
      } catch (e) {
        error = e;
      }
      expect(error, name).toBeInstanceOf(VeilError);
      expect((error as VeilError).code).toBe('invalid_argument');
      expect((error as VeilError).message).toMatch(new RegExp(`^strategy ${name} reads individual updates, but a committee task's coordinator only ever decrypts the sum of a round's updates`));
      expect(() => registry.resolve({ name }, encryptedTask)).toThrow(/reads individual updates, but an encrypted task's coordinator only holds their encrypted sum/);
    }
  });
});

describe('Poisson selection wrapper (DP tasks)', () => {
  const fixed = (values: number[]) => createSequenceRng(values);
  const input = (rng: Rng, minClients: number, maxCount: number) => ({
    round: 3,
    available: ['a', 'b', 'c', 'd'],
    selection: { kind: 'poisson' as const, samplingRate: 0.5, maxCount },
    minClients,
    training: { epochs: 1, batchSize: 1, learningRate: 0.1 },
    state: null,
    rng,
  });
  const inner = registry();
  function registry(): Strategy {
    return createStrategyRegistry([robust]).create({ name: 'robust-test', params: { f: 1 } });
  }

  it('uses the sample as drawn and passes the inner config through', () => {
    // Draws 0.1, 0.9, 0.2, 0.7 against q = 0.5: a and c are in.
    const plan = withPoissonSampling(inner).configureFit(input(fixed([0.1, 0.9, 0.2, 0.7, 0]), 1, 4));
    expect(plan.kind).toBe('fit');
    if (plan.kind !== 'fit') return;
    expect([...plan.clientIds].sort()).toEqual(['a', 'c']);
    expect(plan.config).toEqual({ f: 1 });
  });

  it('fails the round when the sample is outside [minClients, maxCount] (never re-draws)', () => {
    const draws = fixed([0.1, 0.9, 0.9, 0.9]);
    expect(withPoissonSampling(inner).configureFit(input(draws, 2, 4))).toEqual({
      kind: 'fail',
      reason: 'Poisson sample of 1 clients (q=0.5, 4 available) is outside [2, 4]',
    });
    const all = fixed([0.1]);
    expect(withPoissonSampling(inner).configureFit(input(all, 1, 3))).toEqual({
      kind: 'fail',
      reason: 'Poisson sample of 4 clients (q=0.5, 4 available) is outside [1, 3]',
    });
  });

  it('refuses an inner strategy that changes the sample', () => {
    const greedy: Strategy = { ...inner, configureFit: () => ({ kind: 'fit', clientIds: ['a', 'b', 'c', 'd'], config: {} }) };
    expect(() => withPoissonSampling(greedy).configureFit(input(fixed([0.1, 0.9, 0.2, 0.7]), 1, 4))).toThrow(/changed the Poisson sample/);
  });

  it('leaves count selection to the strategy', () => {
    const plan = withPoissonSampling(inner).configureFit({ ...input(fixed([0.5]), 1, 4), selection: { kind: 'count', count: 3 } });
    expect(plan.kind === 'fit' && plan.clientIds.length).toBe(3);
  });
});
