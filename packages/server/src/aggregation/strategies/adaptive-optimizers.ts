/**
 * Adaptive server optimizers FedAdagrad, FedAdam and FedYogi (Reddi, Charles,
 * Zaheer, Garrett, Rush, Konečný, Kumar & McMahan 2021, "Adaptive Federated
 * Optimization", ICLR, Algorithm 2).
 *
 * The server treats the round's average client update Δ_t = Σ_k (n_k/n) Δ_k
 * as a pseudo-gradient and, per coordinate:
 *
 *   m_t = β₁ m_{t−1} + (1 − β₁) Δ_t
 *   v_t = v_{t−1} + Δ_t²                                   (FedAdagrad)
 *   v_t = β₂ v_{t−1} + (1 − β₂) Δ_t²                       (FedAdam)
 *   v_t = v_{t−1} − (1 − β₂) Δ_t² sign(v_{t−1} − Δ_t²)     (FedYogi)
 *   w_{t+1} = w_t + η m_t / (√v_t + τ)
 *
 * with m_{−1} = 0 and v_{−1} = τ² (the paper asks v_{−1} ≥ τ²; Flower's
 * `fedadam.py`/`fedyogi.py`/`fedadagrad.py` start from 0, which differs by τ²
 * in the first steps only). η is the server learning rate, τ the degree of
 * adaptivity. The client learning rate η_l is not used here: it is the
 * `learningRate` each device is configured with.
 *
 * Optional Adam bias correction (Kingma & Ba 2015, the step size α_t before
 * Section 2.1): η_t = η √(1 − β₂ᵗ) / (1 − β₁ᵗ) with t = 1, 2, ... the step
 * number. Flower's FedAdam applies it with the exponent server_round + 1; the
 * paper's Algorithm 2 has none, which is our default.
 *
 * Only the plaintext average update is needed, never an individual update.
 * Arithmetic is float64 per coordinate; model and moments are stored float32.
 */

/** Which adaptive rule updates the second moment. */
export type AdaptiveOptimizerKind = 'adagrad' | 'adam' | 'yogi';

/** Hyper-parameters of {@link adaptiveStep}. */
export interface AdaptiveOptimizerOptions {
  /** Server learning rate η (> 0). */
  eta: number;
  /** First-moment decay β₁, in [0, 1). */
  beta1: number;
  /** Second-moment decay β₂, in [0, 1) (unused by FedAdagrad). */
  beta2: number;
  /** Adaptivity τ (> 0): added to √v, and v starts at τ². */
  tau: number;
  /** Adam bias correction of the step size (FedAdam only). Default false (Algorithm 2). */
  biasCorrection?: boolean;
}

/** State carried between rounds: both moments and the number of steps taken. */
export interface AdaptiveOptimizerState {
  /** First moment m, or null before the first step (then m_{−1} = 0). */
  m: Float32Array | null;
  /** Second moment v, or null before the first step (then v_{−1} = τ²). */
  v: Float32Array | null;
  /** Steps taken so far (0 before the first). */
  step: number;
}

/** The state before the first round. */
export function initialAdaptiveState(): AdaptiveOptimizerState {
  return { m: null, v: null, step: 0 };
}

/** Checks the hyper-parameters; throws a `RangeError` naming the bad one. */
export function checkAdaptiveOptions(options: AdaptiveOptimizerOptions): void {
  const { eta, beta1, beta2, tau } = options;
  if (!(eta > 0) || !Number.isFinite(eta)) throw new RangeError(`eta must be a finite number > 0, got ${eta}`);
  if (!(beta1 >= 0 && beta1 < 1)) throw new RangeError(`beta1 must be in [0, 1), got ${beta1}`);
  if (!(beta2 >= 0 && beta2 < 1)) throw new RangeError(`beta2 must be in [0, 1), got ${beta2}`);
  if (!(tau > 0) || !Number.isFinite(tau)) throw new RangeError(`tau must be a finite number > 0, got ${tau}`);
}

/**
 * One server step of Algorithm 2: returns the next model and state; the inputs
 * are not modified.
 *
 * @param current the global model w_t.
 * @param averageUpdate the round's FedAvg update Δ_t.
 */
export function adaptiveStep(
  kind: AdaptiveOptimizerKind,
  current: Float32Array,
  averageUpdate: Float32Array,
  state: AdaptiveOptimizerState,
  options: AdaptiveOptimizerOptions,
): { next: Float32Array; state: AdaptiveOptimizerState } {
  checkAdaptiveOptions(options);
  const n = current.length;
  if (averageUpdate.length !== n) throw new RangeError(`update has ${averageUpdate.length} values, expected ${n}`);
  for (const [name, moment] of [['m', state.m], ['v', state.v]] as const) {
    if (moment !== null && moment.length !== n) {
      throw new RangeError(`optimizer state ${name} has ${moment.length} values, expected ${n}`);
    }
  }
  const { beta1, beta2, tau } = options;
  const step = state.step + 1;
  let eta = options.eta;
  if (options.biasCorrection === true && kind === 'adam') {
    eta = (eta * Math.sqrt(1 - beta2 ** step)) / (1 - beta1 ** step);
  }
  const initialV = tau * tau;
  const m = new Float32Array(n);
  const v = new Float32Array(n);
  const next = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const delta = averageUpdate[i]!;
    const squared = delta * delta;
    const mPrev = state.m === null ? 0 : state.m[i]!;
    const vPrev = state.v === null ? initialV : state.v[i]!;
    const mi = beta1 * mPrev + (1 - beta1) * delta;
    let vi: number;
    if (kind === 'adagrad') vi = vPrev + squared;
    else if (kind === 'adam') vi = beta2 * vPrev + (1 - beta2) * squared;
    else vi = vPrev - (1 - beta2) * squared * Math.sign(vPrev - squared);
    m[i] = mi;
    v[i] = vi;
    // The update uses the float32 moments that are stored, so a resumed run takes the same step.
    next[i] = current[i]! + (eta * m[i]!) / (Math.sqrt(v[i]!) + tau);
  }
  return { next, state: { m, v, step } };
}
