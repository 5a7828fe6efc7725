/**
 * The privacy budget through the real coordinator: Poisson-selected rounds,
 * a hash-chained ledger written with each selection, refusal to open a round
 * past the cap, and the read-only audit API that verifies the ledger.
 */
import * as grpc from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import { computeEpsilon } from '@veil/privacy';
import { TINY_PARAMETERS, createTinyTask, grpcStatusOf, joinDevices, pattern, startTestCoordinator, tinyTaskBody, waitForRounds } from './helpers.js';

const delta = 1e-5;
const z = 2;
// With q = 1 every available device takes part; choose the cap so exactly two rounds fit.
const eps = (rounds: number) => computeEpsilon({ samplingRate: 1, noiseMultiplier: z, rounds, delta }).epsilon;
const cap = (eps(2) + eps(3)) / 2;

describe('privacy budget and audit (PostgreSQL)', () => {
  it('spends per round into a verified ledger, ends the task at the cap, and serves the audit API', async () => {
    expect(eps(2)).toBeLessThan(cap);
    expect(eps(3)).toBeGreaterThan(cap);
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(t.rest, {
      rounds: 5,
      minClients: 3,
      minAvailableClients: 3,
      privacy: { mode: 'local', epsilonCap: cap, delta, noiseMultiplier: z, clipNorm: 1, samplingRate: 1 },
    });
    using devices = await joinDevices(t.coordinator, id, 3);
    expect(devices[0]!.task.privacy).toMatchObject({ mode: 'local', clipNorm: 1, noiseMultiplier: z, samplingRate: 1, epsilonCap: cap, delta });

    for (let round = 1; round <= 2; round++) {
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      expect(assignments.map((a) => a.maxExampleCount)).toEqual([1, 1, 1]);
      if (round === 1) {
        // DP-FedAvg weighs every update 1: a larger weight is refused.
        expect((await grpcStatusOf(devices[0]!.submit(assignments[0]!, pattern(TINY_PARAMETERS, 9), 5))).code).toBe(grpc.status.INVALID_ARGUMENT);
      }
      await Promise.all(devices.map((d, k) => d.submit(assignments[k]!, pattern(TINY_PARAMETERS, k + round).map((x) => x * 0.1), 1)));
      await waitForRounds(t.rest, id, (rounds) => rounds.filter((r) => r.state === 'CLOSED').length === round);
    }
    const task = await waitFor(async () => {
      const r = await t.rest.request('GET', `/v1/tasks/${id}`);
      return r.body.status === 'BUDGET_EXHAUSTED' ? r.body : undefined;
    });
    expect(task.statusReason).toMatch(/privacy budget/);
    const rounds = await waitForRounds(t.rest, id, () => true);
    expect(rounds.map((r) => r.state)).toEqual(['CLOSED', 'CLOSED']);

    // Audit API: audit token reads the privacy routes only.
    const audit = { token: t.coordinator.auditToken };
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy`, { token: null })).status).toBe(401);
    expect((await t.rest.request('GET', `/v1/tasks/${id}`, audit)).status).toBe(403);
    expect((await t.rest.request('POST', `/v1/tasks/${id}/start`, audit)).status).toBe(403);

    const summary = (await t.rest.request('GET', `/v1/tasks/${id}/privacy`, audit)).body;
    expect(summary).toMatchObject({ status: 'BUDGET_EXHAUSTED', mode: 'local', epsilonCap: cap, delta });
    expect(summary.spent).toBeCloseTo(eps(2), 10);
    expect(summary.spent).toBeLessThanOrEqual(cap);
    expect(summary.remaining).toBeCloseTo(cap - eps(2), 10);
    expect(summary.rounds.map((r: { epsilon: number }) => r.epsilon)).toEqual([expect.closeTo(eps(1), 10), expect.closeTo(eps(2), 10)]);
    expect(summary.clients).toHaveLength(3);
    for (const c of summary.clients) {
      expect(c.participations).toBe(2);
      expect(c.epsilon).toBeCloseTo(eps(2), 10); // q = 1: per-client equals the task-level composition
    }

    const ledger = (await t.rest.request('GET', `/v1/tasks/${id}/privacy/ledger?limit=1&offset=1`, audit)).body;
    expect(ledger.total).toBe(2);
    expect(ledger.entries).toHaveLength(1);
    expect(ledger.entries[0]).toMatchObject({ sequence: 2, roundNumber: 2, participants: 3, mechanism: 'gaussian-local', samplingRate: 1, noiseMultiplier: z });
    const first = (await t.rest.request('GET', `/v1/tasks/${id}/privacy/ledger`, audit)).body.entries[0];
    expect(ledger.entries[0].prevHash).toBe(first.hash);

    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toEqual({ ok: true, entries: 2, withinCap: true, firstMismatch: null, headHash: ledger.entries[0].hash });

    // What the dashboard reads: the projection (exact: two rounds fit the cap, the third is refused),
    // cumulative figures named as such, device names, a checkpoint of the head, the task list for the auditor.
    expect(summary.epsilonSpent).toBe(summary.spent);
    expect(summary.projection).toEqual({ nextRoundEpsilon: expect.closeTo(eps(3) - eps(2), 9), lastAffordableRound: 2, exhaustedAtRound: 3 });
    expect(summary.rounds.map((r: { epsilonCumulative: number }) => r.epsilonCumulative)).toEqual([expect.closeTo(eps(1), 10), expect.closeTo(eps(2), 10)]);
    expect(summary.rounds.every((r: { order: number }) => r.order > 1)).toBe(true);
    expect(summary.clients.map((c: { name: string }) => c.name).sort()).toEqual(['device-1', 'device-2', 'device-3']);
    expect(summary.warnings).toEqual([]);
    const checkpoint = await t.rest.request('GET', `/v1/tasks/${id}/privacy/checkpoint`, audit);
    expect(checkpoint.body).toMatchObject({ taskId: id, sequence: 2, roundNumber: 2, headHash: ledger.entries[0].hash, signed: false });
    expect(checkpoint.body.epsilonCumulative).toBeCloseTo(eps(2), 10);
    const listed = await t.rest.request('GET', '/v1/tasks', audit);
    expect(listed.status).toBe(200);
    expect(listed.body.tasks.find((x: { id: string }) => x.id === id)).toMatchObject({
      status: 'BUDGET_EXHAUSTED',
      progress: { currentRound: 2, devices: 3, epsilonSpent: expect.closeTo(eps(2), 10) },
    });
    expect((await t.rest.request('GET', `/v1/session`, audit)).body).toEqual({ role: 'audit' });
    expect((await t.rest.request('GET', `/v1/session`)).body).toEqual({ role: 'admin' });
    for (const [method, path] of [
      ['GET', `/v1/tasks/${id}/rounds`],
      ['GET', `/v1/tasks/${id}/devices`],
      ['GET', `/v1/tasks/${id}/model`],
      ['POST', `/v1/tasks/${id}/pause`],
      ['POST', '/v1/tasks'],
    ] as const) {
      const body = method === 'POST' && path === '/v1/tasks' ? tinyTaskBody(pattern(TINY_PARAMETERS, 1)) : undefined;
      expect({ path, status: (await t.rest.request(method, path, { ...audit, body })).status }).toEqual({ path, status: 403 });
    }
    const roundsSeen = (await t.rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds;
    expect(roundsSeen.map((r: { participation: unknown }) => r.participation)).toEqual([
      // These devices (the test's raw transport) report no trained-examples count.
      { selected: 3, submitted: 3, dropped: 0, trainedExamples: null },
      { selected: 3, submitted: 3, dropped: 0, trainedExamples: null },
    ]);
    const seenDevices = (await t.rest.request('GET', `/v1/tasks/${id}/devices`)).body.devices;
    expect(seenDevices.map((d: { name: string; roundsSelected: number; roundsSubmitted: number; credential: string }) => [d.name, d.roundsSelected, d.roundsSubmitted, d.credential]).sort()).toEqual([
      ['device-1', 2, 2, 'active'],
      ['device-2', 2, 2, 'active'],
      ['device-3', 2, 2, 'active'],
    ]);

    // Tampering in the database is detected and the first altered entry named.
    await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET "noiseMultiplier" = 4 WHERE "taskId" = $1 AND sequence = 2`, [id]);
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toMatchObject({ ok: false, firstMismatch: { sequence: 2 } });
    await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET "noiseMultiplier" = $2 WHERE "taskId" = $1 AND sequence = 2`, [id, z]);
    await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET "participantIds" = '[]'::jsonb, participants = 0 WHERE "taskId" = $1 AND sequence = 1`, [id]);
    expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toMatchObject({ ok: false, firstMismatch: { sequence: 1 } });

    const docs = (await t.rest.request('GET', '/docs/json', { token: null })).body;
    for (const path of ['/v1/tasks/{id}/privacy', '/v1/tasks/{id}/privacy/ledger', '/v1/tasks/{id}/privacy/verify']) expect(docs.paths[path]).toBeDefined();
  });

  it('refuses privacy settings a task cannot honour', async () => {
    await using t = await startTestCoordinator();
    const dp = { mode: 'local', epsilonCap: 8, delta, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5 };
    const bad = async (privacy: Record<string, unknown>, extra: Record<string, unknown> = {}) =>
      (await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { privacy, ...extra }) })).body.message as string;
    expect(await bad({ ...dp, delta: 2 })).toMatch(/delta/);
    expect(await bad({ ...dp, mode: 'distributed' })).toMatch(/needs encrypted aggregation/);
    expect(await bad({ ...dp, scale: 64 })).toMatch(/distributed mode only/);
    expect(await bad(dp, { clientsPerRound: undefined, clientFraction: 0.5 })).toMatch(/Poisson/);
    // A cap above 10 is accepted with a warning, in the creation response and in the task list; 10 itself is not flagged.
    const loose = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { privacy: { ...dp, epsilonCap: 30 } }) });
    expect(loose.status).toBe(201);
    expect(loose.body.warnings).toEqual([expect.stringMatching(/epsilonCap 30 is above 10/)]);
    const usual = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { privacy: { ...dp, epsilonCap: 10 } }) });
    expect(usual.body.warnings).toEqual([]);
    const list = (await t.rest.request('GET', '/v1/tasks')).body.tasks;
    expect(list.find((x: { id: string }) => x.id === loose.body.id).warnings).toHaveLength(1);
    expect((await t.rest.request('GET', `/v1/tasks/${loose.body.id}/privacy`)).body.warnings).toHaveLength(1);
  });
});

async function waitFor<T>(check: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const value = await check();
    if (value !== undefined) return value;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('timed out');
}
