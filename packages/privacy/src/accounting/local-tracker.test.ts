import { describe, expect, it } from 'vitest';
import { PrivacyError } from '../errors.js';
import { createSeededRng } from '../rng.js';
import { computeEpsilon } from './accountant.js';
import { createLocalPrivacyTracker } from './local-tracker.js';

describe('createLocalPrivacyTracker', () => {
  it('k participations at z equal k rounds of the q = 1 Gaussian mechanism', () => {
    const tracker = createLocalPrivacyTracker({ epsilonCap: 100, delta: 1e-5 });
    for (let i = 0; i < 7; i++) tracker.recordParticipation(3);
    const expected = computeEpsilon({ samplingRate: 1, noiseMultiplier: 3, rounds: 7, delta: 1e-5 });
    expect(tracker.spent().epsilon).toBeCloseTo(expected.epsilon, 12);
    expect(tracker.participations).toBe(7);
  });

  it('refuses (budget_exhausted) the participation that would exceed the cap', () => {
    const tracker = createLocalPrivacyTracker({ epsilonCap: 2, delta: 1e-5 });
    let refused: PrivacyError | undefined;
    for (let i = 0; i < 1000 && refused === undefined; i++) {
      try {
        tracker.recordParticipation(5);
      } catch (error) {
        refused = PrivacyError.from(error);
      }
    }
    expect(refused?.code).toBe('budget_exhausted');
    expect(tracker.spent().epsilon).toBeLessThanOrEqual(2);
    expect(tracker.canParticipate(5)).toBe(false);
    expect(tracker.epsilonIfParticipated(5).epsilon).toBeGreaterThan(2);
    // A refused attempt records nothing.
    const n = tracker.participations;
    expect(() => tracker.recordParticipation(5)).toThrow(PrivacyError);
    expect(tracker.participations).toBe(n);
  });

  it('property: over random noise levels the spent epsilon never exceeds the cap', () => {
    const rng = createSeededRng(99);
    for (let trial = 0; trial < 20; trial++) {
      const cap = 0.2 + 10 * rng.nextDouble();
      const tracker = createLocalPrivacyTracker({ epsilonCap: cap, delta: trial % 2 ? 1e-5 : 1e-6 });
      for (let i = 0; i < 200; i++) {
        const z = 0.5 + 20 * rng.nextDouble();
        if (tracker.canParticipate(z)) tracker.recordParticipation(z);
        else expect(() => tracker.recordParticipation(z)).toThrow(PrivacyError);
        expect(tracker.spent().epsilon).toBeLessThanOrEqual(cap);
      }
    }
  });

  it('restores history and reports it', () => {
    const tracker = createLocalPrivacyTracker({ epsilonCap: 10, delta: 1e-5, participations: [2, 4] });
    expect(tracker.history()).toEqual([2, 4]);
    expect(tracker.participations).toBe(2);
  });
});
