/**
 * End to end: a `veil server` process on a fresh PostgreSQL database, a task
 * created over REST, and five device processes training the MNIST MLP with
 * TensorFlow.js through the client SDK over gRPC on loopback. The final global
 * model, downloaded over REST, must classify held-out digits it never saw.
 */
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { MNIST_TRAINING_DEFAULTS } from '@veil/cli';
import { readFile } from 'node:fs/promises';
import { decryptGlobalModel, evaluateLocal } from '@veil/client-sdk';
import { COORDINATOR_KEY_FILE, DEVICE_KEY_FILE, generateKeyBundle, writeKeyBundle } from '@veil/crypto';
import { scanProcessMemory, secretKeyNeedles } from './memory-scan.js';
import type { DeviceConfig, DeviceMessage } from './device.js';
import { assertBuilt, createTempDir, float32Base64, setUpMnist, startDeviceProcess, startFederation, tail, withTimeout, type DeviceProcess } from './support.js';

const DEVICES = 5;
const ROUNDS = 5;
/** 784·200 + 200 + 200·200 + 200 + 200·10 + 10 */
const PARAMETERS = 199_210;
/**
 * Test accuracy of the final model on the 2,000 held-out digits. Measured
 * 0.941–0.943 with learning rate 0.1 and 0.952 with the current default 0.2
 * (5 rounds, 5 IID devices × 1,600 digits, 2 local epochs, seed 1); the floor
 * leaves room for TF.js numerics and update arrival order.
 */
const ACCURACY_FLOOR = 0.9;

test('five device processes train MNIST with FedAvg through a coordinator process on PostgreSQL', async () => {
  assertBuilt();
  const started = performance.now();
  await using dataDir = await createTempDir('veil-e2e-federation-');
  await using federation = await startFederation({ dataDir: dataDir.path });
  const { coordinator, rest, adminToken, enrolmentSecret } = federation;

  // Each device gets a file with its own IID share of the 8,000 training digits; the 2,000 others are held out.
  const { tf, spec, initialWeights, heldOut, shards } = await setUpMnist(dataDir.path, { devices: DEVICES });
  // The federation's keys: devices get the secret part, the coordinator only the public part (in the task).
  const keysDir = join(dataDir.path, 'keys');
  const bundle = await generateKeyBundle({ taskId: 'e2e-mnist' });
  await writeKeyBundle(bundle, keysDir);
  const coordinatorKey = JSON.parse(await readFile(join(keysDir, 'coordinator', COORDINATOR_KEY_FILE), 'utf8')) as Record<string, unknown>;
  const task = await rest.createTask({
    name: 'e2e-mnist-fedavg',
    encryption: { mode: 'bfv', coordinatorKey },
    rounds: ROUNDS,
    clientsPerRound: DEVICES,
    minClients: DEVICES,
    minAvailableClients: DEVICES,
    roundDeadlineMs: 240_000,
    training: { ...MNIST_TRAINING_DEFAULTS },
    start: true,
    model: { topology: spec.topology, weightSpecs: spec.weightSpecs, weightsBase64: float32Base64(initialWeights) },
  });
  expect(task).toMatchObject({ status: 'RUNNING', parameterCount: PARAMETERS, currentModelVersion: 0 });

  const devices: DeviceProcess<DeviceMessage>[] = [];
  try {
    for (let index = 0; index < DEVICES; index++) {
      const config: DeviceConfig = {
        coordinator: coordinator.grpcAddress,
        taskId: task.id,
        enrolmentSecret,
        index,
        shard: shards[index]!,
        deviceKeyDir: join(keysDir, 'device'),
      };
      devices.push(startDeviceProcess('device.ts', 'VEIL_E2E_DEVICE', config, join(dataDir.path, `device-${index}.log`)));
    }
    const exits = await withTimeout('the device processes to finish', Promise.all(devices.map((d) => d.exit)), 720_000);
    exits.forEach((status, index) => {
      expect(status, `device ${index} exit status; its log:\n${tail(devices[index]!.logFile)}`).toEqual({ exitCode: 0, signalCode: null });
    });
  } finally {
    await Promise.all(devices.map((d) => d[Symbol.asyncDispose]()));
  }

  // Every device took part in every round, on its whole shard, until the task ended.
  let digits = 0;
  let uploadBytes = 0;
  for (const device of devices) {
    const done = device.messages.find((m) => m.type === 'done');
    expect(done, `device log:\n${tail(device.logFile)}`).toMatchObject({ summary: { rounds: ROUNDS, taskStatus: 'TASK_STATUS_COMPLETED' } });
    const rounds = device.messages.filter((m) => m.type === 'round');
    expect(rounds.map((r) => r.roundNumber)).toEqual([1, 2, 3, 4, 5]);
    // Encrypted uploads: the same size every round, at most 7 bytes per model value (plaintext float32 is 4).
    expect(new Set(rounds.map((r) => r.uploadBytes)).size).toBe(1);
    expect(rounds[0]!.uploadBytes).toBeGreaterThan(PARAMETERS * 4);
    expect(rounds[0]!.uploadBytes).toBeLessThanOrEqual(PARAMETERS * 7);
    uploadBytes = rounds[0]!.uploadBytes;
    digits += done?.type === 'done' ? done.examples : 0;
  }
  expect(digits).toBe(8000);

  // The coordinator's record, over REST: every round closed with all five updates.
  expect(await rest.getTask(task.id)).toMatchObject({ status: 'COMPLETED', currentModelVersion: ROUNDS });
  const rounds = await rest.listRounds(task.id);
  expect(rounds.map((r) => r.number)).toEqual([1, 2, 3, 4, 5]);
  for (const round of rounds) {
    expect(round).toMatchObject({
      state: 'CLOSED',
      failureReason: null,
      baseModelVersion: round.number - 1,
      selected: DEVICES,
      received: DEVICES,
      // Encrypted updates weigh min(examples, weight cap) = 128 each (1,600 digits per device).
      summary: { participants: DEVICES, dropped: 0, examples: DEVICES * 128, uploadBytes: DEVICES * uploadBytes, modelVersion: round.number },
    });
    expect(round.events.map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
  }

  // The coordinator never held the secret key: its process memory holds none of its forms, while it
  // does hold the public fingerprint (a positive control that the scan reads the right memory).
  const scan = await scanProcessMemory(coordinator.child.pid!, [
    ...secretKeyNeedles(bundle.device.secretKey, await readFile(join(keysDir, 'device', DEVICE_KEY_FILE), 'utf8')),
    { name: 'public parameters fingerprint', bytes: Buffer.from(bundle.coordinator.fingerprint) },
  ]);
  expect(scan.bytesScanned).toBeGreaterThan(10_000_000);
  expect(scan.found).toEqual(['public parameters fingerprint']);

  // The stored model versions 1..5 are ciphertext sums; a key holder decrypts the chain.
  const chain = await Promise.all(Array.from({ length: ROUNDS }, (_, v) => modelBytes(coordinator.httpUrl, adminToken, task.id, v + 1)));
  const final = { version: ROUNDS, weights: await decryptGlobalModel({ deviceKey: bundle.device, initial: initialWeights, sums: chain }) };
  expect(final.weights.length).toBe(PARAMETERS);
  const before = await evaluateLocal(tf, { spec, weights: initialWeights, data: heldOut });
  const after = await evaluateLocal(tf, { spec, weights: final.weights, data: heldOut });
  console.info(
    `federation: held-out accuracy ${before.accuracy.toFixed(4)} -> ${after.accuracy.toFixed(4)} on ${after.exampleCount} digits ` +
      `after ${ROUNDS} rounds in ${((performance.now() - started) / 1000).toFixed(1)} s`,
  );
  expect(after.exampleCount).toBe(2000);
  expect(after.accuracy).toBeGreaterThanOrEqual(ACCURACY_FLOOR);
});

async function modelBytes(httpUrl: string, adminToken: string, taskId: string, version: number): Promise<Uint8Array> {
  const response = await fetch(`${httpUrl}/v1/tasks/${taskId}/model/weights.bin?version=${version}`, { headers: { authorization: `Bearer ${adminToken}` } });
  expect(response.status).toBe(200);
  expect(response.headers.get('x-veil-model-encoding')).toBe('bfv-sum-v1');
  return new Uint8Array(await response.arrayBuffer());
}
