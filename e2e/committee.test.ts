/**
 * End to end in committee mode (issue 11): three `veil custodian serve` processes, an enrolment
 * authority whose key stays in this test process (apart from the coordinator), a `veil server`
 * process holding only its custodian request key, and device processes training the MNIST MLP
 * through the client SDK. No party holds a key that opens one device's update; the coordinator
 * decrypts only each round's aggregate with t = 2 of the 3 custodians' share sums, and the
 * global models it serves are plain float32 that a held-out evaluation checks.
 */
import { randomUUID } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pino } from 'pino';
import { expect, test } from 'vitest';
import { MNIST_TRAINING_DEFAULTS } from '@veil/cli';
import { evaluateLocal, loadGlobalModel } from '@veil/client-sdk';
import { startEnrolmentServer } from '@veil/custodian';
import type { DeviceConfig, DeviceMessage } from './device.js';
import {
  assertBuilt,
  createTempDir,
  float32Base64,
  randomSecret,
  setUpMnist,
  startDeviceProcess,
  startE2eCommittee,
  startFederation,
  tail,
  withTimeout,
  type DeviceProcess,
} from './support.js';

const DEVICES = 3;
const ROUNDS = 3;
const CUSTODIANS = 3;
const PARAMETERS = 199_210;
/** Held-out accuracy floor after 3 rounds of 3 IID devices: measured 0.954 (2026-12-06, seed 1); room for TF.js numerics. */
const ACCURACY_FLOOR = 0.85;

test('device processes train MNIST in committee mode: custodians decrypt only aggregates, models are float32', async () => {
  assertBuilt();
  const started = performance.now();
  await using dataDir = await createTempDir('veil-e2e-committee-');
  // The enrolment authority (its private key never reaches the coordinator), the coordinator's
  // request key and the custodian processes.
  await using committee = await startE2eCommittee(dataDir.path, { custodians: CUSTODIANS, minDevices: DEVICES });
  const { authority } = committee;
  const taskId = randomUUID();
  const { body } = committee.descriptor({ taskId, threshold: 2, minDevices: DEVICES, maxDevices: 100, maxRounds: ROUNDS, encoding: { weightCap: 1 } });
  const enrolmentSecret = randomSecret();
  await using enrolment = await startEnrolmentServer({
    authority,
    enrolmentSecret,
    taskIds: [taskId],
    statePath: join(dataDir.path, 'enrolment.jsonl'),
    logger: pino({ level: 'silent' }),
  });

  await mkdir(join(dataDir.path, 'coordinator'));
  await using federation = await startFederation({ dataDir: join(dataDir.path, 'coordinator'), env: { VEIL_COMMITTEE_REQUEST_KEY: committee.request.secretFile } });
  const { coordinator, rest, adminToken, enrolmentSecret: coordinatorSecret } = federation;

  const { tf, spec, initialWeights, heldOut, shards } = await setUpMnist(dataDir.path, { devices: DEVICES });
  const task = await rest.createTask({
    name: 'e2e-mnist-committee',
    committee: body,
    rounds: ROUNDS,
    clientsPerRound: DEVICES,
    minClients: DEVICES,
    minAvailableClients: DEVICES,
    roundDeadlineMs: 240_000,
    training: { ...MNIST_TRAINING_DEFAULTS },
    start: true,
    model: { topology: spec.topology, weightSpecs: spec.weightSpecs, weightsBase64: float32Base64(initialWeights) },
  } as Parameters<typeof rest.createTask>[0]);
  expect(task).toMatchObject({ id: taskId, status: 'RUNNING', parameterCount: PARAMETERS, encryption: null });

  const { pins } = committee;
  const devices: DeviceProcess<DeviceMessage>[] = [];
  try {
    for (let index = 0; index < DEVICES; index++) {
      const config: DeviceConfig = {
        coordinator: coordinator.grpcAddress,
        taskId,
        enrolmentSecret: coordinatorSecret,
        index,
        shard: shards[index]!,
        committee: { pins, enrolmentUrl: enrolment.url, enrolmentSecret },
      };
      devices.push(startDeviceProcess('device.ts', 'VEIL_E2E_DEVICE', config, join(dataDir.path, `device-${index}.log`)));
    }
    const exits = await withTimeout('the device processes to finish', Promise.all(devices.map((d) => d.exit)), 720_000);
    exits.forEach((status, index) => {
      expect(status, `device ${index} exit status; its log:\n${tail(devices[index]!.logFile)}\ncoordinator:\n${tail(coordinator.logFile)}`).toEqual({ exitCode: 0, signalCode: null });
    });
  } finally {
    await Promise.all(devices.map((d) => d[Symbol.asyncDispose]()));
  }
  for (const device of devices) {
    const rounds = device.messages.filter((m) => m.type === 'round');
    expect(rounds.map((r) => r.roundNumber)).toEqual([1, 2, 3]);
    // c0 at 5.5 bytes per value + 3 sealed shares of 4,144 bytes + the manifest.
    expect(rounds[0]!.uploadBytes).toBeLessThanOrEqual(PARAMETERS * 6 + CUSTODIANS * 8192);
  }
  const rounds = await rest.listRounds(taskId);
  expect(rounds.map((r) => r.state)).toEqual(['CLOSED', 'CLOSED', 'CLOSED']);
  for (const round of rounds) {
    expect((round.summary as { committee?: { deviceCount: number; custodians: number[] } }).committee).toMatchObject({ deviceCount: DEVICES });
  }
  // The served model is a plain float32 model.
  const response = await fetch(`${coordinator.httpUrl}/v1/tasks/${taskId}/model/weights.bin?version=${ROUNDS}`, { headers: { authorization: `Bearer ${adminToken}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get('x-veil-model-encoding')).toBe('float32-le');
  const weights = new Float32Array(await response.arrayBuffer());
  expect(weights.length).toBe(PARAMETERS);
  // The SDK loads the same model as a TF.js model, with no key (the coordinator holds only the aggregate in clear).
  const loaded = await loadGlobalModel(tf, { coordinatorUrl: coordinator.httpUrl, taskId, token: adminToken });
  expect(loaded.version).toBe(ROUNDS);
  expect(loaded.weights).toEqual(weights);
  expect(loaded.model.countParams()).toBe(PARAMETERS);
  loaded.model.dispose();
  const before = await evaluateLocal(tf, { spec, weights: initialWeights, data: heldOut });
  const after = await evaluateLocal(tf, { spec, weights, data: heldOut });
  console.info(`committee federation: held-out accuracy ${before.accuracy.toFixed(4)} -> ${after.accuracy.toFixed(4)} after ${ROUNDS} rounds in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  expect(after.accuracy).toBeGreaterThanOrEqual(ACCURACY_FLOOR);
});
