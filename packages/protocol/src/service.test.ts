import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';
import { EncodedModelChunk, encodeModelChunk, federationServiceDefinition } from './service.js';
import { fromConfigMessages, toConfigMessages } from './model.js';

describe('DownloadModel messages serialized once', () => {
  const definition = federationServiceDefinition().DownloadModel;
  const header = { header: { modelVersion: 7, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: 3, sha256: Buffer.alloc(32, 0xab) } } as const;
  const data = { data: Buffer.from([1, 2, 3]) };

  it('encodes exactly what the service would serialize, and devices decode it back', () => {
    for (const message of [header, data]) {
      const encoded = encodeModelChunk(message);
      expect(encoded).toBeInstanceOf(EncodedModelChunk);
      expect(encoded.bytes.equals(definition.responseSerialize(message))).toBe(true);
      // The server writes an encoded message as the bytes it holds.
      expect(definition.responseSerialize(encoded as never)).toBe(encoded.bytes);
    }
    expect(definition.responseDeserialize(encodeModelChunk(header).bytes)).toMatchObject({
      header: { modelVersion: 7, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: 3 },
    });
    expect([...definition.responseDeserialize(encodeModelChunk(data).bytes).data!]).toEqual([1, 2, 3]);
  });

  it('has grpc-js write an encoded message as its one framed buffer, not a fresh copy per call', () => {
    definition.responseSerialize(header); // federationServiceDefinition() is what installs the path
    const { BaseServerInterceptingCall } = createRequire(import.meta.url)('@grpc/grpc-js/build/src/server-interceptors.js');
    const encoded = encodeModelChunk(data);
    // gRPC's Length-Prefixed-Message: flag 0 (uncompressed), 4-byte big-endian length, the message.
    expect([...encoded.framed.subarray(0, 5)]).toEqual([0, 0, 0, 0, encoded.bytes.byteLength]);
    expect(encoded.framed.subarray(5).equals(encoded.bytes)).toBe(true);
    const call = Object.create(BaseServerInterceptingCall.prototype, { handler: { value: { serialize: definition.responseSerialize } } });
    expect(call.serializeMessage(encoded)).toBe(encoded.framed);
    expect(call.serializeMessage(encoded)).toBe(call.serializeMessage(encoded));
    // Any other message is framed as grpc-js always did.
    expect(call.serializeMessage(data).equals(encoded.framed)).toBe(true);
    expect(call.serializeMessage(data)).not.toBe(encoded.framed);
  });

  it('keeps the other methods as loaded', () => {
    const request = federationServiceDefinition().DownloadModel.requestSerialize({ modelVersion: 3, latest: false });
    expect(federationServiceDefinition().DownloadModel.requestDeserialize(request)).toMatchObject({ modelVersion: 3, latest: false });
    expect(federationServiceDefinition()).toBe(federationServiceDefinition());
  });
});

describe('Assignment.config (fit config, field 13)', () => {
  const method = federationServiceDefinition().WaitForAssignment;
  const base = { roundId: 'r', roundNumber: 2, modelVersion: 1, deadlineUnixMs: 5, maxUpdateBytes: 16, maxExampleCount: 9 };

  it('carries numbers, strings and booleans to the device', () => {
    const config = { proximalMu: 0.01, mode: 'prox', evaluateOnly: false, epochsOverride: 3 };
    const bytes = method.responseSerialize({ assignment: { ...base, config: toConfigMessages(config) } });
    const back = method.responseDeserialize(bytes);
    expect(fromConfigMessages(back.assignment!.config)).toEqual(config);
  });

  it('stays wire compatible: an assignment without the field decodes to an empty config, and old fields keep their numbers', () => {
    const bytes = method.responseSerialize({ assignment: base });
    const back = method.responseDeserialize(bytes);
    expect(fromConfigMessages(back.assignment!.config)).toEqual({});
    expect(back.assignment).toMatchObject({ roundNumber: 2, maxExampleCount: 9 });
  });
});

describe('WaitForAssignmentAndModel (the long-poll and the model in one stream)', () => {
  const method = federationServiceDefinition().WaitForAssignmentAndModel;

  it("writes DownloadModel's encoded messages as they are, and they decode as the model parts", () => {
    const header = encodeModelChunk({ header: { modelVersion: 4, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: 2, sha256: Buffer.alloc(32, 1) } });
    const data = encodeModelChunk({ data: Buffer.from([9, 8]) });
    expect(method.responseSerialize(header as never)).toBe(header.bytes);
    expect(method.responseDeserialize(header.bytes)).toMatchObject({ part: 'modelHeader', modelHeader: { modelVersion: 4, sizeBytes: 2 } });
    expect(method.responseDeserialize(data.bytes)).toMatchObject({ part: 'modelData' });
    expect([...method.responseDeserialize(data.bytes).modelData!]).toEqual([9, 8]);
  });

  it('carries the long-poll answer, and the held version only when set (proto3 optional: 0 is a version)', () => {
    const answer = method.responseSerialize({ answer: { assignment: { roundId: 'r', roundNumber: 3, modelVersion: 2 } } });
    expect(method.responseDeserialize(answer)).toMatchObject({ part: 'answer', answer: { assignment: { roundNumber: 3, modelVersion: 2 } } });
    expect(method.requestDeserialize(method.requestSerialize({ waitMs: 5, heldModelVersion: 0 }))).toMatchObject({ waitMs: 5, heldModelVersion: 0 });
    expect(method.requestDeserialize(method.requestSerialize({ waitMs: 5 })).heldModelVersion).toBeUndefined();
  });
});
