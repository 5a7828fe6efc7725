// Markdown tables of bench/learning/results/<shape>/*.json (the README's reduced run), one per
// shape: final test accuracy after the last round (best round in parentheses) per strategy and
// partition (settings above each table; the published FedAvg/FedProx figures below it where they apply).
//   node bench/learning/table.mjs
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = join(import.meta.dirname, 'results');
const order = ['fedavg', 'fedprox', 'fedavgm', 'fedadam', 'fedyogi', 'fedadagrad', 'qfedavg', 'fedmedian', 'fedtrimmedavg', 'krum', 'multikrum', 'bulyan'];
const pct = (x) => (Number.isFinite(x) ? `${(100 * x).toFixed(1)}%` : 'diverged');
const label = (p) => (p === 'iid' ? 'IID' : `Dir(${p.slice(3)})`);

const shapeOrder = ['protocol-data', 'protocol-data-seed2', 'dir0.1-small'];
const rank = (shape) => (shapeOrder.includes(shape) ? shapeOrder.indexOf(shape) : shapeOrder.length);
const shapes = readdirSync(root).filter((f) => statSync(join(root, f)).isDirectory());
for (const shape of shapes.sort((a, b) => rank(a) - rank(b) || a.localeCompare(b))) {
  const rows = new Map();
  const partitions = new Set();
  let run;
  let reference;
  for (const file of readdirSync(join(root, shape)).filter((f) => f.endsWith('.json')).sort()) {
    const result = JSON.parse(readFileSync(join(root, shape, file), 'utf8'));
    if (run !== undefined && JSON.stringify(result.run) !== JSON.stringify(run)) throw new Error(`${shape}/${file}: settings differ from the shape's other files`);
    run = result.run;
    reference = result.reference.finalAccuracy;
    for (const r of result.results) {
      partitions.add(r.partition);
      if (!rows.has(r.strategy)) rows.set(r.strategy, {});
      rows.get(r.strategy)[r.partition] = r;
    }
  }
  if (run === undefined) continue;
  const columns = ['iid', 'dir0.5', 'dir0.1'].filter((p) => partitions.has(p));
  console.log(`**${shape}**: ${run.rounds} rounds, ${run.epochs} local epoch(s), batch ${run.batchSize}, SGD lr ${run.learningRate} momentum ${run.momentum}, ${run.trainCount} training / ${run.testCount} test images, ${run.clients} devices${run.seed === 1 ? '' : `, seed ${run.seed}`}.\n`);
  console.log(`| strategy | ${columns.map(label).join(' | ')} |`);
  console.log(`|---|${columns.map(() => '---').join('|')}|`);
  for (const name of order.filter((s) => rows.has(s))) {
    const cells = columns.map((p) => {
      const r = rows.get(name)[p];
      if (r === undefined) return 'not run';
      return `${pct(r.finalAccuracy)} (${pct(r.bestAccuracy)})`;
    });
    console.log(`| ${name} | ${cells.join(' | ')} |`);
  }
  const published = Object.entries(reference ?? {}).flatMap(([name, byPartition]) =>
    Object.entries(byPartition).filter(([p]) => rows.get(name)?.[p] !== undefined).map(([p, x]) => `${name} ${label(p)} ${(100 * x).toFixed(2)}%`),
  );
  if (published.length > 0) console.log(`\nPublished after the full protocol (Flower baselines/niid_bench): ${published.join(', ')}.`);
  console.log('');
}
