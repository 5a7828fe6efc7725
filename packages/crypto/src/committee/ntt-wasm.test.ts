import { createHash, randomBytes } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { createNttWasm } from './ntt-wasm.js';
import { N, Q, createFixedMultiplier, derivePublicPolynomialNtt, nttForward, nttInverseUnscaled, nttWasmScratchIsZero, useNttWasm } from './ring.js';
import { decryptSum, encodeUpdate, encryptUpdate, polynomialCount, sampleTernary, createC0Accumulator, encodeC0Payload, type DecryptSumOptions } from './rlwe.js';
import { randomResidues, seededBytes } from '../../test/residues.js';

const QB = BigInt(Q);

/** The float64 JavaScript path: the product, then ring.ts's inverse transform. */
function reference(bHat: Float64Array, a: Float64Array): Float64Array {
  const fixed = createFixedMultiplier(bHat, { inverseN: true });
  const out = new Float64Array(N);
  fixed.mul(a, out);
  nttInverseUnscaled(out);
  fixed.erase();
  return out;
}

afterEach(() => {
  useNttWasm(true);
});

describe('the WebAssembly product and inverse NTT (ntt-wasm.ts)', () => {
  it('is in use on this Node', () => {
    expect(useNttWasm(true)).toBe(true);
  });

  it('equals the float64 product + nttInverseUnscaled coefficient for coefficient: random, extreme and sparse inputs and factors', () => {
    const extremes = [
      new Float64Array(N).fill(Q - 1),
      Float64Array.from({ length: N }, (_, i) => (i % 2 === 0 ? 0 : Q - 1)),
      Float64Array.from({ length: N }, (_, i) => i % 2),
      new Float64Array(N),
      Float64Array.from({ length: N }, (_, i) => (i === 0 ? 1 : 0)),
      Float64Array.from({ length: N }, (_, i) => (Q - 1 - i * 7919) % Q),
    ];
    const inputs = [...extremes, ...Array.from({ length: 60 }, (_, i) => randomResidues(N, `wasm-input-${i}`))];
    // Factors: small centred secrets as a decryption's S_D (NTT domain), extremes and random residues.
    const small = (seed: string, bound: number) => {
      const bytes = seededBytes(seed)(N);
      const s = Float64Array.from(bytes, (b) => ((b % (2 * bound + 1)) - bound + Q) % Q);
      nttForward(s);
      return s;
    };
    const factors = [small('s1', 1), small('s10', 10), small('s1000', 1000), new Float64Array(N).fill(Q - 1), new Float64Array(N).fill(1), ...Array.from({ length: 6 }, (_, i) => randomResidues(N, `wasm-factor-${i}`))];
    let compared = 0;
    for (const bHat of factors) {
      const fixed = createFixedMultiplier(bHat, { inverseN: true });
      const out = new Float64Array(N);
      for (const a of inputs) {
        fixed.mulInverseUnscaled(a, out);
        expect(out).toEqual(reference(bHat, a));
        compared++;
      }
      fixed.erase();
    }
    expect(compared).toBe(factors.length * inputs.length);
  });

  it("its modular product is ≡ x·w (mod q) and in [0, 2q), also where the float64 quotient estimate is one too high or one too low", () => {
    const engine = createNttWasm(new Float64Array(N))!;
    const bytes = seededBytes('mul-lazy')(16 * 400_000);
    const view = new DataView(bytes.buffer);
    const cases: [bigint, bigint][] = [
      [0n, 0n],
      [0n, QB - 1n],
      [4n * QB - 1n, QB - 1n],
      [4n * QB - 1n, 1n],
      [QB - 1n, QB - 1n],
      [2n ** 46n - 1n, QB - 1n],
    ];
    let over = 0;
    let under = 0;
    for (let i = 0; i < 400_000; i++) {
      // x up to 4q (the butterflies' u - v + 2q), w a residue.
      const x = view.getBigUint64(16 * i, true) % (4n * QB);
      const w = view.getBigUint64(16 * i + 8, true) % QB;
      const estimate = Math.trunc(Number(x) * (Number(w) / Q));
      const exact = (x * w) / QB;
      if (BigInt(estimate) === exact + 1n) over++;
      else if (BigInt(estimate) === exact - 1n) under++;
      else if (i % 100 !== 0) continue;
      cases.push([x, w]);
    }
    // Both occur (seeded inputs, the same every run: 593 estimates one too high, 4 one too low).
    expect(over).toBeGreaterThan(0);
    expect(under).toBeGreaterThan(0);
    for (const [x, w] of cases) {
      const r = engine.mulLazy(x, w);
      expect(r >= 0n && r < 2n * QB, `${x}·${w}`).toBe(true);
      expect(r % QB).toBe((x * w) % QB);
    }
  });

  it('computes a·s exactly: against a schoolbook negacyclic product in BigInt', () => {
    const a = randomResidues(N, 'schoolbook-a');
    const bytes = seededBytes('schoolbook-s')(N);
    const s = Float64Array.from(bytes, (b) => (b % 3) - 1);
    const want = new Array<bigint>(N).fill(0n);
    for (let i = 0; i < N; i++) {
      if (s[i] === 0) continue;
      for (let j = 0; j < N; j++) {
        const k = i + j;
        const term = BigInt(a[j]!) * BigInt(s[i]!);
        if (k < N) want[k] = want[k]! + term;
        else want[k - N] = want[k - N]! - term;
      }
    }
    const sHat = Float64Array.from(s, (v) => (v + Q) % Q);
    nttForward(sHat);
    const aHat = Float64Array.from(a);
    nttForward(aHat);
    const fixed = createFixedMultiplier(sHat, { inverseN: true });
    const out = new Float64Array(N);
    fixed.mulInverseUnscaled(aHat, out);
    fixed.erase();
    expect(Array.from(out, (v) => BigInt(v))).toEqual(want.map((v) => ((v % QB) + QB) % QB));
  });

  it('decodes (c0 + a·b mod q, centred, / Δ, rounded as Math.round, -0 included) as the float64 JavaScript path does, byte for byte', () => {
    const bytes = (x: Float64Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
    const out = new Float64Array(N);
    const want = new Float64Array(N);
    let negativeZeros = 0;
    for (const [i, deltaBits] of [1, 8, 20, 26, 43].entries()) {
      const inverseDelta = 1 / 2 ** deltaBits;
      const fixed = createFixedMultiplier(randomResidues(N, `decode-b-${i}`), { inverseN: true });
      for (let j = 0; j < 6; j++) {
        const a = randomResidues(N, `decode-a-${i}-${j}`);
        // c0 = (m·Δ - a·b + small) mod q, so that the centred values sit near multiples of Δ and at
        // the rounding boundaries ±Δ/2, as a real decryption's do; plus random and extreme c0's.
        const ab = new Float64Array(N);
        fixed.mulInverseUnscaled(a, ab);
        const c0 = Float64Array.from(ab, (v, k) => {
          const target = j === 4 ? (k % 2 === 0 ? 0 : Q - 1) : j === 5 ? Number(BigInt(Math.floor(v * 7919)) % QB) : ((k % 7) - 3) * 2 ** deltaBits + ((k % 5) - 2) * 2 ** (deltaBits - 1) - (k % 3);
          return (((target - v) % Q) + 2 * Q) % Q;
        });
        useNttWasm(false);
        fixed.mulInverseDecode(a, c0, inverseDelta, want);
        useNttWasm(true);
        fixed.mulInverseDecode(a, c0, inverseDelta, out);
        expect(bytes(out)).toEqual(bytes(want));
        negativeZeros += want.filter((v) => Object.is(v, -0)).length;
      }
      fixed.erase();
    }
    expect(negativeZeros).toBeGreaterThan(0);
    expect(nttWasmScratchIsZero()).toBe(true);
  });

  it('several multipliers in turn each use their own factor', () => {
    const b1 = randomResidues(N, 'turn-1');
    const b2 = randomResidues(N, 'turn-2');
    const a = randomResidues(N, 'turn-a');
    const m1 = createFixedMultiplier(b1, { inverseN: true });
    const m2 = createFixedMultiplier(b2, { inverseN: true });
    const out = new Float64Array(N);
    for (const [m, b] of [[m1, b1], [m2, b2], [m1, b1]] as const) {
      m.mulInverseUnscaled(a, out);
      expect(out).toEqual(reference(b, a));
    }
    m1.erase();
    m2.erase();
  });

  it('release and erase zero the thread\'s WebAssembly copy of the factor and the last output', () => {
    const m = createFixedMultiplier(randomResidues(N, 'erase-b'), { inverseN: true });
    const out = new Float64Array(N);
    m.mulInverseUnscaled(randomResidues(N, 'erase-a'), out);
    expect(nttWasmScratchIsZero()).toBe(false);
    m.release();
    expect(nttWasmScratchIsZero()).toBe(true);
    expect(m.limbs.some((v) => v !== 0)).toBe(true); // release keeps the limbs (a worker's are the pool's)
    m.mulInverseUnscaled(randomResidues(N, 'erase-a'), out);
    expect(nttWasmScratchIsZero()).toBe(false);
    m.erase();
    expect(nttWasmScratchIsZero()).toBe(true);
    expect(m.limbs.every((v) => v === 0)).toBe(true);
  });

  it('a decryption gives the same aggregate, bit for bit, with and without WebAssembly, and leaves no factor behind', () => {
    const descriptorHash = createHash('sha256').update('wasm-decrypt').digest();
    const roundSeed = createHash('sha256').update('wasm-seed').digest();
    const round = 3;
    const valueCount = 5_000;
    const encoding = { deltaBits: 24, clipMaxAbs: 1, step: 2 ** -10, weightCap: 4 };
    const random = seededBytes('wasm-decrypt-random');
    const acc = createC0Accumulator({ valueCount });
    const secretSum = new Int32Array(N);
    const devices = 7;
    for (let d = 0; d < devices; d++) {
      const values = Float32Array.from({ length: valueCount }, (_, i) => Math.sin(i * (d + 1)) * 0.9);
      const m = encodeUpdate(values, 1 + (d % 4), encoding);
      const s = sampleTernary(random);
      acc.add(encodeC0Payload(encryptUpdate(m, s, { descriptorHash, round, roundSeed, deltaBits: encoding.deltaBits, random }), valueCount));
      for (let k = 0; k < N; k++) secretSum[k] = secretSum[k]! + s[k]!;
    }
    const publicPolynomials = Array.from({ length: polynomialCount(valueCount) }, (_, l) => derivePublicPolynomialNtt(descriptorHash, round, roundSeed, l));
    const options: DecryptSumOptions = { descriptorHash, round, roundSeed, encoding, valueCount, c0Sum: acc.sum(), secretSum, count: devices, publicPolynomials };
    expect(useNttWasm(false)).toBe(false);
    const js = decryptSum(options);
    expect(useNttWasm(true)).toBe(true);
    const wasm = decryptSum(options);
    expect(nttWasmScratchIsZero()).toBe(true);
    expect(wasm.count).toBe(devices);
    expect(wasm.weightSum).toBe(js.weightSum);
    expect(Buffer.from(wasm.levelSums.buffer)).toEqual(Buffer.from(js.levelSums.buffer));
    expect(Buffer.from(wasm.mean.buffer)).toEqual(Buffer.from(js.mean.buffer));
    // A wrong secret sum is refused the same way on both paths.
    const wrong = { ...options, secretSum: Int32Array.from(secretSum, (v, k) => (k === 5 ? v + 1 : v)) };
    useNttWasm(false);
    const jsError = (() => {
      try {
        decryptSum(wrong);
        return null;
      } catch (error) {
        return (error as Error).message;
      }
    })();
    useNttWasm(true);
    expect(jsError).not.toBeNull();
    expect(() => decryptSum(wrong)).toThrow(jsError!);
    expect(nttWasmScratchIsZero()).toBe(true);
  });

  it('encryption (devices) gives the same c0 with and without WebAssembly', () => {
    const descriptorHash = randomBytes(32);
    const roundSeed = randomBytes(32);
    const m = encodeUpdate(Float32Array.from({ length: 3_000 }, (_, i) => Math.cos(i) * 0.5), 2, { deltaBits: 20, clipMaxAbs: 1, step: 2 ** -8, weightCap: 2 });
    const s = sampleTernary();
    const options = (seed: string) => ({ descriptorHash, round: 1, roundSeed, deltaBits: 20, random: seededBytes(seed) });
    useNttWasm(false);
    const js = encryptUpdate(m, s, options('enc'));
    useNttWasm(true);
    const wasm = encryptUpdate(m, s, options('enc'));
    expect(wasm).toEqual(js);
    expect(nttWasmScratchIsZero()).toBe(true);
  });
});
