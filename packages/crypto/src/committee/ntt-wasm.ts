/**
 * The committee decryption's product and inverse NTT (ring.ts `nttInverseUnscaled` of a ⊙ b) in
 * WebAssembly with 64-bit integers, generated here as bytes (no toolchain, no binary in the tree).
 * JavaScript has no 64-bit integer product, so ring.ts multiplies mod q (44 bits) in float64 from
 * 26-bit limbs (about 35 operations and five roundings per product); WebAssembly's i64.mul gives
 * the low 64 bits of a product exactly, which is all a remainder known to be small needs
 * (Shoup's and Harvey's modular products, Harvey 2014, "Faster arithmetic for number-theoretic
 * transforms", with the quotient estimated in float64 as ring.ts does):
 *
 *   h = floor(x · (w/q)) in float64 (w/q precomputed per fixed factor w in [0, q)),
 *   r = x·w - h·q  computed mod 2^64 (wrapping i64 arithmetic), plus q when negative:
 *
 * for x < 2^46 the float64 product is within 2^-6 of x·w/q, so h is floor(x·w/q) or one off
 * either way, the true remainder lies in [-q, 2q) (read exactly from the low 64 bits as a signed
 * value), and after the correction in [0, 2q): the lazy bound of ring.ts `mulTwiddleLazy`. The
 * transform is `nttInverseUnscaled`'s Gentleman-Sande butterflies with Harvey's lazy reduction,
 * stage for stage, and its output is the canonical residue in [0, q): equal coefficient for
 * coefficient to ring.ts (ntt-wasm.test.ts compares them on random and extreme inputs).
 *
 * Memory (one instance per thread, 3 pages): [0, 48 KiB) the inverse twiddles as (w as i64, w/q as
 * f64, unused) 24-byte records, [48 KiB, 96 KiB) the fixed factor b likewise, [96 KiB, 112 KiB) the
 * input a (N float64), [112 KiB, 128 KiB) the output (N float64, i64 while the transform runs),
 * [128 KiB, 144 KiB) a c0 sum's polynomial to decode with (`mulInverseDecode`). The fixed factor
 * may be secret (NTT(S_D)·N^-1): {@link NttWasm.erase} zeroes it, the input, output and c0.
 */
import { CryptoError } from '../errors.js';

const N = 2048;
const Q = 2 ** 44 - 2 ** 14 + 1;
const TW = 0;
const BF = N * 24;
const IN = 2 * N * 24;
const OUT = IN + N * 8;
const C0 = OUT + N * 8;
const PAGES = 3;

/** One thread's instance. */
export interface NttWasm {
  /** Loads the fixed factor b (N residues in [0, q), e.g. a FixedMultiplier's first N limbs). */
  setFactor(b: Float64Array): void;
  /** out = nttInverseUnscaled(a ⊙ b) for a in [0, q) (N values each). */
  mulInverseUnscaled(a: Float64Array, out: Float64Array): void;
  /**
   * out[k] = Math.round(centre((c0Sum[k] + v_k) mod q) · inverseDelta) with v = nttInverseUnscaled(a ⊙ b),
   * for a and c0Sum in [0, q) and inverseDelta = 2^-deltaBits (rlwe.ts decryptPolynomials' decoding).
   */
  mulInverseDecode(a: Float64Array, c0Sum: Float64Array, inverseDelta: number, out: Float64Array): void;
  /** Zeroes the fixed factor and the input and output areas. */
  erase(): void;
  /** Tests: whether the factor, input and output areas are all zero. */
  scratchIsZero(): boolean;
  /** Tests: the transform's modular product x·w, in [0, 2q) and ≡ x·w (mod q), for x < 2^46 and w in [0, q). */
  mulLazy(x: bigint, w: bigint): bigint;
}

// --- A minimal WebAssembly encoder (the binary format, WebAssembly Core Specification §5). ---
const uleb = (value: number): number[] => {
  const out: number[] = [];
  let v = value;
  do {
    let byte = v & 0x7f;
    v = Math.floor(v / 128);
    if (v !== 0) byte |= 0x80;
    out.push(byte);
  } while (v !== 0);
  return out;
};
const sleb = (value: bigint): number[] => {
  const out: number[] = [];
  let v = value;
  for (;;) {
    const byte = Number(v & 0x7fn);
    v >>= 7n;
    const signBit = (byte & 0x40) !== 0;
    if ((v === 0n && !signBit) || (v === -1n && signBit)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
};
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()];
const f64Bytes = (value: number): number[] => Array.from(new Uint8Array(new Float64Array([value]).buffer));

const I32 = 0x7f;
const I64 = 0x7e;
const F64 = 0x7c;
const op = {
  block: 0x02, loop: 0x03, br: 0x0c, brIf: 0x0d, end: 0x0b, select: 0x1b, void: 0x40,
  get: 0x20, set: 0x21, tee: 0x22,
  i64Load: 0x29, f64Load: 0x2b, i64Store: 0x37, f64Store: 0x39,
  i32Const: 0x41, i64Const: 0x42, f64Const: 0x44,
  i32Eqz: 0x45, i32LtU: 0x49, i32GtU: 0x4b, i32GeU: 0x4f,
  i64LtS: 0x53, i64GtS: 0x55, i64GeS: 0x59, i64GeU: 0x5a,
  i32Add: 0x6a, i32Sub: 0x6b, i32Mul: 0x6c, i32Shl: 0x74, i32ShrU: 0x76,
  i64Add: 0x7c, i64Sub: 0x7d, i64Mul: 0x7e, i64And: 0x83, i64Shl: 0x86, i64ShrU: 0x88,
  f64Floor: 0x9c, f64Add: 0xa0, f64Mul: 0xa2, f64Div: 0xa3, f64Copysign: 0xa6, i64TruncF64U: 0xb1, f64ConvertI64S: 0xb9, f64ConvertI64U: 0xba,
} as const;

/** A function body under construction: locals by name, instructions as bytes. */
class Body {
  readonly code: number[] = [];
  private readonly locals = new Map<string, { index: number; type: number }>();
  constructor(params: readonly [string, number][]) {
    for (const [name, type] of params) this.locals.set(name, { index: this.locals.size, type });
    this.params = params.length;
  }
  private readonly params: number;
  local(name: string, type: number): void {
    if (!this.locals.has(name)) this.locals.set(name, { index: this.locals.size, type });
  }
  private at(name: string): number {
    const l = this.locals.get(name);
    if (l === undefined) throw new Error(`no local ${name}`);
    return l.index;
  }
  get(name: string): this {
    this.code.push(op.get, ...uleb(this.at(name)));
    return this;
  }
  set(name: string): this {
    this.code.push(op.set, ...uleb(this.at(name)));
    return this;
  }
  i32(value: number): this {
    this.code.push(op.i32Const, ...sleb(BigInt(value)));
    return this;
  }
  i64(value: bigint | number): this {
    this.code.push(op.i64Const, ...sleb(BigInt(value)));
    return this;
  }
  f64(value: number): this {
    this.code.push(op.f64Const, ...f64Bytes(value));
    return this;
  }
  emit(...bytes: number[]): this {
    this.code.push(...bytes);
    return this;
  }
  /** Memory access with a static offset (alignment 8). */
  mem(opcode: number, offset = 0): this {
    this.code.push(opcode, 3, ...uleb(offset));
    return this;
  }
  /** `for (counter = from; counter < limit; counter += step)` over i32 locals, `body` inside. */
  forLoop(counter: string, from: () => void, limit: () => void, step: number, body: () => void): this {
    from();
    this.set(counter);
    this.emit(op.block, op.void, op.loop, op.void);
    this.get(counter);
    limit();
    this.emit(op.i32GeU, op.brIf, 1);
    body();
    this.get(counter).i32(step).emit(op.i32Add).set(counter);
    this.emit(op.br, 0, op.end, op.end);
    return this;
  }
  /** x - (x >= bound ? bound : 0) into `target` (x in the local `x`; i64, unsigned). */
  reduceInto(target: string, x: string, bound: bigint): this {
    this.get(x).i64(bound).i64(0).get(x).i64(bound).emit(op.i64GeU, op.select, op.i64Sub).set(target);
    return this;
  }
  /**
   * target = x·w - h·q mod 2^64 with h = floor(x · (w/q)) from float64 (w/q precomputed): for
   * x < 2^46 the float64 product is within 2^-6 of x·w/q, so h is floor(x·w/q) or one off
   * either way, the remainder in [-q, 2q), and q added to a negative one leaves it in [0, 2q).
   * `w` an i64 local, `wq` an f64 local.
   */
  mulLazy(target: string, x: string, w: string, wq: string): this {
    this.get(x).emit(op.f64ConvertI64U).get(wq).emit(op.f64Mul, op.i64TruncF64U).i64(Q).emit(op.i64Mul);
    this.local('_hq', I64);
    this.set('_hq');
    this.get(x).get(w).emit(op.i64Mul).get('_hq').emit(op.i64Sub).set(target);
    // target += target < 0 ? q : 0
    this.get(target).i64(Q).i64(0).get(target).i64(0).emit(op.i64LtS, op.select, op.i64Add).set(target);
    return this;
  }
  encode(): number[] {
    const extra = [...this.locals.values()].slice(this.params);
    const content = [...vec(extra.map((l) => [1, l.type])), ...this.code, op.end];
    return [...uleb(content.length), ...content];
  }
}

/** prepare(dst, count): for k < count, the float64 residue w = IN[k] becomes the record (w as i64, w/q as f64) at dst + 24k. */
function prepareBody(): Body {
  const f = new Body([
    ['dst', I32],
    ['count', I32],
  ]);
  for (const name of ['k', 'p']) f.local(name, I32);
  f.forLoop(
    'k',
    () => f.i32(0),
    () => f.get('count'),
    1,
    () => {
      f.get('dst').get('k').i32(24).emit(op.i32Mul, op.i32Add).set('p');
      f.get('p').get('k').i32(3).emit(op.i32Shl).mem(op.f64Load, IN).emit(op.i64TruncF64U).mem(op.i64Store, 0);
      f.get('p').get('k').i32(3).emit(op.i32Shl).mem(op.f64Load, IN).f64(Q).emit(op.f64Div).mem(op.f64Store, 8);
    },
  );
  return f;
}

/** mulInverse(): OUT = nttInverseUnscaled(IN ⊙ factor), as float64 residues in [0, q). */
function mulInverseBody(decode: boolean): Body {
  const f = new Body(decode ? [['inverseDelta', F64]] : []);
  for (const name of ['k', 'p', 'i', 'j', 'end', 't', 'h', 'j1', 'tp', 'd']) f.local(name, I32);
  for (const name of ['x', 'u', 'v', 's', 'r', 'w']) f.local(name, I64);
  f.local('wq', F64);
  const TWO_Q = 2n * BigInt(Q);
  // The product, each in [0, 2q): OUT[k] = a[k]·b[k].
  f.forLoop(
    'k',
    () => f.i32(0),
    () => f.i32(N),
    1,
    () => {
      f.get('k').i32(3).emit(op.i32Shl).set('p');
      f.get('p').mem(op.f64Load, IN).emit(op.i64TruncF64U).set('x');
      f.get('k').i32(24).emit(op.i32Mul).set('tp');
      f.get('tp').mem(op.i64Load, BF).set('w');
      f.get('tp').mem(op.f64Load, BF + 8).set('wq');
      f.mulLazy('r', 'x', 'w', 'wq');
      f.get('p').get('r').mem(op.i64Store, OUT);
    },
  );
  // Stages m = N .. 4 (h = m/2 twiddles, half-width t): values kept in [0, 2q).
  f.i32(1).set('t');
  f.i32(N / 2).set('h');
  f.emit(op.block, op.void, op.loop, op.void);
  f.get('h').i32(1).emit(op.i32GtU, op.i32Eqz, op.brIf, 1);
  f.i32(0).set('j1');
  f.get('t').i32(3).emit(op.i32Shl).set('d'); // byte distance between the butterfly's two values
  f.forLoop(
    'i',
    () => f.i32(0),
    () => f.get('h'),
    1,
    () => {
      f.get('h').get('i').emit(op.i32Add).i32(24).emit(op.i32Mul).set('tp');
      f.get('tp').mem(op.i64Load, TW).set('w');
      f.get('tp').mem(op.f64Load, TW + 8).set('wq');
      f.get('j1').get('t').emit(op.i32Add).set('end');
      f.forLoop(
        'j',
        () => f.get('j1'),
        () => f.get('end'),
        1,
        () => {
          f.get('j').i32(3).emit(op.i32Shl).set('p');
          f.get('p').mem(op.i64Load, OUT).set('u');
          f.get('p').get('d').emit(op.i32Add).mem(op.i64Load, OUT).set('v');
          f.get('u').get('v').emit(op.i64Add).set('s');
          f.reduceInto('s', 's', TWO_Q);
          f.get('p').get('s').mem(op.i64Store, OUT);
          f.get('u').get('v').emit(op.i64Sub).i64(TWO_Q).emit(op.i64Add).set('x');
          f.mulLazy('r', 'x', 'w', 'wq');
          f.get('p').get('d').emit(op.i32Add).get('r').mem(op.i64Store, OUT);
        },
      );
      f.get('j1').get('t').i32(1).emit(op.i32Shl, op.i32Add).set('j1');
    },
  );
  f.get('t').i32(1).emit(op.i32Shl).set('t');
  f.get('h').i32(1).emit(op.i32ShrU).set('h');
  f.emit(op.br, 0, op.end, op.end);
  // The last stage (t = N/2, twiddle 1) reduces into [0, q); then to float64 in place, or with
  // `decode` each value v becomes round(centre((C0 + v) mod q) · inverseDelta) (see decodeInto).
  f.i32(24).set('tp');
  f.get('tp').mem(op.i64Load, TW).set('w');
  f.get('tp').mem(op.f64Load, TW + 8).set('wq');
  const store = (value: string, offset: number): void => {
    if (!decode) {
      f.get('p').get(value).emit(op.f64ConvertI64U).mem(op.f64Store, OUT + offset);
      return;
    }
    decodeInto(f, value, offset);
  };
  f.forLoop(
    'j',
    () => f.i32(0),
    () => f.i32(N / 2),
    1,
    () => {
      f.get('j').i32(3).emit(op.i32Shl).set('p');
      f.get('p').mem(op.i64Load, OUT).set('u');
      f.get('p').mem(op.i64Load, OUT + (N / 2) * 8).set('v');
      f.get('u').get('v').emit(op.i64Add).set('s');
      f.reduceInto('s', 's', TWO_Q);
      f.reduceInto('s', 's', BigInt(Q));
      store('s', 0);
      f.get('u').get('v').emit(op.i64Sub).i64(TWO_Q).emit(op.i64Add).set('x');
      f.mulLazy('r', 'x', 'w', 'wq');
      f.reduceInto('r', 'r', BigInt(Q));
      store('r', (N / 2) * 8);
    },
  );
  return f;
}

/**
 * Stores at OUT + p + offset the decoded value of the residue `value` (in [0, q)) with the c0 sum's
 * coefficient at C0 + p + offset (in [0, q)), as rlwe.ts decodes it in float64:
 *   t = c0 + value; t -= q if t >= q; t -= q if t > (q - 1)/2 (centred); y = t · inverseDelta;
 *   out = Math.round(y) = copysign(floor(y + 0.5), y).
 * y = t·2^-deltaBits with |t| < 2^43, so y + 0.5 is exact and its floor is y rounded half up, as
 * Math.round; copysign gives Math.round's -0 for y in [-0.5, 0) (and keeps every other sign).
 */
function decodeInto(f: Body, value: string, offset: number): void {
  f.local('_t', I64);
  f.local('_y', F64);
  f.get('p').mem(op.f64Load, C0 + offset).emit(op.i64TruncF64U).get(value).emit(op.i64Add).set('_t');
  f.reduceInto('_t', '_t', BigInt(Q));
  // t - (t > (q - 1)/2 ? q : 0), signed
  f.get('_t').i64(Q).i64(0).get('_t').i64((Q - 1) / 2).emit(op.i64GtS, op.select, op.i64Sub).set('_t');
  f.get('_t').emit(op.f64ConvertI64S).get('inverseDelta').emit(op.f64Mul).set('_y');
  f.get('p').get('_y').f64(0.5).emit(op.f64Add, op.f64Floor).get('_y').emit(op.f64Copysign).mem(op.f64Store, OUT + offset);
}

/** mulLazy(x, w, w/q): one modular product as the transform computes it (tests). */
function mulLazyBody(): Body {
  const f = new Body([
    ['x', I64],
    ['w', I64],
    ['wq', F64],
  ]);
  f.local('r', I64);
  f.mulLazy('r', 'x', 'w', 'wq');
  f.get('r');
  return f;
}

function moduleBytes(): Uint8Array {
  const types = section(1, vec([[0x60, ...vec([[I32], [I32]]), 0], [0x60, 0, 0], [0x60, ...vec([[I64], [I64], [F64]]), ...vec([[I64]])], [0x60, ...vec([[F64]]), 0]]));
  const funcs = section(3, vec([[0], [1], [2], [3]]));
  const memory = section(5, vec([[0x01, PAGES, PAGES]]));
  const name = (s: string): number[] => vec(Array.from(new TextEncoder().encode(s), (b) => [b]));
  const exports = section(7, vec([[...name('memory'), 0x02, 0], [...name('prepare'), 0x00, 0], [...name('mulInverse'), 0x00, 1], [...name('mulLazy'), 0x00, 2], [...name('mulInverseDecode'), 0x00, 3]]));
  const code = section(10, vec([prepareBody().encode(), mulInverseBody(false).encode(), mulLazyBody().encode(), mulInverseBody(true).encode()]));
  return Uint8Array.from([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, ...types, ...funcs, ...memory, ...exports, ...code]);
}

/** The part of the WebAssembly JS API used here (the package's TypeScript libs declare no DOM types). */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: Record<string, unknown> };
}
const wasmApi = (globalThis as { WebAssembly?: WasmApi }).WebAssembly;

let compiled: object | null | undefined;

/**
 * A new instance for this thread with the inverse twiddles `inverse` (N residues, ring.ts's bit-
 * reversed ψ^-1 powers) loaded; null when WebAssembly is unavailable (ring.ts then computes in float64).
 */
export function createNttWasm(inverse: Float64Array): NttWasm | null {
  if (compiled === undefined) {
    try {
      compiled = wasmApi === undefined ? null : new wasmApi.Module(moduleBytes());
    } catch {
      compiled = null;
    }
  }
  if (compiled === null || wasmApi === undefined) return null;
  const instance = new wasmApi.Instance(compiled, {});
  const { memory, prepare, mulInverse, mulInverseDecode, mulLazy } = instance.exports as {
    memory: { buffer: ArrayBuffer };
    prepare: (dst: number, count: number) => void;
    mulInverse: () => void;
    mulInverseDecode: (inverseDelta: number) => void;
    mulLazy: (x: bigint, w: bigint, wq: number) => bigint;
  };
  const bytes = new Uint8Array(memory.buffer);
  const input = new Float64Array(memory.buffer, IN, N);
  const output = new Float64Array(memory.buffer, OUT, N);
  const c0 = new Float64Array(memory.buffer, C0, N);
  if (inverse.length !== N) throw new CryptoError('invalid_argument', `twiddles are ${N} values`);
  input.set(inverse);
  prepare(TW, N);
  input.fill(0);
  return {
    setFactor(b) {
      if (b.length < N) throw new CryptoError('invalid_argument', `a fixed factor has ${N} values`);
      input.set(b.subarray(0, N));
      prepare(BF, N);
      input.fill(0);
    },
    mulInverseUnscaled(a, out) {
      input.set(a);
      mulInverse();
      out.set(output);
    },
    mulInverseDecode(a, c0Sum, inverseDelta, out) {
      input.set(a);
      c0.set(c0Sum);
      mulInverseDecode(inverseDelta);
      out.set(output);
    },
    erase() {
      bytes.fill(0, BF, C0 + N * 8);
    },
    scratchIsZero: () => bytes.subarray(BF, C0 + N * 8).every((b) => b === 0),
    mulLazy: (x, w) => mulLazy(x, w, Number(w) / Q),
  };
}
