/**
 * One committee decryption on shared memory (decrypt-pool.ts). The polynomials after the first
 * are taken one at a time from a shared counter (Atomics.add) by the calling thread and the pool's
 * workers alike, and each polynomial's state moves by compare-and-swap, so that the calling thread
 * never waits for a worker the OS is not running: once nothing is left to take, it takes over
 * (steals) every polynomial a worker took but has not started writing, and decrypts it itself;
 * the worker then finds its claim gone and drops its copy. A worker writes the outputs only after
 * it won the swap CLAIMED -> WRITING (a few microseconds of checks and stores), so every output
 * slot is written by exactly one thread.
 */
import { N, type FixedMultiplier } from './ring.js';
import { decryptPolynomials, type PolynomialDecryptionJob } from './rlwe.js';

/** Per-polynomial states in {@link SharedDecryption.state}. */
export const POLY_FREE = 0;
export const POLY_CLAIMED = 1;
export const POLY_WRITING = 2;
export const POLY_DONE = 3;
/** Checked and refused by the thread that wrote it (the calling thread decrypts it again for the refusal). */
export const POLY_REFUSED = 4;
/** Taken over by the calling thread. */
export const POLY_STOLEN = 5;

/** A call's shared state, as posted to the workers (every array on a SharedArrayBuffer). */
export interface SharedDecryption {
  readonly id: number;
  /** Polynomials [1, job.to) of the call (polynomial 0 was decrypted by the caller, which set weightSum). */
  readonly job: PolynomialDecryptionJob;
  /** NTT(S_D)·N^-1 (ring.ts FixedMultiplier limbs). */
  readonly limbs: Float64Array;
  /** [0]: the next polynomial to take. */
  readonly next: Int32Array;
  /** Per polynomial: one of the POLY_* states. */
  readonly state: Int32Array;
}

/** Polynomial l of `shared` alone, as a job for decryptPolynomials. */
export function polynomialJob(shared: SharedDecryption, l: number): PolynomialDecryptionJob {
  const { job } = shared;
  return { ...job, from: l, to: l + 1, c0Sum: job.c0Sum.subarray(l * N, (l + 1) * N), publicPolynomials: job.publicPolynomials.slice(l, l + 1) };
}

/**
 * A worker's (or the calling thread's first) pass: takes and decrypts polynomials until none is
 * left, skipping any stolen meanwhile; a refused one is marked POLY_REFUSED and the pass stops.
 * `work`: N scratch values.
 */
export function decryptClaimed(shared: SharedDecryption, multiplier: FixedMultiplier, work: Float64Array): void {
  const { state } = shared;
  for (;;) {
    const l = Atomics.add(shared.next, 0, 1);
    if (l >= shared.job.to) return;
    if (Atomics.compareExchange(state, l, POLY_FREE, POLY_CLAIMED) !== POLY_FREE) continue; // stolen already
    try {
      decryptPolynomials(polynomialJob(shared, l), multiplier, work, () => Atomics.compareExchange(state, l, POLY_CLAIMED, POLY_WRITING) === POLY_CLAIMED);
    } catch {
      // Only after winning WRITING can the checks refuse: the calling thread decrypts l again for its refusal.
      Atomics.store(state, l, POLY_REFUSED);
      Atomics.notify(state, l);
      return;
    }
    // (Still WRITING unless this thread lost the claim, or the calling thread gave up waiting.)
    if (Atomics.compareExchange(state, l, POLY_WRITING, POLY_DONE) === POLY_WRITING) Atomics.notify(state, l);
  }
}

/** How long the calling thread waits for a worker that is writing a polynomial before taking it over. */
const WRITING_WAIT_MS = 1000;

/**
 * The calling thread's last pass, once it has taken all it could: polynomials 1.. in order, each
 * DONE, or decrypted here (stolen, or refused elsewhere: decrypted again here so that the refusal
 * thrown is the one of the lowest polynomial, exactly as a single thread would throw it). Throws
 * that refusal. Nothing is taken from the counter after this (it is set past the end).
 */
export function finishClaimed(shared: SharedDecryption, multiplier: FixedMultiplier, work: Float64Array): void {
  const { state } = shared;
  Atomics.store(shared.next, 0, shared.job.to);
  for (let l = 1; l < shared.job.to; l++) {
    for (let waited = 0; ; ) {
      const s = Atomics.load(state, l);
      if (s === POLY_DONE) break;
      if (s === POLY_FREE || s === POLY_CLAIMED || s === POLY_REFUSED || (s === POLY_WRITING && waited >= WRITING_WAIT_MS)) {
        // A worker that wrote for more than a second (its thread ended mid-write): its values are
        // the same as these, written again here.
        if (Atomics.compareExchange(state, l, s, POLY_STOLEN) !== s) continue;
        decryptPolynomials(polynomialJob(shared, l), multiplier, work);
        Atomics.store(state, l, POLY_DONE);
        break;
      }
      // WRITING: a worker is checking and storing this polynomial now.
      Atomics.wait(state, l, POLY_WRITING, 10);
      waited += 10;
    }
  }
}
