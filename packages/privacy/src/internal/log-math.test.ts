import { describe, expect, it } from 'vitest';
import { logAdd, logErfc, SignedLogSum } from './log-math.js';

describe('logErfc', () => {
  // Reference values of erfc (Abramowitz & Stegun Table 7.1 / any 20-digit table).
  const table: [number, number][] = [
    [-1, 1.8427007929497148],
    [0, 1],
    [0.5, 0.4795001221869535],
    [1, 0.15729920705028513],
    [2, 0.004677734981047266],
    [2.5, 0.000406952017444959],
    [3, 2.209049699858544e-5],
    [5, 1.5374597944280349e-12],
    [10, 2.088487583762545e-45],
  ];
  it.each(table)('erfc(%d) matches the table to 1e-12 relative', (x, expected) => {
    expect(Math.abs(Math.exp(logErfc(x)) / expected - 1)).toBeLessThan(1e-12);
  });

  it('is accurate far in the tail where erfc underflows (asymptotic series)', () => {
    // erfc(x) ~ e^{-x^2}/(x sqrt(pi)) (1 - 1/(2x^2) + 3/(4x^4)) for large x.
    for (const x of [50, 300, 1e4]) {
      const asymptotic = -x * x - Math.log(x * Math.sqrt(Math.PI)) + Math.log1p(-1 / (2 * x * x) + 3 / (4 * x ** 4));
      expect(Math.abs(logErfc(x) - asymptotic)).toBeLessThan(1e-9 * x * x);
    }
  });

  it('tends to log 2 for very negative x', () => {
    expect(logErfc(-40)).toBeCloseTo(Math.log(2), 15);
  });
});

describe('log-space sums', () => {
  it('logAdd and SignedLogSum agree with direct arithmetic', () => {
    expect(Math.exp(logAdd(Math.log(3), Math.log(4)))).toBeCloseTo(7, 12);
    const s = new SignedLogSum();
    s.add(1, Math.log(10));
    s.add(-1, Math.log(3));
    s.add(1, Math.log(0.5));
    expect(Math.exp(s.log())).toBeCloseTo(7.5, 12);
    s.add(-1, Math.log(7.5));
    expect(Math.exp(s.log())).toBeLessThan(1e-12);
  });
});
