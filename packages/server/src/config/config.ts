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
  /**
   * Global secret a device presents to Join (valid for every task); generated into
   * `<dataDir>/enrolment-secret` when absent, except in production, where devices then join with
   * per-task enrolment tokens only.
   */
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
  /**
   * The coordinator's Ed25519 request key file (`veil custodian request-key`'s secret file):
   * custodians answer only requests signed with it. Needed by committee tasks. Default none.
   */
  committeeRequestKey: string | undefined;
  /** Deadline of one committee request (all custodians, in parallel), ms. Default 30 000. */
  committeeDeadlineMs: number;
  /** gRPC upload streams that send nothing (no header, or no data once admitted) for this long are closed, ms. Default 60 000. */
  uploadIdleTimeoutMs: number;
  /** Upload streams one device may have open at once. Default 2. */
  maxUploadStreamsPerDevice: number;
  /**
   * Minimum data rate of an admitted gRPC upload, bytes/s (VEIL_UPLOAD_MIN_BYTES_PER_SECOND, 0: off,
   * default 1024), over windows of VEIL_UPLOAD_MIN_RATE_WINDOW_MS (default 30 000) after
   * VEIL_UPLOAD_MIN_RATE_GRACE_MS (default 10 000); slower streams end with DEADLINE_EXCEEDED.
   */
  uploadMinRate: { bytesPerSecond: number; windowMs: number; graceMs: number };
  /**
   * TLS of both servers (VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE, both or neither), optionally
   * with client certificates required on gRPC (VEIL_TLS_CLIENT_CA_FILE); null: cleartext.
   * The files are polled every `reloadIntervalMs` (VEIL_TLS_RELOAD_INTERVAL_MS, default 10 000) and
   * reread on SIGHUP.
   */
  tls: { certFile: string; keyFile: string; clientCaFile: string | undefined; restClientCaFile?: string | undefined; reloadIntervalMs: number } | null;
  /**
   * TLS to custodians at `grpcs://` addresses (issue 12): VEIL_COMMITTEE_TLS_CA_FILE, the CA bundle
   * their certificates must chain to (pinned; default the system CAs), and VEIL_COMMITTEE_TLS_CERT_FILE /
   * VEIL_COMMITTEE_TLS_KEY_FILE, the coordinator's client certificate for custodians that require
   * one (mutual TLS). Polled every VEIL_TLS_RELOAD_INTERVAL_MS and reread on SIGHUP. null: none set.
   */
  committeeTls: { caFile: string | undefined; certFile: string | undefined; keyFile: string | undefined; reloadIntervalMs: number } | null;
  /** VEIL_ALLOW_INSECURE: in production, bind a non-loopback address without TLS anyway. Default false. */
  allowInsecure: boolean;
  /** Limits of the gRPC server (devices). */
  grpcLimits: GrpcLimits;
  /** Limits of the REST server. */
  httpLimits: HttpLimits;
}

/** gRPC server limits (grpc-js channel options), each from its environment variable. */
export interface GrpcLimits {
  /** `grpc.max_concurrent_streams`: calls one connection may have open (VEIL_GRPC_MAX_CONCURRENT_STREAMS). Default 10 000 (a simulation may multiplex thousands of devices on one connection). */
  maxConcurrentStreams: number;
  /** `grpc.keepalive_time_ms`: ping an idle connection after this long (VEIL_GRPC_KEEPALIVE_TIME_MS). Default 60 000. */
  keepaliveTimeMs: number;
  /** `grpc.keepalive_timeout_ms`: drop the connection when a ping is not answered within this (VEIL_GRPC_KEEPALIVE_TIMEOUT_MS). Default 20 000. */
  keepaliveTimeoutMs: number;
  /** `grpc.max_connection_idle_ms`: close a connection with no call for this long (VEIL_GRPC_MAX_CONNECTION_IDLE_MS). Default 300 000. */
  maxConnectionIdleMs: number;
  /** `grpc.max_connection_age_ms`: close connections older than this, gracefully (VEIL_GRPC_MAX_CONNECTION_AGE_MS); 0: never. Default 0. */
  maxConnectionAgeMs: number;
}

/** REST server limits (Node http/https server), each from its environment variable. */
export interface HttpLimits {
  /** Socket inactivity timeout (VEIL_HTTP_CONNECTION_TIMEOUT_MS). Default 60 000. */
  connectionTimeoutMs: number;
  /** Whole-request timeout, headers and body (VEIL_HTTP_REQUEST_TIMEOUT_MS). Default 120 000. */
  requestTimeoutMs: number;
  /** Idle keep-alive connection timeout (VEIL_HTTP_KEEPALIVE_TIMEOUT_MS). Default 5 000. */
  keepAliveTimeoutMs: number;
  /** Time to receive the request headers (VEIL_HTTP_HEADERS_TIMEOUT_MS; at most the request timeout). Default 20 000. */
  headersTimeoutMs: number;
}

/** True for addresses only this machine can reach. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
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

function positiveInt(env: NodeJS.ProcessEnv, name: string, fallback: number, max: number, min = 1): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < min || value > max) {
    throw new ConfigError(`${name} must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`);
  }
  return value;
}

const DAY_MS = 86_400_000;

function tlsConfig(env: NodeJS.ProcessEnv): CoordinatorConfig['tls'] {
  const cert = env['VEIL_TLS_CERT_FILE'] || undefined;
  const key = env['VEIL_TLS_KEY_FILE'] || undefined;
  const clientCa = env['VEIL_TLS_CLIENT_CA_FILE'] || undefined;
  const restClientCa = env['VEIL_TLS_REST_CLIENT_CA_FILE'] || undefined;
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError('set both VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE, or neither');
  if (cert === undefined || key === undefined) {
    if (clientCa !== undefined) throw new ConfigError('VEIL_TLS_CLIENT_CA_FILE needs VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE');
    if (restClientCa !== undefined) throw new ConfigError('VEIL_TLS_REST_CLIENT_CA_FILE needs VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE');
    return null;
  }
  return {
    certFile: resolve(cert),
    keyFile: resolve(key),
    clientCaFile: clientCa === undefined ? undefined : resolve(clientCa),
    restClientCaFile: restClientCa === undefined ? undefined : resolve(restClientCa),
    reloadIntervalMs: positiveInt(env, 'VEIL_TLS_RELOAD_INTERVAL_MS', 10_000, DAY_MS, 100),
  };
}

function committeeTlsConfig(env: NodeJS.ProcessEnv): CoordinatorConfig['committeeTls'] {
  const ca = env['VEIL_COMMITTEE_TLS_CA_FILE'] || undefined;
  const cert = env['VEIL_COMMITTEE_TLS_CERT_FILE'] || undefined;
  const key = env['VEIL_COMMITTEE_TLS_KEY_FILE'] || undefined;
  if ((cert === undefined) !== (key === undefined)) throw new ConfigError('set both VEIL_COMMITTEE_TLS_CERT_FILE and VEIL_COMMITTEE_TLS_KEY_FILE, or neither');
  if (ca === undefined && cert === undefined) return null;
  return {
    caFile: ca === undefined ? undefined : resolve(ca),
    certFile: cert === undefined ? undefined : resolve(cert),
    keyFile: key === undefined ? undefined : resolve(key),
    reloadIntervalMs: positiveInt(env, 'VEIL_TLS_RELOAD_INTERVAL_MS', 10_000, DAY_MS, 100),
  };
}

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/**
 * Reads the coordinator's environment variables (the only place that does):
 * VEIL_HOST, VEIL_GRPC_PORT, VEIL_HTTP_PORT, DATABASE_URL, VEIL_DATA_DIR,
 * VEIL_BLOB_DIR, VEIL_ADMIN_TOKEN, VEIL_AUDIT_TOKEN, VEIL_ENROLMENT_SECRET, VEIL_LOG_LEVEL,
 * VEIL_MIGRATE_ON_START, VEIL_KEYS_DIR, VEIL_COMMITTEE_REQUEST_KEY, VEIL_COMMITTEE_DEADLINE_MS, VEIL_UPLOAD_IDLE_TIMEOUT_MS, VEIL_MAX_UPLOAD_STREAMS_PER_DEVICE,
 * VEIL_UPLOAD_MIN_BYTES_PER_SECOND, VEIL_UPLOAD_MIN_RATE_WINDOW_MS, VEIL_UPLOAD_MIN_RATE_GRACE_MS,
 * VEIL_TLS_CERT_FILE, VEIL_TLS_KEY_FILE, VEIL_TLS_CLIENT_CA_FILE, VEIL_TLS_REST_CLIENT_CA_FILE, VEIL_TLS_RELOAD_INTERVAL_MS,
 * VEIL_COMMITTEE_TLS_CA_FILE, VEIL_COMMITTEE_TLS_CERT_FILE, VEIL_COMMITTEE_TLS_KEY_FILE,
 * VEIL_ALLOW_INSECURE, the VEIL_GRPC_* and VEIL_HTTP_* limits (see {@link GrpcLimits},
 * {@link HttpLimits}), NODE_ENV. Throws ConfigError with a clear message.
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
    committeeRequestKey: env['VEIL_COMMITTEE_REQUEST_KEY'] ? resolve(env['VEIL_COMMITTEE_REQUEST_KEY']) : undefined,
    committeeDeadlineMs: positiveInt(env, 'VEIL_COMMITTEE_DEADLINE_MS', 30_000, 3_600_000),
    uploadIdleTimeoutMs: positiveInt(env, 'VEIL_UPLOAD_IDLE_TIMEOUT_MS', 60_000, 3_600_000),
    maxUploadStreamsPerDevice: positiveInt(env, 'VEIL_MAX_UPLOAD_STREAMS_PER_DEVICE', 2, 100),
    uploadMinRate: {
      bytesPerSecond: positiveInt(env, 'VEIL_UPLOAD_MIN_BYTES_PER_SECOND', 1024, 1 << 30, 0),
      windowMs: positiveInt(env, 'VEIL_UPLOAD_MIN_RATE_WINDOW_MS', 30_000, 3_600_000, 100),
      graceMs: positiveInt(env, 'VEIL_UPLOAD_MIN_RATE_GRACE_MS', 10_000, 3_600_000, 0),
    },
    tls: tlsConfig(env),
    committeeTls: committeeTlsConfig(env),
    allowInsecure: bool(env, 'VEIL_ALLOW_INSECURE', false),
    grpcLimits: {
      maxConcurrentStreams: positiveInt(env, 'VEIL_GRPC_MAX_CONCURRENT_STREAMS', 10_000, 1_000_000),
      keepaliveTimeMs: positiveInt(env, 'VEIL_GRPC_KEEPALIVE_TIME_MS', 60_000, DAY_MS, 1000),
      keepaliveTimeoutMs: positiveInt(env, 'VEIL_GRPC_KEEPALIVE_TIMEOUT_MS', 20_000, DAY_MS, 100),
      maxConnectionIdleMs: positiveInt(env, 'VEIL_GRPC_MAX_CONNECTION_IDLE_MS', 300_000, DAY_MS, 1000),
      maxConnectionAgeMs: positiveInt(env, 'VEIL_GRPC_MAX_CONNECTION_AGE_MS', 0, 30 * DAY_MS, 0),
    },
    httpLimits: {
      connectionTimeoutMs: positiveInt(env, 'VEIL_HTTP_CONNECTION_TIMEOUT_MS', 60_000, DAY_MS, 100),
      requestTimeoutMs: positiveInt(env, 'VEIL_HTTP_REQUEST_TIMEOUT_MS', 120_000, DAY_MS, 100),
      keepAliveTimeoutMs: positiveInt(env, 'VEIL_HTTP_KEEPALIVE_TIMEOUT_MS', 5_000, DAY_MS, 100),
      headersTimeoutMs: positiveInt(env, 'VEIL_HTTP_HEADERS_TIMEOUT_MS', 20_000, DAY_MS, 100),
    },
  };
  if (config.httpLimits.headersTimeoutMs > config.httpLimits.requestTimeoutMs) {
    throw new ConfigError('VEIL_HTTP_HEADERS_TIMEOUT_MS cannot exceed VEIL_HTTP_REQUEST_TIMEOUT_MS');
  }
  if (production && config.tls === null && !isLoopbackHost(config.host) && !config.allowInsecure) {
    throw new ConfigError(
      `NODE_ENV=production refuses to serve ${config.host} without TLS: set VEIL_TLS_CERT_FILE and VEIL_TLS_KEY_FILE (veil tls dev-ca makes a development pair), or VEIL_ALLOW_INSECURE=true behind a TLS-terminating proxy`,
    );
  }
  if (production && (config.adminToken === undefined || config.auditToken === undefined)) {
    throw new ConfigError('NODE_ENV=production requires VEIL_ADMIN_TOKEN and VEIL_AUDIT_TOKEN (VEIL_ENROLMENT_SECRET is optional: without it devices join with per-task enrolment tokens)');
  }
  return config;
}
