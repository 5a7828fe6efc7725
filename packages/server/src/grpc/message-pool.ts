/**
 * Reassembly of large gRPC request messages into reused buffers.
 *
 * grpc-js (1.14) reassembles each received message from the HTTP/2 DATA frames it spans
 * (`StreamDecoder.write`: the frames' slices, then `Buffer.concat` into a fresh buffer of the
 * message's size). For an update upload that is a fresh 400 kB allocation per device and round:
 * measured on this machine, `Buffer.concat` of 25 x 16 KiB into a new 400 kB buffer took ~300 us
 * (allocation, first-touch page faults, and the garbage collections the external memory brings
 * on), a copy of the same bytes into a buffer already in use ~10 us. In the coordinator's
 * profile (`npm run -s bench:rounds -- --only small --paths plaintext` with
 * BENCH_CPU_PROF_WINDOW) that concat was the largest self time of the upload path.
 *
 * {@link installPooledMessageDecoder} replaces the decoder's `write` with one that gives the same
 * messages (same bytes, same order, same errors) but copies a message of at least
 * {@link POOLED_MESSAGE_MIN_BYTES} into a buffer taken from a pool. Whoever is done with such a
 * message gives its buffer back with {@link releaseMessageBuffer} (SubmitUpdate does, once the
 * engine has stored and folded the update); a message never given back is simply collected like
 * any other buffer. The pool keeps at most {@link MESSAGE_POOL_MAX_BYTES} of free buffers, so it
 * adds at most that much to the coordinator's memory.
 *
 * A pooled message starts at an offset chosen so that the payload of a SubmitUpdate chunk message
 * (field 2, `bytes chunk`: one tag byte and a varint length before the bytes) is 4-byte aligned:
 * a float32 update is then read as a Float32Array view instead of being copied
 * (aggregation/round-aggregator.ts). Messages of any other layout are decoded the same way.
 *
 * grpc-js has no option for any of this; its decoder is reached by its module path. Should a
 * grpc-js version move it, messages are reassembled as before (slower, nothing else changes) and
 * the test that checks this path fails.
 */
import { createRequire } from 'node:module';

/** Messages from this size (the length in their gRPC prefix) are reassembled into pooled buffers. */
export const POOLED_MESSAGE_MIN_BYTES = 64 * 1024;
/**
 * Free buffers the pool keeps at most, bytes (beyond it a released buffer is left to the collector):
 * the gRPC server's default upload budget (federation-service.ts), so that the uploads of a round
 * (100 x 400 kB at 100 clients) reuse the previous round's buffers instead of allocating ~80% of
 * them afresh, each a 400 kB first-touch allocation that also brings V8's next full garbage
 * collection closer. Lent and free buffers together stay within the most ever lent at once
 * (admitted uploads, bounded by the upload budget), as pooled ones are lent before any new one is
 * allocated; the free ones stay resident between rounds, where fresh ones would be collected
 * (bench:rounds at 1,000 clients: peak RSS no worse, bench/rounds/ab-message-pool-32mib-1000-*.json).
 */
export const MESSAGE_POOL_MAX_BYTES = 32 * 2 ** 20;

/** Free buffers, and the ones handed out (a released view is taken back only if its buffer is one of them, once). */
const free: ArrayBuffer[] = [];
let freeBytes = 0;
const lent = new WeakSet<ArrayBuffer>();

/** Bytes of a varint encoding `n` (protobuf). */
function varintBytes(n: number): number {
  let bytes = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    bytes++;
  }
  return bytes;
}

/**
 * A buffer for a framed message (5-byte gRPC prefix, then `size` bytes), from the pool when one
 * fits (not more than twice the size needed), placed so that a `bytes` field right after its tag
 * and length (a SubmitUpdate chunk) starts at a multiple of 4.
 */
function pooledFrame(size: number): Buffer {
  const payloadLength = size - 1 - varintBytes(size - 1);
  const payloadAt = 5 + 1 + varintBytes(Math.max(payloadLength, 0));
  const start = (4 - (payloadAt % 4)) % 4;
  const need = start + 5 + size;
  let buffer: ArrayBuffer | undefined;
  for (let i = free.length - 1; i >= 0; i--) {
    const candidate = free[i]!;
    if (candidate.byteLength >= need && candidate.byteLength <= 2 * need) {
      buffer = candidate;
      free.splice(i, 1);
      freeBytes -= candidate.byteLength;
      break;
    }
  }
  buffer ??= new ArrayBuffer(need);
  lent.add(buffer);
  return Buffer.from(buffer, start, 5 + size);
}

/**
 * Gives back the buffer of a message reassembled by the pooled decoder, given any view of it (e.g.
 * a `bytes` field decoded from it). Nothing may read or write the message after this. Views of
 * other buffers, and a buffer given back twice, are ignored.
 */
export function releaseMessageBuffer(view: Uint8Array): void {
  const buffer = view.buffer;
  if (!(buffer instanceof ArrayBuffer) || !lent.has(buffer)) return;
  lent.delete(buffer);
  if (freeBytes + buffer.byteLength > MESSAGE_POOL_MAX_BYTES) return;
  free.push(buffer);
  freeBytes += buffer.byteLength;
}

/** Free bytes the pool holds now (for tests). */
export function messagePoolFreeBytes(): number {
  return freeBytes;
}

/** The state grpc-js's StreamDecoder (1.14) keeps, which the pooled `write` uses in the same meaning. */
interface DecoderState {
  maxReadMessageLength: number;
  readState: number;
  readCompressFlag: Buffer;
  readPartialSize: Buffer;
  readSizeRemaining: number;
  readMessageSize: number;
  readPartialMessage: Buffer[];
  readMessageRemaining: number;
  /** The message being reassembled into a pooled buffer, and how much of it is filled. */
  pooled?: Buffer | null;
  pooledAt?: number;
}

const NO_DATA = 0;
const READING_SIZE = 1;
const READING_MESSAGE = 2;

/**
 * grpc-js's `StreamDecoder.prototype.write` (stream-decoder.js, 1.14.x) with one change: a
 * message of at least {@link POOLED_MESSAGE_MIN_BYTES} is copied, as its frames arrive, into a
 * pooled buffer holding its prefix, instead of being concatenated into a fresh one at its end.
 */
function pooledWrite(this: DecoderState, data: Buffer): Buffer[] {
  let readHead = 0;
  let toRead: number;
  const result: Buffer[] = [];
  while (readHead < data.length) {
    switch (this.readState) {
      case NO_DATA:
        this.readCompressFlag = data.slice(readHead, readHead + 1);
        readHead += 1;
        this.readState = READING_SIZE;
        this.readPartialSize.fill(0);
        this.readSizeRemaining = 4;
        this.readMessageSize = 0;
        this.readMessageRemaining = 0;
        this.readPartialMessage = [];
        this.pooled = null;
        break;
      case READING_SIZE:
        toRead = Math.min(data.length - readHead, this.readSizeRemaining);
        data.copy(this.readPartialSize, 4 - this.readSizeRemaining, readHead, readHead + toRead);
        this.readSizeRemaining -= toRead;
        readHead += toRead;
        if (this.readSizeRemaining === 0) {
          this.readMessageSize = this.readPartialSize.readUInt32BE(0);
          if (this.maxReadMessageLength !== -1 && this.readMessageSize > this.maxReadMessageLength) {
            throw new Error(`Received message larger than max (${this.readMessageSize} vs ${this.maxReadMessageLength})`);
          }
          this.readMessageRemaining = this.readMessageSize;
          if (this.readMessageRemaining > 0) {
            this.readState = READING_MESSAGE;
            if (this.readMessageSize >= POOLED_MESSAGE_MIN_BYTES) {
              const frame = pooledFrame(this.readMessageSize);
              frame[0] = this.readCompressFlag[0]!;
              this.readPartialSize.copy(frame, 1, 0, 4);
              this.pooled = frame;
              this.pooledAt = 5;
            }
          } else {
            const message = Buffer.concat([this.readCompressFlag, this.readPartialSize], 5);
            this.readState = NO_DATA;
            result.push(message);
          }
        }
        break;
      case READING_MESSAGE: {
        toRead = Math.min(data.length - readHead, this.readMessageRemaining);
        const pooled = this.pooled;
        if (pooled != null) {
          data.copy(pooled, this.pooledAt!, readHead, readHead + toRead);
          this.pooledAt! += toRead;
        } else this.readPartialMessage.push(data.slice(readHead, readHead + toRead));
        this.readMessageRemaining -= toRead;
        readHead += toRead;
        if (this.readMessageRemaining === 0) {
          if (pooled != null) {
            this.pooled = null;
            result.push(pooled);
          } else {
            const framedMessageBuffers = [this.readCompressFlag, this.readPartialSize].concat(this.readPartialMessage);
            result.push(Buffer.concat(framedMessageBuffers, this.readMessageSize + 5));
          }
          this.readState = NO_DATA;
        }
        break;
      }
      default:
        throw new Error('Unexpected read state');
    }
  }
  return result;
}

let installed: boolean | undefined;

/**
 * Makes grpc-js reassemble large received messages into pooled buffers (idempotent). Returns
 * whether it is in place (false: this grpc-js has no decoder where 1.14 has it; nothing changed).
 */
export function installPooledMessageDecoder(): boolean {
  if (installed !== undefined) return installed;
  let decoder: { prototype: { write?: unknown } } | undefined;
  try {
    decoder = createRequire(import.meta.url)('@grpc/grpc-js/build/src/stream-decoder.js').StreamDecoder;
  } catch {
    decoder = undefined;
  }
  const proto = decoder?.prototype;
  installed = proto !== undefined && typeof proto.write === 'function';
  if (installed) proto!.write = pooledWrite;
  return installed;
}
