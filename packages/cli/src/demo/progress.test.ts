import { describe, expect, it } from 'vitest';
import { roundLabel } from './progress.js';

describe('demo progress labels', () => {
  it('names training rounds out of the training rounds, and the rounds after them calibration rounds (not "round 4/3")', () => {
    expect(roundLabel(1, 3)).toBe('round  1/3');
    expect(roundLabel(3, 3)).toBe('round  3/3');
    expect(roundLabel(4, 3)).toBe('calibration round 1');
    expect(roundLabel(5, 3)).toBe('calibration round 2');
    expect(roundLabel(10, 10)).toBe('round 10/10');
  });
});
