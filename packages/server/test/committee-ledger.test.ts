/**
 * Committee decryptions in the hash-chained privacy ledger (issue 11, item 4), through the real
 * coordinator, real custodian gRPC servers on loopback and the machine's PostgreSQL: each round's
 * custodian answers are recorded in a chained ledger entry, /privacy/verify re-verifies every
 * answer's Ed25519 signature against the task descriptor's committee, the round, hash(D) and |D|,
 * and names the entry and the reason when an answer in the database was forged or altered — also
 * when the whole chain was re-hashed around the change (what a coordinator rewriting its own
 * database would do).
 */
import { randomUUID } from 'node:crypto';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { centerModulo, createSeededRng, encodeDistributedDiscreteGaussian, inverseRandomizedHadamard, type Rng } from '@veil/privacy';
import { committeeDdgParams, committeeRotationSeed, descriptorHashHex, type TaskDescriptor } from '@veil/crypto';
import { hashLedgerEntry, type LedgerEntry } from '../src/privacy/ledger.js';
import { committeeDescriptor, committeeUpdate, createCommitteeKeys, serveCustodian, type CommitteeKeys } from './committee-fixture.js';
import { TINY_PARAMETERS, fetchWeights, joinDevices, maxAbsDiff, pattern, sha256Hex, startTestCoordinator, tinyTaskBody, waitForRounds, type Device } from './helpers.js';

const logger = pino({ level: 'silent' });
const N_CUSTODIANS = 3;

let keys: CommitteeKeys;
let requestKeyFile: string;
const custodians: Awaited<ReturnType<typeof serveCustodian>>[] = [];

beforeAll(async () => {
  keys = await createCommitteeKeys('veil-committee-ledger-', N_CUSTODIANS);
  requestKeyFile = keys.request.secretFile;
  for (const dir of keys.custodianDirs) custodians.push(await serveCustodian(keys, dir, logger));
}, 120_000);

afterAll(async () => {
  for (const c of custodians) await c.close();
  await keys?.[Symbol.asyncDispose]();
});

function descriptorFor(
  taskId: string,
  extra: { dp?: TaskDescriptor['dp']; encoding?: Partial<TaskDescriptor['encoding']> } = {},
): { descriptor: TaskDescriptor; body: { descriptor: string; descriptorSignature: string } } {
  return committeeDescriptor(
    keys,
    taskId,
    custodians.map((c) => c.server.address),
    extra as Partial<Parameters<typeof committeeDescriptor>[3]>,
  );
}

async function committeePayload(device: Device, roundNumber: number, delta: Float32Array, dp: { dpRng: Rng; dp: { colludingDevices: number } } | null = null) {
  const { payload } = await committeeUpdate(keys, device, roundNumber, delta, 1, {
    ...(dp !== null && { pins: { dp: dp.dp } }),
    encryption: {
      parameterCount: device.task.parameterCount,
      announcedDp:
        device.task.privacy?.distributed == null
          ? null
          : { ...device.task.privacy.distributed, clipNorm: device.task.privacy.clipNorm, noiseMultiplier: device.task.privacy.noiseMultiplier },
      ...(dp !== null && { dpRng: dp.dpRng }),
    },
  });
  return payload;
}

describe('committee decryptions in the privacy ledger', () => {
  it('records each round\'s custodian answers in the chain; /privacy/verify names a forged or altered answer, also in a re-hashed chain', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const { descriptor, body } = descriptorFor(randomUUID());
    const id = descriptor.taskId;
    // A committee task with local DP (devices noise their own updates; q = 1 selects all three).
    const privacy = { mode: 'local', epsilonCap: 50, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 1 };
    const created = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { start: true, rounds: 2, committee: body, privacy }) });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    using devices = await joinDevices(t.coordinator, id, 3);
    for (const round of [1, 2]) {
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      for (const [k, d] of devices.entries()) {
        const payload = await committeePayload(d, round, pattern(TINY_PARAMETERS, k + 2).map((x) => x * 0.01));
        await d.transport.submitUpdate(d.credential, { roundNumber: round, modelVersion: assignments[k]!.modelVersion, exampleCount: 1, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);
      }
      const rounds = await waitForRounds(t.rest, id, (r) => r.some((x: any) => x.number === round && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
      expect(rounds.find((r: any) => r.number === round).state).toBe('CLOSED');
    }

    const audit = { token: t.coordinator.auditToken };
    const ledger = (await t.rest.request('GET', `/v1/tasks/${id}/privacy/ledger`, audit)).body;
    // Per round: the spend entry at selection, then the decryption record at the round's close.
    expect(ledger.entries.map((e: LedgerEntry) => [e.sequence, e.roundNumber, e.mechanism])).toEqual([
      [1, 1, 'gaussian-local'],
      [2, 1, 'committee-decryption'],
      [3, 2, 'gaussian-local'],
      [4, 2, 'committee-decryption'],
    ]);
    const roundsSummary = (await t.rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds;
    for (const seq of [2, 4]) {
      const e = ledger.entries[seq - 1] as LedgerEntry;
      const spend = ledger.entries[seq - 2] as LedgerEntry;
      expect(e.participants).toBe(3);
      expect(e.participantIds).toEqual(spend.participantIds);
      expect(e.epsilon).toBe(spend.epsilon); // a decryption record spends nothing
      expect(e.decryption!.descriptorHash).toBe(descriptorHashHex(descriptor));
      expect(e.decryption!.manifestDigests).toHaveLength(3);
      expect(e.decryption!.answers).toHaveLength(2);
      // The same signed answers as the round's summary (what the committee audit route checks).
      const summary = roundsSummary.find((r: any) => r.number === e.roundNumber).summary.committee;
      expect(e.decryption!.answers).toEqual(summary.answers);
      for (const a of e.decryption!.answers) expect(a.answer).toMatchObject({ round: e.roundNumber, count: 3, hashD: e.decryption!.hashD });
    }
    const headHash = ledger.entries[3].hash;
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toEqual({ ok: true, entries: 4, withinCap: true, firstMismatch: null, headHash });

    // The budget summary: two rounds (decryption records spend nothing), who approved each decryption.
    const summary = (await t.rest.request('GET', `/v1/tasks/${id}/privacy`, audit)).body;
    expect(summary.rounds.map((r: any) => [r.roundNumber, r.decryption])).toEqual([
      [1, { custodians: ledger.entries[1].decryption.answers.map((a: any) => a.answer.custodianIndex).sort(), deviceCount: 3 }],
      [2, { custodians: ledger.entries[3].decryption.answers.map((a: any) => a.answer.custodianIndex).sort(), deviceCount: 3 }],
    ]);
    expect(summary.epsilonSpent).toBe(ledger.entries[3].epsilon);
    expect(summary.clients.map((c: any) => c.participations)).toEqual([2, 2, 2]);

    const original: LedgerEntry[] = ledger.entries;
    /** Writes `changed` over entry `seq` and re-hashes the chain from there (a coordinator rewriting its own ledger). */
    const rewrite = async (seq: number, change: (e: LedgerEntry) => LedgerEntry, rehash: boolean) => {
      const entries = original.map((e) => structuredClone(e));
      entries[seq - 1] = change(entries[seq - 1]!);
      for (let i = seq - 1; i < entries.length; i++) {
        const e = entries[i]!;
        if (rehash) {
          e.prevHash = i === 0 ? e.prevHash : entries[i - 1]!.hash;
          e.hash = hashLedgerEntry(e, e.prevHash);
        }
        await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET decryption = $3::jsonb, participants = $4, "participantIds" = $5::jsonb, hash = $6, "prevHash" = $7 WHERE "taskId" = $1 AND sequence = $2`, [
          id, e.sequence, e.decryption == null ? null : JSON.stringify(e.decryption), e.participants, JSON.stringify(e.participantIds), e.hash, e.prevHash,
        ]);
      }
    };
    const verify = async () => (await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body;
    const restore = () => rewrite(1, (e) => e, false);

    // A forged signature (another 64 bytes), chain re-hashed: the answer is named.
    const forged = (e: LedgerEntry): LedgerEntry => {
      const a = e.decryption!.answers[1]!;
      a.signature = Buffer.alloc(64, 7).toString('base64');
      return e;
    };
    const forgedIndex = original[3]!.decryption!.answers[1]!.answer.custodianIndex;
    for (const rehash of [true, false]) {
      await rewrite(4, forged, rehash);
      expect(await verify()).toMatchObject({
        ok: false,
        firstMismatch: { sequence: 4, reason: `custodian ${forgedIndex}'s answer (answer 2) does not verify: answer signature does not verify under custodian ${forgedIndex}'s key` },
      });
    }
    await restore();
    expect((await verify()).ok).toBe(true);

    // An altered answer: the custodian's count changed to 4 (its signature no longer covers it).
    await rewrite(2, (e) => { (e.decryption!.answers[0]!.answer as { count: number }).count = 4; return e; }, true);
    expect(await verify()).toMatchObject({ ok: false, firstMismatch: { sequence: 2, reason: expect.stringMatching(/^custodian \d's answer \(answer 1\) does not verify: answer counts another \|D\|$/) } });
    await restore();

    // An answer dropped: fewer than t approvals.
    await rewrite(2, (e) => { e.decryption!.answers.pop(); return e; }, true);
    expect(await verify()).toMatchObject({ ok: false, firstMismatch: { sequence: 2, reason: '1 custodian answers verify, the threshold is 2' } });
    await restore();

    // D altered: one device removed from the record (its digest and its id).
    await rewrite(4, (e) => { e.decryption!.manifestDigests.pop(); e.participantIds.pop(); e.participants = 2; return e; }, true);
    expect(await verify()).toMatchObject({ ok: false, firstMismatch: { sequence: 4, reason: 'hash(D) does not match the recorded manifest digests of D' } });
    await restore();

    // An answer replaced by one another round's decryption produced (validly signed, but for round 1).
    await rewrite(4, (e) => { e.decryption!.answers[0] = structuredClone(original[1]!.decryption!.answers[0]!); return e; }, true);
    expect(await verify()).toMatchObject({ ok: false, firstMismatch: { sequence: 4, reason: expect.stringMatching(/does not verify: answer names another round$/) } });
    await restore();
    expect(await verify()).toEqual({ ok: true, entries: 4, withinCap: true, firstMismatch: null, headHash });

    const docs = (await t.rest.request('GET', '/docs/json', { token: null })).body;
    expect(JSON.stringify(docs.paths['/v1/tasks/{id}/privacy/ledger'])).toMatch(/committee-decryption/);
  }, 180_000);

  it('runs distributed DP in committee mode through real custodians: the descriptor\'s noise, the exact decoded sum, both ε against the authors\' accountant', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const dp = { mechanism: 'distributed-discrete-gaussian' as const, clipNorm: 1, noiseMultiplier: 1, colludingDevices: 1, delta: 1e-5 };
    const { descriptor, body } = descriptorFor(randomUUID(), { dp, encoding: { clipMaxAbs: 8 } });
    const id = descriptor.taskId;
    const privacy = { mode: 'distributed', epsilonCap: 50, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 1 };
    const base = pattern(TINY_PARAMETERS, 1);
    // Privacy settings other than the descriptor's are refused; so is a DP descriptor without DP settings.
    const mismatch = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(base, { committee: body, privacy: { ...privacy, noiseMultiplier: 0.5 } }) });
    expect(mismatch.status).toBe(400);
    expect(JSON.stringify(mismatch.body)).toMatch(/differs from the descriptor's dp/);
    const withoutDp = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(base, { committee: body }) });
    expect(withoutDp.status).toBe(400);
    expect(JSON.stringify(withoutDp.body)).toMatch(/privacy.mode \\"distributed\\"/);

    const created = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(base, { start: true, rounds: 2, committee: body, privacy }) });
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    // n = minDevices 3 - 1 colluding = 2 honest shares, σ = z·C/√2 (rounded up to 12 digits), 1/γ = 1/step, d = 16.
    expect(created.body.settings.privacy.ddg).toMatchObject({ noiseClients: 2, scale: 8192, localStddev: 0.707106781187, dimension: 16, committee: true });
    using devices = await joinDevices(t.coordinator, id, 3);
    const dh = Buffer.from(descriptorHashHex(descriptor), 'hex');
    const ddg = committeeDdgParams(descriptor, TINY_PARAMETERS)!;
    let weights = base;
    for (const round of [1, 2]) {
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      const deltas = devices.map((_, k) => pattern(TINY_PARAMETERS, k + 2 + round).map((x) => x * 0.5));
      const expectedSum = new Float64Array(ddg.dimension);
      for (const [k, d] of devices.entries()) {
        const seed = 1000 * round + k;
        const payload = await committeePayload(d, round, deltas[k]!, { dpRng: createSeededRng(seed), dp: { colludingDevices: 1 } });
        await d.transport.submitUpdate(d.credential, { roundNumber: round, modelVersion: assignments[k]!.modelVersion, exampleCount: 1, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);
        // The device's integer vector, recomputed with the same randomness (KLS21 Algorithm 1).
        const z = encodeDistributedDiscreteGaussian(deltas[k]!, { clipNorm: 1, scale: 8192, localStddev: ddg.localStddev, modulus: 2 ** 52, rotationSeed: committeeRotationSeed(dh, round), rng: createSeededRng(seed) });
        const centred = centerModulo(z.encoded, 2 ** 52);
        for (let i = 0; i < centred.length; i++) expectedSum[i]! += centred[i]!;
      }
      const rounds = await waitForRounds(t.rest, id, (r) => r.some((x: any) => x.number === round && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
      const closed = rounds.find((r: any) => r.number === round);
      expect(closed.state, closed.failureReason).toBe('CLOSED');
      // The next model is the decoded noisy mean: unscale, undo the rotation, divide by |D|.
      const sum = inverseRandomizedHadamard(expectedSum.map((v) => v / 8192), TINY_PARAMETERS, committeeRotationSeed(dh, round));
      const expected = Float32Array.from(weights, (w, i) => w + sum[i]! / 3);
      const next = await fetchWeights(t.rest, id, round);
      expect(maxAbsDiff(next, expected)).toBeLessThanOrEqual(1e-6);
      // And it carries noise: the noiseless mean of the (unclipped: norms below C) deltas differs by about √3·σ/3 ≈ 0.41 RMS.
      const noiseless = Float32Array.from(weights, (w, i) => w + (deltas[0]![i]! + deltas[1]![i]! + deltas[2]![i]!) / 3);
      const rms = Math.sqrt(next.reduce((a, v, i) => a + (v - noiseless[i]!) ** 2, 0) / TINY_PARAMETERS);
      expect(rms).toBeGreaterThan(0.1);
      expect(rms).toBeLessThan(2);
      weights = next;
    }

    // The ledger: ε for observers (q = 1 here, so the same) and ε against the coordinator, each equal
    // to the authors' accounting (google-research/federated distributed_dp ddgauss_epsilon with
    // TF Privacy's conversion, evaluated on Veil's orders: scripts/ddg-committee-reference.py).
    const REFERENCE = [4.728836898456729, 7.0779046489830275];
    const audit = { token: t.coordinator.auditToken };
    const ledger = (await t.rest.request('GET', `/v1/tasks/${id}/privacy/ledger`, audit)).body.entries as LedgerEntry[];
    expect(ledger.map((e) => e.mechanism)).toEqual(['ddg-distributed', 'committee-decryption', 'ddg-distributed', 'committee-decryption']);
    for (const [r, e] of [ledger[0]!, ledger[2]!].entries()) {
      expect(e.ddg).toEqual({ noiseClients: 2, scale: 8192, localStddev: 0.707106781187, dimension: 16, roundingBeta: expect.closeTo(Math.exp(-0.5), 11) });
      expect(e.epsilon).toBeCloseTo(REFERENCE[r]!, 10);
      expect(e.epsilonCoordinator).toBeCloseTo(REFERENCE[r]!, 10);
    }
    expect(ledger[3]!.epsilonCoordinator).toBe(ledger[2]!.epsilonCoordinator);
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toMatchObject({ ok: true, entries: 4 });
    const summary = (await t.rest.request('GET', `/v1/tasks/${id}/privacy`, audit)).body;
    expect(summary.epsilonSpentCoordinator).toBeCloseTo(REFERENCE[1]!, 10);
    expect(summary.rounds.map((r: any) => [r.epsilonCoordinator, r.decryption.deviceCount])).toEqual([
      [expect.closeTo(REFERENCE[0]!, 10), 3],
      [expect.closeTo(REFERENCE[1]!, 10), 3],
    ]);
    // A rewritten ε against the coordinator is caught (the hash covers it).
    await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET "epsilonCoordinator" = 1 WHERE "taskId" = $1 AND sequence = 3`, [id]);
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toMatchObject({ ok: false, firstMismatch: { sequence: 3 } });
  }, 180_000);
});
