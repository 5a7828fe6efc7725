import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const MODULE = fileURLToPath(new URL('./test-faults.ts', import.meta.url));

/** Runs faultPoint('committee-answered') in a fresh Node process (type stripping loads the .ts) with `env`. */
function reach(env: Record<string, string>): { status: number | null; signal: NodeJS.Signals | null; stdout: string } {
  const script = `const { faultPoint } = await import(${JSON.stringify(MODULE)}); faultPoint('committee-answered'); console.log('went on');`;
  const { PATH } = process.env;
  const result = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env: { PATH: PATH ?? '', ...env }, encoding: 'utf8', timeout: 30_000 });
  return { status: result.status, signal: result.signal, stdout: result.stdout };
}

describe('test-only fault points', () => {
  it('SIGKILL the process only under NODE_ENV=test with VEIL_TEST_FAULT naming the point', () => {
    expect(reach({ NODE_ENV: 'test', VEIL_TEST_FAULT: 'committee-answered' })).toMatchObject({ status: null, signal: 'SIGKILL', stdout: '' });
    for (const env of [
      { NODE_ENV: 'production', VEIL_TEST_FAULT: 'committee-answered' },
      { VEIL_TEST_FAULT: 'committee-answered' },
      { NODE_ENV: 'test', VEIL_TEST_FAULT: 'another-point' },
      { NODE_ENV: 'test' },
    ]) {
      expect(reach(env), JSON.stringify(env)).toMatchObject({ status: 0, signal: null, stdout: 'went on\n' });
    }
  });
});
