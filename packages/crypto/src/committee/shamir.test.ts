import { createCipheriv, createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { addShareInto, fillUniformModP, lagrangeAtZero, reconstructCentred, shareSecret } from './shamir.js';

const P = 65521;

/** Deterministic test bytes: AES-256-CTR keystream keyed by SHA-256(seed). */
function seededBytes(seed: string) {
  const cipher = createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16));
  return (n: number) => new Uint8Array(cipher.update(Buffer.alloc(n)));
}

/** Returns the given bytes in order, then zeros. */
function queuedBytes(bytes: number[]) {
  let at = 0;
  return (n: number) => {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = at < bytes.length ? bytes[at++]! : 0;
    return out;
  };
}

function subsets<T>(items: readonly T[], k: number): T[][] {
  if (k === 0) return [[]];
  if (items.length < k) return [];
  const [head, ...rest] = items;
  return [...subsets(rest, k - 1).map((s) => [head!, ...s]), ...subsets(rest, k)];
}

describe('Shamir sharing, hand-computed (p = 65521)', () => {
  it('t = 2: f(x) = s + a x, with rejected draws skipped', () => {
    // Draws: 0xffff (65535, rejected), 0xfff1 (65521 = p, rejected), 3 → a_0 = 3; then a_1 = 10.
    const random = queuedBytes([0xff, 0xff, 0xf1, 0xff, 3, 0, 10, 0]);
    const shares = shareSecret(Int8Array.of(5, -1), { threshold: 2, shares: 3, random });
    // s = 5, a = 3: f(1) = 8, f(2) = 11, f(3) = 14. s = -1 ≡ 65520, a = 10: f(1) = 9, f(2) = 19, f(3) = 29.
    expect(shares.map((s) => Array.from(s))).toEqual([[8, 9], [11, 19], [14, 29]]);
    // λ at 0 for {1,2}: 2 and -1; for {2,3}: 3 and -2; for {1,3}: 3/2 and -1/2.
    expect(lagrangeAtZero([1, 2])).toEqual([2, P - 1]);
    expect(lagrangeAtZero([2, 3])).toEqual([3, P - 2]);
    const half = (P + 1) / 2; // 1/2 mod p
    expect(lagrangeAtZero([1, 3])).toEqual([(3 * half) % P, P - half]);
    for (const pair of [[1, 2], [2, 3], [1, 3]]) {
      const got = reconstructCentred(pair.map((i) => ({ index: i, share: shares[i - 1]! })), 2);
      expect(Array.from(got)).toEqual([5, -1]);
    }
  });

  it('t = 3: f(x) = s + a1 x + a2 x^2', () => {
    // s = 2, a1 = 1, a2 = 65520 (= -1): f(1) = 2, f(2) = 0, f(3) = -4 ≡ 65517, f(4) = -10 ≡ 65511.
    const shares = shareSecret(Int8Array.of(2), { threshold: 3, shares: 4, random: queuedBytes([1, 0, 0xf0, 0xff]) });
    expect(shares.map((s) => s[0])).toEqual([2, 0, 65517, 65511]);
    expect(Array.from(reconstructCentred([2, 3, 4].map((i) => ({ index: i, share: shares[i - 1]! })), 3))).toEqual([2]);
  });

  it('refuses bad parameters and the wrong number of shares', () => {
    expect(() => shareSecret(Int8Array.of(1), { threshold: 1, shares: 3 })).toThrow(/t <= n/);
    expect(() => shareSecret(Int8Array.of(1), { threshold: 4, shares: 3 })).toThrow(/t <= n/);
    const shares = shareSecret(Int8Array.of(1), { threshold: 2, shares: 3 });
    expect(() => reconstructCentred([{ index: 1, share: shares[0]! }], 2)).toThrow(/exactly t = 2/);
    expect(() => lagrangeAtZero([1, 1])).toThrow(/distinct/);
  });
});

describe('Shamir sharing, properties', () => {
  it('any t of n shares reconstruct a ternary polynomial, for 2-of-3, 4-of-7 and 5-of-7', () => {
    const random = seededBytes('reconstruct');
    for (const [t, n] of [[2, 3], [4, 7], [5, 7]] as const) {
      const secret = new Int8Array(2048);
      const r = random(2048);
      for (let k = 0; k < 2048; k++) secret[k] = (r[k]! % 3) - 1;
      const shares = shareSecret(secret, { threshold: t, shares: n, random });
      for (const subset of subsets([...Array(n).keys()].map((i) => i + 1), t)) {
        expect(reconstructCentred(subset.map((i) => ({ index: i, share: shares[i - 1]! })), t)).toEqual(Int32Array.from(secret));
      }
    }
  });

  it('sums of shares over 1,000 devices reconstruct the sum of secrets (4-of-7, custodians 1, 5, 6, 7)', () => {
    const random = seededBytes('sum');
    const sums = Array.from({ length: 7 }, () => new Uint16Array(2048));
    const expected = new Int32Array(2048);
    for (let d = 0; d < 1000; d++) {
      const secret = new Int8Array(2048);
      const r = random(2048);
      for (let k = 0; k < 2048; k++) {
        secret[k] = (r[k]! % 3) - 1;
        expected[k]! += secret[k]!;
      }
      const shares = shareSecret(secret, { threshold: 4, shares: 7, random });
      shares.forEach((s, i) => addShareInto(sums[i]!, s));
    }
    const got = reconstructCentred([1, 5, 6, 7].map((i) => ({ index: i, share: sums[i - 1]! })), 4);
    expect(got).toEqual(expected);
    expect(Math.max(...Array.from(expected, Math.abs))).toBeGreaterThan(30);
  });

  it('t - 1 shares are uniform and independent of the secret (chi-square), while t shares determine it', () => {
    // 3-of-5: custodians 2 and 4 together. Bucket each share into 8 ranges of F_p and count the
    // 64 joint buckets over 2048 coefficients x 40 sharings. For two different secrets (all +1,
    // all -1) the joint counts must look uniform. Seeded, so the test is deterministic; the
    // threshold is the chi-square quantile 1 - 10^-6 for 63 degrees of freedom (131.8, Wilson-Hilferty).
    const random = seededBytes('uniform');
    const chiSquare = (secretValue: number, holders: number[], project: (shares: Uint16Array[], k: number) => number[]) => {
      const counts = new Float64Array(64);
      let samples = 0;
      for (let trial = 0; trial < 40; trial++) {
        const shares = shareSecret(new Int8Array(2048).fill(secretValue), { threshold: 3, shares: 5, random });
        const held = holders.map((i) => shares[i - 1]!);
        for (let k = 0; k < 2048; k++) {
          const [a, b] = project(held, k);
          counts[Math.floor((a! * 8) / P) * 8 + Math.floor((b! * 8) / P)]! += 1;
          samples++;
        }
      }
      const expected = samples / 64;
      return counts.reduce((acc, c) => acc + (c - expected) ** 2 / expected, 0);
    };
    const pair = (held: Uint16Array[], k: number) => [held[0]![k]!, held[1]![k]!];
    expect(chiSquare(1, [2, 4], pair)).toBeLessThan(131.8);
    expect(chiSquare(-1, [2, 4], pair)).toBeLessThan(131.8);
    // Control that the statistic has power: with t = 3 shares the Lagrange combination is the
    // secret itself, and its (value, value) histogram is a single bucket.
    const lambdas = lagrangeAtZero([1, 3, 5]);
    const combined = (held: Uint16Array[], k: number) => {
      const v = (lambdas[0]! * held[0]![k]! + lambdas[1]! * held[1]![k]! + lambdas[2]! * held[2]![k]!) % P;
      return [v, v];
    };
    expect(chiSquare(1, [1, 3, 5], combined)).toBeGreaterThan(1e5);
  });

  it('fillUniformModP never yields p or more, and covers the top of the range', () => {
    const out = new Uint16Array(200_000);
    fillUniformModP(out, seededBytes('range'));
    let max = 0;
    for (const v of out) max = Math.max(max, v);
    expect(max).toBeLessThan(P);
    expect(max).toBeGreaterThan(P - 50);
  });
});
