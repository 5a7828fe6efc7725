import type { LocalDataset } from '@veil/client-sdk';
import { createSeededRng as createPrivacySeededRng, type Rng as PrivacyRng } from '@veil/privacy';

/** A source of uniform random numbers (@veil/privacy's); seed it for reproducible demos and tests. */
export type Rng = Pick<PrivacyRng, 'nextDouble'>;

/**
 * @veil/privacy's seeded generator (xoshiro128**, non-cryptographic: for
 * shuffling, partitioning and initial weights, never for privacy noise), with
 * `next()`, the same as `nextDouble()`, kept for the demo's earlier callers.
 *
 * @param seed any number; only its low 32 bits are used.
 */
export function createSeededRng(seed: number): PrivacyRng & { next(): number } {
  const rng = createPrivacySeededRng(seed);
  return Object.assign(rng, { next: () => rng.nextDouble() });
}

/** In-place Fisher-Yates shuffle. */
export function shuffle<T extends { length: number; [index: number]: unknown }>(values: T, rng: Rng): T {
  for (let i = values.length - 1; i > 0; i--) {
    const j = Math.floor(rng.nextDouble() * (i + 1));
    const tmp = values[i];
    values[i] = values[j];
    values[j] = tmp;
  }
  return values;
}

/** A standard normal sample (Box-Muller). */
function sampleNormal(rng: Rng): number {
  const u1 = 1 - rng.nextDouble(); // (0, 1]: log is finite
  const u2 = rng.nextDouble();
  return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
}

/**
 * A Gamma(shape, 1) sample by Marsaglia & Tsang (2000), "A simple method for
 * generating gamma variables", with the `U^(1/shape)` boost for shape < 1.
 */
export function sampleGamma(shape: number, rng: Rng): number {
  if (!(shape > 0)) throw new RangeError(`gamma shape must be > 0, got ${shape}`);
  if (shape < 1) return sampleGamma(shape + 1, rng) * Math.pow(1 - rng.nextDouble(), 1 / shape);
  const d = shape - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    const x = sampleNormal(rng);
    const base = 1 + c * x;
    if (base <= 0) continue;
    const v = base * base * base;
    const u = 1 - rng.nextDouble();
    if (u < 1 - 0.0331 * x ** 4) return d * v;
    if (Math.log(u) < 0.5 * x * x + d * (1 - v + Math.log(v))) return d * v;
  }
}

/** A sample of the symmetric Dirichlet(alpha, …, alpha) distribution over `size` outcomes. */
export function sampleDirichlet(alpha: number, size: number, rng: Rng): number[] {
  const draws = Array.from({ length: size }, () => sampleGamma(alpha, rng));
  const total = draws.reduce((a, b) => a + b, 0);
  if (total > 0 && Number.isFinite(total)) return draws.map((g) => g / total);
  // Every gamma draw underflowed (tiny alpha): the limit puts all mass on one outcome.
  const winner = Math.floor(rng.nextDouble() * size);
  return draws.map((_, i) => (i === winner ? 1 : 0));
}

/** The examples `indices` of `data`, copied into a new dataset (in that order). */
export function selectExamples(data: LocalDataset, indices: ArrayLike<number>): LocalDataset {
  const inputSize = data.inputShape.reduce((a, b) => a * b, 1);
  const xs = new Float32Array(indices.length * inputSize);
  const ys = new Float32Array(indices.length * data.numClasses);
  for (let row = 0; row < indices.length; row++) {
    const example = indices[row]!;
    xs.set(data.xs.subarray(example * inputSize, (example + 1) * inputSize), row * inputSize);
    ys.set(data.ys.subarray(example * data.numClasses, (example + 1) * data.numClasses), row * data.numClasses);
  }
  return { xs, ys, count: indices.length, inputShape: [...data.inputShape], numClasses: data.numClasses };
}

/** Label (arg-max of the one-hot row) of every example. */
export function labelsOf(data: LocalDataset): Int32Array {
  const labels = new Int32Array(data.count);
  for (let i = 0; i < data.count; i++) {
    let best = 0;
    for (let c = 1; c < data.numClasses; c++) {
      if (data.ys[i * data.numClasses + c]! > data.ys[i * data.numClasses + best]!) best = c;
    }
    labels[i] = best;
  }
  return labels;
}

/**
 * Splits `data` into `clients` shares of a random order, sizes differing by at
 * most one (IID). Every example goes to exactly one client.
 */
export function partitionIid(data: LocalDataset, clients: number, rng: Rng): LocalDataset[] {
  assertClients(data, clients);
  const order = shuffle(Array.from({ length: data.count }, (_, i) => i), rng);
  const shares: LocalDataset[] = [];
  for (let k = 0; k < clients; k++) {
    const start = Math.floor((k * data.count) / clients);
    const end = Math.floor(((k + 1) * data.count) / clients);
    shares.push(selectExamples(data, order.slice(start, end)));
  }
  return shares;
}

/** Options of {@link partitionDirichlet}. */
export interface PartitionDirichletOptions {
  /**
   * Smallest share a client may get. Default `min(10, floor(count / clients))`.
   * Draws are repeated (up to 100 times) until every client has this many;
   * after that, examples move from the largest shares to the smallest.
   */
  minExamplesPerClient?: number;
}

/**
 * Non-IID label-skew split (Hsu, Qi & Brown 2019, "Measuring the effects of
 * non-identical data distribution for federated visual classification"):
 * for each class, proportions q ~ Dir(alpha) over the clients, and that
 * class's examples are dealt out in those proportions. Small `alpha` (e.g.
 * 0.1) gives each client few dominant labels; large `alpha` tends to IID.
 * Every example goes to exactly one client; deterministic for a given `rng` state.
 */
export function partitionDirichlet(
  data: LocalDataset,
  clients: number,
  alpha: number,
  rng: Rng,
  options: PartitionDirichletOptions = {},
): LocalDataset[] {
  assertClients(data, clients);
  if (!(alpha > 0) || !Number.isFinite(alpha)) throw new RangeError(`alpha must be a finite number > 0, got ${alpha}`);
  const minimum = options.minExamplesPerClient ?? Math.min(10, Math.floor(data.count / clients));
  if (!Number.isInteger(minimum) || minimum < 0 || minimum * clients > data.count) {
    throw new RangeError(`minExamplesPerClient ${minimum} is impossible for ${data.count} examples and ${clients} clients`);
  }
  const labels = labelsOf(data);
  const byClass: number[][] = Array.from({ length: data.numClasses }, () => []);
  for (let i = 0; i < data.count; i++) byClass[labels[i]!]!.push(i);

  let buckets: number[][] = [];
  for (let attempt = 0; attempt < 100; attempt++) {
    buckets = Array.from({ length: clients }, () => []);
    for (const members of byClass) {
      if (members.length === 0) continue;
      shuffle(members, rng);
      const proportions = sampleDirichlet(alpha, clients, rng);
      let cumulative = 0;
      let start = 0;
      for (let k = 0; k < clients; k++) {
        cumulative += proportions[k]!;
        const end = k === clients - 1 ? members.length : Math.min(members.length, Math.round(cumulative * members.length));
        buckets[k]!.push(...members.slice(start, end));
        start = Math.max(start, end);
      }
    }
    if (Math.min(...buckets.map((b) => b.length)) >= minimum) break;
  }
  // Rarely needed (tiny alpha, many clients): top up small shares from the largest.
  for (;;) {
    const smallest = buckets.reduce((a, b) => (b.length < a.length ? b : a));
    if (smallest.length >= minimum) break;
    const largest = buckets.reduce((a, b) => (b.length > a.length ? b : a));
    smallest.push(largest.splice(Math.floor(rng.nextDouble() * largest.length), 1)[0]!);
  }
  return buckets.map((bucket) => selectExamples(data, shuffle(bucket, rng)));
}

function assertClients(data: LocalDataset, clients: number): void {
  if (!Number.isInteger(clients) || clients < 1) throw new RangeError(`clients must be an integer >= 1, got ${clients}`);
  if (clients > data.count) throw new RangeError(`cannot split ${data.count} examples among ${clients} clients`);
}
