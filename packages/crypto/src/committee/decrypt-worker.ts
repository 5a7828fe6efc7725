/**
 * A worker thread of decrypt-pool.ts: takes polynomials of one committee decryption from the
 * call's shared counter, as the calling thread does, and decrypts each (rlwe.ts
 * `decryptPolynomials`) into the shared outputs, reading NTT(S_D)·N^-1 from shared memory (never
 * copied; the pool erases it). Replies when no polynomial is left to take, with its first refusal.
 */
import { parentPort } from 'node:worker_threads';
import { CryptoError } from '../errors.js';
import { N, fixedMultiplierOf } from './ring.js';
import { decryptClaimed, type SharedDecryption } from './decrypt-shared.js';

/** The worker's reply to one call. */
export interface DecryptWorkerReply {
  readonly id: number;
  /** The first polynomial this worker refused, and why; null when none. */
  readonly refusal: { readonly polynomial: number; readonly code: string; readonly message: string } | null;
}

const port = parentPort;
if (port !== null) {
  const work = new Float64Array(N);
  port.on('message', (shared: SharedDecryption) => {
    let refusal: DecryptWorkerReply['refusal'] = null;
    try {
      const failed = decryptClaimed(shared, fixedMultiplierOf(shared.limbs), work);
      if (failed !== null) {
        const e = CryptoError.from(failed.error);
        refusal = { polynomial: failed.polynomial, code: e.code, message: e.message };
      }
    } finally {
      work.fill(0);
    }
    const reply: DecryptWorkerReply = { id: shared.id, refusal };
    port.postMessage(reply);
  });
}
