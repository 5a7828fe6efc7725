/**
 * Model export benchmark: ONNX float32 / float16 / int8 (federated static calibration, and dynamic)
 * for the demo MLP and NIID-Bench's SimpleCNN on MNIST digits.
 *
 *   npm run -s bench:export [-- --devices 10 --mlp-epochs 3 --cnn-epochs 2 --cnn-train-examples 2000 --latency-runs 2000 --only mlp,cnn --cache-dir DIR --calibration coordinator|simulated]
 *
 * --cache-dir keeps the trained weights (per model and training settings) and reuses them on the next run.
 *
 * --calibration coordinator (the default): the two calibration rounds run through a real
 * coordinator (`startCoordinator` of @veil/server on loopback, port 0: its embedded PGlite database
 * in a temporary directory, or the PostgreSQL of DATABASE_URL when set; gRPC to the devices), with
 * `--devices` SDK clients (`createClient`) in this process. The task is a plaintext one created with
 * the trained weights, `calibration: true` and one training round; in that round every device trains
 * on one digit and an app middleware replaces its update by zeros, so the round's FedAvg keeps the
 * trained model bit for bit (checked), and the coordinator's calibration rounds (range, histogram:
 * the devices' reports summed by its FedAvg, intake-checked as frequencies) calibrate exactly the
 * model the other figures measure. The ranges are read from GET /v1/tasks/:id/calibration (its
 * 99.99th percentile) and, for KL and min/max, chosen from the same aggregated histogram.
 * --calibration simulated: the rounds are simulated in this process instead, every report
 * BFV-encrypted and summed (see below).
 *
 * Prints exactly one JSON object on stdout; progress goes to stderr.
 *
 * Per model: trains it centrally on the 8,000 training digits of npm `mnist` (the demo's split;
 * the MLP with plain SGD on the wasm backend as the demo's devices run it, the CNN with SGD +
 * momentum 0.9 as NIID-Bench does, on the cpu backend since wasm has no convolution gradients; the
 * cpu backend's convolution gradients cost ~60 ms of CPU per digit, so the CNN trains on the first
 * `--cnn-train-examples` training digits only); splits the training digits IID over
 * `--devices` simulated devices; runs the two federated calibration rounds of @veil/export (range,
 * then histogram): every device computes its statistics vector with the SDK's
 * computeCalibrationStatistics, encrypts it with BFV (@veil/crypto, the federation's update path,
 * weight = its example count, capped), the coordinator sums the ciphertexts, a key holder decrypts
 * the mean; the ranges are chosen by percentile 99.99 (the default), KL and min/max. Then exports
 * float32, float16, int8 static (each range method) and int8 dynamic, and measures with
 * onnxruntime-node on the 2,000 held-out digits: accuracy, file bytes, and inference time per
 * sample on one core (intraOpNumThreads = interOpNumThreads = 1; batch 1, median of
 * `--latency-runs` runs after warm-up, and batch 100).
 *
 * Needs the packages built: `npx tsc -b packages/cli`.
 */
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as ort from 'onnxruntime-node';
import { sessionAccuracy } from '../packages/export/test/onnx-accuracy.js';
import {
  computeCalibrationStatistics,
  createClient,
  evaluateLocal,
  exportModelOnnx,
  initTensorflow,
  taskModelBodyFromSpec,
  trainLocal,
  type LocalDataset,
  type ModelSpec,
  type RoundReport,
  type Tf,
  type UpdateMiddleware,
} from '@veil/client-sdk';
import { createLogger, loadConfig, startCoordinator, type Coordinator } from '@veil/server';
import { createMnistMlp, createSeededRng, createSimpleCnn, loadMnist, partitionIid } from '@veil/cli';
import { createCiphertextAccumulator, createHeContext, createSumDecryptor, createUpdateEncryptor, generateKeyBundle, capWeight } from '@veil/crypto';
import {
  calibrationPoints,
  chooseActivationRanges,
  parseModel,
  planHistogramRound,
  planRangeRound,
  statisticsLength,
  type ActivationRanges,
  type CalibrationPlan,
  type RangeMethod,
} from '@veil/export';

const { values: args } = parseArgs({
  options: {
    devices: { type: 'string', default: '10' },
    'mlp-epochs': { type: 'string', default: '3' },
    'cnn-epochs': { type: 'string', default: '2' },
    'cnn-train-examples': { type: 'string', default: '2000' },
    'cache-dir': { type: 'string' },
    'latency-runs': { type: 'string', default: '2000' },
    only: { type: 'string', default: 'mlp,cnn' },
    calibration: { type: 'string', default: 'coordinator' },
  },
});
const CALIBRATION_PATH = args.calibration;
if (CALIBRATION_PATH !== 'coordinator' && CALIBRATION_PATH !== 'simulated') throw new Error('--calibration must be coordinator or simulated');
const DEVICES = Number(args.devices);
const LATENCY_RUNS = Number(args['latency-runs']);
const only = new Set(args.only.split(','));
const log = (message: string) => process.stderr.write(`[bench:export] ${message}\n`);
const r4 = (x: number) => Math.round(x * 1e4) / 1e4;

const { tf, backend } = await initTensorflow({ preferred: 'wasm' });
log(`tensorflow backend ${backend}`);
const { train, test } = loadMnist();

/** The key holders' BFV key for the calibration rounds (devices hold it; the coordinator has the public half). */
const bundle = await generateKeyBundle({ taskId: 'bench-export' });
const deviceCtx = await createHeContext(bundle.device);
const serverCtx = await createHeContext(bundle.coordinator);

/** Seeded uniform source of the devices' stochastic rounding (reproducible runs). */
const random = (() => {
  const rng = createSeededRng(11);
  return () => rng.next();
})();

/** One calibration round over the simulated federation; returns the decrypted example-weighted mean and its cost. */
async function federatedRound(spec: ModelSpec, weights: Float32Array, shards: LocalDataset[], plan: CalibrationPlan) {
  const valueCount = statisticsLength(plan);
  const encryptor = createUpdateEncryptor(deviceCtx, { deviceKey: bundle.device });
  const accumulator = createCiphertextAccumulator(serverCtx, { valueCount });
  const decryptor = createSumDecryptor(deviceCtx, { deviceKey: bundle.device, valueCount });
  let uploadBytes = 0;
  let deviceMs = 0;
  try {
    for (const shard of shards) {
      const t0 = performance.now();
      // Stochastic rounding to the encryption's step keeps the aggregate unbiased (see computeCalibrationStatistics).
      const stats = await computeCalibrationStatistics(tf, spec, weights, shard, plan, { roundingStep: bundle.device.quantization.step, random });
      const payload = encryptor.encrypt(stats, capWeight(shard.count, bundle.device.quantization.weightCap));
      deviceMs += performance.now() - t0;
      uploadBytes += payload.byteLength;
      accumulator.add(payload);
    }
    const { mean, clientCount } = decryptor.decryptMean(accumulator.toPayload());
    if (clientCount !== shards.length) throw new Error(`the sum holds ${clientCount} reports, expected ${shards.length}`);
    return { mean: Float32Array.from(mean), valueCount, uploadBytesPerDevice: Math.round(uploadBytes / shards.length), deviceMsPerDevice: Math.round(deviceMs / shards.length) };
  } finally {
    encryptor.dispose();
    accumulator.dispose();
    decryptor.dispose();
  }
}

/** The coordinator of `--calibration coordinator` (started on first use). */
let coordinatorRun: { coordinator: Coordinator; dataDir: string; enrolment: (taskId: string) => Promise<string> } | null = null;

/** Closes the coordinator startBenchCoordinator started, if any, and removes its data. */
async function closeBenchCoordinator(): Promise<void> {
  if (coordinatorRun === null) return;
  await coordinatorRun.coordinator.close();
  rmSync(coordinatorRun.dataDir, { recursive: true, force: true });
}

async function startBenchCoordinator(): Promise<NonNullable<typeof coordinatorRun>> {
  if (coordinatorRun !== null) return coordinatorRun;
  const dataDir = mkdtempSync(join(tmpdir(), 'veil-bench-export-'));
  const config = { ...loadConfig({ ...process.env, VEIL_DATA_DIR: dataDir }), host: '127.0.0.1', grpcPort: 0, httpPort: 0 };
  const coordinator = await startCoordinator({ config, logger: createLogger({ level: 'info', destination: createWriteStream(join(dataDir, 'coordinator.log')) }) });
  log(`coordinator on ${coordinator.grpcAddress} (gRPC), ${coordinator.httpUrl} (REST), database ${coordinator.databaseKind}`);
  const enrolment = async (taskId: string): Promise<string> => {
    if (coordinator.enrolmentSecret !== null) return coordinator.enrolmentSecret;
    const body = await rest<{ token: string }>(coordinator, 'POST', `/v1/tasks/${taskId}/enrolment-tokens`, { label: 'bench:export' }, 201);
    return body.token;
  };
  coordinatorRun = { coordinator, dataDir, enrolment };
  return coordinatorRun;
}

async function rest<T>(coordinator: Coordinator, method: string, path: string, body?: unknown, expected = 200): Promise<T> {
  const response = await fetch(`${coordinator.httpUrl}${path}`, {
    method,
    headers: { authorization: `Bearer ${coordinator.adminToken}`, ...(body !== undefined && { 'content-type': 'application/json' }) },
    ...(body !== undefined && { body: JSON.stringify(body) }),
  });
  if (response.status !== expected) throw new Error(`${method} ${path}: HTTP ${response.status} ${await response.text()}`);
  return (path.split('?')[0]!.endsWith('.bin') ? new Uint8Array(await response.arrayBuffer()) : await response.json()) as T;
}

const quiet = { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} };
/** The app middleware of the no-op training round: the update becomes zeros (the model stays the trained one). */
const zeroUpdate: UpdateMiddleware = async (update, ctx, next) => next({ ...update, delta: new Float32Array(update.delta.length) }, ctx);

/**
 * The two calibration rounds through a real coordinator (`--calibration coordinator`, see the
 * header): returns the histogram round's plan and aggregated statistics, and what it cost.
 */
async function coordinatorRounds(name: string, spec: ModelSpec, weights: Float32Array, shards: LocalDataset[], image: boolean) {
  const { coordinator, enrolment } = await startBenchCoordinator();
  const t0 = performance.now();
  const created = await rest<{ id: string }>(
    coordinator,
    'POST',
    '/v1/tasks',
    {
      name: `bench:export ${name}`,
      rounds: 1,
      clientsPerRound: shards.length,
      minClients: shards.length,
      minAvailableClients: shards.length,
      roundDeadlineMs: 3_600_000,
      training: { epochs: 1, batchSize: 1, learningRate: 0.01 },
      encryption: { mode: 'none' },
      calibration: true,
      start: true,
      model: taskModelBodyFromSpec(spec, weights),
    },
    201,
  );
  const taskId = created.id;
  const enrolmentSecret = await enrolment(taskId);
  const reports: RoundReport[][] = shards.map(() => []);
  const clients = shards.map((_, k) =>
    createClient({ coordinator: coordinator.grpcAddress, taskId, credentials: { enrolmentSecret }, name: `device-${k}`, logger: quiet, pollWaitMs: 2_000, middleware: [zeroUpdate], trainingSeed: k }),
  );
  try {
    // The no-op training round: one digit each (the CNN on the cpu backend, which has convolution gradients).
    if (image) await tf.setBackend('cpu');
    await Promise.all(clients.map((c, k) => c.run({ data: firstExamples(shards[k]!, 1), maxRounds: 1, onRound: (r) => reports[k]!.push(r) })));
    if (image) await tf.setBackend(backend);
    log(`${name}: training round done (zero updates); calibration rounds through the coordinator`);
    const ends = await Promise.all(clients.map((c, k) => c.run({ data: shards[k]!, onRound: (r) => reports[k]!.push(r) })));
    const statuses = [...new Set(ends.map((e) => e.taskStatus))];
    if (statuses.length !== 1 || statuses[0] !== 'TASK_STATUS_COMPLETED') throw new Error(`devices ended with ${statuses.join(', ')}`);
  } finally {
    for (const c of clients) c.close();
  }
  const seconds = (performance.now() - t0) / 1000;
  const task = await rest<{ status: string; statusReason: string; currentModelVersion: number }>(coordinator, 'GET', `/v1/tasks/${taskId}`);
  if (task.status !== 'COMPLETED' || !/calibrated/.test(task.statusReason)) throw new Error(`task ${taskId}: ${task.status} ${task.statusReason}`);
  // The training round kept the model: version 1 is the trained weights, bit for bit.
  const v1 = await rest<Uint8Array>(coordinator, 'GET', `/v1/tasks/${taskId}/model/weights.bin?version=${task.currentModelVersion}`);
  const stored = new Float32Array(v1.slice().buffer);
  const modelUnchanged = stored.length === weights.length && stored.every((v, i) => v === weights[i]);
  if (!modelUnchanged) throw new Error(`task ${taskId}: model version ${task.currentModelVersion} differs from the trained weights`);
  const file = await rest<{ activationRanges: ActivationRanges; rounds: { range: { participants: number }; histogram: { participants: number } }; histogram: { plan: CalibrationPlan; statistics: number[] } }>(
    coordinator,
    'GET',
    `/v1/tasks/${taskId}/calibration`,
  );
  const perStage = (stage: 'range' | 'histogram') => {
    const rs = reports.flatMap((r) => r.filter((x) => x.calibration === stage));
    if (rs.length !== shards.length) throw new Error(`${rs.length} ${stage} reports, expected ${shards.length}`);
    return { uploadBytesPerDevice: Math.round(rs.reduce((a, r) => a + r.uploadBytes, 0) / rs.length), deviceMsPerDevice: Math.round(rs.reduce((a, r) => a + r.trainMs, 0) / rs.length) };
  };
  return {
    taskId,
    seconds: Math.round(seconds * 10) / 10,
    participants: { range: file.rounds.range.participants, histogram: file.rounds.histogram.participants },
    modelUnchanged,
    coordinatorRanges: file.activationRanges,
    histogramPlan: file.histogram.plan,
    histogramMean: Float64Array.from(file.histogram.statistics),
    range: perStage('range'),
    histogram: perStage('histogram'),
  };
}

async function session(bytes: Uint8Array): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, interOpNumThreads: 1, executionMode: 'sequential', graphOptimizationLevel: 'all' });
}

/** Inference time per sample on one core: batch 1 (median over runs) and batch 100 (per sample). */
async function latency(s: ort.InferenceSession, data: LocalDataset) {
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  const one = (i: number) => new ort.Tensor('float32', data.xs.slice((i % data.count) * width, ((i % data.count) + 1) * width), [1, ...data.inputShape]);
  const inputs = Array.from({ length: 256 }, (_, i) => one(i));
  for (let i = 0; i < 200; i++) await s.run({ [s.inputNames[0]!]: inputs[i % inputs.length]! });
  const times: number[] = [];
  for (let i = 0; i < LATENCY_RUNS; i++) {
    const t0 = process.hrtime.bigint();
    await s.run({ [s.inputNames[0]!]: inputs[i % inputs.length]! });
    times.push(Number(process.hrtime.bigint() - t0) / 1e3);
  }
  times.sort((a, b) => a - b);
  const batch = new ort.Tensor('float32', data.xs.slice(0, 100 * width), [100, ...data.inputShape]);
  for (let i = 0; i < 5; i++) await s.run({ [s.inputNames[0]!]: batch });
  const t0 = performance.now();
  const reps = 50;
  for (let i = 0; i < reps; i++) await s.run({ [s.inputNames[0]!]: batch });
  const batchUsPerSample = ((performance.now() - t0) * 1e3) / (reps * 100);
  return { batch1MedianUs: Math.round(times[Math.floor(times.length / 2)]! * 10) / 10, batch1P90Us: Math.round(times[Math.floor(times.length * 0.9)]! * 10) / 10, batch100UsPerSample: Math.round(batchUsPerSample * 10) / 10 };
}

function asImages(d: LocalDataset): LocalDataset {
  return { ...d, inputShape: [28, 28, 1] };
}

function firstExamples(d: LocalDataset, count: number): LocalDataset {
  const n = Math.min(count, d.count);
  const width = d.inputShape.reduce((a, b) => a * b, 1);
  return { ...d, count: n, xs: d.xs.subarray(0, n * width), ys: d.ys.subarray(0, n * d.numClasses) };
}

async function benchModel(
  name: string,
  build: (tf: Tf) => { spec: ModelSpec; weights: Float32Array },
  image: boolean,
  epochs: number,
  training: { batchSize: number; learningRate: number; momentum?: number },
  trainExamples = train.count,
) {
  const trainData = image ? asImages(train) : train;
  const fitData = firstExamples(trainData, trainExamples);
  const testData = image ? asImages(test) : test;
  const { spec, weights: initial } = build(tf);
  log(`${name}: training ${epochs} epoch(s) on ${fitData.count} digits`);
  const t0 = performance.now();
  // --cache-dir: trained weights are kept per model and training settings, so a rerun skips the training.
  const cacheFile = args['cache-dir'] === undefined ? null : join(args['cache-dir'], `${spec.weightSpecs.length}-${initial.length}-${fitData.count}-${epochs}-${JSON.stringify(training).replace(/[^a-z0-9.]/gi, '')}.f32`);
  let weights: Float32Array;
  let cached = false;
  if (cacheFile !== null && existsSync(cacheFile)) {
    weights = new Float32Array(new Uint8Array(readFileSync(cacheFile)).buffer);
    cached = true;
  } else {
    // TF.js's wasm backend has no convolution gradients (Conv2DBackpropFilter): a CNN trains on the cpu backend.
    if (image) await tf.setBackend('cpu');
    ({ weights } = await trainLocal(tf, { spec, weights: initial, data: fitData, epochs, seed: 1, ...training }));
    if (image) await tf.setBackend(backend);
    if (cacheFile !== null) {
      mkdirSync(args['cache-dir']!, { recursive: true });
      writeFileSync(cacheFile, new Uint8Array(weights.buffer, weights.byteOffset, weights.byteLength));
    }
  }
  const trainSeconds = (performance.now() - t0) / 1000;
  const tfAccuracy = (await evaluateLocal(tf, { spec, weights, data: testData })).accuracy;
  log(`${name}: TF.js held-out accuracy ${tfAccuracy} after ${trainSeconds.toFixed(1)} s`);

  const shards = partitionIid(trainData, DEVICES, createSeededRng(7)).map((s) => (image ? asImages(s) : s));
  const points = calibrationPoints(parseModel({ ...spec, weights }));
  const rangePlan = planRangeRound(points);
  let histogramPlan: CalibrationPlan;
  let histogramMean: Float32Array | Float64Array;
  let calibrationCost: Record<string, unknown>;
  if (CALIBRATION_PATH === 'coordinator') {
    log(`${name}: calibration rounds through a coordinator, ${DEVICES} SDK devices over gRPC`);
    const run = await coordinatorRounds(name, spec, weights, shards, image);
    histogramPlan = run.histogramPlan;
    histogramMean = run.histogramMean;
    // The coordinator chose the default (99.99th percentile) ranges itself: the same as here from its histogram.
    const here = chooseActivationRanges(histogramPlan, histogramMean, { method: 'percentile' });
    const same = Object.keys(here).length === Object.keys(run.coordinatorRanges).length &&
      Object.entries(here).every(([point, r]) => run.coordinatorRanges[point]?.min === r.min && run.coordinatorRanges[point]?.max === r.max);
    if (!same) throw new Error(`${name}: the coordinator's ranges differ from the ones its histogram gives`);
    calibrationCost = {
      path: 'coordinator',
      aggregation: 'plaintext FedAvg sum in the coordinator (reports zero-padded to the model size)',
      database: coordinatorRun!.coordinator.databaseKind,
      taskId: run.taskId,
      seconds: run.seconds,
      participants: run.participants,
      trainedModelKept: run.modelUnchanged,
      rangeRound: { values: statisticsLength(rangePlan), ...run.range },
      histogramRound: { values: statisticsLength(histogramPlan), ...run.histogram },
    };
  } else {
    log(`${name}: calibration round 1 (range) over ${DEVICES} devices, ${statisticsLength(rangePlan)} values each`);
    const rangeRound = await federatedRound(spec, weights, shards, rangePlan);
    histogramPlan = planHistogramRound(rangePlan, rangeRound.mean);
    log(`${name}: calibration round 2 (histogram), ${statisticsLength(histogramPlan)} values each`);
    const histogramRound = await federatedRound(spec, weights, shards, histogramPlan);
    histogramMean = histogramRound.mean;
    calibrationCost = {
      path: 'simulated',
      aggregation: 'in process: BFV-encrypted reports summed, the mean decrypted by a key holder',
      rangeRound: { values: rangeRound.valueCount, uploadBytesPerDevice: rangeRound.uploadBytesPerDevice, deviceMsPerDevice: rangeRound.deviceMsPerDevice },
      histogramRound: { values: histogramRound.valueCount, uploadBytesPerDevice: histogramRound.uploadBytesPerDevice, deviceMsPerDevice: histogramRound.deviceMsPerDevice },
    };
  }

  const variants: { label: string; quantize: 'none' | 'float16' | 'int8'; ranges?: ActivationRanges }[] = [
    { label: 'float32', quantize: 'none' },
    { label: 'float16', quantize: 'float16' },
  ];
  const chosenRanges: Record<string, Record<string, [number, number]>> = {};
  for (const method of ['kl', 'percentile', 'minmax'] as RangeMethod[]) {
    const ranges = chooseActivationRanges(histogramPlan, histogramMean, { method });
    chosenRanges[method] = Object.fromEntries(Object.entries(ranges).map(([point, r]) => [point, [r4(r.min), r4(r.max)]]));
    variants.push({ label: `int8Static_${method}`, quantize: 'int8', ranges });
  }
  variants.push({ label: 'int8Dynamic', quantize: 'int8' });

  const results: Record<string, { bytes: number; accuracy: number; ratioToFloat32?: number; latency?: Awaited<ReturnType<typeof latency>> }> = {};
  let floatBytes = 0;
  for (const v of variants) {
    const out = exportModelOnnx(spec, weights, { quantize: v.quantize, ...(v.ranges !== undefined && { activationRanges: v.ranges }) });
    if (v.label === 'float32') floatBytes = out.bytes.byteLength;
    const s = await session(out.bytes);
    try {
      const accuracy = await sessionAccuracy(s, testData, testData.inputShape);
      const timed = v.label === 'float32' || v.label === 'int8Static_percentile' || v.label === 'int8Dynamic' ? await latency(s, testData) : undefined;
      results[v.label] = { bytes: out.bytes.byteLength, ratioToFloat32: r4(out.bytes.byteLength / floatBytes), accuracy: r4(accuracy), ...(timed !== undefined && { latency: timed }) };
      log(`${name}: ${v.label} ${out.bytes.byteLength} bytes, accuracy ${accuracy}${timed ? `, ${timed.batch1MedianUs} us/sample (batch 1)` : ''}`);
    } finally {
      await s.release();
    }
  }
  const f = results['float32']!;
  // The default range method of chooseActivationRanges.
  const k = results['int8Static_percentile']!;
  return {
    parameters: weights.length,
    trainEpochs: epochs,
    trainExamples: fitData.count,
    trainBackend: image ? 'cpu' : backend,
    trainSeconds: Math.round(trainSeconds),
    trainedWeightsFromCache: cached,
    tfjsAccuracy: r4(tfAccuracy),
    calibration: {
      devices: DEVICES,
      examplesPerDevice: shards[0]!.count,
      points: points.length,
      ...calibrationCost,
      ranges: chosenRanges,
    },
    formats: results,
    targets: {
      int8BytesRatio: k.ratioToFloat32,
      int8BytesRatioMet: k.ratioToFloat32! <= 0.3,
      int8AccuracyDropPoints: r4((f.accuracy - k.accuracy) * 100),
      int8AccuracyWithinOnePoint: f.accuracy - k.accuracy <= 0.01,
      dynamicAccuracyDropPoints: r4((f.accuracy - results['int8Dynamic']!.accuracy) * 100),
      float32MatchesTfjsAccuracy: f.accuracy === r4(tfAccuracy),
    },
  };
}

const started = performance.now();
const report: Record<string, unknown> = {
  bench: 'export',
  node: process.version,
  onnxruntime: ort.env.versions?.common ?? null,
  tfjsBackend: backend,
  heldOutDigits: test.count,
  cpus: cpus().length,
  loadAverage1mAtStart: Math.round(loadavg()[0]! * 100) / 100,
};
if (only.has('mlp')) {
  report['mlp'] = await benchModel('mlp (784-200-200-10)', (t) => createMnistMlp(t), false, Number(args['mlp-epochs']), { batchSize: 16, learningRate: 0.1 });
}
if (only.has('cnn')) {
  report['cnn'] = await benchModel('cnn (NIID-Bench SimpleCNN)', (t) => createSimpleCnn(t), true, Number(args['cnn-epochs']), { batchSize: 32, learningRate: 0.05, momentum: 0.9 }, Number(args['cnn-train-examples']));
}
report['loadAverage1mAtEnd'] = Math.round(loadavg()[0]! * 100) / 100;
report['seconds'] = Math.round((performance.now() - started) / 100) / 10;
deviceCtx.dispose();
serverCtx.dispose();
await closeBenchCoordinator();
process.stdout.write(`${JSON.stringify(report)}\n`);
