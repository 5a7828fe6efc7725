/**
 * Veil's round against Flower 1.28's legacy in-memory server, interleaved in one run.
 *
 *   npx tsx bench/vs-flower.ts [--pairs 3] [--sizes 10,100] [--rounds 20]
 *     [--paths plaintext,committee[,shared-key]] [--encrypted-sizes 10] [--committee 2-of-3]
 *     [--committee-encrypt before|live] [--flower-dir ../shared/anchors/flower-legacy] [--flower-eval]
 *     [--floor yes|no]
 *
 * For each client count N and each pair i = 1..pairs it runs, back to back,
 * Veil (`bench/rounds.ts --only small --small-clients N`, one device per process
 * at 10 clients, 10 devices per process above that) and Flower
 * (`run.sh --clients N --no-eval`, one client per process at 10, 10 threads per
 * process above that), A B A B ..., so both see the same machine load. It prints
 * ONE JSON object: for every (N, path) the per-run medians of both sides, the
 * median of those medians and the ratio Veil / Flower (below 1: Veil is faster).
 *
 * Veil's encrypted path is committee mode (issue 11; `encrypted` is accepted as its old name):
 * bench/rounds.ts's committee path, a t-of-n committee of local `custodian serve` processes
 * (--committee), uploads built by the SDK's committee middleware per device and round, before the
 * rounds (--committee-encrypt before, the default, as in bench:rounds) or at submit time (`live`).
 * The shared-key BFV path can still be measured explicitly (`shared-key`).
 *
 * With --floor yes (the default) each pair also runs bench/round-floor.ts: the same synchronous
 * rounds, process layout, bytes and HTTP/2 settings over raw node:http2 with nothing else (no gRPC,
 * engine, database or aggregation). It is the floor under anything built on node:http2 on this
 * machine, timed in the same interleaved run: what Veil costs above it is Veil's own work.
 *
 * Both sides use a 100,000-parameter float32 model and trivial training; Flower
 * keeps everything in memory, Veil makes every accepted update and transition
 * durable in PostgreSQL. Round time is each harness's own median round
 * (Flower: close-to-close over rounds 2..R; Veil: `medianRoundMsExcludingFirst` of
 * bench/rounds.ts). Progress goes to stderr. Needs the packages built
 * (`npm run build`) and the local PostgreSQL; Flower's runner installs Debian's
 * Python packages on first use.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { loadavg, cpus } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const here = dirname(fileURLToPath(import.meta.url));
const repoRoot = join(here, '..');

const { values: args } = parseArgs({
  options: {
    pairs: { type: 'string', default: '3' },
    sizes: { type: 'string', default: '10,100' },
    rounds: { type: 'string', default: '20' },
    paths: { type: 'string', default: 'plaintext,committee' },
    committee: { type: 'string', default: '2-of-3' },
    'committee-encrypt': { type: 'string', default: 'before' },
    'encrypted-sizes': { type: 'string', default: '10' },
    'flower-dir': { type: 'string', default: resolve(repoRoot, '..', 'shared', 'anchors', 'flower-legacy') },
    'flower-eval': { type: 'boolean', default: false },
    floor: { type: 'string', default: 'yes' },
    'timeout-s': { type: 'string', default: '1800' },
  },
});

const pairs = positiveInt(args.pairs, 'pairs');
const rounds = positiveInt(args.rounds, 'rounds');
const sizes = args.sizes.split(',').map((s) => positiveInt(s, 'sizes'));
type VeilPath = 'plaintext' | 'committee' | 'shared-key';
const paths = args.paths.split(',').map((text): VeilPath => {
  const p = text.trim() === 'encrypted' ? 'committee' : text.trim();
  if (p !== 'plaintext' && p !== 'committee' && p !== 'shared-key') throw new Error(`--paths: unknown path ${p}`);
  return p;
});
const encryptedSizes = new Set(args['encrypted-sizes'].split(',').map((s) => positiveInt(s, 'encrypted-sizes')));
const flowerRun = join(args['flower-dir'], 'run.sh');
if (!existsSync(flowerRun)) throw new Error(`Flower runner not found at ${flowerRun} (--flower-dir)`);
if (args.floor !== 'yes' && args.floor !== 'no') throw new Error(`--floor: yes or no, got ${args.floor}`);
const withFloor = args.floor === 'yes';
const timeoutMs = positiveInt(args['timeout-s'], 'timeout-s') * 1000;

function positiveInt(text: string, name: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}: expected a positive integer, got ${text}`);
  return n;
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => ok(port));
    });
  });
}

/** Runs a command whose stdout is exactly one JSON object. */
function runJson(cmd: string, argv: string[]): Promise<Record<string, unknown>> {
  return new Promise((ok, fail) => {
    execFile(cmd, argv, { cwd: repoRoot, maxBuffer: 64 << 20, timeout: timeoutMs }, (err, stdout, stderr) => {
      if (err) {
        fail(new Error(`${cmd} ${argv.join(' ')} failed: ${err.message}\n${stderr.slice(-4000)}`));
        return;
      }
      try {
        ok(JSON.parse(stdout) as Record<string, unknown>);
      } catch {
        fail(new Error(`${cmd}: no JSON on stdout:\n${stdout.slice(-2000)}\n${stderr.slice(-2000)}`));
      }
    });
  });
}

interface SideRun {
  /** The compared median: rounds 2..R, close-to-close, on both sides. */
  medianRoundMs: number;
  /** Veil only: the median over rounds 1..R (round 1 from the devices' release), reported beside it. */
  medianRoundMsAllRounds?: number;
  modelCopiesPerClientRound: number | null;
}

async function runVeil(clients: number, path: VeilPath): Promise<SideRun> {
  const out = await runJson(process.execPath, [
    join(repoRoot, 'node_modules', 'tsx', 'dist', 'cli.mjs'),
    join(repoRoot, 'bench', 'rounds.ts'),
    '--only', 'small',
    '--paths', path,
    '--committee', args.committee,
    '--committee-encrypt', args['committee-encrypt'],
    '--small-clients', String(clients),
    '--small-rounds', String(rounds),
    '--devices-per-worker', clients <= 10 ? '1' : '10',
    '--log-level', 'silent',
  ]);
  const section = path === 'plaintext' ? out : (out[path === 'committee' ? 'committee' : 'sharedKey'] as Record<string, unknown> | undefined);
  const small = section?.['small'] as Record<string, unknown> | undefined;
  if (small === undefined || typeof small['medianRoundMs'] !== 'number' || typeof small['medianRoundMsExcludingFirst'] !== 'number') {
    throw new Error(`bench/rounds.ts printed no ${path} small result`);
  }
  if (small['roundsCompleted'] !== rounds) throw new Error(`Veil completed ${String(small['roundsCompleted'])} of ${rounds} rounds`);
  return {
    // Rounds 2..R, close-to-close: the window Flower's runner takes its median over (run.sh).
    medianRoundMs: small['medianRoundMsExcludingFirst'],
    medianRoundMsAllRounds: small['medianRoundMs'],
    modelCopiesPerClientRound: typeof small['modelCopiesPerClientRound'] === 'number' ? small['modelCopiesPerClientRound'] : null,
  };
}

/**
 * The anchor's runner installs Debian's Python packages but not python3-mako,
 * which Flower's alembic shim imports; a clean machine lacks it.
 */
async function ensureFlowerDeps(): Promise<void> {
  const probe = (): Promise<boolean> =>
    new Promise((ok) => execFile('/usr/bin/python3', ['-c', 'import mako'], (err) => ok(err === null)));
  if (await probe()) return;
  process.stderr.write('vs-flower: installing python3-mako (needed by the Flower anchor)\n');
  await new Promise<void>((ok, fail) =>
    execFile('bash', ['-c', 'apt-get install -y -q python3-mako || (apt-get update -q && apt-get install -y -q python3-mako)'], (err) =>
      err === null ? ok() : fail(new Error(`could not install python3-mako: ${err.message}`)),
    ),
  );
}

async function runFlower(clients: number): Promise<SideRun> {
  const argv = [
    flowerRun,
    '--clients', String(clients),
    '--rounds', String(rounds),
    '--port', String(await freePort()),
    '--threads-per-proc', clients <= 10 ? '1' : '10',
  ];
  if (!args['flower-eval']) argv.push('--no-eval');
  const out = await runJson('bash', argv);
  if (typeof out['medianRoundMs'] !== 'number') throw new Error('Flower printed no medianRoundMs');
  return {
    medianRoundMs: out['medianRoundMs'],
    modelCopiesPerClientRound: typeof out['msgModelCopiesPerClientRound'] === 'number' ? out['msgModelCopiesPerClientRound'] : null,
  };
}

/** bench/round-floor.ts: the same rounds over raw node:http2 (the floor under a node:http2 stack). */
async function runFloor(clients: number): Promise<SideRun> {
  const out = await runJson(process.execPath, [
    join(repoRoot, 'node_modules', 'tsx', 'dist', 'cli.mjs'),
    join(repoRoot, 'bench', 'round-floor.ts'),
    '--clients', String(clients),
    '--rounds', String(rounds),
    '--clients-per-process', clients <= 10 ? '1' : '10',
  ]);
  if (typeof out['medianRoundMs'] !== 'number') throw new Error('bench/round-floor.ts printed no medianRoundMs');
  return { medianRoundMs: out['medianRoundMs'], modelCopiesPerClientRound: 2 };
}

await ensureFlowerDeps();
const results: Record<string, unknown>[] = [];
const started = Date.now();
for (const clients of sizes) {
  const veilPaths = paths.filter((p) => p === 'plaintext' || encryptedSizes.has(clients));
  const veilRuns = new Map<string, SideRun[]>(veilPaths.map((p) => [p, []]));
  const flowerRuns: SideRun[] = [];
  const floorRuns: SideRun[] = [];
  for (let i = 1; i <= pairs; i++) {
    for (const path of veilPaths) {
      process.stderr.write(`vs-flower: ${clients} clients, pair ${i}/${pairs}: Veil ${path}\n`);
      veilRuns.get(path)!.push(await runVeil(clients, path));
    }
    process.stderr.write(`vs-flower: ${clients} clients, pair ${i}/${pairs}: Flower\n`);
    flowerRuns.push(await runFlower(clients));
    if (withFloor) {
      process.stderr.write(`vs-flower: ${clients} clients, pair ${i}/${pairs}: node:http2 floor\n`);
      floorRuns.push(await runFloor(clients));
    }
  }
  const floorMedian = withFloor ? median(floorRuns.map((r) => r.medianRoundMs)) : null;
  const flowerMedian = median(flowerRuns.map((r) => r.medianRoundMs));
  for (const [path, runs] of veilRuns) {
    const veilMedian = median(runs.map((r) => r.medianRoundMs));
    results.push({
      clients,
      path,
      veilMedianRoundMs: round1(veilMedian),
      flowerMedianRoundMs: round1(flowerMedian),
      ratioVeilOverFlower: round3(veilMedian / flowerMedian),
      veilRunMediansMs: runs.map((r) => round1(r.medianRoundMs)),
      veilRunMediansAllRoundsMs: runs.map((r) => round1(r.medianRoundMsAllRounds ?? Number.NaN)),
      flowerRunMediansMs: flowerRuns.map((r) => round1(r.medianRoundMs)),
      veilModelCopiesPerClientRound: runs[0]?.modelCopiesPerClientRound ?? null,
      flowerModelCopiesPerClientRound: flowerRuns[0]?.modelCopiesPerClientRound ?? null,
      ...(floorMedian !== null && {
        floorMedianRoundMs: round1(floorMedian),
        ratioFloorOverFlower: round3(floorMedian / flowerMedian),
        ratioVeilOverFloor: round3(veilMedian / floorMedian),
        floorRunMediansMs: floorRuns.map((r) => round1(r.medianRoundMs)),
      }),
    });
  }
}

process.stdout.write(
  `${JSON.stringify({
    meta: {
      pairs,
      rounds,
      flowerMode: args['flower-eval'] ? 'train+evaluate' : 'training only',
      roundWindow: 'medians over rounds 2..R, close-to-close, on both sides (Veil: medianRoundMsExcludingFirst; its median over rounds 1..R is in veilRunMediansAllRoundsMs)',
      floor: withFloor ? 'bench/round-floor.ts (raw node:http2, same rounds, layout, bytes and HTTP/2 settings; no gRPC, engine, database or aggregation), run after Flower in every pair' : null,
      veilEncryptedPath: paths.includes('committee') ? { mode: 'committee', committee: args.committee, deviceEncryption: args['committee-encrypt'] } : null,
      cpus: cpus().length,
      loadAverageAtEnd: loadavg().map(round1),
      seconds: Math.round((Date.now() - started) / 1000),
    },
    results,
  })}\n`,
);
