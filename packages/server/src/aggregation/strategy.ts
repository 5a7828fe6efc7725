/**
 * The Strategy interface: how a federated-learning algorithm plugs into the
 * coordinator, shaped like Flower's `Strategy` (adap/flower,
 * `framework/py/flwr/server/strategy/strategy.py`). A strategy
 *
 * 1. **configures** each round (`configureFit`): which of the available
 *    devices train, and a `config` map that reaches each selected device with
 *    its assignment (e.g. FedProx's `proximalMu`);
 * 2. **aggregates** it (`createAggregator`): an {@link Aggregator} folds the
 *    results one at a time as they are accepted (streaming: a round never holds
 *    every update in memory) and `finish` turns the results and the failures
 *    (passed separately) into the next model, or keeps the model;
 * 3. may carry **state across rounds** ({@link StrategyState}, e.g. a server
 *    optimizer's moments): `finish` receives the state that came with the
 *    current model and returns the state that goes with the next one; the
 *    round loop persists it durably with the model version it belongs to, so
 *    a restart resumes with exactly the state of the current model;
 * 4. declares what it needs ({@link StrategyCapabilities}) and checks the task
 *    it is asked to run (`validate`), so a task it cannot serve is refused at
 *    creation with a clear error — e.g. a strategy that reads individual
 *    updates (median, Krum) for an encrypted task, where the coordinator only
 *    ever holds the homomorphic sum.
 *
 * The round loop, not the strategy, runs rounds (deadlines, persistence,
 * recovery). Differential privacy's Poisson selection and encryption are
 * wrappers around a strategy (`round-strategy.ts`), not branches in the loop.
 * A strategy is a pure, synchronous object: randomness comes in through
 * {@link Rng}, time never matters to it, and it performs no I/O.
 *
 * Adding a strategy: implement {@link StrategyDefinition} (its `create`
 * validates the parameters a task gives, e.g. `{ name: 'fedadam', eta: 0.01 }`)
 * and register it in `registry.ts`. Nothing in `rounds/` changes.
 */
import type { Rng } from '@veil/privacy';
import type { ClientSelection, TrainingSettings } from '../rounds/model.js';

/**
 * Randomness for selection: @veil/privacy's one `Rng` (`nextDouble()` is
 * uniform in [0, 1)); a CSPRNG in production (`createCryptoRng`), a seeded
 * one in tests (`createSeededRng`).
 */
export type { Rng };

/** A value of a fit config map or of a strategy's parameters (Flower's `Scalar`, without bytes). */
export type ConfigValue = number | string | boolean;

/**
 * Per-round settings a strategy sends to the selected devices, besides the
 * task's {@link TrainingSettings} (Flower's `FitIns.config`). Keys are
 * 1-64 characters of `[A-Za-z0-9_.-]`; numbers are finite. The device's
 * training code receives it as `assignment.config`.
 */
export type FitConfig = Readonly<Record<string, ConfigValue>>;

/**
 * Fit config key (value `true`) by which a round asks its devices for
 * F_k(w_t), the round model's loss on their training data before training;
 * the SDK then sends `training_loss` in the update header, and the
 * coordinator refuses an update of that round without it (q-FedAvg).
 */
export const REPORT_TRAINING_LOSS = 'reportTrainingLoss';

/** One client's training result: the weighted update it sent. */
export interface FitResult {
  clientId: string;
  /** Local examples, FedAvg's weight n_k (a positive integer). */
  exampleCount: number;
  /**
   * Update Δ_k = w_k − w_global, flat, in weight-spec order. Only valid during
   * {@link Aggregator.add}: the loop may reuse its memory for the next update,
   * so an aggregator that needs the values later copies them.
   */
  update: Float32Array;
  /**
   * F_k(w_t): the loss of the round's global model on the client's training
   * data, before training, when the round asked for it (fit config
   * `reportTrainingLoss`, e.g. q-FedAvg); absent otherwise.
   */
  trainingLoss?: number;
}

/** A selected client that produced no result (dropped, late, or rejected). */
export interface FitFailure {
  clientId: string;
  reason: string;
}

/**
 * State a strategy carries from one round to the next (e.g. FedAdam's first
 * and second moments m_t, v_t and its step t). The loop stores it with the
 * model version `finish` produced and hands it back, unchanged, to the next
 * round's `configureFit` and `createAggregator`; `null` before the first
 * round that produced state. Treat it as immutable: return new arrays.
 */
export interface StrategyState {
  /** Named numbers, e.g. `{ step: 12 }`. Finite. */
  readonly scalars: Readonly<Record<string, number>>;
  /** Named vectors, e.g. `{ m: Float32Array(parameterCount) }`. Finite values. */
  readonly vectors: Readonly<Record<string, Float32Array>>;
}

/** What a strategy needs to see of a round; checked against the task at creation. */
export interface StrategyCapabilities {
  /**
   * Reads each update on its own (median, trimmed mean, Krum, Bulyan). Only
   * plaintext tasks hold individual updates: refused for encrypted tasks.
   */
  readonly individualUpdates: boolean;
  /**
   * Computes the next model on the coordinator from the aggregate in the
   * clear (server optimizers: FedAvgM, FedAdam, ...; any {@link StrategyState}).
   * A committee task's coordinator decrypts the round's average, so it runs
   * there on that average; a shared-key task's coordinator only holds the
   * encrypted sum, which key holders decrypt and apply themselves: refused
   * for shared-key tasks.
   */
  readonly plaintextAggregate: boolean;
}

/** The task a strategy is asked to run, as `validate` sees it. */
export interface StrategyTaskContext {
  /** Values in the model (and in every plaintext update). */
  parameterCount: number;
  /** Updates are encrypted: the coordinator never holds an individual update. */
  encrypted: boolean;
  /**
   * With `encrypted`: committee aggregation (issue 11), where the coordinator decrypts the
   * round's average with the custodians' share sums; otherwise (shared-key BFV) it holds only the
   * homomorphic sum. Default false.
   */
  committee?: boolean;
  /** Differential privacy of the task, or null: `local` (devices add noise) or `distributed` (noise in the encrypted sum). */
  privacy: 'local' | 'distributed' | null;
  selection: ClientSelection;
  /** Fewest results a round may close with. */
  minClients: number;
}

export interface ConfigureFitInput {
  /** Round number, from 1. */
  round: number;
  /** Ids of the devices available now (polling, or seen within the presence TTL), in no particular order. */
  available: readonly string[];
  /** The task's selection rule (count, fraction; `poisson` only reaches the DP wrapper). */
  selection: ClientSelection;
  /** Fewest participants the round may start with. */
  minClients: number;
  /** The task's local training settings (sent with every assignment). */
  training: TrainingSettings;
  /** State that came with the current model, or null. */
  state: StrategyState | null;
  rng: Rng;
}

/**
 * What `configureFit` decides (Flower's list of `(client, FitIns)`, with the
 * two outcomes a durable loop needs spelled out):
 * - `fit`: these devices train now, each receiving `config`;
 * - `wait`: too few devices yet; the loop asks again when presence changes;
 * - `fail`: the round fails now without training (e.g. a Poisson sample
 *   outside its bounds: the accountant forbids re-drawing), and the next
 *   round opens.
 */
export type FitPlan =
  | { kind: 'fit'; clientIds: readonly string[]; config: FitConfig }
  | { kind: 'wait'; reason: string }
  | { kind: 'fail'; reason: string };

export interface AggregatorInput {
  round: number;
  /** Values per update and in the model. */
  parameterCount: number;
  /** State that came with the current model, or null. */
  state: StrategyState | null;
}

export interface FinishInput {
  round: number;
  /** The current global model w_t (do not modify). */
  current: Float32Array;
  /** Selected devices without a result, separately from the results (Flower's `failures`). */
  failures: readonly FitFailure[];
  /** State that came with `current`, or null. */
  state: StrategyState | null;
}

/** The next model and the state that goes with it. */
export interface FinishOutput {
  /**
   * w_{t+1}: `parameterCount` finite values (the loop refuses anything else and fails the round).
   * Given away: its memory becomes the stored model's bytes, so the strategy never modifies it afterwards.
   */
  parameters: Float32Array;
  /** State stored with w_{t+1}; null for a stateless strategy. */
  state: StrategyState | null;
}

/**
 * Folds results into a round's aggregate as they are accepted, so a round
 * never needs every update in memory (a strategy that must see them all,
 * e.g. Krum, copies what it needs in `add`).
 */
export interface Aggregator {
  /**
   * Folds one result in. Throws a `RangeError` for a result of the wrong shape
   * (the loop has validated length and finiteness before, so this means a bug).
   */
  add(result: FitResult): void;
  /** Results folded so far. */
  readonly count: number;
  /**
   * Flower's `aggregate_fit`: the next model and its state from the current
   * ones, or `null` to keep the model and its state (no results).
   */
  finish(input: FinishInput): FinishOutput | null;
}

/**
 * A federated-learning strategy: configures a round and aggregates it. Made
 * by a {@link StrategyDefinition} from validated parameters.
 */
export interface Strategy {
  /** Registered name, e.g. `fedavg`; reported in task settings and round history. */
  readonly name: string;
  /** The parameters it was made with, defaults resolved (stored with the task; `create(params)` makes it again). */
  readonly params: StrategyParams;
  readonly capabilities: StrategyCapabilities;
  /**
   * Refuses a task this strategy cannot run (beyond what `capabilities`
   * already refuse), throwing `VeilError('invalid_argument', ...)` that names
   * the setting, e.g. Krum needs `clientsPerRound > 2f + 2`. Called at task
   * creation only. Optional.
   */
  validate?(task: StrategyTaskContext): void;
  /** Flower's `configure_fit`: which devices train this round, with what config. */
  configureFit(input: ConfigureFitInput): FitPlan;
  /** Starts the incremental aggregation of one round. */
  createAggregator(input: AggregatorInput): Aggregator;
}

/** A strategy's parameters as a task stores them (`{ name, ...params }` at creation). */
export type StrategyParams = Readonly<Record<string, ConfigValue>>;

/** How a task names its strategy (`strategy: { name: 'fedadam', eta: 0.01 }` at creation). */
export interface StrategySpec {
  name: string;
  params: StrategyParams;
}

/** A registered strategy: its name and a factory that validates parameters. */
export interface StrategyDefinition {
  readonly name: string;
  /**
   * Makes the strategy from a task's parameters (without `name`), resolving
   * defaults. Throws `VeilError('invalid_argument', ...)` naming the bad
   * parameter (unknown keys included), so a bad task is never stored.
   */
  create(params: Readonly<Record<string, unknown>>): Strategy;
}
