import { PrivacyError, requireArgument } from '../errors.js';
import { rdpToEpsilon, validateDelta, type EpsilonResult } from './conversion.js';
import { resolveOrders } from './orders.js';

/** Options of {@link createLocalPrivacyTracker}. */
export interface LocalPrivacyTrackerOptions {
  /** The client's ε cap (> 0) at `delta`. */
  epsilonCap: number;
  /** δ at which the cap is enforced, in (0, 1). */
  delta: number;
  /** RDP orders. Default `DEFAULT_RDP_ORDERS`. */
  orders?: readonly number[];
  /**
   * Noise multipliers of participations already made (e.g. restored from
   * the device's storage), replayed at construction. Default none.
   */
  participations?: readonly number[];
}

/** Client-side ledger for local-mode DP. */
export interface LocalPrivacyTracker {
  /** Number of recorded participations. */
  readonly participations: number;
  /** The cap this tracker enforces. */
  readonly epsilonCap: number;
  /** ε spent so far (at the tracker's δ). */
  spent(): EpsilonResult;
  /** ε that one more participation with `noiseMultiplier` would bring the total to. */
  epsilonIfParticipated(noiseMultiplier: number): EpsilonResult;
  /** Whether one more participation with `noiseMultiplier` stays within the cap. */
  canParticipate(noiseMultiplier: number): boolean;
  /**
   * Records a participation. Throws `PrivacyError('budget_exhausted')` —
   * and records nothing — if it would push ε above the cap. Call it
   * *before* releasing the noisy update.
   */
  recordParticipation(noiseMultiplier: number): EpsilonResult;
  /** Noise multipliers of all recorded participations (for persistence). */
  history(): number[];
}

/**
 * Per-client accounting for "local" mode, where each client adds
 * N(0, (z·C)^2) to its own clipped update (L2 norm <= C) before sending it.
 *
 * Each participation is then the Gaussian mechanism with L2 sensitivity C
 * and noise stddev z·C, whose RDP is α / (2 z^2) (Mironov 2017, Prop. 7).
 * No amplification by sampling is claimed: the client knows when it took
 * part (q = 1), and the server may know too. Participations compose
 * additively in RDP (Prop. 1): RDP(α) = α · Σ_k 1 / (2 z_k^2), converted to
 * (ε, δ) exactly like the server-side accountant.
 */
export function createLocalPrivacyTracker(options: LocalPrivacyTrackerOptions): LocalPrivacyTracker {
  const { epsilonCap, delta } = options;
  requireArgument(Number.isFinite(epsilonCap) && epsilonCap > 0, 'epsilonCap must be a finite number > 0', {
    epsilonCap,
  });
  validateDelta(delta);
  const orders = resolveOrders(options.orders);
  const history: number[] = [];
  // Σ 1 / (2 z^2): RDP(α) = α · rho (the zCDP parameter of the composition).
  let rho = 0;

  const rhoOf = (z: number): number => {
    requireArgument(Number.isFinite(z) && z > 0, `noiseMultiplier must be a finite number > 0, got ${String(z)}`, {
      noiseMultiplier: z,
    });
    return 1 / (2 * z * z);
  };
  const epsilonAt = (totalRho: number): EpsilonResult =>
    rdpToEpsilon({ rdp: orders.map((a) => (totalRho === 0 ? 0 : a * totalRho)), orders, delta });

  const tracker: LocalPrivacyTracker = {
    get participations() {
      return history.length;
    },
    epsilonCap,
    spent: () => epsilonAt(rho),
    epsilonIfParticipated: (z) => epsilonAt(rho + rhoOf(z)),
    canParticipate: (z) => epsilonAt(rho + rhoOf(z)).epsilon <= epsilonCap,
    recordParticipation(z) {
      const next = rho + rhoOf(z);
      const result = epsilonAt(next);
      if (!(result.epsilon <= epsilonCap)) {
        throw new PrivacyError(
          'budget_exhausted',
          `participating would raise epsilon to ${result.epsilon} above the cap ${epsilonCap} (delta ${delta})`,
          { details: { epsilonIfParticipated: result.epsilon, epsilonCap, delta, participations: history.length } },
        );
      }
      rho = next;
      history.push(z);
      return result;
    },
    history: () => [...history],
  };
  for (const z of options.participations ?? []) {
    rho += rhoOf(z);
    history.push(z);
  }
  return tracker;
}
