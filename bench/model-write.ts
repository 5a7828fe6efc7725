/**
 * The round end's model blob write (issue 17), on this machine's disk: the blob store's `put`
 * (temporary file, fsync, rename, directory fsync: two syncs in sequence) against `write` (the
 * file created at its key, its data and its directory fsynced concurrently: what a round's next
 * model version uses, since nothing references that key before the round's closing commit).
 * Both write a model-sized blob (--bytes, default 400,000: a 100,000-parameter float32 model) to
 * a fresh key of the same directory, alternating put, write, write, put, ... so both see the same
 * load. Prints one JSON object (medians and p90 in ms, the load average before and after).
 *
 *   npm run -s bench:model-write -- [--iterations 40] [--bytes 400000] [--dir DIR]
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createBlobStore } from '../packages/server/src/blobs/blob-store.js';

const { values: args } = parseArgs({ options: { iterations: { type: 'string' }, bytes: { type: 'string' }, dir: { type: 'string' } } });
const iterations = Number(args.iterations ?? 40);
const bytes = Number(args.bytes ?? 400_000);
const root = await mkdtemp(join(args.dir ?? tmpdir(), 'veil-bench-model-write-'));
const quantile = (xs: readonly number[], q: number): number => Math.round([...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * q))]! * 100) / 100;
try {
  const store = createBlobStore({ dir: root });
  const data = randomBytes(bytes);
  await store.put('models/t/warm.bin', data); // the directory exists, as for a task's next version
  const times = { put: [] as number[], write: [] as number[] };
  const loadBefore = loadavg();
  for (let i = 0; i < iterations; i++) {
    for (const kind of i % 2 === 0 ? (['put', 'write'] as const) : (['write', 'put'] as const)) {
      const t = performance.now();
      await (kind === 'put' ? store.put(`models/t/${kind}-${i}.bin`, data) : store.write!(`models/t/${kind}-${i}.bin`, data));
      times[kind].push(performance.now() - t);
    }
  }
  await store.close();
  const summary = (xs: number[]) => ({ medianMs: quantile(xs, 0.5), p90Ms: quantile(xs, 0.9) });
  console.log(JSON.stringify({ bytes, iterations, put: summary(times.put), write: summary(times.write), writeOverPut: Math.round((quantile(times.write, 0.5) / quantile(times.put, 0.5)) * 1000) / 1000, loadBefore: loadBefore.map((x) => Math.round(x * 100) / 100), loadAfter: loadavg().map((x) => Math.round(x * 100) / 100), dir: args.dir ?? tmpdir() }, null, 1));
} finally {
  await rm(root, { recursive: true, force: true });
}
