/**
 * What devices report beside their updates, with real SDK clients
 * (createClient, TF.js training on the cpu backend) against a real
 * coordinator and PostgreSQL:
 * - under differential privacy every update weighs 1; the examples a device
 *   trained on travel beside the weight (UpdateHeader.trained_examples), are
 *   stored, and shown by the REST API;
 * - evaluations are attributed to the model version they evaluate, and after
 *   the last round the devices evaluate the final model.
 */
import { describe, expect, it } from 'vitest';
import { createClient, type RoundReport, type SdkLogger } from '../../client-sdk/src/index.js';
import type { LocalDataset } from '../../client-sdk/src/training/types.js';
import { createTinyTask, pattern, secretOf, startTestCoordinator, waitForRounds } from './helpers.js';

function dataset(count: number, seed: number): LocalDataset {
  const xs = pattern(count * 4, seed);
  const ys = new Float32Array(count * 3);
  for (let i = 0; i < count; i++) ys[i * 3 + (i % 3)] = 1;
  return { xs, ys, count, inputShape: [4], numClasses: 3 };
}

describe('device reports: examples trained on, evaluations of each model version', () => {
  it('the SDK reports and logs the real count, the coordinator stores it and the API shows it', async () => {
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(t.rest, {
      rounds: 2,
      clientsPerRound: 2,
      minClients: 2,
      minAvailableClients: 2,
      privacy: { mode: 'local', epsilonCap: 50, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 1 },
    });
    const counts = [45, 30];
    const logs: Array<Record<string, unknown> & { msg: string }> = [];
    const logger: SdkLogger = { debug: () => {}, info: (obj, msg) => logs.push({ ...obj, msg }), warn: () => {}, error: () => {} };
    const reports: RoundReport[][] = [[], []];
    const summaries = await Promise.all(
      counts.map(async (count, k) => {
        const client = createClient({
          coordinator: t.coordinator.grpcAddress,
          taskId: id,
          credentials: { enrolmentSecret: secretOf(t.coordinator) },
          name: `phone-${k}`,
          logger,
          backend: 'cpu',
          pollWaitMs: 2_000,
        });
        try {
          return await client.run({ data: dataset(count, k + 1), onRound: (r) => reports[k]!.push(r) });
        } finally {
          client.close();
        }
      }),
    );
    expect(summaries.map((s) => s.taskStatus)).toEqual(['TASK_STATUS_COMPLETED', 'TASK_STATUS_COMPLETED']);
    for (const [k, count] of counts.entries()) {
      expect(reports[k]!.map((r) => [r.exampleCount, r.trainedExamples])).toEqual([
        [1, count],
        [1, count],
      ]);
    }
    const submitted = logs.filter((l) => l.msg === 'update submitted');
    expect(submitted.map((l) => [l['weight'], l['trainedExamples']]).sort()).toEqual([
      [1, 30],
      [1, 30],
      [1, 45],
      [1, 45],
    ]);

    const rounds = await waitForRounds(t.rest, id, (rs) => rs.filter((r) => r.state === 'CLOSED').length === 2);
    expect(rounds.map((r) => [r.summary.examples, r.participation.trainedExamples])).toEqual([
      [2, 75],
      [2, 75],
    ]);
    const devices = (await t.rest.request('GET', `/v1/tasks/${id}/devices`)).body.devices;
    expect(devices.map((d: { name: string; trainedExamples: number }) => [d.name, d.trainedExamples]).sort()).toEqual([
      ['phone-0', 90],
      ['phone-1', 60],
    ]);
  });

  it('refuses a trained-examples count beyond the database integer, and stores none of it', async () => {
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    const { joinDevice, grpcStatusOf, sha256Hex, TINY_PARAMETERS } = await import('./helpers.js');
    using device = await joinDevice(t.coordinator, id, 'big');
    const a = await device.nextAssignment();
    const update = pattern(TINY_PARAMETERS, 3).map((x) => x * 0.01);
    const payload = new Uint8Array(update.buffer);
    const refused = await grpcStatusOf(
      device.transport.submitUpdate(device.credential, { roundNumber: a.roundNumber, modelVersion: a.modelVersion, exampleCount: 1, trainedExamples: 3_000_000_000, encoding: 'float32-le', sha256: sha256Hex(payload) }, payload),
    );
    expect(refused).toMatchObject({ code: 3, details: expect.stringMatching(/trainedExamples/) }); // INVALID_ARGUMENT
    expect((await t.rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds[0].participation).toEqual({ selected: 1, submitted: 0, dropped: 0, trainedExamples: null });
  });

  it('after the last round the devices evaluate the final model; evaluations are attributed to the version they evaluate', async () => {
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(t.rest, { rounds: 2, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
    const evalCounts = [20, 12];
    const summaries = await Promise.all(
      [40, 25].map(async (count, k) => {
        const client = createClient({
          coordinator: t.coordinator.grpcAddress,
          taskId: id,
          credentials: { enrolmentSecret: secretOf(t.coordinator) },
          name: `phone-${k}`,
          logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
          backend: 'cpu',
          pollWaitMs: 2_000,
        });
        try {
          return await client.run({ data: dataset(count, k + 1), evalData: dataset(evalCounts[k]!, k + 10) });
        } finally {
          client.close();
        }
      }),
    );
    expect(summaries.map((s) => s.finalEvaluation?.modelVersion)).toEqual([2, 2]);
    const evaluations = (await t.rest.request('GET', `/v1/tasks/${id}/evaluations`)).body.evaluations as Array<{ modelVersion: number; source: string; clients: number; examples: number; metrics: Record<string, number> }>;
    // Rounds 1 and 2 evaluate versions 0 and 1 (what they distributed); the final version 2 is evaluated after the end.
    expect(evaluations.map((e) => [e.modelVersion, e.source, e.clients, e.examples])).toEqual([
      [0, 'round', 2, 32],
      [1, 'round', 2, 32],
      [2, 'final', 2, 32],
    ]);
    // The coordinator's figure is the example-weighted mean of what the devices computed.
    const weighted = (metric: 'accuracy' | 'loss') => summaries.reduce((a, s, k) => a + s.finalEvaluation![metric] * evalCounts[k]!, 0) / 32;
    expect(evaluations[2]!.metrics['loss']).toBeCloseTo(weighted('loss'), 12);
    expect(evaluations[2]!.metrics['accuracy']).toBeCloseTo(weighted('accuracy'), 12);
    // The rounds route keeps each round's own report, labelled with the version it evaluated.
    const rounds = (await t.rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds;
    expect(rounds.map((r: { number: number; evaluation: { modelVersion: number } }) => [r.number, r.evaluation.modelVersion])).toEqual([
      [1, 0],
      [2, 1],
    ]);
  });

  it('refuses a final-model report before the task ends, or for another version', async () => {
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    const { joinDevice, grpcStatusOf } = await import('./helpers.js');
    using device = await joinDevice(t.coordinator, id, 'early');
    const report = (modelVersion: number) => device.transport.reportEvaluation(device.credential, { roundNumber: 0, modelVersion, exampleCount: 5, metrics: { loss: 1 } });
    expect(await grpcStatusOf(report(0))).toMatchObject({ code: 9, details: expect.stringMatching(/once the task has ended; it is RUNNING/) }); // FAILED_PRECONDITION
    const a = await device.nextAssignment();
    await device.submit(a, pattern(15, 2).map((x) => x * 0.01), 3);
    await waitForRounds(t.rest, id, (rs) => rs[0]?.state === 'CLOSED');
    await expect.poll(async () => (await t.rest.request('GET', `/v1/tasks/${id}`)).body.status).toBe('COMPLETED');
    expect(await grpcStatusOf(report(0))).toMatchObject({ code: 9, details: expect.stringMatching(/final model is version 1, not 0/) });
    await report(1);
    expect((await t.rest.request('GET', `/v1/tasks/${id}/evaluations`)).body.evaluations).toEqual([{ modelVersion: 1, source: 'final', clients: 1, examples: 5, metrics: { loss: 1 } }]);
  });
});
