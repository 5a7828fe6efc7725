import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import {
  N,
  NTT_PSI,
  PACKED_POLY_BYTES,
  Q,
  centreQ,
  createFixedMultiplier,
  derivePublicPolynomialNtt,
  mulModQ,
  negacyclicMultiply,
  nttForward,
  nttInverse,
  nttInverseUnscaled,
  pack44,
  packed44InRange,
  unpack44,
} from './ring.js';
import { randomResidues } from '../../test/residues.js';

const QB = BigInt(Q);

describe('arithmetic mod q = 2^44 - 2^14 + 1', () => {
  it('q is the prime 17592186028033 and ψ has order exactly 2N = 4096', () => {
    expect(Q).toBe(17592186028033);
    expect(2 ** 44 - 2 ** 14 + 1).toBe(Q);
    const pow = (b: bigint, e: bigint) => {
      let r = 1n;
      let x = b;
      while (e > 0n) {
        if (e & 1n) r = (r * x) % QB;
        x = (x * x) % QB;
        e >>= 1n;
      }
      return r;
    };
    // Fermat test with several bases (q is SEAL's 44-bit prime for N = 2048).
    for (const base of [2n, 3n, 5n, 7n, 11n, 13n]) expect(pow(base, QB - 1n)).toBe(1n);
    expect(pow(BigInt(NTT_PSI), 2048n)).toBe(QB - 1n);
    expect(pow(BigInt(NTT_PSI), 4096n)).toBe(1n);
  });

  it('mulModQ equals BigInt (a·b) mod q on edge cases and 200,000 random pairs', () => {
    const edges = [0, 1, 2, Q - 1, Q - 2, 2 ** 26 - 1, 2 ** 26, 2 ** 43, 2 ** 44 - 2 ** 14, (Q - 1) / 2, (Q + 1) / 2];
    for (const a of edges) for (const b of edges) expect(mulModQ(a, b)).toBe(Number((BigInt(a) * BigInt(b)) % QB));
    const xs = randomResidues(400_000, 'mul');
    for (let i = 0; i < 400_000; i += 2) {
      const got = mulModQ(xs[i]!, xs[i + 1]!);
      const want = Number((BigInt(xs[i]!) * BigInt(xs[i + 1]!)) % QB);
      if (got !== want) expect({ a: xs[i], b: xs[i + 1], got }).toEqual({ a: xs[i], b: xs[i + 1], got: want });
    }
  });
});

describe('negacyclic NTT', () => {
  it('round-trips', () => {
    const a = randomResidues(N, 'roundtrip');
    const b = Float64Array.from(a);
    nttForward(b);
    expect(b).not.toEqual(a);
    nttInverse(b);
    expect(b).toEqual(a);
  });

  it('the lazily reduced inverse is exact at the extremes: NTT(INTT(y)) = y for y all q - 1, alternating 0 / q - 1, 0 / 1, and 200 random', () => {
    const cases = [
      new Float64Array(N).fill(Q - 1),
      Float64Array.from({ length: N }, (_, k) => (k % 2 === 0 ? 0 : Q - 1)),
      Float64Array.from({ length: N }, (_, k) => (k % 2 === 0 ? Q - 1 : 0)),
      Float64Array.from({ length: N }, (_, k) => (k < N / 2 ? Q - 1 : 0)),
      Float64Array.from({ length: N }, (_, k) => k % 2),
      ...Array.from({ length: 200 }, (_, i) => randomResidues(N, `inverse-${i}`)),
    ];
    for (const y of cases) {
      const x = Float64Array.from(y);
      nttInverse(x);
      expect(x.every((v) => Number.isInteger(v) && v >= 0 && v < Q)).toBe(true);
      nttForward(x);
      expect(x).toEqual(y);
      const unscaled = Float64Array.from(y);
      nttInverseUnscaled(unscaled);
      expect(unscaled.every((v) => Number.isInteger(v) && v >= 0 && v < Q)).toBe(true);
      // N · INTT(y): scaling the unscaled result by N^-1 gives INTT(y).
      const nInv = Number(((): bigint => {
        let r = 1n;
        let b = BigInt(N);
        let e = QB - 2n;
        while (e > 0n) {
          if (e & 1n) r = (r * b) % QB;
          b = (b * b) % QB;
          e >>= 1n;
        }
        return r;
      })());
      const scaled = Float64Array.from(unscaled, (v) => mulModQ(v, nInv));
      nttForward(scaled);
      expect(scaled).toEqual(y);
    }
  }, 60_000);

  it('X · X^(N-1) = -1 (the ring is Z_q[X]/(X^N + 1))', () => {
    const x = new Float64Array(N);
    x[1] = 1;
    const y = new Float64Array(N);
    y[N - 1] = 1;
    const expected = new Float64Array(N);
    expected[0] = Q - 1;
    expect(negacyclicMultiply(x, y)).toEqual(expected);
  });

  it('a full product equals BigInt schoolbook multiplication mod (X^N + 1, q)', () => {
    const a = randomResidues(N, 'a');
    const b = randomResidues(N, 'b');
    const ab = a.length;
    const acc = new Array<bigint>(N).fill(0n);
    const A = Array.from(a, BigInt);
    const B = Array.from(b, BigInt);
    for (let i = 0; i < ab; i++) {
      const ai = A[i]!;
      for (let j = 0; j < ab; j++) {
        const k = i + j;
        if (k < N) acc[k]! += ai * B[j]!;
        else acc[k - N]! -= ai * B[j]!;
      }
    }
    const want = Float64Array.from(acc, (v) => Number(((v % QB) + QB) % QB));
    expect(negacyclicMultiply(a, b)).toEqual(want);
    // A fixed factor with N^-1 folded in and the unscaled inverse NTT give the same product.
    const aHat = Float64Array.from(a);
    const bHat = Float64Array.from(b);
    nttForward(aHat);
    nttForward(bHat);
    const fixed = createFixedMultiplier(bHat, { inverseN: true });
    const out = new Float64Array(N);
    fixed.mul(aHat, out);
    nttInverseUnscaled(out);
    expect(out).toEqual(want);
    // Without N^-1 it is the plain pointwise product (mulModQ).
    const plain = createFixedMultiplier(bHat);
    plain.mul(aHat, out);
    expect(out).toEqual(Float64Array.from(aHat, (v, k) => mulModQ(v, bHat[k]!)));
  }, 60_000);
});

describe('public polynomials and 44-bit packing', () => {
  it('derivePublicPolynomialNtt (â = NTT(a)) is deterministic, domain-separated by every input, and in [0, q)', () => {
    const dh = new Uint8Array(32).fill(1);
    const seed = new Uint8Array(32).fill(2);
    const a = derivePublicPolynomialNtt(dh, 3, seed, 0);
    expect(derivePublicPolynomialNtt(dh, 3, seed, 0)).toEqual(a);
    for (const other of [
      derivePublicPolynomialNtt(dh, 3, seed, 1),
      derivePublicPolynomialNtt(dh, 4, seed, 0),
      derivePublicPolynomialNtt(new Uint8Array(32).fill(9), 3, seed, 0),
      derivePublicPolynomialNtt(dh, 3, new Uint8Array(32).fill(9), 0),
    ]) {
      expect(other).not.toEqual(a);
    }
    expect(a.every((v) => Number.isInteger(v) && v >= 0 && v < Q)).toBe(true);
    // Into a slice of a (dirty) round buffer: the same values there, its neighbours untouched.
    const buffer = new Float64Array(3 * N).fill(-1);
    expect(derivePublicPolynomialNtt(dh, 3, seed, 0, buffer.subarray(N, 2 * N))).toEqual(a);
    expect(buffer.subarray(N, 2 * N)).toEqual(a);
    expect(buffer.subarray(0, N).every((v) => v === -1) && buffer.subarray(2 * N).every((v) => v === -1)).toBe(true);
    expect(() => derivePublicPolynomialNtt(dh, 3, seed, 0, buffer.subarray(1, N + 2))).toThrow(expect.objectContaining({ code: 'invalid_argument' }));
    // First coefficient by hand from the XOF output: SHAKE256 of the documented input.
    const input = Buffer.concat([Buffer.from('veil/bfv-a/v1'), dh, Buffer.from([0, 0, 0, 3]), seed, Buffer.from([0, 0, 0, 0])]);
    const stream = createHash('shake256', { outputLength: 6 }).update(input).digest();
    const first = Number(stream.readUIntLE(0, 6) % 2 ** 44);
    expect(first).toBeLessThan(Q); // rejection happens with probability < 2^-29
    expect(a[0]).toBe(first);
    // Every coefficient, parsed independently: 6-byte little-endian words as BigInt, masked to 44 bits, kept when < q.
    const whole = createHash('shake256', { outputLength: (N + 16) * 6 }).update(input).digest();
    const want: number[] = [];
    for (let i = 0; i + 6 <= whole.length && want.length < N; i += 6) {
      const v = whole.readBigUInt64LE(i - (i + 8 > whole.length ? 2 : 0)) >> (i + 8 > whole.length ? 16n : 0n);
      const word = Number(v & (2n ** 44n - 1n));
      if (word < Q) want.push(word);
    }
    expect(Array.from(a)).toEqual(want);
    // Mean of a uniform coefficient is q/2: within 5% over 2,048 values.
    expect(Math.abs(a.reduce((s, v) => s + v, 0) / N / (Q / 2) - 1)).toBeLessThan(0.05);
  });

  it('pack44 / unpack44 round-trip, use 5.5 bytes per coefficient, and refuse coefficients >= q', () => {
    const a = randomResidues(N, 'pack');
    a[0] = Q - 1;
    a[1] = 0;
    a[2] = 2 ** 44 - 2 ** 14; // q - 1 as well, the largest allowed
    const bytes = new Uint8Array(PACKED_POLY_BYTES);
    expect(pack44(a, bytes, 0)).toBe(11_264);
    const out = new Float64Array(N);
    expect(unpack44(bytes, 0, out)).toBe(true);
    expect(out).toEqual(a);
    // Bit layout: coefficient k at bits [44k, 44k + 44), little-endian.
    let big = 0n;
    for (let i = 21; i >= 0; i--) big = (big << 8n) | BigInt(bytes[i]!);
    for (let k = 0; k < 4; k++) expect(Number((big >> BigInt(44 * k)) & ((1n << 44n) - 1n))).toBe(a[k]);
    // q itself, and 2^44 - 1, are refused (even and odd positions).
    for (const [pos, value] of [[0, Q], [1, 2 ** 44 - 1]] as const) {
      const bad = Float64Array.from(a);
      bad[pos] = value;
      const badBytes = new Uint8Array(PACKED_POLY_BYTES);
      pack44(bad, badBytes, 0);
      expect(unpack44(badBytes, 0, new Float64Array(N))).toBe(false);
    }
    expect(centreQ(Q - 1)).toBe(-1);
    expect(centreQ((Q - 1) / 2)).toBe((Q - 1) / 2);
  });

  it('packed44InRange agrees with unpack44: true for q - 1 anywhere, false for q or 2^44 - 1 at the first, a middle and the last position, even and odd', () => {
    const a = randomResidues(N, 'range');
    a[N - 1] = Q - 1;
    a[N - 2] = Q - 1;
    const bytes = new Uint8Array(PACKED_POLY_BYTES + 5);
    pack44(a, bytes, 5);
    expect(packed44InRange(bytes, 5, N)).toBe(true);
    expect(unpack44(bytes, 5, new Float64Array(N))).toBe(true);
    for (const pos of [0, 1, 1000, 1001, N - 2, N - 1]) {
      for (const value of [Q, 2 ** 44 - 1]) {
        const bad = Float64Array.from(a);
        bad[pos] = value;
        const badBytes = new Uint8Array(PACKED_POLY_BYTES + 5);
        pack44(bad, badBytes, 5);
        expect(packed44InRange(badBytes, 5, N), `position ${pos}, value ${value}`).toBe(false);
        expect(unpack44(badBytes, 5, new Float64Array(N))).toBe(false);
      }
    }
    expect(() => packed44InRange(bytes, 6, N)).toThrow(/too short/);
    expect(() => packed44InRange(bytes, 5, N - 1)).toThrow(/even/);
  });
});
