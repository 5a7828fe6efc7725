/**
 * Host side of the container test (e2e/container/run.sh): drives the
 * coordinator running in the compose stack through its published ports only.
 *
 *   federation.ts run    --http URL --grpc HOST:PORT --state FILE [--devices N] [--rounds N] [--device-key DIR] [--committee DIR]
 *     creates the MNIST task over REST (`POST /v1/tasks`), runs N device
 *     processes (e2e/container/device.ts) until the task ends, checks every
 *     round CLOSED, and writes what must survive a restart to FILE. With
 *     --device-key (`<bundle>/device` of `veil keys generate`, whose public
 *     half the coordinator loaded from VEIL_KEYS_DIR) the task must come out
 *     BFV-encrypted by default, the devices encrypt their updates, and the
 *     host decrypts the final model to evaluate it. With --committee DIR (the
 *     enrolment authority's key in DIR/authority, the custodians' public files
 *     DIR/custodian-N.json fetched from the stack) the task is a committee task
 *     instead: the authority signs a descriptor naming grpcs://custodian-N:50061
 *     (2-of-3), runs its enrolment service here on the host (apart from the
 *     coordinator), devices pin the custodians' fingerprints and upload c0 and
 *     sealed shares; every round must be decrypted with t custodian answers
 *     (the round summary names them) and the model is plain float32.
 *   federation.ts verify --http URL --state FILE
 *     after `down`/`up`: the same task, the same CLOSED rounds, and a model
 *     whose weights.bin has the same SHA-256.
 *
 * Secrets come from the environment, as for `veil demo`: VEIL_ADMIN_TOKEN,
 * VEIL_ENROLMENT_SECRET. Prints one JSON summary line on stdout
 * (`{"rounds":[...],"finalAccuracy":..,"taskId":".."}` for `run`); progress
 * on stderr; exits non-zero with the reason on any mismatch.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { createMnistMlp, loadMnist } from '@veil/cli';
import { randomBytes, randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { decryptGlobalModel, evaluateLocal, initTensorflow } from '@veil/client-sdk';
import { encodeDescriptor, readDeviceKeyMaterial } from '@veil/crypto';
import { createSignedDescriptor, readAuthorityKey, startEnrolmentServer, type EnrolmentServer } from '@veil/custodian';
import type { ContainerDeviceConfig, ContainerDeviceMessage } from './device.js';

/** What `run` records and `verify` compares after the restart. */
interface SurvivalState {
  taskId: string;
  taskStatus: string;
  currentModelVersion: number;
  rounds: { number: number; state: string; received: number }[];
  /** SHA-256 of weights.bin of every model version, 0 (initial) to current. */
  weightsSha256: string[];
}

interface TaskView {
  id: string;
  status: string;
  currentModelVersion: number;
  /** null for a plaintext task; the public parameters of the BFV key otherwise. */
  encryption?: { keyId: string; preset: string } | null;
}

interface RoundView {
  number: number;
  state: string;
  received: number;
  failureReason: string | null;
  evaluation: { accuracy?: number; loss?: number } | null;
  summary?: { committee?: { deviceCount: number; custodians: number[] } } | null;
}

class CheckFailed extends Error {}

const say = (message: string): void => {
  process.stderr.write(`federation: ${message}\n`);
};

function requireEnv(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === '') throw new CheckFailed(`${name} is not set`);
  return value;
}

function rest(baseUrl: string, adminToken: string) {
  const call = async (method: string, path: string, body?: unknown): Promise<Response> => {
    const init: RequestInit = { method, headers: { authorization: `Bearer ${adminToken}` }, signal: AbortSignal.timeout(30_000) };
    if (body !== undefined) {
      init.headers = { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' };
      init.body = JSON.stringify(body);
    }
    const response = await fetch(new URL(path, baseUrl), init);
    if (!response.ok) throw new CheckFailed(`${method} ${path}: HTTP ${response.status} ${await response.text()}`);
    return response;
  };
  return {
    json: async <T>(method: string, path: string, body?: unknown): Promise<T> => (await call(method, path, body)).json() as Promise<T>,
    bytes: async (path: string): Promise<Buffer> => Buffer.from(await (await call('GET', path)).arrayBuffer()),
  };
}

async function snapshot(api: ReturnType<typeof rest>, taskId: string): Promise<{ state: SurvivalState; rounds: RoundView[]; versions: Buffer[] }> {
  const task = await api.json<TaskView>('GET', `/v1/tasks/${taskId}`);
  const { rounds } = await api.json<{ rounds: RoundView[] }>('GET', `/v1/tasks/${taskId}/rounds`);
  const versions: Buffer[] = [];
  for (let v = 0; v <= task.currentModelVersion; v++) versions.push(await api.bytes(`/v1/tasks/${taskId}/model/weights.bin?version=${v}`));
  const state: SurvivalState = {
    taskId: task.id,
    taskStatus: task.status,
    currentModelVersion: task.currentModelVersion,
    rounds: rounds.map((r) => ({ number: r.number, state: r.state, received: r.received })),
    weightsSha256: versions.map((bytes) => createHash('sha256').update(bytes).digest('hex')),
  };
  return { state, rounds, versions };
}

const floats = (bytes: Buffer): Float32Array => new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));

function runDevice(config: ContainerDeviceConfig, deadlineMs: number): Promise<ContainerDeviceMessage[]> {
  const script = fileURLToPath(new URL('./device.ts', import.meta.url));
  const child = spawn(process.execPath, ['--import', 'tsx', script], {
    env: { ...process.env, VEIL_CONTAINER_DEVICE: JSON.stringify(config) },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const messages: ContainerDeviceMessage[] = [];
  const stderr: string[] = [];
  createInterface({ input: child.stdout }).on('line', (text) => {
    const message = JSON.parse(text) as ContainerDeviceMessage;
    messages.push(message);
    if (message.type === 'round') {
      const accuracy = message.evaluation === null ? '' : `, accuracy of the received model ${(message.evaluation.accuracy * 100).toFixed(1)}%`;
      say(`device ${config.index}: round ${message.roundNumber} submitted (${message.exampleCount} examples, ${message.trainMs} ms training${accuracy})`);
    }
  });
  createInterface({ input: child.stderr }).on('line', (text) => {
    stderr.push(text);
    if (stderr.length > 20) stderr.shift();
  });
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new CheckFailed(`device ${config.index} did not finish within ${deadlineMs} ms`));
    }, deadlineMs);
    child.on('exit', (code) => {
      clearTimeout(timer);
      const done = messages.find((m) => m.type === 'done');
      if (code === 0 && done !== undefined) resolve(messages);
      else reject(new CheckFailed(`device ${config.index} exited with ${code}: ${JSON.stringify(messages.at(-1) ?? null)}\n${stderr.join('\n')}`));
    });
  });
}

async function run(values: Record<string, string | undefined>): Promise<void> {
  const httpUrl = values['http'] ?? '';
  const grpcAddress = values['grpc'] ?? '';
  const stateFile = values['state'] ?? '';
  if (httpUrl === '' || grpcAddress === '' || stateFile === '') throw new CheckFailed('run needs --http, --grpc and --state');
  const devices = Number(values['devices'] ?? 3);
  const rounds = Number(values['rounds'] ?? 3);
  const deviceKeyDir = values['device-key'] ?? null;
  const committeeDir = values['committee'] ?? null;
  if (committeeDir !== null && deviceKeyDir !== null) throw new CheckFailed('--committee and --device-key exclude each other');
  const api = rest(httpUrl, requireEnv('VEIL_ADMIN_TOKEN'));
  const enrolmentSecret = requireEnv('VEIL_ENROLMENT_SECRET');
  const started = performance.now();

  // A committee task: the authority (its key on the host only) signs the descriptor and certifies devices.
  let committee: { body: { descriptor: string; descriptorSignature: string }; taskId: string; device: NonNullable<ContainerDeviceConfig['committee']> } | null = null;
  let enrolment: EnrolmentServer | null = null;
  if (committeeDir !== null) {
    const authority = await readAuthorityKey(join(committeeDir, 'authority'));
    const members = await Promise.all(
      [1, 2, 3].map(async (i) => {
        const info = JSON.parse(await readFile(join(committeeDir, `custodian-${i}.json`), 'utf8')) as { sealingKey: string; signingKey: string; fingerprint: string };
        return { address: `grpcs://custodian-${i}:50061`, custodian: info };
      }),
    );
    const taskId = randomUUID();
    const { signed } = createSignedDescriptor(authority, { taskId, committee: members, threshold: 2, minDevices: devices, maxDevices: Math.max(devices, 10), maxRounds: rounds });
    const certSecret = randomBytes(24).toString('base64url');
    enrolment = await startEnrolmentServer({ authority, enrolmentSecret: certSecret, taskIds: [taskId], statePath: join(committeeDir, 'enrolment.jsonl'), logger: pino({ level: 'silent' }) });
    committee = {
      taskId,
      body: { descriptor: Buffer.from(encodeDescriptor(signed.descriptor)).toString('base64'), descriptorSignature: signed.signature },
      device: {
        pins: { minDevices: devices, maxRounds: rounds, pinnedFingerprints: members.map((m) => m.custodian.fingerprint), authorityKey: signed.descriptor.authorityKey },
        enrolmentUrl: enrolment.url,
        enrolmentSecret: certSecret,
      },
    };
    say(`committee descriptor for task ${taskId}: 2-of-3, custodians ${members.map((m) => m.address).join(', ')}`);
  }
  try {
    await runTask();
  } finally {
    await enrolment?.close();
  }

  async function runTask(): Promise<void> {

  const { tf, backend } = await initTensorflow({ preferred: 'wasm' });
  const { spec, weights } = createMnistMlp(tf, { seed: 1 });
  const task = await api.json<TaskView>('POST', '/v1/tasks', {
    name: 'container-e2e-mnist',
    rounds,
    clientsPerRound: devices,
    minClients: devices,
    minAvailableClients: devices,
    roundDeadlineMs: 180_000,
    training: { epochs: 1, batchSize: 16, learningRate: 0.1 },
    start: true,
    ...(committee !== null && { committee: committee.body }),
    model: { topology: spec.topology, weightSpecs: spec.weightSpecs, weightsBase64: Buffer.from(weights.buffer, weights.byteOffset, weights.byteLength).toString('base64') },
  });
  const mode = committee !== null ? 'committee (2-of-3 custodians over mutual TLS)' : task.encryption == null ? 'none' : `bfv (${task.encryption.preset}, key ${task.encryption.keyId})`;
  if (committee !== null && task.id !== committee.taskId) throw new CheckFailed(`the committee task got id ${task.id}, expected the descriptor's ${committee.taskId}`);
  if (deviceKeyDir !== null && task.encryption == null) throw new CheckFailed('the task is plaintext: expected BFV with the key mounted at VEIL_KEYS_DIR');
  say(`task ${task.id} created over REST (${task.status}, encryption ${mode}): ${rounds} rounds x ${devices} devices, ${weights.length} parameters, ${backend} backend`);

  const trainCount = 600 * devices;
  const testCount = 1000;
  const results = await Promise.all(
    Array.from({ length: devices }, (_, index) =>
      runDevice(
        { coordinator: grpcAddress, taskId: task.id, enrolmentSecret, index, devices, trainCount, testCount, seed: 7, deviceKeyDir, ...(committee !== null && { committee: committee.device }) },
        10 * 60_000,
      ),
    ),
  );
  const submitted = results.flat().filter((m) => m.type === 'round').length;

  const { state, rounds: history, versions } = await snapshot(api, task.id);
  if (state.taskStatus !== 'COMPLETED') throw new CheckFailed(`task ended ${state.taskStatus}, expected COMPLETED`);
  if (history.length !== rounds) throw new CheckFailed(`${history.length} rounds recorded, expected ${rounds}`);
  const notClosed = history.filter((r) => r.state !== 'CLOSED');
  if (notClosed.length > 0) throw new CheckFailed(`rounds not CLOSED: ${JSON.stringify(notClosed.map((r) => [r.number, r.state, r.failureReason]))}`);
  if (state.currentModelVersion < rounds) throw new CheckFailed(`model version ${state.currentModelVersion} after ${rounds} closed rounds`);
  if (committee !== null) {
    // Every round was decrypted with t = 2 custodians' answers over all the devices.
    const bad = history.filter((r) => r.summary?.committee?.deviceCount !== devices || r.summary.committee.custodians.length !== 2);
    if (bad.length > 0) throw new CheckFailed(`rounds without a 2-custodian decryption of ${devices} devices: ${JSON.stringify(bad.map((r) => [r.number, r.summary]))}`);
    say(`custodians that approved each decryption: ${history.map((r) => `round ${r.number}: [${r.summary!.committee!.custodians.join(',')}]`).join(', ')}`);
  }

  // The final global model, fetched from the container (and decrypted with the
  // device key for an encrypted task), evaluated on the host's held-out digits.
  const [initial, ...sums] = versions;
  if (initial === undefined || initial.byteLength !== weights.byteLength) throw new CheckFailed(`model version 0 is ${initial?.byteLength} bytes, expected ${weights.byteLength}`);
  const final =
    deviceKeyDir === null
      ? floats(versions.at(-1)!)
      : await decryptGlobalModel({ deviceKey: await readDeviceKeyMaterial(deviceKeyDir), initial: floats(initial), sums });
  if (final.length !== weights.length) throw new CheckFailed(`final model has ${final.length} values, expected ${weights.length}`);
  const { test } = loadMnist({ trainCount, testCount });
  const evaluation = await evaluateLocal(tf, { spec, weights: final, data: test });
  await writeFile(stateFile, `${JSON.stringify(state, null, 2)}\n`);
  say(`task COMPLETED: ${rounds} rounds CLOSED, ${submitted} updates, model v${state.currentModelVersion} sha256 ${state.weightsSha256.at(-1)!.slice(0, 16)}…, held-out accuracy ${(evaluation.accuracy * 100).toFixed(2)}%`);
  process.stdout.write(
    `${JSON.stringify({
      rounds: history.map((r) => ({ round: r.number, state: r.state, updates: r.received, reportedAccuracy: r.evaluation?.accuracy ?? null })),
      finalAccuracy: Math.round(evaluation.accuracy * 10_000) / 10_000,
      taskId: task.id,
      encryption: mode,
      modelVersion: state.currentModelVersion,
      weightsSha256: state.weightsSha256.at(-1),
      totalMs: Math.round(performance.now() - started),
    })}\n`,
  );
  }
}

async function verify(values: Record<string, string | undefined>): Promise<void> {
  const httpUrl = values['http'] ?? '';
  const stateFile = values['state'] ?? '';
  if (httpUrl === '' || stateFile === '') throw new CheckFailed('verify needs --http and --state');
  const before = JSON.parse(await readFile(stateFile, 'utf8')) as SurvivalState;
  const api = rest(httpUrl, requireEnv('VEIL_ADMIN_TOKEN'));
  const { tasks } = await api.json<{ tasks: TaskView[] }>('GET', '/v1/tasks');
  if (!tasks.some((t) => t.id === before.taskId)) throw new CheckFailed(`task ${before.taskId} is gone after the restart (tasks: ${tasks.map((t) => t.id).join(', ') || 'none'})`);
  const { state: after } = await snapshot(api, before.taskId);
  const problems: string[] = [];
  if (after.taskStatus !== before.taskStatus) problems.push(`task status ${after.taskStatus}, was ${before.taskStatus}`);
  if (after.currentModelVersion !== before.currentModelVersion) problems.push(`model version ${after.currentModelVersion}, was ${before.currentModelVersion}`);
  if (JSON.stringify(after.rounds) !== JSON.stringify(before.rounds)) problems.push(`rounds ${JSON.stringify(after.rounds)}, were ${JSON.stringify(before.rounds)}`);
  if (after.rounds.some((r) => r.state !== 'CLOSED')) problems.push('a round is not CLOSED');
  if (JSON.stringify(after.weightsSha256) !== JSON.stringify(before.weightsSha256)) problems.push(`weights.bin sha256 ${after.weightsSha256.join(',')}, was ${before.weightsSha256.join(',')}`);
  if (problems.length > 0) throw new CheckFailed(`state did not survive the restart: ${problems.join('; ')}`);
  say(`after the restart: task ${after.taskId} ${after.taskStatus}, ${after.rounds.length} rounds CLOSED, model versions 0-${after.currentModelVersion}: weights.bin sha256 unchanged`);
  process.stdout.write(`${JSON.stringify({ taskId: after.taskId, rounds: after.rounds.length, modelVersion: after.currentModelVersion, weightsSha256: after.weightsSha256.at(-1), survived: true })}\n`);
}

const [command, ...args] = process.argv.slice(2);
const { values } = parseArgs({
  args,
  strict: true,
  options: { http: { type: 'string' }, grpc: { type: 'string' }, state: { type: 'string' }, devices: { type: 'string' }, rounds: { type: 'string' }, 'device-key': { type: 'string' }, committee: { type: 'string' } },
});
try {
  if (command === 'run') await run(values);
  else if (command === 'verify') await verify(values);
  else throw new CheckFailed('usage: federation.ts run|verify --http URL [--grpc HOST:PORT] --state FILE');
} catch (error) {
  say(error instanceof CheckFailed ? error.message : `unexpected error: ${(error as Error).stack ?? String(error)}`);
  process.exitCode = 1;
}
