/**
 * Learning benchmark: which strategy to pick on non-IID data.
 *
 *   npm run -s bench:learning -- [--quick] [--rounds 50] [--epochs 10] [--batch-size 64]
 *     [--learning-rate 0.01] [--momentum 0.9] [--clients 10] [--train-count 60000] [--test-count 10000]
 *     [--partitions iid,dir0.5,dir0.1] [--strategies fedavg,fedprox,...] [--strategy-params JSON]
 *     [--backend wasm|cpu] [--throughput-samples 1280 (0: skip)] [--seed 1] [--target 0.85]
 *
 * Fashion-MNIST (Debian's dataset-fashion-mnist, read from its IDX files), 10
 * devices, label skew Dir(0.5), Dir(0.1) (Hsu et al. 2019's partitioner, the
 * demo's) and IID, NIID-Bench's SimpleCNN (Li et al. 2022), every device every
 * round. Defaults are NIID-Bench's protocol (50 rounds, 10 local epochs, batch
 * 64, SGD lr 0.01 momentum 0.9, all 60,000 training images); `--quick` is a
 * CI smoke run (2 rounds, 1 epoch, 600 training and 500 test images: it checks
 * that every strategy runs, it is far too small to learn).
 * Anything smaller than the protocol is reported under `reduction`.
 *
 * Simulated federation, in one process: the devices train with the SDK's
 * `trainLocal` (TF.js, the chosen backend; FedProx's proximal term from the
 * strategy's fit config) and the coordinator's strategies aggregate (the
 * registry's strategy objects: configureFit, Aggregator, state carried across
 * rounds), without gRPC, database or encryption. q-FedAvg runs its pure
 * aggregation function with each device's loss of the global model on its
 * training data (what a device would report).
 *
 * Prints one JSON object on stdout; progress goes to stderr.
 */
import { cpus, loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { evaluateLocal, initTensorflow, trainLocal } from '../packages/client-sdk/src/training/index.js';
import type { LocalDataset, ModelSpec, Tf } from '../packages/client-sdk/src/training/index.js';
import { FASHION_MNIST_DEBIAN_DIR, loadFashionMnist } from '../packages/cli/src/demo/fashion-mnist.js';
import { createSimpleCnn } from '../packages/cli/src/demo/model.js';
import { createSeededRng, partitionDirichlet, partitionIid, selectExamples, shuffle, labelsOf } from '../packages/cli/src/demo/partition.js';
import { createSeededRng as createSelectionRng } from '../packages/privacy/src/rng.js';
import { createStrategyRegistry } from '../packages/server/src/aggregation/registry.js';
import type { Aggregator, FinishOutput, Strategy, StrategyState } from '../packages/server/src/aggregation/strategy.js';
import { qFedAvg, type QFedAvgResult } from '../packages/server/src/aggregation/strategies/qfedavg.js';

/** NIID-Bench's protocol (Li et al. 2022, Section 4; Flower's baselines/niid_bench). */
const PROTOCOL = { rounds: 50, epochs: 10, batchSize: 64, learningRate: 0.01, momentum: 0.9, trainCount: 60_000, testCount: 10_000, clients: 10 };

/** Published reproduction (Flower's baselines/niid_bench, Fashion-MNIST, final test accuracy). */
const REFERENCE = { fedavg: { iid: 0.8923, 'dir0.5': 0.8809 }, fedprox: { iid: 0.8942, 'dir0.5': 0.8815 } };

const ALL_STRATEGIES = ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'qfedavg', 'fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan'];

/**
 * Strategy settings of this benchmark (not tuned per partition). Server
 * optimizers: η = 0.01 with τ = 1e-3 (Reddi et al. 2021 tune η ∈ [10^-2.5, 10^-1] with τ = 10^-3 for
 * CNNs; Flower's default η = 0.1 with τ = 1e-9 moves every weight by about 0.1 in the first round).
 * FedAvgM: β = 0.7 with η = 0.3 (effective step η/(1−β) = 1, Hsu et al. 2019). FedProx μ = 0.01
 * (NIID-Bench). q-FedAvg: q = 0.2 and its step size 0.1 (Flower's defaults). Robust rules: f = 1,
 * Multi-Krum keeps n − f = 9, trimmed mean β = 0.2.
 */
const DEFAULT_PARAMS: Record<string, Record<string, number | boolean>> = {
  fedavg: {},
  fedprox: { proximalMu: 0.01 },
  fedavgm: { serverLearningRate: 0.3, momentum: 0.7 },
  fedadam: { eta: 0.01, tau: 1e-3 },
  fedyogi: { eta: 0.01, tau: 1e-3 },
  fedadagrad: { eta: 0.01, tau: 1e-3 },
  qfedavg: { q: 0.2, learningRate: 0.1 },
  fedmedian: {},
  fedtrimmedavg: { beta: 0.2 },
  krum: { byzantine: 1 },
  multikrum: { byzantine: 1, selected: 9 },
  bulyan: { byzantine: 1 },
};

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    rounds: { type: 'string' },
    epochs: { type: 'string' },
    'batch-size': { type: 'string' },
    'learning-rate': { type: 'string' },
    momentum: { type: 'string' },
    clients: { type: 'string' },
    'train-count': { type: 'string' },
    'test-count': { type: 'string' },
    partitions: { type: 'string', default: 'iid,dir0.5,dir0.1' },
    strategies: { type: 'string', default: ALL_STRATEGIES.join(',') },
    'strategy-params': { type: 'string', default: '{}' },
    backend: { type: 'string', default: 'wasm' },
    'throughput-samples': { type: 'string' },
    seed: { type: 'string', default: '1' },
    target: { type: 'string', default: '0.85' },
  },
});

const quick = values.quick;
const numberArg = (name: keyof typeof values, normal: number, quickValue: number): number => {
  const raw = values[name];
  const value = typeof raw === 'string' ? Number(raw) : quick ? quickValue : normal;
  if (!Number.isFinite(value) || value < 0) throw new RangeError(`--${name} must be a number >= 0, got ${String(raw)}`);
  return value;
};
const config = {
  rounds: numberArg('rounds', PROTOCOL.rounds, 2),
  epochs: numberArg('epochs', PROTOCOL.epochs, 1),
  batchSize: numberArg('batch-size', PROTOCOL.batchSize, PROTOCOL.batchSize),
  learningRate: numberArg('learning-rate', PROTOCOL.learningRate, PROTOCOL.learningRate),
  momentum: numberArg('momentum', PROTOCOL.momentum, PROTOCOL.momentum),
  clients: numberArg('clients', PROTOCOL.clients, PROTOCOL.clients),
  trainCount: numberArg('train-count', PROTOCOL.trainCount, 600),
  testCount: numberArg('test-count', PROTOCOL.testCount, 500),
  throughputSamples: numberArg('throughput-samples', 1280, 320),
  seed: numberArg('seed', 1, 1),
  target: numberArg('target', 0.85, 0.85),
};
const partitions = values.partitions.split(',').filter(Boolean);
const strategyNames = values.strategies.split(',').filter(Boolean);
const paramOverrides = JSON.parse(values['strategy-params']) as Record<string, Record<string, number | boolean>>;
for (const name of strategyNames) if (!ALL_STRATEGIES.includes(name)) throw new RangeError(`unknown strategy ${name} (known: ${ALL_STRATEGIES.join(', ')})`);
for (const p of partitions) if (p !== 'iid' && !/^dir\d+(\.\d+)?$/.test(p)) throw new RangeError(`partition ${p} is not iid or dirALPHA (e.g. dir0.5)`);

const log = (message: string) => process.stderr.write(`bench:learning ${message}\n`);
const startedMs = performance.now();

const { tf, backend } = await initTensorflow({ preferred: values.backend as 'wasm' | 'cpu' });
const full = loadFashionMnist();
const dataRng = createSeededRng(config.seed);
const train = subset(full.train, config.trainCount, dataRng);
const test = subset(full.test, config.testCount, dataRng);
const { spec, weights: initial } = createSimpleCnn(tf, { seed: config.seed });
log(`backend ${backend}; ${train.count} training / ${test.count} test images; ${initial.length} parameters`);

// --throughput-samples 0 skips the measurement (e.g. one process per strategy; measure once apart).
const throughput = config.throughputSamples > 0 ? await measureThroughput(tf, spec, initial, train) : 'skipped';
log(`throughput ${JSON.stringify(throughput)}`);

const registry = createStrategyRegistry();
/** One (partition, strategy) run of the JSON's `results`. */
interface RunResult {
  partition: string;
  strategy: string;
  params: Record<string, number | boolean>;
  accuracyPerRound: number[];
  finalAccuracy: number;
  bestAccuracy: number;
  roundsToTarget: number | null;
  wallSeconds: number;
}
const results: RunResult[] = [];
for (const partition of partitions) {
  const shares = split(partition);
  for (const name of strategyNames) {
    const runStartedMs = performance.now();
    const params = { ...DEFAULT_PARAMS[name], ...paramOverrides[name] };
    const accuracy = await runFederation(name, params, shares, partition);
    const reached = accuracy.findIndex((a) => a >= config.target);
    const entry: RunResult = {
      partition,
      strategy: name,
      params,
      accuracyPerRound: accuracy.map(round4),
      finalAccuracy: round4(accuracy.at(-1) ?? Number.NaN),
      bestAccuracy: round4(Math.max(...accuracy)),
      roundsToTarget: reached === -1 ? null : reached + 1,
      wallSeconds: Math.round((performance.now() - runStartedMs) / 100) / 10,
    };
    log(`${partition} ${name}: ${JSON.stringify(entry.accuracyPerRound)}`);
    results.push(entry);
  }
}

const finalBy = (partition: string, strategy: string) => results.find((r) => r.partition === partition && r.strategy === strategy)?.finalAccuracy;
const dir01 = results.filter((r) => r.partition === 'dir0.1');
const fedavgDir01 = finalBy('dir0.1', 'fedavg');
console.log(
  JSON.stringify({
    bench: 'learning',
    simulated: true,
    simulation: 'in-process federation: SDK trainLocal on each device share, registry strategies aggregate; no gRPC, database or encryption',
    dataset: { name: 'Fashion-MNIST', source: `${FASHION_MNIST_DEBIAN_DIR} (Debian dataset-fashion-mnist, IDX)`, trainExamples: train.count, testExamples: test.count },
    model: { name: 'NIID-Bench SimpleCNN (conv5x5x6, pool, conv5x5x16, pool, 120, 84, 10)', parameters: initial.length },
    backend,
    protocol: { ...PROTOCOL, participation: 1 },
    run: { ...config, participation: 1, quick },
    reduction: {
      reduced: config.rounds < PROTOCOL.rounds || config.epochs < PROTOCOL.epochs || train.count < PROTOCOL.trainCount || test.count < PROTOCOL.testCount,
      roundsFraction: config.rounds / PROTOCOL.rounds,
      epochsFraction: config.epochs / PROTOCOL.epochs,
      trainFraction: train.count / PROTOCOL.trainCount,
      testFraction: test.count / PROTOCOL.testCount,
      // Protocol settings this run changed (besides the fractions above), e.g. a larger step size so a short run learns.
      changedSettings: Object.fromEntries(
        (['batchSize', 'learningRate', 'momentum', 'clients'] as const).filter((k) => config[k] !== PROTOCOL[k]).map((k) => [k, { protocol: PROTOCOL[k], run: config[k] }]),
      ),
    },
    throughputSamplesPerSecond: throughput,
    // The machine's load when the run ended (1, 5, 15 min) and its cores: throughput depends on both.
    machine: { cores: cpus().length, loadAverage: loadavg().map((x) => Math.round(x * 100) / 100) },
    reference: { source: "Flower baselines/niid_bench, Fashion-MNIST, 50 rounds", finalAccuracy: REFERENCE },
    results,
    summary: {
      finalAccuracy: Object.fromEntries(partitions.map((p) => [p, Object.fromEntries(strategyNames.map((s) => [s, finalBy(p, s)]))])),
      roundsToTarget: Object.fromEntries(partitions.map((p) => [p, Object.fromEntries(results.filter((r) => r.partition === p).map((r) => [r.strategy, r.roundsToTarget]))])),
      ...(fedavgDir01 !== undefined && {
        dir01BeatsFedAvg: dir01.filter((r) => r.strategy !== 'fedavg' && r.finalAccuracy > fedavgDir01).map((r) => r.strategy),
      }),
    },
    wallSeconds: Math.round((performance.now() - startedMs) / 1000),
  }),
);

// The CI smoke run fails when a strategy produced no finite model (a full run reports it as a result).
if (quick && results.some((r) => r.accuracyPerRound.length !== config.rounds || !r.accuracyPerRound.every(Number.isFinite))) {
  log('a strategy produced a non-finite model');
  process.exitCode = 1;
}

/** `count` examples drawn at random (seeded), or all of them. */
function subset(data: LocalDataset, count: number, rng: ReturnType<typeof createSeededRng>): LocalDataset {
  if (count >= data.count) return data;
  const order = shuffle(Array.from({ length: data.count }, (_, i) => i), rng);
  return selectExamples(data, order.slice(0, count));
}

/** Device shares of a partition, the same for every strategy (seeded by the partition's name). */
function split(partition: string): LocalDataset[] {
  const rng = createSeededRng(config.seed * 7919 + [...partition].reduce((h, c) => (h * 31 + c.charCodeAt(0)) >>> 0, 0));
  const shares = partition === 'iid' ? partitionIid(train, config.clients, rng) : partitionDirichlet(train, config.clients, Number(partition.slice(3)), rng);
  log(`${partition}: shares ${JSON.stringify(shares.map((s) => s.count))}, dominant label share ${JSON.stringify(shares.map(dominantShare))}`);
  return shares;
}

async function runFederation(name: string, params: Record<string, number | boolean>, shares: LocalDataset[], partition: string): Promise<number[]> {
  const strategy: Strategy | null = name === 'qfedavg' ? null : registry.create({ name, params });
  const clientIds = shares.map((_, k) => `device-${k}`);
  let global = initial;
  let state: StrategyState | null = null;
  const accuracy: number[] = [];
  for (let round = 1; round <= config.rounds; round++) {
    let fitConfig: Readonly<Record<string, number | string | boolean>> = {};
    if (strategy !== null) {
      const plan = strategy.configureFit({
        round,
        available: clientIds,
        selection: { kind: 'count', count: clientIds.length },
        minClients: clientIds.length,
        training: { epochs: config.epochs, batchSize: config.batchSize, learningRate: config.learningRate },
        state,
        rng: createSelectionRng(round),
      });
      if (plan.kind !== 'fit' || plan.clientIds.length !== clientIds.length) throw new Error(`${name} did not select every device: ${JSON.stringify(plan)}`);
      fitConfig = plan.config;
    }
    const proximalMu = typeof fitConfig['proximalMu'] === 'number' ? fitConfig['proximalMu'] : 0;
    const aggregator: Aggregator | null = strategy?.createAggregator({ round, parameterCount: global.length, state }) ?? null;
    const qResults: QFedAvgResult[] = [];
    for (const [k, data] of shares.entries()) {
      // q-FedAvg's F_k(w_t): the loss of the global model on the device's training data, before training.
      const loss = strategy === null ? (await evaluateLocal(tf, { spec, weights: global, data })).loss : 0;
      const result = await trainLocal(tf, {
        spec,
        weights: global,
        data,
        epochs: config.epochs,
        batchSize: config.batchSize,
        learningRate: config.learningRate,
        momentum: config.momentum,
        proximalMu,
        seed: (config.seed * 1_000_003 + round * 1009 + k) >>> 0,
      });
      if (aggregator !== null) aggregator.add({ clientId: clientIds[k]!, exampleCount: result.exampleCount, update: result.delta });
      else qResults.push({ update: result.delta, loss });
    }
    if (aggregator !== null) {
      const out: FinishOutput | null = aggregator.finish({ round, current: global, failures: [], state });
      if (out !== null) [global, state] = [out.parameters, out.state];
    } else {
      global = qFedAvg(global, qResults, { q: Number(params['q']), learningRate: Number(params['learningRate']) }) ?? global;
    }
    const finite = global.every(Number.isFinite);
    const evaluation = finite ? await evaluateLocal(tf, { spec, weights: global, data: test }) : { accuracy: Number.NaN };
    accuracy.push(evaluation.accuracy);
    log(`${partition} ${name} round ${round}/${config.rounds}: accuracy ${round4(evaluation.accuracy)}`);
    if (!finite) break;
  }
  return accuracy;
}

/**
 * Local training speed of the SimpleCNN, one epoch of batch-64 SGD with momentum, per backend
 * available: `--throughput-samples` images on wasm and tfjs-node, a tenth of them (at least 64) on
 * the much slower pure-JS cpu backend.
 */
async function measureThroughput(tf: Tf, spec: ModelSpec, weights: Float32Array, data: LocalDataset) {
  const out: Record<string, number | string> = {};
  const original = tf.getBackend();
  for (const name of ['wasm', 'cpu', 'tensorflow']) {
    if (!(name in tf.engine().registryFactory) || !(await tf.setBackend(name).catch(() => false))) {
      out[name] = name === 'tensorflow' ? 'unavailable (@tensorflow/tfjs-node cannot install here)' : 'unavailable';
      continue;
    }
    await tf.ready();
    const count = Math.min(data.count, name === 'cpu' ? Math.max(64, Math.round(config.throughputSamples / 10)) : config.throughputSamples);
    const sample = selectExamples(data, Array.from({ length: count }, (_, i) => i));
    // One warm-up step compiles kernels; then one timed epoch.
    await trainLocal(tf, { spec, weights, data: selectExamples(sample, [0, 1]), epochs: 1, batchSize: 2, learningRate: 0.01, seed: 1 });
    const result = await trainLocal(tf, { spec, weights, data: sample, epochs: 1, batchSize: 64, learningRate: 0.01, momentum: 0.9, seed: 1 });
    out[name] = Math.round(sample.count / (result.durationMs / 1000));
  }
  await tf.setBackend(original);
  await tf.ready();
  return out;
}

function dominantShare(data: LocalDataset): number {
  const counts = new Array<number>(data.numClasses).fill(0);
  for (const label of labelsOf(data)) counts[label]! += 1;
  return round4(Math.max(...counts) / data.count);
}

function round4(value: number): number {
  return Math.round(value * 10_000) / 10_000;
}
