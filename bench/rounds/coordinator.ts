/**
 * Coordinator process of the round-engine benchmark: starts the CURRENT
 * coordinator (`startCoordinator` from the built @veil/server) on loopback
 * with ephemeral ports, forwards the round engine's events with wall-clock
 * timestamps to the parent over IPC (the events of one tick in one message), samples its own memory
 * every 500 ms and reports VmHWM (peak RSS) from /proc/self/status when closed, with the measurement
 * window's CPU per thread group (main thread, V8 helper threads, libuv pool) from /proc/self/task.
 *
 * Instrumentation (benchmark-side wrappers, the engine is not modified): every
 * FederationStore and BlobStore call is timed per method, and the task's
 * per-task mutex is wrapped to measure queueing and hold time per caller. For
 * the encrypted path, whose devices reuse a few precomputed ciphertexts, the
 * answer (not the query) of the replay check is overridden.
 *
 * Env: BENCH_DATABASE_URL (absent = embedded PGlite), BENCH_DATA_DIR, BENCH_COMMITTEE_REQUEST_KEY
 * (committee path: the coordinator's custodian request key file), BENCH_COMMITTEE_DEADLINE_MS (its
 * committee request deadline),
 * BENCH_LOG_LEVEL, BENCH_UPLOAD_BUDGET_BYTES / BENCH_DOWNLOAD_BUDGET_BYTES (the
 * coordinator's transfer budgets; absent = its defaults), BENCH_MEM_TIMELINE
 * (set: report every 500 ms memory sample), BENCH_SERVER_MODULE (absolute path
 * of another build's index.js, measured instead of @veil/server: A/B runs; it
 * resolves its migrations at ../prisma/migrations), BENCH_CPU_PROF_WINDOW (a directory: a V8 CPU
 * profile of the measurement window only, startTask to close, is written there as
 * coordinator-<pid>.cpuprofile; start-up and shutdown are left out), BENCH_TRACE (a file: every
 * client's calls timestamped, see traceEngine; summary: bench/rounds/trace-summary.mjs). Writes nothing to stdout.
 */
import { createHash, randomBytes } from 'node:crypto';
import { Session } from 'node:inspector/promises';
import { open, readFile, rm, mkdir, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Coordinator, TaskInput } from '@veil/server';
import { cpuByThread, cpuByThreadSince, nowMs, observeGcPauses } from './common.js';

/** The build measured: @veil/server, or BENCH_SERVER_MODULE (the index.js of another build, for A/B runs). */
const serverModule = process.env['BENCH_SERVER_MODULE'];
const { createLogger, loadConfig, startCoordinator }: typeof import('@veil/server') = await import(serverModule ?? '@veil/server');

const send = (message: unknown): void => {
  process.send?.(message);
};

/**
 * Engine events, timestamped when they happen and sent together at the end of the tick (one IPC
 * message and one pipe write for a group commit's acceptances and the round moves that follow):
 * a message per event cost the measured process a JSON serialization and a write(2) each, about
 * 13 per 10-client round.
 */
const pendingEvents: unknown[] = [];
const sendEvent = (event: Record<string, unknown>): void => {
  if (pendingEvents.push({ type: 'event', ...event }) === 1) {
    setImmediate(() => send({ type: 'events', events: pendingEvents.splice(0) }));
  }
};

// ---------------------------------------------------------------- memory sampling
const mem = { rss: 0, heapUsed: 0, external: 0, arrayBuffers: 0 };
/** The full breakdown at the 500 ms sample with the highest RSS (where the peak's memory is). */
let atPeak: NodeJS.MemoryUsage | null = null;
/** Every 500 ms sample (t = ms since the task started), kept only with BENCH_MEM_TIMELINE set. */
const timeline: Array<[number, number, number, number, number, number]> = [];
let timelineOrigin = performance.now();
// Every 500 ms. The peak reported is VmHWM (the kernel's own high-water mark, read at close), so
// sampling rss more often adds nothing to it: an rss read every 50 ms (/proc/self/stat) cost the
// measured process ~0.16 ms of CPU and ~0.5 ms of its event loop each (bench:rounds --only small,
// plaintext, load 8-14), about 0.5% of its CPU and 1% of its event loop in the rounds window.
const sampleMemory = (): void => {
  const m = process.memoryUsage();
  if (atPeak === null || m.rss >= atPeak.rss) atPeak = m;
  mem.rss = Math.max(mem.rss, m.rss);
  mem.heapUsed = Math.max(mem.heapUsed, m.heapUsed);
  mem.external = Math.max(mem.external, m.external);
  mem.arrayBuffers = Math.max(mem.arrayBuffers, m.arrayBuffers);
  if (process.env['BENCH_MEM_TIMELINE']) {
    const mib = (x: number): number => Math.round(x / 2 ** 20);
    timeline.push([Math.round(performance.now() - timelineOrigin), mib(m.rss), mib(m.heapTotal), mib(m.heapUsed), mib(m.external), mib(m.arrayBuffers)]);
  }
};
setInterval(sampleMemory, 500).unref();

async function vmHwm(): Promise<number | null> {
  try {
    const status = await readFile('/proc/self/status', 'utf8');
    const m = /VmHWM:\s+(\d+) kB/.exec(status);
    return m ? Number(m[1]) * 1024 : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------- window profile
/** BENCH_CPU_PROF_WINDOW: the measurement window's CPU profile (in-process inspector, sampling every 100 us). */
const profWindowDir = process.env['BENCH_CPU_PROF_WINDOW'];
let profSession: Session | null = null;
async function startWindowProfile(): Promise<void> {
  if (!profWindowDir || profSession !== null) return;
  profSession = new Session();
  profSession.connect();
  await profSession.post('Profiler.enable');
  await profSession.post('Profiler.setSamplingInterval', { interval: 100 });
  await profSession.post('Profiler.start');
}
async function stopWindowProfile(): Promise<void> {
  if (!profWindowDir || profSession === null) return;
  const { profile } = await profSession.post('Profiler.stop');
  profSession.disconnect();
  profSession = null;
  await mkdir(profWindowDir, { recursive: true });
  const { writeFile } = await import('node:fs/promises');
  await writeFile(join(profWindowDir, `coordinator-${process.pid}.cpuprofile`), JSON.stringify(profile));
}

// ---------------------------------------------------------------- call timing
interface Timing {
  calls: number;
  totalMs: number;
  maxMs: number;
}
const timings: Record<string, Timing> = {};
const timed = (name: string, ms: number): void => {
  const t = (timings[name] ??= { calls: 0, totalMs: 0, maxMs: 0 });
  t.calls++;
  t.totalMs += ms;
  t.maxMs = Math.max(t.maxMs, ms);
};

function instrumentObject(prefix: string, target: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(target)) {
    if (typeof value !== 'function') continue;
    const fn = value as (...args: unknown[]) => unknown;
    target[key] = function (this: unknown, ...args: unknown[]) {
      const started = performance.now();
      const result = fn.apply(this, args);
      if (result instanceof Promise) {
        return result.finally(() => timed(`${prefix}.${key}`, performance.now() - started));
      }
      timed(`${prefix}.${key}`, performance.now() - started);
      return result;
    };
  }
}

function callerOf(stack: string): string {
  for (const name of ['submitUpdate', 'waitForAssignment', 'startTask', 'pauseTask', 'onDeadline', 'armDeadline', 'start']) {
    if (stack.includes(`RoundEngine.${name}`) || stack.includes(`.${name} (`)) return name === 'armDeadline' ? 'deadline' : name;
  }
  return stack.includes('Timeout') ? 'deadline' : 'other';
}

function instrumentMutex(mutex: { run<T>(section: () => Promise<T>): Promise<T> }): void {
  const run = mutex.run.bind(mutex);
  mutex.run = <T>(section: () => Promise<T>): Promise<T> => {
    const caller = callerOf(new Error().stack ?? '');
    const queued = performance.now();
    return run(async () => {
      const started = performance.now();
      timed(`mutex.wait.${caller}`, started - queued);
      try {
        return await section();
      } finally {
        timed(`mutex.hold.${caller}`, performance.now() - started);
      }
    });
  };
}

/** Cost of one durable 400 kB file write on this data directory (create, write, fsync), as blobs.put does it for a model version. */
async function fsyncProbe(dir: string, bytes: number, times: number): Promise<number[]> {
  await mkdir(dir, { recursive: true });
  const data = randomBytes(bytes);
  const out: number[] = [];
  for (let i = 0; i < times; i++) {
    const path = join(dir, `probe-${i}.bin`);
    const started = performance.now();
    const handle = await open(path, 'w');
    await handle.writeFile(data);
    await handle.sync();
    await handle.close();
    out.push(performance.now() - started);
    await rm(path, { force: true });
  }
  return out;
}

/** Which build of the server is measured: digest and mtime of its compiled round engine and gRPC service. */
async function buildFingerprint(): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  try {
    const dist = join(serverModule ?? createRequire(import.meta.url).resolve('@veil/server'), '..');
    // The engine is a facade over its parts since 564861e: the round's path is in intake and the loop
    // (absent from builds before the split, which report them as such).
    const files = ['rounds/engine.js', 'rounds/intake.js', 'rounds/round-loop.js', 'grpc/federation-service.js', 'persistence/prisma-store.js', 'blobs/blob-store.js'];
    for (const file of files) {
      const path = join(dist, file);
      const found = await Promise.all([readFile(path), stat(path)]).catch(() => null);
      if (found === null) {
        out[file] = 'absent';
        continue;
      }
      const [bytes, st] = found;
      out[file] = `${createHash('sha256').update(bytes).digest('hex').slice(0, 12)} ${st.mtime.toISOString()}`;
    }
  } catch (error) {
    out['error'] = String(error);
  }
  return out;
}

// ---------------------------------------------------------------- per-round trace
/**
 * BENCH_TRACE (a file path): a timeline of every client's calls, written at close as JSON lines
 * [t (ms, nowMs), what, clientId or '', extra]: `name<` when a call starts and `name>` when it
 * settles (`!`: failed): waitForAssignment (< the poll arrives, > it is answered), checkUpdateHeader
 * (an upload's header arrived), submitUpdate (< its whole payload arrived, > it is acknowledged),
 * blobs append/write, store recordSubmissions (extra: the batch size), listSubmissions, closeAndOpen,
 * the committee's collect (committee tasks);
 * `downloaded` when a model stream closed, `accepted` and the round events. Diagnosis only (a wrapper
 * per call; off by default).
 */
const traceFile = process.env['BENCH_TRACE'];
const trace: Array<[number, string, string, unknown?]> = [];
const mark = (what: string, who = '', extra?: unknown): void => {
  trace.push(extra === undefined ? [nowMs(), what, who] : [nowMs(), what, who, extra]);
};
function traceEngine(engine: Record<string, unknown>, store: Record<string, unknown>, blobs: Record<string, unknown>): void {
  const wrap = (target: Record<string, unknown>, name: string, who: (args: unknown[]) => string, after = true): void => {
    const fn = target[name] as (...a: unknown[]) => unknown;
    target[name] = function (this: unknown, ...args: unknown[]) {
      const id = who(args);
      mark(`${name}<`, id);
      const out = fn.apply(this, args);
      if (after && out instanceof Promise) out.then(() => mark(`${name}>`, id), () => mark(`${name}!`, id));
      return out;
    };
  };
  const client = (a: unknown[]): string => ((a[0] as { id?: string })?.id ?? '').slice(0, 8);
  wrap(engine, 'waitForAssignment', client);
  wrap(engine, 'checkUpdateHeader', client);
  wrap(engine, 'submitUpdate', client);
  const noted = engine['noteModelDownloaded'] as (d: { clientId: string }) => void;
  engine['noteModelDownloaded'] = function (this: unknown, d: { clientId: string }) {
    mark('downloaded', d.clientId.slice(0, 8));
    return noted.call(this, d);
  };
  wrap(blobs, 'append', () => '');
  wrap(blobs, 'write', () => '');
  wrap(store, 'recordSubmissions', (a) => String((a[1] as unknown[]).length));
  wrap(store, 'closeAndOpen', () => '');
  wrap(store, 'listSubmissions', () => '');
}

// ---------------------------------------------------------------- main
let coordinator: Coordinator | null = null;
const loopDelay = monitorEventLoopDelay({ resolution: 10 });
/** Garbage-collection pauses of this process since the task started: count and total ms, by kind. */
const { pauses: gc, reset: resetGc } = observeGcPauses();

async function main(): Promise<void> {
  // tsx, which loads this file, turns source maps on; `veil server` runs without them, so this
  // process does too (with them every stack trace, e.g. the one instrumentMutex reads per section
  // run, is mapped through the dist files' source maps).
  process.setSourceMapsEnabled(false);
  const dataDir = process.env['BENCH_DATA_DIR'];
  if (!dataDir) throw new Error('BENCH_DATA_DIR is required');
  const base = loadConfig({});
  const config = {
    ...base,
    host: '127.0.0.1',
    grpcPort: 0,
    httpPort: 0,
    dataDir,
    blobDir: join(dataDir, 'blobs'),
    databaseUrl: process.env['BENCH_DATABASE_URL'] || undefined,
    adminToken: randomBytes(24).toString('base64url'),
    enrolmentSecret: randomBytes(24).toString('base64url'),
    logLevel: process.env['BENCH_LOG_LEVEL'] || 'silent',
    migrateOnStart: true,
    production: false,
    // Committee path: the key custodians accept requests from (startLocalCommittee's coordinator key).
    ...(process.env['BENCH_COMMITTEE_REQUEST_KEY'] ? { committeeRequestKey: process.env['BENCH_COMMITTEE_REQUEST_KEY'] } : {}),
    // The committee request's deadline (default 30 s): the benchmark's, so that an overloaded machine fails no round for it.
    ...(process.env['BENCH_COMMITTEE_DEADLINE_MS'] ? { committeeDeadlineMs: Number(process.env['BENCH_COMMITTEE_DEADLINE_MS']) } : {}),
  };
  const logger = createLogger({ level: config.logLevel, destination: process.stderr });
  const build = await buildFingerprint();
  const probe = await fsyncProbe(join(dataDir, 'fsync-probe'), 400_000, 10);
  const startedAt = performance.now();
  const budget = (name: string): number | undefined => (process.env[name] ? Number(process.env[name]) : undefined);
  const uploadBudgetBytes = budget('BENCH_UPLOAD_BUDGET_BYTES');
  const downloadBudgetBytes = budget('BENCH_DOWNLOAD_BUDGET_BYTES');
  coordinator = await startCoordinator({
    config,
    logger,
    ...(uploadBudgetBytes !== undefined && { uploadBudgetBytes }),
    ...(downloadBudgetBytes !== undefined && { downloadBudgetBytes }),
  });
  const startMs = performance.now() - startedAt;
  const engine = coordinator.engine as unknown as {
    store: Record<string, unknown>;
    blobs: Record<string, unknown>;
    runtimes: Map<string, { mutex: { run<T>(s: () => Promise<T>): Promise<T> } }>;
  };
  instrumentObject('store', engine.store);
  instrumentObject('blobs', engine.blobs);
  if (traceFile) traceEngine(coordinator.engine as unknown as Record<string, unknown>, engine.store, engine.blobs);
  // Committee tasks: time each round's request to the custodians (all of them, until t answered).
  type Connector = { open(...a: unknown[]): { collect: (...a: unknown[]) => Promise<unknown> } } | null | undefined;
  const internals = engine as unknown as { committeeConnector?: Connector; ctx?: { committeeConnector?: Connector } };
  const connector = internals.ctx?.committeeConnector ?? internals.committeeConnector;
  if (connector) {
    const open = connector.open.bind(connector);
    connector.open = (...a: unknown[]) => {
      const client = open(...a);
      instrumentObject('committee', client as unknown as Record<string, unknown>);
      if (traceFile) {
        // The trace's `collect<` / `collect>`: when the custodians are asked, and when t answered.
        const collect = client.collect.bind(client);
        client.collect = (...b: unknown[]) => {
          mark('collect<');
          const out = collect(...b);
          out.then(() => mark('collect>'), () => mark('collect!'));
          return out;
        };
      }
      return client;
    };
  }

  const cpuTotalMs = (): number => {
    const { user, system } = process.cpuUsage();
    return (user + system) / 1000;
  };
  for (const name of ['round-opened', 'round-collecting', 'round-closed', 'round-failed'] as const) {
    coordinator.engine.on(name, ({ round }) => {
      sendEvent({
        name,
        t: nowMs(),
        round: round.number,
        state: round.state,
        targetCount: round.targetCount,
        receivedCount: round.receivedCount,
        deadlineAt: round.deadlineAt.getTime(),
        closedAt: round.closedAt?.getTime() ?? null,
        summary: round.summary,
        failureReason: round.failureReason,
        // The process's CPU so far (user + system, ms): CPU between two round boundaries, joins excluded.
        ...(name === 'round-closed' && { cpuMs: cpuTotalMs() }),
      });
    });
  }
  if (traceFile) {
    for (const name of ['round-opened', 'round-collecting', 'round-closed'] as const) coordinator.engine.on(name, ({ round }) => mark(name, '', round.number));
    coordinator.engine.on('update-accepted', (e) => mark('accepted', e.clientId.slice(0, 8)));
  }
  coordinator.engine.on('update-accepted', (e) => {
    sendEvent({ name: 'update-accepted', t: nowMs(), round: e.roundNumber, clientId: e.clientId, receivedCount: e.receivedCount });
  });
  coordinator.engine.on('task-ended', (e) => {
    sendEvent({ name: 'task-ended', t: nowMs(), status: e.status, reason: e.reason });
  });

  sampleMemory();
  send({
    type: 'ready',
    grpcAddress: coordinator.grpcAddress,
    enrolmentSecret: coordinator.enrolmentSecret,
    databaseKind: coordinator.databaseKind,
    startMs,
    baselineRss: process.memoryUsage().rss,
    fsyncProbeMs: probe,
    build,
    pid: process.pid,
  });

  let cpuAtStart = process.cpuUsage();
  let threadsAtStart: Awaited<ReturnType<typeof cpuByThread>> = null;
  let eluAtStart = performance.eventLoopUtilization();
  process.on('message', (message: { cmd: string; [k: string]: unknown }) => {
    void (async () => {
      switch (message.cmd) {
        case 'createTask': {
          const parameterCount = message['parameterCount'] as number;
          const task = await coordinator!.engine.createTask(message['input'] as TaskInput, {
            topology: { class_name: 'Sequential', config: { name: 'bench', layers: [] } },
            weightSpecs: [{ name: 'w', shape: [parameterCount], dtype: 'float32' }],
            weights: new Float32Array(parameterCount),
          });
          const rt = engine.runtimes.get(task.id);
          if (rt) instrumentMutex(rt.mutex);
          if (message['reusedPayloads'] === true) {
            // The shared-key path reuses a few precomputed ciphertexts (encrypting 100,000 values takes
            // ~0.5 s of device CPU), which the coordinator would refuse as replays: its recording
            // statement runs without the ciphertext replay check (refuseDigestReplays, part of the
            // same statement: no round trip of its own), also for the same bytes twice within one
            // group commit.
            const record = engine.store['recordSubmissions'] as (roundId: unknown, submissions: unknown, options?: Record<string, unknown>) => Promise<unknown>;
            engine.store['recordSubmissions'] = (roundId: unknown, submissions: unknown, options?: Record<string, unknown>) =>
              record(roundId, submissions, { ...options, refuseDigestReplays: false });
          }
          send({ type: 'task', taskId: task.id });
          break;
        }
        case 'startTask': {
          // Measurement window: from the start of the task.
          for (const key of Object.keys(timings)) delete timings[key];
          cpuAtStart = process.cpuUsage();
          threadsAtStart = await cpuByThread();
          eluAtStart = performance.eventLoopUtilization();
          resetGc();
          timelineOrigin = performance.now();
          timeline.length = 0;
          loopDelay.reset();
          loopDelay.enable();
          await startWindowProfile();
          const t = nowMs();
          await coordinator!.engine.startTask(message['taskId'] as string);
          send({ type: 'started', t });
          break;
        }
        case 'close': {
          loopDelay.disable();
          const cpu = process.cpuUsage(cpuAtStart);
          const threads = cpuByThreadSince(threadsAtStart, await cpuByThread());
          const elu = performance.eventLoopUtilization(eluAtStart);
          await stopWindowProfile();
          sampleMemory();
          const closeStarted = performance.now();
          await coordinator!.close();
          if (traceFile) await writeFile(traceFile, trace.map((x) => JSON.stringify(x)).join('\n') + '\n');
          send({
            type: 'closed',
            closeMs: performance.now() - closeStarted,
            peakRssSampled: mem.rss,
            vmHwm: await vmHwm(),
            peakHeapUsed: mem.heapUsed,
            peakExternal: mem.external,
            peakArrayBuffers: mem.arrayBuffers,
            memoryAtPeak: atPeak,
            ...(timeline.length > 0 && { memoryTimeline: timeline }),
            cpuUserMs: cpu.user / 1000,
            gc: { ...gc },
            cpuSystemMs: cpu.system / 1000,
            cpuByThreadMs: threads,
            eventLoopUtilization: elu.utilization,
            eventLoopDelayMs: {
              mean: loopDelay.mean / 1e6,
              p99: loopDelay.percentile(99) / 1e6,
              max: loopDelay.max / 1e6,
            },
            timings,
          });
          setTimeout(() => process.exit(0), 100);
          break;
        }
        default:
          send({ type: 'error', message: `unknown command ${message.cmd}` });
      }
    })().catch((error) => send({ type: 'error', message: String((error as Error)?.stack ?? error) }));
  });
}

process.on('disconnect', () => {
  void (coordinator?.close() ?? Promise.resolve()).finally(() => process.exit(0));
  setTimeout(() => process.exit(1), 5_000).unref();
});
main().catch((error) => {
  send({ type: 'error', message: String((error as Error)?.stack ?? error) });
  setTimeout(() => process.exit(1), 100);
});
