/**
 * A committee round's decryption (rlwe.ts `decryptSum`) spread over worker threads. At the round's
 * end every other part of a federation waits for it (devices for the next round, custodians have
 * answered), so its polynomials — each an independent product and inverse NTT (design note,
 * step 6) — are shared between the calling thread and the pool's workers. Polynomial 0 (count and
 * weight slots) is decrypted first in the calling thread; the others are taken one at a time from
 * a shared counter by whichever thread is free (decrypt-shared.ts), so a worker the OS does not
 * run at once delays the call by at most the polynomial it took. The result, and the refusal when
 * there is one (the one of the lowest polynomial: every polynomial below it was decrypted, since
 * they are taken in order), are exactly `decryptSum`'s. NTT(S_D)·N^-1 lives on shared memory for
 * the call only, read in place by the workers (never copied into a message), zeroed before the
 * call returns.
 *
 * The workers are started with the pool (at the coordinator's start) and unref'd: an idle pool
 * keeps no process alive; `close` ends them. A worker that dies is dropped and what it took is
 * decrypted in the calling thread; a call while another runs, or with fewer than `minPolynomials`
 * polynomials, runs in the calling thread alone.
 */
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CryptoError } from '../errors.js';
import { FIXED_MULTIPLIER_LIMBS, N } from './ring.js';
import { beginDecryption, decryptPolynomials, decryptSum, polynomialCount, type DecryptSumOptions, type DecryptedAggregate } from './rlwe.js';
import { decryptClaimed, type SharedDecryption } from './decrypt-shared.js';
import type { DecryptWorkerReply } from './decrypt-worker.js';

/** Options of {@link createDecryptPool}. */
export interface DecryptPoolOptions {
  /**
   * Worker threads. Default: the machine's available parallelism minus one (the calling thread
   * decrypts too), at most 7; 0 decrypts in the calling thread.
   */
  readonly threads?: number;
  /** Below this many polynomials (N = 2048 values each) the calling thread decrypts alone. Default 8. */
  readonly minPolynomials?: number;
}

/** Committee decryptions over worker threads. */
export interface DecryptPool {
  /** {@link decryptSum}, with its polynomials spread over the pool's threads: the same result or refusal. */
  decryptSum(options: DecryptSumOptions): Promise<DecryptedAggregate>;
  /** Worker threads running (0: every call decrypts in the calling thread). */
  readonly threads: number;
  /** Ends the workers. Idempotent. */
  close(): Promise<void>;
}

/**
 * The compiled worker script. From the sources (tests and benches run TypeScript) the build's copy
 * is used: a worker thread does not get the test runner's TypeScript loader.
 */
function workerScript(): string | null {
  const here = fileURLToPath(import.meta.url);
  const script = here.endsWith('.ts')
    ? fileURLToPath(new URL('../../dist/committee/decrypt-worker.js', import.meta.url))
    : fileURLToPath(new URL('./decrypt-worker.js', import.meta.url));
  return existsSync(script) ? script : null;
}

interface PoolWorker {
  readonly worker: Worker;
  /** Waiters for this worker's reply to a call, by call id. */
  readonly waiting: Map<number, (reply: DecryptWorkerReply | null) => void>;
}

/** A Float64Array copy of `values` on shared memory. */
function sharedCopy(values: Float64Array): Float64Array {
  const out = new Float64Array(new SharedArrayBuffer(values.length * 8));
  out.set(values);
  return out;
}

/** Starts a pool of decryption workers (see the module comment). */
export function createDecryptPool(options: DecryptPoolOptions = {}): DecryptPool {
  const threads = options.threads ?? Math.min(7, Math.max(0, availableParallelism() - 1));
  const minPolynomials = options.minPolynomials ?? 8;
  if (!Number.isInteger(threads) || threads < 0) throw new CryptoError('invalid_argument', 'threads must be an integer >= 0');
  if (!Number.isInteger(minPolynomials) || minPolynomials < 2) throw new CryptoError('invalid_argument', 'minPolynomials must be an integer >= 2');
  const script = threads > 0 ? workerScript() : null;
  const workers: PoolWorker[] = [];
  /** A dead worker: dropped, its waiters told (null: what it took is decrypted in the calling thread). */
  const drop = (w: PoolWorker): void => {
    const at = workers.indexOf(w);
    if (at >= 0) workers.splice(at, 1);
    for (const wake of w.waiting.values()) wake(null);
    w.waiting.clear();
  };
  if (script !== null) {
    for (let i = 0; i < threads; i++) {
      const w: PoolWorker = { worker: new Worker(script), waiting: new Map() };
      w.worker.unref();
      w.worker.on('message', (reply: DecryptWorkerReply) => {
        const wake = w.waiting.get(reply.id);
        w.waiting.delete(reply.id);
        wake?.(reply);
      });
      w.worker.on('error', () => drop(w));
      w.worker.on('exit', () => drop(w));
      workers.push(w);
    }
  }
  let busy = false;
  let closed = false;
  let calls = 0;

  return {
    get threads() {
      return workers.length;
    },
    async decryptSum(decryptOptions) {
      const polys = polynomialCount(decryptOptions.valueCount);
      if (closed || busy || workers.length === 0 || polys < minPolynomials) return decryptSum(decryptOptions);
      busy = true;
      const { valueCount } = decryptOptions;
      const limbs = new Float64Array(new SharedArrayBuffer(FIXED_MULTIPLIER_LIMBS * 8));
      const storage = {
        limbs,
        levelSums: new Float64Array(new SharedArrayBuffer(valueCount * 8)),
        mean: new Float32Array(new SharedArrayBuffer(valueCount * 4)),
      };
      const work = new Float64Array(N);
      try {
        const decryption = beginDecryption(decryptOptions, storage);
        try {
          const whole = decryption.job;
          // Polynomial 0 first: its weight slot fixes the clip limit and the mean's divisor.
          const first = { ...whole, to: 1 };
          decryptPolynomials(first, decryption.multiplier, work);
          whole.weightSum = first.weightSum;
          // The public inputs on shared memory (one copy each), so that any thread can take any polynomial.
          const aheadBuffer = new Float64Array(new SharedArrayBuffer(whole.publicPolynomials.length * N * 8));
          const publicPolynomials = whole.publicPolynomials.map((a, l) => {
            const view = aheadBuffer.subarray(l * N, (l + 1) * N);
            view.set(a);
            return view;
          });
          const shared: SharedDecryption = {
            id: (calls = (calls + 1) % 0x7fffffff),
            job: { ...whole, c0Sum: sharedCopy(whole.c0Sum), publicPolynomials },
            limbs,
            next: new Int32Array(new SharedArrayBuffer(4)),
            done: new Int32Array(new SharedArrayBuffer(4 * polys)),
            started: new Int32Array(new SharedArrayBuffer(4 * workers.length)),
            thread: 0,
          };
          Atomics.store(shared.next, 0, 1);
          const helpers = [...workers];
          const replies = helpers.map(
            (w, i) =>
              new Promise<DecryptWorkerReply | null>((resolve) => {
                w.waiting.set(shared.id, resolve);
                w.worker.postMessage({ ...shared, thread: i + 1 });
              }),
          );
          const mine = decryptClaimed(shared, decryption.multiplier, work);
          // Nothing is left to take (and after a refusal nothing more is taken). A worker that has
          // not started yet takes nothing now: wait only for those that started (they may hold one).
          Atomics.store(shared.next, 0, polys);
          const refused = new Map<number, unknown>();
          if (mine !== null) refused.set(mine.polynomial, mine.error);
          const waitFor = replies.filter((_, i) => Atomics.load(shared.started, i) === 1);
          for (const reply of await Promise.all(waitFor)) {
            if (reply?.refusal != null) refused.set(reply.refusal.polynomial, { code: reply.refusal.code, message: reply.refusal.message });
          }
          // As decryptSum: the lowest polynomial's refusal, every polynomial below it decrypted
          // (here, if a worker that took one died).
          for (let l = 1; l < polys; l++) {
            if (refused.has(l)) throw CryptoError.from(refused.get(l));
            if (Atomics.load(shared.done, l) !== 1) {
              decryptPolynomials({ ...shared.job, from: l, to: l + 1, c0Sum: shared.job.c0Sum.subarray(l * N, (l + 1) * N), publicPolynomials: publicPolynomials.slice(l, l + 1) }, decryption.multiplier, work);
            }
          }
          return decryption.result();
        } finally {
          decryption.erase();
        }
      } finally {
        work.fill(0);
        busy = false;
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(workers.splice(0).map((w) => w.worker.terminate()));
    },
  };
}
