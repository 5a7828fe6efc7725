/**
 * A device's training examples on disk: the test splits the digits and writes
 * one file per device, and each device process reads only its own, as a
 * device app holds only its own data. The file holds the float32 inputs, then
 * the float32 one-hot labels, in native byte order.
 */
import { readFile, writeFile } from 'node:fs/promises';
import type { LocalDataset } from '@veil/client-sdk';

/** Where a shard is and how to read it. */
export interface ShardFile {
  path: string;
  count: number;
  inputShape: number[];
  numClasses: number;
}

/** Writes `data` to `path`. */
export async function writeShard(path: string, data: LocalDataset): Promise<ShardFile> {
  const view = (a: Float32Array): Buffer => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
  await writeFile(path, Buffer.concat([view(data.xs), view(data.ys)]));
  return { path, count: data.count, inputShape: [...data.inputShape], numClasses: data.numClasses };
}

/** Reads a shard written by {@link writeShard}. */
export async function readShard(shard: ShardFile): Promise<LocalDataset> {
  const bytes = await readFile(shard.path);
  const values = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4).slice();
  const inputs = shard.count * shard.inputShape.reduce((a, b) => a * b, 1);
  if (values.length !== inputs + shard.count * shard.numClasses) throw new Error(`${shard.path} does not hold ${shard.count} examples`);
  return {
    xs: values.subarray(0, inputs),
    ys: values.subarray(inputs),
    count: shard.count,
    inputShape: shard.inputShape,
    numClasses: shard.numClasses,
  };
}
