/**
 * End to end: `veil export` on a task trained by `veil demo --calibrate` (committee aggregation, or a shared key,
 * embedded database kept with --data-dir). After its training round the demo's devices ran the
 * two calibration rounds; the export reopens the stopped coordinator's data directory and writes
 * ONNX files that onnxruntime-node runs: float32 reproduces the demo's own held-out accuracy,
 * int8 is static with the federated ranges (no --calibration file given), within a point of it
 * and about a quarter of the bytes; `veil calibration` writes the statistics file, and
 * `veil export --calibration FILE` with it writes the same bytes.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { expect, test } from 'vitest';
import { loadMnist, type DemoSummary } from '@veil/cli';
import { onnxAccuracy } from '../packages/export/test/onnx-accuracy.js';
import { assertBuilt, childEnv, createTempDir, exited, REPO_ROOT, startFederation, VEIL_BIN } from './support.js';

/** Runs `veil args` expecting a failure; returns its stderr. */
async function veilFails(args: string[]): Promise<string> {
  const child = spawn(process.execPath, [VEIL_BIN, ...args], { cwd: REPO_ROOT, env: childEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const status = await exited(child);
  expect(status.exitCode).not.toBe(0);
  return stderr;
}

/** Runs `veil ARGS` (with `env` added to the child's environment) and returns its stdout once it exits 0. */
async function veil(args: string[], env: Record<string, string> = {}): Promise<string> {
  const child = spawn(process.execPath, [VEIL_BIN, ...args], { cwd: REPO_ROOT, env: childEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
  child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
  const timer = setTimeout(() => child.kill('SIGKILL'), 600_000);
  const status = await exited(child).finally(() => clearTimeout(timer));
  expect(status, `veil ${args[0]} failed; stderr:\n${stderr.slice(-4000)}`).toEqual({ exitCode: 0, signalCode: null });
  return stdout;
}

test('`veil export` writes a `veil demo` model as ONNX that onnxruntime-node runs at the demo accuracy', async () => {
  assertBuilt();
  const dir = await mkdtemp(join(tmpdir(), 'veil-e2e-export-'));
  try {
    const summary = JSON.parse((await veil(['demo', '--clients', '2', '--rounds', '1', '--calibrate', '--data-dir', dir, '--json'])).trim()) as DemoSummary;
    expect(summary).toMatchObject({ encrypted: true, taskStatus: 'COMPLETED', calibrated: true });
    const { test: heldOut } = loadMnist(); // the demo's split
    const accuracy: Record<string, number> = {};
    const bytes: Record<string, number> = {};
    const files: Record<string, Buffer> = {};
    for (const quantize of ['none', 'int8']) {
      const out = join(dir, `model-${quantize}.onnx`);
      const printed = JSON.parse(
        (await veil(['export', '--task', summary.taskId, '--format', 'onnx', '--quantize', quantize, '--out', out, '--data-dir', dir, '--device-key', join(dir, 'keys', 'device'), '--json'])).trim(),
      ) as { version: number; quantization: string; bytes: number; calibration: string | null };
      expect(printed).toMatchObject({ version: 1, quantization: quantize === 'none' ? 'float32' : 'int8-static', calibration: quantize === 'none' ? null : 'federated' });
      const file = await readFile(out);
      files[quantize] = file;
      bytes[quantize] = file.byteLength;
      accuracy[quantize] = await onnxAccuracy(file, heldOut);
    }
    console.info(`export: demo accuracy ${summary.finalAccuracy}, ONNX float32 ${accuracy['none']}, int8 ${accuracy['int8']}; bytes ${bytes['none']} / ${bytes['int8']}`);
    expect(accuracy['none']).toBeCloseTo(summary.finalAccuracy, 3);
    expect(Math.abs(accuracy['int8']! - accuracy['none']!)).toBeLessThanOrEqual(0.01);
    expect(bytes['int8']! / bytes['none']!).toBeLessThanOrEqual(0.3);
    // The statistics file of `veil calibration`, given back to `veil export --calibration`: the same model.
    const statistics = join(dir, 'calibration.json');
    await veil(['calibration', '--task', summary.taskId, '--out', statistics, '--data-dir', dir]);
    expect(JSON.parse(await readFile(statistics, 'utf8'))).toMatchObject({ format: 'veil-calibration-v1', modelVersion: 1, rounds: { range: { number: 2, participants: 2 }, histogram: { number: 3, participants: 2 } } });
    const again = join(dir, 'model-file.onnx');
    await veil(['export', '--task', summary.taskId, '--format', 'onnx', '--quantize', 'int8', '--calibration', statistics, '--out', again, '--data-dir', dir]);
    expect((await readFile(again)).equals(files['int8']!)).toBe(true);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * `veil demo --calibrate --shared-key` (with and without `--dp`, local DP in that mode), then
 * `veil export --quantize int8` with the demo's device key: the coordinator holds only the
 * encrypted statistics, the demo and the export (key holders) open them; the int8 model is static
 * with the federated ranges and runs in onnxruntime-node, within a point of float32 without DP. With
 * DP the noise swamps the statistics of 2 devices: the demo says so, int8 falls back to dynamic with
 * the reason, and --force-static writes the static model anyway.
 */
// --epsilon-cap 40: room for the training round and both calibration rounds (the default 8 has room for one round of z = 0.7).
test.each([[[] as string[]], [['--dp', '--epsilon-cap', '40']]])('`veil demo --calibrate --shared-key %j` then `veil export --quantize int8 --device-key`', async (extra) => {
  assertBuilt();
  const dir = await mkdtemp(join(tmpdir(), 'veil-e2e-export-shared-'));
  try {
    const summary = JSON.parse((await veil(['demo', '--clients', '2', '--rounds', '1', '--calibrate', '--shared-key', ...extra, '--data-dir', dir, '--json'])).trim()) as DemoSummary;
    expect(summary).toMatchObject({ mode: 'shared-key', encrypted: true, taskStatus: 'COMPLETED', calibrated: true });
    // With local DP (z = 0.7, 2 devices) the noise swamps the statistics: the demo says so and int8 falls back to dynamic.
    const dp = extra.length > 0;
    if (dp) expect(summary.calibrationNoiseSwamped?.length).toBeGreaterThan(0);
    else expect(summary.calibrationNoiseSwamped).toBeUndefined();
    const { test: heldOut } = loadMnist();
    const accuracy: Record<string, number> = {};
    const base = (quantize: string, name: string) => ['export', '--task', summary.taskId, '--format', 'onnx', '--quantize', quantize, '--out', join(dir, name), '--data-dir', dir, '--device-key', join(dir, 'keys', 'device')];
    for (const quantize of ['none', 'int8']) {
      const printed = JSON.parse((await veil([...base(quantize, `model-${quantize}.onnx`), '--json'])).trim()) as { version: number; quantization: string; encrypted: boolean; calibration: string | null; fallback?: { points: string[] } };
      const int8 = dp ? 'int8-dynamic' : 'int8-static';
      expect(printed).toMatchObject({ version: 1, encrypted: true, quantization: quantize === 'none' ? 'float32' : int8, calibration: quantize === 'none' ? null : 'federated' });
      expect(printed.fallback?.points).toEqual(quantize === 'int8' && dp ? summary.calibrationNoiseSwamped : undefined);
      accuracy[quantize] = await onnxAccuracy(await readFile(join(dir, `model-${quantize}.onnx`)), heldOut);
    }
    if (dp) {
      // The text output says why; --force-static writes the static model with the noisy ranges.
      expect(await veil(base('int8', 'again.onnx'))).toMatch(/int8-dynamic, federated calibration.*\nint8-static not written: the DP noise swamped the calibration statistics of \d+ point/);
      expect(JSON.parse((await veil([...base('int8', 'forced.onnx'), '--force-static', '--json'])).trim())).toMatchObject({ quantization: 'int8-static', calibration: 'federated' });
      accuracy['forced'] = await onnxAccuracy(await readFile(join(dir, 'forced.onnx')), heldOut);
    }
    console.info(`export (shared key${dp ? ', local DP' : ''}): demo accuracy ${summary.finalAccuracy}, ONNX float32 ${accuracy['none']}, int8 ${accuracy['int8']}${dp ? ` (fallback dynamic), forced static ${accuracy['forced']}` : ''}`);
    expect(accuracy['none']).toBeCloseTo(summary.finalAccuracy, 3);
    if (!dp) expect(Math.abs(accuracy['int8']! - accuracy['none']!)).toBeLessThanOrEqual(0.01);
    // Without the key the statistics (and the model) stay closed, with the reason.
    const refused = await veilFails(['calibration', '--task', summary.taskId, '--out', join(dir, 'c.json'), '--data-dir', dir]);
    expect(refused).toMatch(/encrypted under its shared key; give --device-key DIR/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

/**
 * `veil demo --coordinator-grpc … --coordinator-http … --calibrate` against a running `veil server`
 * (plaintext task): the remote demo reports `calibrated` as the local one does, and its rounds are
 * the training rounds only (the calibration rounds produce no model).
 */
test('the remote demo with --calibrate reports calibrated', async () => {
  assertBuilt();
  await using dir = await createTempDir('veil-e2e-remote-calibrate-');
  await using federation = await startFederation({ dataDir: dir.path });
  const stdout = await veil(
    ['demo', '--coordinator-grpc', federation.coordinator.grpcAddress, '--coordinator-http', federation.coordinator.httpUrl, '--clients', '2', '--rounds', '1', '--calibrate', '--json'],
    { VEIL_ADMIN_TOKEN: federation.adminToken, VEIL_ENROLMENT_SECRET: federation.enrolmentSecret },
  );
  const summary = JSON.parse(stdout.trim()) as { rounds: { round: number }[]; taskId: string; taskStatus: string; calibrated?: boolean; calibrationNoiseSwamped?: string[] };
  expect(summary).toMatchObject({ taskStatus: 'COMPLETED', calibrated: true });
  expect(summary.calibrationNoiseSwamped).toBeUndefined();
  expect(summary.rounds.map((r) => r.round)).toEqual([1]);
  // The coordinator's statistics are those the demo read.
  const file = await fetch(`${federation.coordinator.httpUrl}/v1/tasks/${summary.taskId}/calibration`, { headers: { authorization: `Bearer ${federation.adminToken}` } });
  expect(file.status).toBe(200);
  expect(await file.json()).toMatchObject({ format: 'veil-calibration-v1', rounds: { range: { number: 2 }, histogram: { number: 3 } } });
  expect((await federation.rest.listRounds(summary.taskId)).map((r) => r.number)).toEqual([1, 2, 3]);
});
