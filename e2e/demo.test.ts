/**
 * End to end: `veil demo` as a user runs it, on the embedded database (no
 * DATABASE_URL) and with its default committee-encrypted updates: a coordinator and
 * five device processes train the MNIST MLP for three rounds, and `--json`
 * prints one summary line on stdout. (Plaintext float32 uploads are checked
 * byte-exactly by federation.test.ts.)
 */
import { spawn } from 'node:child_process';
import { expect, test } from 'vitest';
import type { DemoSummary } from '@veil/cli';
import { MAX_MANIFEST_BYTES, committeeUploadBytesWithoutManifest } from '@veil/crypto';
import { assertBuilt, childEnv, exited, REPO_ROOT, VEIL_BIN } from './support.js';

const CLIENTS = 5;
const ROUNDS = 3;
const PARAMETERS = 199_210;
/** Bytes of one plaintext float32 update. */
const PLAINTEXT_UPDATE_BYTES = PARAMETERS * 4;
/**
 * One committee upload at the demo's five devices: c0 compressed to 24 bits per coefficient (the
 * narrowest width whose worst-case rounding decrypts exactly at maxDevices 5), three sealed shares
 * and a signed manifest: smaller than the float32 update.
 */
const COMMITTEE_UPLOAD_BYTES = committeeUploadBytesWithoutManifest(PARAMETERS, 3, 24);
/**
 * Final accuracy on the 2,000 held-out digits. Measured 0.952 (rounds 0.914,
 * 0.937, 0.952; 5 IID clients × 1,600 digits, 2 local epochs, lr 0.2, seed 1,
 * encrypted); the floor leaves room for TF.js numerics and quantization.
 */
const ACCURACY_FLOOR = 0.9;

test('`veil demo --json` trains MNIST with five device processes on the embedded database', async () => {
  assertBuilt();
  const child = spawn(process.execPath, [VEIL_BIN, 'demo', '--clients', String(CLIENTS), '--rounds', String(ROUNDS), '--json'], {
    cwd: REPO_ROOT,
    env: childEnv(), // no DATABASE_URL: the demo uses its embedded PGlite database
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const status = await exited(child).finally(() => clearTimeout(timer));
  expect(status, `veil demo failed; stderr:\n${stderr.slice(-4000)}`).toEqual({ exitCode: 0, signalCode: null });

  // --json: one line of JSON on stdout, nothing else.
  const lines = stdout.trimEnd().split('\n');
  expect(lines, stdout.slice(0, 2000)).toHaveLength(1);
  const summary = JSON.parse(lines[0]!) as DemoSummary;
  console.info(
    `demo: accuracy ${summary.rounds.map((r) => r.accuracy).join(' -> ')}, ` +
      `rounds ${summary.rounds.map((r) => `${(r.durationMs / 1000).toFixed(1)} s`).join(', ')}, total ${(summary.totalMs / 1000).toFixed(1)} s`,
  );

  expect(summary).toMatchObject({ clients: CLIENTS, partition: 'iid', database: 'pglite', encrypted: true, mode: 'committee', taskStatus: 'COMPLETED' });
  expect(summary.rounds.map((r) => r.round)).toEqual([1, 2, 3]);
  // A ciphertext's size depends on the encryption parameters, not on the values: every round uploads the same.
  const uploadBytes = summary.rounds[0]!.uploadBytes;
  expect(uploadBytes % CLIENTS).toBe(0);
  expect(uploadBytes / CLIENTS).toBeGreaterThan(COMMITTEE_UPLOAD_BYTES);
  expect(uploadBytes / CLIENTS).toBeLessThan(COMMITTEE_UPLOAD_BYTES + MAX_MANIFEST_BYTES);
  expect(uploadBytes / CLIENTS).toBeLessThan(PLAINTEXT_UPDATE_BYTES);
  for (const round of summary.rounds) {
    expect(round.clients).toBe(CLIENTS);
    expect(round.uploadBytes).toBe(uploadBytes);
    expect(round.durationMs).toBeGreaterThan(0);
    expect(round.accuracy).toBeGreaterThan(0);
    expect(round.accuracy).toBeLessThanOrEqual(1);
  }
  expect(summary.finalAccuracy).toBe(summary.rounds.at(-1)!.accuracy);
  expect(summary.finalAccuracy).toBeGreaterThanOrEqual(ACCURACY_FLOOR);
});

/**
 * `veil demo --dp` in committee mode (the default): distributed DP through the committee, not
 * local DP. Three devices, two rounds, one local epoch: the task is created with privacy mode
 * "distributed" from a descriptor that fixes the discrete Gaussian, the devices pin the colluder
 * allowance, and the ledger reports ε for observers and ε against the coordinator after each
 * round (local DP has no coordinator ε). Accuracy is not checked here (three devices' noise).
 */
test('`veil demo --dp --json` runs distributed DP through the committee and reports both epsilons', async () => {
  assertBuilt();
  const child = spawn(process.execPath, [VEIL_BIN, 'demo', '--clients', '3', '--rounds', '2', '--epochs', '1', '--dp', '--epsilon-cap', '50', '--json'], {
    cwd: REPO_ROOT,
    env: childEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const status = await exited(child).finally(() => clearTimeout(timer));
  expect(status, `veil demo --dp failed; stderr:\n${stderr.slice(-4000)}`).toEqual({ exitCode: 0, signalCode: null });
  const summary = JSON.parse(stdout.trim()) as DemoSummary;
  console.info(`demo --dp: accuracy ${summary.rounds.map((r) => r.accuracy).join(' -> ')}, privacy ${JSON.stringify(summary.privacy)}`);
  expect(summary).toMatchObject({ mode: 'committee', clients: 3, taskStatus: 'COMPLETED' });
  expect(summary.rounds.map((r) => r.round)).toEqual([1, 2]);
  expect(summary.privacy).toMatchObject({ mode: 'distributed', delta: 1e-5 });
  const { epsilon, epsilonCoordinator } = summary.privacy!;
  expect(epsilon).toBeGreaterThan(0);
  expect(epsilonCoordinator).toBeGreaterThan(0);
  for (const round of summary.rounds) {
    expect(round.epsilon).toBeGreaterThan(0);
    expect(round.epsilonCoordinator).toBeGreaterThanOrEqual(round.epsilon!);
  }
  // Cumulative: the second round spends more, and the summary's figures are the last round's.
  expect(summary.rounds[1]!.epsilon).toBeGreaterThan(summary.rounds[0]!.epsilon!);
  expect(summary.rounds[1]!.epsilon).toBe(epsilon);
  expect(summary.rounds[1]!.epsilonCoordinator).toBe(epsilonCoordinator);
});
