import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect, test } from 'vitest';
import { COORDINATOR_NODE_OPTIONS } from './runtime-options.js';

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
