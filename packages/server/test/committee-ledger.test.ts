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
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTaskDescriptor,
  custodianFingerprint,
  descriptorHashHex,
  encodeDescriptor,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  type RawKeyPair,
  type TaskDescriptor,
} from '@veil/crypto';
import {
  createCustodianService,
  initCustodianDir,
  initRequestKey,
  openCustodianState,
  readCustodianKeys,
  readRequestSigner,
  startCustodianServer,
  type CustodianServer,
} from '@veil/custodian';
import { createCommitteeEncryption } from '../../client-sdk/src/mods/committee.js';
import { hashLedgerEntry, type LedgerEntry } from '../src/privacy/ledger.js';
import { TINY_PARAMETERS, joinDevices, pattern, sha256Hex, startTestCoordinator, tinyTaskBody, waitForRounds, type Device } from './helpers.js';

const logger = pino({ level: 'silent' });
const N_CUSTODIANS = 3;

let root: string;
let authority: RawKeyPair;
let requestKeyFile: string;
const custodians: { server: CustodianServer; close(): Promise<void> }[] = [];
let fingerprints: string[] = [];
const publics: { sealingKey: string; signingKey: string }[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'veil-committee-ledger-'));
  authority = generateEd25519KeyPair();
  const request = await initRequestKey(join(root, 'request'));
  requestKeyFile = request.secretFile;
  const requestPublicKey = (await readRequestSigner(requestKeyFile)).publicKey;
  for (let i = 1; i <= N_CUSTODIANS; i++) {
    const dir = join(root, `custodian-${i}`);
    publics.push(await initCustodianDir(dir));
    const state = await openCustodianState(join(dir, 'answers.jsonl'));
    const service = createCustodianService({
      keys: await readCustodianKeys(dir),
      state,
      coordinatorKeys: [requestPublicKey],
      authorityKeys: [authority.publicKey],
      floors: { minDevices: 3 },
      logger,
    });
    const server = await startCustodianServer({ service, logger });
    custodians.push({ server, close: async () => { await server.close(); await state.close(); } });
  }
  fingerprints = publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64')));
}, 120_000);

afterAll(async () => {
  for (const c of custodians) await c.close();
  await rm(root, { recursive: true, force: true });
});

function descriptorFor(taskId: string): { descriptor: TaskDescriptor; body: { descriptor: string; descriptorSignature: string } } {
  const descriptor = buildTaskDescriptor({
    taskId,
    committee: publics.map((p, i) => ({ address: custodians[i]!.server.address, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
    threshold: 2,
    minDevices: 3,
    maxDevices: 50,
    maxRounds: 5,
    authorityPublicKey: authority.publicKey,
  });
  return {
    descriptor,
    body: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature },
  };
}

async function committeePayload(device: Device, roundNumber: number, delta: Float32Array) {
  const deviceKey = generateEd25519KeyPair();
  const certificate = issueDeviceCertificate(authority.privateKey, { taskId: device.task.taskId, deviceId: device.clientId, devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 });
  const enc = createCommitteeEncryption({
    committee: device.task.committee!,
    pins: { minDevices: 3, pinnedFingerprints: fingerprints, authorityKey: Buffer.from(authority.publicKey).toString('base64') },
    deviceId: device.clientId,
    deviceKey,
    certificate,
  });
  const out = await enc.middleware(
    { delta, exampleCount: 1, encoding: 'float32-le', notes: {} },
    { taskId: device.task.taskId, clientId: device.clientId, roundNumber, modelVersion: roundNumber - 1, maxExampleCount: 1000, signal: undefined },
    async (u) => u,
  );
  return out.payload!;
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
});
