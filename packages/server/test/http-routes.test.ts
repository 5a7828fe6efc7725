/**
 * The REST plugins through Fastify's inject(), on a real PostgreSQL store with
 * 1,000 rounds of history seeded through the store: the rounds route reads a
 * page in one store call (one SQL statement) and returns what was recorded;
 * the privacy routes summarise, verify and checkpoint a 1,000-entry ledger;
 * the audit token lists tasks and reads the privacy routes, nothing else.
 */
import { join } from 'node:path';
import { brotliDecompressSync, gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { computeEpsilon } from '@veil/privacy';
import { createBlobStore } from '../src/blobs/blob-store.js';
import { buildHttpApp } from '../src/http/app.js';
import { createLogger } from '../src/logger.js';
import { RoundEngine } from '../src/rounds/engine.js';
import { createDeviceAuth } from '../src/grpc/device-auth.js';
import { createSecurityStore } from '../src/persistence/security-store.js';
import { createAuditTrail } from '../src/security/audit-trail.js';
import { createAuthThrottle } from '../src/security/auth-throttle.js';
import type { FederationStore } from '../src/rounds/ports.js';
import { createTestStorage, type TestStorage } from './helpers.js';
import { openStore, seedHistory, type SeededRound } from './seed-history.js';

const ADMIN = 'a'.repeat(32);
const AUDIT = 'b'.repeat(32);
const dp = { epsilonCap: 30, noiseMultiplier: 8, delta: 1e-5 };

describe('REST plugins (inject, PostgreSQL, 1,000 seeded rounds)', () => {
  let storage: TestStorage;
  let opened: Awaited<ReturnType<typeof openStore>>;
  let app: FastifyInstance;
  let engine: RoundEngine;
  const calls = new Map<string, number>();
  let seeded: Awaited<ReturnType<typeof seedHistory>>;

  beforeAll(async () => {
    storage = await createTestStorage('postgres');
    opened = await openStore(storage.databaseUrl!, storage.dataDir);
    await opened.db.migrate();
    seeded = await seedHistory({ store: opened.store, prisma: opened.db.prisma }, { rounds: 1000, devices: 4, dp });
    // Count store calls: the history must come from one.
    const counting = new Proxy(opened.store, {
      get(target, key: string) {
        const value = target[key as keyof FederationStore];
        if (typeof value !== 'function') return value;
        return (...args: unknown[]) => {
          calls.set(key, (calls.get(key) ?? 0) + 1);
          return (value as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const logger = createLogger({ level: 'silent' });
    const blobs = createBlobStore({ dir: join(storage.dataDir, 'blobs') });
    engine = new RoundEngine({ store: counting, blobs, logger });
    await engine.start();
    const security = createSecurityStore(opened.db.prisma);
    const throttle = createAuthThrottle();
    app = await buildHttpApp({
      engine,
      store: counting,
      blobs,
      logger,
      adminToken: ADMIN,
      auditToken: AUDIT,
      authThrottle: throttle,
      security,
      auditTrail: createAuditTrail({ store: security, logger }),
      deviceAuth: createDeviceAuth({ store: opened.store, security, logger, throttle, enrolmentSecret: null, getTask: (id) => engine.getTask(id) }),
    });
  });
  afterAll(async () => {
    await app?.close();
    await engine?.close();
    await opened?.[Symbol.asyncDispose]();
    await storage?.[Symbol.asyncDispose]();
  });

  const get = async (url: string, token = ADMIN) => {
    const r = await app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}` } });
    return { status: r.statusCode, body: r.headers['content-type']?.toString().startsWith('application/json') ? r.json() : r.body, headers: r.headers };
  };

  it('serves 1,000 rounds from one store call, with the recorded participation, summaries and evaluations', async () => {
    calls.clear();
    const { status, body } = await get(`/v1/tasks/${seeded.taskId}/rounds?limit=1000`);
    expect(status).toBe(200);
    expect([...calls.entries()].filter(([k]) => k !== 'getTask')).toEqual([['listRoundHistory', 1]]);
    const rounds = body.rounds as Array<Record<string, any>>;
    expect(rounds).toHaveLength(1000);
    const got: SeededRound[] = rounds.map((r) => ({
      number: r['number'],
      participants: r['summary'].participants,
      dropped: r['participation'].dropped,
      uploadBytes: r['summary'].uploadBytes,
      // Weighted means of equal reports: equal up to float rounding (1e-9 is far below the seeded 1e-6 steps).
      accuracy: Number(r['evaluation'].metrics.accuracy.toFixed(9)),
      loss: Number(r['evaluation'].metrics.loss.toFixed(9)),
    }));
    expect(got).toEqual(seeded.rounds);
    expect(rounds[9]).toMatchObject({ state: 'CLOSED', baseModelVersion: 9, participation: { selected: 4, submitted: 3, dropped: 1 }, evaluation: { modelVersion: 9, clients: 3, examples: 300 } });
    expect(rounds[9]!['events'].map((e: { to: string }) => e.to)).toEqual(['SELECTING', 'COLLECTING', 'AGGREGATING', 'CLOSED']);
    const page = await get(`/v1/tasks/${seeded.taskId}/rounds?offset=998&limit=5`);
    expect(page.body.rounds.map((r: { number: number }) => r.number)).toEqual([999, 1000]);
    // Without the transitions (the dashboard's plots): the same rounds otherwise.
    const slim = (await get(`/v1/tasks/${seeded.taskId}/rounds?limit=1000&events=false`)).body.rounds as Array<Record<string, unknown>>;
    expect(slim.every((r) => Array.isArray(r['events']) && (r['events'] as unknown[]).length === 0)).toBe(true);
    expect(slim.map(({ events: _e, ...rest }) => rest)).toEqual(rounds.map(({ events: _e, ...rest }) => rest));
  });

  it('summarises, verifies and checkpoints a 1,000-entry ledger', async () => {
    const summary = (await get(`/v1/tasks/${seeded.taskId}/privacy`, AUDIT)).body;
    const eps1000 = computeEpsilon({ samplingRate: 1, noiseMultiplier: dp.noiseMultiplier, rounds: 1000, delta: dp.delta }).epsilon;
    expect(summary.epsilonSpent).toBeCloseTo(eps1000, 8);
    expect(summary.rounds).toHaveLength(1000);
    expect(summary.clients.map((c: { name: string }) => c.name).sort()).toEqual(seeded.deviceNames);
    expect(summary.warnings).toEqual([expect.stringContaining('epsilonCap 30 is above 10')]);
    const verify = (await get(`/v1/tasks/${seeded.taskId}/privacy/verify`, AUDIT)).body;
    expect(verify).toEqual({ ok: true, entries: 1000, withinCap: true, firstMismatch: null, headHash: seeded.ledger.at(-1)!.hash });
    const checkpoint = await get(`/v1/tasks/${seeded.taskId}/privacy/checkpoint`, AUDIT);
    expect(checkpoint.headers['content-disposition']).toBe(`attachment; filename="veil-ledger-${seeded.taskId}-1000.json"`);
    expect(checkpoint.body).toMatchObject({ sequence: 1000, headHash: seeded.ledger.at(-1)!.hash });
  });

  it('gives the audit token the task list and the privacy routes only', async () => {
    const list = await get('/v1/tasks', AUDIT);
    expect(list.status).toBe(200);
    expect(list.body.tasks).toEqual([expect.objectContaining({ id: seeded.taskId, status: 'COMPLETED', progress: { currentRound: 1000, currentRoundState: 'CLOSED', devices: 4, epsilonSpent: seeded.ledger.at(-1)!.epsilon } })]);
    for (const path of ['', '/rounds', '/devices', '/model', '/model/weights.bin']) {
      const r = await get(`/v1/tasks/${seeded.taskId}${path}`, AUDIT);
      expect({ path, status: r.status, code: r.body.code }).toEqual({ path, status: 403, code: 'permission_denied' });
    }
    const devices = (await get(`/v1/tasks/${seeded.taskId}/devices`)).body.devices;
    expect(devices.map((d: { name: string; roundsSelected: number; roundsSubmitted: number; roundsDropped: number }) => [d.name, d.roundsSelected, d.roundsSubmitted, d.roundsDropped])).toEqual([
      // Device 1 is the one that drops out of every fifth round.
      ['phone-01', 1000, 800, 200],
      ['phone-02', 1000, 1000, 0],
      ['phone-03', 1000, 1000, 0],
      ['phone-04', 1000, 1000, 0],
    ]);
    expect(devices.map((d: { credential: string }) => d.credential)).toEqual(['active', 'active', 'active', 'active']);
    // Revoking a device's credential shows in its state.
    const revoked = await app.inject({ method: 'POST', url: `/v1/tasks/${seeded.taskId}/clients/${devices[3].id}/revoke`, headers: { authorization: `Bearer ${ADMIN}` } });
    expect(revoked.statusCode).toBe(200);
    const after = (await get(`/v1/tasks/${seeded.taskId}/devices`)).body.devices;
    expect(after.map((d: { credential: string }) => d.credential)).toEqual(['active', 'active', 'active', 'revoked']);
    expect(Date.parse(after[3].revokedAt)).not.toBeNaN();
  });

  it('serves the built dashboard precompressed, with cache and security headers, and nothing outside it', async () => {
    const index = await app.inject({ method: 'GET', url: '/dashboard/', headers: { 'accept-encoding': 'gzip, deflate, br' } });
    expect(index.statusCode).toBe(200);
    expect(index.headers).toMatchObject({ 'content-encoding': 'br', 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache', vary: 'accept-encoding' });
    expect(index.headers['content-security-policy']).toContain("script-src 'self'");
    const html = brotliDecompressSync(index.rawPayload).toString('utf8');
    const script = /src="([^"]+\.js)"/.exec(html)![1]!;
    const style = /href="([^"]+\.css)"/.exec(html)![1]!;
    const js = await app.inject({ method: 'GET', url: `/dashboard/${script}`, headers: { 'accept-encoding': 'gzip' } });
    expect(js.headers).toMatchObject({ 'content-encoding': 'gzip', 'content-type': 'text/javascript; charset=utf-8', 'cache-control': 'public, max-age=31536000, immutable' });
    const plain = await app.inject({ method: 'GET', url: `/dashboard/${style}` });
    expect(plain.headers['content-encoding']).toBeUndefined();
    expect(gunzipSync(js.rawPayload).toString('utf8').length).toBeGreaterThan(10_000);
    expect(plain.body).toContain('.u-legend'); // uPlot's stylesheet is bundled, not fetched from a CDN
    expect(html).not.toMatch(/https?:\/\//);
    expect((await app.inject({ method: 'GET', url: '/dashboard' })).headers.location).toBe('/dashboard/');
    for (const url of ['/dashboard/nothing.js', '/dashboard/..%2Fpackage.json', '/dashboard/manifest.json', `/dashboard/${script}.gz`]) {
      expect({ url, status: (await app.inject({ method: 'GET', url })).statusCode }).toEqual({ url, status: 404 });
    }
  });
});
