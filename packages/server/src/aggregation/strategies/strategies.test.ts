import { describe, expect, it } from 'vitest';
import { createSequenceRng } from '@veil/privacy';
import { VeilError } from '../../errors.js';
import { createStrategyRegistry } from '../registry.js';
import type { FitResult, Strategy, StrategyState, StrategyTaskContext } from '../strategy.js';
import { adaptiveStep, initialAdaptiveState } from './adaptive-optimizers.js';
import { coordinateMedian, multiKrum } from './robust.js';

const registry = createStrategyRegistry();
const task = (overrides: Partial<StrategyTaskContext> = {}): StrategyTaskContext => ({
  parameterCount: 3,
  encrypted: false,
  privacy: null,
  selection: { kind: 'count', count: 10 },
  minClients: 7,
  ...overrides,
});
const f32 = (...values: number[]) => Float32Array.from(values);
const rng = createSequenceRng([0.5]);

/** Runs one round through the strategy's aggregator, as the round loop does. */
function round(strategy: Strategy, current: Float32Array, results: FitResult[], state: StrategyState | null, roundNumber = 1) {
  const aggregator = strategy.createAggregator({ round: roundNumber, parameterCount: current.length, state });
  for (const result of results) aggregator.add(result);
  expect(aggregator.count).toBe(results.length);
  return aggregator.finish({ round: roundNumber, current, failures: [], state });
}

const results = (...updates: [number, Float32Array][]): FitResult[] =>
  updates.map(([exampleCount, update], k) => ({ clientId: `c${k}`, exampleCount, update }));

describe('server-optimizer strategies on the plaintext aggregate', () => {
  it('fedadam: two rounds equal Algorithm 2 on the example-weighted mean, state carried between rounds', () => {
    const strategy = registry.resolve({ name: 'fedadam', eta: 0.05, tau: 1e-3 }, task());
    expect(strategy.params).toEqual({ eta: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3, biasCorrection: false });
    const w0 = f32(1, 2, 3);
    // Weighted mean of round 1 by hand: (1·[0.3, 0, -0.3] + 3·[0.1, 0.4, 0.1]) / 4 = [0.15, 0.3, 0].
    const first = round(strategy, w0, results([1, f32(0.3, 0, -0.3)], [3, f32(0.1, 0.4, 0.1)]), null)!;
    const expected1 = adaptiveStep('adam', w0, f32(0.15, 0.3, 0), initialAdaptiveState(), { eta: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
    expect(Array.from(first.parameters)).toEqual(Array.from(expected1.next));
    expect(first.state!.scalars).toEqual({ step: 1 });
    const second = round(strategy, first.parameters, results([2, f32(-0.2, 0, 0.2)]), first.state, 2)!;
    const expected2 = adaptiveStep('adam', expected1.next, f32(-0.2, 0, 0.2), expected1.state, { eta: 0.05, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
    expect(Array.from(second.parameters)).toEqual(Array.from(expected2.next));
    expect(second.state!.scalars).toEqual({ step: 2 });
    // Coordinate 0 moved up then back: the momentum m carries round 1 into round 2.
    expect(second.parameters[0]).toBeGreaterThan(w0[0]!);
  });

  it('fedavgm: w - η(β v + g) with the stored velocity', () => {
    const strategy = registry.resolve({ name: 'fedavgm', serverLearningRate: 1, momentum: 0.5 }, task());
    const first = round(strategy, f32(0, 0, 0), results([1, f32(1, 0, 0)], [1, f32(0, 1, 0)]), null)!;
    expect(Array.from(first.parameters)).toEqual([0.5, 0.5, 0]);
    // v1 = [-0.5, -0.5, 0]; round 2 mean Δ = [0, 0, 1]: v2 = [-0.25, -0.25, -1].
    const second = round(strategy, first.parameters, results([5, f32(0, 0, 1)]), first.state)!;
    expect(Array.from(second.parameters)).toEqual([0.75, 0.75, 1]);
  });

  it('fedyogi and fedadagrad resolve with Flower defaults and keep the model without results', () => {
    expect(registry.resolve({ name: 'fedyogi' }, task()).params).toEqual({ eta: 0.01, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
    const adagrad = registry.resolve({ name: 'fedadagrad' }, task());
    expect(adagrad.params).toEqual({ eta: 0.1, beta1: 0, tau: 1e-9 });
    expect(round(adagrad, f32(1, 1, 1), [], null)).toBeNull();
  });

  it('are refused for encrypted tasks at creation, with the reason', () => {
    for (const name of ['fedavgm', 'fedadam', 'fedyogi', 'fedadagrad']) {
      expect(() => registry.resolve({ name }, task({ encrypted: true }))).toThrow(/updates the model from the aggregate in the clear/);
    }
  });

  it('refuse bad parameters with invalid_argument', () => {
    const attempt = (spec: object) => {
      try {
        registry.resolve(spec, task());
      } catch (error) {
        return error;
      }
      return undefined;
    };
    const error = attempt({ name: 'fedadam', beta1: 1 });
    expect(error).toBeInstanceOf(VeilError);
    expect((error as VeilError).code).toBe('invalid_argument');
    expect((error as VeilError).message).toMatch(/fedadam: beta1 must be < 1, got 1/);
    expect(attempt({ name: 'fedadagrad', beta2: 0.5 })).toBeInstanceOf(VeilError);
    expect((attempt({ name: 'fedavgm', momentum: '0.9' }) as Error).message).toMatch(/momentum must be a finite number/);
    expect((attempt({ name: 'fedyogi', tau: 0 }) as Error).message).toMatch(/tau must be > 0/);
  });
});

describe('fedprox', () => {
  it('sends proximalMu to every selected device and aggregates like FedAvg, on encrypted tasks too', () => {
    const strategy = registry.resolve({ name: 'fedprox', proximalMu: 0.1 }, task({ encrypted: true }));
    const plan = strategy.configureFit({
      round: 1, available: ['a', 'b', 'c'], selection: { kind: 'count', count: 2 }, minClients: 2,
      training: { epochs: 1, batchSize: 8, learningRate: 0.1 } as never, state: null, rng,
    });
    expect(plan).toMatchObject({ kind: 'fit', config: { proximalMu: 0.1 } });
    expect(plan.kind === 'fit' && plan.clientIds.length).toBe(2);
    const next = round(strategy, f32(0, 0, 0), results([1, f32(4, 0, 0)], [3, f32(0, 4, 0)]), null)!;
    expect(Array.from(next.parameters)).toEqual([1, 3, 0]);
    expect(registry.resolve({ name: 'fedprox' }, task()).params).toEqual({ proximalMu: 0.01 });
    expect(() => registry.resolve({ name: 'fedprox', proximalMu: -1 }, task())).toThrow(/proximalMu must be >= 0/);
  });
});

describe('robust strategies (plaintext only)', () => {
  const updates = [f32(0, 0, 1), f32(0.1, 0, 1), f32(0.2, 0, 1), f32(0.3, 0, 1), f32(0.4, 0, 1), f32(50, 50, 1), f32(-50, 9, 1)];

  it('fedmedian adds the coordinate-wise median to the model, ignoring example counts', () => {
    const strategy = registry.resolve({ name: 'fedmedian' }, task());
    const next = round(strategy, f32(1, 1, 1), updates.map((u, k) => ({ clientId: String(k), exampleCount: k === 5 ? 1000 : 1, update: u })), null)!;
    expect(next.parameters[0]).toBeCloseTo(1.2, 6);
    expect(next.parameters[1]).toBeCloseTo(1, 6);
    expect(next.parameters[2]).toBeCloseTo(2, 6);
    expect(Array.from(coordinateMedian(updates))).toEqual([Math.fround(0.2), 0, 1]);
  });

  it('multikrum and bulyan drop the attackers; krum picks one update', () => {
    const input = updates.map((u, k) => ({ clientId: String(k), exampleCount: 1, update: u }));
    const multi = registry.resolve({ name: 'multikrum', byzantine: 2, selected: 3 }, task());
    expect(Array.from(round(multi, f32(0, 0, 0), input, null)!.parameters)).toEqual(Array.from(multiKrum(updates, 2, 3)));
    for (const x of round(multi, f32(0, 0, 0), input, null)!.parameters.subarray(0, 2)) expect(Math.abs(x)).toBeLessThan(0.5);
    const krum = registry.resolve({ name: 'krum', byzantine: 2 }, task());
    const chosen = round(krum, f32(0, 0, 0), input, null)!.parameters;
    expect(updates.some((u) => u.every((x, i) => x === chosen[i]))).toBe(true);
    const bulyan = registry.resolve({ name: 'bulyan', byzantine: 1 }, task());
    expect(round(bulyan, f32(0, 0, 0), input, null)!.parameters[0]).toBeCloseTo(0.2, 6);
  });

  it('are refused for encrypted tasks, for minClients below their minimum and past their memory bound', () => {
    for (const name of ['fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan']) {
      expect(() => registry.resolve({ name }, task({ encrypted: true }))).toThrow(/reads individual updates/);
    }
    expect(() => registry.resolve({ name: 'krum', byzantine: 3 }, task())).toThrow(/at least 9 updates: set minClients >= 9 \(it is 7\)/);
    expect(() => registry.resolve({ name: 'bulyan', byzantine: 1 }, task({ minClients: 6 }))).toThrow(/at least 7 updates/);
    expect(() => registry.resolve({ name: 'multikrum', byzantine: 1, selected: 8 }, task())).toThrow(/at least 8 updates/);
    // 10 updates of 10M values (400 MB) exceed 256 MiB.
    expect(() => registry.resolve({ name: 'fedmedian' }, task({ parameterCount: 10_000_000 }))).toThrow(/exceed maxBufferMiB 256 \(at most 6\)/);
    expect(registry.resolve({ name: 'fedmedian', maxBufferMiB: 512 }, task({ parameterCount: 10_000_000 })).name).toBe('fedmedian');
    expect(() => registry.resolve({ name: 'fedtrimmedavg', beta: 0.5 }, task())).toThrow(/beta must be < 0.5/);
    expect(() => registry.resolve({ name: 'krum', selected: 2 }, task())).toThrow(/krum has no parameter selected/);
  });

  it('copy each update when it is added (the loop reuses the memory)', () => {
    const strategy = registry.resolve({ name: 'fedmedian' }, task({ minClients: 1 }));
    const aggregator = strategy.createAggregator({ round: 1, parameterCount: 3, state: null });
    const reused = f32(1, 1, 1);
    aggregator.add({ clientId: 'a', exampleCount: 1, update: reused });
    reused.fill(9);
    aggregator.add({ clientId: 'b', exampleCount: 1, update: reused });
    reused.fill(-9);
    aggregator.add({ clientId: 'c', exampleCount: 1, update: f32(2, 2, 2) });
    expect(Array.from(aggregator.finish({ round: 1, current: f32(0, 0, 0), failures: [], state: null })!.parameters)).toEqual([2, 2, 2]);
  });
});
