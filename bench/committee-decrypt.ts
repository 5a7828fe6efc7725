/**
 * The coordinator's reconstruction and decryption at a committee round's end (issue 11), A/B in
 * one process: D real uploads (@veil/crypto buildCommitteeUpload, a 2-of-3 committee) are summed,
 * the share sums of custodians 1 and 2 opened, and then `reconstructCentred` + `decryptSum` (with
 * the round's public polynomials derived beforehand, as the coordinator derives them while the
 * round collects) run alternately from this tree and, with --base, from another tree's sources
 * (e.g. a worktree of main from before a change). Both must decrypt the same average.
 *
 * With --pool, a third variant 'pool' decrypts through this tree's worker pool (createDecryptPool:
 * the polynomials spread over worker threads; its process CPU includes the workers').
 *
 *   npx tsx bench/committee-decrypt.ts [--devices 10] [--values 100000] [--runs 40] [--base /work/ab-base] [--pool] [--threads 1]
 *
 * Prints ONE JSON object on stdout: per variant the median wall and process-CPU ms.
 */
import { randomBytes } from 'node:crypto';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as current from '../packages/crypto/src/index.js';
import { createDecryptPool } from '../packages/crypto/src/committee/decrypt-pool.js';

const { values: args } = parseArgs({
  options: { devices: { type: 'string' }, values: { type: 'string' }, runs: { type: 'string' }, base: { type: 'string' }, pool: { type: 'boolean' }, threads: { type: 'string' } },
});
const devices = Number(args.devices ?? 10);
const valueCount = Number(args.values ?? 100_000);
const runs = Number(args.runs ?? 40);
type Crypto = typeof current;
type Decrypt = (lib: Crypto, options: Parameters<Crypto['decryptSum']>[0]) => Promise<ReturnType<Crypto['decryptSum']>>;
const inThread: Decrypt = async (lib, options) => lib.decryptSum(options);
const variants: [string, Crypto, Decrypt][] = [['current', current, inThread]];
if (args.base !== undefined) variants.push(['base', (await import(join(args.base, 'packages/crypto/src/index.ts'))) as Crypto, inThread]);
const pool = args.pool === true ? createDecryptPool(args.threads === undefined ? {} : { threads: Number(args.threads) }) : null;
if (pool !== null) variants.push(['pool', current, async (_lib, options) => pool.decryptSum(options)]);

const authority = current.generateEd25519KeyPair();
const custodians = Array.from({ length: 3 }, () => current.generateCustodianKeys());
const descriptor = current.buildTaskDescriptor({
  taskId: 'bench-committee-decrypt',
  committee: custodians.map((k, i) => ({ address: `127.0.0.1:${9000 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
  threshold: 2,
  minDevices: Math.min(devices, 3),
  maxDevices: 1000,
  maxRounds: 10,
  authorityPublicKey: authority.publicKey,
});
const descriptorHash = current.descriptorHash(descriptor);
const round = 1;
const roundSeed = randomBytes(32);
const accumulator = current.createC0Accumulator({ valueCount });
const shareSums = [new Uint16Array(2048), new Uint16Array(2048)];
for (let d = 0; d < devices; d++) {
  const key = current.generateEd25519KeyPair();
  const deviceId = `device-${d}`;
  const certificate = current.issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId, devicePublicKey: key.publicKey, notAfterMs: Date.now() + 3_600_000 });
  const values = Float32Array.from({ length: valueCount }, (_, i) => Math.sin(i + d) * 0.01);
  const upload = current.buildCommitteeUpload({ descriptor, descriptorHash, round, roundSeed, deviceId, devicePrivateKey: key.privateKey, devicePublicKey: key.publicKey, certificate, values, weight: 1 });
  accumulator.add(upload.c0);
  for (const index of [1, 2]) {
    const keys = custodians[index - 1]!;
    current.addShareInto(shareSums[index - 1]!, current.openShare(keys.sealing.privateKey, { descriptorHash, round, deviceId, custodianIndex: index }, upload.sealedShares[index - 1]!, { recipientPublicKey: keys.sealing.publicKey }));
  }
}
const c0Sum = accumulator.sum();
const polys = current.polynomialCount(valueCount);
const publicPolynomials = Array.from({ length: polys }, (_, l) => current.derivePublicPolynomialNtt(descriptorHash, round, roundSeed, l));

const wall: Record<string, number[]> = {};
const cpu: Record<string, number[]> = {};
const means: Record<string, Float32Array> = {};
for (let r = 0; r < runs + 2; r++) {
  for (const [name, lib, decrypt] of r % 2 === 0 ? variants : [...variants].reverse()) {
    const started = performance.now();
    const cpuStart = process.cpuUsage();
    const secretSum = lib.reconstructCentred([1, 2].map((index) => ({ index, share: shareSums[index - 1]! })), 2);
    const out = await decrypt(lib, { descriptorHash, round, roundSeed, publicPolynomials, encoding: descriptor.encoding, valueCount, c0Sum, secretSum, count: devices });
    secretSum.fill(0);
    const used = process.cpuUsage(cpuStart);
    if (r < 2) continue; // warm-up
    (wall[name] ??= []).push(performance.now() - started);
    (cpu[name] ??= []).push((used.user + used.system) / 1000);
    means[name] = out.mean;
  }
}
const poolThreads = pool?.threads ?? null;
await pool?.close();
const reference = means['current']!;
for (const [name, mean] of Object.entries(means)) {
  if (mean.length !== reference.length || mean.some((v, i) => v !== reference[i])) throw new Error(`${name} decrypted another average than current`);
}
const median = (xs: readonly number[]): number => Math.round([...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]! * 100) / 100;
process.stdout.write(
  `${JSON.stringify({
    devices,
    values: valueCount,
    runs,
    base: args.base ?? null,
    poolThreads,
    reconstructDecryptMsMedian: Object.fromEntries(Object.entries(wall).map(([k, v]) => [k, median(v)])),
    reconstructDecryptCpuMsMedian: Object.fromEntries(Object.entries(cpu).map(([k, v]) => [k, median(v)])),
    sameAverage: true,
    loadAvg: loadavg().map((x) => Math.round(x * 10) / 10),
  })}\n`,
);
