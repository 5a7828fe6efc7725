import type { SymbolicTensor, Tensor } from '@tensorflow/tfjs';
import {
  INPUT_POINT,
  createCalibrationCollector,
  exportOnnx,
  type CalibrationPlan,
  type ExportOnnxOptions,
  type OnnxExport,
} from '@veil/export';
import { ClientError } from '../errors.js';
import { buildModel } from '../training/model.js';
import type { LocalDataset, ModelSpec, Tf } from '../training/types.js';

/** Options of {@link computeCalibrationStatistics}. */
export interface CalibrationStatisticsOptions {
  /** Examples per forward pass. Default 256. */
  batchSize?: number;
  /** Use at most this many of the local examples (the first ones). Default: all. */
  maxExamples?: number;
  /**
   * Round every reported frequency stochastically to a multiple of this step
   * (the encryption's quantisation step, `deviceKey.quantization.step`):
   * down or up with the probabilities that make the expected value exact, so
   * the aggregate of many devices stays unbiased. Without it the encryption
   * rounds to nearest and every bin below half a step (most of a 2,048-bin
   * histogram's tail) is lost, which shrinks the calibrated ranges. Default:
   * no rounding here.
   */
  roundingStep?: number;
  /** Uniform [0, 1) source of the stochastic rounding. Default `Math.random` (the rounding protects accuracy, not secrets). */
  random?: () => number;
}

/**
 * A device's report for one round of federated int8 calibration: runs the
 * model on the device's local examples and summarises the activations at
 * every calibration point on the plan's fixed grid (see `@veil/export`'s
 * `planRangeRound` / `planHistogramRound`). The report is a vector of
 * frequencies in [0, 1]: the device sends it like a model update (its
 * encryption middleware encrypts it; the coordinator only sums), weighted by
 * its example count, so the aggregate is the pooled distribution and no one
 * sees this device's own statistics.
 */
export async function computeCalibrationStatistics(
  tf: Tf,
  spec: ModelSpec,
  weights: Float32Array,
  data: LocalDataset,
  plan: CalibrationPlan,
  options: CalibrationStatisticsOptions = {},
): Promise<Float32Array> {
  const batchSize = options.batchSize ?? 256;
  const count = Math.min(data.count, options.maxExamples ?? data.count);
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new ClientError('invalid_argument', 'batchSize must be an integer >= 1');
  if (count < 1) throw new ClientError('invalid_argument', 'calibration needs at least one local example');
  const model = await buildModel(tf, spec, weights);
  try {
    const layerPoints = plan.points.map((p) => p.name).filter((name) => name !== INPUT_POINT);
    const outputs = layerPoints.map((name) => {
      try {
        return model.getLayer(name).output as SymbolicTensor;
      } catch (cause) {
        throw new ClientError('invalid_argument', `the calibration plan names layer "${name}", which the model does not have`, { cause });
      }
    });
    const probe = tf.model({ inputs: model.inputs, outputs });
    const collector = createCalibrationCollector(plan);
    const width = data.inputShape.reduce((a, b) => a * b, 1);
    for (let start = 0; start < count; start += batchSize) {
      const n = Math.min(batchSize, count - start);
      const xs = data.xs.subarray(start * width, (start + n) * width);
      if (plan.points.some((p) => p.name === INPUT_POINT)) collector.add(INPUT_POINT, xs, n);
      if (outputs.length === 0) continue;
      const results = tf.tidy(() => {
        const out = probe.predict(tf.tensor(xs, [n, ...data.inputShape]));
        return (Array.isArray(out) ? out : [out]) as Tensor[];
      });
      try {
        for (const [i, t] of results.entries()) collector.add(layerPoints[i]!, (await t.data()) as Float32Array, n);
      } finally {
        tf.dispose(results);
      }
    }
    const report = collector.finish();
    const step = options.roundingStep;
    if (step !== undefined) {
      if (!(step > 0 && step <= 1)) throw new ClientError('invalid_argument', 'roundingStep must be in (0, 1]');
      const random = options.random ?? Math.random;
      for (let i = 0; i < report.length; i++) {
        const scaled = report[i]! / step;
        const low = Math.floor(scaled);
        report[i] = (low + (random() < scaled - low ? 1 : 0)) * step;
      }
    }
    return report;
  } finally {
    model.dispose();
  }
}

/**
 * Writes a downloaded model as ONNX for an inference runtime on the device:
 * float32, float16 or int8 (static with `activationRanges`, e.g. the
 * federation's calibrated ranges; dynamic without). Pass the calibration
 * statistics file's `noiseSwamped` points too: when the DP noise swamped
 * them the model is written int8-dynamic and the result's `fallback` says
 * why (`forceStatic` overrides). See `exportOnnx` of `@veil/export` for the
 * layers it translates.
 */
export function exportModelOnnx(spec: ModelSpec, weights: Float32Array, options: ExportOnnxOptions = {}): OnnxExport {
  return exportOnnx({ topology: spec.topology, weightSpecs: spec.weightSpecs, weights }, options);
}
