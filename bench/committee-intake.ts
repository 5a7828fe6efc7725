/**
 * The coordinator's CPU per committee upload at intake (issue 11), three ways interleaved rep by
 * rep under the same load, with the server's own check (`checkCommitteeUpload`) and @veil/crypto's
 * c0 sum:
 *   - `twoPasses`: the check with its c0 range pass, then the sum's add (a second pass over the c0
 *     bytes): intake before 38b3007 (the add ran under the task lock);
 *   - `fold`: the check adding the c0 to the sum as its range check (`foldEarly`, one pass);
 *   - `foldC0Bits<b>`: the same for a descriptor whose c0 is compressed to b bits (encoding.c0Bits).
 * Devices' uploads are built once per width with @veil/crypto as the SDK does (their build time is
 * reported too: it is on a real round's critical path, on each device).
 *
 *   npx tsx bench/committee-intake.ts [--devices 10] [--values 100000] [--reps 30] [--c0-bits 24]
 *
 * Prints one JSON object on stdout; progress goes to stderr.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import {
  buildCommitteeUpload,
  buildTaskDescriptor,
  createC0Accumulator,
  descriptorHash,
  deriveRoundSeed,
  encodeCommitteeUploadPayload,
  generateCustodianKeys,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  validateDescriptor,
  type C0Bits,
} from '@veil/crypto';
import { checkCommitteeUpload, type CommitteeTask } from '../packages/server/src/aggregation/committee-aggregator.js';

const { values: args } = parseArgs({ options: { devices: { type: 'string' }, values: { type: 'string' }, reps: { type: 'string' }, 'c0-bits': { type: 'string' } } });
const deviceCount = Number(args.devices ?? 10);
const valueCount = Number(args.values ?? 100_000);
const reps = Number(args.reps ?? 30);
const compressedBits = Number(args['c0-bits'] ?? 24) as C0Bits;
const log = (msg: string): void => void process.stderr.write(`[bench:committee-intake] ${msg}\n`);
const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

const authority = generateEd25519KeyPair();
const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
const now = Date.now();

/** A 2-of-3 task of `c0Bits` and its devices' uploads for round 1. */
function setUp(c0Bits: C0Bits) {
  const descriptor = buildTaskDescriptor({
    taskId: `bench-intake-${c0Bits}`,
    committee: custodians.map((k, i) => ({ address: `127.0.0.1:${7000 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
    threshold: 2,
    minDevices: Math.min(3, deviceCount),
    maxDevices: Math.max(10, deviceCount),
    maxRounds: 10,
    encoding: { weightCap: 1, c0Bits },
    authorityPublicKey: authority.publicKey,
  });
  validateDescriptor(descriptor, { minDevices: 1 });
  const dh = descriptorHash(descriptor);
  const task: CommitteeTask = { descriptor, descriptorHash: dh, collect: () => Promise.reject(new Error('not asked')), clock: () => now };
  const buildMs: number[] = [];
  const uploads = Array.from({ length: deviceCount }, (_, d) => {
    const clientId = `device-${d}`;
    const key = generateEd25519KeyPair();
    const certificate = issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId: clientId, devicePublicKey: key.publicKey, notAfterMs: now + 3_600_000 });
    const values = Float32Array.from({ length: valueCount }, (_, i) => Math.sin(i * 0.01 + d) * 0.05);
    const t0 = performance.now();
    const upload = buildCommitteeUpload({ descriptor, descriptorHash: dh, round: 1, roundSeed: deriveRoundSeed(dh, 1), deviceId: clientId, devicePrivateKey: key.privateKey, devicePublicKey: key.publicKey, certificate, values, weight: 1 });
    const payload = encodeCommitteeUploadPayload(upload);
    buildMs.push(performance.now() - t0);
    return { clientId, payload };
  });
  return { descriptor, task, uploads, buildMs };
}

const exact = setUp(44);
const compressed = setUp(compressedBits);
const variants = {
  twoPasses: () => {
    const sum = createC0Accumulator({ valueCount });
    return () => {
      for (const { clientId, payload } of exact.uploads) sum.add(checkCommitteeUpload(exact.task, 1, valueCount, clientId, payload).committee.c0);
    };
  },
  fold: () => {
    const sum = createC0Accumulator({ valueCount });
    return () => {
      for (const { clientId, payload } of exact.uploads) checkCommitteeUpload(exact.task, 1, valueCount, clientId, payload, sum);
    };
  },
  [`foldC0Bits${compressedBits}`]: () => {
    const sum = createC0Accumulator({ valueCount, c0Bits: compressedBits });
    return () => {
      for (const { clientId, payload } of compressed.uploads) checkCommitteeUpload(compressed.task, 1, valueCount, clientId, payload, sum);
    };
  },
};
const entries = Object.entries(variants);
const names = entries.map(([name]) => name);
const cpu: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const wall: Record<string, number[]> = Object.fromEntries(names.map((n) => [n, []]));
const loadAtStart = loadavg().map((x) => Math.round(x * 10) / 10);
log(`${deviceCount} uploads of ${valueCount} values per variant and rep, ${reps} reps (+3 warm-up), load ${loadAtStart.join(' ')}`);
for (let rep = -3; rep < reps; rep++) {
  // Rotate the order each rep so that no variant always runs first.
  for (let j = 0; j < names.length; j++) {
    const [name, setUpRun] = entries[(rep + 3 + j) % entries.length]!;
    const run = setUpRun();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    run();
    const t1 = performance.now();
    const c1 = process.cpuUsage(c0);
    if (rep < 0) continue;
    wall[name]!.push((t1 - t0) / deviceCount);
    cpu[name]!.push((c1.user + c1.system) / 1000 / deviceCount);
  }
}
const uploadBytes = (s: ReturnType<typeof setUp>) => s.uploads[0]!.payload.length;
process.stdout.write(
  `${JSON.stringify(
    {
      benchmark: 'bench/committee-intake.ts',
      devices: deviceCount,
      values: valueCount,
      reps,
      loadAvgAtStart: loadAtStart,
      loadAvgAtEnd: loadavg().map((x) => Math.round(x * 10) / 10),
      perUploadMedianMs: Object.fromEntries(names.map((n) => [n, { cpu: round3(median(cpu[n]!)), wall: round3(median(wall[n]!)) }])),
      uploadBytes: { exact: uploadBytes(exact), [`c0Bits${compressedBits}`]: uploadBytes(compressed) },
      deltaBits: { exact: exact.descriptor.encoding.deltaBits, [`c0Bits${compressedBits}`]: compressed.descriptor.encoding.deltaBits },
      deviceBuildMedianMs: { exact: round3(median(exact.buildMs)), [`c0Bits${compressedBits}`]: round3(median(compressed.buildMs)) },
    },
    null,
    2,
  )}\n`,
);
