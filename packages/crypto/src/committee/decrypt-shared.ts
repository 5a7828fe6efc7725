/**
 * One committee decryption on shared memory (decrypt-pool.ts): the polynomials after the first
 * are taken one at a time from a shared counter (Atomics.add) by the calling thread and the pool's
 * workers alike, so a worker the OS has not scheduled yet takes none and delays nothing; each
 * polynomial's `done` flag is set (Atomics.store, ordering its output writes) once it is decrypted.
 */
import { N, type FixedMultiplier } from './ring.js';
import { decryptPolynomials, type PolynomialDecryptionJob } from './rlwe.js';

/** A call's shared state, as posted to the workers (every array on a SharedArrayBuffer). */
export interface SharedDecryption {
  readonly id: number;
  /** Polynomials 1.. of the call (`from` = 0; polynomial 0 was decrypted by the caller, which set weightSum). */
  readonly job: PolynomialDecryptionJob;
  /** NTT(S_D)·N^-1 (ring.ts FixedMultiplier limbs). */
  readonly limbs: Float64Array;
  /** [0]: the next polynomial to take. */
  readonly next: Int32Array;
  /** Per polynomial: 1 once decrypted and written. */
  readonly done: Int32Array;
  /** Per worker (thread - 1): 1 once it began taking polynomials. */
  readonly started: Int32Array;
  /** Who runs this: 0 the calling thread, i + 1 the pool's worker i. */
  readonly thread: number;
}

/**
 * Takes and decrypts polynomials until none is left or one is refused (`decryptPolynomials`
 * throws); returns that refusal with its polynomial, else null. `work`: N scratch values.
 */
export function decryptClaimed(
  shared: SharedDecryption,
  multiplier: FixedMultiplier,
  work: Float64Array,
): { polynomial: number; error: unknown } | null {
  const { job } = shared;
  // Marked before the first take: the caller waits for every worker marked when it has taken the last.
  if (shared.thread > 0) Atomics.store(shared.started, shared.thread - 1, 1);
  for (;;) {
    const l = Atomics.add(shared.next, 0, 1);
    if (l >= job.to) return null;
    try {
      decryptPolynomials(
        {
          ...job,
          from: l,
          to: l + 1,
          c0Sum: job.c0Sum.subarray(l * N, (l + 1) * N),
          publicPolynomials: job.publicPolynomials.slice(l, l + 1),
        },
        multiplier,
        work,
      );
    } catch (error) {
      return { polynomial: l, error };
    }
    Atomics.store(shared.done, l, 1);
  }
}
