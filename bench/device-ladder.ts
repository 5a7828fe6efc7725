/**
 * The device's CPU per synchronous round, layer by layer, without the coordinator, its database or
 * its CPU: one fake-coordinator process (node:http2 with the coordinator's HTTP/2 settings: DATA
 * frames up to 1 MiB accepted, a 65,535-byte stream window (--server-stream-window), a 16 MiB
 * connection window) and N device processes. Each round, as /work/briefs/h2-floor.mjs (SYNC=1) does,
 * every device receives a 400,000-byte model (held by the server until all N updates of the previous
 * round arrived) and sends a 400,000-byte update. The rungs:
 *
 *   raw           node:http2 client as h2-floor.mjs's: GET the model, POST the update (no gRPC)
 *   channel       the SDK's GrpcChannel: a call answered with the model as one gRPC message (handed
 *                 back with recycle, as releaseModel does), then an upload call
 *   channel+wire  the channel with the transport's wire pattern: WaitForAssignmentAndModel answered with
 *                 its three protobuf messages (not decoded), the next poll opened as the model arrives,
 *                 SubmitUpdate as a header message and a chunk message; no decoding, no SHA-256. Knobs:
 *                 +decode (each answer message decoded), +encode (the header encoded each round), +hashobj
 *                 (a SHA-256 object created per poll, unused), e.g. channel+wire+decode+encode
 *   transport     the SDK's gRPC transport as bench/rounds/devices.ts drives it: WaitForAssignmentAndModel,
 *                 the model's SHA-256 check, releaseModel, the next long-poll opened as the assignment
 *                 arrives, the update's SHA-256 (once per round) and SubmitUpdate. Knobs (diagnosis):
 *                 transport+noahead (the next poll opens after the upload's answer), transport+noupdatesha
 *                 (a fixed SHA-256 is sent instead of the update's), transport+nosignal (polls without an AbortSignal)
 *
 *   npx tsx bench/device-ladder.ts [--rungs raw,channel,transport] [--clients 10] [--rounds 60] [--warmup 10]
 *     [--runs 3] [--paired] [--server-stream-window 65535] [--sdk /abs/path/to/packages/client-sdk/dist ...]
 *
 * Variants are the rungs, each SDK rung once per --sdk build (`transport@<n>`, ...). Without --paired,
 * runs alternate between variants, --runs times; with --paired, every run has all variants' devices
 * at once (device i on variant (i + run) % n; same server, rounds and machine load: a paired
 * comparison, far less noisy on a shared machine). Each device loads its modules and waits 1 s
 * before its first round (a bench:rounds device joins and waits for its release: the compilation
 * left from loading ends before the rounds). Per variant and run: the devices' process CPU (user +
 * system, all threads) per client-round over the rounds after --warmup ("Steady") and over all rounds
 * ("All": connection setup and first rounds included, as h2-floor's client figure), the system part,
 * the helper threads' part (V8Worker: concurrent compilation and GC; all rounds), minor page faults,
 * read/write system calls, voluntary context switches and main-thread GC pauses per client-round
 * (steady), the CPU of each of the first 5 rounds (median device), and the run's median round (ms)
 * and server CPU per client-round. Prints one JSON object: medians per variant and every run.
 *
 * Diagnosis: LADDER_DEVICE_EXEC_ARGV (Node options of the device processes, e.g. --trace-opt),
 * LADDER_MARKS=1 (a device prints `LADDER-MARK <pid> round <n>` as each round starts),
 * LADDER_PROFILE_DIR (each device writes a V8 CPU profile of its steady rounds there; sampling
 * interval LADDER_PROFILE_INTERVAL_US, default 100: it inflates what it measures).
 */
import { createHash } from 'node:crypto';
import { fork } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import http2 from 'node:http2';
import { loadavg } from 'node:os';
import { PerformanceObserver } from 'node:perf_hooks';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { FederationServiceWire as wire } from '@veil/protocol/wire';
import type { GrpcChannel as GrpcChannelClass } from '../packages/client-sdk/dist/transport/grpc-channel.js';
import type { createGrpcTransport as CreateGrpcTransport } from '../packages/client-sdk/dist/transport/grpc-transport.js';
import { median, round3 } from './rounds/common.js';

const SIZE = 400_000;
const here = fileURLToPath(import.meta.url);
const defaultSdk = fileURLToPath(new URL('../packages/client-sdk/dist', import.meta.url));

function framed(message: Uint8Array): Buffer[] {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.byteLength, 1);
  return [prefix, Buffer.from(message.buffer, message.byteOffset, message.byteLength)];
}

// ------------------------------------------------------------------ fake coordinator
function serve(n: number, streamWindow: number): void {
  let open = 1;
  let updates = 0;
  const roundEnds: number[] = [];
  const waiting: Array<{ after: number; answer: (round: number) => void }> = [];
  const model = Buffer.alloc(SIZE, 3);
  let modelRound = 0;
  let modelSha = Buffer.alloc(32);
  const modelFor = (round: number): Buffer => {
    if (modelRound !== round) {
      model.writeUInt32LE(round, 0);
      modelSha = createHash('sha256').update(model).digest();
      modelRound = round;
    }
    return model;
  };
  const held = (after: number, answer: (round: number) => void): void => {
    if (open > after) answer(open);
    else waiting.push({ after, answer });
  };
  const updateArrived = (): void => {
    if (++updates < n) return;
    updates = 0;
    open++;
    roundEnds.push(performance.now());
    const ready = waiting.splice(0);
    for (const w of ready) held(w.after, w.answer);
  };
  const grpcAnswer = (stream: http2.ServerHttp2Stream, messages: Uint8Array[]): void => {
    if (stream.destroyed) return;
    stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
    stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
    for (const m of messages) for (const part of framed(m)) stream.write(part);
    stream.end();
  };
  const server = http2.createServer({ settings: { maxFrameSize: 2 ** 20, initialWindowSize: streamWindow } });
  server.on('session', (session) => session.setLocalWindowSize(16 * 2 ** 20));
  server.on('stream', (stream, headers) => {
    const path = headers[':path'] ?? '';
    const chunks: Buffer[] = [];
    stream.on('data', (c: Buffer) => chunks.push(c));
    stream.on('error', () => {});
    stream.on('end', () => {
      const body = Buffer.concat(chunks);
      if (path.startsWith('/m/')) {
        held(Number(path.slice(3)) - 1, (round) => {
          if (stream.destroyed) return;
          stream.respond({ ':status': 200 });
          stream.end(modelFor(round));
        });
      } else if (path === '/u') {
        stream.respond({ ':status': 200 });
        stream.end();
        updateArrived();
      } else if (path === '/bench.Ladder/Wait') {
        held(body.readUInt32BE(5) - 1, (round) => grpcAnswer(stream, [modelFor(round)]));
      } else if (path === '/bench.Ladder/Upload') {
        grpcAnswer(stream, [Buffer.from([8, 1])]);
        updateArrived();
      } else if (path === wire.WaitForAssignmentAndModel.path) {
        const request = wire.WaitForAssignmentAndModel.requestDeserialize(body.subarray(5));
        held(request.afterRoundNumber, (round) => {
          const bytes = modelFor(round);
          const assignment = {
            roundId: `round-${round}`,
            roundNumber: round,
            modelVersion: round - 1,
            modelSha256: modelSha,
            modelSizeBytes: SIZE,
            deadlineUnixMs: Date.now() + 300_000,
            training: { epochs: 1, batchSize: 32, learningRate: 0.01 },
            updateEncoding: 'UPDATE_ENCODING_FLOAT32_LE' as const,
            maxUpdateBytes: 2 * SIZE,
            maxExampleCount: 1_000,
          };
          grpcAnswer(stream, [
            wire.WaitForAssignmentAndModel.responseSerialize({ answer: { assignment } }),
            wire.WaitForAssignmentAndModel.responseSerialize({
              modelHeader: { modelVersion: round - 1, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: SIZE, sha256: modelSha },
            }),
            wire.WaitForAssignmentAndModel.responseSerialize({ modelData: bytes }),
          ]);
        });
      } else if (path === wire.SubmitUpdate.path) {
        grpcAnswer(stream, [wire.SubmitUpdate.responseSerialize({ acceptedCount: 1 })]);
        updateArrived();
      } else {
        stream.respond({ ':status': 404 });
        stream.end();
      }
    });
  });
  const cpu0 = process.cpuUsage();
  server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as { port: number }).port }));
  process.on('message', (m: { cmd?: string }) => {
    if (m?.cmd !== 'stats') return;
    const c = process.cpuUsage(cpu0);
    const gaps = roundEnds.slice(1).map((t, i) => t - roundEnds[i]!);
    process.send?.({ cpuMs: (c.user + c.system) / 1000, medianRoundMs: gaps.length > 0 ? median(gaps) : null, rounds: roundEnds.length }, () => process.exit(0));
  });
  process.on('disconnect', () => process.exit(0));
}

// ------------------------------------------------------------------ devices
/** Loads the modules of `rung` (cached: the rung's own import then costs nothing). */
async function loadRung(rung: string, sdk: string): Promise<void> {
  if (rung.startsWith('channel')) await import(pathToFileURL(`${sdk}/transport/grpc-channel.js`).href);
  if (rung.startsWith('transport')) await import(pathToFileURL(`${sdk}/transport/grpc-transport.js`).href);
}

/** CPU of this process's main thread so far, ms (10 ms resolution: /proc/self/task/<pid>/stat). */
function mainThreadCpuMs(): number {
  const stat = readFileSync(`/proc/self/task/${process.pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / 100;
}
/** This process's read and write system calls (/proc/self/io) and voluntary context switches (wake-ups), summed over its threads. */
function kernelCounts(): { syscr: number; syscw: number; wakeups: number } {
  const io = readFileSync('/proc/self/io', 'utf8');
  const status = readFileSync('/proc/self/status', 'utf8');
  const field = (text: string, name: string): number => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(text)?.[1] ?? NaN);
  return { syscr: field(io, 'syscr'), syscw: field(io, 'syscw'), wakeups: field(status, 'voluntary_ctxt_switches') };
}

async function device(rung: string, sdk: string, port: number, rounds: number, warmup: number): Promise<void> {
  // As a bench:rounds device waits for its release after joining: the work left from loading the
  // modules (concurrent compilation on V8's helper threads) ends before the rounds are measured.
  await loadRung(rung, sdk);
  await new Promise((resolve) => setTimeout(resolve, 1_000));
  const update = new Float32Array(SIZE / 4).fill(1e-3);
  const updateBytes = new Uint8Array(update.buffer);
  let cpuAtWarm = process.cpuUsage();
  let faultsAtWarm = process.resourceUsage().minorPageFault;
  let kernelAtWarm = kernelCounts();
  const cpuAtStart = process.cpuUsage();
  const mainAtStart = mainThreadCpuMs();
  const perRound: number[] = [];
  let roundCpu = process.cpuUsage();
  const gc = { count: 0, ms: 0, counting: false };
  new PerformanceObserver((list) => {
    if (!gc.counting) return;
    for (const entry of list.getEntries()) {
      gc.count++;
      gc.ms += entry.duration;
    }
  }).observe({ entryTypes: ['gc'] });
  const profileDir = process.env['LADDER_PROFILE_DIR'];
  let profiler: Session | null = null;
  const mark = (round: number): void => {
    if (process.env['LADDER_MARKS'] !== undefined) process.stdout.write(`LADDER-MARK ${process.pid} round ${round}\n`);
    if (round === warmup + 1 && profileDir !== undefined) {
      profiler = new Session();
      profiler.connect();
      profiler.post('Profiler.enable', () => profiler!.post('Profiler.setSamplingInterval', { interval: Number(process.env['LADDER_PROFILE_INTERVAL_US'] ?? 100) }, () => profiler!.post('Profiler.start')));
    }
    if (round > 1) {
      const used = process.cpuUsage(roundCpu);
      perRound.push((used.user + used.system) / 1000);
    }
    roundCpu = process.cpuUsage();
    if (round === warmup + 1) {
      cpuAtWarm = process.cpuUsage();
      faultsAtWarm = process.resourceUsage().minorPageFault;
      kernelAtWarm = kernelCounts();
      gc.counting = true;
    }
  };
  if (rung === 'raw') {
    const session = http2.connect(`http://127.0.0.1:${port}`);
    for (let r = 1; r <= rounds; r++) {
      mark(r);
      await new Promise((resolve, reject) => {
        const q = session.request({ ':path': `/m/${r}` });
        let got = 0;
        q.on('data', (c: Buffer) => (got += c.length));
        q.on('end', resolve);
        q.on('error', reject);
        q.end();
      });
      await new Promise((resolve, reject) => {
        const q = session.request({ ':path': '/u', ':method': 'POST' });
        q.on('data', () => {});
        q.on('end', resolve);
        q.on('error', reject);
        q.end(updateBytes);
      });
    }
    session.close();
  } else if (rung.startsWith('channel+wire')) {
    // The transport's wire pattern on the channel alone: WaitForAssignmentAndModel answered with its three
    // messages (not decoded), the next poll opened as the model arrives, SubmitUpdate with a header
    // message (serialized once) and the chunk message; no protobuf decoding, no SHA-256.
    const { GrpcChannel } = (await import(pathToFileURL(`${sdk}/transport/grpc-channel.js`).href)) as { GrpcChannel: typeof GrpcChannelClass };
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}`, tls: null, receiveWindowBytes: 8 * 2 ** 20, maxMessageBytes: 2 * 2 ** 20, keepaliveMs: 60_000 });
    const metadata = { authorization: 'Bearer 0123456789abcdef0123456789abcdef' };
    const chunkPrefix = Buffer.from([0x12, 0x80, 0xb5, 0x18]);
    // Diagnosis knobs (transport steps on top of the channel): +decode (each answer message decoded),
    // +encode (the SubmitUpdate header encoded each round), +hashobj (a SHA-256 object created per poll, unused).
    const knobs = new Set(rung.split('+').slice(2));
    const encodeHeader = (round: number): Buffer =>
      wire.SubmitUpdate.requestSerialize({
        header: { roundNumber: round, modelVersion: round - 1, exampleCount: 1, encoding: 'UPDATE_ENCODING_FLOAT32_LE', payloadSizeBytes: SIZE, payloadSha256: Buffer.alloc(32) },
      });
    const header = encodeHeader(1);
    let decoded = 0;
    const poll = (after: number): Promise<number> => {
      let got = 0;
      if (knobs.has('hashobj')) createHash('sha256');
      const call = channel.call(wire.WaitForAssignmentAndModel.path, {
        metadata,
        timeoutMs: 60_000,
        onMessage: (m) => {
          got += m.length;
          if (knobs.has('decode')) decoded += wire.WaitForAssignmentAndModel.responseDeserialize(m).part === undefined ? 0 : 1;
          if (m.length > 1000) channel.recycle(m);
        },
      });
      call.write([wire.WaitForAssignmentAndModel.requestSerialize({ waitMs: 30_000, afterRoundNumber: after })]);
      call.end();
      return call.done.then(() => got);
    };
    let ahead: Promise<number> | null = null;
    for (let r = 1; r <= rounds; r++) {
      mark(r);
      const got = await (ahead ?? poll(r - 1));
      if (got < SIZE) throw new Error('short model');
      if (r < rounds) ahead = poll(r);
      const up = channel.call(wire.SubmitUpdate.path, { metadata, timeoutMs: 60_000, onMessage: () => {} });
      up.write([knobs.has('encode') ? encodeHeader(r) : header]);
      up.write([chunkPrefix, updateBytes]);
      up.end();
      await up.done;
    }
    if (knobs.has('decode') && decoded === 0) throw new Error('nothing decoded');
    channel.close();
  } else if (rung === 'channel') {
    const { GrpcChannel } = (await import(pathToFileURL(`${sdk}/transport/grpc-channel.js`).href)) as { GrpcChannel: typeof GrpcChannelClass };
    const channel = new GrpcChannel({ target: `127.0.0.1:${port}`, tls: null, receiveWindowBytes: 8 * 2 ** 20, maxMessageBytes: 2 * 2 ** 20, keepaliveMs: 60_000 });
    const metadata = { authorization: 'Bearer 0123456789abcdef0123456789abcdef' };
    const chunkPrefix = Buffer.from([0x12, 0x80, 0xb5, 0x18]);
    for (let r = 1; r <= rounds; r++) {
      mark(r);
      const request = Buffer.alloc(4);
      request.writeUInt32BE(r);
      let got = 0;
      const wait = channel.call('/bench.Ladder/Wait', {
        metadata,
        timeoutMs: 60_000,
        onMessage: (m) => {
          got += m.length;
          channel.recycle(m); // as the transport's releaseModel does
        },
      });
      wait.write([request]);
      wait.end();
      await wait.done;
      if (got !== SIZE) throw new Error('short model');
      const up = channel.call('/bench.Ladder/Upload', { metadata, timeoutMs: 60_000, onMessage: () => {} });
      up.write([chunkPrefix, updateBytes]);
      up.end();
      await up.done;
    }
    channel.close();
  } else {
    // Diagnosis knobs of the transport rung: +noahead (the next poll opens after the upload's answer),
    // +noupdatesha (the update's SHA-256 is not computed; a fixed one is sent).
    const knobs = new Set(rung.split('+').slice(1));
    const { createGrpcTransport } = (await import(pathToFileURL(`${sdk}/transport/grpc-transport.js`).href)) as { createGrpcTransport: typeof CreateGrpcTransport };
    const transport = createGrpcTransport({ address: `127.0.0.1:${port}`, callTimeoutMs: 120_000 });
    const credential = '0123456789abcdef0123456789abcdef';
    let held = -1;
    let ahead: { done: Promise<Awaited<ReturnType<NonNullable<typeof transport.waitForAssignmentAndModel>>>>; controller: AbortController } | null = null;
    const poll = (after: number) => {
      const controller = new AbortController();
      const signal = knobs.has('nosignal') ? undefined : controller.signal;
      return { done: transport.waitForAssignmentAndModel!(credential, 30_000, signal, { afterRoundNumber: after, ...(held >= 0 && { heldModelVersion: held }) }), controller };
    };
    for (let r = 1; r <= rounds; r++) {
      mark(r);
      const { response, model } = await (ahead ?? poll(r - 1)).done;
      if (response.kind !== 'assignment' || response.assignment.roundNumber !== r) throw new Error(`expected round ${r}`);
      const a = response.assignment;
      if (r < rounds && !knobs.has('noahead')) ahead = poll(r);
      if (model === null || model.sha256 !== a.modelSha256 || model.bytes.byteLength !== SIZE) throw new Error('model does not match the assignment');
      held = a.modelVersion;
      transport.releaseModel?.(model);
      update[r % update.length] = 2e-3;
      const sha256 = knobs.has('noupdatesha') ? '00'.repeat(32) : createHash('sha256').update(updateBytes).digest('hex');
      await transport.submitUpdate(
        credential,
        { roundNumber: r, modelVersion: a.modelVersion, exampleCount: 1, encoding: 'float32-le', sha256 },
        updateBytes,
      );
      if (r < rounds && knobs.has('noahead')) ahead = poll(r);
    }
    transport.close();
  }
  const steady = process.cpuUsage(cpuAtWarm);
  if (profiler !== null) {
    const session: Session = profiler;
    const { profile } = await new Promise<{ profile: object }>((resolve, reject) =>
      session.post('Profiler.stop', (error, result) => (error ? reject(error) : resolve(result as { profile: object }))),
    );
    writeFileSync(`${profileDir}/${rung}-${process.pid}.cpuprofile`, JSON.stringify(profile));
  }
  const all = process.cpuUsage(cpuAtStart);
  const mainAll = mainThreadCpuMs() - mainAtStart;
  process.send?.(
    {
      steadyCpuMs: (steady.user + steady.system) / 1000,
      steadySysMs: steady.system / 1000,
      allCpuMs: (all.user + all.system) / 1000,
      allHelperCpuMs: (all.user + all.system) / 1000 - mainAll,
      steadyFaults: process.resourceUsage().minorPageFault - faultsAtWarm,
      firstRoundsCpuMs: perRound.slice(0, 5),
      steadyGc: { count: gc.count, ms: gc.ms },
      steadyKernel: (() => {
        const k = kernelCounts();
        return { syscr: k.syscr - kernelAtWarm.syscr, syscw: k.syscw - kernelAtWarm.syscw, wakeups: k.wakeups - kernelAtWarm.wakeups };
      })(),
    },
    () => process.exit(0),
  );
}

// ------------------------------------------------------------------ driver
type DeviceResult = {
  steadyCpuMs: number;
  steadySysMs: number;
  allCpuMs: number;
  allHelperCpuMs: number;
  steadyFaults: number;
  firstRoundsCpuMs: number[];
  steadyKernel: { syscr: number; syscw: number; wakeups: number };
  steadyGc: { count: number; ms: number };
};

/** Figures of a group of devices of one run, per client-round. */
function figures(results: readonly DeviceResult[], rounds: number, warmup: number) {
  const sum = (k: 'steadyCpuMs' | 'steadySysMs' | 'allCpuMs' | 'allHelperCpuMs' | 'steadyFaults') => results.reduce((a, x) => a + x[k], 0);
  const steadyRounds = results.length * (rounds - warmup);
  return {
    deviceCpuMsPerClientRoundSteady: round3(sum('steadyCpuMs') / steadyRounds),
    deviceSysCpuMsPerClientRoundSteady: round3(sum('steadySysMs') / steadyRounds),
    deviceCpuMsPerClientRoundAll: round3(sum('allCpuMs') / (results.length * rounds)),
    deviceHelperThreadsCpuMsPerClientRoundAll: round3(sum('allHelperCpuMs') / (results.length * rounds)),
    devicePageFaultsPerClientRoundSteady: round3(sum('steadyFaults') / steadyRounds),
    readSyscallsPerClientRoundSteady: round3(results.reduce((a, x) => a + x.steadyKernel.syscr, 0) / steadyRounds),
    writeSyscallsPerClientRoundSteady: round3(results.reduce((a, x) => a + x.steadyKernel.syscw, 0) / steadyRounds),
    wakeupsPerClientRoundSteady: round3(results.reduce((a, x) => a + x.steadyKernel.wakeups, 0) / steadyRounds),
    gcPausesPerClientRoundSteady: round3(results.reduce((a, x) => a + x.steadyGc.count, 0) / steadyRounds),
    gcPauseMsPerClientRoundSteady: round3(results.reduce((a, x) => a + x.steadyGc.ms, 0) / steadyRounds),
    firstRoundsCpuMsMedian: results[0]!.firstRoundsCpuMs.map((_, i) => round3(median(results.map((x) => x.firstRoundsCpuMs[i]!)))),
  };
}

/** One run: a server and `clients` devices, device i on variant `variants[i % variants.length]` (a rung and an SDK build). */
async function runOnce(variants: ReadonlyArray<{ rung: string; sdk: string }>, clients: number, rounds: number, warmup: number, streamWindow: number) {
  const server = fork(here, ['--serve', String(clients), String(streamWindow)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port } = await new Promise<{ port: number }>((resolve) => server.once('message', resolve as (m: unknown) => void));
  const results = await Promise.all(
    Array.from(
      { length: clients },
      (_, i) =>
        new Promise<DeviceResult>((resolve, reject) => {
          const { rung, sdk } = variants[i % variants.length]!;
          const d = fork(here, ['--device', rung, sdk, String(port), String(rounds), String(warmup)], {
            stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
            execArgv: [...process.execArgv, ...(process.env['LADDER_DEVICE_EXEC_ARGV']?.split(' ').filter((a) => a !== '') ?? [])],
          });
          d.once('message', resolve as (m: unknown) => void);
          d.once('exit', (code) => (code === 0 ? undefined : reject(new Error(`device exited ${code}`))));
        }),
    ),
  );
  server.send({ cmd: 'stats' });
  const stats = await new Promise<{ cpuMs: number; medianRoundMs: number | null }>((resolve) => server.once('message', resolve as (m: unknown) => void));
  return {
    serverCpuMsPerClientRound: round3(stats.cpuMs / (clients * rounds)),
    medianRoundMs: stats.medianRoundMs === null ? null : round3(stats.medianRoundMs),
    byVariant: variants.map((_, k) => figures(results.filter((_, i) => i % variants.length === k), rounds, warmup)),
  };
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      rungs: { type: 'string', default: 'raw,channel,transport' },
      clients: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '60' },
      warmup: { type: 'string', default: '10' },
      runs: { type: 'string', default: '3' },
      sdk: { type: 'string', multiple: true },
      paired: { type: 'boolean', default: false },
      'server-stream-window': { type: 'string', default: '65535' },
    },
  });
  const sdks = args.sdk ?? [defaultSdk];
  const paired = args.paired;
  const variants: Array<{ name: string; rung: string; sdk: string }> = [];
  for (const rung of args.rungs.split(',')) {
    if (!['raw', 'channel'].includes(rung) && !rung.startsWith('channel+wire') && rung.split('+')[0] !== 'transport') throw new Error(`unknown rung ${rung}`);
    if (rung === 'raw') variants.push({ name: rung, rung, sdk: defaultSdk });
    else sdks.forEach((sdk, i) => variants.push({ name: sdks.length > 1 ? `${rung}@${i}` : rung, rung, sdk }));
  }
  const clients = Number(args.clients);
  const rounds = Number(args.rounds);
  const warmup = Number(args.warmup);
  const loadAtStart = loadavg()[0];
  const runs: Array<{ variant: string; run: number } & Omit<Awaited<ReturnType<typeof runOnce>>, 'byVariant'> & ReturnType<typeof figures>> = [];
  for (let k = 0; k < Number(args.runs); k++) {
    // Paired: every variant's devices share each run (device i on variant (i + k) % n); otherwise one run per variant, alternating order.
    const groups = paired ? [variants.map((_, i) => variants[(i + k) % variants.length]!)] : (k % 2 === 0 ? variants : [...variants].reverse()).map((v) => [v]);
    for (const group of groups) {
      const { byVariant, ...run } = await runOnce(group, clients, rounds, warmup, Number(args['server-stream-window']));
      byVariant.forEach((f, i) => {
        runs.push({ variant: group[i]!.name, run: k, ...run, ...f });
        process.stderr.write(`${JSON.stringify(runs.at(-1))}\n`);
      });
    }
  }
  const keys = [
    'deviceCpuMsPerClientRoundSteady',
    'deviceSysCpuMsPerClientRoundSteady',
    'deviceCpuMsPerClientRoundAll',
    'deviceHelperThreadsCpuMsPerClientRoundAll',
    'devicePageFaultsPerClientRoundSteady',
    'readSyscallsPerClientRoundSteady',
    'writeSyscallsPerClientRoundSteady',
    'wakeupsPerClientRoundSteady',
    'gcPausesPerClientRoundSteady',
    'gcPauseMsPerClientRoundSteady',
    'serverCpuMsPerClientRound', 'medianRoundMs'] as const;
  const names = variants.map((v) => v.name);
  const medians = Object.fromEntries(
    names.map((name) => [name, Object.fromEntries(keys.map((key) => [key, round3(median(runs.filter((x) => x.variant === name).map((x) => x[key] ?? NaN)))]))]),
  );
  console.log(
    JSON.stringify(
      { benchmark: 'bench/device-ladder.ts', clients, rounds, warmup, paired, serverStreamWindow: Number(args['server-stream-window']), sdks, node: process.version, loadAvg: { atStart: loadAtStart, atEnd: loadavg()[0] }, medians, runs },
      null,
      2,
    ),
  );
}

if (process.argv[2] === '--serve') serve(Number(process.argv[3]), Number(process.argv[4]));
else if (process.argv[2] === '--device') {
  const [, , , rung, sdk, port, rounds, warmup] = process.argv;
  await device(rung!, sdk!, Number(port), Number(rounds), Number(warmup));
} else await main();
