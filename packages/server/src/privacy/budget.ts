import { MECHANISM_DECRYPTION, coordinatorEpsilon, epsilonIfRoundRuns, ledgerParams } from './accounting.js';
import { GENESIS_HASH, hashLedgerEntry, ledgerNumber, type LedgerDecryption, type LedgerEntry, type LedgerFields } from './ledger.js';
import type { PrivacySettings } from './settings.js';

/** Whether one more round fits a task's privacy budget, and ε after it. */
export type BudgetDecision =
  | { allowed: true; epsilon: number; order: number }
  | { allowed: false; epsilon: number; order: number; reason: string };

/**
 * The budget rule, in one place: a round may run only if the task's ε after
 * it (the RDP accountant over the ledger `spent`, plus this round's spend) is
 * at most the cap. With `rounds` > 1: whether that many rounds from
 * `roundNumber` on all fit (RDP composes additively, Mironov 2017 Prop. 1),
 * and ε after the last of them.
 */
export function checkRoundBudget(spent: readonly LedgerEntry[], privacy: PrivacySettings, roundNumber: number, rounds = 1): BudgetDecision {
  if (!Number.isInteger(rounds) || rounds < 1) throw new RangeError('rounds must be a positive integer');
  const before = rounds === 1 ? spent : [...spent, ...Array.from({ length: rounds - 1 }, () => ledgerParams(privacy))];
  const after = epsilonIfRoundRuns(before, privacy);
  if (after.epsilon <= privacy.epsilonCap) return { allowed: true, epsilon: after.epsilon, order: after.order };
  const which = rounds === 1 ? `round ${roundNumber}` : `rounds ${roundNumber}-${roundNumber + rounds - 1}`;
  return {
    allowed: false,
    epsilon: after.epsilon,
    order: after.order,
    reason: `${which} would spend the privacy budget: epsilon ${after.epsilon.toFixed(4)} > cap ${privacy.epsilonCap} at delta ${privacy.delta}`,
  };
}

/**
 * The ledger entry of a round about to start: its spend, the cumulative ε
 * after it (`decision`), chained to the last entry of `spent` by its hash.
 */
export function roundLedgerEntry(input: {
  taskId: string;
  roundNumber: number;
  privacy: PrivacySettings;
  spent: readonly LedgerEntry[];
  decision: Extract<BudgetDecision, { allowed: true }>;
  clientIds: readonly string[];
  at: Date;
}): LedgerEntry {
  const last = input.spent.at(-1);
  const fields: LedgerFields = {
    taskId: input.taskId,
    sequence: (last?.sequence ?? 0) + 1,
    roundNumber: input.roundNumber,
    ...ledgerParams(input.privacy),
    participants: input.clientIds.length,
    participantIds: [...input.clientIds].sort(),
    epsilon: ledgerNumber(input.decision.epsilon),
    delta: input.privacy.delta,
    order: ledgerNumber(input.decision.order),
    createdAt: input.at.toISOString(),
  };
  // Committee DDG: the coordinator chooses D, so against it every round counts unamplified (q = 1).
  if (input.privacy.ddg?.committee === true) {
    fields.epsilonCoordinator = ledgerNumber(coordinatorEpsilon([...input.spent, fields], input.privacy.delta).epsilon);
  }
  const prevHash = last?.hash ?? GENESIS_HASH;
  return { ...fields, prevHash, hash: hashLedgerEntry(fields, prevHash) };
}

/**
 * The ledger entry recording a committee round's decryption (issue 11): the custodians' signed
 * answers over D (`decryption`), D's device ids, chained after `last` (the round's spend entry).
 * It spends nothing: its ε, δ and order repeat the cumulative figures of `last`.
 */
export function decryptionLedgerEntry(input: {
  taskId: string;
  roundNumber: number;
  privacy: PrivacySettings;
  last: LedgerEntry | null;
  decryption: LedgerDecryption;
  clientIds: readonly string[];
  at: Date;
}): LedgerEntry {
  const last = input.last;
  const fields: LedgerFields = {
    taskId: input.taskId,
    sequence: (last?.sequence ?? 0) + 1,
    roundNumber: input.roundNumber,
    mechanism: MECHANISM_DECRYPTION,
    samplingRate: 0,
    noiseMultiplier: 0,
    clipNorm: 0,
    ddg: null,
    participants: input.clientIds.length,
    participantIds: [...input.clientIds].sort(),
    epsilon: last?.epsilon ?? 0,
    delta: input.privacy.delta,
    order: last?.order ?? 0,
    ...(last?.epsilonCoordinator != null && { epsilonCoordinator: last.epsilonCoordinator }),
    createdAt: input.at.toISOString(),
    decryption: {
      descriptorHash: input.decryption.descriptorHash,
      hashD: input.decryption.hashD,
      manifestDigests: [...input.decryption.manifestDigests].sort(),
      answers: input.decryption.answers.map((a) => ({ answer: { ...a.answer }, signature: a.signature })),
    },
  };
  const prevHash = last?.hash ?? GENESIS_HASH;
  return { ...fields, prevHash, hash: hashLedgerEntry(fields, prevHash) };
}
