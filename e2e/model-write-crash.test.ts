/**
 * End to end, with real processes: the coordinator is killed with SIGKILL at the round end, after
 * the next model's blob was created at its final key (models/<task>/1.bin) and its bytes written,
 * but before they were fsynced and before any commit referenced them (the test-only fault point
 * `model-blob-unsynced`, honoured only under NODE_ENV=test: a real SIGKILL at an exact place).
 * The blob store writes a round's next model in place (no temporary file and rename, so its
 * data and directory fsyncs run concurrently): this is the crash window that creates. A power
 * loss there could leave the file torn; the test tears it by hand (garbage of another length).
 *
 * Restarted on the same database, data directory and ports, the coordinator finds the round
 * COLLECTING with all three updates recorded (the third one's acknowledgement was lost with the
 * process), aggregates again, replaces the torn file and closes the round: model version 1 is
 * exactly the FedAvg of the three updates, the file at the key hashes to the digest the database
 * recorded, the device whose acknowledgement was lost hears "already accepted" on its retry, and
 * the round moved to AGGREGATING once.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { createSeededRng } from '@veil/cli';
import { ClientError, createGrpcTransport } from '@veil/client-sdk';
import { float32ToBytes } from '@veil/protocol';
import {
  assertBuilt,
  createDatabase,
  createRestClient,
  createTempDir,
  exited,
  float32Base64,
  freePorts,
  randomSecret,
  startCoordinatorProcess,
  tail,
  waitFor,
} from './support.js';
import { PARAMETERS, WEIGHT_SPECS, deltaOf, expectedFedAvg, retrying, submit, topology, type Device } from './untrained-devices.js';

const DEVICES = 3;

test('a coordinator killed while the next model is written in place (not yet durable, unreferenced) replaces it after the restart and closes the round exactly', async () => {
  assertBuilt();
  const started = performance.now();
  await using database = await createDatabase();
  await using dataDir = await createTempDir('veil-e2e-model-write-crash-');
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const settings = { databaseUrl: database.url, dataDir: dataDir.path, grpcPort, httpPort, adminToken: randomSecret(), enrolmentSecret: randomSecret() };
  // NODE_ENV=test is what lets the process read VEIL_TEST_FAULT.
  await using first = await startCoordinatorProcess({ ...settings, env: { NODE_ENV: 'test', VEIL_TEST_FAULT: 'model-blob-unsynced' } });
  const rest = createRestClient(first.httpUrl, settings.adminToken);

  const rng = createSeededRng(11);
  const initial = Float32Array.from({ length: PARAMETERS }, () => rng.next() - 0.5);
  const task = await rest.createTask({
    name: 'e2e-model-write-crash',
    rounds: 1,
    clientsPerRound: DEVICES,
    minClients: DEVICES,
    minAvailableClients: DEVICES,
    roundDeadlineMs: 600_000,
    training: { epochs: 1, batchSize: 32, learningRate: 0.1 },
    start: true,
    model: { topology: topology('e2e_model_write_crash'), weightSpecs: WEIGHT_SPECS, weightsBase64: float32Base64(initial) },
  });

  const devices: Device[] = await Promise.all(
    Array.from({ length: DEVICES }, async (_, index): Promise<Device> => {
      const transport = createGrpcTransport({ address: first.grpcAddress, callTimeoutMs: 10_000 });
      const { credential } = await transport.join({ taskId: task.id, enrolmentSecret: settings.enrolmentSecret, clientName: `e2e-model-write-crash-${index}` });
      const assignment = await waitFor(
        `an assignment for device ${index}`,
        async () => {
          const r = await transport.waitForAssignment(credential, 5_000);
          return r.kind === 'assignment' ? r.assignment : undefined;
        },
        60_000,
        0,
      );
      const payload = float32ToBytes(deltaOf(index));
      return { index, transport, credential, assignment, payload, sha256: createHash('sha256').update(payload).digest('hex') };
    }),
  );
  const modelFile = join(dataDir.path, 'blobs', 'models', task.id, '1.bin');
  try {
    const [d0, d1, d2] = devices as [Device, Device, Device];
    expect(await submit(d0)).toEqual({ acceptedCount: 1 });
    expect(await submit(d1)).toEqual({ acceptedCount: 2 });
    // The third update is recorded, the round ends, and the process dies writing model version 1:
    // this upload's acknowledgement never comes.
    const lost = await submit(d2).then(
      () => null,
      (error: unknown) => ClientError.from(error),
    );
    expect(await exited(first.child)).toEqual({ exitCode: null, signalCode: 'SIGKILL' });
    expect(lost?.code, 'the upload whose round end crashed is not acknowledged').toBe('unavailable');

    // What the crash left: the round COLLECTING with three recorded updates, no version 1 in the
    // database, and a file at version 1's key that nothing references.
    const state = async () => ({
      task: (await database.query<{ currentModelVersion: number }>(`SELECT "currentModelVersion" FROM "Task" WHERE id = $1`, [task.id]))[0],
      versions: await database.query<{ version: number; digest: string }>(`SELECT version, digest FROM "ModelVersion" WHERE "taskId" = $1 ORDER BY version`, [task.id]),
      rounds: await database.query<{ id: string; state: string; receivedCount: number }>(`SELECT id, state::text AS state, "receivedCount" FROM "Round" WHERE "taskId" = $1`, [task.id]),
    });
    const crashed = await state();
    expect(crashed.task?.currentModelVersion).toBe(0);
    expect(crashed.versions.map((v) => v.version)).toEqual([0]);
    expect(crashed.rounds).toMatchObject([{ state: 'COLLECTING', receivedCount: DEVICES }]);
    expect((await readFile(modelFile)).byteLength).toBe(PARAMETERS * 4);
    // Torn, as a power loss before its fsync could leave it: other bytes, another length.
    await writeFile(modelFile, Buffer.alloc(PARAMETERS * 4 + 1000, 0x5a));

    await using second = await startCoordinatorProcess(settings);
    const rest2 = createRestClient(second.httpUrl, settings.adminToken);
    const done = await waitFor('the task to complete', async () => {
      const t = await rest2.getTask(task.id);
      return t.status === 'COMPLETED' ? t : undefined;
    }, 30_000);
    expect(done.currentModelVersion).toBe(1);

    const expected = expectedFedAvg(initial, devices);
    const model = await rest2.modelWeights(task.id);
    expect(model.version).toBe(1);
    const mismatches = expected.reduce((count, value, i) => count + (value === model.weights[i] ? 0 : 1), 0);
    expect(mismatches, `first value ${model.weights[0]} vs expected ${expected[0]}`).toBe(0);

    // The file at the key is the new model (the torn bytes replaced, not kept), as the database recorded it.
    const after = await state();
    const v1 = after.versions.find((v) => v.version === 1);
    expect(v1).toBeDefined();
    const onDisk = await readFile(modelFile);
    expect(onDisk.byteLength).toBe(PARAMETERS * 4);
    expect(createHash('sha256').update(onDisk).digest('hex')).toBe(v1!.digest);
    expect(after.rounds).toMatchObject([{ state: 'CLOSED', receivedCount: DEVICES }]);
    const events = await database.query<{ to: string }>(`SELECT "to"::text AS "to" FROM "RoundEvent" WHERE "roundId" = $1 ORDER BY id`, [after.rounds[0]!.id]);
    expect(events.map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
    // Device 2's update counted before the crash (the round closed with it on the restart): its
    // retry is refused, not counted again (the model below is exact).
    const resent = await retrying(() => submit(d2)).then(
      () => null,
      (error: unknown) => ClientError.from(error),
    );
    expect(resent?.code).toBe('failed_precondition');
    console.info(`model-write-crash: the retry of the update whose ack was lost: ${resent?.message}`);

    console.info(`model-write-crash: torn unreferenced model replaced after SIGKILL, round closed exactly; ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    console.error(`coordinator log (both runs):\n${tail(first.logFile, 60)}`);
    throw error;
  } finally {
    for (const d of devices) d.transport.close();
  }
});
