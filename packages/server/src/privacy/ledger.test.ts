import { createHash } from 'node:crypto';
import { DDG_RDP_ORDERS, computeDistributedDiscreteGaussianEpsilon, computeEpsilon, createSeededRng } from '@veil/privacy';
import { describe, expect, it } from 'vitest';
import { clientEpsilon, epsilonIfRoundRuns, epsilonOfEntries, ledgerParams, type AccountedEntry } from './accounting.js';
import { GENESIS_HASH, hashLedgerEntry, verifyLedger, type LedgerEntry, type LedgerFields } from './ledger.js';
import { completeDistributedSettings, resolvePrivacySettings, type PrivacySettings } from './settings.js';
import { decryptionLedgerEntry } from './budget.js';

const T_MODULUS = 536_813_569; // the default BFV preset's 29-bit plain modulus

function localSettings(q = 0.1, z = 1.1): PrivacySettings {
  return resolvePrivacySettings({ mode: 'local', epsilonCap: 1000, delta: 1e-5, noiseMultiplier: z, clipNorm: 1, samplingRate: q }, 1);
}

function distributedSettings(q = 0.1, z = 1.1, n = 50, parameterCount = 7850): PrivacySettings {
  const s = resolvePrivacySettings({ mode: 'distributed', epsilonCap: 1000, delta: 1e-5, noiseMultiplier: z, clipNorm: 1, samplingRate: q }, n);
  completeDistributedSettings(s, { parameterCount, plainModulus: T_MODULUS, maxClients: 1000 });
  return s;
}

function buildLedger(rounds: number, settings: PrivacySettings = localSettings()): LedgerEntry[] {
  const entries: LedgerEntry[] = [];
  for (let i = 1; i <= rounds; i++) {
    const eps = epsilonIfRoundRuns(entries, settings);
    const fields: LedgerFields = {
      taskId: '00000000-0000-4000-8000-000000000001',
      sequence: i,
      roundNumber: i,
      ...ledgerParams(settings),
      participants: 2,
      participantIds: [`c${i}`, `d${i}`],
      epsilon: eps.epsilon,
      delta: settings.delta,
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
    for (const settings of [localSettings(), distributedSettings()]) {
      const ledger = buildLedger(5, settings);
      expect(verifyLedger(ledger, recompute)).toEqual({ ok: true, entries: 5, firstMismatch: null });
      expect(ledger[1]!.prevHash).toBe(ledger[0]!.hash);
      expect(ledger[4]!.epsilon).toBeGreaterThan(ledger[0]!.epsilon);
    }
  });

  it('keeps the original hash form for entries without mechanism parameters (ledgers written before distributed mode)', () => {
    const [entry] = buildLedger(1);
    // The 13-field canonical form of the first release, computed independently.
    const canonical = JSON.stringify([
      entry!.taskId, entry!.sequence, entry!.roundNumber, entry!.mechanism, entry!.samplingRate, entry!.noiseMultiplier,
      entry!.clipNorm, entry!.participants, entry!.participantIds, entry!.epsilon, entry!.delta, entry!.order, entry!.createdAt,
    ]);
    expect(entry!.hash).toBe(createHash('sha256').update(canonical).update('\n').update(GENESIS_HASH).digest('hex'));
  });

  const tamper: Array<[string, (e: LedgerEntry) => Partial<LedgerEntry>]> = [
    ['taskId', () => ({ taskId: '00000000-0000-4000-8000-000000000002' })],
    ['sequence', (e) => ({ sequence: e.sequence + 10 })],
    ['roundNumber', (e) => ({ roundNumber: e.roundNumber + 1 })],
    ['mechanism', (e) => ({ mechanism: e.mechanism === 'gaussian-local' ? 'ddg-distributed' : 'gaussian-local' })],
    ['samplingRate', (e) => ({ samplingRate: e.samplingRate / 2 })],
    ['noiseMultiplier', (e) => ({ noiseMultiplier: e.noiseMultiplier * 2 })],
    ['clipNorm', (e) => ({ clipNorm: e.clipNorm * 0.5 })],
    ['participants', (e) => ({ participants: e.participants + 1 })],
    ['participantIds', (e) => ({ participantIds: [...e.participantIds, 'intruder'] })],
    ['epsilon', (e) => ({ epsilon: e.epsilon * 0.9 })],
    ['delta', () => ({ delta: 1e-3 })],
    ['order', (e) => ({ order: e.order + 1 })],
    ['createdAt', () => ({ createdAt: new Date(0).toISOString() })],
    ['prevHash', () => ({ prevHash: 'f'.repeat(64) })],
    ['hash', () => ({ hash: '0'.repeat(64) })],
  ];
  const ddgTamper: Array<[string, (e: LedgerEntry) => Partial<LedgerEntry>]> = [
    ['ddg.noiseClients', (e) => ({ ddg: { ...e.ddg!, noiseClients: e.ddg!.noiseClients * 2 } })],
    ['ddg.scale', (e) => ({ ddg: { ...e.ddg!, scale: e.ddg!.scale * 2 } })],
    ['ddg.localStddev', (e) => ({ ddg: { ...e.ddg!, localStddev: e.ddg!.localStddev * 2 } })],
    ['ddg.dimension', (e) => ({ ddg: { ...e.ddg!, dimension: e.ddg!.dimension / 2 } })],
    ['ddg.roundingBeta', (e) => ({ ddg: { ...e.ddg!, roundingBeta: 0.5 } })],
    ['ddg (removed)', () => ({ ddg: null })],
  ];

  it.each([
    ...tamper.map(([f, c]) => ['local', f, c] as const),
    ...[...tamper, ...ddgTamper].map(([f, c]) => ['distributed', f, c] as const),
  ])('%s mode: detects tampering with %s and names the first altered entry', (mode, _field, change) => {
    const ledger = buildLedger(4, mode === 'local' ? localSettings() : distributedSettings());
    const altered = ledger.map((e) => ({ ...e }));
    altered[2] = { ...altered[2]!, ...change(altered[2]!) };
    const result = verifyLedger(altered, (upTo) => {
      try {
        return recompute(upTo);
      } catch {
        return Number.NaN; // a mechanism without its parameters cannot be recomputed: a mismatch
      }
    });
    expect(result.ok).toBe(false);
    expect(result.firstMismatch?.sequence).toBe(altered[2]!.sequence);
  });

  it('detects a re-hashed entry whose epsilon was lowered (recomputation from parameters)', () => {
    for (const settings of [localSettings(), distributedSettings()]) {
      const forged = buildLedger(3, settings).map((e) => ({ ...e }));
      // An attacker who rewrites the chain consistently still cannot hide a lowered epsilon.
      forged[1]!.epsilon = forged[1]!.epsilon / 2;
      for (let i = 1; i < forged.length; i++) {
        const prevHash = forged[i - 1]!.hash;
        forged[i]!.prevHash = prevHash;
        forged[i]!.hash = hashLedgerEntry(forged[i]!, prevHash);
      }
      expect(verifyLedger(forged, recompute).firstMismatch).toMatchObject({ sequence: 2, reason: expect.stringMatching(/recomputed/) });
    }
  });

  it('detects a deleted entry', () => {
    const ledger = buildLedger(4);
    const result = verifyLedger([ledger[0]!, ledger[2]!, ledger[3]!], recompute);
    expect(result.firstMismatch?.sequence).toBe(3);
  });
});

describe('accounting of ledger entries', () => {
  it('local mode composes the Poisson-subsampled Gaussian (same as computeEpsilon over T rounds)', () => {
    const entries = buildLedger(30, localSettings(0.05, 1.2));
    const direct = computeEpsilon({ samplingRate: 0.05, noiseMultiplier: 1.2, rounds: 30, delta: 1e-5 });
    expect(epsilonOfEntries(entries, 1e-5).epsilon).toBeCloseTo(direct.epsilon, 10);
  });

  it('distributed mode composes the DDG RDP of KLS21 with the recorded parameters (same as its T-step epsilon)', () => {
    const s = distributedSettings(0.2, 1.0, 100, 7850);
    const ddg = s.ddg!;
    expect(ddg).toMatchObject({ noiseClients: 100, dimension: 8192, modulus: T_MODULUS, scale: 1024 });
    expect(ddg.localStddev).toBeCloseTo(1.0 / Math.sqrt(100), 12);
    const entries = buildLedger(20, s);
    const direct = computeDistributedDiscreteGaussianEpsilon({
      clipNorm: 1,
      scale: ddg.scale,
      localStddev: ddg.localStddev,
      clients: 100,
      dimension: 8192,
      beta: ddg.roundingBeta,
      samplingRate: 0.2,
      steps: 20,
      delta: 1e-5,
      orders: DDG_RDP_ORDERS,
    });
    expect(epsilonOfEntries(entries, 1e-5).epsilon).toBeCloseTo(direct.epsilon, 10);
    // Discretisation costs privacy, never saves it: DDG at the same z is at least the continuous Gaussian's epsilon.
    const gaussian = computeEpsilon({ samplingRate: 0.2, noiseMultiplier: 1.0, rounds: 20, delta: 1e-5 }).epsilon;
    expect(direct.epsilon).toBeGreaterThanOrEqual(gaussian);
  });

  it('distributed mode also evaluates the integer orders 64..127 the defaults skip (the authors\' accountant uses them)', () => {
    // z = 3, q = 0.001: the subsampled bound is smallest near order 120 (KLS21 reference code, google-research/federated).
    const s = distributedSettings(0.001, 3, 100, 50_000);
    const withUnion = epsilonOfEntries(buildLedger(1, s), 1e-5);
    const defaultsOnly = computeDistributedDiscreteGaussianEpsilon({
      clipNorm: 1, scale: s.ddg!.scale, localStddev: s.ddg!.localStddev, clients: 100, dimension: s.ddg!.dimension, beta: s.ddg!.roundingBeta, samplingRate: 0.001, delta: 1e-5,
    });
    expect(withUnion.order).toBeGreaterThan(63);
    expect(withUnion.order).toBeLessThan(128);
    expect(withUnion.epsilon).toBeLessThan(defaultsOnly.epsilon * 0.7);
  });

  it('without sampling, DDG at scale 2^10 is within 1% of the Gaussian at the same z (rounding adds ~sqrt(d)/2 grid steps to the norm)', () => {
    const s = distributedSettings(1, 1.0, 100, 7850);
    const ddg = epsilonOfEntries(buildLedger(5, s), 1e-5).epsilon;
    const gaussian = computeEpsilon({ samplingRate: 1, noiseMultiplier: 1.0, rounds: 5, delta: 1e-5 }).epsilon;
    expect(ddg).toBeGreaterThanOrEqual(gaussian);
    expect(ddg / gaussian).toBeLessThan(1.01);
  });

  it('a client is accounted only for the rounds it took part in, without amplification', () => {
    const s = distributedSettings(0.2, 1.0, 100);
    const entries: AccountedEntry[] = buildLedger(3, s);
    const twice = clientEpsilon(entries.slice(0, 2), 1e-5).epsilon;
    const unamplified = computeDistributedDiscreteGaussianEpsilon({
      clipNorm: 1, scale: s.ddg!.scale, localStddev: s.ddg!.localStddev, clients: 100, dimension: 8192, beta: s.ddg!.roundingBeta, samplingRate: 1, steps: 2, delta: 1e-5, orders: DDG_RDP_ORDERS,
    }).epsilon;
    expect(twice).toBeCloseTo(unamplified, 10);
    expect(twice).toBeGreaterThan(epsilonOfEntries(entries.slice(0, 2), 1e-5).epsilon);
  });
});

describe('distributed settings', () => {
  it('need an encrypted task, and refuse a sum that could wrap around the plain modulus', () => {
    const s = resolvePrivacySettings({ mode: 'distributed', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5 }, 10);
    expect(() => completeDistributedSettings(s, { parameterCount: 100, plainModulus: null, maxClients: 10 })).toThrow(/needs encrypted aggregation/);
    const huge = resolvePrivacySettings(
      { mode: 'distributed', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5, scale: 2 ** 20 },
      10,
    );
    expect(() => completeDistributedSettings(huge, { parameterCount: 100, plainModulus: T_MODULUS, maxClients: 10_000 })).toThrow(/wrap around.*bits/);
    expect(() =>
      resolvePrivacySettings({ mode: 'distributed', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5, minNoiseClients: 11 }, 10),
    ).toThrow(/cannot exceed minClients/);
    expect(() =>
      resolvePrivacySettings({ mode: 'local', epsilonCap: 8, delta: 1e-5, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5, scale: 64 }, 10),
    ).toThrow(/distributed mode only/);
  });
});

describe('budget enforcement', () => {
  it('never opens a round past the cap, over random settings of both modes (the engine rule: open only if epsilonIfRoundRuns <= cap)', () => {
    const rng = createSeededRng(7);
    const random = (): number => rng.nextDouble();
    for (let trial = 0; trial < 40; trial++) {
      const distributed = trial % 2 === 1;
      const mode = distributed ? ('distributed' as const) : ('local' as const);
      const n = 10 + Math.floor(random() * 200);
      const settings = resolvePrivacySettings(
        {
          mode,
          epsilonCap: 0.5 + random() * 8,
          delta: random() < 0.5 ? 1e-5 : 1e-6,
          noiseMultiplier: 0.6 + random() * 3,
          clipNorm: 0.1 + random() * 2,
          samplingRate: 0.01 + random() * 0.6,
          ...(distributed && { scale: 2 ** (6 + Math.floor(random() * 6)) }),
        },
        n,
      );
      completeDistributedSettings(settings, { parameterCount: 1000 + Math.floor(random() * 100_000), plainModulus: T_MODULUS, maxClients: n * 4 });
      const spent: AccountedEntry[] = [];
      for (let round = 0; round < 400; round++) {
        const next = epsilonIfRoundRuns(spent, settings);
        if (!(next.epsilon <= settings.epsilonCap)) break;
        spent.push(ledgerParams(settings));
      }
      const total = spent.length === 0 ? 0 : epsilonOfEntries(spent, settings.delta).epsilon;
      expect(total).toBeLessThanOrEqual(settings.epsilonCap);
      if (spent.length < 400) expect(epsilonIfRoundRuns(spent, settings).epsilon).toBeGreaterThan(settings.epsilonCap);
    }
  });
});

describe('committee decryption records', () => {
  const decryptionEntry = (last: LedgerEntry, settings: PrivacySettings): LedgerEntry =>
    decryptionLedgerEntry({
      taskId: last.taskId,
      roundNumber: last.roundNumber,
      privacy: settings,
      last,
      clientIds: last.participantIds,
      decryption: {
        descriptorHash: 'ab'.repeat(32),
        hashD: 'cd'.repeat(32),
        manifestDigests: ['11'.repeat(32), '22'.repeat(32)],
        answers: [1, 3].map((i) => ({
          answer: { descriptorHash: 'ab'.repeat(32), round: last.roundNumber, hashD: 'cd'.repeat(32), count: 2, custodianIndex: i, shareSumSha256: 'ee'.repeat(32) },
          signature: Buffer.alloc(64, i).toString('base64'),
        })),
      },
      at: new Date(Date.UTC(2026, 11, 6, 12, 0, 0)),
    });

  it('spend nothing: the accountant, the budget and the chain verification see only the spend entries', () => {
    for (const settings of [localSettings(), distributedSettings()]) {
      const spends = buildLedger(3, settings);
      // Interleave a decryption record after each spend, re-chained.
      const chained: LedgerEntry[] = [];
      for (const spend of spends) {
        const { prevHash: _p, hash: _h, ...fields } = spend;
        const prevHash = chained.at(-1)?.hash ?? GENESIS_HASH;
        const s = { ...fields, sequence: chained.length + 1, prevHash, hash: '' };
        s.hash = hashLedgerEntry(s, prevHash);
        chained.push(s);
        chained.push(decryptionEntry(s, settings));
      }
      expect(chained.map((e) => e.mechanism).filter((m) => m === 'committee-decryption')).toHaveLength(3);
      expect(epsilonOfEntries(chained, settings.delta).epsilon).toBe(epsilonOfEntries(spends, settings.delta).epsilon);
      expect(epsilonIfRoundRuns(chained, settings).epsilon).toBe(epsilonIfRoundRuns(spends, settings).epsilon);
      expect(verifyLedger(chained, recompute)).toEqual({ ok: true, entries: 6, firstMismatch: null });
      expect(chained[1]!.epsilon).toBe(chained[0]!.epsilon);
    }
  });

  it('are covered by the hash: every answer field and the signature, whatever key order the database returns', () => {
    const [spend] = buildLedger(1);
    const entry = decryptionEntry(spend!, localSettings());
    // Key order differs (PostgreSQL jsonb reorders keys): the same hash.
    const reordered = structuredClone(entry);
    reordered.decryption!.answers = reordered.decryption!.answers.map(({ answer, signature }) => ({
      signature,
      answer: Object.fromEntries(Object.entries(answer).reverse()) as typeof answer,
    }));
    expect(hashLedgerEntry(reordered, entry.prevHash)).toBe(entry.hash);
    const variants: Array<(e: LedgerEntry) => void> = [
      (e) => { e.decryption!.answers[0]!.signature = Buffer.alloc(64, 9).toString('base64'); },
      (e) => { e.decryption!.answers[1]!.answer.count = 3; },
      (e) => { e.decryption!.answers[1]!.answer.custodianIndex = 2; },
      (e) => { e.decryption!.answers.pop(); },
      (e) => { e.decryption!.manifestDigests.pop(); },
      (e) => { e.decryption!.hashD = 'cc'.repeat(32); },
      (e) => { (e.decryption!.answers[0]!.answer as unknown as Record<string, unknown>).note = 'x'; },
    ];
    for (const change of variants) {
      const altered = structuredClone(entry);
      change(altered);
      expect(hashLedgerEntry(altered, entry.prevHash)).not.toBe(entry.hash);
    }
    // A spend entry's hash keeps its form (no decryption field appended).
    expect(hashLedgerEntry({ ...spend!, decryption: null }, spend!.prevHash)).toBe(spend!.hash);
  });
});
