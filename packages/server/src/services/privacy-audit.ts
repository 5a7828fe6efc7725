/**
 * The privacy audit of a task, computed from its settings and its ledger:
 * the budget summary (with the projected round at which the budget runs out),
 * the verification of the hash chain and of every recorded ε, and a
 * checkpoint (the head of the chain) to keep outside Veil. Pure functions over
 * domain data, plus a small service that loads that data from the store; no
 * transport here.
 */
import { VeilError } from '../errors.js';
import type { TaskDescriptor } from '@veil/crypto';
import { clientEpsilon, coordinatorEpsilon, epsilonOfEntries, isSpendEntry, ledgerParams, mechanismName } from '../privacy/accounting.js';
import { committeeEntryChecker, decryptionApprovals } from '../privacy/committee-ledger.js';
import { GENESIS_HASH, verifyLedger, type LedgerEntry } from '../privacy/ledger.js';
import type { PrivacySettings } from '../privacy/settings.js';
import type { Task } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';

/** A task that runs with differential privacy. */
export type PrivateTask = Task & { settings: { privacy: PrivacySettings } };

/** ε caps above this are accepted but flagged: beyond it the (ε, δ) guarantee says little (a common reading of the DP literature; Apple and Google deployments stay within single digits per period). */
export const EPSILON_CAP_WARNING_THRESHOLD = 10;

/** Warnings a task's settings deserve (shown by the API and the dashboard; the task is not refused). */
export function taskWarnings(task: Pick<Task, 'settings'>): string[] {
  const warnings: string[] = [];
  const p = task.settings.privacy;
  if (p !== null && p.epsilonCap > EPSILON_CAP_WARNING_THRESHOLD) {
    warnings.push(
      `epsilonCap ${p.epsilonCap} is above ${EPSILON_CAP_WARNING_THRESHOLD}: at that level the (epsilon, delta) guarantee bounds little; choose a smaller cap unless you have a reason`,
    );
  }
  return warnings;
}

/** When the budget runs out if every further round costs what the task's settings say. */
export interface BudgetProjection {
  /** ε a round adds now (the difference the next round would make to the cumulative ε). */
  nextRoundEpsilon: number | null;
  /** The last round number whose ε stays within the cap (null: no round fits at all). */
  lastAffordableRound: number | null;
  /** The first round the budget would refuse, if it comes before the task's last round; null if the task ends first. */
  exhaustedAtRound: number | null;
}

/**
 * Projects the budget with the accountant itself: the cumulative ε after k
 * more rounds with the task's current parameters (RDP composes additively,
 * Mironov 2017 Prop. 1, so this is exact for the accountant) is searched for
 * the largest k within the cap. With Poisson sampling the cost of a round does
 * not depend on who takes part, so the projection holds while the settings do.
 */
export function projectBudget(settings: PrivacySettings, totalRounds: number, entries: readonly LedgerEntry[]): BudgetProjection {
  const done = entries.at(-1)?.roundNumber ?? 0;
  const next = ledgerParams(settings);
  const after = (k: number): number => epsilonOfEntries([...entries, ...Array.from({ length: k }, () => next)], settings.delta).epsilon;
  // Exponential then binary search on k; ε grows with k. The array trick above costs O(k), and
  // the accountant groups identical entries, so the cost is dominated by one RDP vector.
  const fits = (k: number): boolean => after(k) <= settings.epsilonCap;
  const spent = entries.at(-1)?.epsilon ?? 0;
  const nextRoundEpsilon = after(1) - spent;
  const remainingRounds = Math.max(0, totalRounds - done);
  if (!fits(1)) return { nextRoundEpsilon, lastAffordableRound: done === 0 ? null : done, exhaustedAtRound: done + 1 <= totalRounds ? done + 1 : null };
  let lo = 1;
  let hi = 2;
  const limit = Math.max(remainingRounds + 1, 2);
  while (hi < limit && fits(hi)) {
    lo = hi;
    hi = Math.min(hi * 2, limit);
  }
  if (hi >= limit && fits(hi)) lo = hi;
  else {
    while (hi - lo > 1) {
      const mid = Math.floor((lo + hi) / 2);
      if (fits(mid)) lo = mid;
      else hi = mid;
    }
  }
  const lastAffordableRound = done + lo;
  return { nextRoundEpsilon, lastAffordableRound, exhaustedAtRound: lastAffordableRound < totalRounds ? lastAffordableRound + 1 : null };
}

export interface DeviceName {
  id: string;
  name: string | null;
}

/** The budget of a task: cumulative figures, the per-round series, per-device spend and the projection. */
export function summarizePrivacy(task: PrivateTask, entries: readonly LedgerEntry[], devices: readonly DeviceName[]) {
  const p = task.settings.privacy;
  const spent = entries.at(-1)?.epsilon ?? 0;
  const names = new Map(devices.map((d) => [d.id, d.name]));
  const perClient = new Map<string, LedgerEntry[]>();
  // Committee tasks: who approved each round's decryption, for how many devices (the ledger's decryption records).
  const approvals = new Map<number, { custodians: number[]; deviceCount: number }>();
  for (const e of entries) {
    const approval = decryptionApprovals(e);
    if (approval !== null) approvals.set(e.roundNumber, approval);
  }
  const spends = entries.filter(isSpendEntry);
  for (const e of spends) {
    for (const id of e.participantIds) {
      const list = perClient.get(id);
      if (list === undefined) perClient.set(id, [e]);
      else list.push(e);
    }
  }
  return {
    taskId: task.id,
    status: task.status,
    mode: p.mode,
    mechanism: mechanismName(p.mode),
    accountant: {
      name: 'rdp',
      description: p.ddg?.committee === true
        ? 'Committee mode: Renyi DP of the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021, Theorem 1 and Proposition 14, with conditional-rounding sensitivity) over the n = minDevices - colludingDevices honest noise shares the custodians guarantee, converted to (epsilon, delta) as in dp_accounting. epsilonSpent: Poisson-subsampled (Zhu & Wang 2019, Theorem 5), the guarantee for observers of the released models; epsilonSpentCoordinator: without subsampling amplification (q = 1), since the coordinator chooses D'
        : p.ddg
        ? 'Renyi DP of the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021, Theorem 1 and Proposition 14, with conditional-rounding sensitivity), Poisson-subsampled (Zhu & Wang 2019, Theorem 5), composed over rounds, converted to (epsilon, delta) as in dp_accounting (Balle et al. 2020; Canonne, Kamath & Steinke 2020), with dp_accounting default orders'
        : 'Renyi DP of the Poisson-subsampled Gaussian (Mironov 2017; Mironov, Talwar & Zhang 2019), composed over rounds, converted to (epsilon, delta) as in dp_accounting (Balle et al. 2020; Canonne, Kamath & Steinke 2020), with dp_accounting default orders',
      samplingRate: p.samplingRate,
      noiseMultiplier: p.noiseMultiplier,
      clipNorm: p.clipNorm,
      ...(p.ddg && { distributedDiscreteGaussian: p.ddg }),
    },
    epsilonCap: p.epsilonCap,
    delta: p.delta,
    /**
     * Committee tasks with distributed DP: the cumulative ε against the coordinator, which chooses
     * D (no subsampling amplification); `epsilonSpent` is the ε for observers of the released
     * models. Null for other tasks.
     */
    epsilonSpentCoordinator: p.ddg?.committee === true ? (entries.at(-1)?.epsilonCoordinator ?? 0) : null,
    /** Deprecated alias of epsilonSpent, kept for existing clients. */
    spent,
    epsilonSpent: spent,
    remaining: Math.max(0, p.epsilonCap - spent),
    projection: projectBudget(p, task.settings.rounds, entries),
    warnings: taskWarnings(task),
    rounds: spends.map((e) => ({
      roundNumber: e.roundNumber,
      /** Kept for existing clients; the same value as epsilonCumulative. */
      epsilon: e.epsilon,
      epsilonCumulative: e.epsilon,
      epsilonCoordinator: e.epsilonCoordinator ?? null,
      order: e.order,
      participants: e.participants,
      at: e.createdAt,
      /** Committee tasks: the custodians whose signed answers let the coordinator decrypt this round's sum, and |D|; null otherwise (or not yet decrypted). */
      decryption: approvals.get(e.roundNumber) ?? null,
    })),
    clients: [...perClient.entries()].map(([clientId, rounds]) => ({
      clientId,
      name: names.get(clientId) ?? null,
      participations: rounds.length,
      // A device knows when it took part: its own guarantee composes the unamplified mechanism (q = 1).
      epsilon: clientEpsilon(rounds, p.delta).epsilon,
    })),
  };
}

export type PrivacySummary = ReturnType<typeof summarizePrivacy>;

/** Verifies the chain and every ε, and reports the head hash the check ended on. */
export function verifyPrivacyLedger(task: PrivateTask, entries: readonly LedgerEntry[]) {
  const overCap = entries.find((e) => e.epsilon > task.settings.privacy.epsilonCap);
  const committee = task.settings.committee;
  const descriptor = committee == null ? null : (JSON.parse(Buffer.from(committee.descriptor, 'base64').toString('utf8')) as TaskDescriptor);
  const result = verifyLedger(
    entries,
    (upTo) => epsilonOfEntries(upTo, upTo.at(-1)!.delta).epsilon,
    undefined,
    committeeEntryChecker(descriptor),
    (upTo) => coordinatorEpsilon(upTo, upTo.at(-1)!.delta).epsilon,
  );
  return { ...result, withinCap: overCap === undefined, headHash: entries.at(-1)?.hash ?? GENESIS_HASH };
}

export type PrivacyVerification = ReturnType<typeof verifyPrivacyLedger>;

/**
 * The head of the ledger, to keep outside Veil (a ticket, a signed e-mail, a
 * transparency log): anyone holding it can later check, with /verify and the
 * ledger, that the entries up to `sequence` were not rewritten. Unsigned: the
 * coordinator holds no signing key, and a signature by the party being
 * audited would add little; the value of a checkpoint is where it is kept.
 */
export function privacyCheckpoint(task: PrivateTask, entries: readonly LedgerEntry[], now: Date) {
  const head = entries.at(-1);
  return {
    format: 'veil-ledger-checkpoint-v1',
    taskId: task.id,
    taskName: task.name,
    sequence: head?.sequence ?? 0,
    roundNumber: head?.roundNumber ?? 0,
    headHash: head?.hash ?? GENESIS_HASH,
    epsilonCumulative: head?.epsilon ?? 0,
    delta: task.settings.privacy.delta,
    epsilonCap: task.settings.privacy.epsilonCap,
    hashAlgorithm: 'SHA-256 over JSON.stringify([taskId, sequence, roundNumber, mechanism, samplingRate, noiseMultiplier, clipNorm, participants, participantIds, epsilon, delta, order, createdAt, (ddg parameters), (["coordinator", epsilonCoordinator]), (committee decryption: ["committee", descriptorHash, hashD, manifestDigests, answers as [descriptorHash, round, hashD, count, custodianIndex, shareSumSha256, signature]])]) + "\\n" + prevHash',
    createdAt: now.toISOString(),
    signed: false,
  };
}

export interface PrivacyAuditServiceOptions {
  store: FederationStore;
  /** Default `() => new Date()`. */
  now?: () => Date;
}

/** Loads a task's privacy data from the store and runs the functions above on it. */
export function createPrivacyAuditService(options: PrivacyAuditServiceOptions) {
  const { store } = options;
  const now = options.now ?? (() => new Date());
  const privateTask = async (id: string): Promise<PrivateTask> => {
    const task = await store.getTask(id);
    if (task === null) throw new VeilError('not_found', `task ${id} does not exist`);
    if (task.settings.privacy === null) throw new VeilError('failed_precondition', `task ${id} runs without differential privacy`);
    return task as PrivateTask;
  };
  return {
    async summary(taskId: string): Promise<PrivacySummary> {
      const task = await privateTask(taskId);
      const [entries, devices] = await Promise.all([store.listLedger(task.id), store.listDevices(task.id)]);
      return summarizePrivacy(task, entries, devices);
    },
    async ledger(taskId: string, page: { offset: number; limit: number }) {
      const task = await privateTask(taskId);
      const total = (await store.lastLedgerEntry(task.id))?.sequence ?? 0;
      return { total, entries: await store.listLedger(task.id, page) };
    },
    async verify(taskId: string): Promise<PrivacyVerification> {
      const task = await privateTask(taskId);
      return verifyPrivacyLedger(task, await store.listLedger(task.id));
    },
    async checkpoint(taskId: string) {
      const task = await privateTask(taskId);
      return privacyCheckpoint(task, await store.listLedger(task.id), now());
    },
  };
}

export type PrivacyAuditService = ReturnType<typeof createPrivacyAuditService>;
