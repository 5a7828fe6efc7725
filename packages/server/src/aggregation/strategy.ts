import type { ClientSelection, TrainingSettings } from '../rounds/model.js';

/** Uniform [0,1) source; injected so selection is reproducible in tests. */
export interface Rng {
  next(): number;
}

/** One client's training result: the weighted update it sent. */
export interface FitResult {
  clientId: string;
  /** Local examples, FedAvg's weight n_k. */
  exampleCount: number;
  /** Update Δ_k = w_k − w_global, flat, in weight-spec order. */
  update: Float32Array;
}

/** A selected client that produced no result (dropped, late, or rejected). */
export interface FitFailure {
  clientId: string;
  reason: string;
}

export interface ConfigureFitInput {
  round: number;
  /** Ids of the clients available now. */
  available: readonly string[];
  selection: ClientSelection;
  training: TrainingSettings;
  rng: Rng;
}

export interface FitInstructions {
  clientIds: string[];
  config: TrainingSettings;
}

/**
 * Folds results into a round's aggregate as they arrive, so a round never
 * holds every update in memory.
 */
export interface Aggregator {
  /**
   * Folds one result in. `result.update` is only valid during the call: the engine may reuse its
   * memory for the next update, so an aggregator that needs the values later copies them.
   */
  add(result: FitResult): void;
  /** Results folded so far. */
  readonly count: number;
  /**
   * Flower's `aggregate_fit`: returns the new global parameters from the current
   * ones, or `null` to keep the model (no results).
   */
  finish(current: Float32Array, failures: readonly FitFailure[]): Float32Array | null;
}

/**
 * A federated-learning strategy, shaped like Flower's `Strategy`
 * (adap/flower `strategy/strategy.py`): it configures a round and aggregates
 * it; the round engine, not the strategy, runs rounds. Results and failures
 * are passed separately. FedProx, FedAdam and DP/secure-aggregation wrappers
 * implement the same interface.
 */
export interface Strategy {
  readonly name: string;
  /** Flower's `configure_fit`: which clients train this round, with what settings. */
  configureFit(input: ConfigureFitInput): FitInstructions;
  /** Starts the incremental aggregation of one round over `parameterCount` values. */
  createAggregator(input: { round: number; parameterCount: number }): Aggregator;
}
