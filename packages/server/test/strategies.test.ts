/**
 * The registered strategies through the real coordinator: tasks created over
 * REST with `strategy: { name, ...params }`, devices over gRPC on loopback,
 * PostgreSQL. The expected models are computed here, independently, from the
 * updates the devices sent.
 */
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { generateKeyBundle, serializeKeyMaterial, type KeyBundle } from '@veil/crypto';
import {
  TINY_PARAMETERS,
  createTinyTask,
  fetchWeights,
  joinDevices,
  pattern,
  startTestCoordinator,
  tinyTaskBody,
  waitForRounds,
  type TestCoordinator,
} from './helpers.js';

const publicKeyJson = (bundle: KeyBundle): unknown => JSON.parse(Buffer.from(serializeKeyMaterial(bundle.coordinator)).toString('utf8'));

/** Index of the Krum choice (Blanchard et al. 2017), by its definition: least sum of squared distances to the n − f − 2 nearest. */
function krumChoice(updates: Float32Array[], f: number): number {
  const scores = updates.map((u, i) => {
    const distances = updates.filter((_, j) => j !== i).map((v) => u.reduce((s, x, k) => s + (x - v[k]!) ** 2, 0)).sort((a, b) => a - b);
    return distances.slice(0, updates.length - f - 2).reduce((a, b) => a + b, 0);
  });
  return scores.indexOf(Math.min(...scores));
}

describe('strategies through the coordinator (postgres)', () => {
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({ database: 'postgres' });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('krum: five devices over gRPC, one attacker; the new model is the base plus the update Krum picks', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base, task } = await createTinyTask(rest, {
      rounds: 1, clientsPerRound: 5, minClients: 5, minAvailableClients: 5, strategy: { name: 'krum', byzantine: 1 },
    });
    expect(task.settings.strategy).toEqual({ name: 'krum', params: { byzantine: 1, maxBufferMiB: 256 } });
    using devices = await joinDevices(coordinator, taskId, 5);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    // Four honest updates close together, one attacker far away with a large example count.
    const honest = pattern(TINY_PARAMETERS, 2).map((x) => x * 0.1);
    const updates = devices.map((_, k) =>
      k === 4 ? pattern(TINY_PARAMETERS, 9).map((x) => x * 50) : honest.map((x, i) => x + 0.01 * Math.sin(k * 3.1 + i)),
    );
    await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, updates[k]!, k === 4 ? 1000 : 10)));
    const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0].summary).toMatchObject({ participants: 5, modelVersion: 1 });
    const chosen = krumChoice(updates, 1);
    expect(chosen).not.toBe(4);
    const weights = await fetchWeights(rest, taskId);
    expect(Array.from(weights)).toEqual(Array.from(base, (w, i) => Math.fround(w + updates[chosen]![i]!)));
  });

  test('fedmedian: the new model is the base plus the coordinate-wise median, whatever the example counts', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, strategy: { name: 'fedmedian' } });
    using devices = await joinDevices(coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const updates = [pattern(TINY_PARAMETERS, 2), pattern(TINY_PARAMETERS, 3), pattern(TINY_PARAMETERS, 4).map((x) => x * 100)];
    await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, updates[k]!, k === 2 ? 1000 : 1)));
    await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    const median = (i: number) => updates.map((u) => u[i]!).sort((a, b) => a - b)[1]!;
    expect(Array.from(await fetchWeights(rest, taskId))).toEqual(Array.from(base, (w, i) => Math.fround(w + median(i))));
  });

  test('fedadam: two rounds over gRPC, its moments carried by the stored strategy state (Reddi et al. 2021, Alg. 2)', async () => {
    const { coordinator, rest } = env;
    const o = { eta: 0.05, beta1: 0.9, beta2: 0.99, tau: 0.01 };
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 2, strategy: { name: 'fedadam', ...o } });
    using devices = await joinDevices(coordinator, taskId, 3);
    // Reference: Algorithm 2 written out here in float64 (m, v from 0 and τ²), on the example-weighted mean update.
    const w = Array.from(base, Number);
    const m = w.map(() => 0);
    const v = w.map(() => o.tau * o.tau);
    const withoutState = w.slice();
    for (const [round, seeds] of [[1, [2, 3, 4]], [2, [5, 6, 7]]] as const) {
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      for (const a of assignments) expect(a).toMatchObject({ roundNumber: round, config: {} });
      const updates = seeds.map((seed, k) => ({ delta: pattern(TINY_PARAMETERS, seed).map((x) => x * 0.1), n: 3 + 4 * k }));
      await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, updates[k]!.delta, updates[k]!.n)));
      await waitForRounds(rest, taskId, (r) => r[round - 1]?.state === 'CLOSED');
      const total = updates.reduce((a, u) => a + u.n, 0);
      for (let i = 0; i < w.length; i++) {
        const delta = updates.reduce((a, u) => a + u.n * u.delta[i]!, 0) / total;
        // The same step from fresh moments (what a strategy that lost its state would take).
        const mFresh = (1 - o.beta1) * delta;
        withoutState[i] = w[i]! + (o.eta * mFresh) / (Math.sqrt(o.beta2 * o.tau * o.tau + (1 - o.beta2) * delta * delta) + o.tau);
        m[i] = o.beta1 * m[i]! + (1 - o.beta1) * delta;
        v[i] = o.beta2 * v[i]! + (1 - o.beta2) * delta * delta;
        w[i] = w[i]! + (o.eta * m[i]!) / (Math.sqrt(v[i]!) + o.tau);
      }
      const weights = await fetchWeights(rest, taskId);
      let maxError = 0;
      for (let i = 0; i < w.length; i++) maxError = Math.max(maxError, Math.abs(weights[i]! - w[i]!));
      expect(maxError).toBeLessThan(1e-5);
    }
    // Round 2 used round 1's moments: from fresh moments the model would differ.
    expect(withoutState.some((x, i) => Math.abs(x - w[i]!) > 1e-3)).toBe(true);
  });

  test('fedprox: every selected device receives proximalMu in its assignment config; the model is FedAvg', async () => {
    const { coordinator, rest } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, strategy: { name: 'fedprox', proximalMu: 0.25 } });
    using devices = await joinDevices(coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    for (const a of assignments) expect(a.config).toEqual({ proximalMu: 0.25 });
    const updates = [2, 3, 4].map((seed, k) => ({ delta: pattern(TINY_PARAMETERS, seed), n: 1 + k }));
    await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, updates[k]!.delta, updates[k]!.n)));
    await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
    const weights = await fetchWeights(rest, taskId);
    for (let i = 0; i < base.length; i++) {
      expect(weights[i]).toBeCloseTo(base[i]! + updates.reduce((a, u) => a + u.n * u.delta[i]!, 0) / 6, 6);
    }
  });

  test('refuses at creation, with the reason and nothing stored: server optimizers and robust rules on encrypted tasks, Krum below 2f + 3', async () => {
    const { rest } = env;
    const before = (await rest.request('GET', '/v1/tasks')).body.tasks.length;
    const key = await generateKeyBundle({ taskId: 'strategies-refusal' });
    const encryption = { mode: 'bfv', coordinatorKey: publicKeyJson(key) };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ strategy: { name: 'fedadam', eta: 0.01 }, encryption }, /fedadam updates the model from the aggregate in the clear/],
      [{ strategy: { name: 'bulyan' }, encryption }, /bulyan reads individual updates/],
      [{ strategy: { name: 'krum', byzantine: 1 } }, /krum needs every round to close with at least 5 updates: set minClients >= 5 \(it is 3\)/],
      [{ strategy: { name: 'fedyogi', beta2: 1 } }, /fedyogi: beta2 must be < 1/],
    ];
    for (const [overrides, message] of cases) {
      const response = await rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), overrides) });
      expect(response.status).toBe(400);
      expect(response.body.code).toBe('invalid_argument');
      expect(response.body.message).toMatch(message);
    }
    expect((await rest.request('GET', '/v1/tasks')).body.tasks).toHaveLength(before);
    // FedProx aggregates a weighted sum: an encrypted task takes it.
    const fedprox = await rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { strategy: { name: 'fedprox', proximalMu: 0.1 }, encryption }) });
    expect(fedprox.status).toBe(201);
    expect(fedprox.body.settings.strategy).toEqual({ name: 'fedprox', params: { proximalMu: 0.1 } });
  });
});
