/**
 * Distributed DP in committee mode (issue 11, item 4): the settings a signed descriptor fixes, and
 * the two ε the ledger records — for observers of the released models (Poisson-subsampled, q) and
 * against the coordinator (it chooses D: no amplification, q = 1) — checked against values
 * computed independently with the authors' accounting code: google-research/federated
 * distributed_dp/accounting_utils.py @5e27a86 (`ddgauss_epsilon`: rounded norm bounds, τ,
 * Proposition 14, Zhu & Wang 2019 Theorem 5) with tensorflow/privacy rdp_accountant.py @385fefc
 * (`get_privacy_spent`), run in Python: `python3 scripts/ddg-committee-reference.py REFDIR` prints
 * them (docs/ddg-reference-check.md says where the files come from).
 * Observers: `ddgauss_epsilon` as fetched (its integer orders 2..128, 256; at these points Veil's
 * optimal order is one of them). Coordinator (q = 1): the same functions evaluated on Veil's
 * order list (ddgauss_epsilon casts orders to int, and at q = 1 Veil's optimum is fractional).
 */
import { randomBytes } from 'node:crypto';
import { buildTaskDescriptor, type TaskDescriptor } from '@veil/crypto';
import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import { coordinatorEpsilon, epsilonOfEntries } from './accounting.js';
import { checkRoundBudget, decryptionLedgerEntry, roundLedgerEntry } from './budget.js';
import { hashLedgerEntry, verifyLedger, type LedgerEntry } from './ledger.js';
import { completeCommitteePrivacySettings, resolvePrivacySettings } from './settings.js';

function descriptor(overrides: { dp?: TaskDescriptor['dp']; clipMaxAbs?: number } = {}): TaskDescriptor {
  return buildTaskDescriptor({
    taskId: '00000000-0000-4000-8000-0000000000dd',
    committee: [1, 2, 3].map((i) => ({ address: `127.0.0.1:${9000 + i}`, sealingPublicKey: randomBytes(32), signingPublicKey: randomBytes(32) })),
    threshold: 2,
    minDevices: 10,
    maxDevices: 50,
    maxRounds: 10,
    encoding: { clipMaxAbs: overrides.clipMaxAbs ?? 16 },
    dp: overrides.dp === undefined ? { mechanism: 'distributed-discrete-gaussian', clipNorm: 1, noiseMultiplier: 1.2, colludingDevices: 2, delta: 1e-5 } : overrides.dp,
    authorityPublicKey: randomBytes(32),
  });
}

const privacyInput = { mode: 'distributed' as const, epsilonCap: 100, delta: 1e-5, noiseMultiplier: 1.2, clipNorm: 1, samplingRate: 0.2 };

// Reference values (see the header): n = 10 - 2 = 8 honest shares, σ = roundUp12(1.2/√8), 1/γ = 2^13, d = 1024, δ = 1e-5.
const OBSERVERS = [2.2659916008874608, 2.9022742015524075, 3.4000639058596382]; // q = 0.2, T = 1, 2, 3
const COORDINATOR = [3.839909654154213, 5.717062458593358, 7.250476959144933]; // q = 1, T = 1, 2, 3

describe('distributed DP in committee mode', () => {
  it('takes its mechanism from the descriptor: n = minDevices - colludingDevices, σ = z·C/√n, 1/γ = 1/step, d padded', () => {
    const privacy = resolvePrivacySettings({ ...privacyInput, minNoiseClients: 10, scale: 1024 }, 10);
    completeCommitteePrivacySettings(privacy, descriptor(), 1000);
    expect(privacy.ddg).toEqual({ noiseClients: 8, scale: 8192, localStddev: 0.424264068712, dimension: 1024, modulus: 0, roundingBeta: expect.closeTo(Math.exp(-0.5), 11), committee: true });
    expect(privacy.ddg!.localStddev).toBeGreaterThanOrEqual((1.2 * 1) / Math.sqrt(8)); // never less noise than the target
  });

  it('records ε for observers (amplified) and ε against the coordinator (unamplified), each equal to the reference', () => {
    const privacy = resolvePrivacySettings(privacyInput, 10);
    completeCommitteePrivacySettings(privacy, descriptor(), 1000);
    const ledger: LedgerEntry[] = [];
    for (let round = 1; round <= 3; round++) {
      const decision = checkRoundBudget(ledger, privacy, round);
      if (!decision.allowed) throw new Error(decision.reason);
      const ids = Array.from({ length: 10 }, (_, i) => `device-${round}-${i}`);
      const spend = roundLedgerEntry({ taskId: 't', roundNumber: round, privacy, spent: ledger, decision, clientIds: ids, at: new Date(Date.UTC(2026, 11, 6, 12, round)) });
      ledger.push(spend);
      expect(spend.mechanism).toBe('ddg-distributed');
      expect(spend.ddg).toMatchObject({ noiseClients: 8, scale: 8192, localStddev: 0.424264068712, dimension: 1024 });
      expect(spend.epsilon).toBeCloseTo(OBSERVERS[round - 1]!, 10);
      expect(spend.epsilonCoordinator).toBeCloseTo(COORDINATOR[round - 1]!, 10);
      // A decryption record in between changes neither figure.
      ledger.push(
        decryptionLedgerEntry({
          taskId: 't', roundNumber: round, privacy, last: spend, clientIds: ids, at: new Date(Date.UTC(2026, 11, 6, 12, round, 30)),
          decryption: { descriptorHash: '00'.repeat(32), hashD: '11'.repeat(32), manifestDigests: [], answers: [] },
        }),
      );
      expect(ledger.at(-1)!.epsilonCoordinator).toBe(spend.epsilonCoordinator);
    }
    const recompute = (upTo: readonly LedgerEntry[]) => epsilonOfEntries(upTo, 1e-5).epsilon;
    const againstCoordinator = (upTo: readonly LedgerEntry[]) => coordinatorEpsilon(upTo, 1e-5).epsilon;
    expect(verifyLedger(ledger, recompute, undefined, undefined, againstCoordinator)).toEqual({ ok: true, entries: 6, firstMismatch: null });
    // A rewritten ε against the coordinator (chain re-hashed) is named.
    const forged = ledger.map((e) => structuredClone(e));
    forged[2]!.epsilonCoordinator = 2.9;
    for (let i = 2; i < forged.length; i++) {
      forged[i]!.prevHash = forged[i - 1]!.hash;
      forged[i]!.hash = hashLedgerEntry(forged[i]!, forged[i]!.prevHash);
    }
    expect(verifyLedger(forged, recompute, undefined, undefined, againstCoordinator).firstMismatch).toEqual({
      sequence: 3,
      reason: expect.stringMatching(/^recorded epsilon against the coordinator 2.9 differs from 5.717/),
    });
    // The hash covers it.
    const altered = structuredClone(ledger[0]!);
    altered.epsilonCoordinator = 1;
    expect(hashLedgerEntry(altered, altered.prevHash)).not.toBe(ledger[0]!.hash);
  });

  it('refuses privacy settings that disagree with the descriptor, and an encoding a noisy coordinate could overflow', () => {
    const refused = (f: () => void): string => {
      try {
        f();
      } catch (error) {
        expect(error).toBeInstanceOf(VeilError);
        expect((error as VeilError).code).toBe('invalid_argument');
        return (error as Error).message;
      }
      throw new Error('not refused');
    };
    const withZ = resolvePrivacySettings({ ...privacyInput, noiseMultiplier: 1.1 }, 10);
    expect(refused(() => completeCommitteePrivacySettings(withZ, descriptor(), 1000))).toMatch(/differs from the descriptor's dp/);
    const local = resolvePrivacySettings({ ...privacyInput, mode: 'local' }, 10);
    expect(refused(() => completeCommitteePrivacySettings(local, descriptor(), 1000))).toMatch(/privacy.mode "distributed"/);
    expect(refused(() => completeCommitteePrivacySettings(null, descriptor(), 1000))).toMatch(/privacy.mode "distributed"/);
    const distributed = resolvePrivacySettings(privacyInput, 10);
    expect(refused(() => completeCommitteePrivacySettings(distributed, descriptor({ dp: null }), 1000))).toMatch(/needs a descriptor with dp/);
    // σ_z = 0.42·8192 ≈ 3,476 levels: a clip range of 1 (8,192 levels) is too tight at probability 1e-9/50.
    expect(refused(() => completeCommitteePrivacySettings(resolvePrivacySettings(privacyInput, 10), descriptor({ clipMaxAbs: 1 }), 1000))).toMatch(/raise encoding.clipMaxAbs/);
    // Local DP with a descriptor without DP stays as it was.
    const plainLocal = resolvePrivacySettings({ ...privacyInput, mode: 'local' }, 10);
    completeCommitteePrivacySettings(plainLocal, descriptor({ dp: null }), 1000);
    expect(plainLocal.ddg).toBeNull();
  });
});
