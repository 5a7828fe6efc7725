import { createHash, hash as oneShotHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import type { Logger } from 'pino';
import { MAX_CLIENT_NAME_LENGTH } from '@veil/protocol';
import { VeilError } from '../errors.js';
import type { Client, Task } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';
import { addressKey, peerAddress, type AuthThrottle } from '../security/auth-throttle.js';
import type { SecurityStore } from '../security/ports.js';

/** Where a device call came in: the gRPC port, or the Connect routes of the HTTP port (http/connect.ts). */
export type DeviceSurface = 'grpc' | 'connect';

/** Marks the call objects the Connect routes hand to the gRPC handlers with their surface ({@link surfaceOf}). */
export const DEVICE_SURFACE: unique symbol = Symbol('veil.deviceSurface');

/** The surface a handler's call came in on: `connect` when the Connect routes marked it, else `grpc`. */
export function surfaceOf(call: object): DeviceSurface {
  return (call as { [DEVICE_SURFACE]?: DeviceSurface })[DEVICE_SURFACE] ?? 'grpc';
}

/** A failed device authentication or enrolment, as reported to the log and the audit trail. */
export interface DeviceAuthFailure {
  /** `Join` or the call that presented a device credential. */
  call: string;
  /** The port the call came in on. */
  surface: DeviceSurface;
  /** `missing`, `invalid` (unknown or revoked credential, wrong enrolment secret or token), `locked_out`. */
  reason: 'missing' | 'invalid' | 'locked_out';
  sourceAddress: string;
  /** Join: the task the device tried to join (as sent, at most 64 characters). */
  taskId?: string;
}

export interface DeviceAuthOptions {
  store: FederationStore;
  /** Enrolment tokens and device identities. */
  security: SecurityStore;
  logger: Logger;
  /** Backoff on failed authentication, keyed by peer address and by presented credential. */
  throttle: AuthThrottle;
  /** The global enrolment secret (valid for every task), or null: per-task tokens only. */
  enrolmentSecret: string | null;
  /** Reads a task (throws not_found). */
  getTask(taskId: string): Promise<Task>;
  /** Clock, ms since the epoch. Default `Date.now`. */
  now?: () => number;
  /** Called for every failed authentication (after it was logged). Default none. */
  onFailure?: (failure: DeviceAuthFailure) => void;
}

/** The Join request's fields. */
export interface EnrolRequest {
  taskId: string;
  enrolmentSecret: string;
  clientName: string;
}

/**
 * Device authentication and identities on gRPC: Join (global secret or per-task token, task
 * RUNNING, device cap), credential checks with lockout and peer addresses in failure logs, and
 * revocation that takes effect at once, also for calls in flight.
 */
export interface DeviceAuth {
  /**
   * The client a `Bearer <credential>` metadata entry belongs to; throws unauthenticated / rate_limited.
   * `surface` (default `grpc`) names the port in failure logs and the audit trail; the lockout is shared.
   * `peer`: the peer string, or a function giving it, called only when it is needed (a failure, or
   * while some key is locked out or has failures recorded).
   */
  authenticate(call: string, metadata: { get(key: string): unknown[] }, peer: string | (() => string), surface?: DeviceSurface): Promise<Client>;
  /** Enrols a device; returns its identity and credential (shown once). `surface` as for `authenticate`. */
  enrol(request: EnrolRequest, peer: string, surface?: DeviceSurface): Promise<{ client: Client; credential: string; task: Task }>;
  /**
   * Registers a call in flight of `client`: `cancel` runs if the client is revoked meanwhile.
   * Returns the function that unregisters it (call it when the call ends).
   */
  track(client: Client, cancel: () => void): () => void;
  /** Throws unauthenticated if the client was revoked (e.g. while its call waited). */
  assertActive(client: Client): void;
  /** Forgets the client's credential at once and cancels its calls in flight (after the store revoked it). */
  revoked(clientId: string): void;
}

const sha256Hex = (data: string): string => oneShotHash('sha256', data, 'hex');
const BEARER = /^Bearer ([A-Za-z0-9_-]{16,128})$/;
/** RFC 4122 textual form (any version): 8-4-4-4-12 hex digits. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
// eslint-disable-next-line no-control-regex
const CONTROL = /[\u0000-\u001f\u007f]/;
/** Longest enrolment secret or token accepted (longer ones are refused unread). */
const MAX_SECRET_LENGTH = 256;

export function createDeviceAuth(options: DeviceAuthOptions): DeviceAuth {
  const { store, security, throttle } = options;
  const now = options.now ?? Date.now;
  const log = options.logger.child({ component: 'grpc' });
  const secretDigest = options.enrolmentSecret === null ? null : createHash('sha256').update(options.enrolmentSecret).digest();
  const clients = new Map<string, Client>();
  const revokedIds = new Set<string>();
  const inFlight = new Map<string, Set<() => void>>();

  const fail = (failure: DeviceAuthFailure): void => {
    log.warn(failure, 'authentication failed');
    options.onFailure?.(failure);
  };
  const refuseIfLockedOut = (keys: string[], failure: DeviceAuthFailure): void => {
    const waitMs = throttle.retryAfterMs(keys);
    if (waitMs > 0) {
      fail({ ...failure, reason: 'locked_out' });
      throw new VeilError('rate_limited', 'too many failed authentication attempts; retry later', { retryAfterMs: waitMs });
    }
  };

  return {
    async authenticate(call, metadata, peer, surface = 'grpc') {
      const header = metadata.get('authorization')[0];
      const match = typeof header === 'string' ? BEARER.exec(header) : null;
      const hash = match === null ? null : sha256Hex(match[1]!);
      // Every device call comes here: the peer's address is read and parsed only when it matters.
      let address: string | null = null;
      const sourceAddress = (): string => (address ??= peerAddress(typeof peer === 'string' ? peer : peer()));
      const keys = (): string[] => [`grpc:addr:${addressKey(sourceAddress())}`, ...(hash === null ? [] : [`grpc:cred:${hash}`])];
      // No key has a failure on record: none is locked out (retryAfterMs would answer 0).
      if (throttle.size > 0) refuseIfLockedOut(keys(), { call, surface, reason: 'locked_out', sourceAddress: sourceAddress() });
      if (hash === null) {
        fail({ call, surface, reason: 'missing', sourceAddress: sourceAddress() });
        throw new VeilError('unauthenticated', 'missing or malformed client credential');
      }
      let client = clients.get(hash);
      if (client === undefined) {
        client = (await store.findClientByCredentialHash(hash)) ?? undefined;
        if (client === undefined || revokedIds.has(client.id)) {
          throttle.recordFailure(keys());
          fail({ call, surface, reason: 'invalid', sourceAddress: sourceAddress() });
          throw new VeilError('unauthenticated', 'unknown or revoked client credential');
        }
        clients.set(hash, client);
      }
      return client;
    },

    async enrol({ taskId, enrolmentSecret, clientName }, peer, surface = 'grpc') {
      const sourceAddress = peerAddress(peer);
      if (enrolmentSecret.length > MAX_SECRET_LENGTH) throw new VeilError('invalid_argument', `enrolment_secret is longer than ${MAX_SECRET_LENGTH} characters`);
      const keys = [`grpc:addr:${addressKey(sourceAddress)}`, `grpc:enrol:${sha256Hex(enrolmentSecret)}`];
      const failure: DeviceAuthFailure = { call: 'Join', surface, reason: 'invalid', sourceAddress, taskId: taskId.slice(0, 64) };
      refuseIfLockedOut(keys, failure);
      if (!UUID.test(taskId)) throw new VeilError('invalid_argument', 'task_id must be a UUID');
      if (clientName.length > MAX_CLIENT_NAME_LENGTH) {
        throw new VeilError('invalid_argument', `client_name is longer than ${MAX_CLIENT_NAME_LENGTH} characters`);
      }
      if (CONTROL.test(clientName)) throw new VeilError('invalid_argument', 'client_name must not contain control characters');
      // The global secret (if configured), else a per-task token. Nothing about the task is told
      // (not even whether it exists) before the secret checks out.
      const global = secretDigest !== null && timingSafeEqual(createHash('sha256').update(enrolmentSecret).digest(), secretDigest);
      const tokenHash = global ? null : sha256Hex(enrolmentSecret);
      const refuse = (): never => {
        throttle.recordFailure(keys);
        fail(failure);
        throw new VeilError('unauthenticated', 'wrong enrolment secret or token');
      };
      if (tokenHash !== null) {
        const token = await security.findEnrolmentToken(tokenHash);
        if (token === null || token.taskId.toLowerCase() !== taskId.toLowerCase()) refuse();
      }
      const task = await options.getTask(taskId.toLowerCase());
      const credential = randomBytes(32).toString('base64url');
      const result = await security.enrol({
        client: { id: randomUUID(), taskId: task.id, name: clientName === '' ? null : clientName, credentialHash: sha256Hex(credential) },
        tokenHash,
        maxDevices: task.settings.maxDevices,
        now: new Date(now()),
      });
      switch (result.kind) {
        case 'enrolled':
          log.info({ taskId: task.id, clientId: result.client.id, viaToken: tokenHash !== null }, 'client joined');
          return { client: result.client, credential, task };
        case 'no_task':
          throw new VeilError('not_found', `task ${task.id} does not exist`);
        case 'not_running':
          throw new VeilError('failed_precondition', `task ${task.id} is not running (${result.status}); devices can join RUNNING tasks only`);
        case 'bad_token':
          // Expired, revoked or used up between the lookup and the transaction (or before it).
          return refuse();
        case 'device_cap':
          throw new VeilError('resource_exhausted', `task ${task.id} has reached its cap of ${result.maxDevices} devices`);
      }
    },

    track(client, cancel) {
      let set = inFlight.get(client.id);
      if (set === undefined) inFlight.set(client.id, (set = new Set()));
      set.add(cancel);
      return () => {
        set.delete(cancel);
        if (set.size === 0 && inFlight.get(client.id) === set) inFlight.delete(client.id);
      };
    },

    assertActive(client) {
      if (revokedIds.has(client.id)) throw new VeilError('unauthenticated', 'the client credential was revoked');
    },

    revoked(clientId) {
      revokedIds.add(clientId);
      for (const [hash, client] of clients) if (client.id === clientId) clients.delete(hash);
      const calls = inFlight.get(clientId);
      inFlight.delete(clientId);
      for (const cancel of calls ?? []) {
        try {
          cancel();
        } catch (error) {
          log.warn({ err: error, clientId }, 'cancelling a revoked client call failed');
        }
      }
    },
  };
}
