/**
 * One-shot RLWE encryption of a device update under a single-use secret, the coordinator's sum
 * of c0's, and decryption of the sum with the reconstructed secret sum (design note, steps 1-6;
 * RLWE: Lyubashevsky-Peikert-Regev 2010; the committee construction: Willow, ePrint 2024/936, and
 * OPA, ePrint 2024/723).
 *
 * Device j, round r, polynomial l:  c0_{j,l} = -a_{r,l}·s_j + e_{j,l} + Δ·m_{j,l}  (mod q)
 * with s_j uniform ternary (fresh per attempt), e_{j,l} centred binomial (21 + 21 bits, σ ≈ 3.24,
 * as SEAL's sample_poly_cbd), Δ = 2^deltaBits and m the coefficient encoding of the update:
 *   slot 0 = 1 (count), slot 1 = w (weight), slot 2 + i = w · roundHalfAwayFromZero(clip(x_i)/step).
 * Coordinator:  Σ_j c0_{j,l} + a_{r,l}·S_D = Σ_j e_{j,l} + Δ·Σ_j m_{j,l}  (mod q), S_D = Σ_{j∈D} s_j;
 * decoding round(centred / Δ) is exact while |Σ e| < Δ/2 and |Σ m| < q/(2Δ) (validateDescriptor
 * proves both). Revealing S_D and the noise residue is "Hint-RLWE" (Kim-Lee-Seo-Song 2023).
 *
 * c0 payload bytes: "VC0" || u8 version || u32le valueCount || u32le polyCount || the
 * polynomials: version 1, packed at 44 bits per coefficient (5.5 bytes per value); version 2, each
 * coefficient compressed to the descriptor's encoding.c0Bits (compress.ts: 4, 3 or 2 bytes).
 */
import { CryptoError } from '../errors.js';
import { createQuantization, quantizeValue, type Quantization } from '../quantize.js';
import { addCompressed, packCompressed, subtractCompressed, type C0Bits } from './compress.js';
import type { DescriptorEncoding } from './descriptor.js';
import { secureRandomBytes, type RandomBytes } from './keys.js';
import {
  N,
  PACKED_POLY_BYTES,
  Q,
  addPacked44,
  createFixedMultiplier,
  derivePublicPolynomialNtt,
  type FixedMultiplier,
  nttForward,
  pack44,
  packed44InRange,
  subtractPacked44,
  toResidueQ,
  unpack44,
} from './ring.js';

/** Coefficient slots before the values: 0 = count, 1 = weight. */
export const COMMITTEE_HEADER_SLOTS = 2;
/** Bytes of the c0 payload header. */
export const C0_HEADER_BYTES = 12;
const C0_MAGIC = [0x56, 0x43, 0x30]; // "VC0", then the version: 1 exact (44 bits), 2 compressed
const versionOf = (c0Bits: C0Bits): number => (c0Bits === 44 ? 1 : 2);
const polyBytes = (c0Bits: C0Bits): number => (c0Bits === 44 ? PACKED_POLY_BYTES : (N * c0Bits) / 8);

/** Polynomials needed for `valueCount` values plus the count and weight slots. */
export function polynomialCount(valueCount: number): number {
  if (!Number.isSafeInteger(valueCount) || valueCount < 1) throw new CryptoError('invalid_argument', 'valueCount must be an integer >= 1');
  return Math.ceil((valueCount + COMMITTEE_HEADER_SLOTS) / N);
}

/** Exact byte length of a c0 payload for `valueCount` values. */
export function c0PayloadBytes(valueCount: number, c0Bits: C0Bits = 44): number {
  return C0_HEADER_BYTES + polynomialCount(valueCount) * polyBytes(c0Bits);
}

/** A uniform ternary polynomial (coefficients in {-1, 0, 1}) by rejection sampling bytes < 255. */
export function sampleTernary(random: RandomBytes = secureRandomBytes): Int8Array {
  const out = new Int8Array(N);
  let filled = 0;
  while (filled < N) {
    const bytes = random(N - filled + 16);
    for (let i = 0; i < bytes.length && filled < N; i++) {
      const b = bytes[i]!;
      if (b < 255) out[filled++] = (b % 3) - 1;
    }
    bytes.fill(0);
  }
  return out;
}

const POPCOUNT = Uint8Array.from({ length: 256 }, (_, v) => {
  let c = 0;
  for (let x = v; x > 0; x >>= 1) c += x & 1;
  return c;
});

/**
 * Adds a centred binomial error (Σ of 21 bits minus Σ of 21 bits per coefficient: variance
 * 10.5, |e| <= 21; SEAL 4.1's sample_poly_cbd for σ = 3.2) to `poly` mod q, in place.
 */
export function addCbdError(poly: Float64Array, random: RandomBytes): void {
  const bytes = random(6 * poly.length);
  for (let k = 0; k < poly.length; k++) {
    const o = 6 * k;
    const e = POPCOUNT[bytes[o]!]! + POPCOUNT[bytes[o + 1]!]! + POPCOUNT[bytes[o + 2]! & 0x1f]! - POPCOUNT[bytes[o + 3]!]! - POPCOUNT[bytes[o + 4]!]! - POPCOUNT[bytes[o + 5]! & 0x1f]!;
    let v = poly[k]! + e;
    if (v >= Q) v -= Q;
    else if (v < 0) v += Q;
    poly[k] = v;
  }
  bytes.fill(0);
}

/**
 * The coefficient encoding of one update: slot 0 = 1, slot 1 = weight, slot 2 + i = weight ·
 * level(x_i); zero-padded to whole polynomials. Throws `invalid_argument` for NaN, a weight
 * outside [1, weightCap] or an empty update.
 */
export function encodeUpdate(values: ArrayLike<number>, weight: number, encoding: DescriptorEncoding): Int32Array {
  const quantization = quantizationOf(encoding);
  if (!Number.isSafeInteger(weight) || weight < 1 || weight > quantization.weightCap) {
    throw new CryptoError('invalid_argument', `weight must be an integer in [1, ${quantization.weightCap}], got ${weight}`);
  }
  const m = new Int32Array(polynomialCount(values.length) * N);
  m[0] = 1;
  m[1] = weight;
  for (let i = 0; i < values.length; i++) m[COMMITTEE_HEADER_SLOTS + i] = weight * quantizeValue(values[i]!, quantization);
  return m;
}

/** The quantisation of a descriptor's encoding. */
export function quantizationOf(encoding: DescriptorEncoding): Quantization {
  return createQuantization({ clipMaxAbs: encoding.clipMaxAbs, step: encoding.step, weightCap: encoding.weightCap });
}

/** What binds a round's public polynomials. */
export interface RoundBinding {
  /** 32-byte SHA-256 of the task descriptor. */
  readonly descriptorHash: Uint8Array;
  readonly round: number;
  /** 32-byte seed the coordinator published for the round. */
  readonly roundSeed: Uint8Array;
}

/** Options of {@link encryptUpdate}. */
export interface EncryptUpdateOptions extends RoundBinding {
  /** log2 Δ (descriptor.encoding.deltaBits). */
  readonly deltaBits: number;
  /** CSPRNG for the error. Default node:crypto. */
  readonly random?: RandomBytes;
}

/**
 * c0_l = -a_l·s + e_l + Δ·m_l (mod q) for every polynomial l of the encoded update `m`
 * (see {@link encodeUpdate}), under the ternary secret `s`. Returns the c0 coefficients
 * (polyCount · N, in [0, q)). Erases its temporaries; the caller erases `s` and `m`.
 */
export function encryptUpdate(m: Int32Array, s: Int8Array, options: EncryptUpdateOptions): Float64Array {
  if (m.length % N !== 0 || m.length === 0) throw new CryptoError('invalid_argument', 'the encoded update must be whole polynomials');
  if (s.length !== N) throw new CryptoError('invalid_argument', `the secret must have ${N} coefficients`);
  const delta = deltaOf(options.deltaBits);
  const random = options.random ?? secureRandomBytes;
  const sHat = new Float64Array(N);
  for (let k = 0; k < N; k++) sHat[k] = toResidueQ(s[k]!);
  nttForward(sHat);
  // NTT(s)·N^-1 precomputed once (see decryptSum).
  const sTimes = createFixedMultiplier(sHat, { inverseN: true });
  sHat.fill(0);
  const polys = m.length / N;
  const c0 = new Float64Array(m.length);
  const work = new Float64Array(N);
  try {
    for (let l = 0; l < polys; l++) {
      const aHat = derivePublicPolynomialNtt(options.descriptorHash, options.round, options.roundSeed, l);
      sTimes.mulInverseUnscaled(aHat, work); // work = a·s
      const base = l * N;
      for (let k = 0; k < N; k++) {
        // -a·s + Δ·m: Δ·|m| < q/2 (validateDescriptor), so one reduction suffices.
        let v = (work[k]! === 0 ? 0 : Q - work[k]!) + toResidueQ(delta * m[base + k]!);
        if (v >= Q) v -= Q;
        work[k] = v;
      }
      addCbdError(work, random);
      c0.set(work, base);
    }
  } finally {
    sTimes.erase();
    work.fill(0);
  }
  return c0;
}

function deltaOf(deltaBits: number): number {
  if (!Number.isInteger(deltaBits) || deltaBits < 1 || deltaBits > 43) throw new CryptoError('invalid_argument', 'deltaBits must be in [1, 43]');
  return 2 ** deltaBits;
}

/** The c0 payload bytes: header + coefficients, 44-bit packed or compressed to `c0Bits` (compress.ts). */
export function encodeC0Payload(c0: Float64Array, valueCount: number, c0Bits: C0Bits = 44): Uint8Array {
  const polys = polynomialCount(valueCount);
  if (c0.length !== polys * N) throw new CryptoError('invalid_argument', `c0 must have ${polys * N} coefficients for ${valueCount} values`);
  const out = new Uint8Array(c0PayloadBytes(valueCount, c0Bits));
  out.set(C0_MAGIC, 0);
  out[3] = versionOf(c0Bits);
  const view = new DataView(out.buffer);
  view.setUint32(4, valueCount, true);
  view.setUint32(8, polys, true);
  if (c0Bits === 44) pack44(c0, out, C0_HEADER_BYTES);
  else packCompressed(c0, c0Bits, out, C0_HEADER_BYTES);
  return out;
}

/**
 * Checks a c0 payload's framing against the task's value count and returns its polynomial count.
 * Throws `CryptoError('invalid_payload')` for a wrong magic/version or a truncated or oversized
 * payload, `shape_mismatch` for another value count.
 */
export function checkC0Payload(payload: Uint8Array, valueCount: number, c0Bits: C0Bits = 44): number {
  if (payload.length < C0_HEADER_BYTES) throw new CryptoError('invalid_payload', 'c0 payload shorter than its header');
  const version = versionOf(c0Bits);
  for (let i = 0; i < 3; i++) if (payload[i] !== C0_MAGIC[i]) throw new CryptoError('invalid_payload', `not a version-${version} committee c0 payload`);
  if (payload[3] !== version) throw new CryptoError('invalid_payload', `not a version-${version} committee c0 payload (the task's c0 has ${c0Bits} bits per coefficient)`);
  const view = new DataView(payload.buffer, payload.byteOffset, payload.byteLength);
  if (view.getUint32(4, true) !== valueCount) throw new CryptoError('shape_mismatch', `c0 payload carries ${view.getUint32(4, true)} values, the task has ${valueCount}`);
  const polys = polynomialCount(valueCount);
  if (view.getUint32(8, true) !== polys) throw new CryptoError('shape_mismatch', 'c0 payload has the wrong polynomial count');
  if (payload.length !== c0PayloadBytes(valueCount, c0Bits)) {
    throw new CryptoError('invalid_payload', `c0 payload must be ${c0PayloadBytes(valueCount, c0Bits)} bytes, got ${payload.length}`);
  }
  return polys;
}

/**
 * Decodes an exact (44-bit) c0 payload into `out` (polyCount · N coefficients). Throws like
 * {@link checkC0Payload}, and `CryptoError('invalid_ciphertext')` for a coefficient >= q.
 */
export function decodeC0Payload(payload: Uint8Array, valueCount: number, out: Float64Array = new Float64Array(polynomialCount(valueCount) * N)): Float64Array {
  const polys = checkC0Payload(payload, valueCount);
  if (out.length !== polys * N) throw new CryptoError('invalid_argument', 'output has the wrong length');
  if (!unpack44(payload, C0_HEADER_BYTES, out)) throw new CryptoError('invalid_ciphertext', 'a c0 coefficient is >= q');
  return out;
}

/**
 * Checks a c0 payload completely (framing, shape, every coefficient < q) without decoding it.
 * Throws like {@link decodeC0Payload}. (Every compressed coefficient is valid: framing only.)
 */
export function checkC0PayloadRange(payload: Uint8Array, valueCount: number, c0Bits: C0Bits = 44): void {
  const polys = checkC0Payload(payload, valueCount, c0Bits);
  if (c0Bits === 44 && !packed44InRange(payload, C0_HEADER_BYTES, polys * N)) throw new CryptoError('invalid_ciphertext', 'a c0 coefficient is >= q');
}

/** The coordinator's running sum of c0's mod q. */
export interface C0Accumulator {
  readonly valueCount: number;
  /** Uploads added. */
  readonly count: number;
  /**
   * Checks a c0 payload completely, then adds it mod q. A refused payload (framing, shape, a
   * coefficient >= q) leaves the sum unchanged. Throws like {@link decodeC0Payload}.
   */
  add(payload: Uint8Array): void;
  /**
   * Takes out again a payload {@link add} added (e.g. an upload added before it was recorded, then
   * refused): the sum is then exactly what it was without it. Throws like {@link checkC0Payload}
   * for a payload of another shape; a payload that was never added leaves a meaningless sum.
   */
  subtract(payload: Uint8Array): void;
  /**
   * The sum (polyCount · N coefficients in [0, q)); a copy, on shared memory: a decryption
   * pool's workers read it in place (decrypt-pool.ts), with no second copy at the round's end.
   * With `out` (polyCount · N values, e.g. a buffer reused from an earlier round), the copy is
   * written there, every coefficient overwritten, and `out` returned.
   */
  sum(out?: Float64Array): Float64Array;
  /** The sum as a c0 payload (for durable storage; {@link restoreC0Accumulator} reads it back). */
  toPayload(): Uint8Array;
}

/** Options of {@link createC0Accumulator}. */
export interface C0AccumulatorOptions {
  /** Model values per update. */
  readonly valueCount: number;
  /** Bits per coefficient of the c0 payloads added (the descriptor's encoding.c0Bits). Default 44, exact. */
  readonly c0Bits?: C0Bits;
  /**
   * Memory for the running sum (polyCount · N values), e.g. reused from an earlier round: zeroed
   * here, then the accumulator's until it is dropped. Default: its own.
   */
  readonly storage?: Float64Array;
}

/** A sum of zero uploads. */
export function createC0Accumulator(options: C0AccumulatorOptions): C0Accumulator {
  const length = polynomialCount(options.valueCount) * N;
  const { storage } = options;
  if (storage !== undefined && storage.length !== length) throw new CryptoError('invalid_argument', `the sum's storage must have ${length} values`);
  return makeAccumulator(options.valueCount, storage?.fill(0) ?? new Float64Array(length), 0, options.c0Bits ?? 44);
}

/** Re-opens a stored sum of `count` uploads (see {@link C0Accumulator.toPayload}). */
export function restoreC0Accumulator(options: C0AccumulatorOptions & { readonly payload: Uint8Array; readonly count: number }): C0Accumulator {
  if (!Number.isSafeInteger(options.count) || options.count < 0) throw new CryptoError('invalid_argument', 'count must be an integer >= 0');
  return makeAccumulator(options.valueCount, decodeC0Payload(options.payload, options.valueCount), options.count, options.c0Bits ?? 44);
}

/**
 * Uploads added between reductions mod q: each coefficient is < 2^44 (< q exact, c'·2^d
 * compressed), so 256 of them on top of a reduced value stay below 257·2^44 < 2^53 (exact in float64). Adding without a reduction per
 * upload makes the hot path a plain float add (design note: "reduce after each addition" is met
 * by reducing before the sum can leave exactness).
 */
const ADDS_PER_REDUCTION = 256;
const INV_Q = 1 / Q;

/**
 * acc[k] mod q for every k, each an integer in [0, 2^53). A module-level function rather than a
 * closure of each accumulator (a new one every round): the loop inside the closure ran in the
 * interpreter and on-stack-replaced code each round, boxing its doubles as heap numbers until
 * then (sampled heap profile of the coordinator: the largest committee-specific allocator, up to
 * about 1 MB per round at 100,000 values); this one stays optimized from round to round.
 */
function reduceModQ(acc: Float64Array, from: number, to: number): void {
  // v mod q without `%` (a call into the C library per value in V8: 3.5x slower over 100,000
  // values). v < 2^53 is an integer, so v/q < 2^9 and the float quotient's floor is off by at
  // most one; k·q and v - k·q are exact integers below 2^53, and one correction each way
  // brings v - k·q from [-q, 2q) into [0, q).
  for (let k = from; k < to; k++) {
    const v = acc[k]!;
    let r = v - Math.floor(v * INV_Q) * Q;
    r += Q * +(r < 0);
    acc[k] = r - Q * +(r >= Q);
  }
}

function makeAccumulator(valueCount: number, acc: Float64Array, initialCount: number, c0Bits: C0Bits): C0Accumulator {
  let count = initialCount;
  let pending = 0;
  const reduce = (): void => {
    if (pending === 0) return;
    // One call per polynomial, not one over the whole sum: called once per round over 100,000
    // values, reduceModQ ran in the interpreter until V8 compiled its loop on the stack (OSR), and
    // a major GC dropped that code every few rounds (bench:rounds small committee, --trace-opt,
    // one 40-round run: 4 OSR compiles); called once per polynomial, it is optimized as a function
    // in the first round and keeps that code.
    for (let from = 0; from < acc.length; from += N) reduceModQ(acc, from, Math.min(acc.length, from + N));
    pending = 0;
  };
  return {
    valueCount,
    get count() {
      return count;
    },
    add(payload) {
      checkC0Payload(payload, valueCount, c0Bits);
      if (c0Bits !== 44) addCompressed(payload, C0_HEADER_BYTES, c0Bits, acc);
      else if (!addPacked44(payload, C0_HEADER_BYTES, acc)) throw new CryptoError('invalid_ciphertext', 'a c0 coefficient is >= q');
      count++;
      if (++pending >= ADDS_PER_REDUCTION) reduce();
    },
    subtract(payload) {
      checkC0Payload(payload, valueCount, c0Bits);
      if (count === 0) throw new CryptoError('invalid_argument', 'nothing was added to take out');
      // A value taken below 0 gets q added back: the bound the lazy reduction keeps still holds.
      if (c0Bits !== 44) subtractCompressed(payload, C0_HEADER_BYTES, c0Bits, acc);
      else subtractPacked44(payload, C0_HEADER_BYTES, acc);
      count--;
    },
    sum: (into) => {
      if (into !== undefined && into.length !== acc.length) throw new CryptoError('invalid_argument', `the sum's copy must have ${acc.length} values`);
      reduce();
      const out = into ?? new Float64Array(new SharedArrayBuffer(acc.length * 8));
      out.set(acc);
      return out;
    },
    toPayload: () => {
      reduce();
      return encodeC0Payload(acc, valueCount);
    },
  };
}

/** Options of {@link decryptSum}. */
export interface DecryptSumOptions extends RoundBinding {
  readonly encoding: DescriptorEncoding;
  readonly valueCount: number;
  /** Σ c0 over D (from {@link C0Accumulator.sum}). */
  readonly c0Sum: Float64Array;
  /** S_D, centred (from reconstructCentred); erased by the caller. */
  readonly secretSum: Int32Array;
  /** |D|. */
  readonly count: number;
  /**
   * â_l = {@link derivePublicPolynomialNtt}(descriptorHash, round, roundSeed, l) for l = 0, 1, …,
   * derived ahead of the round's end (they are public and fixed by the binding); any missing
   * index is derived here. The caller derives them with this options' own binding: a wrong â
   * leaves a uniform residue that the count-slot and clip-range checks refuse.
   */
  readonly publicPolynomials?: readonly Float64Array[];
  /**
   * Where the aggregate's levelSums and mean are written (valueCount values each, every one
   * overwritten), e.g. buffers reused from an earlier round; decrypt-pool.ts uses them when they
   * are on shared memory. Default: new arrays.
   */
  readonly output?: DecryptionOutput;
}

/** The memory of a decryption's outputs (see {@link DecryptSumOptions.output}). */
export interface DecryptionOutput {
  readonly levelSums: Float64Array;
  readonly mean: Float32Array;
}

/** A decrypted, checked aggregate. */
export interface DecryptedAggregate {
  /** |D|, as the count slot confirmed. */
  readonly count: number;
  /** Σ w over D (the weight slot). */
  readonly weightSum: number;
  /** Σ w·level per value (exact integers). */
  readonly levelSums: Float64Array;
  /** The weighted FedAvg: levelSums · step / weightSum. */
  readonly mean: Float32Array;
  /**
   * decrypt-pool.ts: settles once no worker thread reads this call's inputs or writes its outputs
   * any more (a worker the calling thread overtook may still be finishing its copy when the call
   * returns); only then may their memory be reused. Absent: nothing but the caller holds them.
   */
  readonly settled?: Promise<void>;
}

/**
 * Decrypts Σ c0 + a·S_D and decodes round(x/Δ). Refuses, with
 * `CryptoError('integrity_check_failed')`, a count slot other than |D|, a weight sum outside
 * [|D|, |D|·weightCap], a secret-sum coefficient above |D| (a non-ternary secret) or a decoded
 * value beyond what |D| clipped updates can produce — what inconsistent shares or a wrong share
 * sum look like (a wrong S_D leaves a·(S' - S_D), uniform mod q, in every slot).
 * (decrypt-pool.ts runs the same steps with the polynomials after the first spread over worker threads.)
 */
export function decryptSum(options: DecryptSumOptions): DecryptedAggregate {
  const decryption = beginDecryption(options);
  try {
    const work = new Float64Array(N);
    try {
      decryptPolynomials(decryption.job, decryption.multiplier, work);
    } finally {
      work.fill(0);
    }
    return decryption.result();
  } finally {
    decryption.erase();
  }
}

/**
 * Polynomials [from, to) of a decryption, as plain data (a worker thread gets it in a message):
 * everything fixed once polynomial 0 has given the weight sum.
 */
export interface PolynomialDecryptionJob extends RoundBinding {
  readonly from: number;
  readonly to: number;
  readonly valueCount: number;
  /** |D|. */
  readonly count: number;
  readonly deltaBits: number;
  readonly step: number;
  readonly maxAbsLevel: number;
  readonly weightCap: number;
  /** Σ c0 of polynomials [from, to) (c0Sum[0] is coefficient 0 of polynomial `from`). */
  readonly c0Sum: Float64Array;
  /** â_l for l = from, from + 1, …; any missing is derived. */
  readonly publicPolynomials: readonly Float64Array[];
  /** The outputs, whole (valueCount values each); the job writes the slots of its polynomials. */
  readonly levelSums: Float64Array;
  readonly mean: Float32Array;
  /** Σ w from polynomial 0's weight slot; set by the job that decrypts polynomial 0, read by the others. */
  weightSum: number;
}

/**
 * Decrypts and decodes polynomials [job.from, job.to) with a·S_D = INTT(â ⊙ NTT(S_D)·N^-1)
 * (`multiplier` holds NTT(S_D)·N^-1), checking each as it goes (polynomial 0: count and weight
 * slots, then every value within the clip range and every padding slot zero). Throws the first
 * refusal in polynomial order. `work`: N scratch values, left dirty (the caller erases it).
 * `beforeWrite(l)`: asked once polynomial l is decrypted into `work`, before it is checked and
 * written to the outputs; false skips it (decrypt-shared.ts: another thread took it over).
 */
export function decryptPolynomials(job: PolynomialDecryptionJob, multiplier: FixedMultiplier, work: Float64Array, beforeWrite?: (l: number) => boolean): void {
  const { from, to, count, valueCount, c0Sum, step, maxAbsLevel, weightCap } = job;
  const inverseDelta = 1 / deltaOf(job.deltaBits);
  // Slots: 0 count, 1 weight (both in polynomial 0), then the values, then zero padding (in the
  // last polynomial). Each polynomial is checked and decoded into the outputs as it is decrypted.
  const valuesEnd = COMMITTEE_HEADER_SLOTS + valueCount;
  const { levelSums, mean } = job;
  let limit = job.weightSum * maxAbsLevel;
  for (let l = from; l < to; l++) {
    const aHat = job.publicPolynomials[l - from] ?? derivePublicPolynomialNtt(job.descriptorHash, job.round, job.roundSeed, l);
    if (aHat.length !== N) throw new CryptoError('invalid_argument', `public polynomial ${l} must have ${N} coefficients`);
    const base = l * N;
    const offset = (l - from) * N;
    // c0 + a·S_D, reduced, centred and divided by Δ (a power of two: exact), rounded.
    multiplier.mulInverseDecode(aHat, c0Sum.subarray(offset, offset + N), inverseDelta, work);
    if (beforeWrite !== undefined && !beforeWrite(l)) continue;
    if (l === 0) {
      if (work[0] !== count) throw new CryptoError('integrity_check_failed', `the count slot decrypted to ${work[0]}, expected |D| = ${count}`);
      const weightSum = work[1]!;
      if (!(weightSum >= count && weightSum <= count * weightCap)) {
        throw new CryptoError('integrity_check_failed', `the weight slot decrypted to ${weightSum}, outside [${count}, ${count * weightCap}]`);
      }
      job.weightSum = weightSum;
      limit = weightSum * maxAbsLevel;
    }
    const start = Math.max(base, COMMITTEE_HEADER_SLOTS) - base;
    const end = Math.min(base + N, valuesEnd) - base;
    const beyond = decodeSlots(work, start, end, base - COMMITTEE_HEADER_SLOTS, limit, step, job.weightSum, levelSums, mean);
    if (beyond >= 0) throw new CryptoError('integrity_check_failed', `value ${beyond} decrypted beyond the clip range`);
    if (!zeroBetween(work, Math.max(base, valuesEnd) - base, N)) throw new CryptoError('integrity_check_failed', 'a padding slot decrypted to a non-zero value');
  }
}

// The two per-slot loops of decryptPolynomials, each a function of its own that ends with its
// loop: called once per polynomial, V8 optimizes them whole after a few calls, where the same
// loops inside decryptPolynomials kept entering on-stack-replaced code from the interpreter and
// deoptimizing at its exits (--trace-deopt), boxing doubles in between.

/**
 * Slots [start, end) of a decrypted polynomial (`work`): each must lie in [-limit, limit]; slot s
 * is value s + `first`: levelSums gets it, mean v·step / weightSum. Returns the first value index
 * beyond the limit (what was written before it is left), or -1.
 */
function decodeSlots(work: Float64Array, start: number, end: number, first: number, limit: number, step: number, weightSum: number, levelSums: Float64Array, mean: Float32Array): number {
  for (let s = start; s < end; s++) {
    const v = work[s]!;
    if (v > limit || v < -limit) return s + first;
    levelSums[s + first] = v;
    mean[s + first] = (v * step) / weightSum;
  }
  return -1;
}

/** True when slots [start, end) of `work` are all zero (the padding after the last value). */
function zeroBetween(work: Float64Array, start: number, end: number): boolean {
  for (let s = start; s < end; s++) if (work[s] !== 0) return false;
  return true;
}

/** Where a decryption's outputs and its secret factor live (decrypt-pool.ts gives shared memory). */
export interface DecryptionStorage {
  /** {@link FIXED_MULTIPLIER_LIMBS} values for NTT(S_D)·N^-1; erased by {@link Decryption.erase}. */
  readonly limbs: Float64Array;
  /** valueCount values each. */
  readonly levelSums: Float64Array;
  readonly mean: Float32Array;
}

/** A decryption under way: the job of all its polynomials, the secret factor, the result once done. */
export interface Decryption {
  /** Polynomials [0, polynomialCount(valueCount)); split it with `from`/`to` (the first polynomial first: it sets weightSum). */
  readonly job: PolynomialDecryptionJob;
  readonly multiplier: FixedMultiplier;
  /** The aggregate, once every polynomial is decrypted. */
  result(): DecryptedAggregate;
  /** Zeroes NTT(S_D)·N^-1. */
  erase(): void;
}

/**
 * Checks a decryption's inputs and precomputes NTT(S_D)·N^-1 (into `storage.limbs` when given):
 * the steps of {@link decryptSum} before its per-polynomial loop.
 */
export function beginDecryption(options: DecryptSumOptions, storage?: DecryptionStorage): Decryption {
  const { count, valueCount } = options;
  const polys = polynomialCount(valueCount);
  if (options.c0Sum.length !== polys * N) throw new CryptoError('invalid_argument', 'c0Sum has the wrong length');
  const outputs = storage ?? options.output;
  if (outputs !== undefined && (outputs.levelSums.length !== valueCount || outputs.mean.length !== valueCount)) {
    throw new CryptoError('invalid_argument', `the outputs must have ${valueCount} values each`);
  }
  if (options.secretSum.length !== N) throw new CryptoError('invalid_argument', `secretSum must have ${N} coefficients`);
  if (!Number.isSafeInteger(count) || count < 1) throw new CryptoError('invalid_argument', 'count must be >= 1');
  const quantization = quantizationOf(options.encoding);
  deltaOf(options.encoding.deltaBits);
  const sHat = new Float64Array(N);
  let multiplier: FixedMultiplier;
  try {
    for (let k = 0; k < N; k++) {
      const v = options.secretSum[k]!;
      if (v > count || v < -count) {
        throw new CryptoError('integrity_check_failed', 'the reconstructed secret sum exceeds |D|: inconsistent shares or answers');
      }
      sHat[k] = toResidueQ(v);
    }
    nttForward(sHat);
    // NTT(S_D)·N^-1 with its limbs precomputed once: per polynomial one product pass and an
    // unscaled inverse NTT give a·S_D.
    multiplier = createFixedMultiplier(sHat, { inverseN: true, ...(storage !== undefined && { limbs: storage.limbs }) });
  } finally {
    sHat.fill(0);
  }
  const job: PolynomialDecryptionJob = {
    descriptorHash: options.descriptorHash,
    round: options.round,
    roundSeed: options.roundSeed,
    from: 0,
    to: polys,
    valueCount,
    count,
    deltaBits: options.encoding.deltaBits,
    step: quantization.step,
    maxAbsLevel: quantization.maxAbsLevel,
    weightCap: quantization.weightCap,
    c0Sum: options.c0Sum,
    publicPolynomials: options.publicPolynomials ?? [],
    levelSums: outputs?.levelSums ?? new Float64Array(valueCount),
    mean: outputs?.mean ?? new Float32Array(valueCount),
    weightSum: 0,
  };
  return {
    job,
    multiplier,
    result: () => ({ count, weightSum: job.weightSum, levelSums: job.levelSums, mean: job.mean }),
    erase: () => multiplier.erase(),
  };
}
