/**
 * Device-side differential privacy, as update middleware (the place Flower's
 * `fixedclipping_mod` / local-DP mods take, adap/flower `client/mod/`).
 *
 * - Local mode ({@link createLocalDpMiddleware}): each device clips its whole
 *   update and adds Gaussian noise itself, DP-FedAvg style (McMahan, Ramage,
 *   Talwar & Zhang 2018, "Learning Differentially Private Recurrent Language
 *   Models", ICLR 2018, Alg. 1 — flat clipping, Gaussian noise σ = z·S), and
 *   enforces its own ε cap with a per-device ledger.
 * - Distributed mode ({@link createDistributedDpMiddleware}): each device adds
 *   a small discrete Gaussian share and the encrypted (modular) sum carries the
 *   full noise: the distributed discrete Gaussian of Kairouz, Liu & Steinke
 *   2021 ("The Distributed Discrete Gaussian Mechanism for Federated Learning
 *   with Secure Aggregation", ICML 2021, Alg. 1), with the discrete Gaussian of
 *   Canonne, Kamath & Steinke 2020 ("The Discrete Gaussian for Differential
 *   Privacy", NeurIPS 2020). The coordinator's ledger accounts for it.
 */
import { createHash } from 'node:crypto';
import {
  PrivacyError,
  checkModularHeadroom,
  createLocalPrivacyTracker,
  encodeDistributedDiscreteGaussian,
  getDefaultRng,
  nextPowerOfTwo,
  privatizeLocalUpdate,
  type LocalPrivacyTracker,
  type Rng,
} from '@veil/privacy';
import { ClientError } from '../errors.js';
import type { RoundContext, UpdateMiddleware } from '../middleware.js';

// ---------------------------------------------------------------------------
// Local mode
// ---------------------------------------------------------------------------

/** What a device persists so a restart does not reset its privacy budget. */
export interface LocalDpState {
  /** Format version of this record. */
  readonly version: 1;
  /** Noise multiplier z of every participation released so far, in order. */
  readonly participations: readonly number[];
}

/** The device's privacy budget, for an app to show. */
export interface LocalPrivacyStatus {
  /** ε spent so far at `delta` (0 before the first participation). */
  readonly spentEpsilon: number;
  /** The device's own cap. */
  readonly epsilonCap: number;
  /** δ of `spentEpsilon` and `epsilonCap`. */
  readonly delta: number;
  /** Number of updates released. */
  readonly participations: number;
  /** ε after one more participation at the configured noise multiplier. */
  readonly epsilonIfParticipated: number;
  /** Whether one more participation stays within the cap. */
  readonly canParticipate: boolean;
}

/** Options of {@link createLocalDpMiddleware}. */
export interface LocalDpOptions {
  /** C: L2 norm bound of the whole update, in model units, > 0. Required. */
  clipNorm: number;
  /** z: per-coordinate noise stddev is z·C, > 0. Required. */
  noiseMultiplier: number;
  /** The device's own ε cap at `delta`, > 0. Required. */
  epsilonCap: number;
  /** δ at which the cap holds, in (0, 1). Required. */
  delta: number;
  /**
   * Noise source. Default: the process CSPRNG of @veil/privacy (`node:crypto`).
   * Inject a seeded generator in tests only.
   */
  rng?: Rng;
  /**
   * A ledger to use instead of a new one (e.g. one shared by several tasks of
   * the same app, so they draw from one budget). Its cap must equal
   * `epsilonCap`, and it must have been made for the same `delta`. Default: a
   * new `createLocalPrivacyTracker({ epsilonCap, delta })`.
   */
  tracker?: LocalPrivacyTracker;
  /** State saved by an earlier run ({@link LocalDpMiddleware.state}); not with `tracker`. Default none. */
  restore?: LocalDpState;
  /**
   * Called with the new state after a participation is recorded and before the
   * update is released; if it throws, the update is not released (the
   * participation stays counted in memory, which errs on the safe side).
   * Default none (persist `state()` yourself).
   */
  persist?: (state: LocalDpState) => void | Promise<void>;
}

/** Local-mode DP: the middleware and the device's ledger. */
export interface LocalDpMiddleware {
  /** Clip, noise, account, then release (see {@link createLocalDpMiddleware}). */
  readonly middleware: UpdateMiddleware;
  /** The budget as of now. */
  readonly privacy: LocalPrivacyStatus;
  /** A record to persist; pass it back as `restore` after a restart. */
  state(): LocalDpState;
  /** Whether the noise comes from a cryptographically secure generator. */
  readonly cryptographicallySecureNoise: boolean;
}

/**
 * Local differential privacy for one device, DP-FedAvg style (McMahan et al.
 * 2018, Alg. 1): Δ' = clip(Δ, C) + N(0, (z·C)² I), with clip the flat L2
 * clipping Δ·min(1, C/‖Δ‖₂). One release is the Gaussian mechanism with L2
 * sensitivity C; the device's ledger composes its releases in RDP (Mironov
 * 2017, Prop. 1 and 7) and refuses the one that would exceed its own cap.
 *
 * Order of operations: refuse if the budget is exhausted → clip and noise →
 * record the participation (and `persist`) → only then call `next`. When the
 * budget does not allow one more participation it throws
 * `ClientError('failed_precondition')` and neither calls `next` nor returns
 * the update.
 *
 * Weighting: the update leaves with `exampleCount = 1`. DP-FedAvg bounds each
 * user's contribution to the weighted sum Σ w_k Δ_k by capping w_k (their
 * Alg. 1, w_k = min(n_k/ŵ, 1)); with uniform weights the sensitivity of the
 * sum is exactly C, which the coordinator's accounting assumes. Besides, the
 * example count travels in the clear in the update header and is data the
 * noise does not protect, so it must not depend on the device's data.
 */
export function createLocalDpMiddleware(options: LocalDpOptions): LocalDpMiddleware {
  const { clipNorm, noiseMultiplier, epsilonCap, delta } = options;
  requireOption(Number.isFinite(clipNorm) && clipNorm > 0, `clipNorm must be a finite number > 0, got ${clipNorm}`);
  requireOption(
    Number.isFinite(noiseMultiplier) && noiseMultiplier > 0,
    `noiseMultiplier must be a finite number > 0, got ${noiseMultiplier}`,
  );
  requireOption(Number.isFinite(epsilonCap) && epsilonCap > 0, `epsilonCap must be a finite number > 0, got ${epsilonCap}`);
  requireOption(delta > 0 && delta < 1, `delta must be in (0, 1), got ${delta}`);
  const rng = options.rng ?? getDefaultRng();
  const tracker = resolveTracker(options);
  const persist = options.persist;

  const state = (): LocalDpState => ({ version: 1, participations: tracker.history() });
  const exhausted = (epsilonIfParticipated: number): ClientError =>
    new ClientError(
      'failed_precondition',
      `the device's own privacy budget is exhausted: one more update would raise epsilon to ` +
        `${epsilonIfParticipated.toFixed(3)} above its cap ${epsilonCap} (delta ${delta}, ` +
        `${tracker.participations} updates released)`,
    );

  const middleware: UpdateMiddleware = async (update, ctx, next) => {
    ctx.signal?.throwIfAborted();
    if (!tracker.canParticipate(noiseMultiplier)) {
      throw exhausted(tracker.epsilonIfParticipated(noiseMultiplier).epsilon);
    }
    const { noised } = wrapPrivacy(() => privatizeLocalUpdate(update.delta, { clipNorm, noiseMultiplier, rng }));
    try {
      tracker.recordParticipation(noiseMultiplier);
    } catch (error) {
      if (error instanceof PrivacyError && error.code === 'budget_exhausted') {
        throw exhausted(tracker.epsilonIfParticipated(noiseMultiplier).epsilon);
      }
      throw ClientError.from(error);
    }
    if (persist !== undefined) await persist(state());
    return next(
      {
        ...update,
        delta: noised,
        exampleCount: 1,
        // The pre-clip norm and whether clipping applied depend on the data: not noted.
        notes: { ...update.notes, dp: { mechanism: 'local-gaussian', clipNorm, noiseMultiplier } },
      },
      ctx,
    );
  };

  return {
    middleware,
    get privacy(): LocalPrivacyStatus {
      const next = tracker.epsilonIfParticipated(noiseMultiplier).epsilon;
      return {
        spentEpsilon: tracker.participations === 0 ? 0 : tracker.spent().epsilon,
        epsilonCap,
        delta,
        participations: tracker.participations,
        epsilonIfParticipated: next,
        canParticipate: next <= epsilonCap,
      };
    },
    state,
    cryptographicallySecureNoise: rng.cryptographicallySecure,
  };
}

function resolveTracker(options: LocalDpOptions): LocalPrivacyTracker {
  const { tracker, restore, epsilonCap, delta } = options;
  if (tracker !== undefined) {
    requireOption(restore === undefined, 'pass either tracker or restore, not both (restore the tracker itself)');
    requireOption(
      tracker.epsilonCap === epsilonCap,
      `the tracker's cap ${tracker.epsilonCap} differs from epsilonCap ${epsilonCap}`,
    );
    return tracker;
  }
  if (restore !== undefined) {
    requireOption(
      restore.version === 1 && Array.isArray(restore.participations),
      'restore is not a LocalDpState of version 1',
    );
  }
  return wrapPrivacy(() =>
    createLocalPrivacyTracker({ epsilonCap, delta, participations: restore?.participations ?? [] }),
  );
}

// ---------------------------------------------------------------------------
// Distributed mode
// ---------------------------------------------------------------------------

/** Options of {@link createDistributedDpMiddleware}. All but `beta`, `rng` and `maxClients` are the task's, per round. */
export interface DistributedDpOptions {
  /** c: L2 norm bound of the whole update, in model units, > 0. Required. */
  clipNorm: number;
  /** 1/γ: integer-grid steps per model unit, > 0. Required. */
  scale: number;
  /**
   * σ: this device's noise share, stddev in model units (integer-domain
   * σ_z = σ·scale), > 0. The sum of n shares has stddev √n·σ. Required.
   */
  localStddev: number;
  /**
   * m: modulus of the aggregation. Must equal the task's BFV plain modulus t
   * (the encryption step refuses otherwise), an integer in [2, 2^31]. Required.
   */
  modulus: number;
  /**
   * Public seed of the random rotation, shared by every device of the round
   * and the key holders who decode the sum; an integer in [0, 2^32). It need
   * not be secret. A function receives the round (e.g. `(ctx) =>
   * rotationSeedForVersion(ctx.taskId, ctx.modelVersion + 1)`). Required.
   */
  rotationSeed: number | ((ctx: RoundContext) => number);
  /** β of the conditional randomized rounding, in [0, 1); must match the accounting. Default exp(-1/2). */
  beta?: number;
  /** Randomness for rounding and noise. Default: the process CSPRNG of @veil/privacy. */
  rng?: Rng;
  /**
   * When set, every round first checks that the sum of up to this many
   * updates cannot wrap around m except with probability <= 1e-9
   * (`checkModularHeadroom`, KLS21 Sec. 4.4) and refuses with
   * `failed_precondition` otherwise. Default: not checked.
   */
  maxClients?: number;
}

/** Distributed-mode DP: the middleware. */
export interface DistributedDpMiddleware {
  /** Encode with DDG and hand the residues to the encryption step (see {@link createDistributedDpMiddleware}). */
  readonly middleware: UpdateMiddleware;
  /** Whether the noise comes from a cryptographically secure generator. */
  readonly cryptographicallySecureNoise: boolean;
}

/**
 * Client side of the distributed discrete Gaussian (Kairouz, Liu & Steinke
 * 2021, Alg. 1; `encodeDistributedDiscreteGaussian` of @veil/privacy): clip Δ
 * to L2 norm c, pad to d = 2^k and rotate (H·D, public seed), scale by 1/γ,
 * conditional randomized rounding (their Sec. 4.1), add a discrete Gaussian
 * share N_Z(0, σ_z²) (Canonne, Kamath & Steinke 2020, Alg. 3), reduce mod m.
 *
 * The residues go to the encryption step as `update.levels` and are encrypted
 * exactly (no second quantization): with m = t the encrypted sum is the
 * mod-m sum the mechanism needs, and `DeviceEncryption.applyDistributedDpSum`
 * decodes it. The update leaves with `exampleCount = 1` (the sum is
 * unweighted; sensitivity Δ₂ is one client's rounded, clipped update) and an
 * empty `delta`, so no plaintext update survives this middleware. It must be
 * used on encrypted tasks only: on its own, one device's share is far too
 * little noise.
 */
export function createDistributedDpMiddleware(options: DistributedDpOptions): DistributedDpMiddleware {
  const { clipNorm, scale, localStddev, modulus, beta, maxClients } = options;
  requireOption(Number.isFinite(clipNorm) && clipNorm > 0, `clipNorm must be a finite number > 0, got ${clipNorm}`);
  requireOption(Number.isFinite(scale) && scale > 0, `scale must be a finite number > 0, got ${scale}`);
  requireOption(
    Number.isFinite(localStddev) && localStddev > 0,
    `localStddev must be a finite number > 0, got ${localStddev}`,
  );
  // Residues travel in an Int32Array.
  requireOption(Number.isSafeInteger(modulus) && modulus >= 2 && modulus <= 2 ** 31, `modulus must be an integer in [2, 2^31], got ${modulus}`);
  requireOption(beta === undefined || (beta >= 0 && beta < 1), `beta must be in [0, 1), got ${beta}`);
  requireOption(
    maxClients === undefined || (Number.isSafeInteger(maxClients) && maxClients >= 1),
    `maxClients must be a positive integer, got ${maxClients}`,
  );
  if (typeof options.rotationSeed === 'number') checkRotationSeed(options.rotationSeed);
  const rng = options.rng ?? getDefaultRng();

  const middleware: UpdateMiddleware = async (update, ctx, next) => {
    ctx.signal?.throwIfAborted();
    const rotationSeed =
      typeof options.rotationSeed === 'number' ? options.rotationSeed : checkRotationSeed(options.rotationSeed(ctx));
    const dimension = paddedDimension(update.delta.length);
    if (maxClients !== undefined) {
      const headroom = wrapPrivacy(() =>
        checkModularHeadroom({ clipNorm, clients: maxClients, modulusBits: Math.log2(modulus), scale, localStddev, dimension }),
      );
      if (!headroom.ok) {
        throw new ClientError(
          'failed_precondition',
          `a sum of ${maxClients} updates may wrap around the modulus ${modulus} (probability bound ` +
            `${headroom.overflowProbabilityBound}); it needs ${headroom.requiredModulusBits} bits: lower scale or clients`,
        );
      }
    }
    const encoded = wrapPrivacy(() =>
      encodeDistributedDiscreteGaussian(update.delta, {
        clipNorm,
        scale,
        localStddev,
        modulus,
        rotationSeed,
        rng,
        ...(beta === undefined ? {} : { beta }),
      }),
    );
    return next(
      {
        ...update,
        delta: new Float32Array(0),
        exampleCount: 1,
        levels: { residues: Int32Array.from(encoded.encoded), modulus },
        notes: {
          ...update.notes,
          dp: {
            mechanism: 'distributed-discrete-gaussian',
            clipNorm,
            scale,
            localStddev,
            modulus,
            rotationSeed,
            dimension: encoded.dimension,
            originalDimension: update.delta.length,
          },
        },
      },
      ctx,
    );
  };
  return { middleware, cryptographicallySecureNoise: rng.cryptographicallySecure };
}

/**
 * The public rotation seed of the round whose sum becomes model version
 * `sumVersion` (the assignment's base version + 1): the first 32 bits of
 * SHA-256("veil-ddg-rotation/v1", taskId, sumVersion). Devices encoding an
 * update and key holders decoding the sum derive the same seed without a
 * round trip. (A round that fails reuses its seed in the next round on the
 * same base version; the rotation need not be secret or fresh for privacy,
 * KLS21 Sec. 4.2 — it only spreads the signal to avoid modular wraparound.)
 */
export function rotationSeedForVersion(taskId: string, sumVersion: number): number {
  requireOption(Number.isSafeInteger(sumVersion) && sumVersion >= 1, `sumVersion must be an integer >= 1, got ${sumVersion}`);
  const digest = createHash('sha256').update(`veil-ddg-rotation/v1\0${taskId}\0${sumVersion}`).digest();
  return digest.readUInt32LE(0);
}

/** d: the update length padded to a power of two, as the rotation does (an empty update pads to 1). */
export function paddedDimension(length: number): number {
  return nextPowerOfTwo(Math.max(1, length));
}

function checkRotationSeed(seed: number): number {
  requireOption(Number.isInteger(seed) && seed >= 0 && seed < 2 ** 32, `rotationSeed must be an integer in [0, 2^32), got ${seed}`);
  return seed;
}

function requireOption(condition: boolean, message: string): asserts condition {
  if (!condition) throw new ClientError('invalid_argument', message);
}

/** Runs a @veil/privacy call, turning its argument errors into the SDK's. */
function wrapPrivacy<T>(f: () => T): T {
  try {
    return f();
  } catch (error) {
    if (error instanceof PrivacyError && error.code === 'invalid_argument') {
      throw new ClientError('invalid_argument', error.message, { cause: error });
    }
    throw ClientError.from(error);
  }
}
