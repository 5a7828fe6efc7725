/**
 * Strategies through the real coordinator: a strategy's fit config reaches
 * the devices (over gRPC, and into the SDK's training and middleware), and
 * a strategy's state across rounds (server momentum) is stored with each
 * model version and survives a restart.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { createClient, type RoundReport } from '../../client-sdk/src/index.js';
import { createFedAvgAggregator, sampleClients, type Strategy, type StrategyDefinition, type StrategyState } from '../src/index.js';
import {
  TINY_PARAMETERS,
  createTestStorage,
  createTinyTask,
  fetchWeights,
  joinDevices,
  listRounds,
  maxAbsDiff,
  pattern,
  resumeDevice,
  secretOf,
  startTestCoordinator,
  waitForRounds,
} from './helpers.js';

const BETA = 0.5;

/**
 * Server momentum (FedAvgM's form, Hsu et al. 2019): m_t = β·m_{t-1} + Δ̄_t,
 * w_{t+1} = w_t + m_t, with Δ̄_t the example-weighted mean update. Its
 * state: the step count and m. Its fit config tells devices the step.
 */
const momentumTest: StrategyDefinition = {
  name: 'momentum-test',
  create(): Strategy {
    return {
      name: 'momentum-test',
      params: {},
      capabilities: { individualUpdates: false, plaintextAggregate: true },
      configureFit: (input) => sampleClients(input, { step: input.state?.scalars['step'] ?? 0, note: `round-${input.round}` }),
      createAggregator({ parameterCount }) {
        const mean = createFedAvgAggregator(parameterCount);
        return {
          add: (result) => mean.add(result),
          get count() {
            return mean.count;
          },
          finish({ round, current, failures, state }) {
            const averaged = mean.finish({ round, current: new Float32Array(parameterCount), failures, state: null });
            if (averaged === null) return null;
            const previous = state?.vectors['m'];
            const m = new Float32Array(parameterCount);
            const next = new Float32Array(parameterCount);
            for (let i = 0; i < parameterCount; i++) {
              m[i] = BETA * (previous?.[i] ?? 0) + averaged.parameters[i]!;
              next[i] = current[i]! + m[i]!;
            }
            const nextState: StrategyState = { scalars: { step: (state?.scalars['step'] ?? 0) + 1 }, vectors: { m } };
            return { parameters: next, state: nextState };
          },
        };
      },
    };
  },
};

/** Example-weighted mean of updates, in float64. */
function mean(updates: ReadonlyArray<{ delta: Float32Array; n: number }>): Float64Array {
  const total = updates.reduce((a, u) => a + u.n, 0);
  const out = new Float64Array(TINY_PARAMETERS);
  for (const u of updates) for (let i = 0; i < TINY_PARAMETERS; i++) out[i]! += (u.n * u.delta[i]!) / total;
  return out;
}

describe('strategies (PostgreSQL)', () => {
  test('server momentum state is stored with each model version and survives a restart; its fit config reaches the devices', async () => {
    await using storage = await createTestStorage('postgres');
    const secrets = { adminToken: randomBytes(24).toString('hex'), enrolmentSecret: randomBytes(24).toString('hex') };
    const first = await startTestCoordinator({ storage, ...secrets, strategies: [momentumTest] });
    const { id: taskId, base, task } = await createTinyTask(first.rest, { rounds: 2, strategy: { name: 'momentum-test' } });
    expect(task.settings.strategy).toEqual({ name: 'momentum-test', params: {} });
    const devices = await joinDevices(first.coordinator, taskId, 3);
    const round1 = [
      { delta: pattern(TINY_PARAMETERS, 31), n: 2 },
      { delta: pattern(TINY_PARAMETERS, 32), n: 6 },
      { delta: pattern(TINY_PARAMETERS, 33), n: 4 },
    ];
    const assignments1 = await Promise.all(devices.map((d) => d.nextAssignment()));
    for (const a of assignments1) expect(a.config).toEqual({ step: 0, note: 'round-1' });
    await Promise.all(devices.map((d, k) => d.submit(assignments1[k]!, round1[k]!.delta, round1[k]!.n)));
    await waitForRounds(first.rest, taskId, (r) => r[0]?.state === 'CLOSED');
    const m1 = mean(round1);
    const w1 = base.map((w, i) => w + m1[i]!);
    expect(maxAbsDiff(await fetchWeights(first.rest, taskId), w1)).toBeLessThan(1e-5);
    devices[Symbol.dispose]();
    await first.close();

    // A new process: the state of model version 1 comes back from the store.
    await using second = await startTestCoordinator({ storage, ...secrets, strategies: [momentumTest] });
    const resumed = await Promise.all(devices.map((d) => resumeDevice(second.coordinator, d)));
    try {
      const round2 = [
        { delta: pattern(TINY_PARAMETERS, 41), n: 5 },
        { delta: pattern(TINY_PARAMETERS, 42), n: 1 },
        { delta: pattern(TINY_PARAMETERS, 43), n: 3 },
      ];
      const assignments2 = await Promise.all(resumed.map((d) => d.nextAssignment()));
      for (const a of assignments2) expect(a.config).toEqual({ step: 1, note: 'round-2' });
      await Promise.all(resumed.map((d, k) => d.submit(assignments2[k]!, round2[k]!.delta, round2[k]!.n)));
      await waitForRounds(second.rest, taskId, (r) => r.length === 2 && r[1]?.state === 'CLOSED');
      // w2 = w1 + (β·m1 + Δ̄2): with the momentum lost at the restart it would be w1 + Δ̄2.
      const d2 = mean(round2);
      const w2 = w1.map((w, i) => w + BETA * m1[i]! + d2[i]!);
      const got = await fetchWeights(second.rest, taskId);
      expect(maxAbsDiff(got, w2)).toBeLessThan(1e-5);
      expect(maxAbsDiff(got, w1.map((w, i) => w + d2[i]!))).toBeGreaterThan(1e-3);
    } finally {
      for (const d of resumed) d.close();
    }
    const versions = await storage.sql<{ version: number; strategyStateDigest: string | null; strategyStateBytes: number | null }>(
      'SELECT version, "strategyStateDigest", "strategyStateBytes" FROM "ModelVersion" WHERE "taskId" = $1 ORDER BY version',
      [taskId],
    );
    expect(versions.map((v) => [v.version, v.strategyStateDigest === null])).toEqual([
      [0, true],
      [1, false],
      [2, false],
    ]);
    const rounds = await listRounds(second.rest, taskId);
    expect(rounds.map((r) => r.state)).toEqual(['CLOSED', 'CLOSED']);
  });

  test("the SDK hands the round's fit config to the middleware and onRound (fitTrainingOptions maps it to training)", async () => {
    const proxTest: StrategyDefinition = {
      name: 'prox-test',
      create: () => ({
        name: 'prox-test',
        params: {},
        capabilities: { individualUpdates: false, plaintextAggregate: false },
        configureFit: (input) => sampleClients(input, { proximalMu: 0.5, tag: `round-${input.round}`, warmStart: true }),
        createAggregator: ({ parameterCount }) => createFedAvgAggregator(parameterCount),
      }),
    };
    await using t = await startTestCoordinator({ strategies: [proxTest] });
    const { id: taskId } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, strategy: { name: 'prox-test' } });
    const seen: Array<RoundReport['config']> = [];
    const reports: RoundReport[] = [];
    const count = 8;
    const client = createClient({
      coordinator: t.coordinator.grpcAddress,
      taskId,
      credentials: { enrolmentSecret: secretOf(t.coordinator) },
      backend: 'cpu',
      logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
      middleware: [
        async (update, ctx, next) => {
          seen.push(ctx.config);
          return next(update, ctx);
        },
      ],
    });
    try {
      const summary = await client.run({
        data: {
          xs: Float32Array.from({ length: count * 4 }, (_, i) => ((i * 7) % 5) / 5),
          ys: Float32Array.from({ length: count * 3 }, (_, i) => (i % 3 === Math.floor(i / 3) % 3 ? 1 : 0)),
          count,
          inputShape: [4],
          numClasses: 3,
        },
        onRound: (r) => reports.push(r),
      });
      expect(summary.taskStatus).toBe('TASK_STATUS_COMPLETED');
    } finally {
      client.close();
    }
    const expected = { proximalMu: 0.5, tag: 'round-1', warmStart: true };
    expect(seen).toEqual([expected]);
    expect(reports.map((r) => r.config)).toEqual([expected]);
  });
});
