import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import { VeilError } from '../errors.js';
import type { Client } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';
import { addressKey, peerAddress, type AuthThrottle } from '../security/auth-throttle.js';

/** A failed device authentication or enrolment, as reported to the log and the audit trail. */
export interface DeviceAuthFailure {
  /** `Join` or the call that presented a device credential. */
  call: string;
  /** `missing`, `invalid` (unknown credential or wrong enrolment secret), `locked_out`. */
  reason: 'missing' | 'invalid' | 'locked_out';
  sourceAddress: string;
  /** Join: the task the device tried to join. */
  taskId?: string;
}

export interface DeviceAuthOptions {
  store: FederationStore;
  logger: Logger;
  /** Backoff on failed authentication, keyed by peer address and by presented credential. */
  throttle: AuthThrottle;
  /** Called for every failed authentication (after it was logged). Default none. */
  onFailure?: (failure: DeviceAuthFailure) => void;
}

/** Authenticates devices on gRPC calls, with lockout and peer addresses in failure logs. */
export interface DeviceAuth {
  /** The client a `Bearer <credential>` metadata entry belongs to; throws unauthenticated / rate_limited. */
  authenticate(call: string, metadata: { get(key: string): unknown[] }, peer: string): Promise<Client>;
  /**
   * Runs `check` (which throws `unauthenticated` for a wrong enrolment secret) under the lockout of the
   * peer address and of the presented secret; wrong secrets count towards both.
   */
  guardEnrolment<T>(peer: string, secret: string, taskId: string, check: () => Promise<T>): Promise<T>;
}

const sha256Hex = (data: string): string => createHash('sha256').update(data).digest('hex');

export function createDeviceAuth(options: DeviceAuthOptions): DeviceAuth {
  const { store, throttle } = options;
  const log = options.logger.child({ component: 'grpc' });
  const clients = new Map<string, Client>();

  const fail = (failure: DeviceAuthFailure): void => {
    log.warn(failure, 'authentication failed');
    options.onFailure?.(failure);
  };
  const lockedOut = (keys: string[], failure: DeviceAuthFailure): void => {
    const waitMs = throttle.retryAfterMs(keys);
    if (waitMs > 0) {
      fail({ ...failure, reason: 'locked_out' });
      throw new VeilError('rate_limited', 'too many failed authentication attempts; retry later', { retryAfterMs: waitMs });
    }
  };

  return {
    async authenticate(call, metadata, peer) {
      const sourceAddress = peerAddress(peer);
      const header = metadata.get('authorization')[0];
      const match = typeof header === 'string' ? /^Bearer ([A-Za-z0-9_-]{16,128})$/.exec(header) : null;
      const hash = match === null ? null : sha256Hex(match[1]!);
      const keys = [`grpc:addr:${addressKey(sourceAddress)}`];
      if (hash !== null) keys.push(`grpc:cred:${hash}`);
      lockedOut(keys, { call, reason: 'locked_out', sourceAddress });
      if (hash === null) {
        fail({ call, reason: 'missing', sourceAddress });
        throw new VeilError('unauthenticated', 'missing or malformed client credential');
      }
      let client = clients.get(hash);
      if (client === undefined) {
        client = (await store.findClientByCredentialHash(hash)) ?? undefined;
        if (client === undefined) {
          throttle.recordFailure(keys);
          fail({ call, reason: 'invalid', sourceAddress });
          throw new VeilError('unauthenticated', 'unknown client credential');
        }
        clients.set(hash, client);
      }
      return client;
    },

    async guardEnrolment(peer, secret, taskId, check) {
      const sourceAddress = peerAddress(peer);
      const keys = [`grpc:addr:${addressKey(sourceAddress)}`, `grpc:enrol:${sha256Hex(secret)}`];
      const failure: DeviceAuthFailure = { call: 'Join', reason: 'invalid', sourceAddress, taskId: taskId.slice(0, 64) };
      lockedOut(keys, failure);
      try {
        return await check();
      } catch (error) {
        if (error instanceof VeilError && error.code === 'unauthenticated') {
          throttle.recordFailure(keys);
          fail(failure);
        }
        throw error;
      }
    },
  };
}
