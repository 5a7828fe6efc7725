import { resolve } from 'node:path';

/** Coordinator configuration, resolved and validated once at start-up. */
export interface CoordinatorConfig {
  /** Interface both servers bind to. Default `127.0.0.1` (`0.0.0.0` in containers). */
  host: string;
  /** gRPC port for devices. Default 50051; 0 picks a free port. */
  grpcPort: number;
  /** REST port for the admin/audit API. Default 8080; 0 picks a free port. */
  httpPort: number;
  /** PostgreSQL URL; when absent the embedded PGlite database in `dataDir` is used. */
  databaseUrl: string | undefined;
  /** Directory for the embedded database, blobs and generated secrets. Default `./.veil`. */
  dataDir: string;
  /** Directory of the blob store (models, updates). Default `<dataDir>/blobs`. */
  blobDir: string;
  /** Bearer token for mutating REST calls; generated into `<dataDir>/admin-token` when absent (not in production). */
  adminToken: string | undefined;
  /** Read-only bearer token of the privacy audit API; generated into `<dataDir>/audit-token` when absent (not in production). */
  auditToken: string | undefined;
  /** Secret a device presents to Join; generated into `<dataDir>/enrolment-secret` when absent (not in production). */
  enrolmentSecret: string | undefined;
  /** pino log level. Default `info`. */
  logLevel: string;
  /** Apply pending migrations at start. Default true. */
  migrateOnStart: boolean;
  /** Refuse to generate secrets (NODE_ENV=production). */
  production: boolean;
  /**
   * Directory of the coordinator's public key material (`veil keys generate`'s
   * `coordinator/`); the coordinator refuses to start if it holds any secret key.
   * Tasks created without explicit encryption settings use this key. Default none.
   */
  keysDir: string | undefined;
  /** gRPC upload streams that send nothing (no header, or no data once admitted) for this long are closed, ms. Default 60 000. */
  uploadIdleTimeoutMs: number;
  /** Upload streams one device may have open at once. Default 2. */
  maxUploadStreamsPerDevice: number;
}

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) {
    throw new ConfigError(`${name} must be a port number (0-65535), got ${JSON.stringify(raw)}`);
  }
  return value;
}

function bool(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (['1', 'true', 'yes'].includes(raw.toLowerCase())) return true;
  if (['0', 'false', 'no'].includes(raw.toLowerCase())) return false;
  throw new ConfigError(`${name} must be true or false, got ${JSON.stringify(raw)}`);
}

function secret(env: NodeJS.ProcessEnv, name: string): string | undefined {
  const raw = env[name];
  if (raw === undefined || raw === '') return undefined;
  if (raw.length < 16) throw new ConfigError(`${name} must be at least 16 characters`);
  return raw;
}

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 1 || value > max) {
    throw new ConfigError(`${name} must be an integer from 1 to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Reads the coordinator's environment variables (the only place that does):
 * VEIL_HOST, VEIL_GRPC_PORT, VEIL_HTTP_PORT, DATABASE_URL, VEIL_DATA_DIR,
 * VEIL_BLOB_DIR, VEIL_ADMIN_TOKEN, VEIL_AUDIT_TOKEN, VEIL_ENROLMENT_SECRET, VEIL_LOG_LEVEL,
 * VEIL_MIGRATE_ON_START, VEIL_KEYS_DIR, VEIL_UPLOAD_IDLE_TIMEOUT_MS, VEIL_MAX_UPLOAD_STREAMS_PER_DEVICE, NODE_ENV. Throws ConfigError with a clear message.
 */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): CoordinatorConfig {
  const dataDir = resolve(env['VEIL_DATA_DIR'] || '.veil');
  const databaseUrl = env['DATABASE_URL'] || undefined;
  if (databaseUrl !== undefined && !/^postgres(ql)?:\/\//.test(databaseUrl)) {
    throw new ConfigError('DATABASE_URL must be a postgresql:// URL');
  }
  const logLevel = env['VEIL_LOG_LEVEL'] || 'info';
  if (!LEVELS.includes(logLevel)) throw new ConfigError(`VEIL_LOG_LEVEL must be one of ${LEVELS.join(', ')}`);
  const production = env['NODE_ENV'] === 'production';
  const config: CoordinatorConfig = {
    host: env['VEIL_HOST'] || '127.0.0.1',
    grpcPort: port(env, 'VEIL_GRPC_PORT', 50051),
    httpPort: port(env, 'VEIL_HTTP_PORT', 8080),
    databaseUrl,
    dataDir,
    blobDir: resolve(env['VEIL_BLOB_DIR'] || resolve(dataDir, 'blobs')),
    adminToken: secret(env, 'VEIL_ADMIN_TOKEN'),
    auditToken: secret(env, 'VEIL_AUDIT_TOKEN'),
    enrolmentSecret: secret(env, 'VEIL_ENROLMENT_SECRET'),
    logLevel,
    migrateOnStart: bool(env, 'VEIL_MIGRATE_ON_START', true),
    production,
    keysDir: env['VEIL_KEYS_DIR'] ? resolve(env['VEIL_KEYS_DIR']) : undefined,
    uploadIdleTimeoutMs: positiveInt(env, 'VEIL_UPLOAD_IDLE_TIMEOUT_MS', 60_000, 3_600_000),
    maxUploadStreamsPerDevice: positiveInt(env, 'VEIL_MAX_UPLOAD_STREAMS_PER_DEVICE', 2, 100),
  };
  if (production && (config.adminToken === undefined || config.enrolmentSecret === undefined)) {
    throw new ConfigError('NODE_ENV=production requires VEIL_ADMIN_TOKEN and VEIL_ENROLMENT_SECRET');
  }
  return config;
}
