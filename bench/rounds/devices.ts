/**
 * Device worker of the round-engine benchmark: runs `count` light simulated
 * devices in this process, each with its own SDK gRPC transport and so its own
 * TCP connection to the coordinator.
 *
 * Local training is replaced by a fixed delta (one per round, differing in one
 * value so that no device replays an earlier round's bytes; each with its
 * SHA-256, computed once per round), so what is measured is transport and
 * coordination. On the
 * encrypted path the update is one of a few BFV payloads the parent encrypted
 * beforehand (real node-seal ciphertexts of that delta), used in turn.
 *
 * Wire bytes are counted at the client TCP sockets (`net.Socket.bytesRead` /
 * `bytesWritten`, i.e. everything gRPC/HTTP2 puts on the connection, TCP/IP
 * headers excluded). Each device's socket is the one its transport reports
 * (`onConnection`); a `net.connect` hook counts every socket of the process as
 * a cross-check.
 *
 * As the SDK does, a device opens its long-poll for the next round when an assignment arrives
 * (`afterRoundNumber`: the coordinator answers it with a later round only), so it is told of the
 * next round when that opens, even while its upload's acknowledgement is on its way. That poll's
 * request bytes are therefore counted in the download phase and its answer in the phase it arrives
 * in (the totals are exact); the assignment time is when its answer arrived.
 *
 * The SDK is this tree's build (packages/client-sdk/dist), or the build whose `dist` directory
 * BENCH_SDK_DIST names (absolute path, inside a tree with node_modules: A/B runs of device SDKs
 * against the same coordinator and harness). The committee path's modules (custodian, crypto, the
 * SDK's committee middleware) are loaded only on that path, so that a plaintext device's heap (and
 * the garbage collector's work on it) holds what a plaintext device app holds.
 *
 * Besides the process CPU of the rounds window (release to the end of the device loops), the worker
 * reports that window's CPU per thread group (MainThread; V8Worker: concurrent marking and JIT
 * compilation), its main-thread GC pauses and its minor page faults (first touches of memory).
 *
 * As the SDK does, a device polls with WaitForAssignmentAndModel when its transport has it (and
 * the coordinator too: the transport falls back to WaitForAssignment otherwise), saying which model
 * version it holds: an assignment to another version brings that model in the same call. The model
 * then arrives with the assignment (its bytes count in the wait phase, and the assignment time is
 * when the whole answer, model included, arrived; the download phase is then empty).
 *
 * A device hands each model back to its transport (`releaseModel`, when the SDK build has it) once it
 * has checked it, as the SDK's client does once a later version replaced it: the next model is
 * received into that memory instead of fresh memory.
 *
 * Speaks to its parent over IPC only; writes nothing to stdout.
 */
import { createHash } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import { Session } from 'node:inspector/promises';
import net from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { float32View } from '@veil/protocol/codec';
import type { CommitteeEncryption } from '../../packages/client-sdk/dist/mods/committee.js';
import type { createGrpcTransport as CreateGrpcTransport } from '../../packages/client-sdk/dist/transport/grpc-transport.js';
import type { AssignmentResponse, DownloadedModel, TaskCommittee } from '../../packages/client-sdk/dist/transport/transport.js';
import { cpuByThread, cpuByThreadSince, nowMs, observeGcPauses, type DeviceReport, type DeviceWorkerInit, type PhaseBytes, type WorkerDone } from './common.js';

/** The client SDK build the devices run (see the header). */
const sdkDist = resolve(process.env['BENCH_SDK_DIST'] ?? fileURLToPath(new URL('../../packages/client-sdk/dist', import.meta.url)));
const sdkModule = <T>(path: string): Promise<T> => import(pathToFileURL(join(sdkDist, path)).href) as Promise<T>;
const { createGrpcTransport } = await sdkModule<{ createGrpcTransport: typeof CreateGrpcTransport }>('transport/grpc-transport.js');
const gcPauses = observeGcPauses();

// ---------------------------------------------------------------- process-wide socket accounting (cross-check)
const processSockets: net.Socket[] = [];
const originalConnect = net.connect;
(net as { connect: typeof net.connect }).connect = function (this: unknown, ...args: unknown[]) {
  const socket = (originalConnect as (...a: unknown[]) => net.Socket).apply(this, args);
  processSockets.push(socket);
  return socket;
} as typeof net.connect;

const sumBytes = (sockets: readonly net.Socket[]): PhaseBytes => {
  let read = 0;
  let written = 0;
  for (const s of sockets) {
    read += s.bytesRead;
    written += s.bytesWritten;
  }
  return { read, written };
};
const diff = (a: PhaseBytes, b: PhaseBytes): PhaseBytes => ({ read: b.read - a.read, written: b.written - a.written });
const add = (acc: PhaseBytes, d: PhaseBytes): void => {
  acc.read += d.read;
  acc.written += d.written;
};
const zero = (): PhaseBytes => ({ read: 0, written: 0 });

/** This process's CPU (user + system) since `start`, ms. */
const cpuSince = (start: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(start);
  return (used.user + used.system) / 1000;
};
const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
const send = (message: unknown): void => {
  process.send?.(message);
};

async function main(init: DeviceWorkerInit): Promise<void> {
  const delta = new Float32Array(init.parameterCount).fill(1e-3);
  const encrypted = init.encryptedPayloadFiles !== undefined;
  const pool = (encrypted ? await Promise.all(init.encryptedPayloadFiles!.map((f) => readFile(f))) : [new Uint8Array(delta.buffer)]).map(
    (bytes) => ({ bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), sha256: createHash('sha256').update(bytes).digest('hex') }),
  );
  // The coordinator refuses a device's plaintext update sent again in a later round (a replay), so
  // each round's plaintext delta differs in one value; devices of one round share it (that is allowed).
  // The deltas of the last rounds live in a ring of buffers (a real device's update comes from its
  // training; the bench's allocation of a fresh copy per round is not device work).
  const byRound = new Map<number, (typeof pool)[number]>();
  // Written once here, so that their pages are mapped before the rounds (a zeroed allocation is
  // mapped on first write: 98 page faults per 400 kB buffer, in rounds 1-4, are not device work).
  const ring = Array.from({ length: 4 }, () => new Float32Array(delta.length).fill(1e-3));
  const plaintextFor = (roundNumber: number): (typeof pool)[number] => {
    let entry = byRound.get(roundNumber);
    if (entry === undefined) {
      const d = ring[roundNumber % ring.length]!;
      d.set(delta);
      d[roundNumber % d.length] = 2e-3;
      const bytes = new Uint8Array(d.buffer);
      entry = { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
      byRound.set(roundNumber, entry);
      byRound.delete(roundNumber - 4);
    }
    return entry;
  };
  const updateFor = (deviceIndex: number, roundNumber: number) =>
    encrypted ? pool[(deviceIndex + roundNumber) % pool.length]! : plaintextFor(roundNumber);

  // Committee path: the authority's key (bench stand-in for enrolment) and each device's encryption.
  const committeeModules = init.committee
    ? {
        custodian: await import('@veil/custodian'),
        crypto: await import('@veil/crypto'),
        middleware: await sdkModule<typeof import('../../packages/client-sdk/dist/mods/committee.js')>('mods/committee.js'),
      }
    : null;
  const authority = committeeModules ? await committeeModules.custodian.readAuthorityKey(init.committee!.authorityDir) : null;
  const committees = new Map<number, { encryption: CommitteeEncryption; clientId: string }>();
  const built = new Map<number, Map<number, { bytes: Uint8Array; sha256: string }>>();
  const setUpCommittee = (d: Device, clientId: string, committee: TaskCommittee | null): void => {
    if (!init.committee || committeeModules === null) return;
    if (committee === null) throw new Error('the task announced no committee');
    const deviceKey = committeeModules.crypto.generateEd25519KeyPair();
    const certificate = committeeModules.custodian.certifyDevice(authority!, { taskId: init.taskId, deviceId: clientId, devicePublicKey: deviceKey.publicKey });
    const encryption = committeeModules.middleware.createCommitteeEncryption({ committee, pins: init.committee.pins, deviceId: clientId, deviceKey, certificate });
    committees.set(d.index, { encryption, clientId });
  };
  /** Builds device d's committee upload for a round with the SDK's middleware, timed (wall and this process's CPU). */
  const buildCommittee = async (d: Device, roundNumber: number): Promise<{ bytes: Uint8Array; sha256: string }> => {
    const c = committees.get(d.index);
    if (c === undefined) throw new Error('no committee encryption for this device');
    const delta = new Float32Array(plaintextFor(roundNumber).bytes.buffer.slice(0));
    const started = nowMs();
    const cpu = process.cpuUsage();
    const out = await c.encryption.middleware(
      { delta, exampleCount: 1, encoding: 'float32-le', notes: {} },
      { taskId: init.taskId, clientId: c.clientId, roundNumber, modelVersion: roundNumber - 1, maxExampleCount: c.encryption.weightCap, config: {}, signal: undefined },
      async (x) => x,
    );
    const used = process.cpuUsage(cpu);
    const bytes = out.payload!;
    const b = (d.report.committeeBuild ??= { wallMs: [], cpuMs: [], c0Bytes: 0, uploadBytes: 0, committeeSize: c.encryption.descriptor.committee.length });
    b.wallMs.push(nowMs() - started);
    b.cpuMs.push((used.user + used.system) / 1000);
    // Upload version 2 (@veil/crypto committee/upload.ts): the c0 first, its length set by the task's value count and
    // c0 width, then the magic "VCU" 2. The length is taken from the crypto package and checked against that magic.
    const { c0PayloadBytes, committeeValueCount } = committeeModules!.crypto;
    const descriptor = c.encryption.descriptor;
    const c0Length = c0PayloadBytes(committeeValueCount(descriptor, init.parameterCount), descriptor.encoding.c0Bits ?? 44);
    if (bytes[c0Length] !== 0x56 || bytes[c0Length + 1] !== 0x43 || bytes[c0Length + 2] !== 0x55 || bytes[c0Length + 3] !== 2) {
      throw new Error(`committee upload: no version-2 magic after a ${c0Length}-byte c0`);
    }
    b.c0Bytes = c0Length;
    b.uploadBytes = bytes.byteLength;
    return { bytes, sha256: createHash('sha256').update(bytes).digest('hex') };
  };
  const committeeUpdateFor = async (d: Device, roundNumber: number): Promise<{ bytes: Uint8Array; sha256: string }> => {
    const ready = built.get(d.index)?.get(roundNumber);
    if (ready !== undefined) {
      built.get(d.index)!.delete(roundNumber); // sent once; a retry would rebuild
      return ready;
    }
    return buildCommittee(d, roundNumber);
  };

  interface Device {
    index: number;
    transport: ReturnType<typeof createGrpcTransport>;
    sockets: net.Socket[];
    credential: string;
    report: DeviceReport;
  }
  const devices: Device[] = [];
  for (let i = 0; i < init.count; i++) {
    const sockets: net.Socket[] = [];
    const transport = createGrpcTransport({
      address: init.address,
      onConnection: (s) => sockets.push(s),
      callTimeoutMs: 120_000,
    });
    devices.push({
      index: i,
      transport,
      sockets,
      credential: '',
      report: {
        clientId: '',
        behavior: init.behavior,
        rounds: [],
        attempts: [],
        polls: 0,
        idlePolls: 0,
        errors: [],
        endedAt: null,
        endedReason: null,
        sockets: 0,
        bytes: { join: zero(), wait: zero(), download: zero(), submit: zero(), total: zero() },
      },
    });
  }
  // The transport's downloadModel takes `{ version }` (current tree) or a bare version number (older builds).
  const objectDownloadApi = /latest/.test(String(devices[0]?.transport.downloadModel));
  const download = (d: Device, version: number, signal?: AbortSignal) =>
    (d.transport.downloadModel as (c: string, w: unknown, s?: AbortSignal) => Promise<DownloadedModel>)(
      d.credential,
      objectDownloadApi ? { version } : version,
      signal,
    );

  // ---------------------------------------------------------------- join, a few at a time
  let next = 0;
  const joinOne = async (d: Device): Promise<void> => {
    for (let attempt = 0; attempt < 5; attempt++) {
      const before = sumBytes(d.sockets);
      try {
        const joined = await d.transport.join({
          taskId: init.taskId,
          enrolmentSecret: init.enrolmentSecret,
          clientName: `${init.namePrefix}-${d.index}`,
        });
        d.credential = joined.credential;
        d.report.clientId = joined.clientId;
        setUpCommittee(d, joined.clientId, joined.task.committee);
        add(d.report.bytes.join, diff(before, sumBytes(d.sockets)));
        return;
      } catch (error) {
        add(d.report.bytes.join, diff(before, sumBytes(d.sockets)));
        d.report.errors.push(`join: ${(error as Error).message}`);
        await sleep(200);
      }
    }
  };
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(init.joinConcurrency, devices.length)) }, async () => {
      while (next < devices.length) await joinOne(devices[next++]!);
    }),
  );
  if (init.committee?.encrypt === 'before') {
    for (const d of devices) {
      if (!committees.has(d.index)) continue;
      const perRound = new Map<number, { bytes: Uint8Array; sha256: string }>();
      built.set(d.index, perRound);
      for (let r = 1; r <= init.committee.rounds; r++) perRound.set(r, await buildCommittee(d, r));
    }
  }
  // The parent releases every worker's devices at once, when all have joined (and built their uploads).
  const go = new Promise<void>((resolve) => {
    const onMessage = (m: { cmd?: string }): void => {
      if (m?.cmd !== 'go') return;
      process.off('message', onMessage);
      resolve();
    };
    process.on('message', onMessage);
  });
  send({ type: 'joined', clientIds: devices.map((d) => d.report.clientId) });
  await go;
  const threadsAtGo = await cpuByThread();
  gcPauses.reset();
  const cpuAtGo = process.cpuUsage();
  const pageFaultsAtGo = process.resourceUsage().minorPageFault;
  let profiler: Session | null = null;
  if (init.roundsCpuProfileFile !== undefined) {
    profiler = new Session();
    profiler.connect();
    await profiler.post('Profiler.enable');
    await profiler.post('Profiler.start');
  }

  // ---------------------------------------------------------------- the device loops
  const loop = async (d: Device): Promise<void> => {
    if (d.credential === '') return;
    const r = d.report;
    let cachedVersion = -1;
    const pollWaitMs = (): number => Math.max(1, Math.min(init.pollMs, Math.floor(init.hardStopAt - nowMs())));
    // As the SDK does: the long-poll for the next round is opened when work on a round starts
    // (afterRoundNumber), so a device hears of the next round when it opens, even while its upload's
    // acknowledgement is still on its way. Null answer: failed, or a stale round (an older coordinator).
    let ahead: { response: Promise<{ response: AssignmentResponse; at: number } | null>; cancel(): void } | null = null;
    // A model that came with an assignment (WaitForAssignmentAndModel), until the device uses it.
    let prefetched: Awaited<ReturnType<typeof download>> | null = null;
    const poll = async (signal: AbortSignal | undefined, afterRoundNumber: number | undefined, heldModelVersion: number): Promise<AssignmentResponse> => {
      const wait = afterRoundNumber === undefined ? undefined : { afterRoundNumber };
      if (d.transport.waitForAssignmentAndModel === undefined) return d.transport.waitForAssignment(d.credential, pollWaitMs(), signal, wait);
      const { response, model } = await d.transport.waitForAssignmentAndModel(d.credential, pollWaitMs(), signal, {
        ...wait,
        ...(heldModelVersion >= 0 && { heldModelVersion }),
      });
      if (model !== null) prefetched = model;
      return response;
    };
    const openAhead = (roundNumber: number, heldModelVersion: number): typeof ahead => {
      const controller = new AbortController();
      r.polls++;
      const response = poll(controller.signal, roundNumber, heldModelVersion)
        .then(
          (x) => (x.kind === 'assignment' && x.assignment.roundNumber <= roundNumber ? null : { response: x, at: nowMs() }),
          () => null,
        );
      return { response, cancel: () => controller.abort() };
    };
    try {
      for (let it = 0; it < init.maxIterations && nowMs() < init.hardStopAt; it++) {
        let b0 = sumBytes(d.sockets);
        const cpuWait = process.cpuUsage();
        let response: AssignmentResponse;
        let receivedAt: number;
        const early = ahead === null ? null : await ahead.response;
        ahead = null;
        if (early !== null) {
          ({ response, at: receivedAt } = early);
        } else {
          try {
            r.polls++;
            response = await poll(undefined, undefined, cachedVersion);
            receivedAt = nowMs();
          } catch (error) {
            add(r.bytes.wait, diff(b0, sumBytes(d.sockets)));
            r.errors.push(`wait: ${(error as Error).message}`);
            await sleep(100);
            continue;
          }
        }
        let b1 = sumBytes(d.sockets);
        add(r.bytes.wait, diff(b0, b1));
        if (response.kind === 'ended') {
          r.endedAt = nowMs();
          r.endedReason = response.reason;
          return;
        }
        if (response.kind === 'idle') {
          r.idlePolls++;
          continue;
        }
        const a = response.assignment;
        const assignedAt = receivedAt;
        if (init.behavior === 'normal' && init.pollAhead) ahead = openAhead(a.roundNumber, a.modelVersion);
        if (init.behavior === 'hold') {
          send({ type: 'assigned', clientId: r.clientId, round: a.roundNumber, at: assignedAt });
          // Simulated long local training; the parent SIGKILLs this process meanwhile.
          await sleep(Math.max(0, init.hardStopAt - nowMs()));
          return;
        }
        let downloadedAt: number | null = null;
        const cpuMs = { wait: cpuSince(cpuWait), download: 0, submit: 0 };
        const cpuDownload = process.cpuUsage();
        try {
          b0 = sumBytes(d.sockets);
          let modelBytes = 0;
          if (cachedVersion !== a.modelVersion) {
            // (Set by the poll's closure: TypeScript cannot see that, hence the annotation.)
            const held = prefetched as Awaited<ReturnType<typeof download>> | null;
            const sent = held?.version === a.modelVersion ? held : null;
            prefetched = null;
            const model = sent ?? (await download(d, a.modelVersion));
            // As the SDK does: the model must be the one the assignment names, and a float32 model (version 0,
            // every plaintext or committee version) is read in place (float32View). Later versions of a
            // shared-key task are ciphertext sums (their size and SHA-256 are checked by the transport).
            if (model.sha256 !== a.modelSha256) throw new Error('model does not match the assignment digest');
            if (model.encoding === 'float32-le' && float32View(model.bytes).length !== init.parameterCount) {
              throw new Error(`model has ${model.bytes.byteLength} bytes`);
            }
            modelBytes = model.bytes.byteLength;
            cachedVersion = a.modelVersion;
            // Done with the model's bytes (a device app that loads them into its training state is too):
            // the transport may receive the next model into this memory (older SDK builds lack the call).
            d.transport.releaseModel?.(model);
          }
          downloadedAt = nowMs();
          cpuMs.download = cpuSince(cpuDownload);
          const cpuSubmit = process.cpuUsage();
          b1 = sumBytes(d.sockets);
          add(r.bytes.download, diff(b0, b1));
          const { bytes: payload, sha256 } = init.committee ? await committeeUpdateFor(d, a.roundNumber) : updateFor(d.index, a.roundNumber);
          const header = {
            roundNumber: a.roundNumber,
            modelVersion: a.modelVersion,
            exampleCount: 1,
            encoding: init.committee ? ('committee-v1' as const) : encrypted ? ('bfv-v1' as const) : ('float32-le' as const),
            sha256,
          };
          if (init.behavior === 'cut') {
            const abort = new AbortController();
            const pending = d.transport.submitUpdate(d.credential, header, payload, abort.signal).then(
              () => 'accepted',
              (error: Error) => `rejected: ${error.message}`,
            );
            // Let part of the upload reach the socket, then cut the connection without a goodbye.
            await new Promise((resolve) => setImmediate(resolve));
            for (const s of d.sockets) s.destroy();
            send({ type: 'assigned', clientId: r.clientId, round: a.roundNumber, at: assignedAt });
            const outcome = await Promise.race([pending, sleep(5_000).then(() => 'no answer')]);
            r.errors.push(`cut upload: ${outcome}`);
            r.attempts.push({ round: a.roundNumber, assignedAt, downloadedAt, endedAt: nowMs(), outcome: 'cut' });
            add(r.bytes.submit, diff(b1, sumBytes(d.sockets)));
            d.transport.close();
            return;
          }
          const { acceptedCount } = await d.transport.submitUpdate(d.credential, header, payload);
          const submittedAt = nowMs();
          cpuMs.submit = cpuSince(cpuSubmit);
          add(r.bytes.submit, diff(b1, sumBytes(d.sockets)));
          r.rounds.push({ round: a.roundNumber, assignedAt, downloadedAt, submittedAt, acceptedCount, modelBytes, updateBytes: payload.byteLength, cpuMs });
          r.attempts.push({ round: a.roundNumber, assignedAt, downloadedAt, endedAt: submittedAt, outcome: 'accepted' });
        } catch (error) {
          add(r.bytes.submit, diff(b1, sumBytes(d.sockets)));
          r.errors.push(`round ${a.roundNumber}: ${(error as Error).message}`);
          r.attempts.push({ round: a.roundNumber, assignedAt, downloadedAt, endedAt: nowMs(), outcome: (error as Error).message.slice(0, 80) });
          await sleep(100);
        }
      }
    } finally {
      ahead?.cancel();
    }
  };
  await Promise.all(devices.map((d) => loop(d)));
  const roundsCpu = process.cpuUsage(cpuAtGo);
  const roundsMinorPageFaults = process.resourceUsage().minorPageFault - pageFaultsAtGo;
  const roundsGcPauses = { ...gcPauses.pauses };
  const roundsCpuByThreadMs = cpuByThreadSince(threadsAtGo, await cpuByThread());
  if (profiler !== null) {
    const { profile } = await profiler.post('Profiler.stop');
    await writeFile(init.roundsCpuProfileFile!, JSON.stringify(profile));
    profiler.disconnect();
  }

  for (const d of devices) {
    d.report.sockets = d.sockets.length;
    d.report.bytes.total = sumBytes(d.sockets);
    d.transport.close();
  }
  const done: WorkerDone = {
    type: 'done',
    devices: devices.map((d) => d.report),
    processSockets: processSockets.length,
    processBytes: sumBytes(processSockets),
    peakRss: process.resourceUsage().maxRSS * 1024,
    cpuMs: (process.cpuUsage().user + process.cpuUsage().system) / 1000,
    roundsCpuMs: (roundsCpu.user + roundsCpu.system) / 1000,
    roundsCpuByThreadMs,
    roundsGcPauses,
    roundsMinorPageFaults,
    sdkDist,
  };
  process.send?.(done, () => process.exit(0));
}

process.once('message', (message: DeviceWorkerInit) => {
  if (message?.cmd !== 'init') {
    process.exit(2);
  }
  // Never outlive the benchmark: exit shortly after the hard stop whatever happens.
  setTimeout(() => process.exit(3), Math.max(1_000, message.hardStopAt - nowMs() + 15_000)).unref();
  main(message).catch((error) => {
    send({ type: 'error', message: String((error as Error)?.stack ?? error) });
    process.exit(1);
  });
});
process.on('disconnect', () => process.exit(0));
