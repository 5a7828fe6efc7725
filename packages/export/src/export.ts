import { ExportError } from './errors.js';
import { DataType, GraphBuilder } from './onnx/graph.js';
import { parseModel, type Activation, type ExportableModel, type LayerOp, type ParsedModel } from './topology.js';

/** Name of the model input's calibration point (layer names are the others). */
export const INPUT_POINT = ':input';

/** Observed (or chosen) range of one activation tensor. */
export interface ActivationRange {
  min: number;
  max: number;
}

/** Ranges by calibration point ({@link INPUT_POINT} and layer names, see {@link calibrationPoints}). */
export type ActivationRanges = Readonly<Record<string, ActivationRange>>;

/** How {@link exportOnnx} stores the model. */
export type Quantization = 'none' | 'float16' | 'int8';

/** Options of {@link exportOnnx}. */
export interface ExportOnnxOptions {
  /**
   * `none` (default): float32. `float16`: weights stored as binary16 and cast
   * to float32 at load (half the bytes; compute stays float32). `int8`:
   * weights per-channel symmetric int8; activations uint8, static (QDQ with
   * the ranges of `activationRanges`) or, without ranges, dynamic (scales
   * computed per batch at run time).
   */
  quantize?: Quantization;
  /**
   * int8 only: the range of every calibration point (e.g. from
   * `chooseActivationRanges` over aggregated histograms). Absent: dynamic
   * quantization.
   */
  activationRanges?: ActivationRanges;
  /**
   * int8 with `activationRanges` only: the calibration points whose range statistics the DP noise
   * swamped (`noiseSwampedPoints`; the `noiseSwamped` field of the calibration statistics file).
   * When one is named the ranges are not trusted and the model is written int8-dynamic instead,
   * with the reason in the result's `fallback`, unless `forceStatic`. Default none.
   */
  noiseSwamped?: readonly string[];
  /** Write int8-static with `activationRanges` even when `noiseSwamped` names points. Default false. */
  forceStatic?: boolean;
  /** ONNX opset of the default domain. Default 13 (per-channel DequantizeLinear needs >= 13). */
  opset?: number;
  /** int8 only: largest weight magnitude (127: 8-bit weights; 63: the "reduce range" 7-bit weights of ONNX Runtime's quantiser). Default 127. */
  weightQMax?: number;
}

/** What {@link exportOnnx} returns. */
export interface OnnxExport {
  /** The serialised ONNX ModelProto. */
  bytes: Uint8Array;
  /** How the model was stored (`int8-static` when activation ranges were given). */
  quantization: 'float32' | 'float16' | 'int8-static' | 'int8-dynamic';
  /** Graph input name and shape (`N` = batch); images are NHWC, as TF.js takes them. */
  input: { name: string; shape: (number | 'N')[] };
  /** Graph output name and shape. */
  output: { name: string; shape: (number | 'N')[] };
  /** Set when int8-static was asked for (activation ranges given) but the model was written int8-dynamic: why, and which points. */
  fallback?: CalibrationFallback;
}

/** Why {@link exportOnnx} wrote int8-dynamic although activation ranges were given. */
export interface CalibrationFallback {
  reason: 'noise-swamped';
  /** The calibration points whose range statistics the DP noise swamped. */
  points: string[];
  /** One sentence for the user. */
  message: string;
}

/** The fallback for ranges whose statistics the DP noise swamped at `points` (none: null). */
function noiseFallback(points: readonly string[] | undefined): CalibrationFallback | null {
  if (points === undefined || points.length === 0) return null;
  return {
    reason: 'noise-swamped',
    points: [...points],
    message:
      `the DP noise swamped the calibration statistics of ${points.length} point(s) (${points.join(', ')}): their ranges are noise, ` +
      'so the model was quantised int8-dynamic instead of int8-static (force static ranges with forceStatic / --force-static)',
  };
}

/**
 * The calibration points of a model: the model input, then every layer whose
 * output an int8 graph quantises (Dense, Conv2D, unfolded BatchNormalization
 * and activation layers, except the last op, whose output stays float32).
 * Pooling, Flatten and Dropout reuse their input's scale.
 */
export function calibrationPoints(parsed: ParsedModel): string[] {
  const points = [INPUT_POINT];
  parsed.ops.forEach((op, i) => {
    if (i < parsed.ops.length - 1 && producesPoint(op)) points.push(op.layer);
  });
  return points;
}

function producesPoint(op: LayerOp): boolean {
  return op.kind === 'dense' || op.kind === 'conv' || op.kind === 'affine' || op.kind === 'activation';
}

interface QParams {
  scale: number;
  zeroPoint: number;
}

/** uint8 affine parameters covering [min, max] (widened to contain 0, so that 0 is exact). */
export function uint8Params(range: ActivationRange): QParams {
  const lo = Math.min(range.min, 0);
  const hi = Math.max(range.max, 0);
  if (!(hi - lo > 0) || !Number.isFinite(hi - lo)) return { scale: 1, zeroPoint: lo < 0 ? 255 : 0 };
  const scale = Math.fround((hi - lo) / 255);
  const zeroPoint = Math.min(255, Math.max(0, Math.round(-lo / scale)));
  return { scale, zeroPoint };
}

/**
 * Per-channel symmetric int8 quantisation of a kernel: scale_c = max|w_c| / 127,
 * q = round(w / scale_c) in [-127, 127] (-128 unused, so the range is
 * symmetric). `channelOf(i)` maps a flat index to its output channel.
 */
function quantizeWeights(kernel: Float32Array, channels: number, channelOf: (i: number) => number, qmax: number): { q: Int8Array; scales: Float32Array } {
  const maxAbs = new Float64Array(channels);
  for (let i = 0; i < kernel.length; i++) {
    const c = channelOf(i);
    const a = Math.abs(kernel[i]!);
    if (a > maxAbs[c]!) maxAbs[c] = a;
  }
  const scales = new Float32Array(channels);
  for (let c = 0; c < channels; c++) scales[c] = maxAbs[c]! > 0 ? maxAbs[c]! / qmax : 1;
  const q = new Int8Array(kernel.length);
  for (let i = 0; i < kernel.length; i++) q[i] = Math.max(-qmax, Math.min(qmax, Math.round(kernel[i]! / scales[channelOf(i)]!)));
  return { q, scales };
}

/** Inverse image of an output range under sigmoid or tanh (outputs clamped 1e-6 inside the open range). */
function preActivationRange(act: 'sigmoid' | 'tanh', q: QParams): ActivationRange {
  const eps = 1e-6;
  const lo = -q.zeroPoint * q.scale;
  const hi = (255 - q.zeroPoint) * q.scale;
  if (act === 'sigmoid') {
    const logit = (y: number) => Math.log(y / (1 - y));
    return { min: logit(Math.min(Math.max(lo, eps), 1 - eps)), max: logit(Math.min(Math.max(hi, eps), 1 - eps)) };
  }
  return { min: Math.atanh(Math.min(Math.max(lo, -1 + eps), 1 - eps)), max: Math.atanh(Math.min(Math.max(hi, -1 + eps), 1 - eps)) };
}

type Mode = 'float32' | 'float16' | 'int8-static' | 'int8-dynamic';

/**
 * Writes a TF.js Sequential model as an ONNX model that ONNX Runtime runs.
 *
 * Layers: Dense (Gemm), Conv2D (Conv; kernels moved from [kh, kw, in, out]
 * to [out, in, kh, kw]), MaxPooling2D / AveragePooling2D, Flatten, Dropout
 * (identity at inference), BatchNormalization (folded into the preceding
 * Dense/Conv2D when it has no activation, else a per-channel Mul+Add), ReLU,
 * sigmoid, tanh, softmax. Image inputs stay NHWC (as TF.js feeds them): the
 * graph transposes once to NCHW, and the first Dense after a Flatten has its
 * rows permuted to (c, h, w) order. Anything else is refused with
 * `unsupported_layer`, naming the layer.
 *
 * int8 static follows the QDQ format of ONNX Runtime's quantisation tool:
 * QuantizeLinear/DequantizeLinear pairs on activations (uint8, asymmetric),
 * per-channel symmetric int8 weights, int32 biases with scale = input scale
 * x weight scale and zero point 0, so ONNX Runtime fuses each layer into
 * QGemm / QLinearConv (Jacob et al. 2018, "Quantization and Training of
 * Neural Networks for Efficient Integer-Arithmetic-Only Inference", §2.4 for
 * the bias). int8 dynamic uses DynamicQuantizeLinear + MatMulInteger /
 * ConvInteger, with the same weights.
 */
export function exportOnnx(model: ExportableModel, options: ExportOnnxOptions = {}): OnnxExport {
  const quantize = options.quantize ?? 'none';
  if (quantize !== 'none' && quantize !== 'float16' && quantize !== 'int8') {
    throw new ExportError('invalid_argument', `quantize must be none, float16 or int8, not ${String(quantize)}`);
  }
  const opset = options.opset ?? 13;
  if (!Number.isInteger(opset) || opset < 13) throw new ExportError('invalid_argument', 'opset must be an integer >= 13');
  if (options.activationRanges !== undefined && quantize !== 'int8') {
    throw new ExportError('invalid_argument', 'activationRanges apply to quantize: int8 only');
  }
  const parsed = parseModel(model);
  const fallback = options.activationRanges !== undefined && options.forceStatic !== true ? noiseFallback(options.noiseSwamped) : null;
  const mode: Mode =
    quantize === 'none' ? 'float32' : quantize === 'float16' ? 'float16' : options.activationRanges === undefined || fallback !== null ? 'int8-dynamic' : 'int8-static';
  const params = new Map<string, QParams>();
  if (mode === 'int8-static') {
    const ranges = options.activationRanges!;
    for (const point of calibrationPoints(parsed)) {
      const range = ranges[point];
      if (range === undefined) throw new ExportError('invalid_calibration', `activation ranges have no entry for calibration point "${point}"`);
      if (!Number.isFinite(range.min) || !Number.isFinite(range.max) || range.min > range.max) {
        throw new ExportError('invalid_calibration', `calibration point "${point}" has an invalid range [${range.min}, ${range.max}]`);
      }
      params.set(point, uint8Params(range));
    }
  }
  const weightQMax = options.weightQMax ?? 127;
  if (!Number.isInteger(weightQMax) || weightQMax < 1 || weightQMax > 127) throw new ExportError('invalid_argument', 'weightQMax must be an integer in [1, 127]');
  const out = emit(parsed, mode, params, opset, weightQMax);
  return fallback === null ? out : { ...out, fallback };
}

function emit(parsed: ParsedModel, mode: Mode, params: Map<string, QParams>, opset: number, weightQMax: number): OnnxExport {
  const g = new GraphBuilder();
  const inputName = g.fresh('input');
  const outputName = 'output';
  let cur = inputName;
  /** The uint8 parameters `cur` is quantised with (static mode), else null. */
  let curQ: QParams | null = null;

  /** Scale and zero-point constants, shared by every tensor quantised with the same parameters. */
  const qConstants = new Map<string, [string, string]>();
  const requantize = (q: QParams, base: string): void => {
    const key = `${q.scale}/${q.zeroPoint}`;
    let constants = qConstants.get(key);
    if (constants === undefined) {
      constants = [g.constant(`${base}_scale`, DataType.FLOAT, [], [q.scale]), g.constant(`${base}_zero_point`, DataType.UINT8, [], [q.zeroPoint])];
      qConstants.set(key, constants);
    }
    const quantized = g.node('QuantizeLinear', [cur, ...constants], `${base}_quantized`);
    cur = g.node('DequantizeLinear', [quantized, ...constants], `${base}_dequantized`);
    curQ = q;
  };
  /** A float weight tensor: float32 as is, float16 stored half size and cast back at load. */
  const floatWeight = (base: string, dims: number[], values: Float32Array): string => {
    if (mode === 'float16') {
      const half = g.constant(`${base}_fp16`, DataType.FLOAT16, dims, values);
      return g.node('Cast', [half], base, { to: DataType.FLOAT });
    }
    return g.constant(base, DataType.FLOAT, dims, values);
  };
  const activation = (act: Activation, base: string): void => {
    if (act === 'linear') return;
    const opType = { relu: 'Relu', sigmoid: 'Sigmoid', tanh: 'Tanh', softmax: 'Softmax' }[act];
    cur = g.node(opType, [cur], `${base}_${act}`, act === 'softmax' ? { axis: -1 } : {});
  };

  if (parsed.imageInput) cur = g.node('Transpose', [cur], 'input_nchw', { perm: [0, 3, 1, 2] });
  if (mode === 'int8-static') requantize(params.get(INPUT_POINT)!, 'input');

  parsed.ops.forEach((op, index) => {
    const last = index === parsed.ops.length - 1;
    const base = op.layer;
    switch (op.kind) {
      case 'dense':
      case 'conv': {
        const isConv = op.kind === 'conv';
        const channels = isConv ? op.outChannels : op.units;
        const kernelDims = isConv ? [op.outChannels, op.inChannels, op.kernelShape[0], op.kernelShape[1]] : [op.inUnits, op.units];
        const convAttrs = isConv
          ? { kernel_shape: [...op.kernelShape], strides: [...op.strides], dilations: [...op.dilations], pads: [op.pads[0], op.pads[1], op.pads[2], op.pads[3]] }
          : {};
        if (mode === 'float32' || mode === 'float16') {
          const w = floatWeight(`${base}_kernel`, kernelDims, op.kernel);
          const b = floatWeight(`${base}_bias`, [channels], op.bias);
          cur = isConv ? g.node('Conv', [cur, w, b], `${base}_conv`, convAttrs) : g.node('Gemm', [cur, w, b], `${base}_gemm`);
          activation(op.activation, base);
          break;
        }
        const per = isConv ? op.kernel.length / op.outChannels : 0;
        const { q, scales } = isConv
          ? quantizeWeights(op.kernel, channels, (i) => Math.floor(i / per), weightQMax)
          : quantizeWeights(op.kernel, channels, (i) => i % op.units, weightQMax);
        if (mode === 'int8-static') {
          const inQ = curQ!;
          const wq = g.constant(`${base}_kernel_int8`, DataType.INT8, kernelDims, q);
          const ws = g.constant(`${base}_kernel_scale`, DataType.FLOAT, [channels], scales);
          const wz = g.constant(`${base}_kernel_zero_point`, DataType.INT8, [channels], new Int8Array(channels));
          const w = g.node('DequantizeLinear', [wq, ws, wz], `${base}_kernel`, { axis: isConv ? 0 : 1 });
          const biasScale = new Float32Array(channels);
          const biasQ = new Int32Array(channels);
          for (let c = 0; c < channels; c++) {
            biasScale[c] = Math.fround(inQ.scale * scales[c]!);
            biasQ[c] = Math.max(-2147483648, Math.min(2147483647, Math.round(op.bias[c]! / biasScale[c]!)));
          }
          const bq = g.constant(`${base}_bias_int32`, DataType.INT32, [channels], biasQ);
          const bs = g.constant(`${base}_bias_scale`, DataType.FLOAT, [channels], biasScale);
          // No zero point: it defaults to 0, as a bias needs.
          const b = g.node('DequantizeLinear', [bq, bs], `${base}_bias`, { axis: 0 });
          cur = isConv ? g.node('Conv', [cur, w, b], `${base}_conv`, convAttrs) : g.node('Gemm', [cur, w, b], `${base}_gemm`);
          curQ = null;
          const post = params.get(op.layer);
          if (post !== undefined && (op.activation === 'sigmoid' || op.activation === 'tanh')) {
            // Quantise the pre-activation too, so that ONNX Runtime fuses the layer into QLinearConv/QGemm:
            // sigmoid and tanh are monotonic, so the pre-activation range is the inverse image of the output's.
            requantize(uint8Params(preActivationRange(op.activation, post)), `${base}_pre`);
          }
          activation(op.activation, base);
          if (!last) requantize(post!, base);
          break;
        }
        // int8 dynamic: x -> DynamicQuantizeLinear -> MatMulInteger/ConvInteger (int32) -> float * (x_scale * w_scale) + b.
        const [xq, xs, xz] = g.nodeN('DynamicQuantizeLinear', [cur], [`${base}_x_uint8`, `${base}_x_scale`, `${base}_x_zero_point`]);
        let acc: string;
        let scaleShape: number[];
        if (isConv) {
          // ConvInteger on CPU takes uint8 weights: int8 + 128 with zero point 128 (same values).
          const wu = g.constant(`${base}_kernel_uint8`, DataType.UINT8, kernelDims, Uint8Array.from(q, (v) => v + 128));
          // One zero point for all channels (ConvInteger's CPU kernel takes no other); the scales stay per channel.
          const wz = g.constant(`${base}_kernel_zero_point`, DataType.UINT8, [], [128]);
          acc = g.node('ConvInteger', [xq!, wu, xz!, wz], `${base}_conv_int32`, convAttrs);
          scaleShape = [channels, 1, 1];
        } else {
          const wq = g.constant(`${base}_kernel_int8`, DataType.INT8, kernelDims, q);
          const wz = g.constant(`${base}_kernel_zero_point`, DataType.INT8, [channels], new Int8Array(channels));
          acc = g.node('MatMulInteger', [xq!, wq, xz!, wz], `${base}_matmul_int32`);
          scaleShape = [channels];
        }
        const accF = g.node('Cast', [acc], `${base}_acc_float`, { to: DataType.FLOAT });
        const ws = g.constant(`${base}_kernel_scale`, DataType.FLOAT, scaleShape, scales);
        const scale = g.node('Mul', [xs!, ws], `${base}_scale`);
        const scaled = g.node('Mul', [accF, scale], `${base}_scaled`);
        const b = g.constant(`${base}_bias`, DataType.FLOAT, scaleShape, op.bias);
        cur = g.node('Add', [scaled, b], `${base}_out`);
        activation(op.activation, base);
        break;
      }
      case 'maxpool':
      case 'avgpool': {
        const attrs = { kernel_shape: [...op.kernelShape], strides: [...op.strides], pads: [...op.pads] };
        cur = g.node(op.kind === 'maxpool' ? 'MaxPool' : 'AveragePool', [cur], `${base}_pool`, attrs);
        // The pool's output lies within its input's range: same scale.
        if (curQ !== null) requantize(curQ, base);
        break;
      }
      case 'flatten': {
        if (op.toNhwc) cur = g.node('Transpose', [cur], `${base}_nhwc`, { perm: [0, 2, 3, 1] });
        cur = g.node('Flatten', [cur], `${base}_flat`, { axis: 1 });
        if (curQ !== null) requantize(curQ, base);
        break;
      }
      case 'affine': {
        const dims = op.shape.length === 3 ? [op.shape[0]!, 1, 1] : [op.shape[0]!];
        const scaled = g.node('Mul', [cur, floatWeight(`${base}_scale`, dims, op.scale)], `${base}_mul`);
        cur = g.node('Add', [scaled, floatWeight(`${base}_shift`, dims, op.shift)], `${base}_add`);
        curQ = null;
        if (mode === 'int8-static' && !last) requantize(params.get(op.layer)!, base);
        break;
      }
      case 'activation': {
        activation(op.activation, base);
        curQ = null;
        if (mode === 'int8-static' && !last) requantize(params.get(op.layer)!, base);
        break;
      }
    }
  });

  const lastShape = parsed.ops[parsed.ops.length - 1]?.shape ?? [];
  // An image output goes back to NHWC, as TF.js returns it.
  const flatOut = lastShape.length === 3 ? [lastShape[1]!, lastShape[2]!, lastShape[0]!] : lastShape;
  if (lastShape.length === 3) cur = g.node('Transpose', [cur], 'output_nhwc', { perm: [0, 2, 3, 1] });
  // The graph output must be a named tensor of its own.
  cur = g.nodeN('Identity', [cur], [outputName])[0]!;
  const bytes = g.encode({
    name: parsed.name,
    input: { name: inputName, type: DataType.FLOAT, dims: ['N', ...parsed.inputShape] },
    output: { name: cur, type: DataType.FLOAT, dims: ['N', ...flatOut] },
    opset,
    docString: `Exported by Veil (${mode})`,
  });
  return {
    bytes,
    quantization: mode,
    input: { name: inputName, shape: ['N', ...parsed.inputShape] },
    output: { name: cur, shape: ['N', ...flatOut] },
  };
}
