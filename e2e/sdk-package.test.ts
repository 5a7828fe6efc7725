/**
 * End to end: the client SDK as a published package. `npm pack` builds the
 * tarballs of @veil/client-sdk and of every Veil package it needs at run time;
 * a scratch app outside the repository (os.tmpdir()) installs them with npm
 * (third-party dependencies from the registry or npm's cache) and runs a plain
 * .mjs device script that imports '@veil/client-sdk' only. The script turns
 * its own TF.js model into a task (taskBody), trains on MNIST digits against a
 * `veil server` process, then loads the trained global model back with
 * loadGlobalModel. Nothing is resolved from the repository's node_modules.
 */
import { execFile } from 'node:child_process';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { expect, test } from 'vitest';
import { loadMnist } from '@veil/cli';
import {
  assertBuilt,
  childEnv,
  createDatabase,
  createRestClient,
  createTempDir,
  freePorts,
  randomSecret,
  REPO_ROOT,
  startCoordinatorProcess,
} from './support.js';

const run = promisify(execFile);
/** The packages whose tarballs the SDK needs at run time (its dependencies on other @veil packages, transitively). */
const PACKAGES = ['protocol', 'privacy', 'crypto', 'export', 'client-sdk'];
const ROUNDS = 2;

const DEVICE_SCRIPT = String.raw`
import { readFile } from 'node:fs/promises';
import { createClient, evaluateLocal, initTensorflow, loadGlobalModel, taskBody, flattenWeights } from '@veil/client-sdk';

const config = JSON.parse(process.env.DEVICE_CONFIG);
const read = async (file) => { const b = await readFile(file); return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4).slice(); };
const dataset = async (prefix, count) => ({ xs: await read(prefix + '.x.f32'), ys: await read(prefix + '.y.f32'), count, inputShape: [784], numClasses: 10 });
const train = await dataset(config.train, config.trainCount);
const test = await dataset(config.test, config.testCount);

const { tf } = await initTensorflow({ preferred: 'wasm' });
const model = tf.sequential({ layers: [tf.layers.dense({ inputShape: [784], units: 10, activation: 'softmax', kernelInitializer: 'zeros' })] });
const body = taskBody(model, {
  name: 'scratch-app', rounds: ${ROUNDS}, clientsPerRound: 1, minClients: 1, minAvailableClients: 1, roundDeadlineMs: 60000,
  encryption: { mode: 'none' }, training: { epochs: 1, batchSize: 16, learningRate: 0.2 }, start: true,
});
model.dispose();
const created = await fetch(config.http + '/v1/tasks', {
  method: 'POST', headers: { authorization: 'Bearer ' + config.adminToken, 'content-type': 'application/json' }, body: JSON.stringify(body),
});
if (!created.ok) throw new Error('task creation: HTTP ' + created.status + ' ' + (await created.text()));
const task = await created.json();
console.log(JSON.stringify({ type: 'task', id: task.id }));

const client = createClient({ coordinator: config.grpc, taskId: task.id, credentials: { enrolmentSecret: config.enrolmentSecret }, name: 'scratch-device', backend: 'wasm' });
try {
  const summary = await client.run({ data: train, onRound: (r) => console.log(JSON.stringify({ type: 'round', roundNumber: r.roundNumber })) });
  console.log(JSON.stringify({ type: 'done', rounds: summary.rounds, taskStatus: summary.taskStatus }));
} finally {
  client.close();
}
const global = await loadGlobalModel(tf, { coordinatorUrl: config.http, taskId: task.id, token: config.adminToken });
const evaluation = await evaluateLocal(tf, { spec: global.spec, weights: flattenWeights(global.model), data: test });
global.model.dispose();
console.log(JSON.stringify({ type: 'global', version: global.version, accuracy: evaluation.accuracy, weights: Array.from(global.weights.subarray(0, 50)) }));
`;

test('the packed SDK, installed in a scratch app outside the repository, runs a device in a federation', async () => {
  assertBuilt();
  await using packs = await createTempDir('veil-e2e-packs-');
  await using app = await createTempDir('veil-e2e-scratch-app-');
  expect(app.path.startsWith(tmpdir())).toBe(true);
  expect(app.path.startsWith(REPO_ROOT)).toBe(false);
  // npm of the running Node (Node 24 under scripts/node24.sh).
  const env = childEnv({ PATH: `${dirname(process.execPath)}${delimiter}${process.env['PATH'] ?? ''}`, ONNXRUNTIME_NODE_INSTALL: 'skip' });

  const workspaces = PACKAGES.flatMap((p) => ['--workspace', `packages/${p}`]);
  await run('npm', ['pack', ...workspaces, '--pack-destination', packs.path], { cwd: REPO_ROOT, env, maxBuffer: 1 << 24 });
  const tarballs = (await readdir(packs.path)).filter((f) => f.endsWith('.tgz')).sort();
  expect(tarballs).toEqual(['veil-client-sdk-0.1.0.tgz', 'veil-crypto-0.1.0.tgz', 'veil-export-0.1.0.tgz', 'veil-privacy-0.1.0.tgz', 'veil-protocol-0.1.0.tgz']);
  // The protocol tarball ships the .proto files it loads at run time.
  const { stdout: listing } = await run('tar', ['-tzf', join(packs.path, 'veil-protocol-0.1.0.tgz')], { env });
  expect(listing.split('\n')).toContain('package/proto/veil/v1/federation.proto');

  await writeFile(join(app.path, 'package.json'), JSON.stringify({ name: 'scratch-app', private: true, type: 'module' }));
  await run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline', ...tarballs.map((t) => join(packs.path, t))], {
    cwd: app.path,
    env,
    maxBuffer: 1 << 24,
    timeout: 150_000,
  });
  const installed = JSON.parse(await readFile(join(app.path, 'node_modules/@veil/client-sdk/package.json'), 'utf8')) as { private?: boolean };
  expect(installed.private).toBeUndefined();

  const { train, test: heldOut } = loadMnist({ trainCount: 1000, testCount: 500 });
  const dump = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  for (const [name, data] of [['train', train], ['test', heldOut]] as const) {
    await writeFile(join(app.path, `${name}.x.f32`), dump(data.xs));
    await writeFile(join(app.path, `${name}.y.f32`), dump(data.ys));
  }
  await writeFile(join(app.path, 'device.mjs'), DEVICE_SCRIPT);

  await using database = await createDatabase();
  await using dataDir = await createTempDir('veil-e2e-sdk-package-');
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const adminToken = randomSecret();
  const enrolmentSecret = randomSecret();
  await using coordinator = await startCoordinatorProcess({ databaseUrl: database.url, dataDir: dataDir.path, grpcPort, httpPort, adminToken, enrolmentSecret });

  const config = {
    http: coordinator.httpUrl,
    grpc: coordinator.grpcAddress,
    adminToken,
    enrolmentSecret,
    train: join(app.path, 'train'),
    trainCount: train.count,
    test: join(app.path, 'test'),
    testCount: heldOut.count,
  };
  // The device runs in the scratch app, with the scratch app's node_modules only.
  const { stdout } = await run(process.execPath, ['device.mjs'], {
    cwd: app.path,
    env: childEnv({ DEVICE_CONFIG: JSON.stringify(config) }),
    maxBuffer: 1 << 24,
    timeout: 120_000,
  });
  const messages = stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);
  const taskId = messages.find((m) => m['type'] === 'task')?.['id'] as string;
  expect(messages.filter((m) => m['type'] === 'round').map((m) => m['roundNumber'])).toEqual([1, 2]);
  expect(messages.find((m) => m['type'] === 'done')).toMatchObject({ rounds: ROUNDS, taskStatus: 'TASK_STATUS_COMPLETED' });

  // The coordinator accepted the device's update in every round, and the model the
  // device loaded back is the coordinator's current global model.
  const rest = createRestClient(coordinator.httpUrl, adminToken);
  const rounds = await rest.listRounds(taskId);
  expect(rounds.map((r) => [r.number, r.state, r.summary?.participants])).toEqual([
    [1, 'CLOSED', 1],
    [2, 'CLOSED', 1],
  ]);
  const current = await rest.modelWeights(taskId);
  const global = messages.find((m) => m['type'] === 'global') as { version: number; accuracy: number; weights: number[] };
  expect(global.version).toBe(ROUNDS);
  expect(current.version).toBe(ROUNDS);
  expect(global.weights).toEqual(Array.from(current.weights.subarray(0, 50)));
  // Zero initial weights classify every digit as class 0 (about 10%); two rounds of
  // softmax regression on 1,000 digits reach far above that.
  expect(global.accuracy).toBeGreaterThan(0.6);
}, 300_000);
