import { gunzipSync } from 'node:zlib';

/** Element types of the IDX format (LeCun et al., "THE MNIST DATABASE", file formats section). */
const IDX_TYPES = {
  0x08: { name: 'uint8', bytes: 1 },
  0x09: { name: 'int8', bytes: 1 },
  0x0b: { name: 'int16', bytes: 2 },
  0x0c: { name: 'int32', bytes: 4 },
  0x0d: { name: 'float32', bytes: 4 },
  0x0e: { name: 'float64', bytes: 8 },
} as const;

/** A parsed IDX file: its dimensions and its values in row-major order. */
export interface IdxArray {
  /** Element type named in the header. */
  type: (typeof IDX_TYPES)[keyof typeof IDX_TYPES]['name'];
  /** Sizes of the dimensions, outermost first (e.g. [60000, 28, 28]). */
  shape: number[];
  /** The values (uint8 data as a `Uint8Array` view, other types converted from big-endian). */
  data: Uint8Array | Int8Array | Int16Array | Int32Array | Float32Array | Float64Array;
}

/**
 * Parses an IDX file (the format of MNIST and Fashion-MNIST): two zero bytes,
 * a type byte, a dimension count byte, one big-endian uint32 per dimension,
 * then the values, big-endian. A gzip stream (the distributed `.gz` files) is
 * decompressed first. Throws an `Error` naming the problem for a bad magic
 * number, an unknown type or a size that does not match the header.
 */
export function parseIdx(bytes: Uint8Array): IdxArray {
  const raw = bytes[0] === 0x1f && bytes[1] === 0x8b ? new Uint8Array(gunzipSync(bytes)) : bytes;
  if (raw.length < 4 || raw[0] !== 0 || raw[1] !== 0) throw new Error('not an IDX file: the first two bytes must be zero');
  const typeCode = raw[2]!;
  const type = IDX_TYPES[typeCode as keyof typeof IDX_TYPES];
  if (type === undefined) throw new Error(`IDX type 0x${typeCode.toString(16)} is unknown`);
  const dimensions = raw[3]!;
  const headerBytes = 4 + 4 * dimensions;
  if (raw.length < headerBytes) throw new Error(`IDX header truncated: ${dimensions} dimensions need ${headerBytes} bytes`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const shape: number[] = [];
  for (let d = 0; d < dimensions; d++) shape.push(view.getUint32(4 + 4 * d, false));
  const count = shape.reduce((a, b) => a * b, 1);
  const expected = headerBytes + count * type.bytes;
  if (raw.length !== expected) {
    throw new Error(`IDX size mismatch: shape [${shape.join(', ')}] of ${type.name} needs ${expected} bytes, file has ${raw.length}`);
  }
  const at = (i: number) => headerBytes + i * type.bytes;
  let data: IdxArray['data'];
  switch (type.name) {
    case 'uint8':
      data = raw.subarray(headerBytes);
      break;
    case 'int8':
      data = new Int8Array(raw.buffer, raw.byteOffset + headerBytes, count);
      break;
    case 'int16':
      data = Int16Array.from({ length: count }, (_, i) => view.getInt16(at(i), false));
      break;
    case 'int32':
      data = Int32Array.from({ length: count }, (_, i) => view.getInt32(at(i), false));
      break;
    case 'float32':
      data = Float32Array.from({ length: count }, (_, i) => view.getFloat32(at(i), false));
      break;
    case 'float64':
      data = Float64Array.from({ length: count }, (_, i) => view.getFloat64(at(i), false));
      break;
  }
  return { type: type.name, shape, data };
}
