import { VeilError } from '../../errors.js';
import { sampleClients } from '../fedavg.js';
import { REPORT_TRAINING_LOSS, type Aggregator, type StrategyDefinition } from '../strategy.js';
import { readParams } from './params.js';

/**
 * q-FedAvg (Li, Sanjabi, Beirami & Smith 2020, "Fair Resource Allocation in
 * Federated Learning", ICLR, Algorithm 2 with the Lipschitz estimate of
 * Section 3.3), the q-FFL objective min_w Σ_k p_k F_k^{q+1}(w) / (q+1): a
 * larger q gives devices with a larger loss more weight (fairer accuracy
 * across devices); q = 0 is plain averaging.
 *
 * Each selected device k reports F_k(w_t), the loss of the round's global
 * model on its local training data (measured before it trains), and its
 * update Δ_k = w̄_k − w_t after local SGD with learning rate η_l. With
 * L = 1/η_l and Δw_k = L (w_t − w̄_k) = −L Δ_k:
 *
 *   Δ_k' = F_k^q Δw_k
 *   h_k  = q F_k^{q−1} ‖Δw_k‖² + L F_k^q
 *   w_{t+1} = w_t − Σ_k Δ_k' / Σ_k h_k
 *
 * As in Flower's `qfedavg.py`, 1e-10 is added to each loss so that F^{q−1}
 * stays finite. Unlike Flower (one server-side loss for every device), each
 * device's own loss is used, as in the paper.
 *
 * Needs every device's update norm and loss, so it runs on plaintext tasks
 * only. Example counts are not used (the paper samples devices by p_k).
 */

/** One device's contribution. */
export interface QFedAvgResult {
  /** Δ_k = w̄_k − w_t. */
  update: Float32Array;
  /** F_k(w_t) ≥ 0: the loss of the global model on the device's training data. */
  loss: number;
}

/** Hyper-parameters of {@link qFedAvg}. */
export interface QFedAvgOptions {
  /** Fairness parameter q ≥ 0. */
  q: number;
  /** The devices' local learning rate η_l (> 0); L = 1/η_l. */
  learningRate: number;
}

const LOSS_EPSILON = 1e-10;

/** Checks the hyper-parameters; throws a `RangeError` naming the bad one. */
export function checkQFedAvgOptions(options: QFedAvgOptions): void {
  if (!(options.q >= 0) || !Number.isFinite(options.q)) throw new RangeError(`q must be a finite number >= 0, got ${options.q}`);
  if (!(options.learningRate > 0) || !Number.isFinite(options.learningRate)) {
    throw new RangeError(`learningRate must be a finite number > 0, got ${options.learningRate}`);
  }
}

/**
 * Accumulates a round's results one at a time (Σ_k F_k^q Δ_k and Σ_k h_k):
 * q-FedAvg needs each update's norm and loss but not the updates themselves,
 * so a round holds two running sums, not its updates.
 */
export interface QFedAvgAccumulator {
  add(result: QFedAvgResult): void;
  readonly count: number;
  /** w_{t+1} from w_t = `current`, or null when no result was added (keep the model). */
  finish(current: Float32Array): Float32Array | null;
}

export function createQFedAvgAccumulator(parameterCount: number, options: QFedAvgOptions): QFedAvgAccumulator {
  checkQFedAvgOptions(options);
  const n = parameterCount;
  const lipschitz = 1 / options.learningRate;
  const { q } = options;
  // Σ_k F_k^q Δ_k (the sign of Δw_k is folded in at the end) and Σ_k h_k.
  const weightedSum = new Float64Array(n);
  let hSum = 0;
  let count = 0;
  return {
    add(result) {
      if (result.update.length !== n) throw new RangeError(`update has ${result.update.length} values, expected ${n}`);
      if (!(result.loss >= 0) || !Number.isFinite(result.loss)) {
        throw new RangeError(`loss must be a finite number >= 0, got ${result.loss}`);
      }
      const loss = result.loss + LOSS_EPSILON;
      const lossPowQ = loss ** q;
      let squaredNorm = 0;
      const update = result.update;
      for (let i = 0; i < n; i++) {
        const u = update[i]!;
        squaredNorm += u * u;
        weightedSum[i]! += lossPowQ * u;
      }
      // ‖Δw_k‖² = L² ‖Δ_k‖².
      hSum += q * loss ** (q - 1) * lipschitz * lipschitz * squaredNorm + lipschitz * lossPowQ;
      count++;
    },
    get count() {
      return count;
    },
    finish(current) {
      if (current.length !== n) throw new RangeError(`model has ${current.length} values, expected ${n}`);
      if (count === 0) return null;
      // w − Σ F^q (−L Δ_k) / Σ h = w + L Σ F^q Δ_k / Σ h.
      const scale = lipschitz / hSum;
      const next = new Float32Array(n);
      for (let i = 0; i < n; i++) next[i] = current[i]! + scale * weightedSum[i]!;
      return next;
    },
  };
}

/** The next global model from the round's results, or null when there is none (keep the model). */
export function qFedAvg(current: Float32Array, results: readonly QFedAvgResult[], options: QFedAvgOptions): Float32Array | null {
  const accumulator = createQFedAvgAccumulator(current.length, options);
  for (const result of results) accumulator.add(result);
  return accumulator.finish(current);
}

/**
 * `qfedavg` in the coordinator: parameters `q` (default 0.2) and
 * `learningRate` (the devices' local step η_l, L = 1/η_l; default 0.1), as
 * Flower's QFedAvg (`q_param`, `qffl_learning_rate`). Each round asks its
 * devices for F_k(w_t) through the fit config ({@link REPORT_TRAINING_LOSS});
 * the coordinator refuses an update without it. Needs every update's norm
 * and loss: plaintext tasks only, and not with differential privacy (the
 * losses are not covered by the privacy accounting).
 */
export const qFedAvgDefinition: StrategyDefinition = {
  name: 'qfedavg',
  create(params) {
    const read = readParams('qfedavg', params, ['q', 'learningRate']);
    const options: QFedAvgOptions = {
      q: read.number('q', 0.2, { min: 0 }),
      learningRate: read.number('learningRate', 0.1, { min: 0, exclusiveMin: true }),
    };
    return {
      name: 'qfedavg',
      params: { q: options.q, learningRate: options.learningRate },
      capabilities: { individualUpdates: true, plaintextAggregate: false },
      validate(task) {
        if (task.privacy !== null) {
          throw new VeilError('invalid_argument', 'strategy qfedavg sends each device\'s training loss, which differential privacy does not account for: use it without privacy');
        }
      },
      configureFit: (input) => sampleClients(input, { [REPORT_TRAINING_LOSS]: true }),
      createAggregator({ parameterCount }): Aggregator {
        const accumulator = createQFedAvgAccumulator(parameterCount, options);
        return {
          add(result) {
            if (result.trainingLoss === undefined) throw new RangeError(`strategy qfedavg needs the training loss of ${result.clientId}`);
            accumulator.add({ update: result.update, loss: result.trainingLoss });
          },
          get count() {
            return accumulator.count;
          },
          finish({ current }) {
            const next = accumulator.finish(current);
            return next === null ? null : { parameters: next, state: null };
          },
        };
      },
    };
  },
};
