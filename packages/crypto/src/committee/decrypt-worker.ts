/**
 * A worker thread of decrypt-pool.ts: takes polynomials of one committee decryption from the
 * call's shared counter, as the calling thread does (decrypt-shared.ts), and decrypts each into the
 * shared outputs, reading NTT(S_D)·N^-1 from shared memory (never copied; the pool erases it).
 * Replies `{ id }` when nothing is left to take (the pool does not wait for it: the shared states
 * say what was done). Also derives a round's public polynomials into shared memory while the round
 * collects (SHAKE256, ring.ts), off the coordinator's event loop.
 */
import { parentPort } from 'node:worker_threads';
import { N, derivePublicPolynomialNtt, fixedMultiplierOf } from './ring.js';
import { decryptClaimed, type SharedDecryption } from './decrypt-shared.js';

/** The worker's reply to one call. */
export interface DecryptWorkerReply {
  readonly id: number;
}

/** A request to derive a round's public polynomials â_0 .. â_{count-1} into `out` (count·N values, shared memory). */
export interface DeriveRequest {
  readonly kind: 'derive';
  readonly id: number;
  readonly descriptorHash: Uint8Array;
  readonly round: number;
  readonly roundSeed: Uint8Array;
  readonly out: Float64Array;
}

const port = parentPort;
if (port !== null) {
  const work = new Float64Array(N);
  port.on('message', (message: SharedDecryption | DeriveRequest) => {
    if ('kind' in message) {
      for (let l = 0; l < message.out.length / N; l++) {
        derivePublicPolynomialNtt(message.descriptorHash, message.round, message.roundSeed, l, message.out.subarray(l * N, (l + 1) * N));
      }
      const reply: DecryptWorkerReply = { id: message.id };
      port.postMessage(reply);
      return;
    }
    const shared = message;
    const multiplier = fixedMultiplierOf(shared.limbs);
    try {
      decryptClaimed(shared, multiplier, work);
    } finally {
      work.fill(0);
      multiplier.release(); // this thread's copy of NTT(S_D)·N^-1 (WebAssembly memory); the pool erases the limbs
    }
    const reply: DecryptWorkerReply = { id: shared.id };
    port.postMessage(reply);
  });
}
