/**
 * A committee round's decryption (rlwe.ts `decryptSum`) spread over worker threads. At the round's
 * end every other part of a federation waits for it (devices for the next round, custodians have
 * answered), so its polynomials — each an independent product and inverse NTT (design note,
 * step 6) — are shared between the calling thread and the pool's workers. Polynomial 0 (count and
 * weight slots) is decrypted first in the calling thread; the others are taken one at a time from
 * a shared counter by whichever thread is free, and once none is left the calling thread takes
 * over what a worker took but has not begun writing (decrypt-shared.ts): a worker the OS does not
 * run at once delays nothing. The result, and the refusal when there is one (the lowest
 * polynomial's), are exactly `decryptSum`'s. NTT(S_D)·N^-1 lives on shared memory for
 * the call only, read in place by the workers (never copied into a message), zeroed before the
 * call returns. The outputs are the caller's shared buffers when it gives them (`output`, e.g.
 * reused from round to round); the result's `settled` says when no worker touches the call's
 * memory any more (a worker the calling thread overtook may still be finishing its copy).
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
import { beginDecryption, decryptPolynomials, decryptSum, polynomialCount, type DecryptSumOptions, type DecryptedAggregate, type RoundBinding } from './rlwe.js';
import type { DecryptWorkerReply, DeriveRequest } from './decrypt-worker.js';
import { POLY_DONE, decryptClaimed, finishClaimed, type SharedDecryption } from './decrypt-shared.js';

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
  /**
   * The round's public polynomials â_0 .. â_{count-1} (ring.ts derivePublicPolynomialNtt), derived
   * by a worker (off this thread's event loop), on shared memory: into `out` when given (count · N
   * values on a SharedArrayBuffer, e.g. reused from an earlier round; the worker writes it until
   * the promise settles); null when no worker runs (the caller derives them itself). Rejects if
   * the worker dies meanwhile.
   */
  derivePublicPolynomials(binding: RoundBinding, count: number, out?: Float64Array): Promise<Float64Array[] | null>;
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

/** `values` when on shared memory already (C0Accumulator.sum, derivePublicPolynomials), else a copy there. */
function onSharedMemory(values: Float64Array): Float64Array {
  if (values.buffer instanceof SharedArrayBuffer) return values;
  const out = new Float64Array(new SharedArrayBuffer(values.length * 8));
  out.set(values);
  return out;
}

/** `output` when both of its arrays are on shared memory with `valueCount` values (the workers write them), else null. */
function sharedOutput(output: DecryptSumOptions['output'], valueCount: number): { levelSums: Float64Array; mean: Float32Array } | null {
  if (output === undefined) return null;
  const { levelSums, mean } = output;
  const shared = levelSums.buffer instanceof SharedArrayBuffer && mean.buffer instanceof SharedArrayBuffer;
  return shared && levelSums.length === valueCount && mean.length === valueCount ? { levelSums, mean } : null;
}

/** Starts a pool of decryption workers (see the module comment). */
export function createDecryptPool(options: DecryptPoolOptions = {}): DecryptPool {
  const threads = options.threads ?? Math.min(7, Math.max(0, availableParallelism() - 1));
  const minPolynomials = options.minPolynomials ?? 8;
  if (!Number.isInteger(threads) || threads < 0) throw new CryptoError('invalid_argument', 'threads must be an integer >= 0');
  if (!Number.isInteger(minPolynomials) || minPolynomials < 2) throw new CryptoError('invalid_argument', 'minPolynomials must be an integer >= 2');
  const script = threads > 0 ? workerScript() : null;
  const workers: Worker[] = [];
  // Derivations waiting for a worker's reply, by request id, with the worker asked.
  const derivations = new Map<number, { worker: Worker; settle: (error: Error | null) => void }>();
  // Decryption calls some worker has not finished yet, by call id: the workers still to reply.
  const unsettled = new Map<number, { workers: Set<Worker>; resolve: () => void }>();
  const workerDone = (id: number, worker: Worker): void => {
    const call = unsettled.get(id);
    if (call === undefined || !call.workers.delete(worker) || call.workers.size > 0) return;
    unsettled.delete(id);
    call.resolve();
  };
  const drop = (worker: Worker): void => {
    const at = workers.indexOf(worker);
    if (at >= 0) workers.splice(at, 1);
    for (const id of [...unsettled.keys()]) workerDone(id, worker);
    for (const [id, d] of derivations) {
      if (d.worker !== worker) continue;
      derivations.delete(id);
      d.settle(new CryptoError('internal', 'a decryption worker ended while it derived public polynomials'));
    }
  };
  if (script !== null) {
    for (let i = 0; i < threads; i++) {
      const worker = new Worker(script);
      worker.unref();
      worker.on('message', (reply: DecryptWorkerReply) => {
        workerDone(reply.id, worker);
        const d = derivations.get(reply.id);
        derivations.delete(reply.id);
        d?.settle(null);
        if (derivations.size === 0 || ![...derivations.values()].some((x) => x.worker === worker)) worker.unref();
      });
      worker.on('error', () => drop(worker));
      worker.on('exit', () => drop(worker));
      workers.push(worker);
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
        ...(sharedOutput(decryptOptions.output, valueCount) ?? {
          levelSums: new Float64Array(new SharedArrayBuffer(valueCount * 8)),
          mean: new Float32Array(new SharedArrayBuffer(valueCount * 4)),
        }),
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
          // The public inputs on shared memory, so that any thread can take any polynomial: copied
          // only when they are not there already (a round's end then copies nothing).
          const publicPolynomials = whole.publicPolynomials.map(onSharedMemory);
          const shared: SharedDecryption = {
            id: (calls = (calls + 1) % 0x7fffffff),
            job: { ...whole, c0Sum: onSharedMemory(whole.c0Sum), publicPolynomials },
            limbs,
            next: new Int32Array(new SharedArrayBuffer(4)),
            state: new Int32Array(new SharedArrayBuffer(4 * polys)),
          };
          Atomics.store(shared.next, 0, 1);
          Atomics.store(shared.state, 0, POLY_DONE);
          // Settles when every worker posted the call has replied (it replies once it stopped
          // taking polynomials) or has ended.
          const settled = new Promise<void>((resolve) => unsettled.set(shared.id, { workers: new Set(workers), resolve }));
          for (const worker of workers) worker.postMessage(shared);
          decryptClaimed(shared, decryption.multiplier, work);
          // Nothing left to take: what the workers took and have not begun writing is decrypted
          // here, refusals included (the lowest polynomial's is thrown, as decryptSum throws it).
          finishClaimed(shared, decryption.multiplier, work);
          return { ...decryption.result(), settled };
        } finally {
          decryption.erase();
        }
      } finally {
        work.fill(0);
        busy = false;
      }
    },
    async derivePublicPolynomials(binding, count, given) {
      if (!Number.isInteger(count) || count < 1) throw new CryptoError('invalid_argument', 'count must be an integer >= 1');
      if (given !== undefined && (!(given.buffer instanceof SharedArrayBuffer) || given.length !== count * N)) {
        throw new CryptoError('invalid_argument', `public polynomials are derived into ${count * N} values on shared memory`);
      }
      const worker = workers[calls % Math.max(1, workers.length)];
      if (closed || worker === undefined) return null;
      const id = (calls = (calls + 1) % 0x7fffffff);
      const out = given ?? new Float64Array(new SharedArrayBuffer(count * N * 8));
      const request: DeriveRequest = { kind: 'derive', id, descriptorHash: binding.descriptorHash, round: binding.round, roundSeed: binding.roundSeed, out };
      await new Promise<void>((resolve, reject) => {
        derivations.set(id, { worker, settle: (error) => (error === null ? resolve() : reject(error)) });
        worker.ref(); // the process waits for what it asked
        worker.postMessage(request);
      });
      return Array.from({ length: count }, (_, l) => out.subarray(l * N, (l + 1) * N));
    },
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(workers.splice(0).map((worker) => worker.terminate()));
    },
  };
}
