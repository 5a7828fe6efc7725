import { describe, expect, it } from 'vitest';
import { bytesToFloat32, float32Bytes, float32ToBytes, float32View } from './codec.js';

describe('float32 <-> little-endian bytes', () => {
  // Special values and their IEEE 754 binary32 encodings, little-endian.
  const cases: Array<[number, number[]]> = [
    [1, [0x00, 0x00, 0x80, 0x3f]],
    [-2.5, [0x00, 0x00, 0x20, 0xc0]],
    [0, [0, 0, 0, 0]],
    [-0, [0, 0, 0, 0x80]],
    [Infinity, [0x00, 0x00, 0x80, 0x7f]],
    [1e-45, [0x01, 0x00, 0x00, 0x00]], // the smallest subnormal
  ];

  it('writes each value as its IEEE 754 bytes, least significant first, into a buffer of its own', () => {
    const values = Float32Array.from(cases.map(([v]) => v));
    const bytes = float32ToBytes(values);
    expect([...bytes]).toEqual(cases.flatMap(([, b]) => b));
    values[0] = 7;
    expect(bytes[3]).toBe(0x3f); // not a view of `values`
  });

  it('encodes a view into a larger array from its own offset only', () => {
    const whole = Float32Array.from([9, 1, -2.5, 9]);
    expect([...float32ToBytes(whole.subarray(1, 3))]).toEqual([...cases[0]![1], ...cases[1]![1]]);
  });

  it('decodes from any byte offset into a new array, and round-trips NaN and -0 bit for bit', () => {
    const raw = cases.flatMap(([, b]) => b);
    const shifted = new Uint8Array(raw.length + 3).subarray(3);
    shifted.set(raw);
    const decoded = bytesToFloat32(shifted);
    expect(Object.is(decoded[3], -0)).toBe(true);
    expect([...decoded]).toEqual(cases.map(([v]) => v === 1e-45 ? Math.fround(1e-45) : v));
    shifted[0] = 0xff;
    expect(decoded[0]).toBe(1); // a copy
    const nan = new Uint8Array([0x01, 0x00, 0xc0, 0x7f]); // a quiet NaN with a payload bit
    expect([...float32ToBytes(bytesToFloat32(nan))]).toEqual([...nan]);
  });

  it('refuses a length that is not a multiple of 4', () => {
    expect(() => bytesToFloat32(new Uint8Array(6))).toThrow(RangeError);
  });

  it('views aligned bytes without a copy, and copies unaligned ones', () => {
    const raw = cases.flatMap(([, b]) => b);
    const aligned = new Uint8Array(raw.length + 4).subarray(4);
    aligned.set(raw);
    const view = float32View(aligned);
    expect(view.buffer).toBe(aligned.buffer);
    expect([...view]).toEqual([...bytesToFloat32(aligned)]);
    aligned.set([0, 0, 0x80, 0x3f], 4); // element 1 := 1
    expect(view[1]).toBe(1); // the same memory
    const shifted = new Uint8Array(raw.length + 2).subarray(2);
    shifted.set(raw);
    const copied = float32View(shifted);
    expect(copied.buffer).not.toBe(shifted.buffer);
    expect([...copied]).toEqual([...view.map((v, i) => (i === 1 ? bytesToFloat32(shifted)[1]! : v))]);
    expect(() => float32View(new Uint8Array(6))).toThrow(RangeError);
  });

  it('gives the bytes of an array to send as a view of its memory (little-endian), equal to the copy', () => {
    const whole = Float32Array.from([9, 1, -2.5, -0, Number.NaN, 9]);
    const part = whole.subarray(1, 5);
    const bytes = float32Bytes(part);
    expect([...bytes]).toEqual([...float32ToBytes(part)]);
    expect(bytes.buffer).toBe(whole.buffer);
    expect(bytes.byteOffset).toBe(4);
    expect(bytes.byteLength).toBe(16);
    part[0] = 2;
    expect([...bytes.subarray(0, 4)]).toEqual([0, 0, 0, 0x40]); // the same memory: 2.0f
  });
});
