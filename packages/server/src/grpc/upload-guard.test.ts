import { describe, expect, it, vi } from 'vitest';
import { VeilError } from '../errors.js';
import { createByteBudget } from './backpressure.js';
import { createRateMonitor, createUploadGuard, tooSlowError } from './upload-guard.js';

describe('upload guard', () => {
  it('limits the uploads one device has open, and frees a place when one closes', () => {
    const guard = createUploadGuard({ maxStreamsPerDevice: 2 });
    const a = guard.open({ clientId: 'a', taskId: 't', roundNumber: 1 }, () => {});
    guard.open({ clientId: 'a', taskId: 't', roundNumber: 1 }, () => {});
    expect(() => guard.open({ clientId: 'a', taskId: 't', roundNumber: 1 }, () => {})).toThrow(/already has 2 uploads open/);
    // Another device is not affected.
    guard.open({ clientId: 'b', taskId: 't', roundNumber: 1 }, () => {});
    a.close();
    a.close(); // idempotent
    expect(guard.openCount).toBe(2);
    expect(() => guard.open({ clientId: 'a', taskId: 't', roundNumber: 1 }, () => {})).not.toThrow();
  });

  it("cancels a closed round's receiving uploads, not those already processing nor other rounds'", () => {
    const guard = createUploadGuard();
    const cancelled: string[] = [];
    const cancel = (name: string) => (error: VeilError) => cancelled.push(`${name}: ${error.code} ${error.message}`);
    guard.open({ clientId: 'a', taskId: 't', roundNumber: 1 }, cancel('a'));
    guard.open({ clientId: 'b', taskId: 't', roundNumber: 1 }, cancel('b')).processing();
    guard.open({ clientId: 'c', taskId: 't', roundNumber: 2 }, cancel('c'));
    guard.open({ clientId: 'd', taskId: 'u', roundNumber: 1 }, cancel('d'));
    guard.roundClosed('t', 1, 'FAILED');
    expect(cancelled).toEqual(['a: failed_precondition round 1 is FAILED: this upload did not finish in time']);
  });

  it('refuses bad options', () => {
    expect(() => createUploadGuard({ idleTimeoutMs: 0 })).toThrow(RangeError);
    expect(() => createUploadGuard({ maxStreamsPerDevice: 1.5 })).toThrow(RangeError);
  });
});

describe('byte budget with abort', () => {
  it('an aborted waiter leaves the queue and the next one is granted', async () => {
    const budget = createByteBudget(10);
    const first = await budget.acquire(10);
    const gone = new AbortController();
    const stuck = budget.acquire(10, gone.signal);
    let granted = false;
    const next = budget.acquire(5).then((release) => {
      granted = true;
      return release;
    });
    gone.abort(new Error('went away'));
    await expect(stuck).rejects.toThrow('went away');
    first();
    (await next)();
    expect(granted).toBe(true);
    // Aborted before asking: rejected at once, nothing taken.
    await expect(budget.acquire(1, AbortSignal.abort(new Error('already')))).rejects.toThrow('already');
    (await budget.acquire(10))();
  });

  it('minimum rate: no check during the grace period, then a window short of rate x window fires once; 0 is off', () => {
    vi.useFakeTimers();
    try {
      const settings = { minBytesPerSecond: 100, windowMs: 1_000, graceMs: 500 };
      const slow: number[] = [];
      const monitor = createRateMonitor(settings, (observed) => slow.push(observed));
      // Nothing at all during the grace period is fine.
      vi.advanceTimersByTime(499);
      expect(slow).toEqual([]);
      vi.advanceTimersByTime(1);
      // Window 1: exactly 100 bytes in 1 s passes.
      monitor.add(60);
      monitor.add(40);
      vi.advanceTimersByTime(1_000);
      expect(slow).toEqual([]);
      // Window 2: bytes of the previous window do not count; 99 bytes is too slow.
      monitor.add(99);
      vi.advanceTimersByTime(1_000);
      expect(slow).toEqual([99]);
      vi.advanceTimersByTime(10_000);
      expect(slow).toEqual([99]);

      const stopped: number[] = [];
      const done = createRateMonitor(settings, (o) => stopped.push(o));
      done.stop(); // e.g. the whole payload arrived
      vi.advanceTimersByTime(10_000);
      expect(stopped).toEqual([]);
      const off: number[] = [];
      createRateMonitor({ ...settings, minBytesPerSecond: 0 }, (o) => off.push(o));
      vi.advanceTimersByTime(10_000);
      expect(off).toEqual([]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('a credit taken back in its window counts for nothing (Connect settles a PutChunk body to the bytes it added)', () => {
    vi.useFakeTimers();
    try {
      const slow: number[] = [];
      const monitor = createRateMonitor({ minBytesPerSecond: 100, windowMs: 1_000, graceMs: 10 }, (observed) => slow.push(observed));
      vi.advanceTimersByTime(10);
      // 500 bytes credited while a body arrived, 450 of them framing or refused: 50 bytes/s.
      monitor.add(500);
      monitor.add(-450);
      vi.advanceTimersByTime(1_000);
      expect(slow).toEqual([50]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('tooSlowError: DEADLINE_EXCEEDED naming the rate seen and the one required (the text of both ports)', () => {
    const error = tooSlowError(12, { minBytesPerSecond: 1024, windowMs: 30_000 });
    expect([error.code, error.message]).toEqual(['deadline_exceeded', 'upload too slow: 12 bytes/s over 30000 ms, at least 1024 bytes/s required']);
  });

  it('validates the minimum-rate settings', () => {
    expect(createUploadGuard().minRate).toEqual({ minBytesPerSecond: 1024, windowMs: 30_000, graceMs: 10_000 });
    expect(() => createUploadGuard({ minBytesPerSecond: -1 })).toThrow(RangeError);
    expect(() => createUploadGuard({ minRateWindowMs: 0 })).toThrow(RangeError);
  });
});
