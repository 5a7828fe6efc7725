/**
 * Ed25519 verification of device manifests (RFC 8032; @veil/crypto ed25519Verify) as the
 * coordinator's intake and each custodian run it every round for every device, this build against
 * another build of @veil/crypto (--base: its dist/index.js), alternated batch by batch in one
 * process; CPU time of this process (process.cpuUsage), so that the machine's load stretches
 * neither side's figure. The same devices' keys every batch, as every round.
 *
 *   npx tsx bench/committee-verify.ts --base /other/tree/packages/crypto/dist/index.js [--devices 1000] [--batches 20]
 *
 * Prints one JSON object on stdout.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import * as head from '@veil/crypto';

const { values: args } = parseArgs({ options: { base: { type: 'string' }, devices: { type: 'string' }, batches: { type: 'string' } } });
if (args.base === undefined) throw new Error('--base /path/to/packages/crypto/dist/index.js is required');
const base = (await import(args.base)) as typeof head;
const devices = Number(args.devices ?? 1000);
const batches = Number(args.batches ?? 20);
const message = new Uint8Array(600).fill(7);
const signed = Array.from({ length: devices }, () => {
  const key = head.generateEd25519KeyPair();
  return { publicKey: key.publicKey, signature: head.ed25519Sign(key.privateKey, message) };
});
/** CPU µs per verification over one batch. */
const run = (verify: typeof head.ed25519Verify): number => {
  const started = process.cpuUsage();
  for (const d of signed) if (!verify(d.publicKey, message, d.signature)) throw new Error('a valid signature did not verify');
  const used = process.cpuUsage(started);
  return (used.user + used.system) / devices;
};
run(base.ed25519Verify);
run(head.ed25519Verify);
const b: number[] = [];
const h: number[] = [];
for (let i = 0; i < batches; i++) {
  if (i % 2 === 0) {
    b.push(run(base.ed25519Verify));
    h.push(run(head.ed25519Verify));
  } else {
    h.push(run(head.ed25519Verify));
    b.push(run(base.ed25519Verify));
  }
}
const median = (xs: number[]): number => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
process.stdout.write(
  `${JSON.stringify({
    devices,
    batches,
    loadAvg: loadavg().map((x) => Math.round(x * 10) / 10),
    cpuUsPerVerification: { base: Math.round(median(b) * 10) / 10, head: Math.round(median(h) * 10) / 10 },
    all: { base: b.map(Math.round), head: h.map(Math.round) },
  })}\n`,
);
