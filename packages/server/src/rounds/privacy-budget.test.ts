/**
 * The privacy budget part on its own: an in-memory ledger and fake time. ε is
 * checked against @veil/privacy's `computeEpsilon` for T rounds of the
 * Poisson-subsampled Gaussian (Mironov, Talwar & Zhang 2019), computed here
 * independently of the ledger code.
 */
import { describe, expect, it } from 'vitest';
import { computeEpsilon } from '@veil/privacy';
import { epsilonOfEntries } from '../privacy/accounting.js';
import { GENESIS_HASH, verifyLedger, type LedgerEntry } from '../privacy/ledger.js';
import { createFakeTime } from './clock.js';
import type { Task } from './model.js';
import { createPrivacyBudget, maxRoundClients, poissonSampleRefusal, type PrivacyBudgetOptions } from './privacy-budget.js';
import { resolveTaskSettings } from './task-settings.js';

const Z = 1.1;
const Q = 0.5;
const DELTA = 1e-5;
const epsilonAfter = (rounds: number): number => computeEpsilon({ samplingRate: Q, noiseMultiplier: Z, rounds, delta: DELTA }).epsilon;

function ledger(): PrivacyBudgetOptions['store'] & { entries: LedgerEntry[]; reads: number } {
  const entries: LedgerEntry[] = [];
  return {
    entries,
    reads: 0,
    async listLedger(taskId) {
      this.reads++;
      return entries.filter((e) => e.taskId === taskId);
    },
    async lastLedgerEntry(taskId) {
      this.reads++;
      return entries.filter((e) => e.taskId === taskId).at(-1) ?? null;
    },
  };
}

function dpTask(epsilonCap: number): Pick<Task, 'id' | 'settings'> {
  const settings = resolveTaskSettings({
    name: 'dp',
    rounds: 10,
    minClients: 1,
    training: { epochs: 1, batchSize: 1, learningRate: 0.1 },
    privacy: { mode: 'local', epsilonCap, delta: DELTA, noiseMultiplier: Z, clipNorm: 1, samplingRate: Q },
  });
  return { id: 'task-dp', settings };
}

describe('privacy budget', () => {
  it('a task without DP reads no ledger, is never refused and makes no entry', async () => {
    const store = ledger();
    const budget = createPrivacyBudget({ store, clock: createFakeTime().clock });
    const task = { id: 'plain', settings: resolveTaskSettings({ name: 'p', rounds: 2, clientsPerRound: 2, minClients: 1, training: { epochs: 1, batchSize: 1, learningRate: 0.1 } }) };
    expect(await budget.refusal(task, 1)).toBeNull();
    expect(await budget.spend(task, 1, ['a', 'b'])).toEqual({ kind: 'free' });
    expect(await budget.decryption(task, 1, { clientIds: ['a'], record: { descriptorHash: '00', hashD: '11', manifestDigests: [], answers: [] } })).toBeNull();
    expect(store.reads).toBe(0);
  });

  it('spends rounds while ε stays within the cap (ε as the accountant computes it), chained, then refuses the round that would pass it', async () => {
    // A cap between ε after 3 and after 4 rounds: exactly three rounds fit.
    const cap = (epsilonAfter(3) + epsilonAfter(4)) / 2;
    const task = dpTask(cap);
    const store = ledger();
    const time = createFakeTime();
    const budget = createPrivacyBudget({ store, clock: time.clock });
    for (let round = 1; round <= 3; round++) {
      expect(await budget.refusal(task, round)).toBeNull();
      // Several rounds at once (RDP adds up): rounds round..3 fit, one more does not.
      expect(await budget.refusal(task, round, 4 - round)).toBeNull();
      const tooMany = await budget.refusal(task, round, 5 - round);
      expect(tooMany).toMatch(new RegExp(`^rounds ${round}-4 would spend the privacy budget: epsilon `));
      expect(Number(/epsilon (\S+) >/.exec(tooMany!)![1])).toBeCloseTo(epsilonAfter(4), 4);
      await time.advance(1000);
      const spend = await budget.spend(task, round, [`d${round}-b`, `d${round}-a`]);
      if (spend.kind !== 'spend') throw new Error(`round ${round}: ${spend.kind}`);
      const entry = spend.entry;
      expect(entry).toMatchObject({
        taskId: task.id,
        sequence: round,
        roundNumber: round,
        mechanism: 'gaussian-local',
        samplingRate: Q,
        noiseMultiplier: Z,
        clipNorm: 1,
        participants: 2,
        participantIds: [`d${round}-a`, `d${round}-b`],
        delta: DELTA,
        createdAt: new Date(time.clock.now()).toISOString(),
        prevHash: round === 1 ? GENESIS_HASH : store.entries.at(-1)!.hash,
      });
      expect(entry.epsilon).toBeCloseTo(epsilonAfter(round), 9);
      // spend() only makes the entry: the round's own commit writes it.
      expect(store.entries).toHaveLength(round - 1);
      store.entries.push(entry);
    }
    expect(verifyLedger(store.entries, (upTo) => epsilonOfEntries(upTo, DELTA).epsilon)).toEqual({ ok: true, entries: 3, firstMismatch: null });

    const reason = await budget.refusal(task, 4);
    expect(reason).toMatch(/^round 4 would spend the privacy budget: epsilon \d+\.\d{4} > cap /);
    expect(Number(/epsilon (\S+) >/.exec(reason!)![1])).toBeCloseTo(epsilonAfter(4), 4);
    expect(await budget.spend(task, 4, ['x'])).toEqual({ kind: 'exhausted', reason });
    expect(store.entries).toHaveLength(3);
  });

  it('checks again when the round spends, against the ledger as it is then', async () => {
    const task = dpTask((epsilonAfter(1) + epsilonAfter(2)) / 2);
    const store = ledger();
    const budget = createPrivacyBudget({ store, clock: createFakeTime().clock });
    expect(await budget.refusal(task, 1)).toBeNull();
    // The round's spend is committed; asked again (say by a second selection of the same round), the budget refuses.
    const first = await budget.spend(task, 1, ['a']);
    if (first.kind !== 'spend') throw new Error(first.kind);
    store.entries.push(first.entry);
    expect(await budget.spend(task, 1, ['a'])).toMatchObject({ kind: 'exhausted', reason: expect.stringMatching(/^round 1 would spend/) });
  });

  it("a committee round's decryption record follows the round's spend and spends nothing", async () => {
    const task = dpTask(100);
    const store = ledger();
    const time = createFakeTime();
    const budget = createPrivacyBudget({ store, clock: time.clock });
    const spend = await budget.spend(task, 1, ['b', 'a']);
    if (spend.kind !== 'spend') throw new Error(spend.kind);
    store.entries.push(spend.entry);
    expect(await budget.decryption(task, 1, undefined)).toBeNull();
    const record = { descriptorHash: 'aa'.repeat(32), hashD: 'bb'.repeat(32), manifestDigests: ['d2', 'd1'], answers: [] };
    const entry = await budget.decryption(task, 1, { clientIds: ['b', 'a'], record });
    expect(entry).toMatchObject({
      sequence: 2,
      roundNumber: 1,
      mechanism: 'committee-decryption',
      epsilon: spend.entry.epsilon,
      order: spend.entry.order,
      participantIds: ['a', 'b'],
      prevHash: spend.entry.hash,
      decryption: { descriptorHash: record.descriptorHash, hashD: record.hashD, manifestDigests: ['d1', 'd2'], answers: [] },
    });
    store.entries.push(entry!);
    // ε after a decryption record is unchanged: the next round costs what it would have without it.
    const next = await budget.spend(task, 2, ['a']);
    if (next.kind !== 'spend') throw new Error(next.kind);
    expect(next.entry.epsilon).toBeCloseTo(epsilonAfter(2), 9);
  });
});

describe('selection bounds', () => {
  it('the most devices a round selects: the count, the Poisson cap, none for a fraction', () => {
    expect(maxRoundClients({ kind: 'count', count: 7 })).toBe(7);
    expect(maxRoundClients({ kind: 'poisson', samplingRate: 0.1, maxCount: 40 })).toBe(40);
    expect(maxRoundClients({ kind: 'fraction', fraction: 0.5 })).toBeNull();
  });

  it('a Poisson sample trains only within [minClients, maxCount], both ends included', () => {
    const selection = { kind: 'poisson' as const, samplingRate: 0.25, maxCount: 6 };
    const refusal = (size: number) => poissonSampleRefusal(size, { available: 20, minClients: 3, selection });
    expect(refusal(3)).toBeNull();
    expect(refusal(6)).toBeNull();
    expect(refusal(2)).toBe('Poisson sample of 2 clients (q=0.25, 20 available) is outside [3, 6]');
    expect(refusal(7)).toBe('Poisson sample of 7 clients (q=0.25, 20 available) is outside [3, 6]');
  });
});
