/**
 * The committee round's end at the coordinator, staged against unstaged (issue 11): a 2-of-3
 * committee of `custodian serve` processes on loopback (startLocalCommittee), D devices'
 * uploads built with @veil/crypto as the SDK does, the server's committee aggregator. Per round
 * the uploads are added (as the round accepts them; the staged variant streams each to the
 * custodians there), then the clock runs over `finish`: the custodians' answers, reconstruction,
 * decryption and the FedAvg step, i.e. what the span "last accepted -> closed" holds besides the
 * store and blob writes. The two variants alternate round by round under the same load.
 *
 * With --record-ms N both variants are staged and the uploads arrive together (as a round's last
 * group commit records them): 'at-check' stages each upload when intake checks it (foldEarly), N ms
 * (the blob write and the record's commit) before the group commit adds them; 'at-commit' checks
 * them without folding, so each is staged only when added. The clock runs from the group commit
 * (`add`) over prepare, startFinish and finish.
 *
 *   npm run -s bench:committee-round-end -- [--devices 10] [--values 100000] [--rounds 10] [--record-ms 30]
 *
 * Prints one JSON object on stdout; progress goes to stderr.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { float32ToBytes } from '@veil/protocol/codec';
import { buildCommitteeUpload, deriveRoundSeed, encodeCommitteeUploadPayload, generateEd25519KeyPair, type TaskDescriptor } from '@veil/crypto';
import { createCommitteeClient, startLocalCommittee } from '@veil/custodian';
import { checkCommitteeUpload, createCommitteeAggregator, type CommitteeTask } from '../packages/server/src/aggregation/committee-aggregator.js';

const { values: args } = parseArgs({ options: { devices: { type: 'string' }, values: { type: 'string' }, rounds: { type: 'string' }, 'record-ms': { type: 'string' } } });
const deviceCount = Number(args.devices ?? 10);
const valueCount = Number(args.values ?? 100_000);
const rounds = Number(args.rounds ?? 10);
const recordMs = args['record-ms'] === undefined ? null : Number(args['record-ms']);
const log = (msg: string): void => void process.stderr.write(`[bench:committee-round-end] ${msg}\n`);
const median = (xs: readonly number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const root = await mkdtemp(join(tmpdir(), 'veil-bench-round-end-'));
const committee = await startLocalCommittee({ dir: join(root, 'committee'), taskId: 'bench-round-end', custodians: 3, threshold: 2, minDevices: Math.min(3, deviceCount), maxRounds: 2 * rounds + 2, logLevel: 'warn' });
try {
  const descriptor = committee.signed.descriptor as TaskDescriptor;
  const client = createCommitteeClient({
    descriptor: committee.descriptorBytes,
    descriptorSignature: committee.descriptorSignature,
    signRequest: committee.signRequest,
    logger: pino({ level: 'silent' }),
  });
  const devices = Array.from({ length: deviceCount }, (_, j) => {
    const key = generateEd25519KeyPair();
    const deviceId = `device-${j}`;
    return { deviceId, key, certificate: committee.certify(deviceId, key.publicKey) };
  });
  const model = { bytes: float32ToBytes(new Float32Array(valueCount)), encoding: 'float32-le' as const };
  type Variant = 'staged' | 'unstaged' | 'at-check' | 'at-commit';
  const [first, second]: [Variant, Variant] = recordMs === null ? ['staged', 'unstaged'] : ['at-check', 'at-commit'];
  const result: Partial<Record<Variant, number[]>> = { [first]: [], [second]: [] };
  const collectMs: Partial<Record<Variant, number[]>> = { [first]: [], [second]: [] };
  for (let r = 1; r <= 2 * rounds; r += 1) {
    const variant = r % 2 === 0 ? first : second;
    const uploads = devices.map((d) =>
      encodeCommitteeUploadPayload(
        buildCommitteeUpload({
          descriptor,
          descriptorHash: committee.descriptorHash,
          round: r,
          roundSeed: deriveRoundSeed(committee.descriptorHash, r),
          deviceId: d.deviceId,
          devicePrivateKey: d.key.privateKey,
          devicePublicKey: d.key.publicKey,
          certificate: d.certificate,
          values: Float32Array.from({ length: valueCount }, (_, i) => Math.sin(i + r) * 0.01),
          weight: 1,
        }),
      ),
    );
    const task: CommitteeTask = {
      descriptor,
      descriptorHash: committee.descriptorHash,
      collect: async (request) => {
        const asked = performance.now();
        const answers = await client.collect(request);
        collectMs[variant]!.push(performance.now() - asked);
        return answers;
      },
      ...(variant !== 'unstaged' && { stage: (round: number) => client.stage(round) }),
    };
    const aggregator = createCommitteeAggregator(task, r, valueCount);
    if (recordMs !== null) {
      const checked = uploads.map((payload, j) =>
        variant === 'at-check' ? aggregator.foldEarly!(devices[j]!.deviceId, payload) : checkCommitteeUpload(task, r, valueCount, devices[j]!.deviceId, payload),
      );
      await new Promise((resolve) => setTimeout(resolve, recordMs));
      const started = performance.now();
      for (const [j, update] of checked.entries()) aggregator.add(devices[j]!.deviceId, 1, update);
      aggregator.prepare!();
      aggregator.startFinish!();
      const out = await aggregator.finish(model, [], null);
      result[variant]!.push(performance.now() - started);
      if (out === null) throw new Error(`round ${r}: no result`);
      aggregator.dispose();
      log(`round ${r} (${variant}): finish ${result[variant]!.at(-1)!.toFixed(1)} ms, collect ${collectMs[variant]!.at(-1)!.toFixed(1)} ms`);
      continue;
    }
    for (const [j, payload] of uploads.entries()) aggregator.add(devices[j]!.deviceId, 1, checkCommitteeUpload(task, r, valueCount, devices[j]!.deviceId, payload));
    // Devices train and upload over ~100 ms in a round: time for the custodians to open staged shares.
    await new Promise((resolve) => setTimeout(resolve, 150));
    const started = performance.now();
    const out = await aggregator.finish(model, [], null);
    result[variant]!.push(performance.now() - started);
    if (out === null) throw new Error(`round ${r}: no result`);
    aggregator.dispose();
    log(`round ${r} (${variant}): finish ${result[variant]!.at(-1)!.toFixed(1)} ms, collect ${collectMs[variant]!.at(-1)!.toFixed(1)} ms`);
  }
  await client.close();
  process.stdout.write(
    `${JSON.stringify({
      devices: deviceCount,
      values: valueCount,
      committee: '2-of-3',
      roundsPerVariant: rounds,
      loadAvgAtEnd: loadavg().map((x) => Math.round(x * 10) / 10),
      ...(recordMs !== null && { recordMs }),
      finishMsMedian: Object.fromEntries(Object.entries(result).map(([k, xs]) => [k, Math.round(median(xs) * 10) / 10])),
      collectMsMedian: Object.fromEntries(Object.entries(collectMs).map(([k, xs]) => [k, Math.round(median(xs) * 10) / 10])),
      finishMs: Object.fromEntries(Object.entries(result).map(([k, xs]) => [k, xs.map((x) => Math.round(x))])),
      collectMs: Object.fromEntries(Object.entries(collectMs).map(([k, xs]) => [k, xs.map((x) => Math.round(x))])),
    })}\n`,
  );
} finally {
  await committee.close();
  await rm(root, { recursive: true, force: true });
}
