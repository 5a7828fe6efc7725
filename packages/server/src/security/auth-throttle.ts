import { isIP } from 'node:net';

/** Options of {@link createAuthThrottle}. */
export interface AuthThrottleOptions {
  /** Failed attempts a key may make before it is locked out. Default 10. */
  freeFailures?: number;
  /** Lockout after the first failure beyond `freeFailures`, ms; each further failure doubles it. Default 1 000. */
  baseLockoutMs?: number;
  /** Longest lockout, ms. Default 900 000 (15 minutes). */
  maxLockoutMs?: number;
  /** A key's failures are forgotten this long after its last failure, ms. Default 3 600 000 (1 hour). */
  forgetAfterMs?: number;
  /** Keys remembered at most (memory bound); the key whose last failure is oldest goes first. Default 100 000. */
  maxKeys?: number;
  /** Clock, ms since the epoch. Default `Date.now`. */
  now?: () => number;
}

/**
 * Exponential backoff on failed authentication, per key (a peer address, a presented credential,
 * an enrolment target). In memory, bounded. A key is locked out only once it has failed more than
 * `freeFailures` times; while locked out every attempt is refused before any credential is
 * checked, so a guess that happens to be right during a lockout is not accepted either.
 */
export interface AuthThrottle {
  /** Milliseconds until all of `keys` may try again (0: go ahead). */
  retryAfterMs(keys: readonly string[]): number;
  /** Counts a failed attempt against each key; returns the lockout now in force for them, ms (0: none). */
  recordFailure(keys: readonly string[]): number;
  /** Keys currently remembered (for tests and metrics; 0: no key has a failure on record, none is locked out). */
  readonly size: number;
}

interface Entry {
  failures: number;
  lastFailureAt: number;
  lockedUntil: number;
}

export function createAuthThrottle(options: AuthThrottleOptions = {}): AuthThrottle {
  const freeFailures = options.freeFailures ?? 10;
  const baseLockoutMs = options.baseLockoutMs ?? 1_000;
  const maxLockoutMs = options.maxLockoutMs ?? 15 * 60_000;
  const forgetAfterMs = options.forgetAfterMs ?? 60 * 60_000;
  const maxKeys = options.maxKeys ?? 100_000;
  const now = options.now ?? Date.now;
  for (const [name, value] of Object.entries({ freeFailures, baseLockoutMs, maxLockoutMs, forgetAfterMs, maxKeys })) {
    if (!Number.isSafeInteger(value) || value < (name === 'freeFailures' ? 0 : 1)) {
      throw new RangeError(`AuthThrottle ${name} must be a positive integer, got ${value}`);
    }
  }
  if (maxLockoutMs < baseLockoutMs) throw new RangeError('AuthThrottle maxLockoutMs must be at least baseLockoutMs');
  // Insertion order = order of last failure (an entry is re-inserted at each failure): the first is the stalest.
  const entries = new Map<string, Entry>();

  const live = (key: string, at: number): Entry | undefined => {
    const entry = entries.get(key);
    if (entry !== undefined && at - entry.lastFailureAt >= forgetAfterMs && at >= entry.lockedUntil) {
      entries.delete(key);
      return undefined;
    }
    return entry;
  };

  return {
    retryAfterMs(keys) {
      const at = now();
      let wait = 0;
      for (const key of keys) {
        const entry = live(key, at);
        if (entry !== undefined) wait = Math.max(wait, entry.lockedUntil - at);
      }
      return wait;
    },
    recordFailure(keys) {
      const at = now();
      let wait = 0;
      for (const key of keys) {
        const entry = live(key, at) ?? { failures: 0, lastFailureAt: at, lockedUntil: 0 };
        entry.failures++;
        entry.lastFailureAt = at;
        const over = entry.failures - freeFailures;
        if (over > 0) {
          // 2^(over-1) * base, capped; the exponent is capped first so the power stays finite.
          const lockout = Math.min(maxLockoutMs, baseLockoutMs * 2 ** Math.min(over - 1, 40));
          entry.lockedUntil = Math.max(entry.lockedUntil, at + lockout);
        }
        entries.delete(key);
        entries.set(key, entry);
        wait = Math.max(wait, entry.lockedUntil - at);
      }
      while (entries.size > maxKeys) entries.delete(entries.keys().next().value!);
      return Math.max(0, wait);
    },
    get size() {
      return entries.size;
    },
  };
}

/**
 * The address part of a peer string (`1.2.3.4:5678`, `[::1]:5678`, `::1:5678`, `ipv4:...`), or the
 * string itself when it holds no IP address.
 */
export function peerAddress(peer: string): string {
  const s = peer.replace(/^ipv[46]:/, '');
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(s);
  if (bracketed !== null) return bracketed[1]!;
  if (isIP(s) !== 0) return s;
  const withPort = /^(.*):\d+$/.exec(s);
  if (withPort !== null && isIP(withPort[1]!) !== 0) return withPort[1]!;
  return s;
}

/**
 * The throttling key of an address: IPv4 as is (also when IPv4-mapped), IPv6 by its /64 prefix
 * (one host usually holds a whole /64, so per-address keys would cost it nothing to evade).
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped !== null) return mapped[1]!;
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.split('::');
  const left = head === '' ? [] : head.split(':');
  const right = address.includes('::') ? (tail === '' ? [] : tail.split(':')) : [];
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}
