/**
 * Device-side CPU and page faults of encoding a round's float32 update for upload, in a fresh
 * process's first rounds (as a device runs them): a copy (`float32ToBytes`, the SDK before) or a
 * view of the delta's memory (`float32Bytes`, the SDK now). Each round's delta is new memory, as a
 * training step's output is; the last two payloads stay referenced (one in flight, one being built).
 *
 *   npx tsx bench/device-encode.ts [--runs 4] [--rounds 20] [--parameters 100000]
 *
 * Runs each variant in its own fresh process, interleaved (copy, view, copy, view, ...), and prints
 * one JSON object: per variant the median over runs of CPU (user + system) and minor page faults
 * per round, every run's figures, and the load average.
 */
import { execFileSync } from 'node:child_process';
import { loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { float32Bytes, float32ToBytes } from '@veil/protocol/codec';
import { median, round3 } from './rounds/common.js';

const { values: args } = parseArgs({
  options: {
    runs: { type: 'string', default: '4' },
    rounds: { type: 'string', default: '20' },
    parameters: { type: 'string', default: '100000' },
    child: { type: 'string' },
  },
});
const rounds = Number(args.rounds);
const parameters = Number(args.parameters);

if (args.child !== undefined) {
  const encode = args.child === 'copy' ? float32ToBytes : float32Bytes;
  let cpu = 0;
  let faults = 0;
  const keep: Uint8Array[] = [];
  for (let r = 0; r < rounds; r++) {
    const delta = new Float32Array(parameters).fill(r * 1e-3);
    const faultsBefore = process.resourceUsage().minorPageFault;
    const before = process.cpuUsage();
    const payload = encode(delta);
    const used = process.cpuUsage(before);
    faults += process.resourceUsage().minorPageFault - faultsBefore;
    cpu += (used.user + used.system) / 1000;
    keep.push(payload);
    if (keep.length > 2) keep.shift();
  }
  process.stdout.write(JSON.stringify({ cpuMsPerRound: cpu / rounds, pageFaultsPerRound: faults / rounds }));
} else {
  const loadAtStart = loadavg()[0]!;
  const runs: Record<'copy' | 'view', { cpuMsPerRound: number; pageFaultsPerRound: number }[]> = { copy: [], view: [] };
  for (let i = 0; i < Number(args.runs); i++) {
    for (const variant of i % 2 === 0 ? (['copy', 'view'] as const) : (['view', 'copy'] as const)) {
      const out = execFileSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), '--child', variant, '--rounds', String(rounds), '--parameters', String(parameters)]);
      runs[variant].push(JSON.parse(out.toString()));
    }
  }
  const summary = (v: 'copy' | 'view') => ({
    cpuMsPerRoundMedian: round3(median(runs[v].map((r) => r.cpuMsPerRound))),
    pageFaultsPerRoundMedian: round3(median(runs[v].map((r) => r.pageFaultsPerRound))),
    runs: runs[v].map((r) => ({ cpuMsPerRound: round3(r.cpuMsPerRound), pageFaultsPerRound: round3(r.pageFaultsPerRound) })),
  });
  console.log(JSON.stringify({ benchmark: 'bench/device-encode.ts', rounds, parameters, node: process.version, loadAvg: { atStart: loadAtStart, atEnd: loadavg()[0] }, copy: summary('copy'), view: summary('view') }, null, 1));
}
