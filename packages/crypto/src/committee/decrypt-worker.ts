/**
 * A worker thread of decrypt-pool.ts: takes polynomials of one committee decryption from the
 * call's shared counter, as the calling thread does (decrypt-shared.ts), and decrypts each into the
 * shared outputs, reading NTT(S_D)·N^-1 from shared memory (never copied; the pool erases it).
 * Replies `{ id }` when nothing is left to take (the pool does not wait for it: the shared states
 * say what was done).
 */
import { parentPort } from 'node:worker_threads';
import { N, fixedMultiplierOf } from './ring.js';
import { decryptClaimed, type SharedDecryption } from './decrypt-shared.js';

/** The worker's reply to one call. */
export interface DecryptWorkerReply {
  readonly id: number;
}

const port = parentPort;
if (port !== null) {
  const work = new Float64Array(N);
  port.on('message', (shared: SharedDecryption) => {
    try {
      decryptClaimed(shared, fixedMultiplierOf(shared.limbs), work);
    } finally {
      work.fill(0);
    }
    const reply: DecryptWorkerReply = { id: shared.id };
    port.postMessage(reply);
  });
}
