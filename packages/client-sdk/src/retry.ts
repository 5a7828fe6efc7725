import { ClientError } from './errors.js';

export interface RetryOptions {
  /** Attempts before giving up, the first included. Default 8. */
  maxAttempts?: number;
  /** First backoff delay, ms. Default 250. */
  initialDelayMs?: number;
  /** Largest backoff delay, ms. Default 10 000. */
  maxDelayMs?: number;
}

/**
 * Runs `fn`, retrying retryable ClientErrors with exponential backoff and full
 * jitter (delay ~ U(0, min(max, initial·2^attempt))). When the coordinator
 * sent a retry-after, the delay is that wait plus the jitter (so devices told
 * the same wait do not return together). `onRetry` sees each failure.
 */
export async function withRetry<T>(
  fn: (attempt: number) => Promise<T>,
  options: RetryOptions & { signal?: AbortSignal; onRetry?: (error: ClientError, attempt: number, delayMs: number) => void } = {},
): Promise<T> {
  const maxAttempts = options.maxAttempts ?? 8;
  const initial = options.initialDelayMs ?? 250;
  const max = options.maxDelayMs ?? 10_000;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn(attempt);
    } catch (raw) {
      const error = ClientError.from(raw);
      if (!error.retryable || attempt >= maxAttempts || options.signal?.aborted) throw error;
      const delayMs = (error.retryAfterMs ?? 0) + Math.random() * Math.min(max, initial * 2 ** (attempt - 1));
      options.onRetry?.(error, attempt, delayMs);
      await sleep(delayMs, options.signal);
    }
  }
}

export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done(): void {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });
}
