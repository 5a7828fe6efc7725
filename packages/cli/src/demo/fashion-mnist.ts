import { readFileSync } from 'node:fs';
import path from 'node:path';
import type { LocalDataset } from '@veil/client-sdk';
import { parseIdx } from './idx.js';

/** Where Debian's `dataset-fashion-mnist` package installs the original IDX gzip files. */
export const FASHION_MNIST_DEBIAN_DIR = '/usr/share/datasets/fashion-mnist';

/** Class names of Fashion-MNIST (Xiao, Rasul & Vollgraf 2017), by label. */
export const FASHION_MNIST_CLASSES = [
  'T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot',
] as const;

/**
 * Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from its IDX files: 60,000
 * training and 10,000 test images, 28 x 28 x 1 in [0, 1] (pixel / 255), one-hot
 * labels over 10 classes, in file order.
 *
 * @param directory holds `train-images-idx3-ubyte.gz` and the three other files.
 *   Default {@link FASHION_MNIST_DEBIAN_DIR} (`apt-get install dataset-fashion-mnist`;
 *   `scripts/ensure-datasets.sh` installs it).
 */
export function loadFashionMnist(directory = FASHION_MNIST_DEBIAN_DIR): { train: LocalDataset; test: LocalDataset } {
  return {
    train: loadSplit(directory, 'train'),
    test: loadSplit(directory, 't10k'),
  };
}

function loadSplit(directory: string, prefix: 'train' | 't10k'): LocalDataset {
  const read = (name: string) => {
    const file = path.join(directory, name);
    try {
      return readFileSync(file);
    } catch (error) {
      throw new Error(
        `cannot read ${file}: install Debian's dataset-fashion-mnist package (scripts/ensure-datasets.sh)`,
        { cause: error },
      );
    }
  };
  const images = parseIdx(read(`${prefix}-images-idx3-ubyte.gz`));
  const labels = parseIdx(read(`${prefix}-labels-idx1-ubyte.gz`));
  const [count, rows, cols] = images.shape;
  if (images.type !== 'uint8' || images.shape.length !== 3 || rows !== 28 || cols !== 28) {
    throw new Error(`${prefix} images: expected uint8 [n, 28, 28], got ${images.type} [${images.shape.join(', ')}]`);
  }
  if (labels.type !== 'uint8' || labels.shape.length !== 1 || labels.shape[0] !== count) {
    throw new Error(`${prefix} labels: expected uint8 [${count}], got ${labels.type} [${labels.shape.join(', ')}]`);
  }
  const xs = new Float32Array(images.data.length);
  for (let i = 0; i < xs.length; i++) xs[i] = images.data[i]! / 255;
  const ys = new Float32Array(count! * 10);
  for (let i = 0; i < count!; i++) {
    const label = labels.data[i]!;
    if (label > 9) throw new Error(`${prefix} labels: label ${label} at ${i} is out of range`);
    ys[i * 10 + label] = 1;
  }
  return { xs, ys, count: count!, inputShape: [28, 28, 1], numClasses: 10 };
}
