/**
 * Fixtures of the end-to-end tests: a fresh PostgreSQL database, free loopback
 * ports, the coordinator as a separate `veil server` process, device processes,
 * and a small REST client. They run the built CLI (`packages/cli/dist`), as a
 * user would; every fixture is disposable (`await using`).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createWriteStream, existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { buildTaskDescriptor, custodianFingerprint, encodeDescriptor, generateEd25519KeyPair, signDescriptor, type RawKeyPair, type TaskDescriptor } from '@veil/crypto';
import { initCustodianDir, initRequestKey } from '@veil/custodian';
import { createMnistMlp, createSeededRng, loadMnist, partitionIid } from '@veil/cli';
import { initTensorflow, type LocalDataset } from '@veil/client-sdk';
import { writeShard, type ShardFile } from './shard.js';

/** Root of the monorepo (cwd of every child process). */
export const REPO_ROOT = fileURLToPath(new URL('..', import.meta.url));
/** The built `veil` CLI. */
export const VEIL_BIN = join(REPO_ROOT, 'packages/cli/dist/bin/veil.js');

/** Server of the throw-away databases (a superuser, to CREATE/DROP DATABASE). */
const PG_ADMIN_URL = process.env['VEIL_TEST_POSTGRES_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

/** Throws a clear error when the packages are not built: the e2e tests run the compiled CLI. */
export function assertBuilt(): void {
  if (!existsSync(VEIL_BIN)) throw new Error(`${VEIL_BIN} is missing: run \`npm run build\` before the e2e tests`);
}

/**
 * Environment of a child process: the test runner's, without any Veil or
 * database setting of the developer's shell, plus `extra`.
 */
export function childEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (key.startsWith('VEIL_') || key === 'DATABASE_URL' || key === 'NODE_ENV') continue;
    env[key] = value;
  }
  return { ...env, ...extra };
}

/** A random secret of `bytes` random bytes, base64url (>= 16 characters for 12+ bytes). */
export function randomSecret(bytes = 24): string {
  return randomBytes(bytes).toString('base64url');
}

// ------------------------------------------------------------------ ports, directories

/** `count` distinct free TCP ports on 127.0.0.1 (held together while picked, then released). */
export async function freePorts(count: number): Promise<number[]> {
  const servers = await Promise.all(
    Array.from(
      { length: count },
      () =>
        new Promise<ReturnType<typeof createServer>>((resolve, reject) => {
          const server = createServer();
          server.once('error', reject);
          server.listen(0, '127.0.0.1', () => resolve(server));
        }),
    ),
  );
  const ports = servers.map((s) => (s.address() as AddressInfo).port);
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

/**
 * A fresh temporary directory, removed on dispose unless VEIL_E2E_KEEP_DIRS=1
 * (to read the coordinator and device logs of a failed run).
 */
export async function createTempDir(prefix: string): Promise<{ path: string } & AsyncDisposable> {
  const path = await mkdtemp(join(tmpdir(), prefix));
  const keep = process.env['VEIL_E2E_KEEP_DIRS'] === '1';
  return { path, [Symbol.asyncDispose]: () => (keep ? Promise.resolve() : rm(path, { recursive: true, force: true })) };
}

// ------------------------------------------------------------------ PostgreSQL

/** A fresh PostgreSQL database `veil_e2e_<random>`, dropped on dispose. */
export interface E2eDatabase extends AsyncDisposable {
  readonly name: string;
  readonly url: string;
  query<R extends Record<string, unknown>>(sql: string, params?: unknown[]): Promise<R[]>;
}

export async function createDatabase(): Promise<E2eDatabase> {
  const name = `veil_e2e_${randomBytes(6).toString('hex')}`;
  const admin = async (sql: string): Promise<void> => {
    const client = new pg.Client({ connectionString: PG_ADMIN_URL });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await admin(`CREATE DATABASE "${name}"`);
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  const url = u.toString();
  const pool = new pg.Pool({ connectionString: url, max: 1 });
  // An idle pooled connection that PostgreSQL terminates (57P01, e.g. while the database is being
  // dropped WITH (FORCE) or the server restarts) is reported on the pool; without a listener that
  // event is an uncaught error that fails the whole run after every test passed. Anything else is
  // still thrown by the query that meets it.
  pool.on('error', (err: Error & { code?: string }) => {
    if (err.code !== '57P01') throw err;
  });
  return {
    name,
    url,
    async query<R extends Record<string, unknown>>(sql: string, params?: unknown[]) {
      return (await pool.query<R>(sql, params)).rows;
    },
    async [Symbol.asyncDispose]() {
      await pool.end();
      // FORCE: a killed coordinator's connections may not be reaped yet.
      await admin(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
    },
  };
}

// ------------------------------------------------------------------ processes

/** Resolves when `child` has exited (immediately if it already has). */
export function exited(child: ChildProcess): Promise<{ exitCode: number | null; signalCode: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null) {
    return Promise.resolve({ exitCode: child.exitCode, signalCode: child.signalCode });
  }
  return new Promise((resolve) => child.once('exit', (exitCode, signalCode) => resolve({ exitCode, signalCode })));
}

/** Stops a child: `signal`, then SIGKILL after `graceMs`. Resolves once it has exited. */
async function terminate(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill(signal);
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await exited(child);
  clearTimeout(timer);
}

/** The last `lines` lines of a log file, for failure messages. */
export function tail(path: string, lines = 30): string {
  try {
    return readFileSync(path, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

/** Settings of a `veil server` process (its environment variables). */
export interface CoordinatorSettings {
  /** DATABASE_URL. */
  databaseUrl: string;
  /** VEIL_DATA_DIR (blobs; the coordinator log `coordinator.log` is appended there too). */
  dataDir: string;
  grpcPort: number;
  httpPort: number;
  adminToken: string;
  enrolmentSecret: string;
  /** Further environment variables (e.g. VEIL_TLS_*, VEIL_COMMITTEE_REQUEST_KEY); with VEIL_TLS_CERT_FILE the REST URL is https. */
  env?: Record<string, string>;
}

/** A running `veil server` process. */
export interface CoordinatorProcess extends AsyncDisposable {
  readonly child: ChildProcess;
  readonly grpcAddress: string;
  readonly httpUrl: string;
  readonly logFile: string;
  /** Graceful stop (SIGTERM). */
  stop(): Promise<void>;
}

/**
 * Starts `veil server` with the given settings and resolves once it logs
 * `coordinator ready` (at most `readyTimeoutMs`, default 60 000 ms).
 */
export async function startCoordinatorProcess(settings: CoordinatorSettings, readyTimeoutMs = 60_000): Promise<CoordinatorProcess> {
  const logFile = join(settings.dataDir, 'coordinator.log');
  const child = spawn(process.execPath, [VEIL_BIN, 'server'], {
    cwd: REPO_ROOT,
    env: childEnv({
      VEIL_HOST: '127.0.0.1',
      VEIL_GRPC_PORT: String(settings.grpcPort),
      VEIL_HTTP_PORT: String(settings.httpPort),
      DATABASE_URL: settings.databaseUrl,
      VEIL_DATA_DIR: settings.dataDir,
      VEIL_ADMIN_TOKEN: settings.adminToken,
      VEIL_ENROLMENT_SECRET: settings.enrolmentSecret,
      VEIL_LOG_LEVEL: 'info',
      ...settings.env,
    }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile, { flags: 'a' });
  child.stderr!.pipe(log, { end: false });
  const stop = (): Promise<void> => terminate(child);
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`veil server not ready after ${readyTimeoutMs} ms`)), readyTimeoutMs);
      const lines = createInterface({ input: child.stdout! });
      lines.on('line', (line) => {
        log.write(`${line}\n`);
        if (line.includes('"msg":"coordinator ready"')) {
          clearTimeout(timer);
          resolve();
        }
      });
      child.once('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`veil server exited before it was ready (code ${code}, signal ${signal})`));
      });
    });
  } catch (error) {
    await stop();
    throw new Error(`${(error as Error).message}\n${tail(logFile)}`);
  }
  return {
    child,
    grpcAddress: `127.0.0.1:${settings.grpcPort}`,
    httpUrl: `${settings.env?.['VEIL_TLS_CERT_FILE'] ? 'https' : 'http'}://127.0.0.1:${settings.httpPort}`,
    logFile,
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

/** A device process started from a TypeScript script in `e2e/` (through tsx), reporting JSON lines on stdout. */
export interface DeviceProcess<M> extends AsyncDisposable {
  readonly child: ChildProcess;
  readonly logFile: string;
  /** Every JSON line the device printed so far. */
  readonly messages: M[];
  /** Resolves with the exit status once the process has ended. */
  readonly exit: Promise<{ exitCode: number | null; signalCode: NodeJS.Signals | null }>;
}

/** Runs `node --import tsx e2e/<script>` with `config` as JSON in the environment variable `configVar`. */
export function startDeviceProcess<M>(script: string, configVar: string, config: object, logFile: string): DeviceProcess<M> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(REPO_ROOT, 'e2e', script)], {
    cwd: REPO_ROOT,
    env: childEnv({ [configVar]: JSON.stringify(config) }),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const log = createWriteStream(logFile);
  child.stderr!.pipe(log);
  const messages: M[] = [];
  createInterface({ input: child.stdout! }).on('line', (line) => {
    if (line.startsWith('{')) messages.push(JSON.parse(line) as M);
  });
  return {
    child,
    logFile,
    messages,
    exit: exited(child),
    [Symbol.asyncDispose]: () => terminate(child, 'SIGKILL'),
  };
}

// ------------------------------------------------------------------ the usual start of a test

/** A `veil server` process on a fresh database (or the one given), and its admin REST client. */
export interface E2eFederation extends AsyncDisposable {
  readonly database: E2eDatabase;
  readonly coordinator: CoordinatorProcess;
  readonly rest: RestClient;
  readonly adminToken: string;
  /** VEIL_ENROLMENT_SECRET: what devices join with. */
  readonly enrolmentSecret: string;
}

/**
 * Starts a `veil server` on free loopback ports with fresh secrets, its data in `dataDir`, and
 * resolves once it is ready. Disposing stops it, then drops the database unless it was passed in.
 */
export async function startFederation(options: { dataDir: string; env?: Record<string, string>; database?: E2eDatabase }): Promise<E2eFederation> {
  const database = options.database ?? (await createDatabase());
  const dropDatabase = options.database === undefined ? () => database[Symbol.asyncDispose]() : () => Promise.resolve();
  try {
    const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
    const adminToken = randomSecret();
    const enrolmentSecret = randomSecret();
    const coordinator = await startCoordinatorProcess({
      databaseUrl: database.url,
      dataDir: options.dataDir,
      grpcPort,
      httpPort,
      adminToken,
      enrolmentSecret,
      ...(options.env !== undefined && { env: options.env }),
    });
    return {
      database,
      coordinator,
      rest: createRestClient(coordinator.httpUrl, adminToken),
      adminToken,
      enrolmentSecret,
      async [Symbol.asyncDispose]() {
        try {
          await coordinator.stop();
        } finally {
          await dropDatabase();
        }
      },
    };
  } catch (error) {
    await dropDatabase();
    throw error;
  }
}

/** The MNIST MLP (TF.js, wasm backend), its initial weights, the held-out digits and one shard file per device. */
export interface MnistSetup {
  readonly tf: Awaited<ReturnType<typeof initTensorflow>>['tf'];
  readonly spec: ReturnType<typeof createMnistMlp>['spec'];
  readonly initialWeights: Float32Array;
  readonly heldOut: LocalDataset;
  /** shard-<i>.f32 in `dir`: device i's IID share of the training digits. */
  readonly shards: ShardFile[];
}

export async function setUpMnist(
  dir: string,
  options: { devices: number; hidden?: number[]; partitionSeed?: number; trainCount?: number; testCount?: number },
): Promise<MnistSetup> {
  const { tf } = await initTensorflow({ preferred: 'wasm' });
  const { spec, weights: initialWeights } = createMnistMlp(tf, { seed: 1, ...(options.hidden !== undefined && { hidden: options.hidden }) });
  const { train, test: heldOut } = loadMnist({
    ...(options.trainCount !== undefined && { trainCount: options.trainCount }),
    ...(options.testCount !== undefined && { testCount: options.testCount }),
  });
  const shards = await Promise.all(
    partitionIid(train, options.devices, createSeededRng(options.partitionSeed ?? 1)).map((data, index) => writeShard(join(dir, `shard-${index}.f32`), data)),
  );
  return { tf, spec, initialWeights, heldOut, shards };
}

/** Values of {@link softmaxModel}: 784 · 10 + 10. */
export const SOFTMAX_PARAMETERS = 784 * 10 + 10;

/**
 * A 784-10 softmax regression as the REST API takes it (`model` of POST /v1/tasks), for tests
 * where the model only has to have a shape and nothing trains.
 */
export function softmaxModel(name: string, weights: Float32Array): TaskCreateBody['model'] {
  if (weights.length !== SOFTMAX_PARAMETERS) throw new Error(`a 784-10 softmax has ${SOFTMAX_PARAMETERS} values, got ${weights.length}`);
  return {
    topology: {
      class_name: 'Sequential',
      config: { name, layers: [{ class_name: 'Dense', config: { name: 'dense', units: 10, activation: 'softmax', use_bias: true, batch_input_shape: [null, 784] } }] },
      keras_version: 'tfjs-layers 4.22.0',
      backend: 'tensor_flow.js',
    },
    weightSpecs: [
      { name: 'dense/kernel', shape: [784, 10], dtype: 'float32' },
      { name: 'dense/bias', shape: [10], dtype: 'float32' },
    ],
    weightsBase64: float32Base64(weights),
  };
}

// ------------------------------------------------------------------ REST

/** A task as the REST API presents it. */
export interface TaskView {
  id: string;
  name: string;
  status: 'DRAFT' | 'RUNNING' | 'PAUSED' | 'COMPLETED' | 'FAILED' | 'BUDGET_EXHAUSTED';
  statusReason: string | null;
  parameterCount: number;
  currentModelVersion: number;
}

/** A round of `GET /v1/tasks/:id/rounds`. */
export interface RoundView {
  number: number;
  state: 'SELECTING' | 'COLLECTING' | 'AGGREGATING' | 'CLOSED' | 'FAILED';
  failureReason: string | null;
  baseModelVersion: number;
  selected: number;
  received: number;
  summary: { participants: number; dropped: number; examples: number; uploadBytes: number; modelVersion: number | null } | null;
  events: Array<{ from: string | null; to: string; reason: string | null; at: string }>;
}

/** The body of `POST /v1/tasks`. */
export interface TaskCreateBody {
  name: string;
  rounds: number;
  clientsPerRound: number;
  minClients?: number;
  minAvailableClients?: number;
  roundDeadlineMs?: number;
  training: { epochs: number; batchSize: number; learningRate: number };
  start?: boolean;
  model: { topology: Record<string, unknown>; weightSpecs: unknown; weightsBase64: string };
  /** Encrypted aggregation: `{ mode: "bfv", coordinatorKey }` (public key material) or `{ mode: "none" }`. */
  encryption?: { mode: 'bfv'; coordinatorKey: Record<string, unknown> } | { mode: 'none' };
  /** Differential privacy with an enforced budget (Poisson selection; `clientsPerRound` caps a round). */
  privacy?: {
    mode: 'local' | 'distributed';
    epsilonCap: number;
    delta: number;
    noiseMultiplier: number;
    clipNorm: number;
    samplingRate: number;
    minNoiseClients?: number;
    scale?: number;
  };
}

/** The admin REST API of a coordinator, with its bearer token; non-2xx answers throw with the status and body. */
export interface RestClient {
  createTask(body: TaskCreateBody): Promise<TaskView>;
  getTask(id: string): Promise<TaskView>;
  listRounds(id: string): Promise<RoundView[]>;
  /** A global model version's weights (default the current version), little-endian float32. */
  modelWeights(id: string, version?: number): Promise<{ version: number; weights: Float32Array }>;
}

export function createRestClient(baseUrl: string, adminToken: string): RestClient {
  const call = async (method: string, path: string, body?: unknown): Promise<Response> => {
    const response = await fetch(baseUrl + path, {
      method,
      headers: { authorization: `Bearer ${adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
      ...(body !== undefined && { body: JSON.stringify(body) }),
    });
    if (!response.ok) throw new Error(`${method} ${path}: HTTP ${response.status} ${await response.text()}`);
    return response;
  };
  return {
    createTask: async (body) => (await (await call('POST', '/v1/tasks', body)).json()) as TaskView,
    getTask: async (id) => (await (await call('GET', `/v1/tasks/${id}`)).json()) as TaskView,
    listRounds: async (id) => ((await (await call('GET', `/v1/tasks/${id}/rounds`)).json()) as { rounds: RoundView[] }).rounds,
    async modelWeights(id, version) {
      const response = await call('GET', `/v1/tasks/${id}/model/weights.bin${version === undefined ? '' : `?version=${version}`}`);
      const bytes = Buffer.from(await response.arrayBuffer());
      if (bytes.byteLength % 4 !== 0) throw new Error(`weights.bin has ${bytes.byteLength} bytes, not a whole number of float32`);
      const weights = new Float32Array(bytes.byteLength / 4);
      for (let i = 0; i < weights.length; i++) weights[i] = bytes.readFloatLE(i * 4);
      return { version: Number(response.headers.get('x-veil-model-version')), weights };
    },
  };
}

/** Little-endian float32 bytes of `values`, base64 (the REST API's `weightsBase64`). */
export function float32Base64(values: Float32Array): string {
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((v, i) => bytes.writeFloatLE(v, i * 4));
  return bytes.toString('base64');
}

/** Polls `check` every `intervalMs` until it returns a value other than undefined, or throws after `timeoutMs`. */
export async function waitFor<T>(what: string, check: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 250): Promise<T> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** `promise`, or a rejection after `timeoutMs` (so a test's cleanup runs before the runner's own timeout). */
export async function withTimeout<T>(what: string, promise: Promise<T>, timeoutMs: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)), timeoutMs);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

// ------------------------------------------------------------------ committee (issue 11)

/** A `veil custodian serve` process. */
export interface CustodianProcess extends AsyncDisposable {
  readonly child: ChildProcess;
  /** HOST:PORT it listens on. */
  readonly address: string;
  /** SIGTERM (graceful), SIGKILL after 10 s. */
  stop(): Promise<void>;
}

/**
 * Starts `veil custodian serve --dir DIR` on a free loopback port and resolves once it prints
 * where it listens; its stderr (log) is appended to DIR/custodian.log.
 */
export function startCustodianProcess(options: { dir: string; requestPublicFile: string; authorityPublicFile: string; minDevices: number }): Promise<CustodianProcess> {
  const { dir } = options;
  const args = ['custodian', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--coordinator-key', options.requestPublicFile, '--authority-key', options.authorityPublicFile, '--min-devices', String(options.minDevices)];
  const child = spawn(process.execPath, [VEIL_BIN, ...args], { cwd: REPO_ROOT, env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  const logFile = join(dir, 'custodian.log');
  child.stderr!.pipe(createWriteStream(logFile, { flags: 'a' }));
  const stop = (): Promise<void> => terminate(child);
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      void stop();
      reject(new Error(`custodian in ${dir} did not start within 60 s\n${tail(logFile)}`));
    }, 60_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      const address = (JSON.parse(line) as { listening: string }).listening;
      resolve({ child, address, stop, [Symbol.asyncDispose]: stop });
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`custodian exited before it listened (code ${code}, signal ${signal})\n${tail(logFile)}`));
    });
  });
}

/**
 * A committee of `veil custodian serve` processes under `root`, an enrolment authority whose key
 * stays in the test process (apart from the coordinator), and the coordinator's request key.
 */
export interface E2eCommittee extends AsyncDisposable {
  readonly authority: RawKeyPair;
  readonly authorityPublicFile: string;
  /** The coordinator's request key: `secretFile` goes to VEIL_COMMITTEE_REQUEST_KEY. */
  readonly request: { secretFile: string; publicFile: string };
  /** custodian-<i> directories, in committee index order (index = position + 1). */
  readonly dirs: readonly string[];
  readonly custodians: readonly CustodianProcess[];
  readonly publics: ReadonlyArray<{ sealingKey: string; signingKey: string }>;
  /** What an app pins: the custodians' fingerprints and the authority key. */
  readonly pins: { minDevices: number; maxRounds: number; pinnedFingerprints: string[]; authorityKey: string };
  /** A descriptor for `taskId` naming this committee, signed by the authority, and its REST body. */
  descriptor(options: {
    taskId: string;
    threshold: number;
    minDevices: number;
    maxDevices: number;
    maxRounds: number;
    encoding?: { weightCap?: number; step?: number; clipMaxAbs?: number };
  }): { descriptor: TaskDescriptor; body: { descriptor: string; descriptorSignature: string } };
}

export async function startE2eCommittee(root: string, options: { custodians: number; minDevices: number; maxRounds?: number }): Promise<E2eCommittee> {
  const authority = generateEd25519KeyPair();
  const authorityPublicFile = join(root, 'authority-public.json');
  await writeFile(authorityPublicFile, JSON.stringify({ publicKey: Buffer.from(authority.publicKey).toString('base64') }));
  const request = await initRequestKey(join(root, 'request-key'));
  const dirs: string[] = [];
  const publics: Array<{ sealingKey: string; signingKey: string }> = [];
  const custodians: CustodianProcess[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(custodians.map((c) => c.stop()));
  };
  try {
    for (let i = 1; i <= options.custodians; i++) {
      const dir = join(root, `custodian-${i}`);
      dirs.push(dir);
      publics.push(await initCustodianDir(dir));
      custodians.push(await startCustodianProcess({ dir, requestPublicFile: request.publicFile, authorityPublicFile, minDevices: options.minDevices }));
    }
  } catch (error) {
    await stopAll();
    throw error;
  }
  return {
    authority,
    authorityPublicFile,
    request,
    dirs,
    custodians,
    publics,
    pins: {
      minDevices: options.minDevices,
      maxRounds: options.maxRounds ?? 10,
      pinnedFingerprints: publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64'))),
      authorityKey: Buffer.from(authority.publicKey).toString('base64'),
    },
    descriptor({ encoding, ...rest }) {
      const descriptor = buildTaskDescriptor({
        ...rest,
        committee: publics.map((p, i) => ({ address: custodians[i]!.address, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
        ...(encoding !== undefined && { encoding }),
        authorityPublicKey: authority.publicKey,
      });
      return {
        descriptor,
        body: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature },
      };
    },
    [Symbol.asyncDispose]: stopAll,
  };
}
