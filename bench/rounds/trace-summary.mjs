// Summary of a BENCH_TRACE file (bench/rounds/coordinator.ts): per event kind, the median over
// rounds (from the third on) of its first, median and last time in ms after the round started
// collecting, and how many per round; with --round N, that round's events in order.
//   node bench/rounds/trace-summary.mjs /tmp/trace.jsonl [--round 5]
import { readFileSync } from 'node:fs';
const [file, flag, which] = process.argv.slice(2);
const rows = readFileSync(file, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const rounds = [];
for (const [t, what, who, extra] of rows) {
  if (what === 'round-collecting') rounds.push({ t0: t, number: extra, events: [] });
  else rounds.at(-1)?.events.push([t, what, who, extra]);
}
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
if (flag === '--round') {
  const r = rounds.find((x) => x.number === Number(which));
  for (const [t, what, who, extra] of r?.events ?? []) console.log(`${(t - r.t0).toFixed(1).padStart(7)} ${what.padEnd(20)} ${who} ${extra ?? ''}`);
} else {
  const kinds = new Map();
  for (const r of rounds.slice(2)) {
    const per = new Map();
    for (const [t, what] of r.events) (per.get(what) ?? per.set(what, []).get(what)).push(t - r.t0);
    for (const [what, ts] of per) (kinds.get(what) ?? kinds.set(what, []).get(what)).push([Math.min(...ts), median(ts), Math.max(...ts), ts.length]);
  }
  for (const [what, v] of kinds) {
    const m = (i) => median(v.map((x) => x[i])).toFixed(1).padStart(6);
    console.log(`${what.padEnd(20)} first ${m(0)} median ${m(1)} last ${m(2)} per round ${median(v.map((x) => x[3]))}`);
  }
}
