import { randomFillSync } from 'node:crypto';

/**
 * Source of uniform randomness for every mechanism in this package.
 *
 * Production code uses {@link createCryptoRng} (a CSPRNG); tests inject
 * {@link createSeededRng} so noise is reproducible.
 */
export interface Rng {
  /** A uniform integer in [0, 2^32). */
  nextUint32(): number;
  /** A uniform double in [0, 1) with 53 random bits. */
  nextDouble(): number;
  /** `true` when backed by a cryptographically secure generator. */
  readonly cryptographicallySecure: boolean;
}

const TWO_POW_M53 = 2 ** -53;

/**
 * A CSPRNG backed by `node:crypto.randomFillSync`, buffered in blocks.
 *
 * @param options.bufferWords - number of 32-bit words fetched per refill
 *   (default 4096).
 */
export function createCryptoRng(options: { bufferWords?: number } = {}): Rng {
  const size = options.bufferWords ?? 4096;
  const buffer = new Uint32Array(size);
  let index = size;
  const nextUint32 = (): number => {
    if (index >= size) {
      randomFillSync(buffer);
      index = 0;
    }
    return buffer[index++] as number;
  };
  return {
    cryptographicallySecure: true,
    nextUint32,
    nextDouble: () => {
      const hi = nextUint32() >>> 11; // 21 bits
      const lo = nextUint32(); // 32 bits
      return (hi * 2 ** 32 + lo) * TWO_POW_M53;
    },
  };
}

/**
 * A deterministic, NON-cryptographic generator (xoshiro128** seeded with
 * splitmix32) for tests and reproducible simulations only. Never use it for
 * noise that protects real users.
 *
 * @param seed - any 32-bit integer.
 */
export function createSeededRng(seed: number): Rng {
  let s = seed >>> 0;
  const splitmix = (): number => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  if ((a | b | c | d) === 0) a = 1;
  const rotl = (x: number, k: number): number => ((x << k) | (x >>> (32 - k))) >>> 0;
  const nextUint32 = (): number => {
    const result = Math.imul(rotl(Math.imul(b, 5) >>> 0, 7), 9) >>> 0;
    const t = (b << 9) >>> 0;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotl(d, 11);
    a >>>= 0;
    b >>>= 0;
    c >>>= 0;
    return result;
  };
  return {
    cryptographicallySecure: false,
    nextUint32,
    nextDouble: () => {
      const hi = nextUint32() >>> 11;
      const lo = nextUint32();
      return (hi * 2 ** 32 + lo) * TWO_POW_M53;
    },
  };
}

/** @internal A uniform integer in [0, n) for 1 <= n <= 2^53, by rejection. */
export function uniformInt(rng: Rng, n: number): number {
  if (n <= 2 ** 32) {
    if (n === 2 ** 32) return rng.nextUint32();
    const limit = 2 ** 32 - (2 ** 32 % n);
    for (;;) {
      const x = rng.nextUint32();
      if (x < limit) return x % n;
    }
  }
  const limit = 2 ** 53 - (2 ** 53 % n);
  for (;;) {
    const x = (rng.nextUint32() >>> 11) * 2 ** 32 + rng.nextUint32();
    if (x < limit) return x % n;
  }
}

/** @internal A uniform bigint in [0, n) for n >= 1n, by rejection. */
export function uniformBigInt(rng: Rng, n: bigint): bigint {
  if (n <= 0n) throw new RangeError('n must be positive');
  if (n <= 2n ** 53n) return BigInt(uniformInt(rng, Number(n)));
  const bits = n.toString(2).length;
  const words = Math.ceil(bits / 32);
  const excess = BigInt(words * 32 - bits);
  for (;;) {
    let x = 0n;
    for (let i = 0; i < words; i++) x = (x << 32n) | BigInt(rng.nextUint32());
    x >>= excess;
    if (x < n) return x;
  }
}

/**
 * A scripted {@link Rng} for tests that need exact draws: `nextDouble()`
 * returns `doubles` in order, cycling; `nextUint32()` is `floor(d · 2^32)`
 * of the next one. Each value must be in [0, 1).
 */
export function createSequenceRng(doubles: readonly number[]): Rng {
  if (doubles.length === 0 || doubles.some((d) => !(d >= 0 && d < 1))) throw new RangeError('doubles must be a non-empty list of values in [0, 1)');
  let i = 0;
  const next = (): number => doubles[i++ % doubles.length]!;
  return { cryptographicallySecure: false, nextDouble: next, nextUint32: () => Math.floor(next() * 2 ** 32) };
}
