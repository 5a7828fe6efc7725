import { PrivacyError, requireArgument } from '../errors.js';
import { rdpToEpsilon, validateDelta, type EpsilonResult } from './conversion.js';
import { resolveOrders } from './orders.js';
import { sampledGaussianRdpAtOrder, validateSampledGaussian, validateSteps } from './sampled-gaussian.js';

/**
 * One or more rounds of the Poisson-subsampled Gaussian mechanism
 * (central DP-FedAvg: server adds N(0, (z·C)^2) to the sum of clipped
 * updates of clients sampled with probability q).
 */
export interface SampledGaussianEvent {
  readonly kind?: 'sampledGaussian';
  /** Poisson sampling probability q, in [0, 1]. */
  readonly samplingRate: number;
  /** Noise multiplier z = noise stddev / clip norm, >= 0. */
  readonly noiseMultiplier: number;
  /** Number of identical rounds. Default 1. */
  readonly count?: number;
}

/**
 * A privacy event given directly by its per-order RDP (e.g. from
 * `computeDistributedDiscreteGaussianRdp`). `rdp` must be computed on the
 * accountant's orders, in the same order.
 */
export interface RdpVectorEvent {
  readonly kind: 'rdp';
  /** RDP of one application, one value per accountant order. */
  readonly rdp: ArrayLike<number>;
  /** Number of identical applications. Default 1. */
  readonly count?: number;
}

/** Events the {@link RdpAccountant} can compose. */
export type PrivacyEvent = SampledGaussianEvent | RdpVectorEvent;

/** Options of {@link createRdpAccountant}. */
export interface RdpAccountantOptions {
  /** RDP orders (each > 1). Default `DEFAULT_RDP_ORDERS` (dp_accounting's). */
  orders?: readonly number[];
  /** Events to replay at construction (e.g. restored from a ledger). Default none. */
  events?: readonly PrivacyEvent[];
  /** Maximum number of cached per-(q, z) RDP vectors. Default 256. */
  cacheSize?: number;
}

/** Incremental RDP accountant for heterogeneous rounds. */
export interface RdpAccountant {
  /** The orders this accountant tracks (frozen copy). */
  readonly orders: readonly number[];
  /** Total number of composed rounds (sum of event counts). */
  readonly rounds: number;
  /** Composes `event` into the running total. */
  compose(event: PrivacyEvent): void;
  /** ε (and attaining order) of everything composed so far, at `delta`. */
  getEpsilon(delta: number): EpsilonResult;
  /**
   * ε at `delta` if `event` were composed now — does not mutate. The server
   * calls this before opening a round to enforce the budget.
   */
  epsilonIfComposed(event: PrivacyEvent, delta: number): EpsilonResult;
  /**
   * Composes `event` only if the resulting ε at `budget.delta` stays
   * <= `budget.epsilonCap`; otherwise throws
   * `PrivacyError('budget_exhausted')` and leaves the accountant unchanged.
   * Returns the new ε.
   */
  composeWithinBudget(event: PrivacyEvent, budget: PrivacyBudget): EpsilonResult;
  /** A copy of the accumulated RDP vector (aligned with `orders`). */
  getRdp(): Float64Array;
}

/** An (ε, δ) cap. */
export interface PrivacyBudget {
  /** Maximum ε (> 0). */
  epsilonCap: number;
  /** δ in (0, 1) at which the cap applies. */
  delta: number;
}

const DEFAULT_CACHE_SIZE = 256;

/**
 * Creates an RDP accountant (Mironov 2017; composition: RDP adds per order,
 * Prop. 1). Per-(q, z) RDP vectors are cached (LRU) so composing many rounds
 * with the same settings, or asking `epsilonIfComposed` before every round,
 * costs one vector addition and one conversion.
 */
export function createRdpAccountant(options: RdpAccountantOptions = {}): RdpAccountant {
  const orders = Object.freeze([...resolveOrders(options.orders)]);
  const cacheSize = options.cacheSize ?? DEFAULT_CACHE_SIZE;
  requireArgument(Number.isSafeInteger(cacheSize) && cacheSize >= 1, 'cacheSize must be a positive integer', {
    cacheSize,
  });
  const cache = new Map<string, Float64Array>();
  const total = new Float64Array(orders.length);
  let rounds = 0;

  const perRound = (q: number, z: number): Float64Array => {
    const key = `${q}:${z}`;
    const hit = cache.get(key);
    if (hit !== undefined) {
      cache.delete(key);
      cache.set(key, hit);
      return hit;
    }
    const vec = new Float64Array(orders.length);
    for (let k = 0; k < orders.length; k++) vec[k] = sampledGaussianRdpAtOrder(q, z, orders[k] as number);
    cache.set(key, vec);
    if (cache.size > cacheSize) {
      const oldest = cache.keys().next().value;
      if (oldest !== undefined) cache.delete(oldest);
    }
    return vec;
  };

  const eventRdp = (event: PrivacyEvent): { vec: ArrayLike<number>; count: number } => {
    const count = event.count ?? 1;
    validateSteps(count, 'count');
    if (event.kind === 'rdp') {
      requireArgument(event.rdp.length === orders.length, 'rdp vector length must equal the number of orders', {
        rdpLength: event.rdp.length,
        ordersLength: orders.length,
      });
      for (let k = 0; k < event.rdp.length; k++) {
        const r = event.rdp[k] as number;
        requireArgument(!Number.isNaN(r) && r >= 0, 'rdp values must be >= 0', { order: orders[k] });
      }
      return { vec: event.rdp, count };
    }
    validateSampledGaussian(event.samplingRate, event.noiseMultiplier);
    return { vec: perRound(event.samplingRate, event.noiseMultiplier), count };
  };

  const addInto = (target: Float64Array, vec: ArrayLike<number>, count: number): void => {
    if (count === 0) return;
    for (let k = 0; k < target.length; k++) {
      const r = vec[k] as number;
      if (r !== 0) target[k] = (target[k] as number) + r * count;
    }
  };

  const accountant: RdpAccountant = {
    orders,
    get rounds() {
      return rounds;
    },
    compose(event) {
      const { vec, count } = eventRdp(event);
      addInto(total, vec, count);
      rounds += count;
    },
    getEpsilon(delta) {
      validateDelta(delta);
      return rdpToEpsilon({ rdp: total, orders, delta });
    },
    epsilonIfComposed(event, delta) {
      validateDelta(delta);
      const { vec, count } = eventRdp(event);
      const next = Float64Array.from(total);
      addInto(next, vec, count);
      return rdpToEpsilon({ rdp: next, orders, delta });
    },
    composeWithinBudget(event, budget) {
      requireArgument(
        Number.isFinite(budget.epsilonCap) && budget.epsilonCap > 0,
        'epsilonCap must be a finite number > 0',
        { epsilonCap: budget.epsilonCap },
      );
      validateDelta(budget.delta);
      const { vec, count } = eventRdp(event);
      const next = Float64Array.from(total);
      addInto(next, vec, count);
      const result = rdpToEpsilon({ rdp: next, orders, delta: budget.delta });
      if (!(result.epsilon <= budget.epsilonCap)) {
        throw new PrivacyError(
          'budget_exhausted',
          `composing this round would raise epsilon to ${result.epsilon} above the cap ${budget.epsilonCap} ` +
            `(delta ${budget.delta})`,
          { details: { epsilonIfComposed: result.epsilon, epsilonCap: budget.epsilonCap, delta: budget.delta, rounds } },
        );
      }
      total.set(next);
      rounds += count;
      return result;
    },
    getRdp() {
      return Float64Array.from(total);
    },
  };
  for (const event of options.events ?? []) accountant.compose(event);
  return accountant;
}

/** Options of {@link computeEpsilon}. */
export interface ComputeEpsilonOptions {
  /** Poisson sampling probability q per round, in (0, 1]. */
  samplingRate: number;
  /** Noise multiplier z = noise stddev / clip norm, > 0. */
  noiseMultiplier: number;
  /** Number of rounds T, a positive integer. */
  rounds: number;
  /** Target δ, in (0, 1). */
  delta: number;
  /** RDP orders. Default `DEFAULT_RDP_ORDERS`. */
  orders?: readonly number[];
}

/**
 * ε after `rounds` rounds of DP-FedAvg with Poisson client sampling at
 * `samplingRate` and noise multiplier `noiseMultiplier`, at `delta`
 * (RDP accounting, minimised over orders).
 */
export function computeEpsilon(options: ComputeEpsilonOptions): EpsilonResult {
  const { samplingRate, noiseMultiplier, rounds, delta } = options;
  validateStrictInputs(samplingRate, noiseMultiplier, rounds);
  validateDelta(delta);
  const orders = resolveOrders(options.orders);
  const rdp = new Float64Array(orders.length);
  for (let k = 0; k < orders.length; k++) {
    rdp[k] = sampledGaussianRdpAtOrder(samplingRate, noiseMultiplier, orders[k] as number) * rounds;
  }
  return rdpToEpsilon({ rdp, orders, delta });
}

/** @internal q in (0, 1], z > 0, T positive integer. */
export function validateStrictInputs(samplingRate: number, noiseMultiplier: number, rounds: number): void {
  requireArgument(
    Number.isFinite(samplingRate) && samplingRate > 0 && samplingRate <= 1,
    `samplingRate must be in (0, 1], got ${String(samplingRate)}`,
    { samplingRate },
  );
  requireArgument(
    Number.isFinite(noiseMultiplier) && noiseMultiplier > 0,
    `noiseMultiplier must be a finite number > 0, got ${String(noiseMultiplier)}`,
    { noiseMultiplier },
  );
  requireArgument(
    Number.isSafeInteger(rounds) && rounds >= 1,
    `rounds must be a positive integer, got ${String(rounds)}`,
    { rounds },
  );
}


