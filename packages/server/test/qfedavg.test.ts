/**
 * q-FedAvg (Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in
 * Federated Learning", ICLR) through the real coordinator: a task created
 * over REST, devices over gRPC on loopback reporting F_k(w_t) with their
 * updates, PostgreSQL, and a coordinator restart in the middle of the round.
 * The expected model is computed here, independently, with the formula of
 * Flower's `QFedAvg.aggregate_fit` (flwr/server/strategy/qfedavg.py) in
 * float64.
 */
import { randomBytes } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { describe, expect, test } from 'vitest';
import { createClient, type LocalDataset, type RoundReport } from '@veil/client-sdk';
import { generateKeyBundle, serializeKeyMaterial } from '@veil/crypto';
import {
  TINY_PARAMETERS,
  TINY_WEIGHT_SPECS,
  toBase64,
  createTestStorage,
  createTinyTask,
  fetchWeights,
  grpcStatusOf,
  joinConnectDevice,
  joinDevices,
  pattern,
  resumeDevice,
  startTestCoordinator,
  tinyTaskBody,
  waitForRounds,
} from './helpers.js';

/**
 * Flower's q-FedAvg step: with L = 1/lr, grads_k = (w − w_k)·L, where w_k = w + Δ_k is the device's model,
 * Δ'_k = (F_k + 1e-10)^q · grads_k, h_k = q (F_k + 1e-10)^(q−1) ‖grads_k‖² + L (F_k + 1e-10)^q,
 * w' = w − Σ Δ'_k / Σ h_k.
 */
function flowerQFedAvg(w: Float32Array, results: { delta: Float32Array; loss: number }[], q: number, lr: number): number[] {
  const deltas: number[][] = [];
  let hSum = 0;
  for (const { delta, loss } of results) {
    const local = Array.from(w, (x, i) => x + delta[i]!);
    const grads = Array.from(w, (x, i) => (x - local[i]!) * (1 / lr));
    const f = loss + 1e-10;
    deltas.push(grads.map((g) => Math.pow(f, q) * g));
    hSum += q * Math.pow(f, q - 1) * grads.reduce((a, g) => a + g * g, 0) + (1 / lr) * Math.pow(f, q);
  }
  return Array.from(w, (x, i) => x - deltas.reduce((a, d) => a + d[i]!, 0) / hSum);
}

describe('q-FedAvg through the coordinator (PostgreSQL)', () => {
  test('devices are asked for their loss and refused without it; the model is q-FedAvg of their updates and losses, across a restart', async () => {
    await using storage = await createTestStorage('postgres');
    const secrets = { adminToken: randomBytes(24).toString('hex'), enrolmentSecret: randomBytes(24).toString('hex') };
    const first = await startTestCoordinator({ storage, ...secrets });
    const q = 2;
    const lr = 0.5;
    const { id: taskId, base, task } = await createTinyTask(first.rest, { rounds: 1, strategy: { name: 'qfedavg', q, learningRate: lr } });
    expect(task.settings.strategy).toEqual({ name: 'qfedavg', params: { q, learningRate: lr } });
    const devices = await joinDevices(first.coordinator, taskId, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    for (const a of assignments) expect(a.config).toEqual({ reportTrainingLoss: true });
    const results = [
      { delta: pattern(TINY_PARAMETERS, 31).map((x) => x * 0.1), loss: 2.5 },
      { delta: pattern(TINY_PARAMETERS, 32).map((x) => x * 0.1), loss: 0.25 },
      { delta: pattern(TINY_PARAMETERS, 33).map((x) => x * 0.1), loss: 1 },
    ];
    // Without its loss, or with one that is not a loss, an update is refused and not counted.
    const missing = await grpcStatusOf(devices[0]!.submit(assignments[0]!, results[0]!.delta, 5));
    expect(missing.code).toBe(status.INVALID_ARGUMENT);
    expect(missing.details).toMatch(/round 1 asks for the training loss/);
    for (const loss of [-1, Number.NaN, Number.POSITIVE_INFINITY]) {
      const bad = await grpcStatusOf(devices[0]!.submit(assignments[0]!, results[0]!.delta, 5, { trainingLoss: loss }));
      expect(bad.code).toBe(status.INVALID_ARGUMENT);
      expect(bad.details).toMatch(/trainingLoss must be a finite number >= 0/);
    }
    expect(await devices[0]!.submit(assignments[0]!, results[0]!.delta, 5, { trainingLoss: results[0]!.loss })).toEqual({ acceptedCount: 1 });
    expect(await devices[1]!.submit(assignments[1]!, results[1]!.delta, 7, { trainingLoss: results[1]!.loss })).toEqual({ acceptedCount: 2 });
    devices[Symbol.dispose]();
    await first.close();

    // The round's aggregate is rebuilt from the store: the accepted losses come back with their updates.
    await using second = await startTestCoordinator({ storage, ...secrets });
    const d3 = await resumeDevice(second.coordinator, devices[2]!);
    try {
      const again = await d3.nextAssignment();
      expect(await d3.submit(again, results[2]!.delta, 9, { trainingLoss: results[2]!.loss })).toEqual({ acceptedCount: 3 });
    } finally {
      d3.close();
    }
    const rounds = await waitForRounds(second.rest, taskId, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ received: 3, summary: { participants: 3, modelVersion: 1 } });
    const expected = flowerQFedAvg(base, results, q, lr);
    const weights = await fetchWeights(second.rest, taskId);
    // The update moves the model (so the check is not vacuous), to q-FedAvg's point, not FedAvg's.
    const fedAvg = Array.from(base, (w, i) => w + results.reduce((a, r, k) => a + [5, 7, 9][k]! * r.delta[i]!, 0) / 21);
    expect(Math.max(...expected.map((x, i) => Math.abs(x - fedAvg[i]!)))).toBeGreaterThan(1e-3);
    for (let i = 0; i < TINY_PARAMETERS; i++) expect(weights[i]).toBeCloseTo(expected[i]!, 5);
  });

  test('over the Connect port (resumable uploads) the loss travels too, and an upload without it is refused at BeginUpload', async () => {
    await using env = await startTestCoordinator({ database: 'postgres' });
    const { id: taskId, base } = await createTinyTask(env.rest, { rounds: 1, strategy: { name: 'qfedavg', q: 0.5, learningRate: 0.2 } });
    const grpcDevices = await joinDevices(env.coordinator, taskId, 2);
    const browser = await joinConnectDevice(env.coordinator, taskId, 'browser');
    try {
      const devices = [...grpcDevices, browser];
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      const results = [0, 1, 2].map((k) => ({ delta: pattern(TINY_PARAMETERS, 41 + k).map((x) => x * 0.05), loss: 0.4 + k }));
      const missing = await browser.submit(assignments[2]!, results[2]!.delta, 3).then(
        () => null,
        (e: unknown) => e as { code?: string; message?: string },
      );
      expect(missing?.code).toBe('invalid_argument');
      expect(missing?.message).toMatch(/asks for the training loss/);
      await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, results[k]!.delta, 3, { trainingLoss: results[k]!.loss })));
      await waitForRounds(env.rest, taskId, (r) => r[0]?.state === 'CLOSED');
      const stored = await env.storage.sql<{ name: string; trainingLoss: number }>(
        `SELECT c.name, p."trainingLoss" FROM "Participation" p JOIN "Client" c ON c.id = p."clientId" WHERE p.status = 'SUBMITTED' ORDER BY c.name`,
      );
      expect(stored.find((s) => s.name === 'browser')?.trainingLoss).toBe(2.4);
      const expected = flowerQFedAvg(base, results, 0.5, 0.2);
      const weights = await fetchWeights(env.rest, taskId);
      for (let i = 0; i < TINY_PARAMETERS; i++) expect(weights[i]).toBeCloseTo(expected[i]!, 5);
    } finally {
      grpcDevices[Symbol.dispose]();
      browser.close();
    }
  });

  test('refuses qfedavg at creation for encrypted and differentially private tasks, and a negative q', async () => {
    await using env = await startTestCoordinator({ database: 'postgres' });
    const key = await generateKeyBundle({ taskId: 'qfedavg-refusal' });
    const encryption = { mode: 'bfv', coordinatorKey: JSON.parse(Buffer.from(serializeKeyMaterial(key.coordinator)).toString('utf8')) };
    const privacy = { mode: 'local', epsilonCap: 50, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 1 };
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ strategy: { name: 'qfedavg' }, encryption }, /qfedavg reads individual updates/],
      [{ strategy: { name: 'qfedavg' }, privacy }, /qfedavg sends each device's training loss/],
      [{ strategy: { name: 'qfedavg', q: -1 } }, /q must be/],
    ];
    for (const [overrides, message] of cases) {
      const response = await env.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), overrides) });
      expect(response.status).toBe(400);
      expect(response.body.message).toMatch(message);
    }
    expect((await env.rest.request('GET', '/v1/tasks')).body.tasks).toHaveLength(0);
  });

  test('SDK devices send F_k(w_t), the cross-entropy of the round model on their training data before training, which the coordinator stores', async () => {
    await using env = await startTestCoordinator({ database: 'postgres' });
    // A softmax layer (4 inputs, 3 classes): its cross-entropy is computed by hand below.
    const topology = { class_name: 'Sequential', config: { name: 'soft', layers: [{ class_name: 'Dense', config: { units: 3, activation: 'softmax', batch_input_shape: [null, 4] } }] } };
    const base = pattern(TINY_PARAMETERS, 5);
    const body = tinyTaskBody(base, {
      rounds: 1,
      start: true,
      strategy: { name: 'qfedavg', q: 1, learningRate: 0.1 },
      model: { topology, weightSpecs: TINY_WEIGHT_SPECS, weightsBase64: toBase64(base) },
    });
    const created = await env.rest.request('POST', '/v1/tasks', { body });
    expect(created.status).toBe(201);
    const taskId = created.body.id as string;
    const datasets = [0, 1, 2].map((k): LocalDataset => {
      const count = 6 + 2 * k;
      const xs = Float32Array.from({ length: count * 4 }, (_, i) => Math.sin(i * 0.7 + k));
      const ys = new Float32Array(count * 3);
      for (let e = 0; e < count; e++) ys[e * 3 + ((e + k) % 3)] = 1;
      return { xs, ys, count, inputShape: [4], numClasses: 3 };
    });
    const silent = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
    const reports: RoundReport[][] = [[], [], []];
    await Promise.all(
      datasets.map(async (data, k) => {
        const client = createClient({
          coordinator: env.coordinator.grpcAddress,
          taskId,
          credentials: { enrolmentSecret: env.coordinator.enrolmentSecret ?? '' },
          name: `sdk-${k}`,
          backend: 'cpu',
          pollWaitMs: 2_000,
          logger: silent,
        });
        try {
          await client.run({ data, maxRounds: 1, onRound: (r) => reports[k]!.push(r) });
        } finally {
          client.close();
        }
      }),
    );
    await waitForRounds(env.rest, taskId, (r) => r[0]?.state === 'CLOSED');
    const stored = await env.storage.sql<{ name: string; trainingLoss: number | null }>(
      `SELECT c.name, p."trainingLoss" FROM "Participation" p JOIN "Client" c ON c.id = p."clientId" WHERE p.status = 'SUBMITTED' ORDER BY c.name`,
    );
    expect(stored.map((s) => s.name)).toEqual(['sdk-0', 'sdk-1', 'sdk-2']);
    for (const [k, data] of datasets.entries()) {
      // Mean of −log softmax(x W + b)[label] over the device's examples, with the round's (initial) weights.
      let sum = 0;
      for (let e = 0; e < data.count; e++) {
        const logits = [0, 1, 2].map((j) => base[12 + j]! + [0, 1, 2, 3].reduce((a, i) => a + data.xs[e * 4 + i]! * base[i * 3 + j]!, 0));
        const max = Math.max(...logits);
        const logSumExp = max + Math.log(logits.reduce((a, z) => a + Math.exp(z - max), 0));
        sum += logSumExp - logits[(e + k) % 3]!;
      }
      const expected = sum / data.count;
      expect(reports[k]).toHaveLength(1);
      expect(reports[k]![0]!.config).toEqual({ reportTrainingLoss: true });
      expect(reports[k]![0]!.trainingLoss).toBeCloseTo(expected, 4);
      // (Stored as float8; the last binary digit may not survive the driver's text round trip.)
      expect(stored[k]!.trainingLoss).toBeCloseTo(reports[k]![0]!.trainingLoss!, 12);
    }
  });
});
