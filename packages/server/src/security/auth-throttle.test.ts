import { describe, expect, test } from 'vitest';
import { addressKey, createAuthThrottle, peerAddress } from './auth-throttle.js';

describe('auth throttle', () => {
  const clock = () => {
    let t = 1_000_000;
    return { now: () => t, advance: (ms: number) => (t += ms) };
  };

  test('free failures, then lockouts doubling from the base up to the cap', () => {
    const c = clock();
    const throttle = createAuthThrottle({ freeFailures: 3, baseLockoutMs: 1_000, maxLockoutMs: 8_000, now: c.now });
    const key = ['addr:1.2.3.4'];
    expect([1, 2, 3].map(() => throttle.recordFailure(key))).toEqual([0, 0, 0]);
    expect(throttle.retryAfterMs(key)).toBe(0);
    const lockouts: number[] = [];
    for (let i = 0; i < 6; i++) {
      lockouts.push(throttle.recordFailure(key));
      c.advance(throttle.retryAfterMs(key));
    }
    expect(lockouts).toEqual([1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
  });

  test('a locked key stays locked until its time has passed, whatever else happens; other keys are free', () => {
    const c = clock();
    const throttle = createAuthThrottle({ freeFailures: 0, baseLockoutMs: 5_000, now: c.now });
    throttle.recordFailure(['a', 'b']);
    expect(throttle.retryAfterMs(['a'])).toBe(5_000);
    expect(throttle.retryAfterMs(['b', 'c'])).toBe(5_000);
    expect(throttle.retryAfterMs(['c'])).toBe(0);
    c.advance(4_999);
    expect(throttle.retryAfterMs(['a'])).toBe(1);
    c.advance(1);
    expect(throttle.retryAfterMs(['a'])).toBe(0);
  });

  test('failures are forgotten after forgetAfterMs without a new one', () => {
    const c = clock();
    const throttle = createAuthThrottle({ freeFailures: 2, baseLockoutMs: 1_000, forgetAfterMs: 60_000, now: c.now });
    throttle.recordFailure(['k']);
    throttle.recordFailure(['k']);
    c.advance(60_000);
    // The count restarted: two more free failures.
    expect(throttle.recordFailure(['k'])).toBe(0);
    expect(throttle.recordFailure(['k'])).toBe(0);
    expect(throttle.recordFailure(['k'])).toBe(1_000);
  });

  test('memory is bounded: beyond maxKeys the stalest key is dropped', () => {
    const c = clock();
    const throttle = createAuthThrottle({ freeFailures: 0, maxKeys: 100, now: c.now });
    for (let i = 0; i < 1_000; i++) {
      throttle.recordFailure([`k${i}`]);
      c.advance(1);
    }
    expect(throttle.size).toBe(100);
    expect(throttle.retryAfterMs(['k0'])).toBe(0);
    expect(throttle.retryAfterMs(['k999'])).toBeGreaterThan(0);
  });

  test('rejects nonsensical options', () => {
    expect(() => createAuthThrottle({ baseLockoutMs: 0 })).toThrow(/baseLockoutMs/);
    expect(() => createAuthThrottle({ maxKeys: 1.5 })).toThrow(/maxKeys/);
    expect(() => createAuthThrottle({ baseLockoutMs: 10, maxLockoutMs: 5 })).toThrow(/maxLockoutMs/);
  });

  test('peer strings and address keys', () => {
    expect(peerAddress('127.0.0.1:50123')).toBe('127.0.0.1');
    expect(peerAddress('ipv4:10.0.0.1:1')).toBe('10.0.0.1');
    expect(peerAddress('::1:50123')).toBe('::1');
    expect(peerAddress('[2001:db8::1]:443')).toBe('2001:db8::1');
    expect(peerAddress('2001:db8::1')).toBe('2001:db8::1');
    expect(peerAddress('unix:/tmp/x')).toBe('unix:/tmp/x');
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7');
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7');
    // Every address of one /64 shares a key; another /64 does not.
    expect(addressKey('2001:db8:0:1::1')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:0db8:0000:0001:ffff:1:2:3')).toBe('2001:db8:0:1::/64');
    expect(addressKey('2001:db8:0:2::1')).toBe('2001:db8:0:2::/64');
    expect(addressKey('::1')).toBe('0:0:0:0::/64');
  });
});
