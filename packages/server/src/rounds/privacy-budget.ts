import type { RoundResult } from '../aggregation/round-aggregator.js';
import { checkRoundBudget, decryptionLedgerEntry, roundLedgerEntry } from '../privacy/budget.js';
import type { LedgerEntry } from '../privacy/ledger.js';
import type { Clock } from './clock.js';
import type { ClientSelection, Task } from './model.js';
import type { FederationStore } from './ports.js';

/**
 * The most devices one round may select: the count, or for DP tasks the cap
 * on a Poisson sample (`clientsPerRound`); null for fraction selection, which
 * has no bound fixed at task creation. Encrypted sums and distributed-DP
 * noise are sized for this many updates.
 */
export function maxRoundClients(selection: ClientSelection): number | null {
  if (selection.kind === 'count') return selection.count;
  if (selection.kind === 'poisson') return selection.maxCount;
  return null;
}

/**
 * The DP selection bounds: a Poisson sample (Mironov, Talwar & Zhang 2019:
 * every device independently with rate q, the sampling the accountant
 * assumes) is used as drawn, and one outside `[minClients, maxCount]` fails
 * the round before anything is released or spent; re-drawing it would break
 * the accountant's assumption. Returns the reason, or null when the sample
 * may train.
 */
export function poissonSampleRefusal(
  sampleSize: number,
  input: { available: number; minClients: number; selection: Extract<ClientSelection, { kind: 'poisson' }> },
): string | null {
  if (sampleSize >= input.minClients && sampleSize <= input.selection.maxCount) return null;
  return `Poisson sample of ${sampleSize} clients (q=${input.selection.samplingRate}, ${input.available} available) is outside [${input.minClients}, ${input.selection.maxCount}]`;
}

/** What a round's selection costs: nothing (no DP), its ledger entry, or a refusal (the budget is spent). */
export type RoundSpend = { kind: 'free' } | { kind: 'spend'; entry: LedgerEntry } | { kind: 'exhausted'; reason: string };

export interface PrivacyBudgetOptions {
  /** The ledger (read only: the entries this part makes are written by the round's own store commit). */
  store: Pick<FederationStore, 'listLedger' | 'lastLedgerEntry'>;
  /** Stamps the entries (`createdAt`). */
  clock: Clock;
}

/**
 * A DP task's privacy budget as the round loop meets it (the rule itself is
 * `checkRoundBudget` in privacy/budget.ts: ε after the round, by the RDP
 * accountant over the ledger, at most the cap). Tasks without DP pass
 * through: nothing is refused and no entry is made.
 */
export interface PrivacyBudget {
  /**
   * Before round `roundNumber` opens: null when it may, or why the budget
   * refuses it (the task then ends BUDGET_EXHAUSTED, no round opened). With
   * `rounds` (default 1): whether that many rounds from `roundNumber` on
   * all fit (e.g. the two calibration rounds an admin asks for).
   */
  refusal(task: Pick<Task, 'id' | 'settings'>, roundNumber: number, rounds?: number): Promise<string | null>;
  /**
   * When round `roundNumber` has chosen `clientIds`: its ledger entry (chained
   * after the last one), to commit with the round's move to COLLECTING. The
   * budget is checked again here, against the ledger the entry extends, so a
   * round never spends past the cap whatever happened since it opened.
   */
  spend(task: Pick<Task, 'id' | 'settings'>, roundNumber: number, clientIds: readonly string[]): Promise<RoundSpend>;
  /**
   * A DP committee round's decryption record (issue 11; it spends nothing),
   * chained after the round's spend entry; null when there is nothing to
   * record (no DP, or no decryption).
   */
  decryption(task: Pick<Task, 'id' | 'settings'>, roundNumber: number, decryption: RoundResult['decryption']): Promise<LedgerEntry | null>;
}

export function createPrivacyBudget(options: PrivacyBudgetOptions): PrivacyBudget {
  const { store, clock } = options;
  return {
    async refusal(task, roundNumber, rounds = 1) {
      const privacy = task.settings.privacy;
      if (privacy === null) return null;
      const decision = checkRoundBudget(await store.listLedger(task.id), privacy, roundNumber, rounds);
      return decision.allowed ? null : decision.reason;
    },

    async spend(task, roundNumber, clientIds) {
      const privacy = task.settings.privacy;
      if (privacy === null) return { kind: 'free' };
      const spent = await store.listLedger(task.id);
      const decision = checkRoundBudget(spent, privacy, roundNumber);
      if (!decision.allowed) return { kind: 'exhausted', reason: decision.reason };
      return { kind: 'spend', entry: roundLedgerEntry({ taskId: task.id, roundNumber, privacy, spent, decision, clientIds, at: new Date(clock.now()) }) };
    },

    async decryption(task, roundNumber, decryption) {
      const privacy = task.settings.privacy;
      if (privacy === null || decryption === undefined) return null;
      const last = await store.lastLedgerEntry(task.id);
      return decryptionLedgerEntry({ taskId: task.id, roundNumber, privacy, last, decryption: decryption.record, clientIds: decryption.clientIds, at: new Date(clock.now()) });
    },
  };
}
