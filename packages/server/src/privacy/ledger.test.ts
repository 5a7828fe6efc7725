import { describe, expect, it } from 'vitest';
import { epsilonOfEntries, epsilonIfRoundRuns } from './accounting.js';
import { GENESIS_HASH, hashLedgerEntry, verifyLedger, type LedgerEntry, type LedgerFields } from './ledger.js';

function buildLedger(rounds: number, q = 0.1, z = 1.1, delta = 1e-5): LedgerEntry[] {
  const entries: LedgerEntry[] = [];
  for (let i = 1; i <= rounds; i++) {
    const eps = epsilonOfEntries([...entries, { samplingRate: q, noiseMultiplier: z }], delta);
    const fields: LedgerFields = {
      taskId: '00000000-0000-4000-8000-000000000001',
      sequence: i,
      roundNumber: i,
      mechanism: 'gaussian-local',
      samplingRate: q,
      noiseMultiplier: z,
      clipNorm: 1,
      participants: 2,
      participantIds: [`c${i}`, `d${i}`],
      epsilon: eps.epsilon,
      delta,
      order: eps.order,
      createdAt: new Date(Date.UTC(2026, 10, 27, 12, 0, i)).toISOString(),
    };
    const prevHash = entries.at(-1)?.hash ?? GENESIS_HASH;
    entries.push({ ...fields, prevHash, hash: hashLedgerEntry(fields, prevHash) });
  }
  return entries;
}

const recompute = (upTo: readonly LedgerEntry[]) => epsilonOfEntries(upTo, upTo.at(-1)!.delta).epsilon;

describe('privacy ledger', () => {
  it('verifies an intact hash chain and its recomputed epsilons', () => {
    const ledger = buildLedger(5);
    expect(verifyLedger(ledger, recompute)).toEqual({ ok: true, entries: 5, firstMismatch: null });
    expect(ledger[1]!.prevHash).toBe(ledger[0]!.hash);
    expect(ledger[4]!.epsilon).toBeGreaterThan(ledger[0]!.epsilon);
  });

  const tamper: Array<[keyof LedgerEntry, (e: LedgerEntry) => unknown]> = [
    ['taskId', () => '00000000-0000-4000-8000-000000000002'],
    ['sequence', (e) => e.sequence + 10],
    ['roundNumber', (e) => e.roundNumber + 1],
    ['mechanism', () => 'gaussian-distributed'],
    ['samplingRate', (e) => e.samplingRate / 2],
    ['noiseMultiplier', (e) => e.noiseMultiplier * 2],
    ['clipNorm', (e) => e.clipNorm * 0.5],
    ['participants', (e) => e.participants + 1],
    ['participantIds', (e) => [...e.participantIds, 'intruder']],
    ['epsilon', (e) => e.epsilon * 0.9],
    ['delta', () => 1e-3],
    ['order', (e) => e.order + 1],
    ['createdAt', () => new Date(0).toISOString()],
    ['prevHash', () => 'f'.repeat(64)],
    ['hash', () => '0'.repeat(64)],
  ];

  it.each(tamper)('detects tampering with %s and names the first altered entry', (field, change) => {
    const ledger = buildLedger(4);
    const altered = ledger.map((e) => ({ ...e }));
    (altered[2] as Record<string, unknown>)[field] = change(altered[2]!);
    const result = verifyLedger(altered, recompute);
    expect(result.ok).toBe(false);
    expect(result.firstMismatch?.sequence).toBe(altered[2]!.sequence);
  });

  it('detects a re-hashed entry whose epsilon was lowered (recomputation from parameters)', () => {
    const ledger = buildLedger(3);
    const forged = ledger.map((e) => ({ ...e }));
    // An attacker who rewrites the chain consistently still cannot hide a lowered epsilon.
    forged[1]!.epsilon = forged[1]!.epsilon / 2;
    for (let i = 1; i < forged.length; i++) {
      const prevHash = forged[i - 1]!.hash;
      forged[i]!.prevHash = prevHash;
      forged[i]!.hash = hashLedgerEntry(forged[i]!, prevHash);
    }
    const result = verifyLedger(forged, recompute);
    expect(result.firstMismatch).toMatchObject({ sequence: 2, reason: expect.stringMatching(/recomputed/) });
  });

  it('detects a deleted entry', () => {
    const ledger = buildLedger(4);
    const result = verifyLedger([ledger[0]!, ledger[2]!, ledger[3]!], recompute);
    expect(result.firstMismatch?.sequence).toBe(3);
  });
});

describe('budget enforcement', () => {
  // A small seeded generator for the property test.
  function mulberry32(seed: number) {
    return () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  it('never opens a round past the cap, over random settings (the engine rule: open only if epsilonIfRoundRuns <= cap)', () => {
    const random = mulberry32(7);
    for (let trial = 0; trial < 40; trial++) {
      const settings = {
        mode: 'local' as const,
        epsilonCap: 0.5 + random() * 8,
        delta: random() < 0.5 ? 1e-5 : 1e-6,
        noiseMultiplier: 0.6 + random() * 3,
        clipNorm: 1,
        samplingRate: 0.01 + random() * 0.6,
        minNoiseClients: 1,
        scale: 1024,
      };
      const spent: Array<{ samplingRate: number; noiseMultiplier: number }> = [];
      for (let round = 0; round < 400; round++) {
        const next = epsilonIfRoundRuns(spent, settings);
        if (!(next.epsilon <= settings.epsilonCap)) break;
        spent.push({ samplingRate: settings.samplingRate, noiseMultiplier: settings.noiseMultiplier });
      }
      const total = spent.length === 0 ? 0 : epsilonOfEntries(spent, settings.delta).epsilon;
      expect(total).toBeLessThanOrEqual(settings.epsilonCap);
      if (spent.length < 400) expect(epsilonIfRoundRuns(spent, settings).epsilon).toBeGreaterThan(settings.epsilonCap);
    }
  });
});
