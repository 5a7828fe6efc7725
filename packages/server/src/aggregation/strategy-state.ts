import type { StrategyState } from './strategy.js';

/**
 * The blob format of a {@link StrategyState}, stored with the model version
 * it belongs to: `VSS1`, the header's length (uint32 LE), a JSON header
 * `{ scalars, vectors: [[name, length], ...] }` padded with spaces to a
 * multiple of 4 bytes, then each vector's float32-le values in header order.
 * Numbers round-trip exactly (JSON keeps float64; vectors are float32).
 */
const MAGIC = [0x56, 0x53, 0x53, 0x31]; // "VSS1"

export function encodeStrategyState(state: StrategyState): Uint8Array {
  const vectors = Object.entries(state.vectors);
  let header = JSON.stringify({ scalars: state.scalars, vectors: vectors.map(([name, v]) => [name, v.length]) });
  header += ' '.repeat((4 - ((8 + Buffer.byteLength(header)) % 4)) % 4);
  const headerBytes = Buffer.from(header, 'utf8');
  const total = 8 + headerBytes.byteLength + vectors.reduce((n, [, v]) => n + 4 * v.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  out.set(MAGIC, 0);
  view.setUint32(4, headerBytes.byteLength, true);
  out.set(headerBytes, 8);
  let offset = 8 + headerBytes.byteLength;
  for (const [, vector] of vectors) {
    for (let i = 0; i < vector.length; i++) view.setFloat32(offset + 4 * i, vector[i]!, true);
    offset += 4 * vector.length;
  }
  return out;
}

/** Parses a blob written by {@link encodeStrategyState}; throws a `RangeError` on anything else. */
export function decodeStrategyState(bytes: Uint8Array): StrategyState {
  const fail = (why: string): never => {
    throw new RangeError(`strategy state blob: ${why}`);
  };
  if (bytes.byteLength < 8 || MAGIC.some((b, i) => bytes[i] !== b)) fail('bad magic');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = view.getUint32(4, true);
  if (8 + headerLength > bytes.byteLength) fail('truncated header');
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 8, headerLength).toString('utf8'));
  } catch {
    fail('header is not JSON');
  }
  const { scalars, vectors } = (header ?? {}) as { scalars?: unknown; vectors?: unknown };
  if (typeof scalars !== 'object' || scalars === null || Array.isArray(scalars)) return fail('no scalars');
  for (const value of Object.values(scalars)) if (typeof value !== 'number' || !Number.isFinite(value)) fail('non-finite scalar');
  if (!Array.isArray(vectors)) return fail('no vectors');
  const out: Record<string, Float32Array> = {};
  let offset = 8 + headerLength;
  for (const entry of vectors) {
    if (!Array.isArray(entry) || typeof entry[0] !== 'string' || !Number.isInteger(entry[1]) || entry[1] < 0) fail('bad vector entry');
    const [name, length] = entry as [string, number];
    if (offset + 4 * length > bytes.byteLength) fail(`vector ${name} truncated`);
    const vector = new Float32Array(length);
    for (let i = 0; i < length; i++) vector[i] = view.getFloat32(offset + 4 * i, true);
    out[name] = vector;
    offset += 4 * length;
  }
  if (offset !== bytes.byteLength) fail('trailing bytes');
  return { scalars: { ...(scalars as Record<string, number>) }, vectors: out };
}
