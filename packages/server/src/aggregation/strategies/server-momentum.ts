/**
 * FedAvgM: FedAvg with server momentum (Hsu, Qi & Brown 2019, "Measuring the
 * Effects of Non-Identical Data Distribution for Federated Visual
 * Classification", Section 3; the same update as Flower's `FedAvgM` with
 * `server_learning_rate` and `server_momentum`, PyTorch's SGD convention).
 *
 * With the round's FedAvg update Δ_t = Σ_k (n_k/n) Δ_k (the average of the
 * clients' updates), the pseudo-gradient is g_t = −Δ_t and
 *
 *   v_t = β v_{t−1} + g_t   (v_1 = g_1),
 *   w_{t+1} = w_t − η v_t.
 *
 * With β = 0 and η = 1 this is FedAvg. It needs only the plaintext average of
 * the updates, never an individual update.
 */

/** Hyper-parameters of {@link fedAvgMStep}. */
export interface ServerMomentumOptions {
  /** Server learning rate η (> 0). */
  serverLearningRate: number;
  /** Server momentum β, in [0, 1). */
  momentum: number;
}

/** State FedAvgM carries from round to round: the momentum buffer v (null before the first step). */
export interface ServerMomentumState {
  velocity: Float32Array | null;
}

/** Checks the hyper-parameters; throws a `RangeError` naming the bad one. */
export function checkServerMomentumOptions(options: ServerMomentumOptions): void {
  if (!(options.serverLearningRate > 0) || !Number.isFinite(options.serverLearningRate)) {
    throw new RangeError(`serverLearningRate must be a finite number > 0, got ${options.serverLearningRate}`);
  }
  if (!(options.momentum >= 0 && options.momentum < 1)) {
    throw new RangeError(`momentum must be in [0, 1), got ${options.momentum}`);
  }
}

/**
 * One FedAvgM step: returns the next model and the next state; inputs are not modified.
 *
 * @param current the global model w_t.
 * @param averageUpdate the round's FedAvg update Δ_t (same length).
 */
export function fedAvgMStep(
  current: Float32Array,
  averageUpdate: Float32Array,
  state: ServerMomentumState,
  options: ServerMomentumOptions,
): { next: Float32Array; state: ServerMomentumState } {
  checkServerMomentumOptions(options);
  const n = current.length;
  if (averageUpdate.length !== n) throw new RangeError(`update has ${averageUpdate.length} values, expected ${n}`);
  if (state.velocity !== null && state.velocity.length !== n) {
    throw new RangeError(`momentum state has ${state.velocity.length} values, expected ${n}`);
  }
  const { serverLearningRate: eta, momentum: beta } = options;
  const previous = state.velocity;
  const velocity = new Float32Array(n);
  const next = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const gradient = -averageUpdate[i]!;
    const v = previous === null ? gradient : beta * previous[i]! + gradient;
    velocity[i] = v;
    // Step with the stored float32 velocity, so a run resumed from the persisted state takes the same step.
    next[i] = current[i]! - eta * velocity[i]!;
  }
  return { next, state: { velocity } };
}
