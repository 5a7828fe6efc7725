import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { COORDINATOR_ENVIRONMENT, COORDINATOR_NODE_OPTIONS } from './runtime-options.js';

test("the container image's entry point runs node with the coordinator's Node.js options, before the script", () => {
  const dockerfile = readFileSync(fileURLToPath(new URL('../../../Dockerfile', import.meta.url)), 'utf8');
  const line = dockerfile.split('\n').find((l) => l.startsWith('ENTRYPOINT '));
  expect(line).toBeDefined();
  const argv = JSON.parse(line!.slice('ENTRYPOINT '.length)) as string[];
  const script = argv.indexOf('/app/packages/cli/dist/bin/veil.js');
  expect(argv[0]).toBe('node');
  expect(script).toBeGreaterThan(0);
  expect(argv.slice(1, script)).toEqual([...COORDINATOR_NODE_OPTIONS]);
});

test('this Node.js accepts the options on its command line', () => {
  // An option V8 or Node.js does not know makes node exit with "bad option" before running anything.
  const out = execFileSync(process.execPath, [...COORDINATOR_NODE_OPTIONS, '-e', 'process.stdout.write("ran")'], { encoding: 'utf8' });
  expect(out).toBe('ran');
});

test("the container image's runtime stage sets the coordinator's environment", () => {
  const dockerfile = readFileSync(fileURLToPath(new URL('../../../Dockerfile', import.meta.url)), 'utf8');
  const runtime = dockerfile.slice(dockerfile.indexOf(' AS runtime'));
  for (const [name, value] of Object.entries(COORDINATOR_ENVIRONMENT)) {
    const line = runtime.split('\n').find((l) => l.startsWith(`ENV ${name}=`));
    expect(line, `ENV ${name}`).toBeDefined();
    expect(line!.slice(`ENV ${name}=`.length)).toBe(value);
  }
});

test('scripts/demo.sh exports the same GLIBC_TUNABLES for the demo federation', () => {
  const script = readFileSync(fileURLToPath(new URL('../../../scripts/demo.sh', import.meta.url)), 'utf8');
  const line = script.split('\n').find((l) => l.startsWith('export GLIBC_TUNABLES='));
  expect(line).toBe(`export GLIBC_TUNABLES="\${GLIBC_TUNABLES-${COORDINATOR_ENVIRONMENT['GLIBC_TUNABLES']}}"`);
});

// glibc's dynamic loader prints the tunables a process starts with (`--list-tunables`, glibc >= 2.33);
// a name glibc does not know is ignored silently, so a misspelt one shows up here as its default.
const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
const loader = ['/lib64/ld-linux-x86-64.so.2', '/lib/ld-linux-aarch64.so.1'].find((path) => existsSync(path));

test.skipIf(glibc === undefined || loader === undefined)('glibc applies every tunable of the coordinator environment', () => {
  const tunables = COORDINATOR_ENVIRONMENT['GLIBC_TUNABLES']!.split(':').map((t) => t.split('='));
  const listed = execFileSync(loader!, ['--list-tunables'], { encoding: 'utf8', env: { ...process.env, ...COORDINATOR_ENVIRONMENT } });
  for (const [name, value] of tunables) {
    const line = listed.split('\n').find((l) => l.startsWith(`${name}: `));
    expect(line, name).toBeDefined();
    expect(BigInt(line!.slice(name!.length + 2).split(' ')[0]!), name).toBe(BigInt(value!));
  }
});
