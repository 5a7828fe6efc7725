/**
 * A custodian's cost to open one sealed share (RFC 9180 HPKE base mode, @veil/crypto openShare),
 * with its X25519 private key given raw (parsed into OpenSSL's form on every call) against parsed
 * once (prepareX25519PrivateKey, what the custodian service does), both in this process,
 * alternated batch by batch; CPU time of this process (process.cpuUsage), so that the machine's
 * load stretches neither side's figure.
 *
 *   npx tsx bench/committee-open-share.ts [--shares 200] [--batches 20]
 *
 * Prints one JSON object on stdout.
 */
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { generateX25519KeyPair, openShare, prepareX25519PrivateKey, sealShare } from '@veil/crypto';

const { values: args } = parseArgs({ options: { shares: { type: 'string' }, batches: { type: 'string' } } });
const shares = Number(args.shares ?? 200);
const batches = Number(args.batches ?? 20);
const recipient = generateX25519KeyPair();
const prepared = prepareX25519PrivateKey(recipient.privateKey);
const binding = (j: number) => ({ descriptorHash: new Uint8Array(32).fill(1), round: 1, deviceId: `device-${j}`, custodianIndex: 1 });
const sealed = Array.from({ length: shares }, (_, j) => sealShare(recipient.publicKey, binding(j), Uint16Array.from({ length: 2048 }, (_, k) => (k * 7 + j) % 65521)));
/** CPU µs per share over one batch. */
const run = (key: Uint8Array | typeof prepared): number => {
  const started = process.cpuUsage();
  for (let j = 0; j < shares; j++) openShare(key, binding(j), sealed[j]!, { recipientPublicKey: recipient.publicKey }).fill(0);
  const used = process.cpuUsage(started);
  return (used.user + used.system) / shares;
};
run(recipient.privateKey);
run(prepared);
const raw: number[] = [];
const once: number[] = [];
for (let b = 0; b < batches; b++) {
  if (b % 2 === 0) {
    raw.push(run(recipient.privateKey));
    once.push(run(prepared));
  } else {
    once.push(run(prepared));
    raw.push(run(recipient.privateKey));
  }
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
process.stdout.write(
  `${JSON.stringify({
    shares,
    batches,
    loadAvg: loadavg().map((x) => Math.round(x * 10) / 10),
    cpuUsPerShare: { rawKey: Math.round(median(raw) * 10) / 10, preparedKey: Math.round(median(once) * 10) / 10 },
    all: { rawKey: raw.map(Math.round), preparedKey: once.map(Math.round) },
  })}\n`,
);
