import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { federationMethods, protoRoot } from '../service.js';
import * as wire from './federation.js';

// protobufjs (under @grpc/proto-loader) reads the .proto: the reference the generated codecs must match.
const protobuf = createRequire(import.meta.url)('protobufjs');
const root = new protobuf.Root();
root.loadSync(`${protoRoot()}/veil/v1/federation.proto`, { keepCase: false });
root.resolveAll();
const TOOBJECT = { longs: Number, enums: String, defaults: true, oneofs: true };

/** proto-loader's serializer and deserializer of a message type (the ones of src/service.ts). */
function reference(name: string): { serialize(o: unknown): Buffer; deserialize(b: Buffer): unknown } {
  const type = root.lookupType(`veil.v1.${name}`);
  return {
    serialize: (o) => Buffer.from(type.encode(type.fromObject(o as object)).finish()),
    deserialize: (b) => type.toObject(type.decode(b), TOOBJECT),
  };
}

const codec = (name: string): { encode(o: unknown): Buffer; decode(b: Uint8Array): unknown } => ({
  encode: (wire as unknown as Record<string, (o: unknown) => Buffer>)[`encode${name}`]!,
  decode: (wire as unknown as Record<string, (b: Uint8Array) => unknown>)[`decode${name}`]!,
});

/** An arbitrary object of message type `type`, as an application hands one to a serializer (every field optional, oneofs one member). */
function arbitraryOf(type: any, depth: number): fc.Arbitrary<Record<string, unknown>> {
  const value = (field: any): fc.Arbitrary<unknown> => {
    if (field.resolvedType instanceof protobuf.Enum) return fc.constantFrom(...Object.keys(field.resolvedType.values));
    if (field.resolvedType instanceof protobuf.Type) return depth > 3 ? fc.constant({}) : arbitraryOf(field.resolvedType, depth + 1);
    switch (field.type) {
      case 'double':
        return fc.double();
      case 'float':
        return fc.float();
      case 'int32':
        return fc.integer();
      case 'uint32':
        return fc.nat({ max: 2 ** 32 - 1 });
      case 'int64':
        return fc.maxSafeInteger();
      case 'uint64':
        return fc.maxSafeNat();
      case 'bool':
        return fc.boolean();
      case 'string':
        return fc.fullUnicodeString({ maxLength: 12 });
      case 'bytes':
        return fc.uint8Array({ maxLength: 40 }).map((b) => Buffer.from(b));
      default:
        throw new Error(`no arbitrary for ${field.type}`);
    }
  };
  const fields: Record<string, fc.Arbitrary<unknown>> = {};
  for (const field of type.fieldsArray) {
    if (field.partOf && !field.partOf.name.startsWith('_')) continue;
    if (field.map) fields[field.name] = fc.dictionary(fc.fullUnicodeString({ maxLength: 6 }), value(field), { maxKeys: 3 });
    else if (field.repeated) fields[field.name] = fc.array(value(field), { maxLength: 3 });
    else fields[field.name] = value(field);
  }
  const plain = fc.record(fields, { requiredKeys: [] });
  const oneofs = type.oneofsArray.filter((o: any) => !o.name.startsWith('_'));
  if (oneofs.length === 0) return plain;
  return fc
    .tuple(plain, ...oneofs.map((o: any) => fc.option(fc.oneof(...o.fieldsArray.map((f: any) => value(f).map((v) => [f.name, v] as const))), { nil: null })))
    .map(([base, ...chosen]) => {
      const out = { ...(base as Record<string, unknown>) };
      for (const c of chosen as ([string, unknown] | null)[]) if (c !== null) out[c[0]] = c[1];
      return out;
    });
}

const messageNames = root
  .lookup('veil.v1')
  .nestedArray.filter((n: unknown) => n instanceof protobuf.Type)
  .map((t: { name: string }) => t.name) as string[];

describe('generated federation codecs (src/wire/federation.ts)', () => {
  it('are what scripts/gen-wire.mjs generates from the .proto', async () => {
    // @ts-expect-error: a plain .mjs script without types
    const { generate } = await import('../../scripts/gen-wire.mjs');
    expect(readFileSync(new URL('./federation.ts', import.meta.url), 'utf8')).toBe(generate());
  });

  it('cover every message of the .proto', () => {
    expect(messageNames.length).toBeGreaterThan(20);
    for (const name of messageNames) {
      expect(typeof codec(name).encode, name).toBe('function');
      expect(typeof codec(name).decode, name).toBe('function');
    }
  });

  it.each(messageNames)('%s: encodes the bytes proto-loader does and decodes to the object it does', (name) => {
    const ref = reference(name);
    const own = codec(name);
    fc.assert(
      fc.property(arbitraryOf(root.lookupType(`veil.v1.${name}`), 0), (object) => {
        const bytes = ref.serialize(object);
        expect(own.encode(object).equals(bytes)).toBe(true);
        expect(own.decode(bytes)).toStrictEqual(ref.deserialize(bytes));
        // A message inside a larger buffer (as a gRPC frame holds it) decodes the same.
        const framed = Buffer.concat([Buffer.from([9, 9, 9]), bytes]).subarray(3);
        expect(own.decode(framed)).toStrictEqual(ref.deserialize(bytes));
      }),
      { numRuns: 150 },
    );
  });

  it('decode what proto-loader decodes from fields the device does not know, out of order, repeated and negative', () => {
    const ref = reference('Assignment');
    // Field 99 (varint), field 98 (fixed32), field 97 (length-delimited), field 96 (fixed64), a group (field 95),
    // round_number twice (the last wins), deadline_unix_ms negative (-5 as a 10-byte varint), then round_id.
    const bytes = Buffer.from([
      0x98, 0x06, 0x2a, 0x95, 0x06, 1, 2, 3, 4, 0x8a, 0x06, 2, 0xff, 0xfe, 0x81, 0x06, 1, 2, 3, 4, 5, 6, 7, 8, 0xfb, 0x05, 0x08, 0x01, 0xfc, 0x05, 0x10, 3,
      0x10, 4, 0x30, 0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0x0a, 1, 0x61,
    ]);
    expect(wire.decodeAssignment(bytes)).toStrictEqual(ref.deserialize(bytes));
    expect(wire.decodeAssignment(bytes)).toMatchObject({ roundNumber: 4, deadlineUnixMs: -5, roundId: 'a' });
    // An enum number the .proto does not name stays a number (proto-loader's enums: String).
    const idle = Buffer.from([0x08, 42, 0x10, 7]);
    expect(wire.decodeIdle(idle)).toStrictEqual(reference('Idle').deserialize(idle));
    expect(wire.decodeIdle(idle).taskStatus).toBe(42);
  });

  it('refuse truncated messages that proto-loader refuses, and truncated strings too', () => {
    const ref = reference('TaskSpec');
    const good = ref.serialize({ taskId: 'task', name: 'n', parameterCount: 3 });
    let refused = 0;
    for (let cut = 1; cut < good.length; cut++) {
      const bytes = good.subarray(0, cut);
      let expected: unknown;
      try {
        expected = ref.deserialize(bytes);
      } catch {
        expect(() => wire.decodeTaskSpec(bytes)).toThrow(RangeError);
        refused++;
        continue;
      }
      // protobufjs on Node reads a string cut short as the bytes there are (BufferReader.string); a
      // cut message is refused here instead. Anything else it decodes, the codec decodes the same.
      // The bytes: [10, 4, 't', 'a', 's', 'k', 18, 1, 'n', 40, 3]; the strings' values are at [2, 6) and [8, 9).
      const stringCut = (cut >= 2 && cut < 6) || cut === 8;
      if (stringCut) expect(() => wire.decodeTaskSpec(bytes)).toThrow(RangeError);
      else expect(wire.decodeTaskSpec(bytes)).toStrictEqual(expected);
    }
    expect(refused).toBe(3);
    expect([...good]).toEqual([10, 4, 116, 97, 115, 107, 18, 1, 110, 40, 3]);
  });

  it('describe the service as proto-loader does (paths and streaming)', () => {
    const loaded = federationMethods() as unknown as Record<string, { path: string; requestStream: boolean; responseStream: boolean }>;
    expect(Object.keys(wire.FederationServiceWire).sort()).toEqual(Object.keys(loaded).sort());
    for (const [name, method] of Object.entries(wire.FederationServiceWire)) {
      expect({ path: method.path, requestStream: method.requestStream, responseStream: method.responseStream }, name).toEqual({
        path: loaded[name]!.path,
        requestStream: loaded[name]!.requestStream,
        responseStream: loaded[name]!.responseStream,
      });
    }
  });

  it('decode bytes fields as views of the message, not copies (a model chunk is read where it arrived)', () => {
    const data = Buffer.alloc(1000, 7);
    const bytes = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), wire.encodeAssignmentAndModel({ modelData: data })]).subarray(5);
    const decoded = wire.decodeAssignmentAndModel(bytes);
    expect(decoded.part).toBe('modelData');
    expect(decoded.modelData!.buffer).toBe(bytes.buffer);
    expect(decoded.modelData!.equals(data)).toBe(true);
  });
});
