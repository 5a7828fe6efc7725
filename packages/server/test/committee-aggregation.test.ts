/**
 * The coordinator's committee aggregation against real custodians: gRPC custodian servers on
 * 127.0.0.1:0 with their own durable state (@veil/custodian), the real committee client, uploads
 * built by the SDK's committee middleware, and the server's committee aggregator. Checks the
 * decrypted FedAvg, a crash before the model is written (same D asked again: same answers, same
 * model), inconsistent shares, and too few custodians.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { float32ToBytes, bytesToFloat32 } from '@veil/protocol/codec';
import {
  buildCommitteeUpload,
  custodianFingerprint,
  deriveRoundSeed,
  descriptorHash as hashDescriptor,
  ed25519Sign,
  encodeCommitteeUploadPayload,
  encodeDescriptor,
  buildTaskDescriptor,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  signManifest,
  sha256Hex,
  type RawKeyPair,
  type TaskDescriptor,
} from '@veil/crypto';
import {
  createCommitteeClient,
  createCustodianService,
  initCustodianDir,
  openCustodianState,
  readCustodianKeys,
  startCustodianServer,
  type CommitteeClient,
  type CustodianServer,
} from '@veil/custodian';
import { createCommitteeEncryption } from '@veil/client-sdk';
import { createDecryptPool } from '@veil/crypto/decrypt-pool';
import { checkCommitteeUpload, createCommitteeAggregator, dropRoundBuffers, pooledRoundBuffers, type CommitteeTask } from '../src/aggregation/committee-aggregator.js';
import { releaseChecked } from '../src/aggregation/round-aggregator.js';

const logger = pino({ level: 'silent' });
const VALUES = 3000;
const N_CUSTODIANS = 5;
const THRESHOLD = 3;

interface Running {
  server: CustodianServer;
  close(): Promise<void>;
}

let root: string;
let authority: RawKeyPair;
let requestKey: RawKeyPair;
let descriptor: TaskDescriptor;
let descriptorBytes: Uint8Array;
let descriptorSignature: Uint8Array;
let running: Running[] = [];
let fingerprints: string[] = [];

async function startCustodian(i: number): Promise<Running> {
  const dir = join(root, `custodian-${i}`);
  const keys = await readCustodianKeys(dir);
  const state = await openCustodianState(join(dir, 'answers.jsonl'));
  const service = createCustodianService({ keys, state, coordinatorKeys: [requestKey.publicKey], authorityKeys: [authority.publicKey], floors: { minDevices: 4 }, logger });
  const server = await startCustodianServer({ service, logger });
  return { server, close: async () => { await server.close(); await state.close(); } };
}

function client(addresses: Record<number, string>): CommitteeClient {
  return createCommitteeClient({ descriptor: descriptorBytes, descriptorSignature, signRequest: (m) => ed25519Sign(requestKey.privateKey, m), addresses, deadlineMs: 20_000, logger });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'veil-committee-agg-'));
  authority = generateEd25519KeyPair();
  requestKey = generateEd25519KeyPair();
  const publics = [];
  for (let i = 1; i <= N_CUSTODIANS; i++) publics.push(await initCustodianDir(join(root, `custodian-${i}`)));
  fingerprints = publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64')));
  descriptor = buildTaskDescriptor({
    taskId: 'task-committee-agg',
    committee: publics.map((p, i) => ({ address: `127.0.0.1:${1 + i}`, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
    threshold: THRESHOLD,
    minDevices: 4,
    maxDevices: 100,
    maxRounds: 10,
    encoding: { weightCap: 16 },
    authorityPublicKey: authority.publicKey,
  });
  descriptorBytes = encodeDescriptor(descriptor);
  descriptorSignature = Buffer.from(signDescriptor(descriptor, authority.privateKey).signature, 'base64');
  running = [];
  for (let i = 1; i <= N_CUSTODIANS; i++) running.push(await startCustodian(i));
}, 120_000);

afterAll(async () => {
  for (const r of running) await r.close();
  await rm(root, { recursive: true, force: true });
});

/** Devices of one round: SDK middleware uploads, and the plaintext FedAvg they should give. */
async function devicesForRound(round: number, count: number) {
  const payloads: { clientId: string; payload: Uint8Array }[] = [];
  const sum = new Float64Array(VALUES);
  let weightSum = 0;
  for (let d = 0; d < count; d++) {
    const clientId = `r${round}-client-${d}`;
    const deviceKey = generateEd25519KeyPair();
    const certificate = issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId: clientId, devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 });
    const enc = createCommitteeEncryption({
      committee: { descriptor: descriptorBytes, descriptorSignature },
      pins: { minDevices: 4, pinnedFingerprints: fingerprints, authorityKey: Buffer.from(authority.publicKey).toString('base64') },
      deviceId: clientId,
      deviceKey,
      certificate,
    });
    const delta = Float32Array.from({ length: VALUES }, (_, i) => Math.sin(i * 0.01 + d) * 0.3);
    const exampleCount = 3 + d;
    const out = await enc.middleware({ delta, exampleCount, encoding: 'float32-le', notes: {} }, { taskId: descriptor.taskId, clientId, roundNumber: round, modelVersion: round - 1, maxExampleCount: 1000, config: {}, signal: undefined }, async (u) => u);
    for (let i = 0; i < VALUES; i++) sum[i]! += out.exampleCount * delta[i]!;
    weightSum += out.exampleCount;
    payloads.push({ clientId, payload: out.payload! });
  }
  return { payloads, mean: Float64Array.from(sum, (v) => v / weightSum) };
}

/** Custodians asked through their staged request in each task's last collect. */
const stagedIn = new WeakMap<CommitteeTask, readonly number[]>();

/** A committee task as the coordinator runs it: devices staged as they are accepted, D collected at the end. */
function task(collectClient: CommitteeClient): CommitteeTask {
  const t: CommitteeTask = {
    descriptor,
    descriptorHash: hashDescriptor(descriptor),
    collect: async (request) => {
      const result = await collectClient.collect(request);
      stagedIn.set(t, result.staged);
      return result;
    },
    stage: (round) => collectClient.stage(round),
  };
  return t;
}

const initialModel = () => ({ bytes: float32ToBytes(Float32Array.from({ length: VALUES }, (_, i) => (i % 7) / 10)), encoding: 'float32-le' as const });

describe('committee aggregation with real custodians', () => {
  it('3-of-5 with 2 custodians offline: the next model is the plaintext FedAvg within half a step; asked again after a crash, the same answers and model', async () => {
    const { payloads, mean } = await devicesForRound(1, 6);
    // Custodians 2 and 4 are offline: their addresses point at closed ports.
    const offline = client({ 1: running[0]!.server.address, 2: '127.0.0.1:1', 3: running[2]!.server.address, 4: '127.0.0.1:2', 5: running[4]!.server.address });
    const t = task(offline);
    const aggregator = createCommitteeAggregator(t, 1, VALUES);
    for (const { clientId, payload } of payloads) aggregator.add(clientId, 1, checkCommitteeUpload(t, 1, VALUES, clientId, payload));
    const current = initialModel();
    const result = await aggregator.finish(current, [], null);
    expect(result).not.toBeNull();
    expect(result!.audit.deviceCount).toBe(6);
    expect(result!.audit.answers.map((a) => a.answer.custodianIndex).sort()).toEqual([1, 3, 5]);
    expect(result!.audit.failures.map((f) => f.custodianIndex).sort()).toEqual([2, 4]);
    // Custodians 1, 2 and 3 were staged (index order before any timings); 2 is offline, so 1 and 3
    // answered from their staged requests and 5 was asked with every device.
    const staged = stagedIn.get(t)!;
    expect(result!.audit.answers.map((a) => a.answer.custodianIndex).filter((i) => staged.includes(i)).sort()).toEqual([1, 3]);
    expect(staged).not.toContain(5);
    const next = bytesToFloat32(result!.model.bytes);
    const before = bytesToFloat32(current.bytes);
    let worst = 0;
    for (let i = 0; i < VALUES; i++) worst = Math.max(worst, Math.abs(next[i]! - before[i]! - mean[i]!));
    expect(worst).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 2 ** -20);

    // The coordinator crashed before writing the model: a new aggregator rebuilt from the
    // stored raw payloads asks the same D again and gets the same signed answers.
    // `prepare` (called while the round's move to AGGREGATING commits) before the last update and
    // again after it: the sum it took is dropped by the add, the second one is what finish decrypts.
    const rebuilt = createCommitteeAggregator(t, 1, VALUES);
    for (const { clientId, payload } of payloads.slice(0, -1)) rebuilt.add(clientId, 1, payload);
    rebuilt.prepare!();
    rebuilt.add(payloads.at(-1)!.clientId, 1, payloads.at(-1)!.payload);
    rebuilt.prepare!();
    const again = await rebuilt.finish(current, [], null);
    expect(Buffer.from(again!.model.bytes).equals(Buffer.from(result!.model.bytes))).toBe(true);
    expect(again!.audit.answers.map((a) => a.signature).sort()).toEqual(result!.audit.answers.map((a) => a.signature).sort());
    await offline.close();
  }, 120_000);

  it('a D that differs from the answered one is refused by the custodians: the round fails with their reasons', async () => {
    const { payloads } = await devicesForRound(2, 5);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const t = task(all);
    const first = createCommitteeAggregator(t, 2, VALUES);
    for (const { clientId, payload } of payloads) first.add(clientId, 1, payload);
    expect(await first.finish(initialModel(), [], null)).not.toBeNull();
    // The coordinator now asks about D minus one device (to difference out that device).
    const smaller = createCommitteeAggregator(t, 2, VALUES);
    for (const { clientId, payload } of payloads.slice(1)) smaller.add(clientId, 1, payload);
    await expect(smaller.finish(initialModel(), [], null)).rejects.toMatchObject({ code: 'unavailable' });
    await all.close();
  }, 120_000);

  it('a device whose shares belong to another secret makes the decryption check fail (count slot), nothing crashes', async () => {
    const round = 3;
    const { payloads } = await devicesForRound(round, 4);
    // Device "liar" sends the c0 of one secret and the shares of another, correctly signed.
    const clientId = 'r3-liar';
    const deviceKey = generateEd25519KeyPair();
    const certificate = issueDeviceCertificate(authority.privateKey, { taskId: descriptor.taskId, deviceId: clientId, devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 });
    const dh = hashDescriptor(descriptor);
    const base = { descriptor, descriptorHash: dh, round, roundSeed: deriveRoundSeed(dh, round), deviceId: clientId, devicePrivateKey: deviceKey.privateKey, devicePublicKey: deviceKey.publicKey, certificate, values: new Float32Array(VALUES), weight: 1 };
    const a = buildCommitteeUpload(base);
    const b = buildCommitteeUpload(base);
    const manifest = signManifest({ ...b.manifest.manifest, c0Sha256: sha256Hex(a.c0) }, deviceKey.privateKey);
    const liar = encodeCommitteeUploadPayload({ c0: a.c0, sealedShares: b.sealedShares, manifest });
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const t = task(all);
    const aggregator = createCommitteeAggregator(t, round, VALUES);
    for (const p of [...payloads, { clientId, payload: liar }]) aggregator.add(p.clientId, 1, p.payload);
    await expect(aggregator.finish(initialModel(), [], null)).rejects.toMatchObject({ code: 'failed_precondition', message: expect.stringMatching(/count slot/) });
    await all.close();
  }, 120_000);

  it('uploads folded early (before they are recorded): confirmed ones count once, refused and never-confirmed ones are left out of D', async () => {
    const round = 5;
    const { payloads } = await devicesForRound(round, 6);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const t = task(all);
    const aggregator = createCommitteeAggregator(t, round, VALUES);
    const early = payloads.map(({ clientId, payload }) => aggregator.foldEarly!(clientId, payload));
    expect(aggregator.count).toBe(0);
    // Devices 0-3 are recorded (confirmed: not added again); device 4 is refused (taken out);
    // device 5 is still waiting for the lock when the round ends (left out by finish).
    for (const k of [0, 1, 2, 3]) aggregator.add(payloads[k]!.clientId, 1, early[k]!);
    releaseChecked(early[4]!);
    for (const k of [0, 1, 2, 3, 4]) releaseChecked(early[k]!); // idempotent; a no-op for confirmed ones
    expect(aggregator.count).toBe(4);
    // A refused check adds nothing.
    expect(() => aggregator.foldEarly!('someone-else', payloads[0]!.payload)).toThrow(expect.objectContaining({ code: 'failed_precondition' }));
    const current = initialModel();
    const result = await aggregator.finish(current, [], null);
    expect(result!.audit.deviceCount).toBe(4);
    // The same four added the usual way give the same model.
    const plain = createCommitteeAggregator(t, round, VALUES);
    for (const k of [0, 1, 2, 3]) plain.add(payloads[k]!.clientId, 1, payloads[k]!.payload);
    const again = await plain.finish(current, [], null);
    expect(Buffer.from(again!.model.bytes).equals(Buffer.from(result!.model.bytes))).toBe(true);
    releaseChecked(early[5]!); // after the round's end: nothing left to take out
    await all.close();
  }, 120_000);

  it('uploads are staged to the custodians as they are checked; one refused after that is left out of the staged requests, which still answer for D', async () => {
    const round = 7;
    const { payloads } = await devicesForRound(round, 6);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const t = task(all);
    const aggregator = createCommitteeAggregator(t, round, VALUES);
    // Each checked upload goes to the staged custodians before it is recorded.
    const early = payloads.map(({ clientId, payload }) => aggregator.foldEarly!(clientId, payload));
    // Device 4 is refused after it was staged; device 5 never gets the lock before the round ends.
    releaseChecked(early[4]!);
    for (const k of [0, 1, 2, 3]) aggregator.add(payloads[k]!.clientId, 1, early[k]!);
    aggregator.prepare!();
    aggregator.startFinish!();
    const current = initialModel();
    const result = await aggregator.finish(current, [], null);
    expect(result!.audit.deviceCount).toBe(4);
    // The t custodians answered through staged requests holding exactly D (not asked with every device).
    expect(stagedIn.get(t)).toHaveLength(THRESHOLD);
    expect(result!.audit.answers.map((a) => a.answer.custodianIndex).sort()).toEqual([...stagedIn.get(t)!].sort());
    const plain = createCommitteeAggregator(t, round, VALUES);
    for (const k of [0, 1, 2, 3]) plain.add(payloads[k]!.clientId, 1, payloads[k]!.payload);
    const again = await plain.finish(current, [], null);
    expect(Buffer.from(again!.model.bytes).equals(Buffer.from(result!.model.bytes))).toBe(true);
    aggregator.dispose();
    plain.dispose();
    await all.close();
  }, 120_000);

  it('a retried upload of a device already staged is not staged again: the round is staged once and answered through those requests', async () => {
    const round = 8;
    const { payloads } = await devicesForRound(round, 4);
    // A second upload of device 0 (another attempt), checked while its first one is being stored.
    const retry = (await devicesForRound(round, 1)).payloads[0]!;
    expect(retry.clientId).toBe(payloads[0]!.clientId);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const inner = task(all);
    let stagings = 0;
    const t: CommitteeTask = { ...inner, stage: (r) => (stagings++, inner.stage!(r)) };
    const aggregator = createCommitteeAggregator(t, round, VALUES);
    const early = payloads.map(({ clientId, payload }) => aggregator.foldEarly!(clientId, payload));
    const again = aggregator.foldEarly!(retry.clientId, retry.payload);
    // The first attempt is recorded; the retry is refused (already_exists) and taken out.
    for (const [k, { clientId }] of payloads.entries()) aggregator.add(clientId, 1, early[k]!);
    expect(() => aggregator.add(retry.clientId, 1, again)).toThrow(expect.objectContaining({ code: 'already_exists' }));
    releaseChecked(again);
    aggregator.prepare!();
    aggregator.startFinish!();
    const result = await aggregator.finish(initialModel(), [], null);
    expect(result!.audit.deviceCount).toBe(4);
    expect(stagings).toBe(1);
    // (`inner`'s collect records which custodians answered through their staged request.)
    expect(stagedIn.get(inner)).toHaveLength(THRESHOLD);
    aggregator.dispose();
    await all.close();
  }, 120_000);

  it('startFinish asks the committee while the move to AGGREGATING commits and finish uses that request; killed before the move was durable, a rebuild from the stored updates asks the same D and gets the same answers and model', async () => {
    const round = 6;
    const { payloads } = await devicesForRound(round, 5);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const asked: number[] = [];
    const inner = task(all);
    const t: CommitteeTask = { ...inner, collect: (request) => (asked.push(request.devices.length), inner.collect(request)) };
    // Below the task's minimum |D| nothing is asked early (finish refuses such a round before asking).
    const few = createCommitteeAggregator(t, round, VALUES);
    for (const { clientId, payload } of payloads.slice(0, 3)) few.add(clientId, 1, payload);
    few.startFinish!();
    expect(asked).toEqual([]);
    few.dispose();

    const aggregator = createCommitteeAggregator(t, round, VALUES);
    for (const { clientId, payload } of payloads) aggregator.add(clientId, 1, checkCommitteeUpload(t, round, VALUES, clientId, payload));
    aggregator.prepare!();
    aggregator.startFinish!();
    expect(asked).toEqual([5]);
    const current = initialModel();
    const result = await aggregator.finish(current, [], null);
    expect(asked).toEqual([5]); // finish used the request already under way
    expect(result!.audit.deviceCount).toBe(5);
    // The custodians answered, then the coordinator died before its move to AGGREGATING was
    // durable: on restart the round is COLLECTING with the same recorded updates, rebuilt from the
    // store (no early request on that path) and aggregated: the same D, the cached answers.
    const rebuilt = createCommitteeAggregator(t, round, VALUES);
    for (const { clientId, payload } of payloads) rebuilt.add(clientId, 1, payload);
    const again = await rebuilt.finish(current, [], null);
    expect(asked).toEqual([5, 5]);
    expect(Buffer.from(again!.model.bytes).equals(Buffer.from(result!.model.bytes))).toBe(true);
    expect(again!.audit.answers.map((a) => a.signature).sort()).toEqual(result!.audit.answers.map((a) => a.signature).sort());
    await all.close();
  }, 120_000);

  it("reuses a round's big buffers in the task's next round (decrypted by a worker pool) once the first is disposed and its workers are done: two rounds on reused buffers give the same models as fresh ones", async () => {
    const pool = createDecryptPool({ threads: 1, minPolynomials: 2 });
    expect(pool.threads).toBe(1);
    const all = client(Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])));
    const calls: { c0Sum: ArrayBufferLike; levelSums: ArrayBufferLike | undefined; publics: ArrayBufferLike[] }[] = [];
    let derived: Promise<unknown> = Promise.resolve();
    let derivations = 0;
    const pooled: CommitteeTask = {
      ...task(all),
      decrypt: (options) => {
        calls.push({ c0Sum: options.c0Sum.buffer, levelSums: options.output?.levelSums.buffer, publics: (options.publicPolynomials ?? []).map((a) => a.buffer) });
        return pool.decryptSum(options);
      },
      derivePublicPolynomials: (binding, count, out) => {
        derivations++;
        return (derived = pool.derivePublicPolynomials(binding, count, out));
      },
    };
    const rounds = [await devicesForRound(9, 5), await devicesForRound(10, 4)];
    /** One round on `t`: every device added, prepared, its derivation done, finished; disposed. */
    const runRound = async (t: CommitteeTask, round: number, current: ReturnType<typeof initialModel>) => {
      const before = derivations;
      const aggregator = createCommitteeAggregator(t, round, VALUES);
      for (const { clientId, payload } of rounds[round - 9]!.payloads) aggregator.add(clientId, 1, checkCommitteeUpload(t, round, VALUES, clientId, payload));
      if (t === pooled) {
        await vi.waitFor(() => expect(derivations).toBe(before + 1), { timeout: 10_000 });
        await derived;
        await new Promise((resolve) => setImmediate(resolve)); // the aggregator has taken them
      }
      aggregator.prepare!();
      const result = await aggregator.finish(current, [], null);
      aggregator.dispose();
      return { bytes: result!.model.bytes, encoding: 'float32-le' as const };
    };
    try {
      const first = await runRound(pooled, 9, initialModel());
      // Handed back once the decryption's worker has replied.
      await vi.waitFor(() => expect(pooledRoundBuffers(pooled)).toBe(1), { timeout: 10_000 });
      const second = await runRound(pooled, 10, first);
      await vi.waitFor(() => expect(pooledRoundBuffers(pooled)).toBe(1), { timeout: 10_000 });
      expect(calls).toHaveLength(2);
      // The second round decrypted the first's memory: the c0 sum copy, the outputs, the public polynomials.
      expect(calls[1]!.c0Sum).toBe(calls[0]!.c0Sum);
      expect(calls[1]!.levelSums).toBe(calls[0]!.levelSums);
      expect(calls[0]!.levelSums).toBeInstanceOf(SharedArrayBuffer);
      expect(calls[1]!.publics).toHaveLength(2);
      expect(calls[1]!.publics.every((b) => b === calls[0]!.publics[0])).toBe(true);
      // Fresh buffers (a task of its own per round, decrypted in this thread): the same models, byte for byte.
      const fresh9 = await runRound(task(all), 9, initialModel());
      const fresh10 = await runRound(task(all), 10, fresh9);
      expect(Buffer.from(first.bytes).equals(Buffer.from(fresh9.bytes))).toBe(true);
      expect(Buffer.from(second.bytes).equals(Buffer.from(fresh10.bytes))).toBe(true);
      // And the models are the FedAvg steps (not, say, the first round's again).
      const [m0, m1, m2] = [initialModel().bytes, first.bytes, second.bytes].map(bytesToFloat32);
      let worst = 0;
      for (let i = 0; i < VALUES; i++) {
        worst = Math.max(worst, Math.abs(m1![i]! - m0![i]! - rounds[0]!.mean[i]!), Math.abs(m2![i]! - m1![i]! - rounds[1]!.mean[i]!));
      }
      expect(worst).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 2 ** -20);
      // The task's rounds are over: the set kept for its next round is freed.
      dropRoundBuffers(pooled);
      expect(pooledRoundBuffers(pooled)).toBe(0);
    } finally {
      await all.close();
      await pool.close();
    }
  }, 120_000);

  it('refuses uploads for another device, round or task at intake, and fewer than t custodians fails the round', async () => {
    const { payloads } = await devicesForRound(4, 4);
    const only2 = client({ 1: running[0]!.server.address, 2: running[1]!.server.address, 3: '127.0.0.1:1', 4: '127.0.0.1:2', 5: '127.0.0.1:3' });
    const t = task(only2);
    const { clientId, payload } = payloads[0]!;
    expect(() => checkCommitteeUpload(t, 4, VALUES, 'someone-else', payload)).toThrow(expect.objectContaining({ code: 'failed_precondition' }));
    expect(() => checkCommitteeUpload(t, 5, VALUES, clientId, payload)).toThrow(expect.objectContaining({ code: 'failed_precondition' }));
    expect(() => checkCommitteeUpload(t, 4, VALUES + 1, clientId, payload)).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    expect(() => checkCommitteeUpload(t, 4, VALUES, clientId, payload.subarray(0, 100))).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    const aggregator = createCommitteeAggregator(t, 4, VALUES);
    for (const p of payloads) aggregator.add(p.clientId, 1, p.payload);
    expect(() => aggregator.add(clientId, 1, payload)).toThrow(expect.objectContaining({ code: 'already_exists' }));
    await expect(aggregator.finish(initialModel(), [], null)).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/2 of the 3/) });
    await only2.close();
  }, 120_000);
});
