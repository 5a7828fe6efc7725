import {
  DDG_RDP_ORDERS,
  computeDistributedDiscreteGaussianRdp,
  computeRdp,
  createRdpAccountant,
  type EpsilonResult,
  type PrivacyEvent,
} from '@veil/privacy';
import type { LedgerDdgParams, LedgerEntry } from './ledger.js';
import type { PrivacySettings } from './settings.js';

/** What an entry's privacy event is computed from. */
export type AccountedEntry = Pick<LedgerEntry, 'mechanism' | 'samplingRate' | 'noiseMultiplier' | 'clipNorm' | 'ddg'>;

export const MECHANISM_LOCAL = 'gaussian-local';
export const MECHANISM_DISTRIBUTED = 'ddg-distributed';
/**
 * A committee round's decryption record (issue 11): the custodians' signed answers, chained in
 * the ledger after the round's spend entry. It spends nothing (the round's cost is its spend
 * entry); its ε is the cumulative ε it follows.
 */
export const MECHANISM_DECRYPTION = 'committee-decryption';

/** Whether an entry is a spend (a round's privacy cost) rather than a decryption record. */
export const isSpendEntry = (entry: Pick<AccountedEntry, 'mechanism'>): boolean => entry.mechanism !== MECHANISM_DECRYPTION;

/** The mechanism name recorded in the ledger for a privacy mode. */
export const mechanismName = (mode: PrivacySettings['mode']): string => (mode === 'local' ? MECHANISM_LOCAL : MECHANISM_DISTRIBUTED);

/** Ledger parameters of a round with `settings`. */
export function ledgerParams(settings: PrivacySettings): AccountedEntry {
  const ddg = settings.ddg;
  return {
    mechanism: mechanismName(settings.mode),
    samplingRate: settings.samplingRate,
    noiseMultiplier: settings.noiseMultiplier,
    clipNorm: settings.clipNorm,
    ddg:
      ddg === null
        ? null
        : { noiseClients: ddg.noiseClients, scale: ddg.scale, localStddev: ddg.localStddev, dimension: ddg.dimension, roundingBeta: ddg.roundingBeta },
  };
}

// An RDP vector costs milliseconds (series up to order 1024); a task's rounds share a few parameter sets.
const rdpCache = new Map<string, Float64Array>();

function cachedRdp(key: unknown[], compute: () => Float64Array): Float64Array {
  const k = JSON.stringify(key);
  let rdp = rdpCache.get(k);
  if (rdp === undefined) {
    rdp = compute();
    rdpCache.set(k, rdp);
    if (rdpCache.size > 256) rdpCache.delete(rdpCache.keys().next().value!);
  }
  return rdp;
}

function ddgRdp(p: LedgerDdgParams, clipNorm: number, samplingRate: number): Float64Array {
  return cachedRdp(['ddg', p.noiseClients, p.scale, p.localStddev, p.dimension, p.roundingBeta, clipNorm, samplingRate], () =>
    computeDistributedDiscreteGaussianRdp({
      clipNorm,
      scale: p.scale,
      localStddev: p.localStddev,
      clients: p.noiseClients,
      dimension: p.dimension,
      beta: p.roundingBeta,
      samplingRate,
      orders: DDG_RDP_ORDERS,
    }),
  );
}

/**
 * The privacy cost of one round as an accountant event.
 *
 * - Local mode (`gaussian-local`): the Poisson-subsampled Gaussian mechanism
 *   with rate q and noise multiplier z (Mironov 2017; Mironov, Talwar & Zhang
 *   2019), user-level as in DP-FedAvg (McMahan et al. 2018): the released
 *   aggregate carries at least N(0,(zC)²) per coordinate with sensitivity C
 *   (n independent shares of std zC each; accounting with z alone is
 *   conservative).
 * - Distributed mode (`ddg-distributed`): the distributed discrete Gaussian's
 *   RDP (Kairouz, Liu & Steinke 2021, Theorem 1 and Proposition 14, with the
 *   conditional-rounding sensitivity of their Eq. 2 and the τ term of the sum
 *   of n discrete Gaussians), Poisson-subsampled with the bound of Zhu & Wang
 *   2019 (Theorem 5): `computeDistributedDiscreteGaussianRdp` of @veil/privacy.
 */
export function entryEvent(entry: AccountedEntry, samplingRate = entry.samplingRate): PrivacyEvent {
  if (entry.mechanism === MECHANISM_DISTRIBUTED) {
    if (entry.ddg === null) throw new Error(`a ${MECHANISM_DISTRIBUTED} ledger entry needs its mechanism parameters`);
    return { kind: 'rdp', rdp: ddgRdp(entry.ddg, entry.clipNorm, samplingRate) };
  }
  const z = entry.noiseMultiplier;
  return { kind: 'rdp', rdp: cachedRdp(['gaussian', samplingRate, z], () => computeRdp({ samplingRate, noiseMultiplier: z })) };
}

/**
 * An accountant holding `entries`. RDP composes additively (Mironov 2017,
 * Prop. 1), so entries with the same parameters are composed once with their
 * count: a task's ledger costs one RDP computation per parameter set, not per round.
 */
function accountantOf(entries: readonly AccountedEntry[], samplingRate?: number, distributed = entries.some((e) => e.mechanism === MECHANISM_DISTRIBUTED)) {
  const groups = new Map<string, { entry: AccountedEntry; count: number }>();
  for (const e of entries) {
    if (!isSpendEntry(e)) continue;
    const key = JSON.stringify([e.mechanism, e.samplingRate, e.noiseMultiplier, e.clipNorm, e.ddg]);
    const group = groups.get(key);
    if (group === undefined) groups.set(key, { entry: e, count: 1 });
    else group.count++;
  }
  // A task's entries are all of one mode; distributed mode's events are computed on DDG_RDP_ORDERS.
  const accountant = createRdpAccountant(distributed ? { orders: DDG_RDP_ORDERS } : {});
  for (const { entry, count } of groups.values()) accountant.compose({ ...entryEvent(entry, samplingRate ?? entry.samplingRate), count });
  return accountant;
}

/** Cumulative ε at `delta` of ledger entries, recomputed from their recorded parameters. */
export function epsilonOfEntries(entries: readonly AccountedEntry[], delta: number): EpsilonResult {
  return accountantOf(entries).getEpsilon(delta);
}

/** ε after one more round with `settings`, given the rounds already spent. */
export function epsilonIfRoundRuns(spent: readonly AccountedEntry[], settings: PrivacySettings): EpsilonResult {
  return accountantOf(spent, undefined, settings.mode === 'distributed').epsilonIfComposed(entryEvent(ledgerParams(settings)), settings.delta);
}

/**
 * Per-client ε: a device knows when it took part, so each of its
 * participations is the unamplified mechanism (q = 1) — the Gaussian with
 * sensitivity C and noise zC in local mode, the distributed discrete Gaussian
 * in distributed mode — composed over the rounds it took part in.
 */
export function clientEpsilon(participations: readonly AccountedEntry[], delta: number): EpsilonResult {
  return accountantOf(participations, 1).getEpsilon(delta);
}

/**
 * ε against the coordinator of a committee task with distributed DP (issue 11): it chooses D,
 * so Poisson subsampling does not amplify against it; every round is the unamplified distributed
 * discrete Gaussian (q = 1) over the n = minDevices - colludingDevices honest shares the
 * custodians' |D| >= minDevices guarantees, composed over the task's rounds.
 */
export function coordinatorEpsilon(entries: readonly AccountedEntry[], delta: number): EpsilonResult {
  return clientEpsilon(entries, delta);
}
