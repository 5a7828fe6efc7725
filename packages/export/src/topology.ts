import { ExportError } from './errors.js';

/**
 * A model as Veil stores it: the TF.js layers topology (`model.toJSON(null,
 * false)`, i.e. model.json's `modelTopology`), the weight specs and the flat
 * float32 weights (the tensors of `weightSpecs`, concatenated in that order).
 * Structurally the `ModelSpec` of `@veil/protocol` plus its weights.
 */
export interface ExportableModel {
  topology: Record<string, unknown>;
  weightSpecs: readonly { name: string; shape: readonly number[]; dtype?: string }[];
  weights: Float32Array;
}

/** Element-wise activations the exporter translates (TF.js names). */
export type Activation = 'linear' | 'relu' | 'sigmoid' | 'tanh' | 'softmax';

interface OpBase {
  /** The TF.js layer whose output this op produces (the calibration point's name). */
  layer: string;
  /** Output shape without the batch dimension, in ONNX layout ([C, H, W] for images). */
  shape: number[];
}

/** y = act(x W + b); `kernel` is [inUnits, units] row-major (the TF.js layout, ONNX Gemm's B without transB). */
export interface DenseOp extends OpBase {
  kind: 'dense';
  inUnits: number;
  units: number;
  kernel: Float32Array;
  bias: Float32Array;
  activation: Activation;
}

/** 2-D convolution; `kernel` is [out, in, kh, kw] (ONNX layout), `pads` [top, left, bottom, right]. */
export interface ConvOp extends OpBase {
  kind: 'conv';
  inChannels: number;
  outChannels: number;
  kernelShape: [number, number];
  strides: [number, number];
  dilations: [number, number];
  pads: [number, number, number, number];
  kernel: Float32Array;
  bias: Float32Array;
  activation: Activation;
}

/** Max or average pooling (average excludes padding, as TF.js does). */
export interface PoolOp extends OpBase {
  kind: 'maxpool' | 'avgpool';
  kernelShape: [number, number];
  strides: [number, number];
  pads: [number, number, number, number];
}

/**
 * Flatten to [N, features]. TF.js flattens NHWC in (h, w, c) order, ONNX's
 * NCHW in (c, h, w): either the next Dense layer's rows were permuted (done
 * at parse time) or `toNhwc` asks for a transpose before flattening.
 */
export interface FlattenOp extends OpBase {
  kind: 'flatten';
  toNhwc: boolean;
}

/** A batch normalisation that could not be folded: y = x * scale + shift per channel (axis 1). */
export interface AffineOp extends OpBase {
  kind: 'affine';
  scale: Float32Array;
  shift: Float32Array;
}

/** A stand-alone activation layer. */
export interface ActivationOp extends OpBase {
  kind: 'activation';
  activation: Exclude<Activation, 'linear'>;
}

export type LayerOp = DenseOp | ConvOp | PoolOp | FlattenOp | AffineOp | ActivationOp;

/** The exporter's view of a model: a chain of ops in ONNX layout. */
export interface ParsedModel {
  name: string;
  /** Shape of one input as TF.js takes it (NHWC for images), without the batch dimension. */
  inputShape: number[];
  /** True when the input is an image (rank 3, NHWC) that the graph transposes to NCHW. */
  imageInput: boolean;
  ops: LayerOp[];
}

/** Layer classes {@link parseModel} accepts (InputLayer aside). */
export const SUPPORTED_LAYERS = [
  'Dense',
  'Conv2D',
  'MaxPooling2D',
  'AveragePooling2D',
  'Flatten',
  'Dropout',
  'BatchNormalization',
  'Activation',
  'ReLU',
  'Softmax',
] as const;

const ACTIVATIONS: ReadonlySet<string> = new Set(['linear', 'relu', 'sigmoid', 'tanh', 'softmax']);

type Config = Record<string, unknown>;

function invalid(message: string): never {
  throw new ExportError('invalid_model', message);
}

function pair(value: unknown, what: string, layer: string): [number, number] {
  const v = typeof value === 'number' ? [value, value] : value;
  if (!Array.isArray(v) || v.length !== 2 || !v.every((x) => Number.isInteger(x) && x >= 1)) invalid(`layer "${layer}": ${what} must be two positive integers`);
  return [v[0] as number, v[1] as number];
}

function activationOf(config: Config, layer: string, className: string): Activation {
  const a = config['activation'] ?? 'linear';
  if (typeof a !== 'string' || !ACTIVATIONS.has(a)) {
    throw new ExportError(
      'unsupported_layer',
      `layer "${layer}" (${className}) uses activation "${String(a)}", which the ONNX exporter does not translate (supported: linear, relu, sigmoid, tanh, softmax)`,
    );
  }
  return a as Activation;
}

/** Output size and [before, after] padding of one spatial axis (TF.js "valid"/"same"). */
function spatial(size: number, kernel: number, stride: number, dilation: number, padding: string): { out: number; before: number; after: number } {
  const effective = (kernel - 1) * dilation + 1;
  if (padding === 'valid') {
    const out = Math.floor((size - effective) / stride) + 1;
    return { out, before: 0, after: 0 };
  }
  const out = Math.ceil(size / stride);
  const total = Math.max((out - 1) * stride + effective - size, 0);
  // TF pads the extra row/column at the end (ONNX SAME_UPPER).
  return { out, before: Math.floor(total / 2), after: total - Math.floor(total / 2) };
}

/**
 * Reads a Sequential TF.js model into the exporter's op chain: kernels moved
 * to ONNX layouts, batch normalisations folded into the preceding Dense or
 * Conv2D when it has no activation (else kept as a per-channel affine op),
 * Dropout dropped (inference), and the first Dense after a Flatten of an
 * image given its rows in (c, h, w) order.
 *
 * Throws `unsupported_layer` naming the first layer it cannot translate, and
 * `invalid_model` when the topology or the weights are malformed.
 */
export function parseModel(model: ExportableModel): ParsedModel {
  let topology = model.topology as Config;
  if (topology['model_config'] !== undefined) topology = topology['model_config'] as Config;
  const className = topology['class_name'];
  if (className !== 'Sequential') {
    throw new ExportError('unsupported_layer', `model class "${String(className)}" is not supported: the ONNX exporter translates Sequential models`);
  }
  const config = (topology['config'] ?? {}) as Config;
  const layers = (Array.isArray(config) ? config : config['layers']) as { class_name: string; config: Config }[] | undefined;
  if (!Array.isArray(layers) || layers.length === 0) invalid('the topology lists no layers');
  const name = typeof config['name'] === 'string' ? (config['name'] as string) : 'model';

  const weights = new Map<string, { shape: readonly number[]; data: Float32Array }>();
  let offset = 0;
  for (const spec of model.weightSpecs) {
    if (spec.dtype !== undefined && spec.dtype !== 'float32') invalid(`weight ${spec.name} has dtype ${spec.dtype}; only float32 weights are exported`);
    const size = spec.shape.reduce((a, b) => a * b, 1);
    if (offset + size > model.weights.length) invalid(`weightSpecs describe more values than the ${model.weights.length} weights given`);
    weights.set(spec.name, { shape: spec.shape, data: model.weights.subarray(offset, offset + size) });
    offset += size;
  }
  if (offset !== model.weights.length) invalid(`weightSpecs describe ${offset} values but ${model.weights.length} weights were given`);
  const used = new Set<string>();
  const weight = (layer: string, kind: string, shape: readonly number[]): Float32Array => {
    const key = `${layer}/${kind}`;
    const w = weights.get(key);
    if (w === undefined) invalid(`weight ${key} is missing from weightSpecs`);
    if (w.shape.length !== shape.length || w.shape.some((d, i) => d !== shape[i])) {
      invalid(`weight ${key} has shape [${w.shape.join(',')}], the layer needs [${shape.join(',')}]`);
    }
    used.add(key);
    return w.data;
  };

  let inputShape: number[] | null = null;
  let shape: number[] = []; // current TF-layout shape (NHWC for images), no batch
  const ops: LayerOp[] = [];
  const onnxShape = (s: number[]): number[] => (s.length === 3 ? [s[2]!, s[0]!, s[1]!] : [...s]);

  for (const [index, layer] of layers.entries()) {
    const cls = layer.class_name;
    const cfg = layer.config ?? {};
    const lname = typeof cfg['name'] === 'string' ? (cfg['name'] as string) : `layer_${index}`;
    const declared = cfg['batch_input_shape'] ?? cfg['batchInputShape'];
    if (inputShape === null) {
      if (!Array.isArray(declared)) invalid(`the first layer ("${lname}") declares no input shape`);
      const dims = declared.slice(1) as unknown[];
      if (!dims.every((d) => Number.isInteger(d) && (d as number) >= 1)) invalid(`input shape [${declared.join(',')}] must be fully known (batch aside)`);
      inputShape = dims as number[];
      if (inputShape.length !== 1 && inputShape.length !== 3) {
        throw new ExportError('unsupported_layer', `input of rank ${inputShape.length} ([${inputShape.join(',')}]) is not supported: vectors [features] or images [height, width, channels]`);
      }
      shape = [...inputShape];
    }
    switch (cls) {
      case 'InputLayer':
      case 'Dropout':
        break;
      case 'Dense': {
        if (shape.length !== 1) {
          throw new ExportError('unsupported_layer', `layer "${lname}" (Dense) gets a rank-${shape.length} input; the exporter needs a Flatten before Dense`);
        }
        const units = cfg['units'] as number;
        if (!Number.isInteger(units) || units < 1) invalid(`layer "${lname}": units must be a positive integer`);
        const inUnits = shape[0]!;
        const kernel = Float32Array.from(weight(lname, 'kernel', [inUnits, units]));
        const bias = cfg['use_bias'] === false ? new Float32Array(units) : Float32Array.from(weight(lname, 'bias', [units]));
        shape = [units];
        ops.push({ kind: 'dense', layer: lname, shape: [units], inUnits, units, kernel, bias, activation: activationOf(cfg, lname, cls) });
        break;
      }
      case 'Conv2D': {
        if (shape.length !== 3) throw new ExportError('unsupported_layer', `layer "${lname}" (Conv2D) needs an image input [height, width, channels]`);
        if ((cfg['data_format'] ?? 'channels_last') !== 'channels_last') {
          throw new ExportError('unsupported_layer', `layer "${lname}" (Conv2D) uses data_format ${String(cfg['data_format'])}; only channels_last is exported`);
        }
        const groups = cfg['groups'];
        if (groups !== undefined && groups !== 1) throw new ExportError('unsupported_layer', `layer "${lname}" (Conv2D) uses groups=${String(groups)}`);
        const padding = String(cfg['padding'] ?? 'valid');
        if (padding !== 'valid' && padding !== 'same') throw new ExportError('unsupported_layer', `layer "${lname}" (Conv2D) uses padding "${padding}"`);
        const [kh, kw] = pair(cfg['kernel_size'], 'kernel_size', lname);
        const strides = pair(cfg['strides'] ?? 1, 'strides', lname);
        const dilations = pair(cfg['dilation_rate'] ?? 1, 'dilation_rate', lname);
        const filters = cfg['filters'] as number;
        if (!Number.isInteger(filters) || filters < 1) invalid(`layer "${lname}": filters must be a positive integer`);
        const [h, w, cin] = shape as [number, number, number];
        const tfKernel = weight(lname, 'kernel', [kh, kw, cin, filters]);
        // [kh, kw, in, out] -> [out, in, kh, kw]
        const kernel = new Float32Array(tfKernel.length);
        for (let y = 0; y < kh; y++)
          for (let x = 0; x < kw; x++)
            for (let i = 0; i < cin; i++)
              for (let o = 0; o < filters; o++) kernel[((o * cin + i) * kh + y) * kw + x] = tfKernel[((y * kw + x) * cin + i) * filters + o]!;
        const bias = cfg['use_bias'] === false ? new Float32Array(filters) : Float32Array.from(weight(lname, 'bias', [filters]));
        const sh = spatial(h, kh, strides[0], dilations[0], padding);
        const sw = spatial(w, kw, strides[1], dilations[1], padding);
        if (sh.out < 1 || sw.out < 1) invalid(`layer "${lname}" (Conv2D): the kernel is larger than its ${h}x${w} input`);
        shape = [sh.out, sw.out, filters];
        ops.push({
          kind: 'conv',
          layer: lname,
          shape: onnxShape(shape),
          inChannels: cin,
          outChannels: filters,
          kernelShape: [kh, kw],
          strides,
          dilations,
          pads: [sh.before, sw.before, sh.after, sw.after],
          kernel,
          bias,
          activation: activationOf(cfg, lname, cls),
        });
        break;
      }
      case 'MaxPooling2D':
      case 'AveragePooling2D': {
        if (shape.length !== 3) throw new ExportError('unsupported_layer', `layer "${lname}" (${cls}) needs an image input`);
        if ((cfg['data_format'] ?? 'channels_last') !== 'channels_last') {
          throw new ExportError('unsupported_layer', `layer "${lname}" (${cls}) uses data_format ${String(cfg['data_format'])}; only channels_last is exported`);
        }
        const padding = String(cfg['padding'] ?? 'valid');
        if (padding !== 'valid' && padding !== 'same') throw new ExportError('unsupported_layer', `layer "${lname}" (${cls}) uses padding "${padding}"`);
        const kernelShape = pair(cfg['pool_size'] ?? 2, 'pool_size', lname);
        const strides = pair(cfg['strides'] ?? kernelShape, 'strides', lname);
        const [h, w, c] = shape as [number, number, number];
        const sh = spatial(h, kernelShape[0], strides[0], 1, padding);
        const sw = spatial(w, kernelShape[1], strides[1], 1, padding);
        if (sh.out < 1 || sw.out < 1) invalid(`layer "${lname}" (${cls}): the pool is larger than its ${h}x${w} input`);
        shape = [sh.out, sw.out, c];
        ops.push({
          kind: cls === 'MaxPooling2D' ? 'maxpool' : 'avgpool',
          layer: lname,
          shape: onnxShape(shape),
          kernelShape,
          strides,
          pads: [sh.before, sw.before, sh.after, sw.after],
        });
        break;
      }
      case 'Flatten': {
        const size = shape.reduce((a, b) => a * b, 1);
        // toNhwc is settled below, once the following layers are known.
        ops.push({ kind: 'flatten', layer: lname, shape: [size], toNhwc: shape.length === 3 && shape[2] !== 1 && shape[0]! * shape[1]! !== 1 });
        shape = [size];
        break;
      }
      case 'BatchNormalization': {
        const axis = cfg['axis'] ?? -1;
        const lastAxis = shape.length; // TF.js counts the batch axis
        if (axis !== -1 && axis !== lastAxis) {
          throw new ExportError('unsupported_layer', `layer "${lname}" (BatchNormalization) normalises axis ${String(axis)}; only the channel (last) axis is exported`);
        }
        const channels = shape[shape.length - 1]!;
        const eps = typeof cfg['epsilon'] === 'number' ? (cfg['epsilon'] as number) : 1e-3;
        const gamma = cfg['scale'] === false ? new Float32Array(channels).fill(1) : weight(lname, 'gamma', [channels]);
        const beta = cfg['center'] === false ? new Float32Array(channels) : weight(lname, 'beta', [channels]);
        const mean = weight(lname, 'moving_mean', [channels]);
        const variance = weight(lname, 'moving_variance', [channels]);
        const scale = new Float32Array(channels);
        const shift = new Float32Array(channels);
        for (let c = 0; c < channels; c++) {
          // Computed in float64, rounded once (TF.js computes (x - mean) * gamma / sqrt(var + eps) + beta).
          const a = gamma[c]! / Math.sqrt(variance[c]! + eps);
          scale[c] = a;
          shift[c] = beta[c]! - a * mean[c]!;
        }
        const prev = ops[ops.length - 1];
        if (prev !== undefined && (prev.kind === 'dense' || prev.kind === 'conv') && prev.activation === 'linear') {
          // Fold: W' = W * a (per output channel), b' = b * a + shift.
          if (prev.kind === 'dense') {
            for (let i = 0; i < prev.inUnits; i++) for (let o = 0; o < prev.units; o++) prev.kernel[i * prev.units + o]! *= scale[o]!;
          } else {
            const per = prev.inChannels * prev.kernelShape[0] * prev.kernelShape[1];
            for (let o = 0; o < prev.outChannels; o++) for (let k = 0; k < per; k++) prev.kernel[o * per + k]! *= scale[o]!;
          }
          for (let o = 0; o < channels; o++) prev.bias[o] = prev.bias[o]! * scale[o]! + shift[o]!;
          prev.layer = lname;
        } else {
          ops.push({ kind: 'affine', layer: lname, shape: onnxShape(shape), scale, shift });
        }
        break;
      }
      case 'Activation': {
        const activation = activationOf(cfg, lname, cls);
        if (activation === 'softmax' && shape.length !== 1) throw new ExportError('unsupported_layer', `layer "${lname}" (Activation softmax) on a rank-${shape.length} input is not exported`);
        if (activation !== 'linear') ops.push({ kind: 'activation', layer: lname, shape: onnxShape(shape), activation });
        break;
      }
      case 'ReLU': {
        if (cfg['max_value'] !== null && cfg['max_value'] !== undefined) {
          throw new ExportError('unsupported_layer', `layer "${lname}" (ReLU) has max_value ${String(cfg['max_value'])}; only the plain ReLU is exported`);
        }
        ops.push({ kind: 'activation', layer: lname, shape: onnxShape(shape), activation: 'relu' });
        break;
      }
      case 'Softmax': {
        const axis = cfg['axis'] ?? -1;
        if (shape.length !== 1 || (axis !== -1 && axis !== 1)) {
          throw new ExportError('unsupported_layer', `layer "${lname}" (Softmax) over axis ${String(axis)} of a rank-${shape.length} input is not exported (only over the features of a vector)`);
        }
        ops.push({ kind: 'activation', layer: lname, shape: [...shape], activation: 'softmax' });
        break;
      }
      default:
        throw new ExportError(
          'unsupported_layer',
          `layer "${lname}" (${String(cls)}) is not supported by the ONNX exporter (supported: ${SUPPORTED_LAYERS.join(', ')})`,
        );
    }
  }
  for (const key of weights.keys()) if (!used.has(key)) invalid(`weight ${key} belongs to no exported layer`);

  // Flatten of an image followed (through element-wise activations) by a Dense: permute the Dense's
  // rows from TF's (h, w, c) order to ONNX's (c, h, w) and skip the transpose.
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!;
    if (op.kind !== 'flatten' || !op.toNhwc) continue;
    let j = i + 1;
    while (j < ops.length && ops[j]!.kind === 'activation') j++;
    const next = ops[j];
    if (next?.kind !== 'dense') continue;
    const [c, h, w] = ops[i - 1]?.shape ?? onnxShape(inputShape ?? []);
    const C = c!, H = h!, W = w!;
    const permuted = new Float32Array(next.kernel.length);
    for (let y = 0; y < H; y++)
      for (let x = 0; x < W; x++)
        for (let ch = 0; ch < C; ch++) {
          const tfRow = (y * W + x) * C + ch;
          const onnxRow = (ch * H + y) * W + x;
          permuted.set(next.kernel.subarray(tfRow * next.units, (tfRow + 1) * next.units), onnxRow * next.units);
        }
    next.kernel = permuted;
    op.toNhwc = false;
  }
  return { name, inputShape: inputShape ?? [], imageInput: (inputShape ?? []).length === 3, ops };
}
