/**
 * The round end's model blob write (issue 17), on this machine's disk: the blob store's `put`
 * (temporary file, fsync, rename, directory fsync: two syncs in sequence) against `write` (the
 * file created at its key, its data and its directory fsynced concurrently: what a round's next
 * model version uses, since nothing references that key before the round's closing commit).
 * Both write a model-sized blob (--bytes, default 400,000: a 100,000-parameter float32 model) to
 * a fresh key of the same directory, alternating put, write, write, put, ... so both see the same
 * load. Prints one JSON object (medians and p90 in ms, the load average before and after).
 *
 * With --against TREE (another checkout, built), `write` is timed against that tree's blob store's
 * `write` instead of `put`, interleaved the same way (an A/B of the write path; `againstWrite`).
 *
 *   npm run -s bench:model-write -- [--iterations 40] [--bytes 400000] [--dir DIR] [--against TREE]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createBlobStore } from '../packages/server/src/blobs/blob-store.js';

const { values: args } = parseArgs({ options: { iterations: { type: 'string' }, bytes: { type: 'string' }, dir: { type: 'string' }, against: { type: 'string' } } });
const iterations = Number(args.iterations ?? 40);
const bytes = Number(args.bytes ?? 400_000);
const root = await mkdtemp(join(args.dir ?? tmpdir(), 'veil-bench-model-write-'));
const quantile = (xs: readonly number[], q: number): number => Math.round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]! * 100) / 100;
try {
  const store = createBlobStore({ dir: root });
  const against =
    args.against === undefined
      ? null
      : ((await import(pathToFileURL(resolve(args.against, 'packages/server/dist/blobs/blob-store.js')).href)) as { createBlobStore: typeof createBlobStore }).createBlobStore({ dir: join(root, 'against') });
  const data = randomBytes(bytes);
  await store.put('models/t/warm.bin', data); // the directory exists, as for a task's next version
  await against?.put('models/t/warm.bin', data);
  // What `write` is timed against: this tree's `put`, or the other tree's `write`.
  const timeOther = (key: string): Promise<unknown> => (against === null ? store.put(key, data) : against.write!(key, data));
  const times = { other: [] as number[], write: [] as number[] };
  const loadBefore = loadavg();
  for (let i = 0; i < iterations; i++) {
    for (const kind of i % 2 === 0 ? (['other', 'write'] as const) : (['write', 'other'] as const)) {
      const key = `models/t/${kind}-${i}.bin`;
      const t = performance.now();
      await (kind === 'write' ? store.write!(key, data) : timeOther(key));
      times[kind].push(performance.now() - t);
    }
  }
  await store.close();
  await against?.close();
  const summary = (xs: number[]) => ({ medianMs: quantile(xs, 0.5), p90Ms: quantile(xs, 0.9) });
  const other = against === null ? { put: summary(times.other) } : { againstWrite: { tree: args.against, ...summary(times.other) } };
  console.log(JSON.stringify({ bytes, iterations, ...other, write: summary(times.write), [against === null ? 'writeOverPut' : 'writeOverAgainstWrite']: Math.round((quantile(times.write, 0.5) / quantile(times.other, 0.5)) * 1000) / 1000, loadBefore: loadBefore.map((x) => Math.round(x * 100) / 100), loadAfter: loadavg().map((x) => Math.round(x * 100) / 100), dir: args.dir ?? tmpdir() }, null, 1));
} finally {
  await rm(root, { recursive: true, force: true });
}
