/**
 * Byzantine-robust aggregation rules over client updates Δ_k = w_k − w_t.
 * All of them are translation invariant, so applying them to updates and
 * adding the result to w_t equals applying them to the local models (as
 * Flower's `aggregate.py` does) up to float rounding. Example counts are
 * ignored: a Byzantine client could lie about them.
 *
 * They need every update of the round at once (n × parameters float32
 * values), so they run on plaintext tasks only, with a bounded buffer
 * ({@link createUpdateBuffer}).
 */

/** Coordinate-wise median (Yin, Chen, Ramchandran & Bartlett 2018, "Byzantine-Robust Distributed
 * Learning: Towards Optimal Statistical Rates"; Flower's `FedMedian`). For an even count, the mean
 * of the two middle values (numpy's `median`). */
export function coordinateMedian(updates: readonly Float32Array[]): Float32Array {
  const n = checkUpdates(updates, 1);
  const count = updates.length;
  const column = new Float64Array(count);
  const result = new Float32Array(n);
  const mid = count >> 1;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < count; k++) column[k] = updates[k]![i]!;
    column.sort();
    result[i] = count % 2 === 1 ? column[mid]! : (column[mid - 1]! + column[mid]!) / 2;
  }
  return result;
}

/**
 * Coordinate-wise trimmed mean (Yin et al. 2018; Flower's `FedTrimmedAvg`, scipy's `trim_mean`):
 * per coordinate, drop the ⌊β·n⌋ smallest and ⌊β·n⌋ largest values and average the rest.
 *
 * @param beta fraction cut from each tail, in [0, 0.5).
 */
export function trimmedMean(updates: readonly Float32Array[], beta: number): Float32Array {
  if (!(beta >= 0 && beta < 0.5)) throw new RangeError(`beta must be in [0, 0.5), got ${beta}`);
  const n = checkUpdates(updates, 1);
  const count = updates.length;
  const cut = Math.floor(beta * count);
  const kept = count - 2 * cut;
  const column = new Float64Array(count);
  const result = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < count; k++) column[k] = updates[k]![i]!;
    column.sort();
    let sum = 0;
    for (let k = cut; k < count - cut; k++) sum += column[k]!;
    result[i] = sum / kept;
  }
  return result;
}

/** Squared Euclidean distances between every pair of updates (float64, symmetric, zero diagonal). */
export function pairwiseSquaredDistances(updates: readonly Float32Array[]): Float64Array[] {
  checkUpdates(updates, 1);
  const count = updates.length;
  const distances = Array.from({ length: count }, () => new Float64Array(count));
  for (let a = 0; a < count; a++) {
    const x = updates[a]!;
    for (let b = a + 1; b < count; b++) {
      const y = updates[b]!;
      let sum = 0;
      for (let i = 0; i < x.length; i++) {
        const d = x[i]! - y[i]!;
        sum += d * d;
      }
      distances[a]![b] = sum;
      distances[b]![a] = sum;
    }
  }
  return distances;
}

/** The smallest count Krum accepts for `byzantine` faulty clients: n ≥ 2f + 3 (Blanchard et al. 2017, Prop. 1). */
export function krumMinimumClients(byzantine: number): number {
  return 2 * byzantine + 3;
}

/**
 * Krum scores (Blanchard, El Mhamdi, Guerraoui & Stainer 2017, "Machine Learning with
 * Adversaries: Byzantine Tolerant Gradient Descent", NeurIPS, Section 4): the score of update i
 * is the sum of its squared distances to its n − f − 2 nearest other updates.
 *
 * @param byzantine f, the number of Byzantine clients tolerated; needs n ≥ 2f + 3.
 */
export function krumScores(updates: readonly Float32Array[], byzantine: number): Float64Array {
  checkByzantine(byzantine);
  const count = updates.length;
  if (count < krumMinimumClients(byzantine)) {
    throw new RangeError(`Krum with f = ${byzantine} needs at least ${krumMinimumClients(byzantine)} updates, got ${count}`);
  }
  const members = Array.from({ length: count }, (_, k) => k);
  return scoresAmong(pairwiseSquaredDistances(updates), members, count - byzantine - 2);
}

/** Krum scores of `members` (indices into `distances`) counting their `neighbours` nearest other members. */
function scoresAmong(distances: readonly Float64Array[], members: readonly number[], neighbours: number): Float64Array {
  const scores = new Float64Array(members.length);
  const others = new Float64Array(members.length - 1);
  members.forEach((a, position) => {
    let j = 0;
    for (const b of members) if (b !== a) others[j++] = distances[a]![b]!;
    others.sort();
    let score = 0;
    for (let k = 0; k < neighbours; k++) score += others[k]!;
    scores[position] = score;
  });
  return scores;
}

/** Position of the lowest score (the lower position on a tie). */
function argMin(scores: Float64Array): number {
  let best = 0;
  for (let k = 1; k < scores.length; k++) if (scores[k]! < scores[best]!) best = k;
  return best;
}

/**
 * Multi-Krum (Blanchard et al. 2017, Section 4, "Multi-Krum"): the indices of the `selected`
 * updates with the lowest Krum scores, best first (ties broken by the lower index). `selected` = 1
 * is Krum.
 */
export function multiKrumSelect(updates: readonly Float32Array[], byzantine: number, selected: number): number[] {
  if (!Number.isInteger(selected) || selected < 1 || selected > updates.length) {
    throw new RangeError(`selected must be an integer in [1, ${updates.length}], got ${selected}`);
  }
  const scores = krumScores(updates, byzantine);
  const order = Array.from(scores.keys()).sort((a, b) => scores[a]! - scores[b]! || a - b);
  return order.slice(0, selected);
}

/**
 * Multi-Krum's update: the unweighted mean of the `selected` best-scored updates (Blanchard et al.
 * 2017); `selected` = 1 returns Krum's chosen update itself. (Flower's MultiKrum weights the mean by
 * example counts, which a Byzantine client controls; the paper's mean is unweighted.)
 */
export function multiKrum(updates: readonly Float32Array[], byzantine: number, selected: number): Float32Array {
  const chosen = multiKrumSelect(updates, byzantine, selected);
  return mean(chosen.map((k) => updates[k]!));
}

/** The smallest count Bulyan accepts: n ≥ 4f + 3 (El Mhamdi, Guerraoui & Rouault 2018). */
export function bulyanMinimumClients(byzantine: number): number {
  return 4 * byzantine + 3;
}

/**
 * Bulyan (El Mhamdi, Guerraoui & Rouault 2018, "The Hidden Vulnerability of Distributed Learning
 * in Byzantium", ICML, Section 4) on top of Krum: θ = n − 2f updates are chosen one at a time by
 * Krum over those not yet chosen; then per coordinate, the β = θ − 2f values closest to the
 * coordinate's median (over the θ chosen) are averaged. Needs n ≥ 4f + 3.
 */
export function bulyan(updates: readonly Float32Array[], byzantine: number): Float32Array {
  checkByzantine(byzantine);
  const n = checkUpdates(updates, 1);
  const count = updates.length;
  if (count < bulyanMinimumClients(byzantine)) {
    throw new RangeError(`Bulyan with f = ${byzantine} needs at least ${bulyanMinimumClients(byzantine)} updates, got ${count}`);
  }
  const theta = count - 2 * byzantine;
  const beta = theta - 2 * byzantine;
  const distances = pairwiseSquaredDistances(updates);
  const remaining = Array.from({ length: count }, (_, k) => k);
  const chosen: Float32Array[] = [];
  while (chosen.length < theta) {
    // Krum over the updates not chosen yet. The set shrinks below 2f + 3 in the last iterations;
    // then each score counts max(1, r − f − 2) neighbours, as Flower's aggregate_krum does.
    const neighbours = Math.max(1, remaining.length - byzantine - 2);
    const best = remaining.length === 1 ? 0 : argMin(scoresAmong(distances, remaining, neighbours));
    chosen.push(updates[remaining[best]!]!);
    remaining.splice(best, 1);
  }
  const column = new Float64Array(theta);
  const distance = new Float64Array(theta);
  const order = new Uint32Array(theta);
  const result = new Float32Array(n);
  const mid = theta >> 1;
  for (let i = 0; i < n; i++) {
    for (let k = 0; k < theta; k++) column[k] = chosen[k]![i]!;
    const sorted = Float64Array.from(column).sort();
    const median = theta % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
    for (let k = 0; k < theta; k++) {
      distance[k] = Math.abs(column[k]! - median);
      order[k] = k;
    }
    order.sort((a, b) => distance[a]! - distance[b]! || a - b);
    let sum = 0;
    for (let k = 0; k < beta; k++) sum += column[order[k]!]!;
    result[i] = sum / beta;
  }
  return result;
}

/** Unweighted mean of equally long updates. */
export function mean(updates: readonly Float32Array[]): Float32Array {
  const n = checkUpdates(updates, 1);
  const sum = new Float64Array(n);
  for (const update of updates) for (let i = 0; i < n; i++) sum[i]! += update[i]!;
  const result = new Float32Array(n);
  for (let i = 0; i < n; i++) result[i] = sum[i]! / updates.length;
  return result;
}

/** Options of {@link createUpdateBuffer}. */
export interface UpdateBufferOptions {
  /** Values per update. */
  parameterCount: number;
  /** Most bytes the buffered updates may take (float32: 4 bytes per value). */
  maxBytes: number;
}

/** Holds copies of a round's updates for the rules above, refusing to grow past a byte bound. */
export interface UpdateBuffer {
  /** Copies `update` in; throws a `RangeError` when the bound would be exceeded. */
  add(update: Float32Array): void;
  readonly updates: readonly Float32Array[];
  /** Bytes held. */
  readonly bytes: number;
}

/** The most updates of `parameterCount` values that fit in `maxBytes`. */
export function maxBufferedUpdates(parameterCount: number, maxBytes: number): number {
  return Math.floor(maxBytes / (4 * parameterCount));
}

/** A bounded buffer of update copies. */
export function createUpdateBuffer(options: UpdateBufferOptions): UpdateBuffer {
  const { parameterCount, maxBytes } = options;
  if (!Number.isInteger(parameterCount) || parameterCount < 1) {
    throw new RangeError(`parameterCount must be an integer >= 1, got ${parameterCount}`);
  }
  if (!(maxBytes > 0)) throw new RangeError(`maxBytes must be > 0, got ${maxBytes}`);
  const limit = maxBufferedUpdates(parameterCount, maxBytes);
  const updates: Float32Array[] = [];
  return {
    add(update) {
      if (update.length !== parameterCount) {
        throw new RangeError(`update has ${update.length} values, expected ${parameterCount}`);
      }
      if (updates.length >= limit) {
        throw new RangeError(
          `robust aggregation holds at most ${limit} updates of ${parameterCount} values in ${maxBytes} bytes`,
        );
      }
      updates.push(update.slice());
    },
    get updates() {
      return updates;
    },
    get bytes() {
      return updates.length * parameterCount * 4;
    },
  };
}

function checkUpdates(updates: readonly Float32Array[], minimum: number): number {
  if (updates.length < minimum) throw new RangeError(`needs at least ${minimum} update(s), got ${updates.length}`);
  const n = updates[0]!.length;
  for (const update of updates) {
    if (update.length !== n) throw new RangeError(`updates differ in length: ${update.length} and ${n}`);
  }
  return n;
}

function checkByzantine(byzantine: number): void {
  if (!Number.isInteger(byzantine) || byzantine < 0) throw new RangeError(`byzantine must be an integer >= 0, got ${byzantine}`);
}
