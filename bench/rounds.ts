/**
 * Round-engine benchmark of the CURRENT coordinator: plaintext and committee paths (issue 11), and
 * optionally the shared-key BFV path, measured in the same run, interleaved.
 *
 *   npx tsx bench/rounds.ts [--only small,scale,dropout] [--paths plaintext,committee[,shared-key]] [--committee 2-of-3]
 *     [--committee-encrypt before|live] [--committee-deadline-ms 300000] [--committee-c0-bits auto|44|36|32|24|16] [--db pg|pglite] [--pglite-too]
 *     [--small-clients 10] [--small-rounds 20] [--sizes 100,300,1000] [--scale-rounds 3]
 *     [--scale-deadline-ms 300000] [--dropout-clients 100] [--dropout-fraction 0.3]
 *     [--dropout-deadline-ms 10000] [--dropout-rounds 1] [--parameters 100000] [--devices-per-worker 250]
 *     [--poll-ms 30000] [--poll-ahead on|off] [--encrypted-pool 8] [--encrypted-weight-cap 16] [--cpu-prof] [--cpu-prof-devices] [--log-level silent] [--timeout-s 3600]
 *     [--database-url postgresql://postgres@127.0.0.1:5432/postgres]
 *
 * --cpu-prof profiles the coordinator process; --cpu-prof-devices the first device worker, over the
 * rounds window only (from the release to the end of its device loops). `deviceCpuMsPerClientRound`
 * is the device processes' CPU over that window per accepted update (`...ByThread`: split by thread
 * group, MainThread and V8Worker = concurrent GC marking and JIT compilation; with
 * `deviceGcPausesPerClientRound`, the main thread's GC pauses; `devicePageFaultsPerClientRound`, minor
 * page faults; `deviceSdkDist`, the SDK build the devices ran). BENCH_CPU_PROF_KEEP=DIR (coordinator) and
 * BENCH_CPU_PROF_DEVICES_KEEP=DIR (device worker) keep the .cpuprofile files there.
 *
 * A/B of device SDKs: BENCH_SDK_DIST=/abs/path/of/another/tree/packages/client-sdk/dist runs the
 * devices on that build (BENCH_SERVER_MODULE does the same for the coordinator, see
 * bench/rounds/coordinator.ts). The coordinator runs with @veil/server's COORDINATOR_NODE_OPTIONS (as the container
 * does; BENCH_COORDINATOR_NODE_OPTIONS replaces them). BENCH_COORDINATOR_EXEC_ARGV='--single-threaded-gc ...' passes more Node options to
 * the coordinator process (A/B of runtime flags). Every process it starts runs with the container's
 * GLIBC_TUNABLES (@veil/server COORDINATOR_ENVIRONMENT; BENCH_GLIBC_TUNABLES replaces them, empty:
 * none). The device worker processes run with
 * `--initial-old-space-size=64` (see DEVICE_NODE_OPTIONS_USED; BENCH_DEVICE_NODE_OPTIONS replaces it);
 * BENCH_DEVICE_EXEC_ARGV='--trace-gc ...' passes more Node options to them (diagnosis).
 *
 * Prints exactly one JSON object on stdout; progress goes to stderr. The plaintext path's results
 * are top-level (`small`, `scale`, `dropout`), the committee path's under `committee`, the
 * shared-key path's under `sharedKey`, with the same shapes; `committeeOverPlaintext` has the
 * ratios and `targets.committee` issue 11's targets. Each scenario (each scale size) runs on every
 * path before the next one, so that the machine's load drifts over both alike.
 *
 * Committee path (default): per run, a t-of-n committee (--committee, default 2-of-3) of
 * `custodian serve` processes on 127.0.0.1 (@veil/custodian startLocalCommittee: real gRPC, each
 * with its own durable state), an enrolment authority whose key stays in the benchmark's directory
 * (never the coordinator's), the authority-signed descriptor given to the coordinator, which holds
 * only its custodian request key. Each device generates an Ed25519 key, has it certified for its
 * client id (the stand-in for enrolment), checks the announced descriptor against its pins and
 * builds its uploads with the SDK's committee middleware: a fresh secret, c0, one sealed share per
 * custodian and a signed manifest, for each device and round; nothing is reused, no check is
 * bypassed. With --committee-encrypt before (default) the devices build their uploads after
 * joining and before the rounds start: the round window then measures the coordinator, the
 * custodians and the transport, as in a real federation each device encrypts on its own CPU, in
 * parallel (the build's wall and CPU time per upload is reported beside the rounds: about one
 * build per round adds to a real round's critical path). With `live` they build at submit time,
 * so this machine's two cores do every device's encryption inside the round.
 *
 * Shared-key path (--paths ...,shared-key): the task is created with a fresh BFV key bundle's
 * public half (default preset, weight cap --encrypted-weight-cap so that 1,000 clients fit the
 * headroom check); the benchmark encrypts --encrypted-pool real node-seal payloads of the devices'
 * delta (weight 1) before the run, and the devices submit them in turn; the benchmark's
 * coordinator process ignores the replay check's answer (the query still runs and is timed).
 *
 * Layout: the coordinator runs in its own child process (bench/rounds/coordinator.ts:
 * startCoordinator from the built @veil/server, PostgreSQL in a fresh database per
 * run, dropped afterwards), devices run in a few worker processes
 * (bench/rounds/devices.ts: one SDK gRPC transport, i.e. one HTTP/2 connection, per
 * device). Everything is on 127.0.0.1; every wait is bounded; the benchmark stops
 * by itself (global watchdog: --timeout-s).
 *
 * Needs the packages built: `npx tsc -b packages/cli`.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, readdir, readFile, writeFile } from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { execFileSync } from 'node:child_process';
import pg from 'pg';
import { startLocalCommittee, type LocalCommittee } from '@veil/custodian';
import { COORDINATOR_ENVIRONMENT, COORDINATOR_NODE_OPTIONS } from '../packages/server/src/runtime-options.js';
import { createHeContext, createUpdateEncryptor, generateKeyBundle, isC0Bits, serializeKeyMaterial, type C0Bits } from '../packages/crypto/src/index.js';
import {
  median,
  nowMs,
  quantile,
  round1,
  round3,
  type DeviceBehavior,
  type DeviceReport,
  type DeviceWorkerInit,
  type WorkerDone,
} from './rounds/common.js';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..');

const { values: args } = parseArgs({
  options: {
    only: { type: 'string', default: 'small,scale,dropout' },
    paths: { type: 'string' },
    /** Older name of --paths ('encrypted' = shared-key). */
    path: { type: 'string' },
    committee: { type: 'string', default: '2-of-3' },
    'committee-encrypt': { type: 'string', default: 'before' },
    /** The coordinator's committee request deadline (its default is 30 s; a loaded machine needs more at 1,000 devices). */
    'committee-deadline-ms': { type: 'string', default: '300000' },
    // The descriptor's encoding.c0Bits. auto: buildTaskDescriptor's policy (the narrowest width that decrypts
    // exactly at maxDevices); 44: the exact c0; fewer: compressed, with the largest Δ.
    'committee-c0-bits': { type: 'string', default: 'auto' },
    'encrypted-pool': { type: 'string', default: '8' },
    'encrypted-weight-cap': { type: 'string', default: '16' },
    db: { type: 'string', default: 'pg' },
    'pglite-too': { type: 'boolean', default: false },
    'small-clients': { type: 'string', default: '10' },
    'small-rounds': { type: 'string', default: '20' },
    sizes: { type: 'string', default: '100,300,1000' },
    'scale-rounds': { type: 'string', default: '3' },
    'scale-deadline-ms': { type: 'string', default: '300000' },
    'dropout-clients': { type: 'string', default: '100' },
    'dropout-fraction': { type: 'string', default: '0.3' },
    'dropout-deadline-ms': { type: 'string', default: '10000' },
    'dropout-rounds': { type: 'string', default: '1' },
    parameters: { type: 'string', default: '100000' },
    'devices-per-worker': { type: 'string', default: '250' },
    'poll-ms': { type: 'string', default: '30000' },
    'poll-ahead': { type: 'string', default: 'on' },
    'cpu-prof': { type: 'boolean', default: false },
    'cpu-prof-devices': { type: 'boolean', default: false },
    'log-level': { type: 'string', default: 'silent' },
    'timeout-s': { type: 'string', default: '3600' },
    'database-url': { type: 'string', default: process.env['BENCH_ADMIN_DATABASE_URL'] ?? 'postgresql://postgres@127.0.0.1:5432/postgres' },
  },
  strict: true,
});

const only = new Set(args.only.split(',').map((s) => s.trim()));
const PATH_NAMES = ['plaintext', 'committee', 'shared-key'] as const;
const pathNames = (args.paths ?? args.path ?? 'plaintext,committee')
  .split(',')
  .map((s) => s.trim())
  .map((s) => (s === 'encrypted' ? 'shared-key' : s)) as Array<(typeof PATH_NAMES)[number]>;
for (const p of pathNames) if (!PATH_NAMES.includes(p)) throw new Error(`--paths: unknown path '${p}' (${PATH_NAMES.join(', ')})`);
const COMMITTEE = (() => {
  const m = /^(\d+)-of-(\d+)$/.exec(args.committee.trim());
  const t = Number(m?.[1]);
  const n = Number(m?.[2]);
  if (!m || t < 2 || n < t || n > 32) throw new Error(`--committee: expected T-of-N with 2 <= T <= N <= 32, got '${args.committee}'`);
  return { t, n };
})();
const COMMITTEE_ENCRYPT = args['committee-encrypt'] as 'before' | 'live';
const COMMITTEE_C0_BITS: C0Bits | undefined = ((value: string) => {
  if (value === 'auto') return undefined;
  const bits = Number(value);
  if (!isC0Bits(bits)) throw new Error('--committee-c0-bits must be auto, 44, 36, 32, 24 or 16');
  return bits;
})(args['committee-c0-bits']);
if (COMMITTEE_ENCRYPT !== 'before' && COMMITTEE_ENCRYPT !== 'live') throw new Error(`--committee-encrypt: 'before' or 'live', got '${String(COMMITTEE_ENCRYPT)}'`);
const PARAMS = Number(args.parameters);
const MODEL_BYTES = PARAMS * 4;
const POLL_MS = Number(args['poll-ms']);
if (args['poll-ahead'] !== 'on' && args['poll-ahead'] !== 'off') throw new Error(`--poll-ahead: on or off, got ${args['poll-ahead']}`);
const POLL_AHEAD = args['poll-ahead'] === 'on';
const PER_WORKER = Math.max(1, Number(args['devices-per-worker']));
const splitOptions = (text: string): string[] => text.split(' ').filter((a) => a !== '');
/** BENCH_DEVICE_EXEC_ARGV: more Node options of the device worker processes (space-separated; e.g. --trace-gc), for diagnosis. */
const DEVICE_EXEC_ARGV = splitOptions(process.env['BENCH_DEVICE_EXEC_ARGV'] ?? '');
/**
 * The device worker processes stand in for devices that each have a CPU of their own, so the V8
 * work they do on this machine's shared cores is the simulation's cost, not the federation's. On
 * every path they run with `--initial-old-space-size=64` (MiB; BENCH_DEVICE_NODE_OPTIONS replaces
 * it, space-separated, empty: none). Why: a committee device process holds ~16 MB of live heap (the
 * committee modules; the uploads built before the rounds), and the full collection that setup
 * ends with sets V8's old-generation limit just above that, so the ~1-2 MB each round promotes
 * started a mark-compact every 2-4 rounds in every device process (--trace-gc: ~5 per device per
 * 20-round run, their marking on V8's helper threads), while plaintext device processes never
 * reached their first one. With the option the limit starts above the working set: no
 * mark-compact during the rounds on either path (A/B: bench/rounds/ab-device-heap-2026-12-08-s17.json).
 */
const DEVICE_NODE_OPTIONS_USED =
  process.env['BENCH_DEVICE_NODE_OPTIONS'] === undefined ? ['--initial-old-space-size=64'] : splitOptions(process.env['BENCH_DEVICE_NODE_OPTIONS']);
/**
 * The coordinator process runs with the Node.js options the product ships it with (@veil/server
 * COORDINATOR_NODE_OPTIONS, the container's entry point); BENCH_COORDINATOR_NODE_OPTIONS replaces
 * them (space-separated; empty: none, e.g. to A/B them). BENCH_COORDINATOR_EXEC_ARGV: more Node
 * options after those (space-separated; e.g. V8 GC flags to A/B, --trace-gc).
 */
const COORDINATOR_NODE_OPTIONS_USED =
  process.env['BENCH_COORDINATOR_NODE_OPTIONS'] === undefined ? [...COORDINATOR_NODE_OPTIONS] : splitOptions(process.env['BENCH_COORDINATOR_NODE_OPTIONS']);
const COORDINATOR_EXEC_ARGV = splitOptions(process.env['BENCH_COORDINATOR_EXEC_ARGV'] ?? '');
/**
 * Every Veil process this bench starts (the coordinator, the custodians, the device workers) runs
 * with @veil/server's COORDINATOR_ENVIRONMENT, glibc's malloc tunables, as every process of the
 * container image does (runtime-options.ts says why); BENCH_GLIBC_TUNABLES replaces them (empty:
 * glibc's defaults). They go into this process's environment, which its children inherit; glibc
 * reads them only when a process starts, so this process itself runs as it was started.
 */
const GLIBC_TUNABLES_USED = process.env['BENCH_GLIBC_TUNABLES'] ?? COORDINATOR_ENVIRONMENT['GLIBC_TUNABLES']!;
if (GLIBC_TUNABLES_USED === '') delete process.env['GLIBC_TUNABLES'];
else process.env['GLIBC_TUNABLES'] = GLIBC_TUNABLES_USED;
const log = (msg: string): void => {
  process.stderr.write(`[bench:rounds ${new Date().toISOString().slice(11, 23)}] ${msg}\n`);
};

// ---------------------------------------------------------------- process management
const children = new Set<ChildProcess>();
const tsxImport = import.meta.resolve('tsx');

interface Channel {
  child: ChildProcess;
  /** Resolves with the next message of `type` (messages of that type are queued). */
  next<T = Record<string, unknown>>(type: string, timeoutMs: number): Promise<T>;
  on(type: string, fn: (m: Record<string, unknown>) => void): void;
  exited: Promise<number | null>;
}

/** Busy and total CPU ticks of the whole machine, all cores (/proc/stat; idle = idle + iowait); null where there is none. */
function machineCpuTicks(): { busy: number; total: number } | null {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const t = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = t.reduce((a, b) => a + b, 0);
    return { busy: total - t[3]! - t[4]!, total };
  } catch {
    return null;
  }
}

/** CPU time of the device worker processes that reported (a killed worker reports nothing), ms: over their whole life, or the rounds only. */
function deviceCpuMs(r: RunResult, window: 'life' | 'rounds' = 'life'): number | null {
  const done = r.workers.map((w) => w.done).filter((d): d is WorkerDone => d !== null);
  return done.length === 0 ? null : round1(done.reduce((a, d) => a + (window === 'life' ? d.cpuMs : d.roundsCpuMs), 0));
}

/** Median over a device's rounds of its process's CPU in each phase (long-poll, download, upload), ms; meaningful with one device per worker. */
function deviceCpuByPhase(r: RunResult): Record<'wait' | 'download' | 'submit', number> {
  const recs = allDevices(r).flatMap((d) => d.rounds);
  return {
    wait: round3(median(recs.map((x) => x.cpuMs.wait))),
    download: round3(median(recs.map((x) => x.cpuMs.download))),
    submit: round3(median(recs.map((x) => x.cpuMs.submit))),
  };
}

/**
 * Per round (1, 2, ...), the median over devices of the device process's CPU during its long-poll,
 * download and upload of that round (one device per worker process): the first rounds' extra cost
 * (lazy compilation, protobuf codec generation, JIT tiering) apart from the steady state.
 */
function deviceCpuByRound(r: RunResult): number[] {
  const byRound = new Map<number, number[]>();
  for (const x of allDevices(r).flatMap((d) => d.rounds)) {
    const list = byRound.get(x.round) ?? [];
    list.push(x.cpuMs.wait + x.cpuMs.download + x.cpuMs.submit);
    byRound.set(x.round, list);
  }
  return [...byRound.entries()].sort((a, b) => a[0] - b[0]).map(([, xs]) => round1(median(xs)));
}

/**
 * The device processes' rounds-window CPU per client-round by thread group (MainThread; V8Worker:
 * concurrent marking and JIT compilation), and their main-thread GC pauses per client-round, ms.
 */
function deviceCpuDetail(r: RunResult, clientRounds: number): Record<string, unknown> {
  const done = r.workers.map((w) => w.done).filter((d): d is WorkerDone => d !== null);
  if (done.length === 0 || clientRounds === 0) return {};
  const byThread: Record<string, number> = {};
  for (const d of done) for (const [name, t] of Object.entries(d.roundsCpuByThreadMs ?? {})) byThread[name] = (byThread[name] ?? 0) + t.user + t.system;
  const gc = done.reduce((a, d) => ({ ms: a.ms + (d.roundsGcPauses?.ms ?? 0), majorMs: a.majorMs + (d.roundsGcPauses?.majorMs ?? 0), majorCount: a.majorCount + (d.roundsGcPauses?.majorCount ?? 0) }), { ms: 0, majorMs: 0, majorCount: 0 });
  return {
    deviceCpuMsPerClientRoundByThread: Object.fromEntries(Object.entries(byThread).filter(([, ms]) => ms > 0).map(([name, ms]) => [name, round3(ms / clientRounds)])),
    deviceGcPausesPerClientRound: { ms: round3(gc.ms / clientRounds), majorMs: round3(gc.majorMs / clientRounds), majorCount: round3(gc.majorCount / clientRounds) },
    devicePageFaultsPerClientRound: round3(done.reduce((a, d) => a + (d.roundsMinorPageFaults ?? 0), 0) / clientRounds),
    deviceSdkDist: [...new Set(done.map((d) => d.sdkDist))],
  };
}

/** The device processes' CPU per client-round, rounds window only (release to the end of the device loops), ms. */
function deviceCpuMsPerClientRound(r: RunResult, clientRounds: number): number | null {
  const ms = deviceCpuMs(r, 'rounds');
  return ms === null || clientRounds === 0 ? null : round3(ms / clientRounds);
}

function spawnChild(file: string, env: Record<string, string>, execArgv: string[] = []): Channel {
  const child = fork(join(here, 'rounds', file), [], {
    cwd: repoRoot,
    execArgv: ['--import', tsxImport, ...execArgv],
    env: { ...process.env, ...env },
    stdio: ['ignore', 2, 2, 'ipc'],
  });
  children.add(child);
  const queues = new Map<string, Record<string, unknown>[]>();
  const waiters = new Map<string, Array<(m: Record<string, unknown>) => void>>();
  const listeners = new Map<string, Array<(m: Record<string, unknown>) => void>>();
  const receive = (m: Record<string, unknown>): void => {
    const type = String(m['type']);
    if (type === 'error') log(`child ${file} error: ${String(m['message'])}`);
    for (const fn of listeners.get(type) ?? []) fn(m);
    const w = waiters.get(type);
    if (w && w.length > 0) w.shift()!(m);
    else queues.set(type, [...(queues.get(type) ?? []), m]);
  };
  // The coordinator sends the engine events of one tick together (bench/rounds/coordinator.ts).
  child.on('message', (m: Record<string, unknown>) => {
    if (m['type'] === 'events') for (const e of m['events'] as Record<string, unknown>[]) receive(e);
    else receive(m);
  });
  const exited = new Promise<number | null>((resolve) =>
    child.once('exit', (code) => {
      children.delete(child);
      resolve(code);
    }),
  );
  return {
    child,
    exited,
    on(type, fn) {
      listeners.set(type, [...(listeners.get(type) ?? []), fn]);
    },
    next<T>(type: string, timeoutMs: number): Promise<T> {
      const q = queues.get(type);
      if (q && q.length > 0) return Promise.resolve(q.shift() as T);
      return new Promise<T>((resolve, reject) => {
        const timer = setTimeout(() => {
          const list = waiters.get(type) ?? [];
          waiters.set(type, list.filter((x) => x !== done));
          reject(new Error(`timed out after ${timeoutMs} ms waiting for '${type}' from ${file}`));
        }, timeoutMs);
        const done = (m: Record<string, unknown>): void => {
          clearTimeout(timer);
          resolve(m as T);
        };
        waiters.set(type, [...(waiters.get(type) ?? []), done]);
        void exited.then((code) => {
          if ((waiters.get(type) ?? []).includes(done)) {
            clearTimeout(timer);
            waiters.set(type, (waiters.get(type) ?? []).filter((x) => x !== done));
            reject(new Error(`${file} exited (code ${code}) before sending '${type}'`));
          }
        });
      });
    },
  };
}

function killAll(): void {
  for (const child of children) child.kill('SIGKILL');
}

// ---------------------------------------------------------------- PostgreSQL
interface Db {
  url: string | undefined;
  name: string | null;
  drop(): Promise<void>;
  stats(): Promise<Record<string, number> | null>;
}

async function createDatabase(kind: 'pg' | 'pglite', label: string): Promise<Db> {
  if (kind === 'pglite') return { url: undefined, name: null, drop: async () => {}, stats: async () => null };
  const name = `veil_bench_${process.pid}_${label.replace(/[^a-z0-9]/gi, '_')}_${Date.now() % 1e6}`.toLowerCase();
  const admin = new pg.Client({ connectionString: args['database-url'] });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name}`);
  } finally {
    await admin.end();
  }
  const url = new URL(args['database-url']);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    name,
    async stats() {
      const c = new pg.Client({ connectionString: args['database-url'] });
      await c.connect();
      try {
        const r = await c.query(
          `SELECT xact_commit, xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched, tup_returned, blks_hit, blks_read
             FROM pg_stat_database WHERE datname = $1`,
          [name],
        );
        const row = r.rows[0] as Record<string, string> | undefined;
        return row ? Object.fromEntries(Object.entries(row).map(([k, v]) => [k, Number(v)])) : null;
      } finally {
        await c.end();
      }
    },
    async drop() {
      const c = new pg.Client({ connectionString: args['database-url'] });
      await c.connect();
      try {
        await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await c.end();
      }
    },
  };
}

// ---------------------------------------------------------------- encrypted path: keys and precomputed payloads
interface Encryption {
  /** The public half of the key bundle, as `POST /v1/tasks` takes it. */
  coordinatorKey: unknown;
  payloadFiles: string[];
  ciphertextBytes: number;
  keyId: string;
  preset: string;
  weightCap: number;
  encryptMsPerPayload: number[];
}

/** A fresh key bundle (kept in memory; only public material leaves this process) and `count` encrypted payloads on disk. */
async function prepareEncryption(dir: string, count: number, weightCap: number): Promise<Encryption> {
  const bundle = await generateKeyBundle({ taskId: 'bench-rounds', quantization: { weightCap } });
  const ctx = await createHeContext(bundle.device);
  const encryptor = createUpdateEncryptor(ctx, { deviceKey: bundle.device });
  const delta = new Float32Array(PARAMS).fill(1e-3); // the devices' delta on the plaintext path
  const payloadFiles: string[] = [];
  const encryptMsPerPayload: number[] = [];
  let ciphertextBytes = 0;
  try {
    for (let i = 0; i < count; i++) {
      const started = nowMs();
      const payload = encryptor.encrypt(delta, 1);
      encryptMsPerPayload.push(round1(nowMs() - started));
      ciphertextBytes = payload.byteLength;
      const file = join(dir, `update-${i}.bin`);
      await writeFile(file, payload);
      payloadFiles.push(file);
    }
  } finally {
    encryptor.dispose();
    ctx.dispose();
  }
  return {
    coordinatorKey: JSON.parse(Buffer.from(serializeKeyMaterial(bundle.coordinator)).toString('utf8')),
    payloadFiles,
    ciphertextBytes,
    keyId: bundle.coordinator.keyId,
    preset: bundle.coordinator.preset,
    weightCap,
    encryptMsPerPayload,
  };
}

// ---------------------------------------------------------------- one run: a coordinator, a task, device workers
interface Group {
  count: number;
  behavior: DeviceBehavior;
  name: string;
}

interface RunSpec {
  label: string;
  db: 'pg' | 'pglite';
  rounds: number;
  clientsPerRound: number;
  minClients: number;
  minAvailableClients: number;
  roundDeadlineMs: number;
  groups: Group[];
  /** Bound on the whole run after the task starts. */
  runTimeoutMs: number;
  /** SIGKILL the workers of the `hold` group once all their devices hold an assignment. */
  killHolders?: boolean;
  /** Shared-key BFV path (absent: plaintext). */
  encryption?: Encryption;
  /** Committee path (issue 11): a t-of-n committee of local custodian processes (absent: plaintext). */
  committee?: CommitteeSpec;
}

interface CommitteeSpec {
  threshold: number;
  custodians: number;
  encrypt: 'before' | 'live';
}

interface EngineEvent {
  name: string;
  t: number;
  round: number;
  /** round-closed: the coordinator process's CPU so far (user + system), ms. */
  cpuMs?: number;
  state?: string;
  targetCount?: number;
  receivedCount?: number;
  deadlineAt?: number;
  closedAt?: number | null;
  summary?: { participants: number; dropped: number; aggregationMs: number } | null;
  clientId?: string;
  status?: string;
  reason?: string;
  failureReason?: string | null;
}

interface RunResult {
  spec: RunSpec;
  ready: Record<string, unknown>;
  startedAt: number;
  events: EngineEvent[];
  workers: Array<{ group: Group; done: WorkerDone | null; killedAt: number | null }>;
  closed: Record<string, unknown> | null;
  pgStats: Record<string, number> | null;
  joinMs: number;
  timedOut: boolean;
  cpuProfile: string | null;
  deviceCpuProfile: string | null;
  /** Share of the machine's CPU time (all cores) that was busy from the task's start to its end (/proc/stat). */
  machineCpuBusy: number | null;
  /** That busy time in ms (share x cores x wall time). */
  machineCpuMs: number | null;
  /** When the parent released the devices to poll (every worker joined and, on the committee path, built its uploads). */
  releasedAt: number;
  /** Committee path: the custodian processes' CPU time over the rounds (sum, ms), and their count. */
  custodianCpuMs: number | null;
  custodianCount: number;
  /** Committee path: the signed descriptor's bits per c0 coefficient (44: exact). */
  c0Bits: C0Bits | null;
}

/** Clock ticks per second of /proc/<pid>/stat times (USER_HZ: 100 on Linux). */
const CLOCK_TICKS = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

/** CPU ticks (user + system) of this process's custodian children (`custodian serve` via startLocalCommittee). */
function custodianCpuTicks(): { ticks: number; processes: number } | null {
  try {
    let ticks = 0;
    let processes = 0;
    for (const pid of readdirSync('/proc')) {
      if (!/^\d+$/.test(pid)) continue;
      let stat: string;
      let cmdline: string;
      try {
        stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
        cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      } catch {
        continue;
      }
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) !== process.pid || !cmdline.includes('serve-process')) continue;
      ticks += Number(fields[11]) + Number(fields[12]);
      processes++;
    }
    return { ticks, processes };
  } catch {
    return null;
  }
}

async function runOnce(spec: RunSpec): Promise<RunResult> {
  const coords: Channel[] = [];
  const db = await createDatabase(spec.db, spec.label);
  const dataDir = await mkdtemp(join(tmpdir(), `veil-bench-${spec.label}-`));
  const profDir = args['cpu-prof'] ? join(dataDir, 'prof') : null;
  const profDevicesDir = args['cpu-prof-devices'] ? join(dataDir, 'prof-devices') : null;
  if (profDevicesDir !== null) await mkdir(profDevicesDir, { recursive: true });
  // Committee path: the custodians run as `custodian serve` processes on loopback (real gRPC), with an
  // enrolment authority whose key stays in this process's directory, never the coordinator's.
  let committee: LocalCommittee | null = null;
  const workers: RunResult['workers'] = [];
  try {
    if (spec.committee) {
      committee = await startLocalCommittee({
        dir: join(dataDir, 'committee'),
        taskId: randomUUID(),
        custodians: spec.committee.custodians,
        threshold: spec.committee.threshold,
        minDevices: spec.minClients,
        maxDevices: Math.max(spec.clientsPerRound, 10),
        maxRounds: spec.rounds,
        encoding: { weightCap: 1, ...(COMMITTEE_C0_BITS !== undefined && { c0Bits: COMMITTEE_C0_BITS }) },
        logLevel: 'warn',
      });
      log(`${spec.label}: ${spec.committee.threshold}-of-${spec.committee.custodians} committee on ${committee.addresses.join(', ')}`);
    }
    const coord = spawnChild(
      'coordinator.ts',
      {
        BENCH_DATA_DIR: dataDir,
        BENCH_DATABASE_URL: db.url ?? '',
        BENCH_LOG_LEVEL: args['log-level'],
        ...(committee && { BENCH_COMMITTEE_REQUEST_KEY: committee.paths.requestKey, BENCH_COMMITTEE_DEADLINE_MS: args['committee-deadline-ms'] }),
      },
      [...COORDINATOR_NODE_OPTIONS_USED, ...COORDINATOR_EXEC_ARGV, ...(profDir ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [])],
    );
    coords.push(coord);
    const ready = await coord.next('ready', 60_000);
    log(`${spec.label}: coordinator ready on ${String(ready['grpcAddress'])} (${String(ready['databaseKind'])})`);
    const events: EngineEvent[] = [];
    coord.on('event', (m) => events.push(m as unknown as EngineEvent));

    const totalClients = spec.groups.reduce((a, g) => a + g.count, 0);
    coord.child.send({
      cmd: 'createTask',
      parameterCount: PARAMS,
      reusedPayloads: spec.encryption !== undefined,
      input: {
        ...(spec.encryption && { encryption: { mode: 'bfv', coordinatorKey: spec.encryption.coordinatorKey } }),
        ...(committee && { committee: { descriptor: Buffer.from(committee.descriptorBytes).toString('base64'), descriptorSignature: committee.signed.signature } }),
        name: `bench ${spec.label}`,
        rounds: spec.rounds,
        clientsPerRound: spec.clientsPerRound,
        minClients: spec.minClients,
        minAvailableClients: spec.minAvailableClients,
        roundDeadlineMs: spec.roundDeadlineMs,
        training: { epochs: 1, batchSize: 32, learningRate: 0.01 },
      },
    });
    const { taskId } = await coord.next<{ taskId: string }>('task', 30_000);

    // Device workers.
    // Devices may join RUNNING tasks only: start the task first. No round selects before
    // minAvailableClients devices poll, so the rounds still begin once the devices have joined.
    coord.child.send({ cmd: 'startTask', taskId });
    const started = await coord.next<{ t: number }>('started', 60_000);
    const joinStarted = nowMs();
    const hardStopAt = joinStarted + spec.runTimeoutMs + 60_000;
    const channels: Array<{ ch: Channel; group: Group; index: number }> = [];
    for (const group of spec.groups) {
      const nWorkers = Math.max(1, Math.ceil(group.count / PER_WORKER));
      for (let w = 0; w < nWorkers; w++) {
        const count = Math.floor(group.count / nWorkers) + (w < group.count % nWorkers ? 1 : 0);
        const profileThis = profDevicesDir !== null && workers.length === 0;
        const ch = spawnChild('devices.ts', {}, [...DEVICE_NODE_OPTIONS_USED, ...DEVICE_EXEC_ARGV]);
        const init: DeviceWorkerInit = {
          cmd: 'init',
          address: String(ready['grpcAddress']),
          taskId,
          enrolmentSecret: String(ready['enrolmentSecret']),
          count,
          namePrefix: `${group.name}-${w}`,
          behavior: group.behavior,
          parameterCount: PARAMS,
          pollMs: POLL_MS,
          pollAhead: POLL_AHEAD,
          maxIterations: spec.rounds * 6 + 50,
          hardStopAt,
          joinConcurrency: 8,
          ...(profileThis && { roundsCpuProfileFile: join(profDevicesDir, 'worker-0-rounds.cpuprofile') }),
          ...(spec.encryption && { encryptedPayloadFiles: spec.encryption.payloadFiles }),
          ...(committee &&
            spec.committee && {
              committee: {
                authorityDir: committee.paths.authority,
                pins: {
                  minDevices: spec.minClients,
                  maxRounds: spec.rounds,
                  pinnedFingerprints: [...committee.fingerprints],
                  authorityKey: committee.signed.descriptor.authorityKey,
                },
                encrypt: spec.committee.encrypt,
                rounds: spec.rounds,
              },
            }),
        };
        ch.child.send(init);
        const entry = { group, done: null as WorkerDone | null, killedAt: null as number | null };
        workers.push(entry);
        channels.push({ ch, group, index: workers.length - 1 });
      }
    }
    // Committee devices built their uploads before 'joined' with encrypt=before: allow for it.
    await Promise.all(channels.map(({ ch }) => ch.next('joined', spec.committee ? 1_800_000 : 300_000)));
    const joinMs = nowMs() - joinStarted;
    log(`${spec.label}: ${totalClients} devices joined in ${Math.round(joinMs)} ms over ${channels.length} worker(s)`);
    // Release every device at once (the first round's time starts here or at round-opened, whichever is later).
    const releasedAt = nowMs();
    for (const { ch } of channels) ch.child.send({ cmd: 'go' });
    const custodianCpuAtStart = committee ? custodianCpuTicks() : null;

    // Dropout: kill the holders' processes once every holder was handed its assignment.
    const holders = channels.filter((c) => c.group.behavior === 'hold');
    if (spec.killHolders && holders.length > 0) {
      const need = holders.reduce((a, c) => a + c.group.count / holders.length, 0);
      let assigned = 0;
      for (const h of holders) {
        h.ch.on('assigned', () => {
          assigned++;
          if (assigned >= need) {
            for (const x of holders) {
              if (workers[x.index]!.killedAt === null) {
                workers[x.index]!.killedAt = nowMs();
                x.ch.child.kill('SIGKILL');
              }
            }
            log(`${spec.label}: SIGKILLed ${holders.length} worker(s) holding ${assigned} selected devices`);
          }
        });
      }
    }

    if (spec.killHolders && holders.length > 0) {
      // Fallback: a holder may not be selected at all; kill them 2 s into the first collection anyway.
      coord.on('event', (m) => {
        if (m['name'] !== 'round-collecting' || m['round'] !== 1) return;
        setTimeout(() => {
          for (const x of holders) {
            if (workers[x.index]!.killedAt === null) {
              workers[x.index]!.killedAt = nowMs();
              x.ch.child.kill('SIGKILL');
            }
          }
        }, 2_000).unref();
      });
    }

    await new Promise((resolve) => setTimeout(resolve, 300)); // let every device's first long-poll arrive
    const cpuAtStart = machineCpuTicks();
    const cpuWindowStarted = nowMs();
    log(`${spec.label}: task started (${spec.rounds} rounds, ${spec.clientsPerRound} per round, deadline ${spec.roundDeadlineMs} ms)`);

    let timedOut = false;
    const ended = await new Promise<boolean>((resolve) => {
      const deadline = setTimeout(() => {
        clearInterval(timer);
        resolve(false);
      }, spec.runTimeoutMs);
      const timer = setInterval(() => {
        if (events.some((e) => e.name === 'task-ended')) {
          clearInterval(timer);
          clearTimeout(deadline);
          resolve(true);
        }
      }, 20);
    });
    const cpuAtEnd = machineCpuTicks();
    const custodianCpuAtEnd = committee ? custodianCpuTicks() : null;
    const machineCpuBusy =
      cpuAtStart && cpuAtEnd && cpuAtEnd.total > cpuAtStart.total ? round3((cpuAtEnd.busy - cpuAtStart.busy) / (cpuAtEnd.total - cpuAtStart.total)) : null;
    // CPU time the whole machine spent (all processes, all cores) from the task's start to its end.
    const machineCpuMs = machineCpuBusy === null ? null : round1(machineCpuBusy * cpus().length * (nowMs() - cpuWindowStarted));
    if (ended !== true) {
      timedOut = true;
      log(`${spec.label}: task did not end within ${spec.runTimeoutMs} ms`);
    }
    const closedRounds = events.filter((e) => e.name === 'round-closed' || e.name === 'round-failed').length;
    log(`${spec.label}: ${closedRounds} rounds settled`);

    // Collect device reports (a killed worker reports nothing).
    await Promise.all(
      channels.map(async ({ ch, index }) => {
        if (workers[index]!.killedAt !== null) return;
        try {
          workers[index]!.done = await ch.next<WorkerDone>('done', timedOut ? 5_000 : 60_000);
        } catch (error) {
          log(`${spec.label}: worker ${index}: ${(error as Error).message}`);
          ch.child.kill('SIGKILL');
        }
      }),
    );

    coord.child.send({ cmd: 'close' });
    const closed = await coord.next('closed', 60_000).catch((error: Error) => {
      log(`${spec.label}: ${error.message}`);
      return null;
    });
    await Promise.race([coord.exited, new Promise((r) => setTimeout(r, 10_000))]);
    let cpuProfile: string | null = null;
    if (profDir) {
      const files = await readdir(profDir).catch(() => [] as string[]);
      if (files[0]) cpuProfile = summarizeProfile(JSON.parse(await readFile(join(profDir, files[0]), 'utf8')));
      const keep = process.env['BENCH_CPU_PROF_KEEP'];
      if (files[0] && keep) await writeFile(join(keep, `${spec.label}-coordinator-${Date.now()}.cpuprofile`), await readFile(join(profDir, files[0])));
    }
    let deviceCpuProfile: string | null = null;
    if (profDevicesDir) {
      const files = await readdir(profDevicesDir).catch(() => [] as string[]);
      if (files[0]) deviceCpuProfile = summarizeProfile(JSON.parse(await readFile(join(profDevicesDir, files[0]), 'utf8')));
      const keep = process.env['BENCH_CPU_PROF_DEVICES_KEEP'];
      if (files[0] && keep) await writeFile(join(keep, `${spec.label}-${Date.now()}.cpuprofile`), await readFile(join(profDevicesDir, files[0])));
    }
    const pgStats = await db.stats().catch(() => null);
    const custodianCpuMs =
      custodianCpuAtStart && custodianCpuAtEnd ? round1(((custodianCpuAtEnd.ticks - custodianCpuAtStart.ticks) * 1000) / CLOCK_TICKS) : null;
    return {
      spec,
      ready,
      startedAt: started.t,
      events,
      workers,
      closed,
      pgStats,
      joinMs,
      timedOut,
      cpuProfile,
      deviceCpuProfile,
      machineCpuBusy,
      machineCpuMs,
      releasedAt,
      custodianCpuMs,
      custodianCount: custodianCpuAtEnd?.processes ?? 0,
      c0Bits: committee === null ? null : (committee.signed.descriptor.encoding.c0Bits ?? 44),
    };
  } finally {
    for (const { child } of coords) if (child.exitCode === null) child.kill('SIGKILL');
    for (const c of [...children]) c.kill('SIGKILL');
    await committee?.close().catch((error: Error) => log(`stopping the committee failed: ${error.message}`));
    await db.drop().catch((error: Error) => log(`dropping database failed: ${error.message}`));
    await rm(dataDir, { recursive: true, force: true });
  }
}

/** Top self-time functions of a V8 .cpuprofile (text, for the report). */
function summarizeProfile(profile: { nodes: Array<{ id: number; callFrame: { functionName: string; url: string; lineNumber: number } }>; samples: number[]; timeDeltas: number[] }): string {
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<string, number>();
  let total = 0;
  for (let i = 0; i < profile.samples.length; i++) {
    const node = byId.get(profile.samples[i]!);
    const dt = profile.timeDeltas[i] ?? 0;
    total += dt;
    if (!node) continue;
    const f = node.callFrame;
    const key = `${f.functionName || '(anonymous)'} ${f.url.replace(/^.*node_modules\//, '').replace(/^file:\/\/.*\/packages\//, '')}:${f.lineNumber + 1}`;
    self.set(key, (self.get(key) ?? 0) + dt);
  }
  const top = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, 25);
  const category = (key: string): string => {
    if (key.startsWith('(idle)')) return 'idle';
    if (key.startsWith('(garbage collector)')) return 'gc';
    if (key.startsWith('(program)')) return 'program';
    if (/@prisma|\.prisma|query_engine|wasm/.test(key)) return 'prisma';
    if (/@grpc|grpc-js|proto-loader|protobufjs/.test(key)) return 'grpc+protobuf';
    if (/^\S+ pg|pg-protocol|pg-pool|\/pg\//.test(key)) return 'pg driver';
    if (/pino|thread-stream/.test(key)) return 'logging';
    if (/tsx\//.test(key)) return 'tsx loader';
    if (/server\/dist|protocol\/dist|client-sdk\/dist/.test(key)) return 'veil code';
    if (/bench\/rounds/.test(key)) return 'bench instrumentation';
    if (/node:/.test(key)) return 'node js internals';
    return 'native/other';
  };
  const cats = new Map<string, number>();
  for (const [k, v] of self) cats.set(category(k), (cats.get(category(k)) ?? 0) + v);
  const catLine = [...cats.entries()].sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${Math.round(v / 1000)} ms`).join(', ');
  return [`total ${Math.round(total / 1000)} ms`, `self time by category: ${catLine}`, ...top.map(([k, v]) => `${(v / 1000).toFixed(1).padStart(8)} ms ${((100 * v) / total).toFixed(1).padStart(5)}%  ${k}`)].join('\n');
}

// ---------------------------------------------------------------- analysis
const byRound = (events: EngineEvent[], name: string): Map<number, EngineEvent> => {
  const m = new Map<number, EngineEvent>();
  for (const e of events) if (e.name === name && !m.has(e.round)) m.set(e.round, e);
  return m;
};

function allDevices(r: RunResult): DeviceReport[] {
  return r.workers.flatMap((w) => w.done?.devices ?? []);
}

/** Round times: round 1 from round-opened (task start) or the devices' release if later, later rounds close-to-close (the full cycle). */
function roundTimes(r: RunResult): { roundMs: number[]; engineRoundMs: number[] } {
  const opened = byRound(r.events, 'round-opened');
  const settled = new Map([...byRound(r.events, 'round-failed'), ...byRound(r.events, 'round-closed')]);
  const roundMs: number[] = [];
  const engineRoundMs: number[] = [];
  for (let n = 1; n <= r.spec.rounds; n++) {
    const c = settled.get(n);
    const o = opened.get(n);
    if (!c || !o) break;
    const prev = settled.get(n - 1);
    // Round 1 from round-opened or from the devices' release, whichever is later (joining, and the
    // committee devices' upload building, are not part of a round).
    roundMs.push(c.t - (prev ? prev.t : Math.max(o.t, r.releasedAt)));
    engineRoundMs.push(c.t - o.t);
  }
  return { roundMs, engineRoundMs };
}

function phases(r: RunResult): Record<string, number> {
  const opened = byRound(r.events, 'round-opened');
  const collecting = byRound(r.events, 'round-collecting');
  const closed = byRound(r.events, 'round-closed');
  const accepted = r.events.filter((e) => e.name === 'update-accepted');
  const devs = allDevices(r);
  const per: Record<string, number[]> = {
    openToCollectingMs: [],
    collectingToFirstAssignmentMs: [],
    collectingToLastAssignmentMs: [],
    assignmentToDownloadedMs: [],
    downloadedToSubmittedMs: [],
    collectingToLastPreviousAckMs: [],
    collectingToFirstAcceptedMs: [],
    collectingToLastAcceptedMs: [],
    lastAcceptedToClosedMs: [],
    closedToNextOpenedMs: [],
  };
  for (let n = 1; n <= r.spec.rounds; n++) {
    const o = opened.get(n);
    const c = collecting.get(n);
    const cl = closed.get(n);
    if (!o || !c) continue;
    per['openToCollectingMs']!.push(c.t - o.t);
    const recs = devs.flatMap((d) => d.rounds.filter((x) => x.round === n));
    if (recs.length > 0) {
      per['collectingToFirstAssignmentMs']!.push(Math.min(...recs.map((x) => x.assignedAt)) - c.t);
      per['collectingToLastAssignmentMs']!.push(Math.max(...recs.map((x) => x.assignedAt)) - c.t);
      per['assignmentToDownloadedMs']!.push(median(recs.map((x) => x.downloadedAt - x.assignedAt)));
      per['downloadedToSubmittedMs']!.push(median(recs.map((x) => x.submittedAt - x.downloadedAt)));
    }
    // The devices that submitted last in round n-1 hear their acknowledgement only after round n is
    // collecting (the coordinator answers them after the close and open): they ask for work again only then.
    const previous = devs.flatMap((d) => d.rounds.filter((x) => x.round === n - 1));
    if (n > 1 && previous.length > 0) per['collectingToLastPreviousAckMs']!.push(Math.max(...previous.map((x) => x.submittedAt)) - c.t);
    const acc = accepted.filter((e) => e.round === n).map((e) => e.t);
    if (acc.length > 0) {
      per['collectingToFirstAcceptedMs']!.push(Math.min(...acc) - c.t);
      per['collectingToLastAcceptedMs']!.push(Math.max(...acc) - c.t);
      if (cl) per['lastAcceptedToClosedMs']!.push(cl.t - Math.max(...acc));
    }
    const nextOpened = opened.get(n + 1);
    if (cl && nextOpened) per['closedToNextOpenedMs']!.push(nextOpened.t - cl.t);
  }
  return Object.fromEntries(Object.entries(per).filter(([, v]) => v.length > 0).map(([k, v]) => [k, round1(median(v))]));
}

function wire(r: RunResult, clientRounds: number, enc?: Encryption): Record<string, unknown> {
  const devs = allDevices(r);
  const sum = (pick: (d: DeviceReport) => { read: number; written: number }): { read: number; written: number } =>
    devs.reduce((a, d) => ({ read: a.read + pick(d).read, written: a.written + pick(d).written }), { read: 0, written: 0 });
  const total = sum((d) => d.bytes.total);
  const both = total.read + total.written;
  const perPhase = (p: 'join' | 'wait' | 'download' | 'submit'): number => {
    const s = sum((d) => d.bytes[p]);
    return Math.round((s.read + s.written) / clientRounds);
  };
  const processTotal = r.workers.reduce((a, w) => a + (w.done ? w.done.processBytes.read + w.done.processBytes.written : 0), 0);
  const perClientRound = both / clientRounds;
  const withoutJoin = (both - (sum((d) => d.bytes.join).read + sum((d) => d.bytes.join).written)) / clientRounds;
  // The payloads a client-round has to move at the least: the model version it downloads (if new to it) and its update.
  const records = devs.flatMap((d) => d.rounds);
  const payloadBytes = records.reduce((a, x) => a + (x.modelBytes ?? 0) + (x.updateBytes ?? 0), 0) / Math.max(1, records.length);
  const modelSizes = [...new Set(records.map((x) => x.modelBytes ?? 0).filter((b) => b > 0))].sort((a, b) => a - b);
  return {
    wireBytesPerClientRound: Math.round(perClientRound),
    modelCopiesPerClientRound: round3(perClientRound / MODEL_BYTES),
    modelCopiesPerClientRoundExcludingJoin: round3(withoutJoin / MODEL_BYTES),
    ...(enc && {
      // Copies of the device's encrypted update (what it uploads), and the sizes involved.
      ciphertextCopiesPerClientRound: round3(perClientRound / enc.ciphertextBytes),
      sizesBytes: { float32Model: MODEL_BYTES, ciphertextUpdate: enc.ciphertextBytes, downloadedModelVersions: modelSizes },
    }),
    payloadBytesPerClientRound: Math.round(payloadBytes),
    wireOverPayloadBytes: payloadBytes > 0 ? round3(perClientRound / payloadBytes) : null,
    bytesPerClientRoundByPhase: {
      join: perPhase('join'),
      longPoll: perPhase('wait'),
      download: perPhase('download'),
      submit: perPhase('submit'),
      downstream: Math.round(total.read / clientRounds),
      upstream: Math.round(total.written / clientRounds),
    },
    tcpConnectionsPerDevice: devs.length > 0 ? round3(devs.reduce((a, d) => a + d.sockets, 0) / devs.length) : null,
    crossCheckProcessSocketsBytes: processTotal,
    attributedBytes: both,
  };
}

/**
 * Coordinator CPU from round 1's close to the last round's close, per accepted update: the
 * steady rounds alone. (`cpuMs` starts at startTask, which the devices' joins and round 1 follow.)
 */
function roundsCpu(r: RunResult): { cpuMsAfterRound1: number; cpuMsPerClientRoundAfterRound1: number } | Record<string, never> {
  const closed = r.events.filter((e) => e.name === 'round-closed' && typeof e.cpuMs === 'number');
  if (closed.length < 2) return {};
  const first = closed[0]!;
  const last = closed[closed.length - 1]!;
  const updates = closed.slice(1).reduce((a, e) => a + (e.summary?.participants ?? 0), 0);
  if (updates === 0) return {};
  const ms = last.cpuMs! - first.cpuMs!;
  return { cpuMsAfterRound1: round1(ms), cpuMsPerClientRoundAfterRound1: round3(ms / updates) };
}

function coordinatorSummary(r: RunResult): Record<string, unknown> {
  const c = r.closed ?? {};
  const mb = (x: unknown): number | null => (typeof x === 'number' ? round1(x / 2 ** 20) : null);
  const timings = (c['timings'] ?? {}) as Record<string, { calls: number; totalMs: number; maxMs: number }>;
  return {
    peakRssMiB: mb(c['vmHwm'] ?? c['peakRssSampled']),
    peakRssSampledMiB: mb(c['peakRssSampled']),
    baselineRssMiB: mb(r.ready['baselineRss']),
    peakArrayBuffersMiB: mb(c['peakArrayBuffers']),
    peakHeapUsedMiB: mb(c['peakHeapUsed']),
    memoryAtPeakMiB: c['memoryAtPeak'] ? Object.fromEntries(Object.entries(c['memoryAtPeak'] as Record<string, number>).map(([k, v]) => [k, mb(v)])) : null,
    ...(c['memoryTimeline'] ? { memoryTimelineMiB: { columns: 'ms since start, rss, heapTotal, heapUsed, external, arrayBuffers', samples: c['memoryTimeline'] } } : {}),
    cpuMs: round1(Number(c['cpuUserMs'] ?? 0) + Number(c['cpuSystemMs'] ?? 0)),
    ...roundsCpu(r),
    cpuUserMs: round1(Number(c['cpuUserMs'] ?? 0)),
    cpuSystemMs: round1(Number(c['cpuSystemMs'] ?? 0)),
    cpuByThreadMs: c['cpuByThreadMs']
      ? Object.fromEntries(Object.entries(c['cpuByThreadMs'] as Record<string, { user: number; system: number }>).map(([k, v]) => [k, { user: round1(v.user), system: round1(v.system) }]))
      : null,
    gcPauses: c['gc'] ? Object.fromEntries(Object.entries(c['gc'] as Record<string, number>).map(([k, v]) => [k, round1(v)])) : null,
    eventLoopUtilization: typeof c['eventLoopUtilization'] === 'number' ? round3(c['eventLoopUtilization']) : null,
    eventLoopDelayMs: c['eventLoopDelayMs'] ?? null,
    fsyncProbeMedianMs: round1(median((r.ready['fsyncProbeMs'] as number[]) ?? [])),
    serverBuild: r.ready['build'] ?? null,
    calls: Object.fromEntries(
      Object.entries(timings)
        .sort((a, b) => b[1].totalMs - a[1].totalMs)
        .map(([k, v]) => [k, { calls: v.calls, totalMs: round1(v.totalMs), meanMs: round1(v.totalMs / v.calls), maxMs: round1(v.maxMs) }]),
    ),
    pgStats: r.pgStats,
  };
}

/** Rounds that failed (counted in roundsCompleted and the round times) and why. */
function failures(r: RunResult): { roundsFailed: number; failureReasons?: string[] } {
  const failed = r.events.filter((e) => e.name === 'round-failed');
  return failed.length === 0 ? { roundsFailed: 0 } : { roundsFailed: failed.length, failureReasons: failed.map((e) => `round ${e.round}: ${String(e.failureReason).slice(0, 300)}`) };
}

function deviceErrors(r: RunResult): string[] {
  const counts = new Map<string, number>();
  for (const d of allDevices(r)) for (const e of d.errors) {
    const k = e.replace(/[0-9a-f-]{36}/g, '<id>').slice(0, 160);
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return [...counts.entries()].map(([k, v]) => `${v}x ${k}`);
}

// ---------------------------------------------------------------- scenarios
/** One measured path: plaintext, committee (issue 11's encrypted path) or shared-key BFV. */
interface PathSpec {
  name: 'plaintext' | 'committee' | 'shared-key';
  enc?: Encryption;
  committee?: CommitteeSpec;
}
const labelOf = (path: PathSpec): string => (path.name === 'plaintext' ? '' : path.name === 'committee' ? 'com-' : 'enc-');
const pathSpec = (path: PathSpec): Pick<RunSpec, 'encryption' | 'committee'> => ({
  ...(path.enc && { encryption: path.enc }),
  ...(path.committee && { committee: path.committee }),
});

/** Committee path: the devices' upload building (SDK committee middleware), the upload's parts, the custodians' CPU. */
function committeeFigures(r: RunResult, clientRounds: number): Record<string, unknown> | null {
  if (!r.spec.committee) return null;
  const builds = allDevices(r).flatMap((d) => (d.committeeBuild ? [d.committeeBuild] : []));
  if (builds.length === 0) return null;
  const wall = builds.flatMap((b) => b.wallMs);
  const cpu = builds.flatMap((b) => b.cpuMs);
  const n = builds[0]!.committeeSize;
  const uploadBytes = builds[0]!.uploadBytes;
  const c0Bytes = builds[0]!.c0Bytes;
  const custodianBytes = uploadBytes - c0Bytes;
  return {
    committee: `${r.spec.committee.threshold}-of-${r.spec.committee.custodians}`,
    c0Bits: r.c0Bits,
    deviceEncryption: r.spec.committee.encrypt === 'before' ? 'built after joining, before the rounds (outside the round window)' : 'built at submit time (inside the round window)',
    uploadsBuilt: wall.length,
    deviceBuildMsMedian: round1(median(wall)),
    deviceBuildCpuMsMedian: round1(median(cpu)),
    uploadBytes,
    c0Bytes,
    c0BytesPerModelValue: round3(c0Bytes / PARAMS),
    // Everything in the upload besides c0 (framing, one 4,144-byte sealed share per custodian, the signed manifest), per custodian.
    nonC0BytesPerCustodian: Math.round(custodianBytes / n),
    uploadWithinTarget: uploadBytes <= 6 * PARAMS + 8192 * n,
    custodianProcesses: r.custodianCount,
    custodianCpuMsPerRound: r.custodianCpuMs === null ? null : round1(r.custodianCpuMs / Math.max(1, r.spec.rounds)),
    custodianCpuMsPerClientRound: r.custodianCpuMs === null ? null : round3(r.custodianCpuMs / clientRounds),
  };
}

async function small(db: 'pg' | 'pglite', path: PathSpec): Promise<Record<string, unknown>> {
  const clients = Number(args['small-clients']);
  const rounds = Number(args['small-rounds']);
  const enc = path.enc;
  const r = await runOnce({
    label: `${labelOf(path)}small-${db}`,
    ...pathSpec(path),
    db,
    rounds,
    clientsPerRound: clients,
    minClients: clients,
    minAvailableClients: clients,
    roundDeadlineMs: 60_000,
    groups: [{ count: clients, behavior: 'normal', name: 'small' }],
    runTimeoutMs: rounds * 30_000,
  });
  const { roundMs, engineRoundMs } = roundTimes(r);
  log(`${labelOf(path)}small-${db}: median round ${round1(median(roundMs))} ms, p95 ${round1(quantile(roundMs, 0.95))} ms`);
  const devs = allDevices(r);
  const acceptedCount = r.events.filter((e) => e.name === 'update-accepted').length;
  return {
    database: db === 'pg' ? 'postgresql' : 'pglite',
    clients,
    rounds,
    roundsCompleted: roundMs.length,
    ...failures(r),
    updatesAccepted: acceptedCount,
    medianRoundMs: round1(median(roundMs)),
    p95RoundMs: round1(quantile(roundMs, 0.95)),
    medianRoundMsExcludingFirst: round1(median(roundMs.slice(1))),
    roundMs: roundMs.map(round1),
    engineRoundMs: engineRoundMs.map(round1),
    phasesMedianMs: phases(r),
    ...wire(r, clients * rounds, enc),
    ...(path.committee && { committee: committeeFigures(r, clients * rounds) }),
    idlePollsPerClientRound: round3(devs.reduce((a, d) => a + d.idlePolls, 0) / (clients * rounds)),
    pollsPerClientRound: round3(devs.reduce((a, d) => a + d.polls, 0) / (clients * rounds)),
    joinMs: round1(r.joinMs),
    timedOut: r.timedOut,
    deviceErrors: deviceErrors(r),
    coordinator: coordinatorSummary(r),
    deviceProcessesCpuMs: deviceCpuMs(r),
    deviceProcessesRoundsCpuMs: deviceCpuMs(r, 'rounds'),
    deviceCpuMsPerClientRound: deviceCpuMsPerClientRound(r, acceptedCount),
    ...deviceCpuDetail(r, acceptedCount),
    deviceRoundsCpuMsByWorker: r.workers.map((w) => (w.done ? round1(w.done.roundsCpuMs) : null)),
    ...(PER_WORKER === 1 && { deviceCpuMsByPhaseMedian: deviceCpuByPhase(r), deviceCpuMsByRoundMedian: deviceCpuByRound(r) }),
    machineCpuBusyDuringRounds: r.machineCpuBusy,
    ...(r.cpuProfile && { cpuProfileTop: r.cpuProfile.split('\n') }),
    ...(r.deviceCpuProfile && { deviceWorker0CpuProfileTop: r.deviceCpuProfile.split('\n') }),
  };
}

const scaleSizes = (): number[] => args.sizes.split(',').map(Number).filter((n) => n > 0);

/** One scale run (n clients) on a path. */
async function scaleOne(n: number, path: PathSpec): Promise<Record<string, unknown>> {
  const rounds = Number(args['scale-rounds']);
  const deadline = Number(args['scale-deadline-ms']);
  const enc = path.enc;
  {
    const r = await runOnce({
      label: `${labelOf(path)}scale-${n}`,
      ...pathSpec(path),
      db: args.db as 'pg' | 'pglite',
      rounds,
      clientsPerRound: n,
      // Committee tasks: the descriptor's minDevices (every client, as all of them take part) bounds minClients from below.
      minClients: path.committee ? n : 1,
      minAvailableClients: n,
      roundDeadlineMs: deadline,
      groups: [{ count: n, behavior: 'normal', name: `scale${n}` }],
      runTimeoutMs: rounds * (deadline + 30_000),
    });
    const { roundMs, engineRoundMs } = roundTimes(r);
    const closed = r.events.filter((e) => e.name === 'round-closed');
    log(`${labelOf(path)}scale-${n}: rounds ${roundMs.map((x) => Math.round(x)).join(', ')} ms; participants ${closed.map((e) => e.summary?.participants).join(', ')}; peak RSS ${String(coordinatorSummary(r)['peakRssMiB'])} MiB`);
    return {
      clients: n,
      deviceWorkers: r.workers.length,
      roundsCompleted: roundMs.length,
      ...failures(r),
      allRoundsHadEveryClient: closed.length === rounds && closed.every((e) => e.summary?.participants === n),
      participantsPerRound: closed.map((e) => e.summary?.participants ?? null),
      roundMs: roundMs.map(round1),
      medianRoundMs: round1(median(roundMs)),
      engineRoundMs: engineRoundMs.map(round1),
      msPerClient: round3(median(roundMs) / n),
      phasesMedianMs: phases(r),
      coordinatorPeakRssMiB: coordinatorSummary(r)['peakRssMiB'],
      ...wire(r, n * rounds, enc),
      joinMs: round1(r.joinMs),
      timedOut: r.timedOut,
      deviceErrors: deviceErrors(r),
      coordinator: coordinatorSummary(r),
      deviceProcessesCpuMs: deviceCpuMs(r),
      deviceProcessesRoundsCpuMs: deviceCpuMs(r, 'rounds'),
      deviceCpuMsPerClientRound: deviceCpuMsPerClientRound(r, n * Math.max(1, roundMs.length)),
      machineCpuBusyDuringRounds: r.machineCpuBusy,
      // Cost per client-round: the coordinator's CPU from the task's start (rounds only, no join), and
      // the whole machine's (coordinator, devices, PostgreSQL) over the same rounds.
      coordinatorCpuMsPerClientRound: round3(Number(coordinatorSummary(r)['cpuMs']) / (n * Math.max(1, roundMs.length))),
      machineCpuMsPerClientRound: r.machineCpuMs === null ? null : round3(r.machineCpuMs / (n * Math.max(1, roundMs.length))),
      ...(path.committee && { committee: committeeFigures(r, n * Math.max(1, roundMs.length)) }),
      ...(r.cpuProfile && { cpuProfileTop: r.cpuProfile.split('\n') }),
      ...(r.deviceCpuProfile && { deviceWorker0CpuProfileTop: r.deviceCpuProfile.split('\n') }),
    };
  }
}

/** Growth from the smallest to the largest scale size, added to a path's `scale` object. */
function addGrowth(out: Record<string, unknown>): void {
  const sizes = scaleSizes().filter((n) => out[String(n)] !== undefined);
  const rounds = Number(args['scale-rounds']);
  const first = out[String(sizes[0])] as { medianRoundMs: number } | undefined;
  const last = out[String(sizes[sizes.length - 1])] as { medianRoundMs: number; coordinatorPeakRssMiB: number | null; roundsCompleted: number } | undefined;
  if (first && last && sizes.length > 1) {
    const perClientRatio = (key: string): number | null => {
      const a = (first as Record<string, unknown>)[key];
      const b = (last as Record<string, unknown>)[key];
      return typeof a === 'number' && typeof b === 'number' && a > 0 ? round3(b / a) : null;
    };
    const clientRatio = sizes[sizes.length - 1]! / sizes[0]!;
    const timeRatio = last.medianRoundMs / first.medianRoundMs;
    out['growth'] = {
      from: sizes[0],
      to: sizes[sizes.length - 1],
      clientRatio,
      roundTimeRatio: round3(timeRatio),
      atMostLinear: timeRatio <= clientRatio,
      // Cost per client-round at the largest size over the smallest (1 = cost exactly linear in clients).
      coordinatorCpuPerClientRoundRatio: perClientRatio('coordinatorCpuMsPerClientRound'),
      machineCpuPerClientRoundRatio: perClientRatio('machineCpuMsPerClientRound'),
      largestCompleted: last.roundsCompleted === rounds,
      peakRssWithin1GiB: last.coordinatorPeakRssMiB !== null && Math.max(...sizes.map((s) => (out[String(s)] as { coordinatorPeakRssMiB: number }).coordinatorPeakRssMiB)) <= 1024,
    };
  }
}

async function dropout(path: PathSpec): Promise<Record<string, unknown>> {
  const n = Number(args['dropout-clients']);
  const vanish = Math.round(n * Number(args['dropout-fraction']));
  const killed = Math.ceil(vanish / 2);
  const cut = vanish - killed;
  const deadline = Number(args['dropout-deadline-ms']);
  const rounds = Math.max(1, Number(args['dropout-rounds']));
  const r = await runOnce({
    label: `${labelOf(path)}dropout`,
    ...pathSpec(path),
    db: args.db as 'pg' | 'pglite',
    rounds,
    clientsPerRound: n,
    // Committee tasks: the survivors are the most the descriptor's minDevices may ask for.
    minClients: path.committee ? n - vanish : 1,
    // With a second round: select from whoever is available, at least the survivors.
    minAvailableClients: rounds > 1 ? n - vanish : n,
    roundDeadlineMs: deadline,
    groups: [
      { count: n - vanish, behavior: 'normal', name: 'stay' },
      { count: killed, behavior: 'hold', name: 'killed' },
      ...(cut > 0 ? [{ count: cut, behavior: 'cut' as const, name: 'cut' }] : []),
    ],
    runTimeoutMs: rounds * (deadline + 60_000),
    killHolders: true,
  });
  const collecting = byRound(r.events, 'round-collecting').get(1);
  const closed = byRound(r.events, 'round-closed').get(1) ?? byRound(r.events, 'round-failed').get(1);
  const perRound = [];
  for (let k = 1; k <= rounds; k++) {
    const c = byRound(r.events, 'round-collecting').get(k);
    const e = byRound(r.events, 'round-closed').get(k) ?? byRound(r.events, 'round-failed').get(k);
    perRound.push({
      round: k,
      selected: c?.targetCount ?? null,
      state: e?.state ?? null,
      participants: e?.summary?.participants ?? null,
      dropped: e?.summary?.dropped ?? null,
      collectingToClosedMs: c && e ? round1(e.t - c.t) : null,
      latenessAfterDeadlineMs: c && e ? round1(e.t - c.deadlineAt!) : null,
    });
  }
  const accepted = r.events.filter((e) => e.name === 'update-accepted' && e.round === 1);
  const devs = allDevices(r);
  const stayIds = new Set(devs.filter((d) => d.behavior === 'normal').map((d) => d.clientId));
  const vanishedAccepted = accepted.filter((e) => !stayIds.has(e.clientId!)).length;
  const lateness = closed && collecting ? closed.t - collecting.deadlineAt! : null;
  const tolerance = Math.max(250, 0.05 * deadline);
  const survivorsEnded = devs.filter((d) => d.behavior === 'normal' && d.endedAt !== null).map((d) => d.endedAt!);
  const killedAt = r.workers.find((w) => w.killedAt !== null)?.killedAt ?? null;
  const survivorAttempts = devs.filter((d) => d.behavior === 'normal').flatMap((d) => d.attempts.filter((a) => a.round === 1));
  const rel = (xs: number[]): Record<string, number> | null =>
    xs.length === 0 || !collecting ? null : { min: round1(Math.min(...xs) - collecting.t), median: round1(median(xs) - collecting.t), max: round1(Math.max(...xs) - collecting.t) };
  return {
    clients: n,
    vanished: { total: vanish, processKilled: killed, streamCut: cut },
    roundDeadlineMs: deadline,
    roundMs: closed && collecting ? round1(closed.t - collecting.t) : null,
    roundMsFromOpen: closed ? round1(closed.t - (byRound(r.events, 'round-opened').get(1)?.t ?? NaN)) : null,
    state: closed?.state ?? null,
    participants: closed?.summary?.participants ?? null,
    dropped: closed?.summary?.dropped ?? null,
    survivorsAllAccepted: accepted.length - vanishedAccepted === n - vanish,
    vanishedUpdatesAccepted: vanishedAccepted,
    collectingToLastSurvivorAcceptedMs: accepted.length > 0 && collecting ? round1(Math.max(...accepted.map((e) => e.t)) - collecting.t) : null,
    survivorTimelineMsFromCollecting: {
      assigned: rel(survivorAttempts.map((a) => a.assignedAt)),
      downloaded: rel(survivorAttempts.flatMap((a) => (a.downloadedAt === null ? [] : [a.downloadedAt]))),
      submitAnswered: rel(survivorAttempts.map((a) => a.endedAt)),
    },
    killSignalAfterCollectingMs: killedAt !== null && collecting ? round1(killedAt - collecting.t) : null,
    closedLatenessAfterDeadlineMs: lateness === null ? null : round1(lateness),
    closedAtDeadlineWithRemaining: closed?.state === 'CLOSED' && lateness !== null && lateness >= -5 && lateness <= tolerance && (closed?.summary?.participants ?? 0) === n - vanish,
    toleranceMs: tolerance,
    survivorsEndedAfterLastCloseMaxMs: (() => {
      const last = byRound(r.events, 'round-closed').get(rounds) ?? byRound(r.events, 'round-failed').get(rounds);
      return survivorsEnded.length > 0 && last ? round1(Math.max(...survivorsEnded) - last.t) : null;
    })(),
    survivorsEnded: `${survivorsEnded.length}/${n - vanish}`,
    perRound,
    timedOut: r.timedOut,
    deviceErrors: deviceErrors(r),
    coordinator: coordinatorSummary(r),
  };
}

// ---------------------------------------------------------------- main
async function main(): Promise<void> {
  const result: Record<string, unknown> = {};
  const watchdog = setTimeout(() => {
    log(`global timeout of ${args['timeout-s']} s reached`);
    killAll();
    process.stdout.write(JSON.stringify({ error: 'global timeout', partial: result }) + '\n');
    process.exit(2);
  }, Number(args['timeout-s']) * 1000);
  watchdog.unref();

  let git: string | null = null;
  try {
    git = execFileSync('git', ['-C', repoRoot, 'describe', '--always', '--dirty'], { encoding: 'utf8' }).trim();
  } catch {
    git = null;
  }
  result['meta'] = {
    benchmark: 'bench/rounds.ts',
    paths: {
      measured: pathNames,
      order: 'interleaved: each scenario (each scale size) runs on every path before the next',
      plaintext: 'float32-le updates, FedAvg (top-level small, scale, dropout)',
      committee: `committee-v1 updates (issue 11, under committee): a ${COMMITTEE.t}-of-${COMMITTEE.n} committee of \`custodian serve\` processes on loopback (startLocalCommittee, real gRPC), device keys certified by the task's enrolment authority, uploads built per device and round by the SDK's committee middleware (${COMMITTEE_ENCRYPT === 'before' ? 'after joining, before the rounds start' : 'at submit time'}); the coordinator checks and adds every c0, the custodians open the sealed shares, the coordinator decrypts each round's aggregate into a float32 model`,
      'shared-key': 'bfv-v1 updates (node-seal BFV, one shared device key, precomputed payloads used in turn, replay check answer ignored), ciphertext sums (under sharedKey); only with --paths ...,shared-key',
    },
    git,
    node: process.version,
    cpus: cpus().length,
    loadAvgAtStart: loadavg().map(round1),
    parameters: PARAMS,
    modelBytes: MODEL_BYTES,
    database: args.db === 'pg' ? 'postgresql (fresh database per run, dropped after)' : 'pglite',
    pollMs: POLL_MS,
    pollAhead: POLL_AHEAD,
    devicesPerWorkerProcess: PER_WORKER,
    coordinatorNodeOptions: COORDINATOR_NODE_OPTIONS_USED,
    glibcTunables: GLIBC_TUNABLES_USED,
    ...(COORDINATOR_EXEC_ARGV.length > 0 && { coordinatorExecArgv: COORDINATOR_EXEC_ARGV }),
    deviceSdkDist: process.env['BENCH_SDK_DIST'] ?? 'packages/client-sdk/dist',
    deviceNodeOptions: DEVICE_NODE_OPTIONS_USED,
    ...(DEVICE_EXEC_ARGV.length > 0 && { deviceExecArgv: DEVICE_EXEC_ARGV }),
    wireMethod:
      'client-side TCP socket counters (net.Socket bytesRead + bytesWritten = every HTTP/2+gRPC byte, TCP/IP headers excluded) of one dedicated grpc-js connection per device (per-device ChannelCredentials defeat subchannel sharing; the socket is captured in the credentials secure connector); cross-checked against a net.connect hook on every socket of the device processes',
    roundTimeDefinition:
      'round 1: round-opened (startTask) -> round-closed; round n>1: round-closed(n-1) -> round-closed(n), i.e. open, select, push, download, upload, aggregate, persist; engine events timestamped in the coordinator process',
    rssMethod: 'coordinator in its own process; peak = VmHWM from /proc/self/status at shutdown (also sampled every 500 ms: rss, heap/arrayBuffers; rss was sampled every 50 ms up to 984716c)',
  };
  const pathList: PathSpec[] = [];
  for (const name of pathNames) {
    if (name === 'plaintext') pathList.push({ name });
    if (name === 'committee') pathList.push({ name, committee: { threshold: COMMITTEE.t, custodians: COMMITTEE.n, encrypt: COMMITTEE_ENCRYPT } });
  }
  const keyDir = pathNames.includes('shared-key') ? await mkdtemp(join(tmpdir(), 'veil-bench-he-')) : null;
  const committeeOut: Record<string, unknown> = {};
  const sharedKeyOut: Record<string, unknown> = {};
  if (pathNames.includes('committee')) result['committee'] = committeeOut;
  const outOf = (path: PathSpec): Record<string, unknown> => (path.name === 'plaintext' ? result : path.name === 'committee' ? committeeOut : sharedKeyOut);
  try {
    if (keyDir !== null) {
      log(`shared-key path: key bundle and ${args['encrypted-pool']} payloads`);
      const enc = await prepareEncryption(keyDir, Math.max(1, Number(args['encrypted-pool'])), Number(args['encrypted-weight-cap']));
      sharedKeyOut['setup'] = {
        preset: enc.preset,
        keyId: enc.keyId,
        weightCap: enc.weightCap,
        ciphertextUpdateBytes: enc.ciphertextBytes,
        bytesPerModelValue: round3(enc.ciphertextBytes / PARAMS),
        precomputedPayloads: enc.payloadFiles.length,
        encryptMsPerPayload: enc.encryptMsPerPayload,
      };
      result['sharedKey'] = sharedKeyOut;
      pathList.push({ name: 'shared-key', enc });
    }
    // Interleaved: each scenario (and each scale size) runs once per path before the next one.
    if (only.has('small')) {
      for (const path of pathList) {
        log(`scenario small, ${path.name}`);
        outOf(path)['small'] = await small(args.db as 'pg' | 'pglite', path);
        if (path.name === 'plaintext' && args['pglite-too'] && args.db === 'pg') result['smallPglite'] = await small('pglite', path);
      }
    }
    if (only.has('scale')) {
      for (const n of scaleSizes()) {
        for (const path of pathList) {
          log(`scenario scale ${n}, ${path.name}`);
          const out = (outOf(path)['scale'] ??= {}) as Record<string, unknown>;
          out[String(n)] = await scaleOne(n, path);
        }
      }
      for (const path of pathList) addGrowth(outOf(path)['scale'] as Record<string, unknown>);
    }
    if (only.has('dropout')) {
      for (const path of pathList) {
        log(`scenario dropout, ${path.name}`);
        outOf(path)['dropout'] = await dropout(path);
      }
    }
  } catch (error) {
    result['error'] = String((error as Error)?.stack ?? error);
    log(`failed: ${result['error'] as string}`);
  }
  if (keyDir !== null) await rm(keyDir, { recursive: true, force: true });
  (result['meta'] as Record<string, unknown>)['loadAvgAtEnd'] = loadavg().map(round1);
  result['targets'] = targets(result);
  if (result['sharedKey']) (result['targets'] as Record<string, unknown>)['sharedKey'] = targets(result['sharedKey'] as Record<string, unknown>);
  if (result['committee']) {
    result['committeeOverPlaintext'] = comparison(result, committeeOut);
    (result['targets'] as Record<string, unknown>)['committee'] = committeeTargets(result, committeeOut);
  }
  killAll();
  process.stdout.write(JSON.stringify(result, null, 2) + '\n');
  process.exit(result['error'] ? 1 : 0);
}

type Obj = Record<string, unknown>;
const num = (o: unknown, ...keys: string[]): number | null => {
  let x: unknown = o;
  for (const k of keys) x = x !== null && typeof x === 'object' ? (x as Obj)[k] : undefined;
  return typeof x === 'number' && Number.isFinite(x) ? x : null;
};
const ratio = (a: number | null, b: number | null): number | null => (a === null || b === null || b === 0 ? null : round3(a / b));

/** Committee figures over plaintext figures of the same run, per scenario. */
function comparison(plain: Obj, com: Obj): Obj {
  const out: Obj = {};
  if (plain['small'] && com['small']) {
    out['small'] = {
      medianRoundMs: ratio(num(com, 'small', 'medianRoundMs'), num(plain, 'small', 'medianRoundMs')),
      modelCopiesPerClientRound: ratio(num(com, 'small', 'modelCopiesPerClientRound'), num(plain, 'small', 'modelCopiesPerClientRound')),
      coordinatorCpuMs: ratio(num(com, 'small', 'coordinator', 'cpuMs'), num(plain, 'small', 'coordinator', 'cpuMs')),
      coordinatorPeakRssMiB: ratio(num(com, 'small', 'coordinator', 'peakRssMiB'), num(plain, 'small', 'coordinator', 'peakRssMiB')),
    };
  }
  for (const n of scaleSizes()) {
    if (num(plain, 'scale', String(n), 'clients') === null || num(com, 'scale', String(n), 'clients') === null) continue;
    out[`scale${n}`] = {
      medianRoundMs: ratio(num(com, 'scale', String(n), 'medianRoundMs'), num(plain, 'scale', String(n), 'medianRoundMs')),
      coordinatorCpuMsPerClientRound: ratio(num(com, 'scale', String(n), 'coordinatorCpuMsPerClientRound'), num(plain, 'scale', String(n), 'coordinatorCpuMsPerClientRound')),
      machineCpuMsPerClientRound: ratio(num(com, 'scale', String(n), 'machineCpuMsPerClientRound'), num(plain, 'scale', String(n), 'machineCpuMsPerClientRound')),
      coordinatorPeakRssMiB: ratio(num(com, 'scale', String(n), 'coordinatorPeakRssMiB'), num(plain, 'scale', String(n), 'coordinatorPeakRssMiB')),
      modelCopiesPerClientRound: ratio(num(com, 'scale', String(n), 'modelCopiesPerClientRound'), num(plain, 'scale', String(n), 'modelCopiesPerClientRound')),
    };
  }
  if (plain['dropout'] && com['dropout']) out['dropout'] = { roundMs: ratio(num(com, 'dropout', 'roundMs'), num(plain, 'dropout', 'roundMs')) };
  return out;
}

/** Issue 11's bench:rounds targets for the committee path (against the plaintext path of the same run). */
function committeeTargets(plain: Obj, com: Obj): Obj {
  const t: Obj = {};
  const c = (com['small'] as Obj | undefined)?.['committee'] as Obj | undefined;
  if (c) {
    t['uploadAtMost6BytesPerValuePlus8KiBPerCustodian'] = {
      c0BytesPerModelValue: c['c0BytesPerModelValue'],
      nonC0BytesPerCustodian: c['nonC0BytesPerCustodian'],
      uploadBytes: c['uploadBytes'],
      met: c['uploadWithinTarget'],
    };
  }
  const copies = num(com, 'small', 'modelCopiesPerClientRound');
  if (copies !== null) t['modelCopiesPerClientRoundAtMost2.6'] = { value: copies, met: copies <= 2.6 };
  const small = ratio(num(com, 'small', 'medianRoundMs'), num(plain, 'small', 'medianRoundMs'));
  if (small !== null) {
    const failed = num(com, 'small', 'roundsFailed');
    t['smallMedianAtMost1.3xPlaintext'] = { ratio: small, committeeMs: num(com, 'small', 'medianRoundMs'), plaintextMs: num(plain, 'small', 'medianRoundMs'), committeeRoundsFailed: failed, met: small <= 1.3 && failed === 0 };
  }
  const sizes = scaleSizes();
  const big = sizes[sizes.length - 1];
  if (big !== undefined) {
    const r = ratio(num(com, 'scale', String(big), 'medianRoundMs'), num(plain, 'scale', String(big), 'medianRoundMs'));
    if (r !== null) {
      const failed = num(com, 'scale', String(big), 'roundsFailed');
      t[`scale${big}RoundAtMost1.5xPlaintext`] = {
        ratio: r,
        committeeMs: num(com, 'scale', String(big), 'medianRoundMs'),
        plaintextMs: num(plain, 'scale', String(big), 'medianRoundMs'),
        committeeRoundsFailed: failed,
        met: r <= 1.5 && failed === 0,
      };
    }
  }
  const growth = num(com, 'scale', 'growth', 'coordinatorCpuPerClientRoundRatio');
  if (growth !== null) {
    t['coordinatorCpuPerClientRoundFlat'] = {
      definition: `coordinator CPU per client-round at ${sizes[sizes.length - 1]} over ${sizes[0]} clients <= 1.2`,
      ratio: growth,
      plaintextRatio: num(plain, 'scale', 'growth', 'coordinatorCpuPerClientRoundRatio'),
      met: growth <= 1.2,
    };
  }
  return t;
}

function targets(result: Record<string, unknown>): Record<string, unknown> {
  const t: Record<string, unknown> = {};
  const s = result['small'] as { medianRoundMs: number; modelCopiesPerClientRound: number } | undefined;
  if (s) {
    t['smallMedianRoundMsAtMost200'] = { value: s.medianRoundMs, met: s.medianRoundMs <= 200, flowerBaselineMs: 650 };
    t['smallModelCopiesAtMost2.05'] = { value: s.modelCopiesPerClientRound, met: s.modelCopiesPerClientRound <= 2.05, flowerBaseline: 3.0 };
  }
  const sc = result['scale'] as { growth?: { roundTimeRatio: number; atMostLinear: boolean; largestCompleted: boolean; peakRssWithin1GiB: boolean } } | undefined;
  if (sc?.growth) {
    t['scale1000Completes'] = sc.growth.largestCompleted;
    t['scaleAtMostLinear'] = { roundTimeRatio: sc.growth.roundTimeRatio, met: sc.growth.atMostLinear };
    t['scalePeakRssAtMost1GiB'] = sc.growth.peakRssWithin1GiB;
  }
  const d = result['dropout'] as { closedAtDeadlineWithRemaining: boolean; closedLatenessAfterDeadlineMs: number | null } | undefined;
  if (d) t['dropoutClosesAtDeadline'] = { met: d.closedAtDeadlineWithRemaining, latenessMs: d.closedLatenessAfterDeadlineMs };
  return t;
}

process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});
void main();
