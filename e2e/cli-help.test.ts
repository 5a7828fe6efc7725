/**
 * `--help` everywhere: every `veil` command and subcommand, and the example
 * device app, print their help and exit 0 without starting anything or writing
 * any file (run in an empty working directory with an empty VEIL_DATA_DIR and
 * ports nothing listens on). The device app's entry refuses Node < 22 with a
 * clear message before importing anything.
 */
import { execFile } from 'node:child_process';
import { readdir, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, test } from 'vitest';
import { assertBuilt, childEnv, createTempDir, freePorts, randomSecret, REPO_ROOT, VEIL_BIN } from './support.js';

const run = promisify(execFile);

const COMMANDS = [
  'server',
  'migrate',
  'keys generate',
  'tls dev-ca',
  'custodian init',
  'custodian serve',
  'custodian public',
  'custodian status',
  'custodian request-key',
  'authority init',
  'authority descriptor',
  'authority sign-descriptor',
  'authority serve',
  'authority certify-device',
  'privacy epsilon',
  'privacy calibrate',
  'export',
  'calibration',
  'demo',
];

/** Resolves true when something accepts a TCP connection on 127.0.0.1:port. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

describe('veil COMMAND --help', () => {
  test.each([...COMMANDS.map((c) => [c, '--help']), ['server', '-h'], ['demo', '-h'], ['custodian serve', '-h']])('veil %s %s prints its help and starts and writes nothing', async (command, flag) => {
    assertBuilt();
    await using cwd = await createTempDir('veil-e2e-help-cwd-');
    await using dataDir = await createTempDir('veil-e2e-help-data-');
    const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
    const env = childEnv({
      VEIL_DATA_DIR: dataDir.path,
      VEIL_GRPC_PORT: String(grpcPort),
      VEIL_HTTP_PORT: String(httpPort),
      VEIL_ADMIN_TOKEN: randomSecret(),
      VEIL_ENROLMENT_SECRET: randomSecret(),
      DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/veil_help_must_not_connect',
    });
    const { stdout, stderr } = await run(process.execPath, [VEIL_BIN, ...command.split(' '), flag], { cwd: cwd.path, env, timeout: 30_000 });
    expect(stdout.startsWith(`Usage: veil ${command} [options]\n`)).toBe(true);
    // The help names the command's own options (the entry of the top-level usage).
    expect(stdout).toContain(`\n  ${command}`);
    expect(stderr).toBe('');
    expect(await readdir(cwd.path)).toEqual([]);
    expect(await readdir(dataDir.path)).toEqual([]);
    expect(await listening(grpcPort)).toBe(false);
    expect(await listening(httpPort)).toBe(false);
  });

  test('veil demo --help lists its options; an unknown command with --help is a usage error', async () => {
    assertBuilt();
    const { stdout } = await run(process.execPath, [VEIL_BIN, 'demo', '--help'], { env: childEnv() });
    for (const option of ['--clients N', '--rounds N', '--shared-key', '--dp', '--tls-ca FILE']) expect(stdout).toContain(option);
    const refused = await run(process.execPath, [VEIL_BIN, 'frobnicate', '--help'], { env: childEnv() }).catch((e: unknown) => e as { code: number; stderr: string });
    expect(refused).toMatchObject({ code: 2 });
    expect((refused as { stderr: string }).stderr).toContain('unknown command "frobnicate"');
  });
});

describe('veil demo: an invalid combination of options is a usage error before anything starts', () => {
  test.each([
    // --clients 2: minClients 1, so the default colluder allowance (1) leaves no honest device.
    [['--dp', '--clients', '2'], '--dp in committee mode: the noise shares are sized for minClients (1, half the devices) minus the 1 colluding devices assumed'],
    [['--dp', '--clients', '10', '--dp-colluding', '5'], 'minClients (5, half the devices) minus the 5 colluding devices assumed'],
    [['--plaintext', '--shared-key'], '--plaintext and --shared-key exclude each other'],
  ])('veil demo %j', async (flags, message) => {
    assertBuilt();
    await using cwd = await createTempDir('veil-e2e-demo-usage-cwd-');
    await using tmp = await createTempDir('veil-e2e-demo-usage-tmp-');
    const [httpPort] = (await freePorts(1)) as [number];
    // TMPDIR: the demo's data directory would be created there; DATABASE_URL: nothing must connect.
    const env = childEnv({ TMPDIR: tmp.path, DATABASE_URL: 'postgresql://postgres@127.0.0.1:5432/veil_demo_usage_must_not_connect' });
    const refused = await run(process.execPath, [VEIL_BIN, 'demo', ...flags, '--http-port', String(httpPort)], { cwd: cwd.path, env, timeout: 30_000 }).catch(
      (e: unknown) => e as { code: number; stdout: string; stderr: string },
    );
    expect(refused).toMatchObject({ code: 2, stdout: '' });
    const stderr = (refused as { stderr: string }).stderr;
    expect(stderr.startsWith('veil: ')).toBe(true);
    expect(stderr.split('\n')[0]).toContain(message);
    expect(stderr).toContain('Usage: veil <command> [options]');
    expect(stderr).not.toMatch(/\n\s+at /); // no stack trace
    expect(await readdir(cwd.path)).toEqual([]);
    expect(await readdir(tmp.path)).toEqual([]);
    expect(await listening(httpPort)).toBe(false);
  });
});

describe('examples/device-app', () => {
  const START = join(REPO_ROOT, 'examples/device-app/start.mjs');

  test.each([['--help'], ['-h']])('start.mjs %s prints the help and writes no credential, key or DP state', async (flag) => {
    await using cwd = await createTempDir('veil-e2e-device-help-');
    const { stdout, stderr } = await run(process.execPath, [START, flag, '--task', 't', '--data', 'missing.json', '--secret', 's'], {
      cwd: cwd.path,
      env: childEnv(),
      timeout: 30_000,
    });
    expect(stdout.startsWith('Usage: node examples/device-app/start.mjs')).toBe(true);
    for (const option of ['--device-key DIR', '--committee-pins FILE', '--dp-state FILE', '--dp-epsilon-cap E', '--tls-ca FILE']) expect(stdout).toContain(option);
    expect(stderr).toBe('');
    expect(await readdir(cwd.path)).toEqual([]);
  });

  test('start.mjs on a first run without --secret or VEIL_ENROLMENT_SECRET names both and exits 2, writing nothing', async () => {
    await using cwd = await createTempDir('veil-e2e-device-secret-');
    const xs = Array.from({ length: 20 }, (_, i) => [i % 2, 1 - (i % 2)]);
    await writeFile(join(cwd.path, 'data.json'), JSON.stringify({ inputShape: [2], numClasses: 2, xs, ys: xs.map((_, i) => i % 2) }));
    // childEnv() passes no VEIL_* variable on.
    const failed = await run(process.execPath, [START, '--task', 't', '--data', 'data.json'], { cwd: cwd.path, env: childEnv(), timeout: 30_000 }).catch(
      (e: unknown) => e as { code: number; stdout: string; stderr: string },
    );
    expect(failed).toMatchObject({ code: 2, stdout: '' });
    expect((failed as { stderr: string }).stderr.split('\n')[0]).toBe('veil device app: first run: --secret or VEIL_ENROLMENT_SECRET (the task enrolment secret) is required');
    expect(await readdir(cwd.path)).toEqual(['data.json']);
  });

  test('start.mjs under Node 20 says it needs Node >= 22 and exits 1 before any import', async () => {
    // The machine's (and CI's) system Node is 20: the check must run before the SDK is imported.
    const { stdout: version } = await run('/usr/bin/node', ['-p', 'process.versions.node']);
    expect(Number(version.split('.')[0])).toBeLessThan(22);
    await using cwd = await createTempDir('veil-e2e-device-node20-');
    const failed = await run('/usr/bin/node', [START, '--task', 't', '--data', 'x.json'], { cwd: cwd.path, env: childEnv() }).catch(
      (e: unknown) => e as { code: number; stdout: string; stderr: string },
    );
    expect(failed).toMatchObject({ code: 1, stdout: '' });
    expect((failed as { stderr: string }).stderr).toBe(
      `veil device app: needs Node >= 22 (this is Node ${version.trim()}); run it with scripts/node24.sh or a newer Node\n`,
    );
    expect(await readdir(cwd.path)).toEqual([]);
  });
});
