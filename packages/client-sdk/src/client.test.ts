import { describe, expect, it } from 'vitest';
import { fitTrainingOptions } from './client.js';

describe("a round's fit config in local training", () => {
  it("sets FedProx's proximalMu and the local momentum, and leaves other keys to middleware", () => {
    expect(fitTrainingOptions({ proximalMu: 0.01, momentum: 0.9, tag: 'x', flag: true })).toEqual({ proximalMu: 0.01, momentum: 0.9 });
    expect(fitTrainingOptions({})).toEqual({});
  });

  it('refuses a training key of the wrong type instead of training without it', () => {
    expect(() => fitTrainingOptions({ proximalMu: '0.01' })).toThrow(/proximalMu must be a number, got string/);
    expect(() => fitTrainingOptions({ momentum: true })).toThrow(/momentum must be a number/);
  });
});
