/**
 * Fixtures of the coordinator's integration tests: a real coordinator (gRPC and
 * REST on loopback, port 0) on a fresh PostgreSQL database or a fresh PGlite
 * directory, a REST client, and devices driven through the SDK's gRPC transport.
 * Every fixture is disposable (`await using`).
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import pg from 'pg';
import { PassThrough } from 'node:stream';
import { createFederationServiceClient, GRPC_CHANNEL_OPTIONS, type SubmitUpdateRequest } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import { createLogger, loadConfig, startCoordinator, type Coordinator, type CoordinatorConfig, type CoordinatorOptions, type Logger } from '../src/index.js';
import { parseSegment } from '../src/blobs/blob-store.js';
import { createGrpcTransport } from '../../client-sdk/src/transport/grpc-transport.js';
import { createConnectTransport, type ConnectTransportOptions } from '../../client-sdk/src/transport/connect-transport.js';
import type { Assignment, JoinResult, Transport } from '../../client-sdk/src/transport/transport.js';
import { ClientError } from '../../client-sdk/src/errors.js';

export type DatabaseKind = 'postgres' | 'pglite';

/** Server of the throw-away test databases (a superuser, to CREATE/DROP DATABASE). */
const PG_ADMIN_URL = process.env['VEIL_TEST_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/postgres';

// ------------------------------------------------------------------ storage

/** Where a coordinator keeps its state: a database and a data directory (blobs, PGlite). */
export interface TestStorage extends AsyncDisposable {
  readonly kind: DatabaseKind;
  /** URL of the fresh PostgreSQL database; undefined for PGlite (which lives in `dataDir`). */
  readonly databaseUrl: string | undefined;
  readonly dataDir: string;
  /** Runs SQL on the PostgreSQL database (not available for PGlite, which the coordinator holds open). */
  sql<R extends Record<string, unknown> = Record<string, unknown>>(text: string, params?: unknown[]): Promise<R[]>;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** A fresh PostgreSQL database (`veil_test_<random>`) or PGlite directory, and a temp data dir; all removed on dispose. */
export async function createTestStorage(kind: DatabaseKind): Promise<TestStorage> {
  const dataDir = await mkdtemp(join(tmpdir(), 'veil-it-'));
  let databaseUrl: string | undefined;
  let pool: pg.Pool | null = null;
  let dbName: string | null = null;
  if (kind === 'postgres') {
    dbName = `veil_test_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
    await admin.connect();
    try {
      await admin.query(`CREATE DATABASE "${dbName}"`);
    } finally {
      await admin.end();
    }
    databaseUrl = withDatabase(PG_ADMIN_URL, dbName);
    pool = new pg.Pool({ connectionString: databaseUrl, max: 2 });
  }
  return {
    kind,
    databaseUrl,
    dataDir,
    async sql(text, params) {
      if (pool === null) throw new Error('sql() is only available on PostgreSQL storage');
      return (await pool.query(text, params)).rows;
    },
    async [Symbol.asyncDispose]() {
      await pool?.end();
      if (dbName !== null) {
        const admin = new pg.Client({ connectionString: PG_ADMIN_URL });
        await admin.connect();
        try {
          // Let connections that are still closing (a coordinator just shut down) go by themselves:
          // a forced drop terminates them mid-close, and pg reports that as an unhandled error event.
          for (let attempt = 0; ; attempt++) {
            try {
              await admin.query(`DROP DATABASE IF EXISTS "${dbName}"${attempt < 50 ? '' : ' WITH (FORCE)'}`);
              break;
            } catch (error) {
              if ((error as { code?: string }).code !== '55006' || attempt >= 50) throw error;
              await new Promise((resolve) => setTimeout(resolve, 100));
            }
          }
        } finally {
          await admin.end();
        }
      }
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

// ------------------------------------------------------------------ coordinator

export interface StartTestCoordinatorOptions
  extends Partial<Pick<CoordinatorOptions, 'clock' | 'rng' | 'presenceTtlMs' | 'strategies' | 'uploadBudgetBytes' | 'downloadBudgetBytes' | 'uploadStoreBytes' | 'authThrottle'>> {
  /** Fresh storage of this kind, owned (and removed) by the fixture. Default `postgres`. */
  database?: DatabaseKind;
  /** Existing storage to reuse (e.g. to restart on the same database); not removed on dispose. */
  storage?: TestStorage;
  /** Default: a silent logger. */
  logger?: Logger;
  /** Default: a random 32-character token. */
  adminToken?: string;
  /** Default: a random 32-character secret. */
  enrolmentSecret?: string;
  /** Configuration fields to override (after the fixture's own: loopback, port 0, fresh storage). */
  config?: Partial<CoordinatorConfig>;
}

export interface TestCoordinator extends AsyncDisposable {
  readonly coordinator: Coordinator;
  readonly storage: TestStorage;
  readonly rest: RestClient;
  /** Closes the coordinator (idempotent); owned storage is removed on dispose. */
  close(): Promise<void>;
}

/** Starts a coordinator on loopback (gRPC and HTTP on port 0). */
export async function startTestCoordinator(options: StartTestCoordinatorOptions = {}): Promise<TestCoordinator> {
  const owned = options.storage === undefined;
  const storage = options.storage ?? (await createTestStorage(options.database ?? 'postgres'));
  try {
    const coordinator = await startCoordinator({
      config: {
        ...loadConfig({}),
        host: '127.0.0.1',
        grpcPort: 0,
        httpPort: 0,
        dataDir: storage.dataDir,
        blobDir: join(storage.dataDir, 'blobs'),
        databaseUrl: storage.databaseUrl,
        adminToken: options.adminToken ?? randomBytes(24).toString('base64url'),
        enrolmentSecret: options.enrolmentSecret ?? randomBytes(24).toString('base64url'),
        logLevel: 'silent',
        ...options.config,
      },
      logger: options.logger ?? createLogger({ level: 'silent' }),
      ...(options.clock && { clock: options.clock }),
      ...(options.rng && { rng: options.rng }),
      ...(options.strategies && { strategies: options.strategies }),
      ...(options.presenceTtlMs !== undefined && { presenceTtlMs: options.presenceTtlMs }),
      ...(options.uploadBudgetBytes !== undefined && { uploadBudgetBytes: options.uploadBudgetBytes }),
      ...(options.downloadBudgetBytes !== undefined && { downloadBudgetBytes: options.downloadBudgetBytes }),
      ...(options.uploadStoreBytes !== undefined && { uploadStoreBytes: options.uploadStoreBytes }),
      ...(options.authThrottle && { authThrottle: options.authThrottle }),
    });
    const close = (): Promise<void> => coordinator.close();
    return {
      coordinator,
      storage,
      rest: createRestClient(coordinator.httpUrl, coordinator.adminToken),
      close,
      async [Symbol.asyncDispose]() {
        await close();
        if (owned) await storage[Symbol.asyncDispose]();
      },
    };
  } catch (error) {
    if (owned) await storage[Symbol.asyncDispose]();
    throw error;
  }
}

/** The coordinator's enrolment secret (the fixture sets one); throws if this coordinator runs without one. */
export function secretOf(coordinator: Coordinator): string {
  if (coordinator.enrolmentSecret === null) throw new Error('this test coordinator has no enrolment secret');
  return coordinator.enrolmentSecret;
}

/** A pino logger writing into memory, for assertions on what the coordinator logs. */
export function captureLogger(level = 'debug'): { logger: Logger; text(): string } {
  const chunks: Buffer[] = [];
  const destination = new PassThrough();
  destination.on('data', (chunk: Buffer) => chunks.push(chunk));
  return { logger: createLogger({ level, destination }), text: () => Buffer.concat(chunks).toString('utf8') };
}

// ------------------------------------------------------------------ REST

export interface RestResponse<T = any> {
  status: number;
  body: T;
  headers: Headers;
}

export interface RestClient {
  readonly baseUrl: string;
  /** JSON request; `token: null` sends no Authorization header. Default: the admin token. */
  request<T = any>(method: string, path: string, options?: { body?: unknown; token?: string | null }): Promise<RestResponse<T>>;
  /** Raw bytes of a response (e.g. weights.bin). */
  bytes(path: string): Promise<{ status: number; bytes: Buffer; headers: Headers }>;
}

export function createRestClient(baseUrl: string, adminToken: string): RestClient {
  const headersFor = (token: string | null | undefined, json: boolean): Record<string, string> => {
    const headers: Record<string, string> = {};
    const t = token === undefined ? adminToken : token;
    if (t !== null) headers['authorization'] = `Bearer ${t}`;
    if (json) headers['content-type'] = 'application/json';
    return headers;
  };
  return {
    baseUrl,
    async request(method, path, options = {}) {
      const response = await fetch(baseUrl + path, {
        method,
        headers: headersFor(options.token, options.body !== undefined),
        ...(options.body !== undefined && { body: JSON.stringify(options.body) }),
      });
      const text = await response.text();
      return { status: response.status, body: text === '' ? undefined : JSON.parse(text), headers: response.headers };
    },
    async bytes(path) {
      const response = await fetch(baseUrl + path, { headers: headersFor(undefined, false) });
      return { status: response.status, bytes: Buffer.from(await response.arrayBuffer()), headers: response.headers };
    },
  };
}

// ------------------------------------------------------------------ tasks

/** A fake tiny model: a 4x3 dense kernel and a bias of 3 (15 parameters). */
export const TINY_WEIGHT_SPECS = [
  { name: 'dense/kernel', shape: [4, 3], dtype: 'float32' },
  { name: 'dense/bias', shape: [3], dtype: 'float32' },
] as const;
export const TINY_PARAMETERS = 15;
export const TINY_TOPOLOGY = {
  class_name: 'Sequential',
  config: { name: 'tiny', layers: [{ class_name: 'Dense', config: { units: 3, activation: 'linear', batch_input_shape: [null, 4] } }] },
};

export const toBase64 = (values: Float32Array): string => Buffer.from(float32ToBytes(values)).toString('base64');
export const sha256Hex = (data: Uint8Array): string => createHash('sha256').update(data).digest('hex');

/** Body of `POST /v1/tasks` for the tiny model; `overrides` replace top-level fields. */
export function tinyTaskBody(base: Float32Array, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: 'tiny task',
    rounds: 3,
    clientsPerRound: 3,
    minClients: 3,
    minAvailableClients: 3,
    roundDeadlineMs: 60_000,
    training: { epochs: 1, batchSize: 8, learningRate: 0.1 },
    model: { topology: TINY_TOPOLOGY, weightSpecs: TINY_WEIGHT_SPECS, weightsBase64: toBase64(base) },
    ...overrides,
  };
}

/** Deterministic, distinct values (no RNG needed). */
export function pattern(length: number, seed: number): Float32Array {
  return Float32Array.from({ length }, (_, i) => Math.sin(seed * 7.3 + i * 1.7) * (0.5 + seed * 0.25));
}

export interface CreatedTask {
  id: string;
  base: Float32Array;
  task: any;
}

/** Creates (and by default starts) a tiny task over REST. */
export async function createTinyTask(
  rest: RestClient,
  overrides: Record<string, unknown> = {},
  base: Float32Array = pattern(TINY_PARAMETERS, 1),
): Promise<CreatedTask> {
  const response = await rest.request('POST', '/v1/tasks', { body: tinyTaskBody(base, { start: true, ...overrides }) });
  if (response.status !== 201) throw new Error(`task creation failed: ${response.status} ${JSON.stringify(response.body)}`);
  return { id: response.body.id, base, task: response.body };
}

/** Rounds of a task, as `GET /v1/tasks/:id/rounds` shows them. */
export async function listRounds(rest: RestClient, taskId: string): Promise<any[]> {
  const response = await rest.request('GET', `/v1/tasks/${taskId}/rounds`);
  if (response.status !== 200) throw new Error(`rounds failed: ${response.status} ${JSON.stringify(response.body)}`);
  return response.body.rounds;
}

/** Polls the round history until `predicate` holds (the coordinator closes rounds asynchronously). */
export async function waitForRounds(
  rest: RestClient,
  taskId: string,
  predicate: (rounds: any[]) => boolean,
  timeoutMs = 15_000,
): Promise<any[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const rounds = await listRounds(rest, taskId);
    if (predicate(rounds)) return rounds;
    if (Date.now() > until) throw new Error(`round history did not reach the expected state: ${JSON.stringify(rounds, null, 1)}`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

/** Current global model of a task, via REST. */
export async function fetchWeights(rest: RestClient, taskId: string, version?: number): Promise<Float32Array> {
  const response = await rest.bytes(`/v1/tasks/${taskId}/model/weights.bin${version === undefined ? '' : `?version=${version}`}`);
  if (response.status !== 200) throw new Error(`weights.bin failed: ${response.status}`);
  return new Float32Array(response.bytes.buffer.slice(response.bytes.byteOffset, response.bytes.byteOffset + response.bytes.byteLength));
}

/** FedAvg computed independently in float64: base + Σ n_k Δ_k / Σ n_k. */
export function expectedFedAvg(base: Float32Array, updates: ReadonlyArray<{ delta: Float32Array; n: number }>): Float64Array {
  const total = updates.reduce((a, u) => a + u.n, 0);
  return Float64Array.from(base, (w, i) => w + updates.reduce((a, u) => a + u.n * u.delta[i]!, 0) / total);
}

/** Largest absolute difference between two vectors (Infinity on a length mismatch). */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) return Infinity;
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
  return max;
}

// ------------------------------------------------------------------ devices

export interface Device extends Disposable {
  readonly name: string;
  readonly clientId: string;
  readonly credential: string;
  readonly task: JoinResult['task'];
  readonly transport: Transport;
  /** Long-polls until the device is selected (throws when the task ends or `timeoutMs` passes). */
  nextAssignment(timeoutMs?: number): Promise<Assignment>;
  /** Downloads a model version (default the current one; size and SHA-256 verified by the transport) as floats. */
  download(version?: number | 'latest'): Promise<{ version: number; weights: Float32Array; sha256: string }>;
  /** Submits `delta` as a float32-LE update for `assignment`; `header` fields override the honest ones. */
  submit(
    assignment: Pick<Assignment, 'roundNumber' | 'modelVersion'>,
    delta: Float32Array | Uint8Array,
    exampleCount: number,
    header?: Partial<{ roundNumber: number; modelVersion: number; sha256: string; trainingLoss: number }>,
  ): Promise<{ acceptedCount: number }>;
  close(): void;
}

/**
 * Enrols a device with `secret` (default: the coordinator's enrolment secret), connecting to
 * `address` (default the coordinator's gRPC address; e.g. a proxy in front of it).
 */
export async function joinDevice(
  coordinator: Coordinator,
  taskId: string,
  name: string,
  secret = coordinator.enrolmentSecret ?? '',
  address = coordinator.grpcAddress,
): Promise<Device> {
  const transport = createGrpcTransport({ address, callTimeoutMs: 20_000 });
  let joined: JoinResult;
  try {
    joined = await transport.join({ taskId, enrolmentSecret: secret, clientName: name });
  } catch (error) {
    transport.close();
    throw error;
  }
  return deviceFor(coordinator, transport, name, joined);
}

/** Enrols a device that speaks the Connect protocol to the coordinator's HTTP port (the browser transport). */
export async function joinConnectDevice(
  coordinator: Coordinator,
  taskId: string,
  name: string,
  transportOptions: Partial<ConnectTransportOptions> = {},
): Promise<Device> {
  const transport = createConnectTransport({ baseUrl: coordinator.httpUrl, callTimeoutMs: 20_000, ...transportOptions });
  const joined = await transport.join({ taskId, enrolmentSecret: coordinator.enrolmentSecret ?? '', clientName: name });
  return deviceFor(coordinator, transport, name, joined);
}

/** A device resuming with a stored credential (a new channel, e.g. after a coordinator restart). */
export async function resumeDevice(coordinator: Coordinator, previous: Pick<Device, 'name' | 'clientId' | 'credential'>): Promise<Device> {
  const transport = createGrpcTransport({ address: coordinator.grpcAddress, callTimeoutMs: 20_000 });
  const task = await transport.getTask(previous.credential);
  return deviceFor(coordinator, transport, previous.name, { clientId: previous.clientId, credential: previous.credential, task });
}

function deviceFor(_coordinator: Coordinator, transport: Transport, name: string, joined: JoinResult): Device {
  const { clientId, credential, task } = joined;
  return {
    name,
    clientId,
    credential,
    task,
    transport,
    async nextAssignment(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs;
      while (Date.now() < until) {
        const r = await transport.waitForAssignment(credential, Math.min(5_000, Math.max(1, until - Date.now())));
        if (r.kind === 'assignment') return r.assignment;
        if (r.kind === 'ended') throw new Error(`task ended: ${r.taskStatus} ${r.reason}`);
      }
      throw new Error(`${name} was not selected within ${timeoutMs} ms`);
    },
    async download(version = 'latest') {
      const model = await transport.downloadModel(credential, version === 'latest' ? { latest: true } : { version });
      const bytes = Buffer.from(model.bytes);
      return { version: model.version, weights: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), sha256: model.sha256 };
    },
    submit(assignment, delta, exampleCount, header = {}) {
      const payload = delta instanceof Float32Array ? float32ToBytes(delta) : delta;
      return transport.submitUpdate(
        credential,
        {
          roundNumber: header.roundNumber ?? assignment.roundNumber,
          modelVersion: header.modelVersion ?? assignment.modelVersion,
          exampleCount,
          ...(header.trainingLoss !== undefined && { trainingLoss: header.trainingLoss }),
          encoding: 'float32-le',
          sha256: header.sha256 ?? sha256Hex(payload),
        },
        payload,
      );
    },
    close: () => transport.close(),
    [Symbol.dispose]: () => transport.close(),
  };
}

/** Joins `count` devices named `<prefix>-<i>`. Dispose the returned list to close them all. */
export async function joinDevices(coordinator: Coordinator, taskId: string, count: number, prefix = 'device'): Promise<Device[] & Disposable> {
  const devices = await Promise.all(Array.from({ length: count }, (_, i) => joinDevice(coordinator, taskId, `${prefix}-${i + 1}`)));
  return Object.assign(devices, { [Symbol.dispose]: () => devices.forEach((d) => d.close()) });
}

/** The gRPC status a rejected SDK call carried (the transport wraps it in a ClientError). */
export async function grpcStatusOf(promise: Promise<unknown>): Promise<{ code: grpc.status; details: string }> {
  try {
    await promise;
  } catch (error) {
    if (error instanceof ClientError) {
      const cause = error.cause as Partial<grpc.ServiceError> | undefined;
      if (typeof cause?.code === 'number') return { code: cause.code, details: cause.details ?? '' };
    }
    const e = error as Partial<grpc.ServiceError>;
    if (typeof e.code === 'number') return { code: e.code, details: e.details ?? '' };
    throw error;
  }
  throw new Error('expected the call to fail, it succeeded');
}

/**
 * Sends hand-made SubmitUpdate messages (for malformed streams the SDK never
 * produces) and returns the gRPC outcome.
 */
export function rawSubmit(
  coordinator: Coordinator,
  credential: string,
  messages: SubmitUpdateRequest[],
): Promise<{ ok: true; acceptedCount: number } | { ok: false; code: grpc.status; details: string }> {
  const client = createFederationServiceClient(coordinator.grpcAddress, grpc.credentials.createInsecure(), {
    ...GRPC_CHANNEL_OPTIONS,
  });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  return new Promise((resolve) => {
    const call = client.SubmitUpdate(metadata, { deadline: Date.now() + 20_000 }, (error, response) => {
      client.close();
      if (error) resolve({ ok: false, code: error.code, details: error.details });
      else resolve({ ok: true, acceptedCount: response?.acceptedCount ?? 0 });
    });
    call.on('error', () => {});
    for (const message of messages) call.write(message);
    call.end();
  });
}

/**
 * Stored client updates under `<dataDir>/blobs/updates`, as `tasks/<taskId>/<segment>.seg#<offset>` for each live
 * record of the segment files (erased records are not listed) and the relative path of any other file.
 */
export async function storedUpdateFiles(dataDir: string): Promise<string[]> {
  const root = join(dataDir, 'blobs', 'updates');
  let entries;
  try {
    entries = await readdir(root, { recursive: true, withFileTypes: true });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw error;
  }
  const out: string[] = [];
  for (const e of entries.filter((x) => x.isFile())) {
    const name = join(e.parentPath, e.name).slice(root.length + 1);
    if (!name.endsWith('.seg')) {
      out.push(name);
      continue;
    }
    for (const record of parseSegment(await readFile(join(root, name)))) if (record.live) out.push(`${name}#${record.offset}`);
  }
  return out;
}
