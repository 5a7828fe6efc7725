/**
 * Committee tasks through the real coordinator (issue 11): custodian gRPC servers with durable
 * state (@veil/custodian) on loopback, the coordinator with its request key, devices that join
 * over gRPC and encrypt with the SDK's committee middleware, certified by an enrolment authority
 * key the test keeps apart from the coordinator. The next model is a plaintext float32 FedAvg;
 * the round summary names the custodians who approved the decryption.
 */
import { randomUUID } from 'node:crypto';
import { status } from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { c0PayloadBytes, committeeUploadBytesWithoutManifest, encodeDescriptor, type C0Bits, type TaskDescriptor } from '@veil/crypto';
import type { CustodianServer } from '@veil/custodian';
import { committeeDescriptor, committeeUpdate, createCommitteeKeys, serveCustodian, type CommitteeKeys } from './committee-fixture.js';
import {
  TINY_PARAMETERS,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  grpcStatusOf,
  joinDevices,
  maxAbsDiff,
  pattern,
  sha256Hex,
  startTestCoordinator,
  tinyTaskBody,
  waitForRounds,
  type Device,
} from './helpers.js';

const logger = pino({ level: 'silent' });
const N_CUSTODIANS = 3;

let keys: CommitteeKeys;
let requestKeyFile: string;
const custodians: { server: CustodianServer; close(): Promise<void> }[] = [];
/** Per custodian (index - 1), the rounds it answered through a staged request (devices streamed while the round collected). */
const stagedAnswers: number[][] = [];

beforeAll(async () => {
  keys = await createCommitteeKeys('veil-committee-it-', N_CUSTODIANS);
  requestKeyFile = keys.request.secretFile;
  for (const dir of keys.custodianDirs) {
    const answered: number[] = [];
    stagedAnswers.push(answered);
    const counting = (service: Parameters<NonNullable<Parameters<typeof serveCustodian>[3]>>[0]) => ({
      ...service,
      stagedShareSum: async (...args: Parameters<typeof service.stagedShareSum>) => {
        const answer = await service.stagedShareSum(...args);
        answered.push(args[0].round);
        return answer;
      },
    });
    custodians.push(await serveCustodian(keys, dir, logger, counting));
  }
}, 120_000);

afterAll(async () => {
  for (const c of custodians) await c.close();
  await keys[Symbol.asyncDispose]();
});

function descriptorFor(taskId: string, c0Bits?: C0Bits): { descriptor: TaskDescriptor; body: { descriptor: string; descriptorSignature: string } } {
  return committeeDescriptor(
    keys,
    taskId,
    custodians.map((c) => c.server.address),
    { encoding: { weightCap: 16, ...(c0Bits !== undefined && { c0Bits }) } },
  );
}

/** The device side: SDK committee middleware with the test's pins and an authority certificate. */
function committeePayload(device: Device, roundNumber: number, delta: Float32Array, exampleCount: number) {
  return committeeUpdate(keys, device, roundNumber, delta, exampleCount);
}

function submit(device: Device, a: { roundNumber: number; modelVersion: number }, payload: Uint8Array, weight: number) {
  return device.transport.submitUpdate(device.credential, { roundNumber: a.roundNumber, modelVersion: a.modelVersion, exampleCount: weight, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);
}

describe('committee tasks through the coordinator', () => {
  it('rounds decrypt to plaintext FedAvg with t of n custodians; bad uploads are refused; a killed custodian does not stop the next round', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const { descriptor, body } = descriptorFor(randomUUID());
    const { base, task: created } = await createTinyTask(t.rest, { rounds: 2, committee: body });
    expect(created.id).toBe(descriptor.taskId);
    expect(created.settings.updateEncoding).toBe('committee-v1');
    using devices = await joinDevices(t.coordinator, descriptor.taskId, 3);
    expect(devices[0]!.task.committee).not.toBeNull();

    // Round 1: one bad upload of each kind first, then the three honest ones.
    let assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    expect(assignments.every((a) => a.updateEncoding === 'committee-v1')).toBe(true);
    const deltas = devices.map((_, k) => pattern(TINY_PARAMETERS, k + 2).map((x) => x * 0.3));
    const uploads = await Promise.all(devices.map((d, k) => committeePayload(d, 1, deltas[k]!, 2 + k)));
    // Device 0's upload sent by device 1 (the manifest names device 0): refused.
    expect((await grpcStatusOf(submit(devices[1]!, assignments[1]!, uploads[0]!.payload, uploads[0]!.weight))).details).toMatch(/names device/);
    // A plaintext update to a committee task: refused.
    const plain = Buffer.from(new Float32Array(TINY_PARAMETERS).buffer);
    expect((await grpcStatusOf(devices[0]!.transport.submitUpdate(devices[0]!.credential, { roundNumber: 1, modelVersion: 0, exampleCount: 1, encoding: 'float32-le', sha256: sha256Hex(plain) }, plain))).details).toMatch(/committee-v1/);
    // Truncated c0.
    const truncated = uploads[2]!.payload.subarray(0, 2000);
    expect((await grpcStatusOf(submit(devices[2]!, assignments[2]!, truncated, 1))).details).toMatch(/committee upload/);
    // Device 2's own upload under a header digest that is not its payload's (as if damaged in transit):
    // hashed by the check with its c0 (the transport leaves it to intake) and refused after the check
    // added the c0 early; device 2's proper upload below is then accepted and counted once (FedAvg).
    const damaged = devices[2]!.transport.submitUpdate(
      devices[2]!.credential,
      { roundNumber: assignments[2]!.roundNumber, modelVersion: assignments[2]!.modelVersion, exampleCount: uploads[2]!.weight, encoding: 'committee-v1', sha256: sha256Hex(plain) },
      uploads[2]!.payload,
    );
    const damagedStatus = await grpcStatusOf(damaged);
    expect(damagedStatus.code).toBe(status.INVALID_ARGUMENT);
    expect(damagedStatus.details).toMatch(/SHA-256 does not match the header/);
    for (let k = 0; k < 3; k++) await submit(devices[k]!, assignments[k]!, uploads[k]!.payload, uploads[k]!.weight);
    let rounds = await waitForRounds(t.rest, descriptor.taskId, (r) => r.some((x: any) => x.number === 1 && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
    const first = rounds.find((r: any) => r.number === 1);
    expect(first.state).toBe('CLOSED');
    const w1 = await fetchWeights(t.rest, descriptor.taskId, 1);
    const expected1 = expectedFedAvg(base, deltas.map((delta, k) => ({ delta, n: uploads[k]!.weight })));
    expect(maxAbsDiff(w1, expected1)).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 1e-6);
    expect(first.summary.committee.deviceCount).toBe(3);
    expect(first.summary.committee.custodians).toHaveLength(2);
    // The coordinator streamed the accepted devices to the two custodians it asked while the round
    // collected, and they answered those staged requests.
    expect(first.summary.committee.custodians.filter((i: number) => stagedAnswers[i - 1]!.includes(1))).toHaveLength(2);

    // Round 2 with custodian 3 killed: 2 of 3 still answer.
    await custodians[2]!.close();
    assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const uploads2 = await Promise.all(devices.map((d, k) => committeePayload(d, 2, deltas[k]!, 1)));
    for (let k = 0; k < 3; k++) await submit(devices[k]!, assignments[k]!, uploads2[k]!.payload, uploads2[k]!.weight);
    rounds = await waitForRounds(t.rest, descriptor.taskId, (r) => r.some((x: any) => x.number === 2 && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
    const second = rounds.find((r: any) => r.number === 2);
    expect(second.state).toBe('CLOSED');
    expect(second.summary.committee.custodians.sort()).toEqual([1, 2]);
    const w2 = await fetchWeights(t.rest, descriptor.taskId, 2);
    const expected2 = expectedFedAvg(w1, deltas.map((delta) => ({ delta, n: 1 })));
    expect(maxAbsDiff(w2, expected2)).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 1e-6);

    // The audit API: who approved each decryption, for how many devices, signatures checked.
    const audit = await t.rest.request('GET', `/v1/tasks/${descriptor.taskId}/committee/audit`);
    expect(audit.status).toBe(200);
    expect(audit.body).toMatchObject({ valid: true, threshold: 2, committeeSize: 3, minDevices: 3 });
    expect(audit.body.rounds.map((r: any) => [r.roundNumber, r.deviceCount, r.approvedBy.length, r.valid])).toEqual([[1, 3, 2, true], [2, 3, 2, true]]);
    expect(audit.body.rounds[1].approvedBy).toEqual([1, 2]);
  }, 180_000);

  it('group commit: each device sends two uploads at once, both added to the sum before the lock; exactly one each is counted and the next model is their FedAvg (c0 compressed to 32 bits)', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const { descriptor, body } = descriptorFor(randomUUID(), 32);
    expect(descriptor.encoding.c0Bits).toBe(32);
    const { base } = await createTinyTask(t.rest, { rounds: 1, committee: body });
    const id = descriptor.taskId;
    // Hold the first store write until every other upload was checked, added to the round's sum
    // and queued behind it: the refused second uploads must then be taken out of the sum again.
    const engine = t.coordinator.engine as unknown as {
      store: { recordSubmissions: (...args: unknown[]) => Promise<unknown[]> };
      runtimes: Map<string, { pendingRecords: unknown[] }>;
    };
    const original = engine.store.recordSubmissions.bind(engine.store);
    const batches: number[] = [];
    engine.store.recordSubmissions = async (...args) => {
      batches.push((args[1] as unknown[]).length);
      if (batches.length === 1) {
        const until = Date.now() + 20_000;
        while (engine.runtimes.get(id)!.pendingRecords.length < 5 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      }
      return original(...args);
    };
    using devices = await joinDevices(t.coordinator, id, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const firsts = devices.map((_, k) => ({ delta: pattern(TINY_PARAMETERS, k + 2).map((x) => x * 0.3), n: 2 + k }));
    // Within the descriptor's clip bound (1), so that the decrypted average is FedAvg whichever upload counts.
    const seconds = devices.map((_, k) => ({ delta: pattern(TINY_PARAMETERS, k + 5).map((x) => x * 0.1), n: 9 }));
    const uploads = await Promise.all(devices.flatMap((d, k) => [committeePayload(d, 1, firsts[k]!.delta, firsts[k]!.n), committeePayload(d, 1, seconds[k]!.delta, seconds[k]!.n)]));
    // 4 bytes per c0 coefficient instead of 5.5 (framing plus a manifest of under 2,000 bytes).
    expect(c0PayloadBytes(TINY_PARAMETERS, 32) - 12).toBe(((c0PayloadBytes(TINY_PARAMETERS) - 12) * 32) / 44);
    const framing = committeeUploadBytesWithoutManifest(TINY_PARAMETERS, 3, 32);
    for (const u of uploads) expect(u.payload.length - framing).toBeGreaterThan(0);
    for (const u of uploads) expect(u.payload.length - framing).toBeLessThan(2000);
    const results = await Promise.allSettled(devices.flatMap((d, k) => [0, 1].map((j) => submit(d, assignments[k]!, uploads[2 * k + j]!.payload, uploads[2 * k + j]!.weight))));
    expect(batches).toEqual([1, 2]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(3);
    for (const r of results) if (r.status === 'rejected') expect((await grpcStatusOf(Promise.reject(r.reason))).code).toBe(status.ALREADY_EXISTS);
    const rounds = await waitForRounds(t.rest, id, (r) => r.some((x: any) => x.number === 1 && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
    const round = rounds.find((r: any) => r.number === 1);
    expect(round.state, JSON.stringify(round.summary)).toBe('CLOSED');
    expect(round.summary.committee.deviceCount).toBe(3);
    // Which of its two uploads each device had counted (told apart by the weight: 2 + k, or 9).
    const stored = await t.storage.sql<{ name: string; exampleCount: number }>(
      `SELECT c.name, p."exampleCount" FROM "Participation" p JOIN "Client" c ON c.id = p."clientId" WHERE p.status = 'SUBMITTED'`,
    );
    const byName = new Map(stored.map((x) => [x.name, x.exampleCount]));
    const winners = devices.map((d, k) => (byName.get(d.name) === 9 ? seconds[k]! : firsts[k]!));
    const expected = expectedFedAvg(base, winners.map((w) => ({ delta: w.delta, n: w.n })));
    expect(maxAbsDiff(await fetchWeights(t.rest, id, 1), expected)).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 1e-6);
  }, 180_000);

  it('the round end asks the custodians as soon as the last update is recorded, for the folded set, without waiting for the store to list the round\'s updates', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const { descriptor, body } = descriptorFor(randomUUID());
    const { base } = await createTinyTask(t.rest, { rounds: 1, committee: body });
    const id = descriptor.taskId;
    // The store's list of the round's updates answers only once two custodians answered this
    // round (or after 15 s): the custodians must have been asked before it answered.
    const engine = t.coordinator.engine as unknown as { store: { listSubmissions: (roundId: string) => Promise<Array<{ clientId: string }>> } };
    const original = engine.store.listSubmissions.bind(engine.store);
    const answeredBefore = stagedAnswers.reduce((n, rounds) => n + rounds.length, 0);
    const answered = (): number => stagedAnswers.reduce((n, rounds) => n + rounds.length, 0) - answeredBefore;
    const lists: Array<{ answeredFirst: boolean; listed: string[] }> = [];
    engine.store.listSubmissions = async (roundId) => {
      const until = Date.now() + 15_000;
      while (answered() < 2 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      const listed = await original(roundId);
      lists.push({ answeredFirst: answered() >= 2, listed: listed.map((s) => s.clientId).sort() });
      return listed;
    };
    using devices = await joinDevices(t.coordinator, id, 3);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const deltas = devices.map((_, k) => pattern(TINY_PARAMETERS, k + 3).map((x) => x * 0.2));
    const uploads = await Promise.all(devices.map((d, k) => committeePayload(d, 1, deltas[k]!, 3 + k)));
    for (let k = 0; k < 3; k++) await submit(devices[k]!, assignments[k]!, uploads[k]!.payload, uploads[k]!.weight);
    const rounds = await waitForRounds(t.rest, id, (r) => r.some((x: any) => x.number === 1 && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
    const round = rounds.find((r: any) => r.number === 1);
    expect(round.state, JSON.stringify(round)).toBe('CLOSED');
    // One list at the round end, after the custodians answered; it names the three recorded devices.
    expect(lists).toEqual([{ answeredFirst: true, listed: devices.map((d) => d.clientId).sort() }]);
    // The set the custodians decrypted is the recorded one: all three, and the model is their FedAvg.
    expect(round.summary.committee.deviceCount).toBe(3);
    const expected = expectedFedAvg(base, deltas.map((delta, k) => ({ delta, n: uploads[k]!.weight })));
    expect(maxAbsDiff(await fetchWeights(t.rest, id, 1), expected)).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 1e-6);
  }, 180_000);

  it('a committee FedAdam task: each next model is FedAdam (Reddi et al. 2021, Algorithm 2) applied to the plaintext FedAvg; krum is refused at creation', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const refusedKrum = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { committee: descriptorFor(randomUUID()).body, strategy: { name: 'krum' } }),
    });
    expect(refusedKrum.status, JSON.stringify(refusedKrum.body)).toBe(400);
    expect(JSON.stringify(refusedKrum.body)).toMatch(/strategy krum reads individual updates, but a committee task's coordinator only ever decrypts the sum/);
    // A c0 width too narrow for the descriptor's 50 devices (signed by the real authority): refused at creation.
    const narrow = descriptorFor(randomUUID(), 24);
    expect(narrow.descriptor.encoding.c0Bits).toBe(24);
    const refusedWidth = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { committee: narrow.body }) });
    expect(refusedWidth.status, JSON.stringify(refusedWidth.body)).toBe(400);
    expect(JSON.stringify(refusedWidth.body)).toMatch(/rounding sum of up to 26214400 \(c0Bits 24\)/);

    // c0 compressed to 36 bits (two coefficients in 9 bytes): the decrypted FedAvg is still exact.
    const { descriptor, body } = descriptorFor(randomUUID(), 36);
    expect(descriptor.encoding.c0Bits).toBe(36);
    const [eta, beta1, beta2, tau] = [0.05, 0.9, 0.99, 1e-3];
    const { base } = await createTinyTask(t.rest, { rounds: 2, committee: body, strategy: { name: 'fedadam', eta, beta1, beta2, tau } });
    using devices = await joinDevices(t.coordinator, descriptor.taskId, 3);
    // Deltas on the descriptor's grid (multiples of its step): the decrypted average is then the
    // plaintext FedAvg exactly, so the reference below needs no quantisation allowance.
    const step = descriptor.encoding.step;
    const onGrid = (v: Float32Array) => v.map((x) => Math.round(x / step) * step);
    // The reference: Algorithm 2 of Reddi et al. (FedAdam, no bias correction, m_{-1} = 0,
    // v_{-1} = τ²) in float64 on the plaintext FedAvg update of each round.
    const w = Float64Array.from(base);
    const m = new Float64Array(TINY_PARAMETERS);
    const v = new Float64Array(TINY_PARAMETERS).fill(tau * tau);
    for (const round of [1, 2]) {
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      const deltas = devices.map((_, k) => onGrid(pattern(TINY_PARAMETERS, k + 2 + round).map((x) => x * 0.3)));
      const uploads = await Promise.all(devices.map((d, k) => committeePayload(d, round, deltas[k]!, 1 + k)));
      for (let k = 0; k < 3; k++) await submit(devices[k]!, assignments[k]!, uploads[k]!.payload, uploads[k]!.weight);
      const rounds = await waitForRounds(t.rest, descriptor.taskId, (r) => r.some((x: any) => x.number === round && (x.state === 'CLOSED' || x.state === 'FAILED')), 60_000);
      expect(rounds.find((r: any) => r.number === round).state).toBe('CLOSED');
      const fedAvg = expectedFedAvg(new Float32Array(TINY_PARAMETERS), deltas.map((delta, k) => ({ delta, n: uploads[k]!.weight })));
      const fedAvgModel = Float64Array.from(w, (x, i) => x + fedAvg[i]!);
      for (let i = 0; i < TINY_PARAMETERS; i++) {
        m[i] = beta1 * m[i]! + (1 - beta1) * fedAvg[i]!;
        v[i] = beta2 * v[i]! + (1 - beta2) * fedAvg[i]! ** 2;
        w[i] = w[i]! + (eta * m[i]!) / (Math.sqrt(v[i]!) + tau);
      }
      const got = await fetchWeights(t.rest, descriptor.taskId, round);
      expect(maxAbsDiff(got, w), `round ${round}`).toBeLessThanOrEqual(1e-5);
      // FedAdam's step differs from FedAvg's by far more than the tolerance: this is not FedAvg.
      expect(maxAbsDiff(got, fedAvgModel)).toBeGreaterThan(1e-3);
    }
  }, 180_000);

  it('refuses a committee task whose descriptor was changed after signing, and one without a request key', async () => {
    await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile } });
    const { descriptor, body } = descriptorFor(randomUUID());
    const changed = { ...descriptor, minDevices: 1 };
    const response = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { committee: { descriptor: Buffer.from(encodeDescriptor(changed)).toString('base64'), descriptorSignature: body.descriptorSignature } }),
    });
    expect(response.status, JSON.stringify(response.body)).toBe(400);
    expect(JSON.stringify(response.body)).toMatch(/signature/);
    await using plainCoordinator = await startTestCoordinator();
    const refused = await plainCoordinator.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { committee: body }) });
    expect(refused.status).toBe(409); // failed_precondition: this coordinator has no request key
    expect(JSON.stringify(refused.body)).toMatch(/VEIL_COMMITTEE_REQUEST_KEY/);
  }, 120_000);
});
