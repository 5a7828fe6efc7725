/**
 * Backpressure for the gRPC adapter: a byte budget shared by concurrent
 * transfers, and a way to make a paused grpc-js request stream really stop
 * its sender. Together they bound the memory that uploads and downloads can
 * hold, whatever the number of devices transferring at once.
 */
import type { Readable } from 'node:stream';

/**
 * Makes pausing a grpc-js request stream stop the sender. grpc-js's request
 * stream is an object-mode Readable: even paused, Node keeps calling its
 * `_read` until 16 messages are buffered, and each call pulls one more
 * message (up to 1 MiB) off the HTTP/2 stream. While held, such requests are
 * deferred instead, so grpc-js leaves the HTTP/2 stream paused, the stream's
 * flow-control window (64 KiB by default) fills and the device stops sending.
 */
export function holdReads(stream: Readable): { hold(): void; release(): void } {
  const read = stream._read.bind(stream);
  let held = false;
  let deferred: number | null = null;
  stream._read = (size: number): void => {
    if (held) deferred = size;
    else read(size);
  };
  return {
    hold() {
      held = true;
    },
    release() {
      held = false;
      if (deferred !== null) {
        const size = deferred;
        deferred = null;
        read(size);
      }
    },
  };
}

/**
 * A budget of bytes shared by concurrent transfers (a weighted semaphore):
 * `acquire(bytes)` resolves, strictly in arrival order (a large request is
 * never starved by small ones), once that many bytes are free, with an
 * idempotent release. A request above the whole budget is granted the whole
 * budget, i.e. runs alone. A request whose `signal` aborts before it is
 * granted leaves the queue (rejecting with the signal's reason), so a transfer
 * that went away never holds a place.
 */
export function createByteBudget(capacityBytes: number): { acquire(bytes: number, signal?: AbortSignal): Promise<() => void> } {
  let free = capacityBytes;
  const queue: Array<{ bytes: number; grant(): void }> = [];
  const grantWaiting = (): void => {
    while (queue.length > 0 && queue[0]!.bytes <= free) {
      const next = queue.shift()!;
      free -= next.bytes;
      next.grant();
    }
  };
  /** The idempotent release of `bytes` granted. */
  const releaser = (bytes: number) => {
    let released = false;
    return (): void => {
      if (released) return;
      released = true;
      free += bytes;
      grantWaiting();
    };
  };
  return {
    acquire(requested, signal) {
      const bytes = Math.min(Math.max(requested, 1), capacityBytes);
      // Room now and nobody waiting (the usual case): granted without an abort listener to add and remove.
      if (queue.length === 0 && bytes <= free && !signal?.aborted) {
        free -= bytes;
        return Promise.resolve(releaser(bytes));
      }
      return new Promise((resolve, reject) => {
        if (signal?.aborted) {
          reject(signal.reason);
          return;
        }
        const onAbort = (): void => {
          const at = queue.indexOf(entry);
          if (at < 0) return;
          queue.splice(at, 1);
          reject(signal!.reason);
          // The head may have left: whoever is next may fit now.
          grantWaiting();
        };
        const entry = {
          bytes,
          grant() {
            signal?.removeEventListener('abort', onAbort);
            resolve(releaser(bytes));
          },
        };
        queue.push(entry);
        signal?.addEventListener('abort', onAbort, { once: true });
        grantWaiting();
      });
    },
  };
}
