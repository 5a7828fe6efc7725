/**
 * Device identities (issue 12, items 4 and 6) over real gRPC and REST on loopback with
 * PostgreSQL: Join only for RUNNING tasks, per-task expiring enrolment tokens (stored hashed,
 * use-limited, revocable), a per-task cap on device identities (also under concurrent Joins),
 * revocation of a device credential effective at once (long-poll and upload in flight), and
 * the audit trail of admin actions and failed authentications.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GRPC_CHANNEL_OPTIONS, createFederationServiceClient, type SubmitUpdateRequest } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import { TINY_PARAMETERS, createTinyTask, grpcStatusOf, joinDevice, sha256Hex, startTestCoordinator, type TestCoordinator } from './helpers.js';

/** A clock that runs with real time plus what a test adds (the engine's deadlines keep working). */
function skewedClock() {
  let skew = 0;
  return { now: () => Date.now() + skew, advance: (ms: number) => (skew += ms) };
}

function rawClient(address: string) {
  return createFederationServiceClient(address, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
}

function rawJoin(address: string, taskId: string, enrolmentSecret: string, clientName = '') {
  const client = rawClient(address);
  return new Promise<{ code: grpc.status; details: string; clientId?: string; credential?: string }>((resolve) => {
    client.Join({ taskId, enrolmentSecret, clientName }, { deadline: Date.now() + 20_000 }, (error, response) => {
      client.close();
      if (error) resolve({ code: error.code, details: error.details });
      else resolve({ code: grpc.status.OK, details: '', clientId: response!.clientId, credential: response!.credential });
    });
  });
}

const auth = (credential: string) => {
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  return metadata;
};

describe('enrolment, device cap, revocation, audit trail', () => {
  const clock = skewedClock();
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({ database: 'postgres', clock });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('Join is refused for tasks that are not RUNNING (DRAFT, PAUSED, ended) with FAILED_PRECONDITION; nothing is stored', async () => {
    const { rest, coordinator, storage } = env;
    const address = coordinator.grpcAddress;
    const secret = coordinator.enrolmentSecret!;
    const { id } = await createTinyTask(rest, { start: false });
    const draft = await rawJoin(address, id, secret);
    expect(draft).toMatchObject({ code: grpc.status.FAILED_PRECONDITION, details: expect.stringMatching(/not running \(DRAFT\)/) });
    expect((await rest.request('POST', `/v1/tasks/${id}/start`)).status).toBe(200);
    expect((await rawJoin(address, id, secret)).code).toBe(grpc.status.OK);
    expect((await rest.request('POST', `/v1/tasks/${id}/pause`)).status).toBe(200);
    expect((await rawJoin(address, id, secret)).details).toMatch(/not running \(PAUSED\)/);
    const ended = await createTinyTask(rest, { start: false });
    await storage.sql(`UPDATE "Task" SET status = 'COMPLETED' WHERE id = $1`, [ended.id]);
    expect((await rawJoin(address, ended.id, secret)).details).toMatch(/not running \(COMPLETED\)/);
    const rows = await storage.sql<{ n: string }>('SELECT count(*)::text AS n FROM "Client" WHERE "taskId" = ANY($1::uuid[])', [[id, ended.id]]);
    expect(rows[0]!.n).toBe('1');
  });

  test('per-task enrolment tokens: shown once, stored hashed, valid for their task only, until they expire, are used up or revoked', async () => {
    const { rest, coordinator, storage } = env;
    const address = coordinator.grpcAddress;
    const { id } = await createTinyTask(rest);
    const other = await createTinyTask(rest);
    const created = await rest.request('POST', `/v1/tasks/${id}/enrolment-tokens`, { body: { label: 'fleet A', ttlSeconds: 600, maxUses: 2 } });
    expect(created.status).toBe(201);
    const { token, id: tokenId } = created.body;
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(created.body).toMatchObject({ taskId: id, label: 'fleet A', maxUses: 2, uses: 0, revokedAt: null });
    // Only the SHA-256 is stored; the listing never shows the token.
    const stored = await storage.sql<{ tokenHash: string }>('SELECT "tokenHash" FROM "EnrolmentToken" WHERE id = $1', [tokenId]);
    expect(stored[0]!.tokenHash).toBe(sha256Hex(Buffer.from(token)));
    const listed = await rest.request('GET', `/v1/tasks/${id}/enrolment-tokens`);
    expect(JSON.stringify(listed.body)).not.toContain(token);
    expect(listed.body.tokens).toEqual([expect.objectContaining({ id: tokenId, uses: 0 })]);

    expect((await rawJoin(address, other.id, token)).code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await rawJoin(address, id, token, 'a')).code).toBe(grpc.status.OK);
    expect((await rawJoin(address, id, token, 'b')).code).toBe(grpc.status.OK);
    expect((await rawJoin(address, id, token, 'c')).code).toBe(grpc.status.UNAUTHENTICATED); // used up
    expect((await rest.request('GET', `/v1/tasks/${id}/enrolment-tokens`)).body.tokens[0].uses).toBe(2);

    const expiring = (await rest.request('POST', `/v1/tasks/${id}/enrolment-tokens`, { body: { ttlSeconds: 60 } })).body;
    expect((await rawJoin(address, id, expiring.token)).code).toBe(grpc.status.OK);
    clock.advance(61_000);
    expect((await rawJoin(address, id, expiring.token)).code).toBe(grpc.status.UNAUTHENTICATED);

    const revoked = (await rest.request('POST', `/v1/tasks/${id}/enrolment-tokens`, { body: {} })).body;
    const r = await rest.request('POST', `/v1/tasks/${id}/enrolment-tokens/${revoked.id}/revoke`);
    expect(r.body.revokedAt).not.toBeNull();
    expect((await rawJoin(address, id, revoked.token)).code).toBe(grpc.status.UNAUTHENTICATED);
    // Another task's token id is not found under this task.
    expect((await rest.request('POST', `/v1/tasks/${other.id}/enrolment-tokens/${revoked.id}/revoke`)).status).toBe(404);
    // Bad bodies: 400, nothing created.
    for (const body of [{ ttlSeconds: 10 }, { maxUses: 0 }, { label: 'a\u0000b' }, { extra: 1 }, { ttlSeconds: 1e30 }]) {
      expect((await rest.request('POST', `/v1/tasks/${id}/enrolment-tokens`, { body })).status).toBe(400);
    }
    expect((await rest.request('GET', `/v1/tasks/${id}/enrolment-tokens`)).body.tokens).toHaveLength(3);
  });

  test('the device cap holds, also for concurrent Joins; revoking a device frees its place', async () => {
    const { rest, coordinator } = env;
    const { id } = await createTinyTask(rest, { clientsPerRound: 2, minClients: 1, minAvailableClients: 2, maxDevices: 3 });
    expect((await rest.request('GET', `/v1/tasks/${id}`)).body.settings.maxDevices).toBe(3);
    const joins = await Promise.all(Array.from({ length: 10 }, (_, i) => rawJoin(coordinator.grpcAddress, id, coordinator.enrolmentSecret!, `d${i}`)));
    expect(joins.filter((j) => j.code === grpc.status.OK)).toHaveLength(3);
    expect(joins.filter((j) => j.code === grpc.status.RESOURCE_EXHAUSTED)).toHaveLength(7);
    expect(joins.find((j) => j.code !== grpc.status.OK)!.details).toMatch(/cap of 3 devices/);
    const clients = (await rest.request('GET', `/v1/tasks/${id}/clients`)).body;
    expect(clients.total).toBe(3);
    const victim = joins.find((j) => j.code === grpc.status.OK)!.clientId!;
    expect((await rest.request('POST', `/v1/tasks/${id}/clients/${victim}/revoke`)).status).toBe(200);
    expect((await rawJoin(coordinator.grpcAddress, id, coordinator.enrolmentSecret!)).code).toBe(grpc.status.OK);
    expect((await rawJoin(coordinator.grpcAddress, id, coordinator.enrolmentSecret!)).code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    // Cap below minAvailableClients: refused at creation.
    const bad = await createTinyTask(rest, { maxDevices: 2 }).catch((e: Error) => e);
    expect(String(bad)).toMatch(/maxDevices cannot be below minAvailableClients|400/);
  });

  test('revoking a device credential ends its long-poll and its upload in flight at once, and every later call', async () => {
    const { rest, coordinator } = env;
    const { id } = await createTinyTask(rest, { clientsPerRound: 1, minClients: 1, minAvailableClients: 1 });
    using polling = await joinDevice(coordinator, id, 'polling');
    const assignment = await polling.nextAssignment();
    using waiting = await joinDevice(coordinator, id, 'waiting');

    // A long-poll of 20 s by the device that was not selected.
    const client = rawClient(coordinator.grpcAddress);
    try {
      const started = Date.now();
      const poll = new Promise<grpc.status>((resolve) => {
        client.WaitForAssignment({ waitMs: 20_000 }, auth(waiting.credential), { deadline: Date.now() + 30_000 }, (error) => resolve(error?.code ?? grpc.status.OK));
      });
      // An upload whose header arrived and whose payload has not.
      const payload = Buffer.from(float32ToBytes(new Float32Array(TINY_PARAMETERS).fill(0.01)));
      let uploadCall: grpc.ClientWritableStream<SubmitUpdateRequest> | null = null;
      const upload = new Promise<grpc.status>((resolve) => {
        const call = client.SubmitUpdate(auth(polling.credential), { deadline: Date.now() + 30_000 }, (error) => resolve(error?.code ?? grpc.status.OK));
        uploadCall = call;
        call.on('error', () => {});
        call.write({
          header: {
            roundNumber: assignment.roundNumber,
            modelVersion: assignment.modelVersion,
            exampleCount: 5,
            encoding: 'UPDATE_ENCODING_FLOAT32_LE',
            payloadSizeBytes: payload.byteLength,
            payloadSha256: Buffer.from(sha256Hex(payload), 'hex'),
          },
        });
      });
      await new Promise((r) => setTimeout(r, 500));
      expect((await rest.request('POST', `/v1/tasks/${id}/clients/${waiting.clientId}/revoke`)).status).toBe(200);
      expect((await rest.request('POST', `/v1/tasks/${id}/clients/${polling.clientId}/revoke`)).status).toBe(200);
      expect(await poll).toBe(grpc.status.UNAUTHENTICATED);
      // The device goes on with its upload (it cannot know yet): the rest of a valid update, then the end.
      uploadCall!.write({ chunk: payload });
      uploadCall!.end();
      expect(await upload).toBe(grpc.status.UNAUTHENTICATED);
      expect(Date.now() - started).toBeLessThan(10_000);
      // Later calls with either credential: refused.
      expect((await grpcStatusOf(waiting.transport.getTask(waiting.credential))).code).toBe(grpc.status.UNAUTHENTICATED);
      expect((await grpcStatusOf(polling.download())).code).toBe(grpc.status.UNAUTHENTICATED);
      // The round received nothing from the revoked device.
      const rounds = (await rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds;
      expect(rounds[0].received).toBe(0);
      const listed = (await rest.request('GET', `/v1/tasks/${id}/clients`)).body.clients;
      expect(listed.every((c: { revokedAt: string | null }) => c.revokedAt !== null)).toBe(true);
      // Revoking twice is idempotent; an unknown client is 404.
      expect((await rest.request('POST', `/v1/tasks/${id}/clients/${waiting.clientId}/revoke`)).status).toBe(200);
      expect((await rest.request('POST', `/v1/tasks/${id}/clients/00000000-0000-4000-8000-000000000000/revoke`)).status).toBe(404);
    } finally {
      client.close();
    }
  });

  test('the audit trail records admin actions and failed authentications (who, what, when, source address), paged, admin only', async () => {
    const { rest, coordinator, storage } = env;
    const { id } = await createTinyTask(rest, { start: false });
    await rest.request('POST', `/v1/tasks/${id}/start`);
    expect((await rest.request('GET', '/v1/tasks', { token: 'a-wrong-token-for-the-audit' })).status).toBe(403);
    expect((await rawJoin(coordinator.grpcAddress, id, 'a-wrong-enrolment-secret')).code).toBe(grpc.status.UNAUTHENTICATED);

    const page = await rest.request('GET', '/v1/audit?limit=4');
    expect(page.status).toBe(200);
    const [join, restFailure, start, create] = page.body.events;
    expect(join).toMatchObject({ actor: 'anonymous', action: 'auth.failed', outcome: 'UNAUTHENTICATED', taskId: id, sourceAddress: '127.0.0.1', details: { surface: 'grpc', call: 'Join' } });
    expect(restFailure).toMatchObject({ actor: 'anonymous', action: 'auth.failed', outcome: '403', sourceAddress: '127.0.0.1', details: { surface: 'rest', route: '/v1/tasks', method: 'GET' } });
    expect(start).toMatchObject({ actor: 'admin', action: 'POST /v1/tasks/:id/start', outcome: '200', taskId: id, sourceAddress: '127.0.0.1' });
    expect(create).toMatchObject({ actor: 'admin', action: 'POST /v1/tasks', outcome: '201', taskId: id });
    expect(Date.parse(create.at)).toBeLessThanOrEqual(Date.parse(start.at));
    // Paging: consecutive pages do not overlap and add up to the total.
    const all = (await rest.request('GET', '/v1/audit?limit=1000')).body;
    expect(all.total).toBe(all.events.length);
    const second = (await rest.request('GET', '/v1/audit?offset=2&limit=2')).body.events;
    expect(second.map((e: { id: string }) => e.id)).toEqual(all.events.slice(2, 4).map((e: { id: string }) => e.id));
    const forTask = (await rest.request('GET', `/v1/audit?taskId=${id}`)).body.events;
    expect(forTask.every((e: { taskId: string }) => e.taskId === id)).toBe(true);
    // Revocations and token creations are there too (earlier tests of this file).
    expect(all.events.map((e: { action: string }) => e.action)).toEqual(
      expect.arrayContaining(['POST /v1/tasks/:id/clients/:clientId/revoke', 'POST /v1/tasks/:id/enrolment-tokens', 'POST /v1/tasks/:id/enrolment-tokens/:tokenId/revoke']),
    );
    // Admin token only; bad queries are 400.
    expect((await rest.request('GET', '/v1/audit', { token: coordinator.auditToken })).status).toBe(403);
    expect((await rest.request('GET', '/v1/audit?offset=99999999999999999999')).status).toBe(400);
    expect((await rest.request('GET', '/v1/audit?taskId=nope')).status).toBe(400);
    // No secret in the audit table.
    const dump = JSON.stringify(await storage.sql('SELECT * FROM "AuditEvent"'));
    for (const secret of [coordinator.adminToken, coordinator.enrolmentSecret!, 'a-wrong-token-for-the-audit', 'a-wrong-enrolment-secret']) {
      expect(dump).not.toContain(secret);
    }
  });
});
