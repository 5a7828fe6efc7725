import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { calibrationPoints, chooseActivationRanges, meanNoiseStddev, noiseSwampedPoints, parseModel, planHistogramRound, planRangeRound, type CalibrationPlan } from '@veil/export';
import { createSeededRng } from '@veil/privacy';
import * as ort from 'onnxruntime-node';
import { onnxAccuracy } from '../../../export/test/onnx-accuracy.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { initTensorflow } from '../training/backend.js';
import { describeModel, flattenWeights } from '../training/model.js';
import { evaluateLocal, trainLocal } from '../training/train.js';
import type { LocalDataset, ModelSpec, Tf } from '../training/types.js';
import { computeCalibrationStatistics, exportModelOnnx } from './onnx.js';

function mnistSubset(digits: number[][], skip: number, perClass: number): LocalDataset {
  const count = perClass * 10;
  const xs = new Float32Array(count * 784);
  const ys = new Float32Array(count * 10);
  for (let i = 0; i < perClass; i++) {
    for (let label = 0; label < 10; label++) {
      const row = i * 10 + label;
      xs.set(digits[label]!.slice((skip + i) * 784, (skip + i + 1) * 784), row * 784);
      ys[row * 10 + label] = 1;
    }
  }
  return { xs, ys, count, inputShape: [784], numClasses: 10 };
}

/** The devices' datasets as one (what a central calibrator would hold). */
function pool(parts: LocalDataset[]): LocalDataset {
  const count = parts.reduce((a, p) => a + p.count, 0);
  const xs = new Float32Array(count * 784);
  const ys = new Float32Array(count * 10);
  let at = 0;
  for (const p of parts) {
    xs.set(p.xs, at * 784);
    ys.set(p.ys, at * 10);
    at += p.count;
  }
  return { xs, ys, count, inputShape: [784], numClasses: 10 };
}

/** Example-weighted mean of device reports: what the encrypted sum gives a key holder. */
function weightedMean(reports: { stats: Float32Array; examples: number }[]): Float32Array {
  const total = reports.reduce((a, r) => a + r.examples, 0);
  const out = new Float32Array(reports[0]!.stats.length);
  for (const r of reports) for (let i = 0; i < out.length; i++) out[i]! += (r.stats[i]! * r.examples) / total;
  return out;
}

let tf: Tf;
let spec: ModelSpec;
let weights: Float32Array;
let devices: LocalDataset[];
let test: LocalDataset;

beforeAll(async () => {
  ({ tf } = await initTensorflow({ preferred: 'wasm' }));
  // Seeded initial weights: the model, and so the int8-vs-float32 gap, is the same on every run
  // (unseeded, 12 runs gave gaps of 0 to 1.1 points and CI once 1.2).
  const model = tf.sequential({
    layers: [
      tf.layers.dense({ name: 'hidden', inputShape: [784], units: 64, activation: 'relu', kernelInitializer: tf.initializers.glorotUniform({ seed: 1 }) }),
      tf.layers.dense({ name: 'output', units: 10, activation: 'softmax', kernelInitializer: tf.initializers.glorotUniform({ seed: 2 }) }),
    ],
  });
  spec = describeModel(model);
  const initial = flattenWeights(model);
  model.dispose();
  const require = createRequire(import.meta.url);
  const digits = Array.from({ length: 10 }, (_, label) => (JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${label}.json`), 'utf8')) as { data: number[] }).data);
  const train = mnistSubset(digits, 0, 150);
  ({ weights } = await trainLocal(tf, { spec, weights: initial, data: train, epochs: 4, batchSize: 16, learningRate: 0.1, seed: 1 }));
  devices = [mnistSubset(digits, 150, 30), mnistSubset(digits, 180, 10), mnistSubset(digits, 190, 20)];
  test = mnistSubset(digits, 300, 100);
}, 120_000);

describe('federated int8 calibration on device statistics', () => {
  it('devices report frequency vectors; the aggregated ranges give the int8 model that central calibration on the pooled data gives, and no worse than dynamic int8', async () => {
    const points = calibrationPoints(parseModel({ ...spec, weights }));
    const rangePlan = planRangeRound(points);
    const round = async (plan: CalibrationPlan) =>
      weightedMean(await Promise.all(devices.map(async (d) => ({ stats: await computeCalibrationStatistics(tf, spec, weights, d, plan), examples: d.count }))));
    const histogramPlan = planHistogramRound(rangePlan, await round(rangePlan));
    const ranges = chooseActivationRanges(histogramPlan, await round(histogramPlan));
    expect(Object.keys(ranges).sort()).toEqual([...points].sort());
    expect(ranges['hidden']!.min).toBe(0); // ReLU output

    const float32 = exportModelOnnx(spec, weights);
    const int8 = exportModelOnnx(spec, weights, { quantize: 'int8', activationRanges: ranges });
    expect(int8.quantization).toBe('int8-static');
    expect(int8.bytes.byteLength / float32.bytes.byteLength).toBeLessThanOrEqual(0.3);
    const tfAccuracy = (await evaluateLocal(tf, { spec, weights, data: test })).accuracy;
    const floatAccuracy = await onnxAccuracy(float32.bytes, test);
    const int8Accuracy = await onnxAccuracy(int8.bytes, test);
    expect(floatAccuracy).toBeCloseTo(tfAccuracy, 10);
    expect(floatAccuracy).toBeGreaterThan(0.8); // a trained model, so the comparison means something
    // The reference: the same two calibration rounds run centrally on the devices' pooled data.
    const pooled = pool(devices);
    const central = async (plan: CalibrationPlan) => computeCalibrationStatistics(tf, spec, weights, pooled, plan);
    const centralHistogramPlan = planHistogramRound(rangePlan, await central(rangePlan));
    const centralRanges = chooseActivationRanges(centralHistogramPlan, await central(centralHistogramPlan));
    const centralAccuracy = await onnxAccuracy(exportModelOnnx(spec, weights, { quantize: 'int8', activationRanges: centralRanges }).bytes, test);
    const dynamicAccuracy = await onnxAccuracy(exportModelOnnx(spec, weights, { quantize: 'int8' }).bytes, test);
    expect(Math.abs(int8Accuracy - centralAccuracy)).toBeLessThanOrEqual(0.005);
    expect(int8Accuracy).toBeGreaterThanOrEqual(dynamicAccuracy - 0.005);
    // Within 1 point of float32 is the target for the demo MLP and the CNN, checked by
    // e2e/export.test.ts, packages/server/test/calibration.test.ts and `npm run -s bench:export`.
    // On this 64-unit MLP the int8 weights alone cost 1.7 points with these seeds (dynamic int8:
    // 0.874 against float32 0.892; federated static 0.875), so the gap to float32 is not this test's.
  });

  it('DP noise that swamps the aggregated statistics: exportModelOnnx with the noise-swamped points writes int8-dynamic with the reason (the dynamic figure), not the noisy static model', async () => {
    const points = calibrationPoints(parseModel({ ...spec, weights }));
    const rangePlan = planRangeRound(points);
    const rng = createSeededRng(11);
    const gaussian = () => Math.sqrt(-2 * Math.log(1 - rng.nextDouble())) * Math.cos(2 * Math.PI * rng.nextDouble());
    // The mean of 2 local-DP reports (z = 0.7, scale C/sqrt(m)) carries N(0, σ²) per frequency, σ = z·sqrt(m)/sqrt(2)
    // (meanNoiseStddev of σ_r = zC): the demo's `--dp` on 2 devices. Added here to the devices' true mean.
    const noisy = async (plan: CalibrationPlan, m: number) => {
      const sigma = meanNoiseStddev(0.7, 2, 1 / Math.sqrt(m));
      const mean = weightedMean(await Promise.all(devices.map(async (d) => ({ stats: await computeCalibrationStatistics(tf, spec, weights, d, plan), examples: d.count }))));
      return { sigma, values: Float64Array.from(mean, (v) => v + sigma * gaussian()) };
    };
    const range = await noisy(rangePlan, 2 * points.length);
    const swamped = noiseSwampedPoints(rangePlan, range.values, range.sigma);
    expect(swamped).toEqual(points);
    const histogramPlan = planHistogramRound(rangePlan, range.values, { noiseStddev: range.sigma });
    const ranges = chooseActivationRanges(histogramPlan, (await noisy(histogramPlan, points.length)).values);
    const fallback = exportModelOnnx(spec, weights, { quantize: 'int8', activationRanges: ranges, noiseSwamped: swamped });
    expect(fallback.quantization).toBe('int8-dynamic');
    expect(fallback.fallback).toMatchObject({ reason: 'noise-swamped', points });
    const forced = exportModelOnnx(spec, weights, { quantize: 'int8', activationRanges: ranges, noiseSwamped: swamped, forceStatic: true });
    expect(forced.quantization).toBe('int8-static');
    const [floatAccuracy, fallbackAccuracy, dynamicAccuracy, forcedAccuracy] = await Promise.all([
      onnxAccuracy(exportModelOnnx(spec, weights).bytes, test),
      onnxAccuracy(fallback.bytes, test),
      onnxAccuracy(exportModelOnnx(spec, weights, { quantize: 'int8' }).bytes, test),
      onnxAccuracy(forced.bytes, test),
    ]);
    console.info(`noise-swamped calibration: held-out float32 ${floatAccuracy}, int8 fallback ${fallbackAccuracy} (dynamic ${dynamicAccuracy}), forced static on the noisy ranges ${forcedAccuracy}`);
    expect(fallbackAccuracy).toBe(dynamicAccuracy);
    expect(fallbackAccuracy).toBeGreaterThan(0.8);
    // What the fallback avoids: the static model on ranges the noise drew.
    expect(forcedAccuracy).toBeLessThan(fallbackAccuracy - 0.3);
  });

  it('roundingStep: every value becomes a multiple of the step within one step of the exact one, with no systematic loss of the tail', async () => {
    const points = calibrationPoints(parseModel({ ...spec, weights }));
    const plan = planHistogramRound(planRangeRound(points), await computeCalibrationStatistics(tf, spec, weights, devices[0]!, planRangeRound(points)));
    const exact = await computeCalibrationStatistics(tf, spec, weights, devices[0]!, plan);
    const step = 2 ** -13;
    let seed = 7;
    const random = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    const rounded = await computeCalibrationStatistics(tf, spec, weights, devices[0]!, plan, { roundingStep: step, random });
    let tinyExact = 0;
    let tinyRounded = 0;
    for (let i = 0; i < exact.length; i++) {
      expect(Number.isInteger(rounded[i]! / step)).toBe(true);
      expect(Math.abs(rounded[i]! - exact[i]!)).toBeLessThan(step);
      if (exact[i]! > 0 && exact[i]! < step / 2) {
        tinyExact += exact[i]!;
        tinyRounded += rounded[i]!;
      }
    }
    // Rounding to nearest would report 0 for all of these bins; stochastic rounding keeps their mass on average.
    expect(tinyExact).toBeGreaterThan(20 * step);
    expect(Math.abs(tinyRounded - tinyExact)).toBeLessThan(0.35 * tinyExact);
  });

  it('refuses a plan naming a layer the model lacks', async () => {
    await expect(computeCalibrationStatistics(tf, spec, weights, devices[0]!, planRangeRound(['nope']))).rejects.toThrowError(/layer "nope"/);
  });
});
