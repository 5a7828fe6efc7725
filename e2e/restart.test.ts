/**
 * End to end: the coordinator process is killed with SIGKILL while a round
 * collects updates, and restarted on the same database, data directory and
 * ports. Every accepted update must be counted exactly once: the new global
 * model must be exactly the FedAvg of the four known updates, which it would
 * not be if an update were lost or folded twice.
 */
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { expect, test } from 'vitest';
import { createSeededRng } from '@veil/cli';
import { ClientError, createGrpcTransport, withRetry } from '@veil/client-sdk';
import { createFederationServiceClient, GRPC_CHANNEL_OPTIONS, float32ToBytes } from '@veil/protocol';
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
import { PARAMETERS, WEIGHT_SPECS, deltaOf, examplesOf, expectedFedAvg, retrying, submit, topology, type Device } from './untrained-devices.js';

const DEVICES = 4;

test('a coordinator killed with SIGKILL during collection resumes the round and counts every update exactly once', async () => {
  assertBuilt();
  const started = performance.now();
  await using database = await createDatabase();
  await using dataDir = await createTempDir('veil-e2e-restart-');
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const settings = { databaseUrl: database.url, dataDir: dataDir.path, grpcPort, httpPort, adminToken: randomSecret(), enrolmentSecret: randomSecret() };
  await using first = await startCoordinatorProcess(settings);
  const rest = createRestClient(first.httpUrl, settings.adminToken);

  const rng = createSeededRng(7);
  const initial = Float32Array.from({ length: PARAMETERS }, () => rng.next() - 0.5);
  const task = await rest.createTask({
    name: 'e2e-restart',
    rounds: 1,
    clientsPerRound: DEVICES,
    minClients: DEVICES,
    minAvailableClients: DEVICES,
    roundDeadlineMs: 600_000,
    training: { epochs: 1, batchSize: 32, learningRate: 0.1 },
    start: true,
    model: { topology: topology('e2e_restart'), weightSpecs: WEIGHT_SPECS, weightsBase64: float32Base64(initial) },
  });

  // Four devices join and long-poll; the fourth makes the round select all of them.
  const devices: Device[] = await Promise.all(
    Array.from({ length: DEVICES }, async (_, index): Promise<Device> => {
      const transport = createGrpcTransport({ address: first.grpcAddress, callTimeoutMs: 10_000 });
      const { credential } = await transport.join({ taskId: task.id, enrolmentSecret: settings.enrolmentSecret, clientName: `e2e-restart-${index}` });
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
  try {
    for (const d of devices) expect(d.assignment).toMatchObject({ roundNumber: 1, modelVersion: 0, maxUpdateBytes: PARAMETERS * 4 });
    const [d0, d1, d2, d3] = devices as [Device, Device, Device, Device];

    // Two updates are acknowledged before the crash.
    expect(await submit(d0)).toEqual({ acceptedCount: 1 });
    expect(await submit(d1)).toEqual({ acceptedCount: 2 });

    // Device 2 starts an upload (header and the first chunk) that the crash cuts off.
    const raw = createFederationServiceClient(first.grpcAddress, grpc.credentials.createInsecure(), GRPC_CHANNEL_OPTIONS);
    const metadata = new grpc.Metadata();
    metadata.set('authorization', `Bearer ${d2.credential}`);
    const cut = new Promise<grpc.ServiceError | null>((resolve) => {
      const call = raw.SubmitUpdate(metadata, (error) => resolve(error));
      call.write({
        header: {
          roundNumber: 1,
          modelVersion: 0,
          exampleCount: examplesOf(2),
          encoding: 'UPDATE_ENCODING_FLOAT32_LE',
          payloadSizeBytes: d2.payload.byteLength,
          payloadSha256: Buffer.from(d2.sha256, 'hex'),
        },
      });
      call.write({ chunk: Buffer.from(d2.payload.subarray(0, 4096)) });
    });
    await new Promise((resolve) => setTimeout(resolve, 500));

    first.child.kill('SIGKILL');
    expect(await exited(first.child)).toEqual({ exitCode: null, signalCode: 'SIGKILL' });
    const cutError = await cut;
    raw.close();
    expect(cutError?.code, 'the cut upload must not be acknowledged').toBe(grpc.status.UNAVAILABLE);

    // What the crash left in PostgreSQL: the two acknowledged updates, nothing of the cut one.
    const participations = (): Promise<Array<{ clientId: string; status: string; exampleCount: number | null }>> =>
      database.query(
        `SELECT p."clientId", p."status"::text AS status, p."exampleCount" FROM "Participation" p JOIN "Round" r ON r.id = p."roundId"
         WHERE r."taskId" = $1 ORDER BY p."exampleCount" NULLS LAST`,
        [task.id],
      );
    expect((await participations()).map((p) => [p.status, p.exampleCount])).toEqual([
      ['SUBMITTED', 10],
      ['SUBMITTED', 20],
      ['SELECTED', null],
      ['SELECTED', null],
    ]);

    // Device 3 submits while the coordinator is down: its client retries on UNAVAILABLE until the restart.
    const unavailable: string[] = [];
    const late = withRetry(() => submit(d3), {
      maxAttempts: 200,
      initialDelayMs: 100,
      maxDelayMs: 500,
      onRetry: (error) => unavailable.push(error.code),
    });
    await using second = await startCoordinatorProcess(settings);
    // The two updates from before the crash count: device 3's is the third.
    expect(await late).toEqual({ acceptedCount: 3 });
    expect(unavailable).toContain('unavailable');

    // Device 0 re-sends its accepted update after the restart: refused, not counted again.
    const resent = await retrying(() => submit(d0)).then(
      () => null,
      (error: unknown) => ClientError.from(error),
    );
    // ... with the code that tells a device whose acknowledgement was lost that this very update counted.
    expect(resent?.code).toBe('already_accepted');
    expect(resent?.message).toMatch(/same payload/);

    // Device 2 re-sends the upload the crash cut: it was never accepted, so it is now, and closes the round.
    expect(await retrying(() => submit(d2))).toEqual({ acceptedCount: 4 });

    const rest2 = createRestClient(second.httpUrl, settings.adminToken);
    const done = await waitFor('the task to complete', async () => {
      const t = await rest2.getTask(task.id);
      return t.status === 'COMPLETED' ? t : undefined;
    }, 30_000);
    expect(done.currentModelVersion).toBe(1);

    // The new global model is exactly initial + Σ n_k Δ_k / Σ n_k (float64 sums, float32 result, as FedAvg computes).
    const totalExamples = devices.reduce((sum, d) => sum + examplesOf(d.index), 0);
    const expected = expectedFedAvg(initial, devices);
    const model = await rest2.modelWeights(task.id);
    expect(model.version).toBe(1);
    expect(model.weights.length).toBe(PARAMETERS);
    const mismatches = expected.reduce((count, value, i) => count + (value === model.weights[i] ? 0 : 1), 0);
    expect(
      mismatches,
      `first value ${model.weights[0]} vs expected ${expected[0]} (initial ${initial[0]}; mean update 3 with all four counted once)`,
    ).toBe(0);

    // The database: four updates recorded once each, one aggregation, the round closed.
    expect((await participations()).map((p) => [p.status, p.exampleCount])).toEqual([
      ['SUBMITTED', 10],
      ['SUBMITTED', 20],
      ['SUBMITTED', 30],
      ['SUBMITTED', 40],
    ]);
    const rounds = await database.query<{ id: string; state: string; receivedCount: number }>(
      `SELECT id, state::text AS state, "receivedCount" FROM "Round" WHERE "taskId" = $1`,
      [task.id],
    );
    expect(rounds).toHaveLength(1);
    expect(rounds[0]).toMatchObject({ state: 'CLOSED', receivedCount: DEVICES });
    const events = await database.query<{ from: string | null; to: string }>(
      `SELECT "from"::text AS "from", "to"::text AS "to" FROM "RoundEvent" WHERE "roundId" = $1 ORDER BY id`,
      [rounds[0]!.id],
    );
    expect(events.map((e) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
    expect(events.filter((e) => e.to === 'AGGREGATING')).toHaveLength(1);

    // And the REST history agrees.
    const [round] = await rest2.listRounds(task.id);
    expect(round).toMatchObject({
      state: 'CLOSED',
      received: DEVICES,
      summary: { participants: DEVICES, dropped: 0, examples: totalExamples, uploadBytes: DEVICES * PARAMETERS * 4, modelVersion: 1 },
    });
    console.info(`restart: round resumed after SIGKILL and closed exactly; ${((performance.now() - started) / 1000).toFixed(1)} s`);
  } catch (error) {
    console.error(`coordinator log (both runs):\n${tail(first.logFile, 60)}`);
    throw error;
  } finally {
    for (const d of devices) d.transport.close();
  }
});
