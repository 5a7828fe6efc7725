import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { readCoordinatorKeyMaterial } from '@veil/crypto';
import { createDecryptPool, type DecryptPool } from '@veil/crypto/decrypt-pool';
import { committeeChannelCredentials, createCommitteeClient, readRequestSigner, watchTlsFiles, type WatchedTlsFiles } from '@veil/custodian';
import { createBlobStore } from './blobs/blob-store.js';
import type { CoordinatorConfig } from './config/config.js';
import { createFederationHandlers, startGrpcServer } from './grpc/federation-service.js';
import { buildHttpApp } from './http/app.js';
import { openDatabase } from './persistence/database.js';
import { createPrismaStore } from './persistence/prisma-store.js';
import { RoundEngine, type CommitteeConnector, type RoundEngineOptions } from './rounds/engine.js';
import { createAuthThrottle, type AuthThrottleOptions } from './security/auth-throttle.js';
import { createTlsSource, type TlsSource } from './tls/tls-source.js';
import { createAuditTrail } from './security/audit-trail.js';
import { createDeviceAuth } from './grpc/device-auth.js';
import { createUploadGuard } from './grpc/upload-guard.js';
import { createSecurityStore } from './persistence/security-store.js';

/** The coordinator's options; `strategies`, `clock`, `timer`, `rng` and `presenceTtlMs` go to the round engine (defaults there). */
export interface CoordinatorOptions extends Pick<RoundEngineOptions, 'strategies' | 'clock' | 'timer' | 'rng' | 'presenceTtlMs'> {
  config: CoordinatorConfig;
  logger: Logger;
  /** Update payload bytes the gRPC service reads and processes at once; further uploads wait unread. Default 32 MiB. */
  uploadBudgetBytes?: number;
  /** Model bytes the gRPC service sends at once; further downloads wait. Default 32 MiB. */
  downloadBudgetBytes?: number;
  /** Bytes of begun, uncommitted chunked uploads (HTTP port, browsers) held at once. Default 64 MiB. */
  uploadStoreBytes?: number;
  /**
   * Backoff on failed authentication, shared by REST and gRPC (keys per peer address and per
   * credential). Defaults: see {@link AuthThrottleOptions}; its clock defaults to `clock`.
   */
  authThrottle?: AuthThrottleOptions;
}

/** A running coordinator: gRPC for devices, REST for admins, one round engine. */
export interface Coordinator {
  readonly engine: RoundEngine;
  readonly grpcPort: number;
  readonly grpcAddress: string;
  readonly httpUrl: string;
  readonly adminToken: string;
  readonly auditToken: string;
  /** The global enrolment secret; null in production without VEIL_ENROLMENT_SECRET (per-task tokens only). */
  readonly enrolmentSecret: string | null;
  readonly databaseKind: 'postgresql' | 'pglite';
  /** True when both servers speak TLS. */
  readonly tls: boolean;
  /**
   * Rereads the TLS files now (SIGHUP); true when new material took effect (new connections use
   * it), false when unchanged or refused (the old material stays). False without TLS.
   */
  reloadTls(): Promise<boolean>;
  /** Graceful shutdown: stop accepting, finish in-flight calls, close the database. */
  close(): Promise<void>;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Sets the process umask to 077 (group and others get no bits on new files). */
function restrictUmask(logger: Logger): void {
  try {
    process.umask(0o077);
  } catch (error) {
    // Worker threads cannot change the umask; the data directory's 0700 still keeps others out.
    logger.warn({ err: error }, 'could not set the umask to 077');
  }
}

/** Reads a secret file from the data directory, creating it (mode 0600) when missing. */
async function devSecret(dataDir: string, name: string, logger: Logger): Promise<string> {
  const path = join(dataDir, name);
  try {
    return (await readFile(path, 'utf8')).trim();
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw error;
  }
  const value = randomBytes(24).toString('base64url');
  await writeFile(path, value + '\n', { mode: 0o600 });
  logger.warn({ path }, `generated ${name}; set it explicitly in production`);
  return value;
}

/** Opens the database (migrating it), recovers the round engine and starts both servers. */
export async function startCoordinator(options: CoordinatorOptions): Promise<Coordinator> {
  const { config, logger } = options;
  // Files are the owner's only: the data directory 0700, and new files 0600 (the embedded database
  // creates its files through the process umask; the blob store and secrets set their modes too).
  restrictUmask(logger);
  await mkdir(config.dataDir, { recursive: true, mode: 0o700 });
  await chmod(config.dataDir, 0o700);
  await mkdir(config.blobDir, { recursive: true, mode: 0o700 });
  await chmod(config.blobDir, 0o700);
  const adminToken = config.adminToken ?? (await devSecret(config.dataDir, 'admin-token', logger));
  const enrolmentSecret = config.enrolmentSecret ?? (config.production ? null : await devSecret(config.dataDir, 'enrolment-secret', logger));
  const auditToken = config.auditToken ?? (await devSecret(config.dataDir, 'audit-token', logger));
  if (auditToken === adminToken) throw new Error('VEIL_AUDIT_TOKEN must differ from VEIL_ADMIN_TOKEN');

  // Public key material only: readCoordinatorKeyMaterial refuses any secret key (the coordinator must never hold one).
  const defaultKey = config.keysDir === undefined ? null : await readCoordinatorKeyMaterial(config.keysDir);
  if (defaultKey !== null) logger.info({ keyId: defaultKey.keyId, preset: defaultKey.preset }, 'coordinator key material loaded');

  // Committee tasks (issue 11): the request key custodians accept; each task gets its own client.
  let committee: CommitteeConnector | undefined;
  // TLS to `grpcs://` custodians: the pinned CA bundle and the client certificate, reloaded like the servers'.
  let committeeTls: WatchedTlsFiles | null = null;
  if (config.committeeTls !== null) {
    const { caFile, certFile, keyFile, reloadIntervalMs } = config.committeeTls;
    committeeTls = await watchTlsFiles({ files: { caFile, certFile, keyFile }, role: 'client', logger: logger.child({ component: 'committee-client' }), pollIntervalMs: reloadIntervalMs });
  }
  const committeeCredentials = committeeChannelCredentials(committeeTls);
  // Committee rounds' decryptions, spread over worker threads: started when the first committee task
  // opens (a coordinator with a request key but no committee task runs none), ended on close.
  let decryptPool: DecryptPool | null = null;
  if (config.committeeRequestKey !== undefined) {
    const signer = await readRequestSigner(config.committeeRequestKey);
    const committeeLog = logger.child({ component: 'committee-client' });
    const pool = (): DecryptPool => (decryptPool ??= createDecryptPool());
    committee = {
      open: (descriptor, descriptorSignature) => {
        const decryption = pool();
        const client = createCommitteeClient({
          descriptor,
          descriptorSignature,
          signRequest: signer.sign,
          deadlineMs: config.committeeDeadlineMs,
          tls: committeeCredentials,
          logger: committeeLog,
        });
        return {
          collect: (request) => client.collect(request),
          stage: (round) => client.stage(round),
          decrypt: (request) => decryption.decryptSum(request),
          derivePublicPolynomials: (binding, count, out) => decryption.derivePublicPolynomials(binding, count, out),
          close: () => client.close(),
        };
      },
    };
    logger.info({ requestKey: Buffer.from(signer.publicKey).toString('base64') }, 'committee request key loaded');
  }

  const db = await openDatabase({ databaseUrl: config.databaseUrl, dataDir: config.dataDir, logger });
  const cleanup: Array<() => Promise<void>> = [() => db.close(), async () => committeeTls?.close(), async () => decryptPool?.close()];
  const closeAll = async (): Promise<void> => {
    for (const fn of cleanup.reverse()) await fn().catch((error) => logger.error({ err: error }, 'shutdown step failed'));
  };
  try {
    if (config.migrateOnStart) {
      const applied = await db.migrate();
      if (applied.length > 0) logger.info({ applied }, 'migrations applied');
    }
    const store = createPrismaStore(db.prisma, { directSql: db.directSql });
    const blobs = createBlobStore({ dir: config.blobDir });
    cleanup.push(() => blobs.close());
    const engine = new RoundEngine({
      store,
      blobs,
      logger,
      ...(options.strategies && { strategies: options.strategies }),
      ...(options.clock && { clock: options.clock }),
      ...(options.timer && { timer: options.timer }),
      ...(options.rng && { rng: options.rng }),
      ...(options.presenceTtlMs !== undefined && { presenceTtlMs: options.presenceTtlMs }),
      defaultKey,
      ...(committee && { committee }),
    });
    await engine.start();
    cleanup.push(() => engine.close());

    let tls: TlsSource | undefined;
    if (config.tls !== null) {
      const source = await createTlsSource({
        files: { certFile: config.tls.certFile, keyFile: config.tls.keyFile, clientCaFile: config.tls.clientCaFile, restClientCaFile: config.tls.restClientCaFile },
        logger,
        pollIntervalMs: config.tls.reloadIntervalMs,
      });
      tls = source;
      cleanup.push(async () => source.close());
    }

    const authThrottle = createAuthThrottle({ now: () => engine.now(), ...options.authThrottle });
    const security = createSecurityStore(db.prisma);
    const auditTrail = createAuditTrail({ store: security, logger });
    // Runs after both servers closed (cleanup runs in reverse), before the database closes.
    cleanup.push(() => auditTrail.flush());
    const deviceAuth = createDeviceAuth({
      store,
      security,
      logger,
      throttle: authThrottle,
      enrolmentSecret,
      getTask: (id) => engine.getTask(id),
      now: () => engine.now(),
      // Wrong credentials and enrolment secrets are audited; missing ones and lockout refusals only logged.
      onFailure: (failure) => {
        if (failure.reason !== 'invalid') return;
        auditTrail.record({
          at: new Date(engine.now()),
          actor: 'anonymous',
          action: 'auth.failed',
          outcome: 'UNAUTHENTICATED',
          taskId: failure.taskId ?? null,
          sourceAddress: failure.sourceAddress,
          details: { surface: failure.surface, call: failure.call, reason: failure.reason },
        });
      },
    });
    // One upload guard for both ports (gRPC streams and Connect chunked uploads): one count of
    // each device's open uploads, one idle timeout, one minimum rate, cancelled at round close.
    const uploadGuard = createUploadGuard({
      idleTimeoutMs: config.uploadIdleTimeoutMs,
      maxStreamsPerDevice: config.maxUploadStreamsPerDevice,
      minBytesPerSecond: config.uploadMinRate.bytesPerSecond,
      minRateWindowMs: config.uploadMinRate.windowMs,
      minRateGraceMs: config.uploadMinRate.graceMs,
    });
    const handlers = createFederationHandlers({
      deviceAuth,
      engine,
      store,
      logger,
      ...(options.uploadBudgetBytes !== undefined && { uploadBudgetBytes: options.uploadBudgetBytes }),
      ...(options.downloadBudgetBytes !== undefined && { downloadBudgetBytes: options.downloadBudgetBytes }),
      uploadGuard,
    });
    const grpcServer = await startGrpcServer(handlers, {
      host: config.host,
      port: config.grpcPort,
      limits: config.grpcLimits,
      ...(tls && { tls }),
    });
    // Wake the engine's long-polls first: the graceful gRPC shutdown waits for in-flight calls.
    cleanup.push(async () => {
      await engine.close();
      await grpcServer.close();
    });

    const http = await buildHttpApp({
      engine,
      store,
      blobs,
      logger,
      adminToken,
      auditToken,
      authThrottle,
      security,
      deviceAuth,
      auditTrail,
      limits: config.httpLimits,
      // The device protocol for browsers (Connect), served by the same handlers as the gRPC port.
      deviceHandlers: handlers,
      connect: { uploadGuard, ...(options.uploadStoreBytes !== undefined && { uploadStoreBytes: options.uploadStoreBytes }) },
      ...(tls && { tls }),
    });
    const listening = await http.listen({ host: config.host, port: config.httpPort });
    // Fastify names the scheme after its own options; the server here is ours (HTTPS with TLS).
    const httpAddress = tls === undefined ? listening : listening.replace(/^http:/, 'https:');
    cleanup.push(() => http.close());

    const grpcHost = config.host === '0.0.0.0' ? '127.0.0.1' : config.host;
    logger.info({ grpcPort: grpcServer.port, http: httpAddress, database: db.kind, tls: tls !== undefined }, 'coordinator ready');
    let closing: Promise<void> | null = null;
    const close = (): Promise<void> => (closing ??= closeAll());
    return {
      engine,
      grpcPort: grpcServer.port,
      grpcAddress: `${grpcHost}:${grpcServer.port}`,
      httpUrl: httpAddress,
      adminToken,
      auditToken,
      enrolmentSecret,
      databaseKind: db.kind,
      tls: tls !== undefined,
      reloadTls: async () => {
        const [servers, custodians] = await Promise.all([tls?.reload() ?? false, committeeTls?.reload() ?? false]);
        return servers || custodians;
      },
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (error) {
    await closeAll();
    throw error;
  }
}
