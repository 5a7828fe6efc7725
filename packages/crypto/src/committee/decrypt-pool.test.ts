import { createCipheriv, createHash } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { afterAll, describe, expect, it } from 'vitest';
import { createDecryptPool } from './decrypt-pool.js';
import { POLY_CLAIMED, POLY_DONE, POLY_REFUSED, POLY_STOLEN, decryptClaimed, finishClaimed, type SharedDecryption } from './decrypt-shared.js';
import type { DecryptWorkerReply } from './decrypt-worker.js';
import { buildTaskDescriptor, descriptorHash } from './descriptor.js';
import { generateCustodianKeys, generateEd25519KeyPair } from './keys.js';
import { FIXED_MULTIPLIER_LIMBS, N, Q, derivePublicPolynomialNtt } from './ring.js';
import { beginDecryption, decryptPolynomials, decryptSum, encodeUpdate, encryptUpdate, polynomialCount, sampleTernary, type DecryptSumOptions } from './rlwe.js';

// The pool's workers run the build (dist/committee/decrypt-worker.js): `npm run build` first.

function seededBytes(seed: string) {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

const ROUND_SEED = new Uint8Array(32).fill(9);
const authority = generateEd25519KeyPair();
const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
const descriptor = buildTaskDescriptor({
  taskId: 'pool',
  committee: custodians.map((k, i) => ({ address: `127.0.0.1:${9000 + i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
  threshold: 2,
  minDevices: 3,
  maxDevices: 1000,
  maxRounds: 10,
  encoding: { weightCap: 4 },
  authorityPublicKey: authority.publicKey,
});
const dh = descriptorHash(descriptor);

/** Three devices' c0 sum and secret sum over `valueCount` values, and the exact level sums they encode. */
function encryptedRound(valueCount: number) {
  const random = seededBytes(`pool-${valueCount}`);
  const c0Sum = new Float64Array(polynomialCount(valueCount) * N);
  const secretSum = new Int32Array(N);
  const levelSums = new Float64Array(valueCount);
  let weightSum = 0;
  for (let d = 0; d < 3; d++) {
    const bytes = random(4 * valueCount);
    const view = new DataView(bytes.buffer);
    const values = Float64Array.from({ length: valueCount }, (_, i) => (2 * view.getUint32(4 * i, true)) / 2 ** 32 - 1);
    const weight = d + 1;
    const m = encodeUpdate(values, weight, descriptor.encoding);
    const s = sampleTernary(random);
    const c0 = encryptUpdate(m, s, { descriptorHash: dh, round: 1, roundSeed: ROUND_SEED, deltaBits: descriptor.encoding.deltaBits, random });
    for (let k = 0; k < c0.length; k++) c0Sum[k] = (c0Sum[k]! + c0[k]!) % Q;
    for (let k = 0; k < N; k++) secretSum[k] = secretSum[k]! + s[k]!;
    for (let i = 0; i < valueCount; i++) levelSums[i] = levelSums[i]! + m[2 + i]!;
    weightSum += weight;
  }
  const options = (over: Partial<DecryptSumOptions> = {}): DecryptSumOptions => ({
    descriptorHash: dh,
    round: 1,
    roundSeed: ROUND_SEED,
    encoding: descriptor.encoding,
    valueCount,
    c0Sum,
    secretSum: Int32Array.from(secretSum),
    count: 3,
    ...over,
  });
  return { options, levelSums, weightSum };
}

const pool = createDecryptPool({ threads: 2 });
afterAll(() => pool.close());

describe('createDecryptPool', () => {
  const valueCount = 40_000; // 20 polynomials
  const round = encryptedRound(valueCount);

  it('runs worker threads and decrypts exactly what decryptSum decrypts, the encoded level sums', async () => {
    expect(pool.threads).toBe(2);
    const polys = polynomialCount(valueCount);
    // Public polynomials derived ahead for the first half only: the workers derive the rest.
    const publicPolynomials = Array.from({ length: polys >> 1 }, (_, l) => derivePublicPolynomialNtt(dh, 1, ROUND_SEED, l));
    const inThread = decryptSum(round.options());
    const pooled = await pool.decryptSum(round.options({ publicPolynomials }));
    expect(pool.threads).toBe(2); // no worker failed (a failed one is dropped and its range decrypted here)
    expect(pooled.count).toBe(3);
    expect(pooled.weightSum).toBe(round.weightSum);
    expect(Array.from(pooled.levelSums)).toEqual(Array.from(round.levelSums));
    expect(Buffer.from(pooled.mean.buffer).equals(Buffer.from(inThread.mean.buffer))).toBe(true);
    expect(Buffer.from(pooled.levelSums.buffer).equals(Buffer.from(inThread.levelSums.buffer))).toBe(true);
  }, 60_000);

  it('decrypts inputs already on shared memory (the c0 sum, the public polynomials a worker derived) in place, exactly as decryptSum', async () => {
    const polys = polynomialCount(valueCount);
    const publicPolynomials = await pool.derivePublicPolynomials({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED }, polys);
    expect(publicPolynomials).not.toBeNull();
    expect(publicPolynomials![polys - 1]!.buffer).toBeInstanceOf(SharedArrayBuffer);
    const c0Sum = new Float64Array(new SharedArrayBuffer(polys * N * 8));
    c0Sum.set(round.options().c0Sum);
    const before = Float64Array.from(c0Sum);
    const inThread = decryptSum(round.options());
    const pooled = await pool.decryptSum(round.options({ c0Sum, publicPolynomials: publicPolynomials! }));
    expect(pooled.weightSum).toBe(round.weightSum);
    expect(Buffer.from(pooled.levelSums.buffer).equals(Buffer.from(inThread.levelSums.buffer))).toBe(true);
    expect(Buffer.from(pooled.mean.buffer).equals(Buffer.from(inThread.mean.buffer))).toBe(true);
    expect(c0Sum).toEqual(before); // read, not written
  }, 60_000);

  it("derives a round's public polynomials in a worker, equal to derivePublicPolynomialNtt; a pool without workers returns null", async () => {
    const derived = await pool.derivePublicPolynomials({ descriptorHash: dh, round: 3, roundSeed: ROUND_SEED }, 5);
    expect(derived).not.toBeNull();
    expect(derived!.length).toBe(5);
    for (const [l, a] of derived!.entries()) expect(Array.from(a)).toEqual(Array.from(derivePublicPolynomialNtt(dh, 3, ROUND_SEED, l)));
    const none = createDecryptPool({ threads: 0 });
    expect(await none.derivePublicPolynomials({ descriptorHash: dh, round: 3, roundSeed: ROUND_SEED }, 5)).toBeNull();
    await none.close();
  }, 60_000);

  it("reuses a caller's buffers: public polynomials derived into a dirty shared buffer and two rounds decrypted into the same dirty outputs equal fresh ones; settled resolves; non-shared memory is refused", async () => {
    const polys = polynomialCount(valueCount);
    const other = encryptedRound(valueCount + 1); // another round's inputs (another value count: fresh arrays)
    const publics = new Float64Array(new SharedArrayBuffer(polys * N * 8)).fill(12345);
    const derived = await pool.derivePublicPolynomials({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED }, polys, publics);
    expect(derived).not.toBeNull();
    for (const [l, a] of derived!.entries()) {
      expect(a.buffer).toBe(publics.buffer);
      expect(Array.from(a)).toEqual(Array.from(derivePublicPolynomialNtt(dh, 1, ROUND_SEED, l)));
    }
    const output = { levelSums: new Float64Array(new SharedArrayBuffer(valueCount * 8)).fill(-7), mean: new Float32Array(new SharedArrayBuffer(valueCount * 4)).fill(3) };
    const reference = decryptSum(round.options());
    for (let pass = 0; pass < 2; pass++) {
      const pooled = await pool.decryptSum(round.options({ publicPolynomials: derived!, output }));
      expect(pooled.levelSums).toBe(output.levelSums);
      expect(pooled.mean).toBe(output.mean);
      expect(pooled.settled).toBeInstanceOf(Promise);
      await pooled.settled;
      expect(Array.from(pooled.levelSums)).toEqual(Array.from(round.levelSums));
      expect(Buffer.from(pooled.levelSums.buffer).equals(Buffer.from(reference.levelSums.buffer))).toBe(true);
      expect(Buffer.from(pooled.mean.buffer).equals(Buffer.from(reference.mean.buffer))).toBe(true);
      // Dirtied by another round's decryption in between (its own value count: fresh outputs).
      const between = await pool.decryptSum(other.options());
      expect(Buffer.from(between.levelSums.buffer).equals(Buffer.from(decryptSum(other.options()).levelSums.buffer))).toBe(true);
      output.levelSums.fill(pass + 1);
      output.mean.fill(-(pass + 1));
    }
    // Outputs not on shared memory (the workers could not write them) or of another length: fresh shared ones.
    const plain = { levelSums: new Float64Array(valueCount), mean: new Float32Array(valueCount) };
    const elsewhere = await pool.decryptSum(round.options({ output: plain }));
    expect(elsewhere.levelSums).not.toBe(plain.levelSums);
    expect(Array.from(elsewhere.levelSums)).toEqual(Array.from(round.levelSums));
    await expect(pool.derivePublicPolynomials({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED }, polys, new Float64Array(polys * N))).rejects.toMatchObject({ code: 'invalid_argument' });
    await expect(pool.derivePublicPolynomials({ descriptorHash: dh, round: 1, roundSeed: ROUND_SEED }, polys, publics.subarray(N))).rejects.toMatchObject({ code: 'invalid_argument' });
  }, 60_000);

  it("refuses as decryptSum does: the first bad polynomial's refusal, whichever thread finds it", async () => {
    const delta = 2 ** descriptor.encoding.deltaBits;
    const polys = polynomialCount(valueCount);
    /** Σc0 with `levels` more encoded at each of `slots`. */
    const shifted = (slots: number[], levels: number) => {
      const c = Float64Array.from(round.options().c0Sum);
      for (const slot of slots) c[slot] = (((c[slot]! + delta * levels) % Q) + Q) % Q;
      return c;
    };
    const limit = round.weightSum * (descriptor.encoding.clipMaxAbs / descriptor.encoding.step);
    // Polynomials are taken by whichever thread is free: bad values in several of them must give
    // the lowest one's refusal, as decryptSum (one thread, in order) gives it.
    const last = (polys - 1) * N + 5;
    const middle = 8 * N + 3;
    const early = 2 * N + 7;
    const cases: Array<{ c0Sum: Float64Array; count?: number }> = [
      { c0Sum: shifted([last], 2 * limit) },
      { c0Sum: shifted([middle, last], 2 * limit) },
      { c0Sum: shifted([early, middle], 2 * limit) },
      { c0Sum: shifted([early, middle, last], 2 * limit) },
      { c0Sum: shifted([polys * N - 1], 1) }, // a padding slot
      { c0Sum: shifted([1], 100) }, // the weight slot (polynomial 0)
      { c0Sum: round.options().c0Sum, count: 4 }, // the count slot
    ];
    for (const c of cases) {
      const options = round.options({ c0Sum: c.c0Sum, ...(c.count !== undefined && { count: c.count }) });
      let expected: unknown;
      try {
        decryptSum(options);
      } catch (error) {
        expected = error;
      }
      expect(expected).toMatchObject({ code: 'integrity_check_failed' });
      await expect(pool.decryptSum(round.options({ c0Sum: c.c0Sum, ...(c.count !== undefined && { count: c.count }) }))).rejects.toMatchObject({
        code: 'integrity_check_failed',
        message: (expected as Error).message,
      });
    }
  }, 60_000);

  it('decrypts small inputs, a call while another runs and a call after close in the calling thread, with the same result', async () => {
    const small = encryptedRound(3000);
    const reference = decryptSum(small.options());
    expect(Array.from((await pool.decryptSum(small.options())).levelSums)).toEqual(Array.from(reference.levelSums));
    const whole = decryptSum(round.options());
    const [a, b] = await Promise.all([pool.decryptSum(round.options()), pool.decryptSum(round.options())]);
    expect(Array.from(a.mean)).toEqual(Array.from(whole.mean));
    expect(Array.from(b.mean)).toEqual(Array.from(whole.mean));
    // Workers ended while they decrypt: what they took is decrypted here instead.
    const other = createDecryptPool({ threads: 1 });
    expect(other.threads).toBe(1);
    const running = other.decryptSum(round.options());
    await other.close();
    expect(Array.from((await running).mean)).toEqual(Array.from(whole.mean));
    expect(other.threads).toBe(0);
    expect(Array.from((await other.decryptSum(round.options())).mean)).toEqual(Array.from(whole.mean));
  }, 60_000);

  it('a worker thread alone decrypts every polynomial it takes into the shared outputs, as decryptSum does', async () => {
    const polys = polynomialCount(valueCount);
    const shared = (bytes: number) => new SharedArrayBuffer(bytes);
    const storage = { limbs: new Float64Array(shared(FIXED_MULTIPLIER_LIMBS * 8)), levelSums: new Float64Array(shared(valueCount * 8)), mean: new Float32Array(shared(valueCount * 4)) };
    const decryption = beginDecryption(round.options(), storage);
    const first = { ...decryption.job, to: 1 };
    decryptPolynomials(first, decryption.multiplier, new Float64Array(N));
    const c0Sum = new Float64Array(shared(polys * N * 8));
    c0Sum.set(decryption.job.c0Sum);
    const job: SharedDecryption = {
      id: 1,
      job: { ...decryption.job, weightSum: first.weightSum, c0Sum, publicPolynomials: [] },
      limbs: storage.limbs,
      next: new Int32Array(shared(4)),
      state: new Int32Array(shared(4 * polys)),
    };
    Atomics.store(job.next, 0, 1);
    Atomics.store(job.state, 0, POLY_DONE);
    const worker = new Worker(fileURLToPath(new URL('../../dist/committee/decrypt-worker.js', import.meta.url)));
    try {
      const reply = await new Promise<DecryptWorkerReply>((resolve, reject) => {
        worker.once('message', resolve);
        worker.once('error', reject);
        worker.postMessage(job);
      });
      expect(reply).toEqual({ id: 1 });
    } finally {
      await worker.terminate();
    }
    expect(Array.from(job.state)).toEqual(Array.from({ length: polys }, () => POLY_DONE));
    // Nothing is left for the calling thread's last pass.
    finishClaimed(job, decryption.multiplier, new Float64Array(N));
    decryption.erase();
    const reference = decryptSum(round.options());
    expect(Array.from(storage.levelSums)).toEqual(Array.from(reference.levelSums));
    expect(Array.from(storage.mean)).toEqual(Array.from(reference.mean));
    // The secret factor is zeroed once the call is over.
    expect(storage.limbs.every((v) => v === 0)).toBe(true);
  }, 60_000);

  it("the calling thread takes over what a stalled worker took and never wrote, and decrypts a worker's refusal again to throw it", () => {
    const polys = polynomialCount(valueCount);
    const shared = (bytes: number) => new SharedArrayBuffer(bytes);
    const run = (c0: Float64Array, stalled: readonly number[], refused: readonly number[]) => {
      const storage = { limbs: new Float64Array(shared(FIXED_MULTIPLIER_LIMBS * 8)), levelSums: new Float64Array(shared(valueCount * 8)), mean: new Float32Array(shared(valueCount * 4)) };
      const decryption = beginDecryption(round.options({ c0Sum: c0 }), storage);
      try {
        const first = { ...decryption.job, to: 1 };
        decryptPolynomials(first, decryption.multiplier, new Float64Array(N));
        const job: SharedDecryption = {
          id: 1,
          job: { ...decryption.job, weightSum: first.weightSum },
          limbs: storage.limbs,
          next: new Int32Array(shared(4)),
          state: new Int32Array(shared(4 * polys)),
        };
        // A worker took these and stalls (CLAIMED, never written) or refused these; this thread took the rest.
        job.state[0] = POLY_DONE;
        for (const l of stalled) job.state[l] = POLY_CLAIMED;
        for (const l of refused) job.state[l] = POLY_REFUSED;
        Atomics.store(job.next, 0, 1);
        decryptClaimed(job, decryption.multiplier, new Float64Array(N));
        finishClaimed(job, decryption.multiplier, new Float64Array(N));
        expect(Array.from(job.state).every((state) => state === POLY_DONE || state === POLY_STOLEN)).toBe(true);
        return { levelSums: Array.from(storage.levelSums), mean: Array.from(storage.mean) };
      } finally {
        decryption.erase();
      }
    };
    const reference = decryptSum(round.options());
    const out = run(round.options().c0Sum, [3, 11], []);
    expect(out.levelSums).toEqual(Array.from(reference.levelSums));
    expect(out.mean).toEqual(Array.from(reference.mean));
    // Poly 7 bad: marked refused by a "worker"; this thread's last pass decrypts it again and throws its refusal.
    const bad = Float64Array.from(round.options().c0Sum);
    const slot = 7 * N + 9;
    bad[slot] = (bad[slot]! + 2 ** descriptor.encoding.deltaBits * 10 * round.weightSum * (descriptor.encoding.clipMaxAbs / descriptor.encoding.step)) % Q;
    let expected: unknown;
    try {
      decryptSum(round.options({ c0Sum: bad }));
    } catch (error) {
      expected = error;
    }
    expect(() => run(bad, [3], [7])).toThrow((expected as Error).message);
  });
});
