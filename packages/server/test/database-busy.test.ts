/**
 * A busy database is the coordinator's transient condition, not a bug: with a
 * pool of one connection (connection_limit=1) waiting at most 1 s for it
 * (pool_timeout=1), while that connection is held, a Join gets UNAVAILABLE and
 * a REST call 503, both with retry-after, logged at warn; nothing is persisted,
 * and once the connection is free the same calls succeed.
 */
import * as grpc from '@grpc/grpc-js';
import pg from 'pg';
import { describe, expect, test } from 'vitest';
import { GRPC_CHANNEL_OPTIONS, createFederationServiceClient } from '@veil/protocol';
import { captureLogger, createTestStorage, createTinyTask, startTestCoordinator } from './helpers.js';
import { isDatabaseBusy } from '../src/persistence/busy.js';
import { poolSettings } from '../src/persistence/database.js';
import { createGrpcTransport } from '../../client-sdk/src/transport/grpc-transport.js';
import { createConnectTransport } from '../../client-sdk/src/transport/connect-transport.js';
import { ClientError } from '../../client-sdk/src/errors.js';

function rawJoin(address: string, request: { taskId: string; enrolmentSecret: string; clientName: string }) {
  const client = createFederationServiceClient(address, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  return new Promise<{ code: grpc.status; details: string; retryAfter: string | undefined; errorCode: string | undefined }>((resolve) => {
    client.Join(request, { deadline: Date.now() + 20_000 }, (error) => {
      client.close();
      if (error)
        resolve({
          code: error.code,
          details: error.details,
          retryAfter: error.metadata?.get('retry-after')[0]?.toString(),
          errorCode: error.metadata?.get('veil-error-code')[0]?.toString(),
        });
      else resolve({ code: grpc.status.OK, details: '', retryAfter: undefined, errorCode: undefined });
    });
  });
}

describe('database busy', () => {
  test('pool exhausted: Join UNAVAILABLE and REST 503 with retry-after, nothing persisted, success after release', async () => {
    await using storage = await createTestStorage('postgres');
    const capture = captureLogger('warn');
    await using t = await startTestCoordinator({
      storage,
      logger: capture.logger,
      config: { databaseUrl: `${storage.databaseUrl!}?connection_limit=1&pool_timeout=1` },
    });
    const task = await createTinyTask(t.rest);
    const join = (name: string) => rawJoin(t.coordinator.grpcAddress, { taskId: task.id, enrolmentSecret: t.coordinator.enrolmentSecret ?? '', clientName: name });

    // Another session locks "Round"; an admin listing of the rounds (one query) then holds the coordinator's only connection.
    const locker = new pg.Client({ connectionString: storage.databaseUrl });
    await locker.connect();
    let occupant: Promise<{ status: number }> | undefined;
    try {
      await locker.query('BEGIN');
      await locker.query('LOCK TABLE "Round" IN ACCESS EXCLUSIVE MODE');
      occupant = t.rest.request('GET', `/v1/tasks/${task.id}/rounds`);
      // Wait until the occupant's query is blocked on the lock (it then holds the pooled connection).
      for (let i = 0; ; i++) {
        const [row] = await storage.sql<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`,
        );
        if (row!.n > 0) break;
        if (i > 400) throw new Error('the occupant never blocked on the lock');
        await new Promise((r) => setTimeout(r, 25));
      }

      const busy = await join('busy-device');
      expect(busy).toEqual({ code: grpc.status.UNAVAILABLE, details: 'the database is busy; retry later', retryAfter: '1', errorCode: 'unavailable' });

      // The SDK's transports (gRPC and Connect) carry the wait to the retry loop.
      for (const transport of [
        createGrpcTransport({ address: t.coordinator.grpcAddress, callTimeoutMs: 20_000 }),
        createConnectTransport({ baseUrl: t.coordinator.httpUrl, callTimeoutMs: 20_000 }),
      ]) {
        try {
          const error = await transport.join({ taskId: task.id, enrolmentSecret: t.coordinator.enrolmentSecret ?? '', clientName: 'sdk-device' }).then(
            () => null,
            (e: unknown) => e,
          );
          expect(error).toBeInstanceOf(ClientError);
          expect([(error as ClientError).code, (error as ClientError).retryAfterMs, (error as ClientError).retryable]).toEqual(['unavailable', 1000, true]);
        } finally {
          transport.close();
        }
      }

      const rest = await t.rest.request('GET', `/v1/tasks/${task.id}`);
      expect([rest.status, rest.headers.get('retry-after'), rest.body]).toEqual([503, '1', { code: 'unavailable', message: 'the database is busy; retry later' }]);
    } finally {
      await locker.query('ROLLBACK').catch(() => undefined);
      await locker.end();
    }
    expect((await occupant!).status).toBe(200);

    // Nothing of the refused Join was persisted.
    expect(await storage.sql(`SELECT name FROM "Client"`)).toEqual([]);
    // Logged as a warning with the public reason, never as an error, and without the SQL.
    const log = capture.text();
    expect(log).toContain('the database is busy; retry later');
    expect(log).not.toContain('"level":50');
    expect(log).not.toMatch(/SELECT|"Client"/);

    // The connection is free again: the same calls succeed.
    expect((await join('busy-device')).code).toBe(grpc.status.OK);
    expect((await t.rest.request('GET', `/v1/tasks/${task.id}`)).status).toBe(200);
    expect(await storage.sql(`SELECT name FROM "Client"`)).toEqual([{ name: 'busy-device' }]);
  });

  test('only transient overload codes count as busy', () => {
    for (const code of ['P2024', 'P2028', 'P2034', '53300', '57P01', '57P03', '40001', '40P01']) {
      expect(isDatabaseBusy(Object.assign(new Error('x'), { code })), code).toBe(true);
    }
    expect(isDatabaseBusy(new Error('wrapped', { cause: Object.assign(new Error('pg'), { code: '53300' }) }))).toBe(true);
    expect(isDatabaseBusy(Object.assign(new Error('adapter'), { code: 'P2010', meta: { driverAdapterError: { cause: { originalCode: '40P01' } } } }))).toBe(true);
    expect(isDatabaseBusy(new Error('timeout exceeded when trying to connect'))).toBe(true);
    for (const code of ['P2002', 'P2025', '23505', '22P02', '42P01']) {
      expect(isDatabaseBusy(Object.assign(new Error('x'), { code })), code).toBe(false);
    }
    expect(isDatabaseBusy(new Error('boom'))).toBe(false);
  });

  test('pool settings come from the URL in Prisma spelling and are removed from it', () => {
    expect(poolSettings('postgresql://u@h:5432/db?connection_limit=3&pool_timeout=2.5&sslmode=disable')).toEqual({
      connectionString: 'postgresql://u@h:5432/db?sslmode=disable',
      max: 3,
      connectionTimeoutMillis: 2500,
    });
    expect(poolSettings('postgresql://u@h:5432/db')).toEqual({ connectionString: 'postgresql://u@h:5432/db', max: 10, connectionTimeoutMillis: 0 });
    expect(() => poolSettings('postgresql://u@h/db?connection_limit=0')).toThrow(/connection_limit/);
    expect(() => poolSettings('postgresql://u@h/db?pool_timeout=soon')).toThrow(/pool_timeout/);
  });
});
