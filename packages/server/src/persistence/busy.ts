import { VeilError } from '../errors.js';

/** How long a device is asked to wait when the database is busy, ms (sent as Retry-After: 1 s). */
export const DATABASE_BUSY_RETRY_AFTER_MS = 1_000;

/**
 * Prisma error codes of a database that is overloaded, not of a bad request:
 * P2024 (pool timeout), P2028 (interactive transaction could not start in
 * time), P2034 (write conflict or deadlock, i.e. 40001/40P01).
 */
const BUSY_PRISMA_CODES: ReadonlySet<string> = new Set(['P2024', 'P2028', 'P2034']);

/**
 * PostgreSQL SQLSTATEs of transient overload: 53300 too_many_connections,
 * 57P01 admin_shutdown, 57P03 cannot_connect_now, 40001 serialization_failure,
 * 40P01 deadlock_detected (PostgreSQL manual, Appendix A "Error Codes").
 */
const BUSY_SQLSTATES: ReadonlySet<string> = new Set(['53300', '57P01', '57P03', '40001', '40P01']);

/** node-postgres' pool (used by @prisma/adapter-pg) when no connection frees up within connectionTimeoutMillis. */
const PG_POOL_TIMEOUT = 'timeout exceeded when trying to connect';

/**
 * Whether `error` (or anything in its cause chain) is a transient overload of
 * the database. Looks only at codes (Prisma's, PostgreSQL's SQLSTATE as the
 * pg driver or Prisma's driver adapter reports it) and pg-pool's timeout.
 */
export function isDatabaseBusy(error: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e: unknown = error; e !== null && typeof e === 'object' && !seen.has(e); e = (e as { cause?: unknown }).cause) {
    seen.add(e);
    if (e instanceof VeilError) return false;
    const o = e as { code?: unknown; originalCode?: unknown; meta?: unknown; message?: unknown };
    if (typeof o.code === 'string' && (BUSY_PRISMA_CODES.has(o.code) || BUSY_SQLSTATES.has(o.code))) return true;
    if (typeof o.originalCode === 'string' && BUSY_SQLSTATES.has(o.originalCode)) return true;
    const meta = o.meta as { code?: unknown; driverAdapterError?: unknown } | undefined;
    if (meta !== undefined && meta !== null && typeof meta === 'object') {
      if (typeof meta.code === 'string' && BUSY_SQLSTATES.has(meta.code)) return true;
      if (meta.driverAdapterError !== undefined && isDatabaseBusy(meta.driverAdapterError)) return true;
    }
    if (typeof o.message === 'string' && o.message.includes(PG_POOL_TIMEOUT)) return true;
  }
  return false;
}

/** `error` as VeilError('unavailable') with a retry-after when the database is busy; otherwise unchanged. */
export function translateBusy(error: unknown): unknown {
  if (!isDatabaseBusy(error)) return error;
  return new VeilError('unavailable', 'the database is busy; retry later', { retryAfterMs: DATABASE_BUSY_RETRY_AFTER_MS, cause: error });
}

/**
 * Wraps every method of a persistence port so that a busy database surfaces as
 * `unavailable` (gRPC UNAVAILABLE / HTTP 503 with Retry-After) instead of
 * `internal`. Errors the methods throw on purpose (VeilError) pass unchanged.
 */
export function withBusyTranslation<T extends object>(port: T): T {
  const wrapped: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(port)) {
    if (typeof value !== 'function') {
      wrapped[name] = value;
      continue;
    }
    const method = value as (...args: unknown[]) => unknown;
    wrapped[name] = function (this: unknown, ...args: unknown[]): unknown {
      let result: unknown;
      try {
        result = method.apply(port, args);
      } catch (error) {
        throw translateBusy(error);
      }
      return result instanceof Promise ? result.catch((error: unknown) => Promise.reject(translateBusy(error))) : result;
    };
  }
  return wrapped as T;
}
