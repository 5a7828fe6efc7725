import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { FASHION_MNIST_DEBIAN_DIR, loadFashionMnist } from './fashion-mnist.js';
import { labelsOf } from './partition.js';
import { parseIdx } from './idx.js';

describe('parseIdx', () => {
  it('reads a hand-made uint8 [2, 2, 3] file, raw and gzipped', () => {
    const bytes = Uint8Array.from([0, 0, 0x08, 3, 0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 3, ...Array.from({ length: 12 }, (_, i) => i * 20)]);
    for (const input of [bytes, new Uint8Array(gzipSync(bytes))]) {
      const parsed = parseIdx(input);
      expect(parsed.type).toBe('uint8');
      expect(parsed.shape).toEqual([2, 2, 3]);
      expect(Array.from(parsed.data)).toEqual([0, 20, 40, 60, 80, 100, 120, 140, 160, 180, 200, 220]);
    }
  });

  it('reads big-endian int32 and float32 values', () => {
    // int32 [2]: 0x00000102 = 258 and 0xFFFFFFFE = -2.
    expect(Array.from(parseIdx(Uint8Array.from([0, 0, 0x0c, 1, 0, 0, 0, 2, 0, 0, 1, 2, 255, 255, 255, 254])).data)).toEqual([258, -2]);
    // float32 [1]: 0x3FC00000 = 1.5.
    expect(Array.from(parseIdx(Uint8Array.from([0, 0, 0x0d, 1, 0, 0, 0, 1, 0x3f, 0xc0, 0, 0])).data)).toEqual([1.5]);
  });

  it('rejects a bad magic number, an unknown type and a size that contradicts the header', () => {
    expect(() => parseIdx(Uint8Array.from([1, 0, 8, 1, 0, 0, 0, 0]))).toThrow(/first two bytes/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 7, 1, 0, 0, 0, 0]))).toThrow(/type 0x7/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]))).toThrow(/needs 11 bytes, file has 10/);
    expect(() => parseIdx(Uint8Array.from([0, 0, 8, 2, 0, 0]))).toThrow(/truncated/);
  });
});

describe('loadFashionMnist (Debian dataset-fashion-mnist)', () => {
  it(`reads the 60,000 + 10,000 images of ${FASHION_MNIST_DEBIAN_DIR}, balanced as published`, () => {
    const { train, test } = loadFashionMnist();
    expect(train.count).toBe(60_000);
    expect(test.count).toBe(10_000);
    expect(train.inputShape).toEqual([28, 28, 1]);
    // Xiao et al. 2017: 6,000 training and 1,000 test images per class.
    for (const [data, perClass] of [[train, 6000], [test, 1000]] as const) {
      const counts = new Array<number>(10).fill(0);
      for (const label of labelsOf(data)) counts[label]! += 1;
      expect(counts).toEqual(new Array<number>(10).fill(perClass));
    }
    let max = 0;
    let min = 1;
    for (const x of train.xs.subarray(0, 784 * 100)) [max, min] = [Math.max(max, x), Math.min(min, x)];
    expect(min).toBe(0);
    expect(max).toBe(1);
  });
});
