import { computeEpsilon } from '@veil/privacy';
import { describe, expect, it } from 'vitest';
import { DEFAULT_STRATEGY } from '../aggregation/registry.js';
import { ledgerParams } from '../privacy/accounting.js';
import { GENESIS_HASH, hashLedgerEntry, ledgerNumber, type LedgerEntry, type LedgerFields } from '../privacy/ledger.js';
import { resolvePrivacySettings, type PrivacySettings } from '../privacy/settings.js';
import type { Task } from '../rounds/model.js';
import { privacyCheckpoint, projectBudget, summarizePrivacy, taskWarnings, verifyPrivacyLedger, type PrivateTask } from './privacy-audit.js';

const delta = 1e-5;
const q = 0.2;
const z = 1.3;
/** ε of T rounds from @veil/privacy's accountant directly (independent of the ledger and its grouping). */
const eps = (rounds: number) => computeEpsilon({ samplingRate: q, noiseMultiplier: z, rounds, delta });

function settings(epsilonCap: number): PrivacySettings {
  return resolvePrivacySettings({ mode: 'local', epsilonCap, delta, noiseMultiplier: z, clipNorm: 1, samplingRate: q }, 1);
}

function task(epsilonCap: number, rounds: number): PrivateTask {
  return {
    id: '00000000-0000-4000-8000-000000000001',
    name: 't',
    status: 'RUNNING',
    statusReason: null,
    settings: {
      rounds,
      selection: { kind: 'poisson', samplingRate: q, maxCount: 100 },
      minClients: 1,
      minAvailableClients: 1,
      roundDeadlineMs: 1000,
      maxExampleCount: 1,
      training: { epochs: 1, batchSize: 1, learningRate: 0.1 },
      updateEncoding: 'float32-le',
      privacy: settings(epsilonCap),
      updateBound: null,
      strategy: DEFAULT_STRATEGY,
      maxDevices: 100,
    },
    modelTopology: {},
    weightSpecs: [],
    parameterCount: 1,
    encryption: null,
    currentModelVersion: 0,
    createdAt: new Date(0),
    updatedAt: new Date(0),
  } as Task as PrivateTask;
}

/** A ledger written the way the engine writes it, ε from the independent accountant. */
function ledger(rounds: number, s: PrivacySettings, participants: (round: number) => string[] = (r) => [`a`, `b${r}`]): LedgerEntry[] {
  const entries: LedgerEntry[] = [];
  for (let i = 1; i <= rounds; i++) {
    const e = eps(i);
    const ids = participants(i);
    const fields: LedgerFields = {
      taskId: '00000000-0000-4000-8000-000000000001',
      sequence: i,
      roundNumber: i,
      ...ledgerParams(s),
      participants: ids.length,
      participantIds: ids,
      epsilon: ledgerNumber(e.epsilon),
      delta,
      order: e.order,
      createdAt: new Date(Date.UTC(2026, 11, 6, 12, 0, i)).toISOString(),
    };
    const prevHash = entries.at(-1)?.hash ?? GENESIS_HASH;
    entries.push({ ...fields, prevHash, hash: hashLedgerEntry(fields, prevHash) });
  }
  return entries;
}

describe('projectBudget', () => {
  it('names the last round within the cap and the first one refused, as the accountant computes them', () => {
    // Brute force with the independent accountant: the largest T with ε(T) <= cap.
    const cap = (eps(37).epsilon + eps(38).epsilon) / 2;
    for (const done of [0, 1, 12, 37]) {
      const p = projectBudget(settings(cap), 100, ledger(done, settings(cap)));
      expect(p.lastAffordableRound).toBe(37);
      expect(p.exhaustedAtRound).toBe(38);
      expect(p.nextRoundEpsilon).toBeCloseTo(eps(done + 1).epsilon - (done === 0 ? 0 : eps(done).epsilon), 9);
    }
  });

  it('says the task ends first when its rounds fit the budget', () => {
    const cap = eps(50).epsilon * 1.01;
    expect(projectBudget(settings(cap), 20, ledger(5, settings(cap)))).toMatchObject({ exhaustedAtRound: null });
    expect(projectBudget(settings(cap), 20, ledger(5, settings(cap))).lastAffordableRound).toBeGreaterThanOrEqual(20);
  });

  it('reports an exhausted budget at the next round', () => {
    const cap = (eps(3).epsilon + eps(4).epsilon) / 2;
    expect(projectBudget(settings(cap), 10, ledger(3, settings(cap)))).toMatchObject({ lastAffordableRound: 3, exhaustedAtRound: 4 });
  });
});

describe('summarizePrivacy', () => {
  it('labels cumulative figures, names devices and counts their participations', () => {
    const t = task(100, 10);
    const entries = ledger(3, t.settings.privacy);
    const s = summarizePrivacy(t, entries, [
      { id: 'a', name: 'phone-a' },
      { id: 'b2', name: null },
    ]);
    expect(s.epsilonSpent).toBe(entries[2]!.epsilon);
    expect(s.rounds.map((r) => r.epsilonCumulative)).toEqual(entries.map((e) => e.epsilon));
    expect(s.rounds.map((r) => r.order)).toEqual(entries.map((e) => e.order));
    expect(s.remaining).toBeCloseTo(100 - eps(3).epsilon, 9);
    const a = s.clients.find((c) => c.clientId === 'a')!;
    expect(a).toMatchObject({ name: 'phone-a', participations: 3 });
    // A device that knows it took part composes the unamplified Gaussian (q = 1) over its rounds.
    expect(a.epsilon).toBeCloseTo(computeEpsilon({ samplingRate: 1, noiseMultiplier: z, rounds: 3, delta }).epsilon, 9);
    expect(s.clients.find((c) => c.clientId === 'b2')).toMatchObject({ name: null, participations: 1 });
    expect(s.clients.find((c) => c.clientId === 'b3')).toMatchObject({ name: null, participations: 1 });
  });
});

describe('taskWarnings', () => {
  it('flags an epsilon cap above 10 only', () => {
    expect(taskWarnings(task(10, 1))).toEqual([]);
    expect(taskWarnings(task(10.5, 1))).toEqual([expect.stringContaining('epsilonCap 10.5 is above 10')]);
    expect(taskWarnings({ settings: { ...task(30, 1).settings, privacy: null } })).toEqual([]);
  });
});

describe('verifyPrivacyLedger and privacyCheckpoint', () => {
  it('verifies an intact ledger and reports its head hash; names the first altered entry', () => {
    const t = task(100, 10);
    const entries = ledger(4, t.settings.privacy);
    expect(verifyPrivacyLedger(t, entries)).toEqual({ ok: true, entries: 4, withinCap: true, firstMismatch: null, headHash: entries[3]!.hash });
    const tampered = entries.map((e) => (e.sequence === 3 ? { ...e, participants: 1, participantIds: ['a'] } : e));
    expect(verifyPrivacyLedger(t, tampered)).toMatchObject({ ok: false, firstMismatch: { sequence: 3 } });
    expect(verifyPrivacyLedger(t, [])).toMatchObject({ ok: true, entries: 0, headHash: GENESIS_HASH });
    const over = task(eps(2).epsilon, 10);
    expect(verifyPrivacyLedger(over, entries).withinCap).toBe(false);
  });

  it('checkpoints the head of the chain', () => {
    const t = task(100, 10);
    const entries = ledger(2, t.settings.privacy);
    const c = privacyCheckpoint(t, entries, new Date(Date.UTC(2026, 11, 6)));
    expect(c).toMatchObject({ taskId: t.id, sequence: 2, roundNumber: 2, headHash: entries[1]!.hash, epsilonCumulative: entries[1]!.epsilon, signed: false, createdAt: '2026-12-06T00:00:00.000Z' });
  });
});
