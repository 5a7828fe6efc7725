import { describe, expect, test } from 'vitest';
import { ClientError, parseRetryAfter } from './errors.js';
import { withRetry } from './retry.js';

describe('withRetry and retry-after', () => {
  test('a retryable error with a retry-after waits at least that long (plus jitter below the backoff)', async () => {
    const delays: number[] = [];
    let calls = 0;
    const result = await withRetry(
      async () => {
        calls++;
        if (calls === 1) throw new ClientError('unavailable', 'the database is busy; retry later', { retryAfterMs: 120 });
        return 'ok';
      },
      { initialDelayMs: 5, onRetry: (_error, _attempt, delayMs) => delays.push(delayMs) },
    );
    expect(result).toBe('ok');
    expect(delays).toHaveLength(1);
    expect(delays[0]).toBeGreaterThanOrEqual(120);
    expect(delays[0]).toBeLessThan(125);
  });

  test('without a retry-after the delay is the jittered backoff alone', async () => {
    const delays: number[] = [];
    let calls = 0;
    await withRetry(
      async () => {
        if (++calls === 1) throw new ClientError('unavailable', 'down');
      },
      { initialDelayMs: 5, onRetry: (_error, _attempt, delayMs) => delays.push(delayMs) },
    );
    expect(delays[0]).toBeLessThan(5);
  });

  test('retry-after values: delay-seconds only', () => {
    expect(parseRetryAfter('1')).toBe(1000);
    expect(parseRetryAfter(' 20 ')).toBe(20_000);
    for (const bad of [undefined, null, '', '-1', '1.5', 'Wed, 21 Oct 2026 07:28:00 GMT', 'soon']) expect(parseRetryAfter(bad)).toBeUndefined();
  });
});
