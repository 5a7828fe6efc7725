import { chmod, mkdir, readdir, readFile, writeFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import pg from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import { PrismaClient } from '../gen/prisma/client.js';
import { applyMigrations, type SqlSession } from './migrate.js';
import type { DirectSql } from './prisma-store.js';

export interface DatabaseOptions {
  /** PostgreSQL URL; when absent an embedded PGlite database lives in `<dataDir>/pgdata`. */
  databaseUrl: string | undefined;
  /** Directory for the embedded database. */
  dataDir: string;
  logger: Logger;
}

/** An open database: the Prisma client plus a raw session for migrations. */
export interface Database {
  readonly kind: 'postgresql' | 'pglite';
  readonly prisma: PrismaClient;
  /** PostgreSQL: statements on Prisma's own connection pool, without its query engine (prisma-store's hot path); null on PGlite. */
  readonly directSql: DirectSql | null;
  /** Applies pending migrations; returns their names. */
  migrate(): Promise<string[]>;
  close(): Promise<void>;
}

/** Opens PostgreSQL (DATABASE_URL) or the embedded PGlite default. */
export async function openDatabase(options: DatabaseOptions): Promise<Database> {
  return options.databaseUrl !== undefined ? openPostgres(options.databaseUrl, options.logger) : openPglite(options.dataDir, options.logger);
}

/**
 * The pool settings of a PostgreSQL URL, in Prisma's spelling: `connection_limit` (connections, default
 * 10) and `pool_timeout` (seconds to wait for a free connection; default: wait). They are removed from
 * the URL the driver sees. A pool timeout surfaces as `unavailable` with a retry-after (busy.ts).
 */
export function poolSettings(url: string): { connectionString: string; max: number; connectionTimeoutMillis: number } {
  const u = new URL(url);
  const number = (name: string, fallback: number, min: number): number => {
    const raw = u.searchParams.get(name);
    u.searchParams.delete(name);
    if (raw === null) return fallback;
    const value = Number(raw);
    if (!Number.isFinite(value) || value < min) throw new Error(`${name} in the database URL must be a number >= ${min}, got ${JSON.stringify(raw)}`);
    return value;
  };
  const max = number('connection_limit', 10, 1);
  const poolTimeoutS = number('pool_timeout', 0, 0);
  if (!Number.isInteger(max)) throw new Error(`connection_limit in the database URL must be an integer, got ${max}`);
  return { connectionString: u.toString(), max, connectionTimeoutMillis: Math.round(poolTimeoutS * 1000) };
}

async function openPostgres(rawUrl: string, logger: Logger): Promise<Database> {
  const pool = poolSettings(rawUrl);
  const url = pool.connectionString;
  // One pool (connection_limit) for Prisma and the direct statements; Prisma leaves a pool it was given open.
  const pgPool = new pg.Pool(pool);
  // An idle connection that fails (e.g. the server restarted) is dropped by the pool; without a listener it would crash the process.
  pgPool.on('error', (err) => logger.warn({ err }, 'idle database connection failed'));
  const prisma = new PrismaClient({ adapter: new PrismaPg(pgPool) });
  return {
    kind: 'postgresql',
    prisma,
    directSql: {
      async query<T>(text: string, values: readonly unknown[]): Promise<T[]> {
        return (await pgPool.query(text, values as unknown[])).rows as T[];
      },
    },
    async migrate() {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        const session: SqlSession = {
          query: async (sql, params) => ({ rows: (await client.query(sql, params)).rows }),
          exec: async (sql) => {
            await client.query(sql);
          },
        };
        return await applyMigrations(session);
      } finally {
        await client.end();
      }
    },
    async close() {
      await prisma.$disconnect();
      await pgPool.end();
    },
  };
}

/** One process at a time may open an embedded database directory. */
async function lockDataDir(dir: string): Promise<() => Promise<void>> {
  const lock = join(dir, 'veil.lock');
  try {
    const pid = Number((await readFile(lock, 'utf8')).trim());
    if (Number.isInteger(pid) && pid !== process.pid && isAlive(pid)) {
      throw new Error(`the embedded database in ${dir} is in use by process ${pid}`);
    }
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  await writeFile(lock, String(process.pid), { mode: 0o600 });
  return () => rm(lock, { force: true });
}

/** chmod go-rwx on a tree: directories 0700, files 0600. */
async function ownerOnly(dir: string): Promise<void> {
  await chmod(dir, 0o700);
  for (const entry of await readdir(dir, { withFileTypes: true, recursive: true })) {
    const path = join(entry.parentPath, entry.name);
    if (entry.isDirectory()) await chmod(path, 0o700);
    else if (entry.isFile()) await chmod(path, 0o600);
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function openPglite(dataDir: string, logger: Logger): Promise<Database> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const unlock = await lockDataDir(dataDir);
  const started = performance.now();
  // Loaded only for the embedded database: a coordinator on PostgreSQL does not carry PGlite's
  // module (its code and sources stay out of the heap every full garbage collection walks).
  const [{ PGlite }, { PrismaPGlite }] = await Promise.all([import('@electric-sql/pglite'), import('pglite-prisma-adapter')]);
  const db = new PGlite(join(dataDir, 'pgdata'));
  await db.waitReady;
  // Directories created before the coordinator set its umask (older versions) lose group/other bits too.
  await ownerOnly(join(dataDir, 'pgdata'));
  logger.info({ dataDir, openMs: Math.round(performance.now() - started) }, 'embedded database opened');
  // pglite-prisma-adapter@0.6 is typed against @prisma/driver-adapter-utils 6.10; the 6.19
  // interface differs only in argument metadata the adapter does not read (it passes
  // arguments through), which the integration tests exercise for every column type we use.
  const adapter = new PrismaPGlite(db) as unknown as PrismaPg;
  const prisma = new PrismaClient({ adapter });
  return {
    kind: 'pglite',
    prisma,
    directSql: null,
    async migrate() {
      const session: SqlSession = {
        query: async (sql, params) => ({ rows: (await db.query(sql, params)).rows as never[] }),
        exec: async (sql) => {
          await db.exec(sql);
        },
      };
      return applyMigrations(session);
    },
    async close() {
      await prisma.$disconnect();
      await db.close();
      await unlock();
    },
  };
}
