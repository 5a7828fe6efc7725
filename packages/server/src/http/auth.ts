import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { VeilError } from '../errors.js';
import { addressKey, type AuthThrottle } from '../security/auth-throttle.js';

/** Who a request authenticated as: the admin token or the read-only audit token. */
export type Principal = 'admin' | 'audit';

/**
 * Which credential a route needs (route `config.auth`): `admin` (the admin token), `audit` (the
 * audit or the admin token) or `public` (none). Routes under `/v1/` without the setting need
 * `admin`; other routes (the OpenAPI page) are public.
 */
export type RouteAuth = Principal | 'public';

declare module 'fastify' {
  interface FastifyContextConfig {
    auth?: RouteAuth;
  }
  interface FastifyRequest {
    /** Set by the auth hook before the body is read; null on public routes. */
    principal: Principal | null;
  }
}

/** A failed authentication, as the auth hook reports it (to the log and the audit trail). */
export interface AuthFailure {
  /** `missing` (no bearer token), `invalid` (wrong token), `locked_out` (refused during a lockout). */
  reason: 'missing' | 'invalid' | 'locked_out';
  method: string;
  /** Route pattern when one matched (`/v1/tasks/:id`), else the path without its query. */
  route: string;
  sourceAddress: string;
}

export interface HttpAuthOptions {
  adminToken: string;
  auditToken: string;
  /** Backoff on failed authentication, keyed by peer address and by presented token. */
  throttle: AuthThrottle;
  /** Called for every failed authentication (after it was logged). Default none. */
  onFailure?: (failure: AuthFailure, request: FastifyRequest) => void;
}

const digest = (token: string): Buffer => createHash('sha256').update(token).digest();

/**
 * Authentication BEFORE the body is read: an `onRequest` hook checks the bearer token (and the
 * lockout of the peer address and of the token) and refuses with 401/403/429, so an anonymous
 * caller's body is never parsed nor validated. Registered on the root instance (fastify-plugin),
 * it covers every route, including unknown ones under `/v1/`.
 */
const httpAuth: FastifyPluginAsync<HttpAuthOptions> = async (app: FastifyInstance, options) => {
  const adminDigest = digest(options.adminToken);
  const auditDigest = digest(options.auditToken);
  const { throttle } = options;
  app.decorateRequest('principal', null);

  app.addHook('onRequest', async (request) => {
    const path = request.url.split('?', 1)[0]!;
    const need: RouteAuth = request.routeOptions.config.auth ?? (path.startsWith('/v1/') || path === '/v1' ? 'admin' : 'public');
    if (need === 'public') return;
    const sourceAddress = request.ip;
    const fail = (reason: AuthFailure['reason']): void => {
      const failure: AuthFailure = { reason, method: request.method, route: request.routeOptions.url ?? path, sourceAddress };
      request.log.warn(failure, 'authentication failed');
      options.onFailure?.(failure, request);
    };
    const header = request.headers.authorization ?? '';
    const match = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(header);
    const given = match === null ? null : digest(match[1]!);
    const keys = [`rest:addr:${addressKey(sourceAddress)}`];
    if (given !== null) keys.push(`rest:token:${given.toString('base64url')}`);
    const waitMs = throttle.retryAfterMs(keys);
    if (waitMs > 0) {
      fail('locked_out');
      throw new VeilError('rate_limited', 'too many failed authentication attempts; retry later', { retryAfterMs: waitMs });
    }
    if (given === null) {
      // No guess was made (a browser, a health probe on the wrong path): not counted towards a lockout.
      fail('missing');
      throw new VeilError('unauthenticated', 'missing bearer token');
    }
    const isAdmin = timingSafeEqual(given, adminDigest);
    const isAuditor = timingSafeEqual(given, auditDigest);
    if (!isAdmin && !isAuditor) {
      throttle.recordFailure(keys);
      fail('invalid');
      throw new VeilError('permission_denied', 'invalid token');
    }
    if (need === 'admin' && !isAdmin) {
      throw new VeilError('permission_denied', 'the audit token is read-only and limited to the privacy routes');
    }
    request.principal = isAdmin ? 'admin' : 'audit';
  });
};

/** The auth hook as a root-level plugin (see {@link HttpAuthOptions}). */
export const httpAuthPlugin = fp(httpAuth, { name: 'veil-http-auth', fastify: '5.x' });
