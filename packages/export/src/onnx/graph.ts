import onnxProto from 'onnx-proto';
import { toFloat16Bits } from './float16.js';

const { onnx } = onnxProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;

export const DataType = onnx.TensorProto.DataType;

/** Attribute values a node takes: int, float, ints or floats. */
export type AttributeValue = number | number[] | { float: number } | { floats: number[] };

/** Little-endian bytes of typed values (ONNX raw_data is little-endian whatever the host). */
function rawBytes(values: ArrayLike<number>, type: number): Uint8Array {
  const n = values.length;
  switch (type) {
    case DataType.FLOAT: {
      const out = new Uint8Array(n * 4);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setFloat32(i * 4, values[i]!, true);
      return out;
    }
    case DataType.FLOAT16: {
      const out = new Uint8Array(n * 2);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setUint16(i * 2, toFloat16Bits(values[i]!), true);
      return out;
    }
    case DataType.INT32: {
      const out = new Uint8Array(n * 4);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setInt32(i * 4, values[i]!, true);
      return out;
    }
    case DataType.INT64: {
      const out = new Uint8Array(n * 8);
      const view = new DataView(out.buffer);
      for (let i = 0; i < n; i++) view.setBigInt64(i * 8, BigInt(values[i]!), true);
      return out;
    }
    case DataType.INT8: {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) out[i] = values[i]! & 0xff;
      return out;
    }
    case DataType.UINT8:
      return Uint8Array.from(values);
    default:
      throw new Error(`no raw encoding for ONNX data type ${type}`);
  }
}

/**
 * A small builder of one ONNX graph: a linear list of nodes, constant
 * initialisers and fresh tensor names. Nodes must be added in topological
 * order (ONNX requires it).
 */
export class GraphBuilder {
  readonly nodes: INodeProto[] = [];
  readonly initializers: ITensorProto[] = [];
  private readonly names = new Set<string>();

  /** A tensor name not used before, derived from `base`. */
  fresh(base: string): string {
    const clean = base.replace(/[^A-Za-z0-9_./:-]/g, '_');
    let name = clean;
    for (let i = 1; this.names.has(name); i++) name = `${clean}_${i}`;
    this.names.add(name);
    return name;
  }

  /** Adds a constant; returns its name. */
  constant(base: string, type: number, dims: readonly number[], values: ArrayLike<number>): string {
    const name = this.fresh(base);
    this.initializers.push({ name, dataType: type, dims: [...dims], rawData: rawBytes(values, type) });
    return name;
  }

  /** Adds a node with one output (named from `base`); returns the output name. */
  node(opType: string, inputs: readonly string[], base: string, attributes: Record<string, AttributeValue> = {}, domain = ''): string {
    const [output] = this.nodeN(opType, inputs, [base], attributes, domain);
    return output!;
  }

  /** Adds a node with several outputs; returns their names. */
  nodeN(opType: string, inputs: readonly string[], bases: readonly string[], attributes: Record<string, AttributeValue> = {}, domain = ''): string[] {
    const outputs = bases.map((b) => this.fresh(b));
    const attribute: IAttributeProto[] = Object.entries(attributes).map(([name, value]) => {
      if (typeof value === 'number') return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
      if (Array.isArray(value)) return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: value };
      if ('float' in value) return { name, type: onnx.AttributeProto.AttributeType.FLOAT, f: value.float };
      return { name, type: onnx.AttributeProto.AttributeType.FLOATS, floats: value.floats };
    });
    this.nodes.push({ opType, input: [...inputs], output: outputs, attribute, ...(domain !== '' && { domain }) });
    return outputs;
  }

  /** Serialises the graph as an ONNX model (opset `opset` of the default domain). */
  encode(options: {
    name: string;
    input: { name: string; type: number; dims: (number | string)[] };
    output: { name: string; type: number; dims: (number | string)[] };
    opset: number;
    docString?: string;
  }): Uint8Array {
    const valueInfo = (v: { name: string; type: number; dims: (number | string)[] }) => ({
      name: v.name,
      type: {
        tensorType: {
          elemType: v.type,
          shape: { dim: v.dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
        },
      },
    });
    const model = onnx.ModelProto.create({
      irVersion: 7,
      producerName: 'veil',
      producerVersion: '0.1.0',
      ...(options.docString !== undefined && { docString: options.docString }),
      opsetImport: [{ domain: '', version: options.opset }],
      graph: {
        name: options.name,
        node: this.nodes,
        initializer: this.initializers,
        input: [valueInfo(options.input)],
        output: [valueInfo(options.output)],
      },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** Decodes an ONNX file (for inspection and tests). */
export function decodeModel(bytes: Uint8Array): onnxProto.onnx.ModelProto {
  return onnx.ModelProto.decode(bytes);
}
