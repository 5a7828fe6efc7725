// Markdown table of bench/learning/results/*.json (the README's reduced run):
// final test accuracy after the last round (best round in parentheses) per strategy and partition.
//   node bench/learning/table.mjs
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const dir = join(import.meta.dirname, 'results');
const rows = new Map();
const partitions = ['iid', 'dir0.5', 'dir0.1'];
let run;
for (const file of readdirSync(dir).filter((f) => f.endsWith('.json') && f !== 'throughput.json')) {
  const result = JSON.parse(readFileSync(join(dir, file), 'utf8'));
  run = result.run;
  for (const r of result.results) {
    if (!rows.has(r.strategy)) rows.set(r.strategy, {});
    rows.get(r.strategy)[r.partition] = r;
  }
}
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'diverged');
const order = ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'qfedavg', 'fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan'];
console.log(`| strategy | ${partitions.map((p) => (p === 'iid' ? 'IID' : `Dir(${p.slice(3)})`)).join(' | ')} |`);
console.log(`|---|${partitions.map(() => '---').join('|')}|`);
for (const name of order.filter((s) => rows.has(s))) {
  const cells = partitions.map((p) => {
    const r = rows.get(name)[p];
    return r === undefined ? 'not run' : `${pct(r.finalAccuracy)} (${pct(r.bestAccuracy)})`;
  });
  console.log(`| ${name} | ${cells.join(' | ')} |`);
}
if (run !== undefined) console.log(`\n${run.rounds} rounds, ${run.epochs} local epoch(s), batch ${run.batchSize}, SGD lr ${run.learningRate} momentum ${run.momentum}, ${run.trainCount} training / ${run.testCount} test images, ${run.clients} devices.`);
