/**
 * Custodian benchmark: one custodian's CPU for one round of D devices (issue 11 target: <= 2 s
 * for 1,000 devices), measured in a separate `veil custodian serve` process over gRPC on
 * loopback, and the same work in-process without gRPC.
 *
 *   npx tsx bench/custodian.ts [--devices 1000] [--repeats 3] [--base-veil /other/tree/packages/cli/bin/veil.js] [--staged-batch 1] [--same-devices]
 *   npx tsx bench/custodian.ts --device-ab /other/tree [--blocks 400]
 *
 * --device-ab: only the custodian's per-device work (the manifest checked with a cached
 * certificate, SHA-256 of the sealed share, the share opened (RFC 9180) and added), with this
 * tree's build and another tree's (its packages/custodian and packages/crypto dist/) in one
 * process, in interleaved blocks of 8 devices (64 devices prepared once): CPU per device for each
 * (`usCpuPerDevice`, medians over blocks). Far less noisy than two processes on a loaded machine;
 * run it against the same tree for the noise floor.
 *
 * --base-veil: a second custodian process from another build, asked alternately round by round
 * (A/B in one run); its figures are under `base`.
 *
 * --staged-batch K: the staged round's devices are added K at a time, each group in its own
 * event-loop turn (1 ms apart), so that each group is its own DeviceBatch message, as when a
 * round accepts its uploads one by one (bench:rounds at 10 clients). Default: all in one turn.
 *
 * --same-devices: the same device keys and certificates every round (bench:rounds' devices do
 * that): each certificate is verified once, later rounds verify the manifests only. Default: new
 * devices every round.
 *
 * Prints exactly one JSON object on stdout; progress goes to stderr.
 *
 * What the custodian does per device: verify the certificate and the manifest (two Ed25519
 * verifications), hash the sealed share (SHA-256, 4,144 bytes), open it (X25519 + HKDF +
 * AES-128-GCM, RFC 9180), add 2,048 coefficients; at the end hash(D), one signature and an
 * fsync. Devices are prepared before the clock starts (real certificates, manifests and sealed
 * shares for custodian 1; the other custodians' share digests are random, which custodian 1
 * cannot tell apart). The process figure is the custodian process's user+system CPU time
 * (from its threads' /proc/PID/task/TID/schedstat, ns) across one answered request; `wallMs` is the request as the
 * coordinator sees it; `stagedFinalHeaderToAnswerWallMs` is the same size of round staged (the
 * devices streamed first, as a round accepts them), from the final header to the answer, and
 * `stagedCustodianProcessCpuMsPerRound` the custodian process's CPU over that staged round (the
 * devices are added in one loop: the client streams them as the batches it forms).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes, randomInt } from 'node:crypto';
import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import {
  ed25519Sign,
  encodeDescriptor,
  encodeManifest,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  sealShare,
  sha256Hex,
  signDescriptor,
  signManifest,
  type TaskDescriptor,
} from '@veil/crypto';
import { fromBase64, sha256, toBase64, toHex } from '../packages/custodian/src/bytes.js';
import { createCommitteeClient, createCustodianService, initCustodianDir, openCustodianState, readCustodianKeys } from '@veil/custodian';

const { values } = parseArgs({
  options: {
    devices: { type: 'string' },
    repeats: { type: 'string' },
    'base-veil': { type: 'string' },
    'staged-batch': { type: 'string' },
    'same-devices': { type: 'boolean' },
    'device-ab': { type: 'string' },
    blocks: { type: 'string' },
  },
});
const deviceCount = Number(values.devices ?? 1000);
const repeats = Number(values.repeats ?? 3);
const stagedBatch = values['staged-batch'] === undefined ? Number.POSITIVE_INFINITY : Number(values['staged-batch']);
if (!(stagedBatch >= 1)) throw new Error('--staged-batch must be >= 1');
const sameDevices = values['same-devices'] === true;
const P = 65521;
const N = 2048;
const log = (msg: string): void => {
  process.stderr.write(`[bench:custodian] ${msg}\n`);
};

const clockTicks = 100; // USER_HZ on Linux
async function processCpuMs(pid: number): Promise<number> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / clockTicks;
}

/**
 * The process's CPU time to the nanosecond: the sum over its threads of /proc/PID/task/TID/schedstat's
 * first field (time on a CPU, ns). /proc/PID/stat counts 10 ms ticks, too coarse for a 10-device
 * round (about 10-20 ms of a custodian's CPU); a thread that exited is no longer counted, which a
 * custodian's long-lived threads (main, libuv pool, V8 workers) do not do between two readings.
 */
async function processCpuMsPrecise(pid: number): Promise<number> {
  let ns = 0;
  for (const tid of await readdir(`/proc/${pid}/task`)) {
    try {
      ns += Number((await readFile(`/proc/${pid}/task/${tid}/schedstat`, 'utf8')).split(' ')[0]);
    } catch {
      // The thread exited between the listing and the read.
    }
  }
  return ns / 1e6;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
};

/**
 * --device-ab: the per-device work of this tree's build and `otherTree`'s, interleaved in one
 * process (see the module comment). Each side parses the descriptor, prepares the sealing key and
 * keeps its own certificate cache, as a custodian does.
 */
async function deviceAb(
  otherTree: string,
  blocks: number,
  fixture: {
    descriptorBytes: Uint8Array;
    descriptorSignature: Uint8Array;
    descriptorHash: Uint8Array;
    authority: ReturnType<typeof generateEd25519KeyPair>;
    sealingPublicKey: Uint8Array;
    custodianDir: string;
    n: number;
  },
): Promise<void> {
  const round = 7;
  const keys1 = await readCustodianKeys(fixture.custodianDir);
  const devices = Array.from({ length: 64 }, (_, j) => {
    const key = generateEd25519KeyPair();
    const deviceId = `d-${j}`;
    const share = new Uint16Array(N);
    for (let k = 0; k < N; k += 1) share[k] = randomInt(P);
    const sealed = sealShare(fixture.sealingPublicKey, { descriptorHash: fixture.descriptorHash, round, deviceId, custodianIndex: 1 }, share);
    const manifest = {
      descriptorHash: toHex(fixture.descriptorHash),
      round,
      deviceId,
      c0Sha256: sha256Hex(randomBytes(32)),
      shareSha256: [sha256Hex(sealed), ...Array.from({ length: fixture.n - 1 }, () => sha256Hex(randomBytes(32)))],
      devicePublicKey: toBase64(key.publicKey),
      certificate: issueDeviceCertificate(fixture.authority.privateKey, { taskId: 'bench', deviceId, devicePublicKey: key.publicKey, notAfterMs: Date.now() + 3_600_000 }),
    };
    return { manifest: encodeManifest(manifest), signature: fromBase64(signManifest(manifest, key.privateKey).signature, 's', 64), sealed };
  });
  const here = fileURLToPath(new URL('..', import.meta.url));
  const sides = [];
  for (const [name, tree] of [['current', here], ['other', otherTree]] as const) {
    // The built modules, as the custodian process runs them (protocol.ts is internal to the package).
    const P_ = (await import(join(tree, 'packages/custodian/dist/protocol.js'))) as typeof import('../packages/custodian/src/protocol.js');
    const K = (await import(join(tree, 'packages/crypto/dist/index.js'))) as typeof import('@veil/crypto');
    const view = P_.openDescriptor(fixture.descriptorBytes, fixture.descriptorSignature, { minDevices: 1 });
    const sealingKey = K.prepareX25519PrivateKey(keys1.sealing.privateKey);
    const cache = new Set<string>();
    const acc = new Uint32Array(N);
    const run = (d: (typeof devices)[number]): void => {
      const m = P_.openManifest(d.manifest, d.signature, view, round, Date.now(), cache);
      if (!P_.bytesEqual(m.shareSha256[0]!, P_.sha256(d.sealed))) throw new Error('share digest mismatch');
      const opened = P_.openShare({ descriptor: view, round, deviceId: m.deviceId, custodianIndex: 1, sealingPrivateKey: sealingKey, sealingPublicKey: keys1.sealing.publicKey, sealed: d.sealed });
      for (let k = 0; k < N; k += 1) acc[k] = (acc[k] as number) + (opened[k] as number);
      opened.fill(0);
    };
    for (const d of devices) run(d); // warm-up, and each certificate verified once
    sides.push({ name, tree, run, us: [] as number[] });
  }
  const cpuUs = (): number => {
    const u = process.cpuUsage();
    return u.user + u.system;
  };
  const block = 8;
  for (let b = 0; b < blocks; b += 1) {
    for (const side of b % 2 === 0 ? sides : [...sides].reverse()) {
      const offset = (b * block) % devices.length;
      const started = cpuUs();
      for (let j = 0; j < block; j += 1) side.run(devices[offset + j]!);
      side.us.push((cpuUs() - started) / block);
    }
  }
  const [current, other] = sides as [(typeof sides)[number], (typeof sides)[number]];
  process.stdout.write(
    `${JSON.stringify({
      deviceAb: { blocks, devicesPerBlock: block },
      usCpuPerDevice: { current: round1(median(current.us)), other: round1(median(other.us)) },
      currentOverOther: Math.round((median(current.us) / median(other.us)) * 1000) / 1000,
      other: other.tree,
      loadAvg: loadavg().map((x) => Math.round(x * 10) / 10),
    })}\n`,
  );
}

const root = await mkdtemp(join(tmpdir(), 'veil-bench-custodian-'));
try {
  const n = 7;
  const authority = generateEd25519KeyPair();
  const requestKey = generateEd25519KeyPair();
  const dirs: string[] = [];
  const infos = [];
  for (let i = 1; i <= n; i += 1) {
    const dir = join(root, `c${i}`);
    infos.push(await initCustodianDir(dir));
    dirs.push(dir);
  }
  await writeFile(join(root, 'authority.json'), JSON.stringify({ publicKey: toBase64(authority.publicKey) }));
  await writeFile(join(root, 'request.json'), JSON.stringify({ publicKey: toBase64(requestKey.publicKey) }));
  const descriptor: TaskDescriptor = {
    version: 1,
    taskId: 'bench',
    params: 'rlwe-n2048-q44-v1',
    committee: infos.map((c, i) => ({ index: i + 1, address: `127.0.0.1:${1 + i}`, sealingKey: c.sealingKey, signingKey: c.signingKey })),
    threshold: 4,
    corruptTolerated: 0,
    minDevices: 3,
    maxDevices: Math.max(deviceCount, 3),
    shareModulus: P,
    maxRounds: 1000,
    encoding: { deltaBits: 12, clipMaxAbs: 1, step: 2 ** -13, weightCap: 128 },
    dp: null,
    authorityKey: toBase64(authority.publicKey),
    createdAt: new Date().toISOString(),
  };
  const descriptorBytes = encodeDescriptor(descriptor);
  const descriptorHash = sha256(descriptorBytes);
  const descriptorSignature = fromBase64(signDescriptor(descriptor, authority.privateKey).signature, 's', 64);
  const sealingKey1 = fromBase64(infos[0]!.sealingKey, 'k', 32);

  // --same-devices: one set of device keys (and certificates) for every round, as a task's devices
  // upload round after round: the custodian verifies each certificate once (its cache), then only
  // the manifests. Default: new devices every round (a certificate verified per device).
  const fleet = sameDevices ? Array.from({ length: deviceCount }, () => generateEd25519KeyPair()) : null;
  const certificates = new Map<string, ReturnType<typeof issueDeviceCertificate>>();
  const makeRound = (round: number) => {
    const devices = [];
    for (let j = 0; j < deviceCount; j += 1) {
      const key = fleet?.[j] ?? generateEd25519KeyPair();
      const deviceId = fleet === null ? `d-${round}-${j}` : `d-${j}`;
      const share = new Uint16Array(N);
      for (let k = 0; k < N; k += 1) share[k] = randomInt(P);
      const sealed = sealShare(sealingKey1, { descriptorHash, round, deviceId, custodianIndex: 1 }, share);
      const manifest = {
        descriptorHash: toHex(descriptorHash),
        round,
        deviceId,
        c0Sha256: sha256Hex(randomBytes(32)),
        shareSha256: [sha256Hex(sealed), ...Array.from({ length: n - 1 }, () => sha256Hex(randomBytes(32)))],
        devicePublicKey: toBase64(key.publicKey),
        certificate:
          certificates.get(deviceId) ??
          (() => {
            const certificate = issueDeviceCertificate(authority.privateKey, { taskId: 'bench', deviceId, devicePublicKey: key.publicKey, notAfterMs: Date.now() + 3_600_000 });
            if (fleet !== null) certificates.set(deviceId, certificate);
            return certificate;
          })(),
      };
      devices.push({ manifest: encodeManifest(manifest), manifestSignature: fromBase64(signManifest(manifest, key.privateKey).signature, 's', 64), sealed });
    }
    return devices;
  };

  if (values['device-ab'] !== undefined) {
    await deviceAb(values['device-ab'], Number(values.blocks ?? 400), { descriptorBytes, descriptorSignature, descriptorHash, authority, sealingPublicKey: sealingKey1, custodianDir: dirs[0]!, n });
    await rm(root, { recursive: true, force: true });
    process.exit(0);
  }

  // In-process: the service alone (no gRPC), CPU of this process.
  const inProcessCpuMs: number[] = [];
  {
    // Custodian 1's keys, with a state file of its own (rounds 501.. do not collide with the process run).
    const keys1 = await readCustodianKeys(dirs[0]!);
    const state = await openCustodianState(join(root, 'inprocess-answers.jsonl'));
    const service = createCustodianService({
      keys: keys1,
      state,
      coordinatorKeys: [requestKey.publicKey],
      authorityKeys: [authority.publicKey],
      floors: { minDevices: 3 },
      logger: pino({ level: 'silent' }),
    });
    const { requestSigningBytes } = await import('@veil/custodian');
    const { hashD } = await import('@veil/crypto');
    for (let r = 1; r <= repeats; r += 1) {
      log(`in-process round ${r}: preparing ${deviceCount} devices`);
      const devices = makeRound(500 + r);
      const hd = hashD(devices.map((d) => sha256(d.manifest)));
      const issuedAtMs = Date.now();
      const header = {
        descriptor: descriptorBytes,
        descriptorSignature,
        round: 500 + r,
        hashD: hd,
        deviceCount,
        custodianIndex: 1,
        issuedAtMs,
        coordinatorSignature: ed25519Sign(
          requestKey.privateKey,
          requestSigningBytes({ descriptorHash, round: 500 + r, hashD: hd, deviceCount, custodianIndex: 1, issuedAtMs }),
        ),
      };
      async function* batches() {
        for (let s = 0; s < devices.length; s += 256) {
          yield devices.slice(s, s + 256).map((d) => ({ manifest: d.manifest, manifestSignature: d.manifestSignature, sealedShare: d.sealed }));
        }
      }
      const before = process.cpuUsage();
      await service.shareSum(header, batches());
      const used = process.cpuUsage(before);
      inProcessCpuMs.push((used.user + used.system) / 1000);
    }
    await state.close();
  }

  // A real custodian process over gRPC; with --base-veil, a second one from another build (custodian
  // 1's keys copied into a directory of its own, its own state), asked alternately with the same rounds' shape.
  const variants: { name: string; veil: string; dir: string }[] = [{ name: 'current', veil: fileURLToPath(new URL('../packages/cli/bin/veil.js', import.meta.url)), dir: dirs[0]! }];
  if (values['base-veil'] !== undefined) {
    const dir = join(root, 'c1-base');
    await cp(dirs[0]!, dir, { recursive: true });
    await rm(join(dir, 'answers.jsonl'), { force: true });
    variants.push({ name: 'base', veil: values['base-veil'], dir });
  }
  const running: (typeof variants[number] & {
    child: ChildProcess;
    client: ReturnType<typeof createCommitteeClient>;
    processCpuMsPerRound: number[];
    wallMs: number[];
    stagedWallMs: number[];
    stagedProcessCpuMsPerRound: number[];
  })[] = [];
  for (const variant of variants) {
    const child = spawn(
      process.execPath,
      [variant.veil, 'custodian', 'serve', '--dir', variant.dir, '--listen', '127.0.0.1:0', '--coordinator-key', join(root, 'request.json'), '--authority-key', join(root, 'authority.json'), '--min-devices', '3', '--log-level', 'warn'],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const address = await new Promise<string>((resolve, reject) => {
      createInterface({ input: child.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { listening: string }).listening));
      child.once('exit', (code) => reject(new Error(`custodian exited ${code}`)));
    });
    const client = createCommitteeClient({
      descriptor: descriptorBytes,
      descriptorSignature,
      signRequest: (m) => ed25519Sign(requestKey.privateKey, m),
      // Only custodian 1 runs; the others fail fast (connection refused) and are reported as failures.
      addresses: Object.fromEntries(Array.from({ length: n }, (_, i) => [i + 1, i === 0 ? address : '127.0.0.1:1'])),
      deadlineMs: 120_000,
      logger: pino({ level: 'silent' }),
    });
    running.push({ ...variant, child, client, processCpuMsPerRound: [] as number[], wallMs: [] as number[], stagedWallMs: [] as number[], stagedProcessCpuMsPerRound: [] as number[] });
  }
  for (let r = 1; r <= repeats; r += 1) {
    for (const variant of r % 2 === 1 ? running : [...running].reverse()) {
      const { child, client } = variant;
      log(`${variant.name} process round ${r}: preparing ${deviceCount} devices`);
      const devices = makeRound(r);
      const cpuBefore = await processCpuMsPrecise(child.pid!);
      const started = performance.now();
      const result = await client.collect({
        round: r,
        devices: devices.map((d) => ({ manifest: d.manifest, manifestSignature: d.manifestSignature })),
        sealedShare: (j, i) => (i === 1 ? devices[j]!.sealed : new Uint8Array(0)),
      });
      variant.wallMs.push(performance.now() - started);
      variant.processCpuMsPerRound.push((await processCpuMsPrecise(child.pid!)) - cpuBefore);
      if (!result.answers.some((a) => a.custodianIndex === 1)) throw new Error(`custodian 1 did not answer: ${JSON.stringify(result.failures)}`);

      // The same round size staged: the devices are streamed first (as a round accepts them), the
      // clock runs from the final header to the answer (what a round's end waits for).
      const stagedRound = repeats + r;
      const stagedDevices = makeRound(stagedRound);
      const stagedCpuBefore = await processCpuMsPrecise(child.pid!);
      const staging = client.stage(stagedRound);
      for (let j = 0; j < stagedDevices.length; j += 1) {
        // A new group: the previous one was written at the end of its turn (one DeviceBatch).
        if (j > 0 && j % stagedBatch === 0) await new Promise((resolve) => setTimeout(resolve, 1));
        const d = stagedDevices[j]!;
        staging.add({ manifest: d.manifest, manifestSignature: d.manifestSignature }, (i) => (i === 1 ? d.sealed : new Uint8Array(0)));
      }
      // Let the custodian work through the staged devices (its CPU stops moving).
      for (let last = -1, now = await processCpuMs(child.pid!); now !== last; last = now, now = await processCpuMs(child.pid!)) {
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      const stagedStarted = performance.now();
      const staged = await client.collect({
        round: stagedRound,
        devices: stagedDevices.map((d) => ({ manifest: d.manifest, manifestSignature: d.manifestSignature })),
        sealedShare: (j, i) => (i === 1 ? stagedDevices[j]!.sealed : new Uint8Array(0)),
        staged: staging,
      });
      variant.stagedWallMs.push(performance.now() - stagedStarted);
      variant.stagedProcessCpuMsPerRound.push((await processCpuMsPrecise(child.pid!)) - stagedCpuBefore);
      if (!staged.answers.some((a) => a.custodianIndex === 1) || !staged.staged.includes(1)) throw new Error(`custodian 1 did not answer its staged request: ${JSON.stringify(staged.failures)}`);
    }
  }
  for (const { child, client } of running) {
    await client.close();
    child.kill('SIGTERM');
    await new Promise((resolve) => child.once('exit', resolve));
  }
  const figures = (v: (typeof running)[number]) => ({
    custodianProcessCpuMsPerRound: { median: round1(median(v.processCpuMsPerRound)), all: v.processCpuMsPerRound.map(round1) },
    requestWallMs: { median: Math.round(median(v.wallMs)), all: v.wallMs.map(Math.round) },
    stagedFinalHeaderToAnswerWallMs: { median: Math.round(median(v.stagedWallMs) * 10) / 10, all: v.stagedWallMs.map(Math.round) },
    // The custodian process's CPU over a staged round of the same size: from the stage request to the answer.
    stagedCustodianProcessCpuMsPerRound: { median: round1(median(v.stagedProcessCpuMsPerRound)), all: v.stagedProcessCpuMsPerRound.map(round1) },
  });
  const [current, base] = running;

  process.stdout.write(
    `${JSON.stringify({
      devices: deviceCount,
      repeats,
      stagedBatch: Number.isFinite(stagedBatch) ? stagedBatch : deviceCount,
      sameDevices,
      ...figures(current!),
      ...(base !== undefined && { base: { veil: base.veil, ...figures(base) } }),
      loadAvg: loadavg().map((x) => Math.round(x * 10) / 10),
      inProcessServiceCpuMs: { median: Math.round(median(inProcessCpuMs)), all: inProcessCpuMs.map(Math.round) },
      targetCpuMs: 2000,
    })}\n`,
  );
} finally {
  await rm(root, { recursive: true, force: true });
}
