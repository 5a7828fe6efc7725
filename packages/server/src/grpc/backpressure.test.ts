import { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { describe, expect, it } from 'vitest';
import { createByteBudget, holdReads } from './backpressure.js';

/**
 * An object-mode stream shaped like grpc-js's request stream: every `_read`
 * pulls one more message off the connection, which arrives a moment later
 * (grpc-js decodes it asynchronously).
 */
function requestStream(messages: number): { stream: Readable; pulled(): number } {
  let pulled = 0;
  const stream = new Readable({
    objectMode: true,
    read() {
      pulled++;
      const n = pulled;
      queueMicrotask(() => this.push(n <= messages ? { n } : null));
    },
  });
  return { stream, pulled: () => pulled };
}

describe('holdReads', () => {
  it('a paused stream alone keeps pulling messages (the read-ahead it exists to stop)', async () => {
    const { stream, pulled } = requestStream(100);
    stream.once('data', () => stream.pause());
    await nextTurn();
    expect(pulled()).toBeGreaterThan(10);
    stream.destroy();
  });

  it('while held, nothing past the current message is pulled; released, the rest arrives in order', async () => {
    const { stream, pulled } = requestStream(100);
    const reads = holdReads(stream);
    const seen: number[] = [];
    stream.on('data', (m: { n: number }) => {
      seen.push(m.n);
      if (m.n === 1) {
        reads.hold();
        stream.pause();
      }
    });
    for (let i = 0; i < 5; i++) await nextTurn();
    expect(seen).toEqual([1]);
    expect(pulled()).toBe(1);

    const ended = new Promise((resolve) => stream.once('end', resolve));
    reads.release();
    stream.resume();
    await ended;
    expect(seen).toEqual(Array.from({ length: 100 }, (_, i) => i + 1));
  });
});

describe('createByteBudget', () => {
  it('grants up to the budget at once, and the rest in arrival order as bytes are released', async () => {
    const budget = createByteBudget(100);
    const order: string[] = [];
    const a = await budget.acquire(60);
    const b = await budget.acquire(40);
    const c = budget.acquire(50).then((release) => (order.push('c'), release));
    const d = budget.acquire(10).then((release) => (order.push('d'), release));
    await nextTurn();
    expect(order).toEqual([]); // d fits, but waits behind c: large requests are not starved
    a();
    const releaseC = await c;
    const releaseD = await d;
    expect(order).toEqual(['c', 'd']);
    b();
    releaseC();
    releaseD();
  });

  it('releases are idempotent, and a request above the budget runs alone', async () => {
    const budget = createByteBudget(100);
    const big = await budget.acquire(1_000);
    let small = false;
    const pending = budget.acquire(1).then((release) => ((small = true), release));
    await nextTurn();
    expect(small).toBe(false);
    big();
    big();
    const release = await pending;
    expect(small).toBe(true);
    // The double release above freed the big request's bytes once: only 99 are free now.
    let fits = false;
    const whole = budget.acquire(100).then((r) => ((fits = true), r));
    await nextTurn();
    expect(fits).toBe(false);
    release();
    (await whole)();
  });
});
