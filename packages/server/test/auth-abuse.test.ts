/**
 * Abuse resistance of authentication (issue 12, item 4) over real HTTP and gRPC on loopback:
 * tokens are checked before a body is read, bodies are small unless an admin creates a task,
 * failed authentication locks out the peer address and the credential with exponential backoff
 * (429 / RESOURCE_EXHAUSTED with Retry-After), and failures are logged with the peer address.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { GRPC_CHANNEL_OPTIONS, createFederationServiceClient } from '@veil/protocol';
import { captureLogger, createTinyTask, joinDevice, secretOf, startTestCoordinator, type TestCoordinator } from './helpers.js';

function fakeClock() {
  let t = Date.UTC(2026, 11, 6);
  return { now: () => t, advance: (ms: number) => (t += ms) };
}

/** A raw Join, to read the status and the trailing metadata the SDK hides. */
function rawJoin(address: string, request: { taskId: string; enrolmentSecret: string; clientName?: string }) {
  const client = createFederationServiceClient(address, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  return new Promise<{ code: grpc.status; details: string; retryAfter: string | undefined; clientId?: string }>((resolve) => {
    client.Join({ clientName: '', ...request }, { deadline: Date.now() + 20_000 }, (error, response) => {
      client.close();
      if (error) resolve({ code: error.code, details: error.details, retryAfter: error.metadata?.get('retry-after')[0]?.toString() });
      else resolve({ code: grpc.status.OK, details: '', retryAfter: undefined, clientId: response!.clientId });
    });
  });
}

describe('authentication before parsing, lockout with backoff', () => {
  const clock = fakeClock();
  const logs = captureLogger('info');
  let env: TestCoordinator;
  beforeAll(async () => {
    env = await startTestCoordinator({
      database: 'postgres',
      logger: logs.logger,
      authThrottle: { freeFailures: 3, baseLockoutMs: 10_000, maxLockoutMs: 60_000, now: clock.now },
    });
  });
  afterAll(async () => {
    await env?.[Symbol.asyncDispose]();
  });

  test('the token is checked before the body: anonymous and audit callers get 401/403 for bodies that would not even parse', async () => {
    const url = `${env.rest.baseUrl}/v1/tasks`;
    // 8 MiB of malformed JSON: parsed first, it would be a 400; refused unread, it is a 401.
    const junk = Buffer.alloc(8 * 2 ** 20, '{');
    const anonymous = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: junk });
    expect(anonymous.status).toBe(401);
    const auditor = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${env.coordinator.auditToken}` },
      body: junk,
    });
    expect(auditor.status).toBe(403);
    // The admin's malformed body is read and refused as such.
    const admin = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${env.coordinator.adminToken}` },
      body: '{',
    });
    expect(admin.status).toBe(400);
    // Unknown routes under /v1 need the token too (no route discovery, no body read).
    expect((await fetch(`${env.rest.baseUrl}/v1/nothing-here`, { method: 'POST', body: junk })).status).toBe(401);
  });

  test('only task creation takes a large body: 64 KiB elsewhere, even for the admin', async () => {
    const { id } = await createTinyTask(env.rest, { start: false });
    const big = JSON.stringify({ pad: 'x'.repeat(70 * 1024) });
    const response = await fetch(`${env.rest.baseUrl}/v1/tasks/${id}/start`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${env.coordinator.adminToken}` },
      body: big,
    });
    expect(response.status).toBe(413);
    expect((await env.rest.request('GET', `/v1/tasks/${id}`)).body.status).toBe('DRAFT');
    // The health probe is public but has the small limit too.
    expect((await fetch(`${env.rest.baseUrl}/v1/health`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: big })).status).toBeGreaterThanOrEqual(400);
  });

  test('wrong REST tokens lock the address out with growing Retry-After; the right token is refused during the lockout', async () => {
    const guess = (token: string) => env.rest.request('GET', '/v1/tasks', { token });
    for (let i = 0; i < 3; i++) expect((await guess(`wrong-token-${i}-xxxxxxxxxxxx`)).status).toBe(403);
    // The 4th failure starts a 10 s lockout.
    expect((await guess('wrong-token-3-xxxxxxxxxxxx')).status).toBe(403);
    const locked = await fetch(`${env.rest.baseUrl}/v1/tasks`, { headers: { authorization: `Bearer ${env.coordinator.adminToken}` } });
    expect(locked.status).toBe(429);
    expect(locked.headers.get('retry-after')).toBe('10');
    expect(await locked.json()).toEqual({ code: 'rate_limited', message: expect.stringMatching(/too many failed/) });
    clock.advance(10_000);
    // Next wrong guess: 20 s.
    expect((await guess('wrong-token-4-xxxxxxxxxxxx')).status).toBe(403);
    const again = await fetch(`${env.rest.baseUrl}/v1/tasks`, { headers: { authorization: `Bearer ${env.coordinator.adminToken}` } });
    expect([again.status, again.headers.get('retry-after')]).toEqual([429, '20']);
    clock.advance(20_000);
    expect((await env.rest.request('GET', '/v1/tasks')).status).toBe(200);
    // Public routes are never locked.
    expect((await env.rest.request('GET', '/v1/health', { token: null })).status).toBe(200);
    // Failures are logged with the peer address and the route, never the token.
    const failures = logs
      .text()
      .split('\n')
      .filter((l) => l.includes('authentication failed') && l.includes('"method":"GET"'));
    expect(failures.length).toBeGreaterThanOrEqual(5);
    expect(JSON.parse(failures[0]!)).toMatchObject({ sourceAddress: '127.0.0.1', reason: 'invalid', route: '/v1/tasks' });
    expect(logs.text()).not.toContain('wrong-token-');
    expect(logs.text()).not.toContain(env.coordinator.adminToken);
    clock.advance(120_000);
  });

  test('wrong enrolment secrets lock Join out (RESOURCE_EXHAUSTED, retry-after), the right one included, until the lockout ends', async () => {
    clock.advance(3_600_000); // the REST test's failures are forgotten (separate keys anyway)
    const { id } = await createTinyTask(env.rest, { start: true });
    const address = env.coordinator.grpcAddress;
    for (let i = 0; i < 4; i++) {
      const r = await rawJoin(address, { taskId: id, enrolmentSecret: `not-the-secret-${i}` });
      expect(r.code).toBe(grpc.status.UNAUTHENTICATED);
    }
    const locked = await rawJoin(address, { taskId: id, enrolmentSecret: secretOf(env.coordinator) });
    expect(locked).toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED, retryAfter: '10' });
    clock.advance(10_000);
    const joined = await rawJoin(address, { taskId: id, enrolmentSecret: secretOf(env.coordinator) });
    expect(joined.code).toBe(grpc.status.OK);
    const line = logs
      .text()
      .split('\n')
      .find((l) => l.includes('authentication failed') && l.includes('"call":"Join"'));
    expect(JSON.parse(line!)).toMatchObject({ sourceAddress: '127.0.0.1', reason: 'invalid', taskId: id });
    expect(logs.text()).not.toContain('not-the-secret-');
  });

  test('unknown device credentials lock out the address for every device call', async () => {
    clock.advance(3_600_000);
    const { id } = await createTinyTask(env.rest, { start: true });
    using device = await joinDevice(env.coordinator, id, 'honest');
    const client = createFederationServiceClient(env.coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
    const getTask = (credential: string) =>
      new Promise<{ code: grpc.status; retryAfter: string | undefined }>((resolve) => {
        const metadata = new grpc.Metadata();
        metadata.set('authorization', `Bearer ${credential}`);
        client.GetTask({}, metadata, { deadline: Date.now() + 20_000 }, (error) =>
          resolve({ code: error?.code ?? grpc.status.OK, retryAfter: error?.metadata?.get('retry-after')[0]?.toString() }),
        );
      });
    try {
      for (let i = 0; i < 4; i++) expect((await getTask(`forged-credential-${i}-abcdefgh`)).code).toBe(grpc.status.UNAUTHENTICATED);
      // Same loopback address: even the honest device's credential waits out the lockout.
      expect(await getTask(device.credential)).toEqual({ code: grpc.status.RESOURCE_EXHAUSTED, retryAfter: '10' });
      clock.advance(10_000);
      expect((await getTask(device.credential)).code).toBe(grpc.status.OK);
    } finally {
      client.close();
    }
    const line = logs
      .text()
      .split('\n')
      .find((l) => l.includes('authentication failed') && l.includes('"call":"GetTask"'));
    expect(JSON.parse(line!)).toMatchObject({ sourceAddress: '127.0.0.1', reason: 'invalid' });
  });

  test('over Connect (the HTTP port): the same lockout as gRPC (shared keys), failures logged with the peer address and audited as connect', async () => {
    clock.advance(3_600_000);
    const { id } = await createTinyTask(env.rest, { start: true });
    using device = await joinDevice(env.coordinator, id, 'honest-connect');
    const call = async (method: string, body: unknown, credential?: string) => {
      const r = await fetch(`${env.coordinator.httpUrl}/veil.v1.FederationService/${method}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(credential !== undefined && { authorization: `Bearer ${credential}` }) },
        body: JSON.stringify(body),
      });
      return { status: r.status, code: r.headers.get('veil-error-code'), retryAfter: r.headers.get('retry-after'), body: (await r.json()) as Record<string, unknown> };
    };
    for (let i = 0; i < 4; i++) expect((await call('GetTask', {}, `forged-connect-${i}-abcdefghij`)).status).toBe(401);
    // Locked out: the honest credential from the same address too, on both ports.
    const locked = await call('GetTask', {}, device.credential);
    expect([locked.status, locked.code, locked.retryAfter, locked.body['code']]).toEqual([429, 'rate_limited', '10', 'resource_exhausted']);
    const client = createFederationServiceClient(env.coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
    try {
      const metadata = new grpc.Metadata();
      metadata.set('authorization', `Bearer ${device.credential}`);
      const code = await new Promise<grpc.status>((resolve) => client.GetTask({}, metadata, { deadline: Date.now() + 20_000 }, (error) => resolve(error?.code ?? grpc.status.OK)));
      expect(grpc.status[code]).toBe('RESOURCE_EXHAUSTED');
    } finally {
      client.close();
    }
    clock.advance(10_000);
    expect((await call('GetTask', {}, device.credential)).status).toBe(200);
    // A wrong enrolment secret over Connect: refused, logged and audited with the task it named.
    clock.advance(3_600_000);
    const join = await call('Join', { taskId: id, enrolmentSecret: 'not-the-connect-secret', clientName: 'x' });
    expect([join.status, join.code]).toEqual([401, 'unauthenticated']);

    const lines = logs
      .text()
      .split('\n')
      .filter((l) => l.includes('authentication failed') && l.includes('"surface":"connect"'));
    expect(JSON.parse(lines.find((l) => l.includes('"call":"GetTask"'))!)).toMatchObject({ sourceAddress: '127.0.0.1', reason: 'invalid', surface: 'connect' });
    expect(JSON.parse(lines.find((l) => l.includes('"call":"Join"'))!)).toMatchObject({ sourceAddress: '127.0.0.1', reason: 'invalid', taskId: id });
    expect(logs.text()).not.toContain('forged-connect-');
    expect(logs.text()).not.toContain('not-the-connect-secret');
    const audit = await env.rest.request('GET', '/v1/audit?limit=20');
    expect(audit.status).toBe(200);
    const failures = (audit.body.events as Array<{ action: string; details: { surface?: string; call?: string } }>).filter((e) => e.action === 'auth.failed' && e.details.surface === 'connect');
    expect(failures.find((e) => e.details.call === 'Join')).toMatchObject({ actor: 'anonymous', outcome: 'UNAUTHENTICATED', taskId: id, sourceAddress: '127.0.0.1' });
    expect(failures.filter((e) => e.details.call === 'GetTask')).toHaveLength(4);
  });
});
