import { createRdpAccountant, type EpsilonResult, type PrivacyEvent } from '@veil/privacy';
import type { LedgerEntry } from './ledger.js';
import type { PrivacySettings } from './settings.js';

/**
 * The privacy cost of one round as an accountant event. Both modes compose the
 * Poisson-subsampled Gaussian mechanism with rate q and noise multiplier z
 * (Mironov 2017; Mironov, Talwar & Zhang 2019), user-level as in DP-FedAvg
 * (McMahan et al. 2018): the released aggregate carries at least N(0,(zC)²)
 * per coordinate with sensitivity C. (Local mode's aggregate carries more: n
 * independent shares of std zC each; accounting with z alone is conservative.)
 */
export function roundEvent(settings: Pick<PrivacySettings, 'samplingRate' | 'noiseMultiplier'>): PrivacyEvent {
  return { samplingRate: settings.samplingRate, noiseMultiplier: settings.noiseMultiplier };
}

/** The mechanism name recorded in the ledger for a privacy mode. */
export const mechanismName = (mode: PrivacySettings['mode']): string => (mode === 'local' ? 'gaussian-local' : 'gaussian-distributed');

/** Cumulative ε at `delta` of ledger entries, recomputed from their recorded parameters. */
export function epsilonOfEntries(entries: readonly Pick<LedgerEntry, 'samplingRate' | 'noiseMultiplier'>[], delta: number): EpsilonResult {
  const accountant = createRdpAccountant();
  for (const e of entries) accountant.compose({ samplingRate: e.samplingRate, noiseMultiplier: e.noiseMultiplier });
  return accountant.getEpsilon(delta);
}

/** ε after one more round with `settings`, given the rounds already spent. */
export function epsilonIfRoundRuns(spent: readonly Pick<LedgerEntry, 'samplingRate' | 'noiseMultiplier'>[], settings: PrivacySettings): EpsilonResult {
  const accountant = createRdpAccountant();
  for (const e of spent) accountant.compose({ samplingRate: e.samplingRate, noiseMultiplier: e.noiseMultiplier });
  return accountant.epsilonIfComposed(roundEvent(settings), settings.delta);
}

/**
 * Per-client ε of local mode: a device knows when it took part, so each of its
 * participations is the Gaussian mechanism with sensitivity C and noise zC
 * (no amplification), composed over its participations.
 */
export function clientEpsilon(participations: readonly { noiseMultiplier: number }[], delta: number): EpsilonResult {
  const accountant = createRdpAccountant();
  for (const p of participations) accountant.compose({ samplingRate: 1, noiseMultiplier: p.noiseMultiplier });
  return accountant.getEpsilon(delta);
}
