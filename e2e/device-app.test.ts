/**
 * End to end: examples/device-app (through its start.mjs entry) against a
 * `veil server` process, on a task with shared-key encryption and local
 * differential privacy. The device is killed after its first round and started
 * again: it resumes with its stored credential and its restored privacy spend,
 * so the task completes and the DP state file counts every participation.
 */
import { spawn } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { expect, test } from 'vitest';
import { createMnistMlp, loadMnist } from '@veil/cli';
import { initTensorflow, taskModelBodyFromSpec } from '@veil/client-sdk';
import { COORDINATOR_KEY_FILE, generateKeyBundle, writeKeyBundle } from '@veil/crypto';
import {
  assertBuilt,
  childEnv,
  createDatabase,
  createRestClient,
  createTempDir,
  exited,
  freePorts,
  randomSecret,
  REPO_ROOT,
  startCoordinatorProcess,
  withTimeout,
} from './support.js';

const ROUNDS = 3;

test('the example device app runs an encrypted local-DP task across a restart, keeping its credential and DP spend', async () => {
  assertBuilt();
  await using database = await createDatabase();
  await using dir = await createTempDir('veil-e2e-device-app-');
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const adminToken = randomSecret();
  const enrolmentSecret = randomSecret();
  await using coordinator = await startCoordinatorProcess({ databaseUrl: database.url, dataDir: dir.path, grpcPort, httpPort, adminToken, enrolmentSecret });
  const rest = createRestClient(coordinator.httpUrl, adminToken);

  const keysDir = join(dir.path, 'keys');
  await writeKeyBundle(await generateKeyBundle({ taskId: 'device-app' }), keysDir);
  const coordinatorKey = JSON.parse(await readFile(join(keysDir, 'coordinator', COORDINATOR_KEY_FILE), 'utf8')) as Record<string, unknown>;
  const { tf } = await initTensorflow({ preferred: 'wasm' });
  const { spec, weights } = createMnistMlp(tf, { seed: 1, hidden: [] });
  const task = await rest.createTask({
    name: 'device-app',
    rounds: ROUNDS,
    clientsPerRound: 1,
    minClients: 1,
    minAvailableClients: 1,
    roundDeadlineMs: 60_000,
    training: { epochs: 1, batchSize: 16, learningRate: 0.1 },
    encryption: { mode: 'bfv', coordinatorKey },
    privacy: { mode: 'local', epsilonCap: 50, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 1 },
    start: true,
    model: taskModelBodyFromSpec(spec, weights),
  });

  const { train } = loadMnist({ trainCount: 300, testCount: 1 });
  const xs: number[][] = [];
  const ys: number[] = [];
  for (let i = 0; i < train.count; i++) {
    xs.push(Array.from(train.xs.subarray(i * 784, (i + 1) * 784)));
    ys.push(train.ys.subarray(i * 10, (i + 1) * 10).indexOf(1));
  }
  const dataFile = join(dir.path, 'digits.json');
  await writeFile(dataFile, JSON.stringify({ inputShape: [784], numClasses: 10, xs, ys }));
  const dpState = join(dir.path, 'dp.json');
  const args = [
    join(REPO_ROOT, 'examples/device-app/start.mjs'),
    '--coordinator', coordinator.grpcAddress,
    '--task', task.id,
    // The `=` form: a base64url secret may start with '-', which parseArgs would take for an option.
    `--secret=${enrolmentSecret}`,
    '--data', dataFile,
    '--device-key', join(keysDir, 'device'),
    '--dp-state', dpState,
    '--credential-file', join(dir.path, 'credential.json'),
  ];
  const start = (stopAfterFirstRound: boolean) => {
    const child = spawn(process.execPath, args, { cwd: dir.path, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: string[] = [];
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    createInterface({ input: child.stdout! }).on('line', (line) => {
      lines.push(line);
      if (stopAfterFirstRound && line.startsWith('round ')) child.kill('SIGKILL');
    });
    return { lines, exit: exited(child), stderr: () => stderr };
  };

  const first = start(true);
  await withTimeout('the first run to stop after a round', first.exit, 120_000);
  expect(first.lines.filter((l) => l.startsWith('round ')), first.stderr()).toHaveLength(1);
  expect(first.lines[0]).toMatch(/^round 1: .*epsilon spent [0-9.]+ of 50 \(delta 0\.00001\)$/);
  expect((JSON.parse(await readFile(dpState, 'utf8')) as { participations: number[] }).participations).toEqual([1]);

  const second = start(false);
  const status = await withTimeout('the second run to finish the task', second.exit, 180_000);
  expect(status, second.stderr()).toEqual({ exitCode: 0, signalCode: null });
  const rounds = second.lines.filter((l) => l.startsWith('round '));
  expect(rounds.map((l) => Number(/^round (\d+)/.exec(l)![1]))).toEqual([2, 3]);
  expect(second.lines.at(-1)).toBe(`task TASK_STATUS_COMPLETED after ${ROUNDS - 1} rounds`);
  // The restored spend: after the restart the device counts round 1's release too.
  const spent = (line: string): number => Number(/epsilon spent ([0-9.]+)/.exec(line)![1]);
  expect(spent(rounds[0]!)).toBeGreaterThan(spent(first.lines[0]!));
  expect((JSON.parse(await readFile(dpState, 'utf8')) as { participations: number[] }).participations).toEqual([1, 1, 1]);
  // The coordinator accepted the device's encrypted update in every round.
  const history = await rest.listRounds(task.id);
  expect(history.map((r) => [r.state, r.summary?.participants])).toEqual([
    ['CLOSED', 1],
    ['CLOSED', 1],
    ['CLOSED', 1],
  ]);
}, 330_000);
