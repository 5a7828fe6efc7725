import http from 'node:http';
import https from 'node:https';
import type { HttpLimits } from '../config/config.js';
import type { SecureContextOptions } from 'node:tls';
import type { TlsMaterial, TlsSource } from '../tls/tls-source.js';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Logger } from 'pino';
import { VeilError } from '../errors.js';
import { HTTP_STATUS } from './errors.js';
import type { RoundEngine } from '../rounds/engine.js';
import type { FederationStore } from '../rounds/ports.js';
import { createAuthThrottle, type AuthThrottle } from '../security/auth-throttle.js';
import { createPrivacyAuditService } from '../services/privacy-audit.js';
import { createLiveRounds } from '../services/live-rounds.js';
import { createTaskOverviewService } from '../services/task-overview.js';
import { httpAuthPlugin } from './auth.js';
import { authFailureEvent, httpAuditPlugin } from './audit.js';
import { bodyGuardPlugin } from './body-guard.js';
import { deviceRoutes } from './routes/devices.js';
import { auditRoutes } from './routes/admin-audit.js';
import type { DeviceAuth } from '../grpc/device-auth.js';
import type { AuditTrail } from '../security/audit-trail.js';
import type { SecurityStore } from '../security/ports.js';
import { createModelExportService } from '../services/model-export.js';
import { createCalibrationStatisticsService } from '../services/calibration-statistics.js';
import type { BlobStore } from '../blobs/blob-store.js';
import { exportRoutes } from './routes/export.js';
import { dashboardRoutes } from './routes/dashboard.js';
import { eventRoutes } from './routes/events.js';
import { healthRoutes } from './routes/health.js';
import { modelRoutes } from './routes/models.js';
import { privacyRoutes } from './routes/privacy.js';
import { committeeRoutes } from './routes/committee.js';
import { roundRoutes } from './routes/rounds.js';
import { taskRoutes } from './routes/tasks.js';
import { connectRoutes, type ConnectOptions } from './connect.js';
import type { FederationServiceHandlers } from '@veil/protocol';

export interface HttpAppOptions {
  engine: RoundEngine;
  store: FederationStore;
  /** Read-only use: calibration statistics (services/calibration-statistics.ts). */
  blobs: Pick<BlobStore, 'get'>;
  logger: Logger;
  /** Bearer token of every admin route (mutations and reads). */
  adminToken: string;
  /** Read-only bearer token of the task list and the privacy audit routes (`/v1/tasks/:id/privacy*`); the admin token works there too. */
  auditToken: string;
  /** Largest task-creation body (admin only), in bytes. Default 64 MiB (a model's initial weights travel in the body). */
  bodyLimitBytes?: number;
  /** Largest body of every other request, in bytes. Default 64 KiB. */
  smallBodyLimitBytes?: number;
  /** Backoff on failed authentication (per peer address and per token). Default a new {@link createAuthThrottle}. */
  authThrottle?: AuthThrottle;
  /** Directory of the built dashboard. Default dist/dashboard of this package. */
  dashboardDir?: string;
  /** HTTPS with this material (reloaded on change). Default cleartext HTTP. */
  tls?: TlsSource;
  /** Connection and request timeouts. Default {@link DEFAULT_HTTP_LIMITS}. */
  limits?: HttpLimits;
  /** Enrolment tokens, device identities and the audit trail's storage. */
  security: SecurityStore;
  /** Device revocation (takes effect on gRPC calls in flight). */
  deviceAuth: DeviceAuth;
  /** Where admin actions and failed authentications are recorded. */
  auditTrail: AuditTrail;
  /**
   * The gRPC port's device handlers: given, the device protocol is also served here with the
   * Connect protocol (browsers; http/connect.ts). Default none.
   */
  deviceHandlers?: FederationServiceHandlers;
  /** Resumable uploads of the Connect routes (bounded store; the gRPC port's upload guard). */
  connect?: Pick<ConnectOptions, 'uploadStoreBytes' | 'uploadGuard' | 'allowedOrigins'>;
}

/** Defaults of {@link HttpAppOptions.limits} (the same as the configuration's). */
export const DEFAULT_HTTP_LIMITS: HttpLimits = { connectionTimeoutMs: 60_000, requestTimeoutMs: 120_000, keepAliveTimeoutMs: 5_000, headersTimeoutMs: 20_000 };

/**
 * The REST server: HTTPS when `tls` is given (a new certificate applies to new connections via
 * `setSecureContext`), with its timeouts: idle socket, whole request, headers, keep-alive. With a
 * REST client CA (VEIL_TLS_REST_CLIENT_CA_FILE), every caller must present a certificate chaining to
 * it: a caller without one fails the TLS handshake before any HTTP is read (mutual TLS for admin
 * and audit callers; the bearer tokens are still required on top).
 */
function createServer(handler: http.RequestListener, tls: TlsSource | undefined, limits: HttpLimits): http.Server {
  const timeouts = { requestTimeout: limits.requestTimeoutMs, headersTimeout: limits.headersTimeoutMs, keepAliveTimeout: limits.keepAliveTimeoutMs };
  let server: http.Server;
  if (tls === undefined) server = http.createServer(timeouts, handler);
  else {
    // Client certificates are verified against the REST client CA; without one, against the devices'
    // (VEIL_TLS_CLIENT_CA_FILE), for the Connect device routes, which refuse a connection whose
    // certificate did not verify (the handshake itself then admits callers without one: admins).
    const context = (m: TlsMaterial): SecureContextOptions => {
      const ca = m.restClientCa ?? m.clientCa;
      return { cert: m.cert, key: m.key, minVersion: 'TLSv1.2', ...(ca !== null && { ca }) };
    };
    // Whether certificates are asked for is fixed at start (the CA itself is reloaded).
    const mutual = tls.current().restClientCa !== null;
    const devicesMutual = tls.current().clientCa !== null;
    const secure = https.createServer({ ...timeouts, ...context(tls.current()), requestCert: mutual || devicesMutual, rejectUnauthorized: mutual }, handler);
    tls.onChange((material) => secure.setSecureContext(context(material)));
    // Fastify listens, routes and closes it as it does its own http.Server.
    server = secure as unknown as http.Server;
  }
  server.setTimeout(limits.connectionTimeoutMs);
  return server;
}

/**
 * Builds the REST API (Fastify): wiring only. Authentication is a root hook
 * (auth.ts, route `config.auth`); each group of routes is a plugin with thin
 * handlers over a service (services/), which holds the logic. The caller
 * listens and closes it.
 */
export async function buildHttpApp(options: HttpAppOptions): Promise<FastifyInstance> {
  const { engine, store } = options;
  const limits = options.limits ?? DEFAULT_HTTP_LIMITS;
  const app = Fastify({
    serverFactory: (handler) => createServer(handler, options.tls, limits),
    loggerInstance: options.logger.child({ component: 'http' }) as FastifyBaseLogger,
    // Every route reads at most this much; only task creation (admin, checked before the body is read) more.
    bodyLimit: options.smallBodyLimitBytes ?? 64 * 1024,
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', allErrors: false } },
  });

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Veil coordinator API',
        version: '1',
        description: 'Admin and audit API of the Veil federated-learning coordinator. Devices use the gRPC protocol (proto/veil/v1).',
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });

  // Route `config.auth`: 'admin' (the default under /v1/), 'audit' (audit or admin token), 'public'.
  await app.register(httpAuthPlugin, {
    adminToken: options.adminToken,
    auditToken: options.auditToken,
    throttle: options.authThrottle ?? createAuthThrottle(),
    // Wrong tokens are audited; missing ones (no guess) and refusals during a lockout are only logged.
    onFailure: (failure) => {
      if (failure.reason === 'invalid') options.auditTrail.record(authFailureEvent(failure));
    },
  });
  await app.register(httpAuditPlugin, { trail: options.auditTrail });
  // After authentication (hooks run in order): NUL characters and deep nesting are a 400 before validation.
  await app.register(bodyGuardPlugin, {});

  app.setErrorHandler((error: unknown, request, reply: FastifyReply) => {
    const validation = (error as { validation?: unknown; statusCode?: number; message?: string }) ?? {};
    if (validation.validation !== undefined) {
      return reply.status(400).send({ code: 'invalid_argument', message: validation.message ?? 'invalid request' });
    }
    if (!(error instanceof VeilError) && typeof validation.statusCode === 'number' && validation.statusCode < 500) {
      return reply.status(validation.statusCode).send({ code: 'invalid_argument', message: validation.message ?? 'bad request' });
    }
    const e = VeilError.from(error);
    if (e.code === 'internal') request.log.error({ err: e.cause ?? e }, 'request failed');
    // A transient condition of the coordinator (e.g. a busy database): worth a warning, not an error; no cause (it holds the query).
    else if (e.code === 'unavailable') request.log.warn({ code: e.code, reason: e.message }, 'request rejected');
    if (e.retryAfterSeconds !== undefined) void reply.header('retry-after', String(e.retryAfterSeconds));
    return reply.status(HTTP_STATUS[e.code]).send({ code: e.code, message: e.publicMessage });
  });

  const tasks = createTaskOverviewService({ store });
  const privacy = createPrivacyAuditService({ store });

  await app.register(healthRoutes, { store });
  await app.register(taskRoutes, { engine, tasks, createBodyLimitBytes: options.bodyLimitBytes ?? 64 * 1024 * 1024 });
  await app.register(roundRoutes, { tasks });
  await app.register(modelRoutes, { engine, store, tasks });
  await app.register(privacyRoutes, { privacy });
  await app.register(committeeRoutes, { tasks });
  const calibration = createCalibrationStatisticsService({ getTask: tasks.getTask, getRound: (id, n) => store.getRound(id, n), readBlob: (ref) => options.blobs.get(ref) });
  const exporter = createModelExportService({
    getTask: tasks.getTask,
    readModelVersion: (id, v) => engine.readModelVersion(id, v),
    calibratedRanges: async (id, v) => {
      const file = await calibration.find(id, v);
      // A shared-key task's statistics are encrypted (only key holders choose its ranges).
      return file !== null && file.format === 'veil-calibration-v1' ? { activationRanges: file.activationRanges, noiseSwamped: file.noiseSwamped ?? [] } : null;
    },
  });
  await app.register(exportRoutes, { exporter, calibration });
  const live = createLiveRounds({ engine, store });
  app.addHook('onClose', async () => live.close());
  await app.register(eventRoutes, { live, tasks });
  await app.register(dashboardRoutes, options.dashboardDir === undefined ? {} : { dir: options.dashboardDir });
  await app.register(deviceRoutes, { security: options.security, deviceAuth: options.deviceAuth, getTask: tasks.getTask, now: () => engine.now() });
  await app.register(auditRoutes, { security: options.security, trail: options.auditTrail });
  if (options.deviceHandlers !== undefined) {
    const tls = options.tls;
    await connectRoutes(app, {
      handlers: options.deviceHandlers,
      engine,
      deviceAuth: options.deviceAuth,
      logger: options.logger,
      ...options.connect,
      // Mutual TLS for devices (VEIL_TLS_CLIENT_CA_FILE) holds on this port too, not only on gRPC.
      ...(tls !== undefined && { requireClientCertificate: () => tls.current().clientCa !== null }),
    });
  }
  return app;
}
