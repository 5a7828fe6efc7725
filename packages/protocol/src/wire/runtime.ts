/**
 * Protocol Buffers wire format (https://protobuf.dev/programming-guides/encoding/): the reader and
 * writer under the generated codecs of ./federation.ts. Behaves as protobufjs's Reader and Writer
 * (which @grpc/proto-loader uses) on the values the generated code passes: varints of up to 10
 * bytes, 64-bit integers as JavaScript numbers (longs: Number), little-endian fixed 32/64-bit
 * floats, UTF-8 strings, and bytes read as views of the message's buffer (no copy).
 */

/** A 64-bit integer given as a number, as protobufjs's fromObject reads it through Long.fromValue (truncated, saturated). */
export function longToNumber(value: unknown, unsigned: boolean): number {
  let n = typeof value === 'string' ? Number.parseInt(value, 10) : Number(value);
  if (!Number.isFinite(n)) return Number.isNaN(n) ? 0 : n > 0 ? (unsigned ? 2 ** 64 - 1 : 2 ** 63 - 1) : unsigned ? 0 : -(2 ** 63);
  n = Math.trunc(n);
  if (unsigned) return n < 0 ? 0 : Math.min(n, 2 ** 64 - 1);
  return Math.max(-(2 ** 63), Math.min(n, 2 ** 63 - 1));
}

function indexOutOfRange(r: Reader, length = 1): RangeError {
  return new RangeError(`index out of range: ${r.pos} + ${length} > ${r.len}`);
}

export class Reader {
  /** Nesting limit of messages (protobufjs's and protoc's default recursion limit). */
  static readonly MAX_DEPTH = 100;
  /** The value of an absent bytes field (a new empty Buffer each time, as protobufjs gives). */
  static get EMPTY(): Buffer {
    return Buffer.alloc(0);
  }
  readonly buf: Buffer;
  pos = 0;
  readonly len: number;

  constructor(bytes: Uint8Array) {
    this.buf = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.len = this.buf.length;
  }

  /** A varint's low 32 bits, unsigned (protobufjs's uint32: reads up to 10 bytes). */
  uint32(): number {
    const buf = this.buf;
    let value = 0;
    for (let shift = 0; shift < 70; shift += 7) {
      if (this.pos >= this.len) throw indexOutOfRange(this);
      const b = buf[this.pos++]!;
      if (shift < 32) value = (value | ((b & 127) << shift)) >>> 0;
      if (b < 128) return value;
    }
    throw new Error('invalid varint encoding');
  }

  int32(): number {
    return this.uint32() | 0;
  }

  bool(): boolean {
    return this.uint32() !== 0;
  }

  /** A varint as a 64-bit two's-complement integer, low and high 32-bit halves (unsigned). */
  private long(): [number, number] {
    let lo = 0;
    let hi = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.len) throw indexOutOfRange(this);
      const b = this.buf[this.pos++]!;
      const bits = b & 127;
      const shift = i * 7;
      if (shift < 28) lo = (lo | (bits << shift)) >>> 0;
      else if (shift === 28) {
        lo = (lo | (bits << 28)) >>> 0;
        hi = (hi | (bits >> 4)) >>> 0;
      } else hi = (hi | (bits << (shift - 32))) >>> 0;
      if (b < 128) return [lo, hi];
    }
    throw new Error('invalid varint encoding');
  }

  uint64(): number {
    const [lo, hi] = this.long();
    return lo + hi * 4294967296;
  }

  int64(): number {
    const [lo, hi] = this.long();
    if (hi >>> 31) {
      const nlo = (~lo + 1) >>> 0;
      let nhi = ~hi >>> 0;
      if (!nlo) nhi = (nhi + 1) >>> 0;
      return -(nlo + nhi * 4294967296);
    }
    return lo + hi * 4294967296;
  }

  double(): number {
    if (this.pos + 8 > this.len) throw indexOutOfRange(this, 8);
    const value = this.buf.readDoubleLE(this.pos);
    this.pos += 8;
    return value;
  }

  float(): number {
    if (this.pos + 4 > this.len) throw indexOutOfRange(this, 4);
    const value = this.buf.readFloatLE(this.pos);
    this.pos += 4;
    return value;
  }

  /** Length-delimited bytes: a view of the buffer. */
  bytes(): Buffer {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.len) throw indexOutOfRange(this, length);
    this.pos = end;
    return this.buf.subarray(start, end);
  }

  string(): string {
    const length = this.uint32();
    const start = this.pos;
    const end = start + length;
    if (end > this.len) throw indexOutOfRange(this, length);
    this.pos = end;
    return this.buf.toString('utf8', start, end);
  }

  private skip(length?: number): void {
    if (length === undefined) {
      do {
        if (this.pos >= this.len) throw indexOutOfRange(this);
      } while (this.buf[this.pos++]! & 128);
    } else {
      if (this.pos + length > this.len) throw indexOutOfRange(this, length);
      this.pos += length;
    }
  }

  /** Skips a field of an unknown number (protobufjs's skipType, groups included). */
  skipType(wireType: number, depth = 0): void {
    if (depth > Reader.MAX_DEPTH) throw new Error('maximum nesting depth exceeded');
    switch (wireType) {
      case 0:
        this.skip();
        break;
      case 1:
        this.skip(8);
        break;
      case 2:
        this.skip(this.uint32());
        break;
      case 3:
        while ((wireType = this.uint32() & 7) !== 4) this.skipType(wireType, depth + 1);
        break;
      case 5:
        this.skip(4);
        break;
      default:
        throw new Error(`invalid wire type ${wireType} at offset ${this.pos}`);
    }
  }
}

/** Appends protobuf values to a growing buffer; `finish` returns the bytes written (a view). */
export class Writer {
  private buf: Buffer = Buffer.allocUnsafe(64);
  private pos = 0;

  private reserve(bytes: number): void {
    if (this.pos + bytes <= this.buf.length) return;
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + bytes));
    this.buf.copy(next, 0, 0, this.pos);
    this.buf = next;
  }

  uint32(value: number): this {
    value >>>= 0;
    this.reserve(5);
    while (value > 127) {
      this.buf[this.pos++] = (value & 127) | 128;
      value >>>= 7;
    }
    this.buf[this.pos++] = value;
    return this;
  }

  /** A 64-bit two's-complement varint from low and high 32-bit halves. */
  private long(lo: number, hi: number): this {
    this.reserve(10);
    while (hi) {
      this.buf[this.pos++] = (lo & 127) | 128;
      lo = ((lo >>> 7) | (hi << 25)) >>> 0;
      hi >>>= 7;
    }
    while (lo > 127) {
      this.buf[this.pos++] = (lo & 127) | 128;
      lo >>>= 7;
    }
    this.buf[this.pos++] = lo;
    return this;
  }

  /** Negative values take 10 bytes (sign-extended to 64 bits), as protobufjs writes them. */
  int32(value: number): this {
    return value < 0 ? this.long(value >>> 0, 0xffffffff) : this.uint32(value);
  }

  bool(value: boolean): this {
    return this.uint32(value ? 1 : 0);
  }

  /** protobufjs's LongBits.fromNumber: two's complement of an integral number. */
  private fromNumber(value: number): this {
    if (value === 0) return this.long(0, 0);
    const negative = value < 0;
    if (negative) value = -value;
    let lo = value >>> 0;
    let hi = ((value - lo) / 4294967296) >>> 0;
    if (negative) {
      hi = ~hi >>> 0;
      lo = ~lo >>> 0;
      if (++lo > 4294967295) {
        lo = 0;
        if (++hi > 4294967295) hi = 0;
      }
    }
    return this.long(lo, hi);
  }

  uint64(value: number): this {
    return this.fromNumber(value);
  }

  int64(value: number): this {
    return this.fromNumber(value);
  }

  double(value: number): this {
    this.reserve(8);
    this.buf.writeDoubleLE(value, this.pos);
    this.pos += 8;
    return this;
  }

  float(value: number): this {
    this.reserve(4);
    this.buf.writeFloatLE(value, this.pos);
    this.pos += 4;
    return this;
  }

  bytes(value: Uint8Array): this {
    this.uint32(value.byteLength);
    this.reserve(value.byteLength);
    this.buf.set(value, this.pos);
    this.pos += value.byteLength;
    return this;
  }

  string(value: string): this {
    const length = Buffer.byteLength(value, 'utf8');
    this.uint32(length);
    this.reserve(length);
    this.buf.write(value, this.pos, length, 'utf8');
    this.pos += length;
    return this;
  }

  finish(): Buffer {
    return this.buf.subarray(0, this.pos);
  }
}
