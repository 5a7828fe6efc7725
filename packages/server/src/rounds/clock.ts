/** Wall clock in ms; injected so tests can control time. */
export interface Clock {
  now(): number;
}

/**
 * Schedules callbacks; injected with the {@link Clock} so that deadlines and
 * long-poll timeouts follow the same (possibly fake) time in tests.
 */
export interface Timer {
  /** Runs `callback` once after `delayMs` (>= 0); returns a function that cancels it (idempotent). */
  schedule(callback: () => void, delayMs: number): () => void;
}

export const systemClock: Clock = { now: () => Date.now() };

/** `setTimeout`, unreferenced: a pending deadline or long-poll never keeps the process alive by itself. */
export const systemTimer: Timer = {
  schedule(callback, delayMs) {
    const handle = setTimeout(callback, delayMs);
    handle.unref?.();
    return () => clearTimeout(handle);
  },
};

/**
 * A clock and timer for tests: time only moves when `advance` is called, and
 * callbacks due by then run in due-time order (ties in scheduling order).
 */
export interface FakeTime {
  readonly clock: Clock;
  readonly timer: Timer;
  /** Moves time forward by `ms` and runs the callbacks that became due, awaiting the microtasks between them. */
  advance(ms: number): Promise<void>;
  /** Callbacks scheduled and not yet run or cancelled. */
  readonly pending: number;
}

export function createFakeTime(startMs = 1_700_000_000_000): FakeTime {
  let now = startMs;
  let seq = 0;
  const queue = new Map<number, { at: number; callback: () => void }>();
  return {
    clock: { now: () => now },
    timer: {
      schedule(callback, delayMs) {
        const id = seq++;
        queue.set(id, { at: now + Math.max(0, delayMs), callback });
        return () => void queue.delete(id);
      },
    },
    async advance(ms) {
      const until = now + ms;
      for (;;) {
        let next: [number, { at: number; callback: () => void }] | undefined;
        for (const entry of queue) if (entry[1].at <= until && (next === undefined || entry[1].at < next[1].at)) next = entry;
        if (next === undefined) break;
        queue.delete(next[0]);
        now = Math.max(now, next[1].at);
        next[1].callback();
        await new Promise((resolve) => setImmediate(resolve));
      }
      now = until;
    },
    get pending() {
      return queue.size;
    },
  };
}
