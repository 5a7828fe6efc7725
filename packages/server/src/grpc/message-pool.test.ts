import { createRequire } from 'node:module';
import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { federationMethods } from '@veil/protocol';
import { decodeSubmitUpdateRequest } from '@veil/protocol/wire';
import { POOLED_MESSAGE_MIN_BYTES, installPooledMessageDecoder, messagePoolFreeBytes, releaseMessageBuffer } from './message-pool.js';

const { StreamDecoder } = createRequire(import.meta.url)('@grpc/grpc-js/build/src/stream-decoder.js') as {
  StreamDecoder: new (max: number) => { write(data: Buffer): Buffer[] };
};

/** A gRPC Length-Prefixed-Message: flag, 4-byte big-endian length, message. */
const framed = (message: Uint8Array, flag = 0): Buffer => {
  const out = Buffer.alloc(5 + message.byteLength);
  out[0] = flag;
  out.writeUInt32BE(message.byteLength, 1);
  out.set(message, 5);
  return out;
};

/** Splits `bytes` into pieces of `size` (an HTTP/2 sender's DATA frames). */
const frames = (bytes: Buffer, size: number): Buffer[] => {
  const out: Buffer[] = [];
  for (let at = 0; at < bytes.length; at += size) out.push(bytes.subarray(at, at + size));
  return out;
};

const decodeAll = (parts: Buffer[]): Buffer[] => {
  const decoder = new StreamDecoder(-1);
  return parts.flatMap((part) => decoder.write(part));
};

const serialize = federationMethods().SubmitUpdate.requestSerialize as (value: unknown) => Buffer;
/** The server's SubmitUpdate decoder (the generated codec, grpc/federation-service.ts) and proto-loader's: both give the chunk as a view. */
const decoders = [decodeSubmitUpdateRequest, federationMethods().SubmitUpdate.requestDeserialize as (bytes: Buffer) => { chunk?: Buffer }];

describe('pooled message decoder', () => {
  it('is installed in grpc-js', () => {
    expect(installPooledMessageDecoder()).toBe(true);
  });

  it('gives the same messages as they were sent, however the frames split them', () => {
    installPooledMessageDecoder();
    const small = randomBytes(300);
    const large = randomBytes(POOLED_MESSAGE_MIN_BYTES + 12_345);
    const empty = new Uint8Array(0);
    const stream = Buffer.concat([framed(small), framed(large, 1), framed(empty), framed(large)]);
    for (const size of [1, 3, 7, 16_384, 65_535, stream.length]) {
      const out = decodeAll(frames(stream, size));
      expect(out.map((m) => m.toString('hex'))).toEqual([framed(small), framed(large, 1), framed(empty), framed(large)].map((m) => m.toString('hex')));
      for (const m of out) releaseMessageBuffer(m);
    }
  });

  it('still refuses a message above the limit', () => {
    installPooledMessageDecoder();
    const decoder = new StreamDecoder(POOLED_MESSAGE_MIN_BYTES);
    expect(() => decoder.write(framed(new Uint8Array(POOLED_MESSAGE_MIN_BYTES + 1)))).toThrow(/larger than max/);
  });

  it('places an update chunk 4-byte aligned and reuses its buffer once given back, never before', () => {
    installPooledMessageDecoder();
    for (const [bytes, deserialize] of [400_000, POOLED_MESSAGE_MIN_BYTES, 1_048_576].flatMap((n) => decoders.map((d) => [n, d] as const))) {
      const payload = randomBytes(bytes);
      const wire = framed(serialize({ chunk: payload }));
      const [first] = decodeAll(frames(wire, 16_384));
      const chunk = deserialize(first!.subarray(5)).chunk!;
      expect(Buffer.compare(chunk, payload)).toBe(0);
      expect(chunk.byteOffset % 4).toBe(0);
      // Not given back: the next message gets another buffer.
      const [second] = decodeAll(frames(wire, 16_384));
      expect(second!.buffer).not.toBe(first!.buffer);
      releaseMessageBuffer(chunk);
      const free = messagePoolFreeBytes();
      expect(free).toBeGreaterThan(0);
      // Given back twice: taken back once.
      releaseMessageBuffer(chunk);
      expect(messagePoolFreeBytes()).toBe(free);
      const [third] = decodeAll(frames(wire, 16_384));
      expect(third!.buffer).toBe(first!.buffer);
      expect(Buffer.compare(deserialize(third!.subarray(5)).chunk!, payload)).toBe(0);
      releaseMessageBuffer(second!);
      releaseMessageBuffer(third!);
    }
  });

  it('leaves small messages and other buffers alone', () => {
    installPooledMessageDecoder();
    const before = messagePoolFreeBytes();
    const [small] = decodeAll([framed(randomBytes(100))]);
    releaseMessageBuffer(small!);
    releaseMessageBuffer(Buffer.alloc(POOLED_MESSAGE_MIN_BYTES * 2));
    expect(messagePoolFreeBytes()).toBe(before);
  });
});
