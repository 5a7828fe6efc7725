import { requireArgument } from '../errors.js';

/** An (ε, δ) guarantee and the RDP order that attains it. */
export interface EpsilonResult {
  /** ε (natural-log units), >= 0; `Infinity` when no order gives a finite bound. */
  epsilon: number;
  /** The RDP order α that attains the minimum (`NaN` if all are infinite). */
  order: number;
}

/** Options of {@link rdpToEpsilon}. */
export interface RdpToEpsilonOptions {
  /** RDP values, one per order. */
  rdp: ArrayLike<number>;
  /** RDP orders (each > 1), same length as `rdp`. */
  orders: readonly number[];
  /** Target δ, in (0, 1). */
  delta: number;
}

/** @internal Validates δ in (0, 1). */
export function validateDelta(delta: number): void {
  requireArgument(
    Number.isFinite(delta) && delta > 0 && delta < 1,
    `delta must be in (0, 1), got ${String(delta)}`,
    { delta },
  );
}

/**
 * Converts RDP to (ε, δ)-DP, minimising over orders, exactly as
 * dp_accounting `rdp_privacy_accountant.compute_epsilon`:
 *
 *   ε(α) = rdp(α) + log1p(-1/α) - (log δ + log α) / (α - 1)
 *
 * (Balle et al. 2020, "Hypothesis testing interpretations and Rényi DP",
 * Thm. 21; Canonne, Kamath & Steinke 2020, Prop. 12 / Asoodeh et al. 2020
 * Eq. 20), with the same edge handling per order: rdp < 0 (round-off) gives
 * ε = 0; δ^2 + expm1(-rdp) > 0 gives ε = 0 (KL bound δ <= sqrt(1 - e^{-KL}));
 * α <= 1.01 gives Infinity (the bound is numerically unstable there). The
 * result is max(0, min_α ε(α)); ties pick the first order.
 */
export function rdpToEpsilon(options: RdpToEpsilonOptions): EpsilonResult {
  const { rdp, orders, delta } = options;
  validateDelta(delta);
  requireArgument(rdp.length === orders.length, 'rdp and orders must have the same length', {
    rdpLength: rdp.length,
    ordersLength: orders.length,
  });
  requireArgument(orders.length > 0, 'orders must be non-empty');
  const logDelta = Math.log(delta);
  let best = Infinity;
  let bestOrder = Number.NaN;
  for (let k = 0; k < orders.length; k++) {
    const a = orders[k] as number;
    const r = rdp[k] as number;
    requireArgument(a >= 1, `RDP order must be at least 1, got ${a}`, { order: a });
    requireArgument(!Number.isNaN(r), 'RDP value is NaN', { order: a });
    let eps: number;
    if (r < 0) {
      eps = 0;
    } else if (delta * delta + Math.expm1(-r) > 0) {
      eps = 0;
    } else if (a > 1.01 && Number.isFinite(a)) {
      eps = r + Math.log1p(-1 / a) - (logDelta + Math.log(a)) / (a - 1);
    } else if (a === Infinity) {
      // Limit α -> ∞ of the formula: pure-DP bound r (only finite if r is).
      eps = r;
    } else {
      eps = Infinity;
    }
    if (Number.isNaN(eps)) eps = Infinity;
    // Strict '<' keeps the first minimiser, like numpy.argmin.
    if (eps < best || Number.isNaN(bestOrder)) {
      best = eps;
      bestOrder = a;
    }
  }
  return { epsilon: Math.max(0, best), order: bestOrder };
}
