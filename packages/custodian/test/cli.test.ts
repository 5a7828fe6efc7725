/**
 * The whole toolchain through the real `veil` binary: the authority's key, custodians' keys, the
 * coordinator's request key, a signed descriptor, device certificates, three custodian
 * processes; the committee client (with the request key read from its file) completes a round.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { pino } from 'pino';
import { encodeDescriptor, generateEd25519KeyPair, type DeviceCertificate, type SignedTaskDescriptor } from '@veil/crypto';
import { createCommitteeClient } from '../src/client.js';
import { readRequestSigner } from '../src/main.js';
import { requestDeviceCertificate } from '../src/enrolment.js';
import { fromBase64, sha256, toBase64 } from '../src/bytes.js';
import { committeeRequest, makeDevice, reconstructAtZero, sumSecrets } from './fixture.js';

const VEIL = fileURLToPath(new URL('../../cli/bin/veil.js', import.meta.url));
const run = promisify(execFile);
const veil = async (...args: string[]) => run(process.execPath, [VEIL, ...args]);

describe('veil authority and veil custodian', () => {
  const children: ChildProcess[] = [];
  let root = '';

  afterAll(async () => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL');
    if (root !== '') await rm(root, { recursive: true, force: true });
  });

  it('set up a 2-of-3 committee task from the command line and answer a round', async () => {
    root = await mkdtemp(join(tmpdir(), 'veil-cli-committee-'));
    await veil('authority', 'init', '--out', join(root, 'authority'));
    expect((await stat(join(root, 'authority', 'authority-key.json'))).mode & 0o777).toBe(0o600);
    const init = await veil('custodian', 'init', '--out', join(root, 'c1'));
    expect(init.stdout).toMatch(/fingerprint: ([0-9a-f]{4} ){7}[0-9a-f]{4}\n/);
    const printed = await veil('custodian', 'public', '--dir', join(root, 'c1'));
    expect(printed.stdout).toBe(await readFile(join(root, 'c1', 'custodian-public.json'), 'utf8'));
    await veil('custodian', 'init', '--out', join(root, 'c2'));
    await veil('custodian', 'init', '--out', join(root, 'c3'));
    await veil('custodian', 'request-key', '--out', join(root, 'coordinator'));
    // Refusals the authority makes before anything is signed: c > 2t - n - 1.
    await expect(
      veil('authority', 'descriptor', '--key', join(root, 'authority'), '--task-id', 'cli-task',
        '--custodian', `a:1=${join(root, 'c1', 'custodian-public.json')}`, '--custodian', `b:1=${join(root, 'c2', 'custodian-public.json')}`,
        '--custodian', `c:1=${join(root, 'c3', 'custodian-public.json')}`, '--threshold', '2', '--corrupt-tolerated', '1', '--min-devices', '3', '--max-rounds', '10'),
    ).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('2t - n - 1') });

    // Start the custodians first (port 0), then sign a descriptor naming their addresses.
    const addresses: string[] = [];
    for (const name of ['c1', 'c2', 'c3']) {
      const child = spawn(
        process.execPath,
        [VEIL, 'custodian', 'serve', '--dir', join(root, name), '--listen', '127.0.0.1:0', '--coordinator-key', join(root, 'coordinator', 'coordinator-request-public.json'),
          '--authority-key', join(root, 'authority', 'authority-public.json'), '--min-devices', '3', '--max-rounds', '100'],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      children.push(child);
      addresses.push(await new Promise<string>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { listening: string }).listening));
        child.once('exit', (code) => reject(new Error(`custodian exited ${code}`)));
      }));
    }
    await veil('authority', 'descriptor', '--key', join(root, 'authority'), '--task-id', 'cli-task',
      ...['c1', 'c2', 'c3'].flatMap((name, i) => ['--custodian', `${addresses[i]}=${join(root, name, 'custodian-public.json')}`]),
      '--threshold', '2', '--min-devices', '3', '--max-rounds', '10', '--out', join(root, 'descriptor.json'));
    const signed = JSON.parse(await readFile(join(root, 'descriptor.json'), 'utf8')) as SignedTaskDescriptor;
    expect(signed.descriptor.committee.map((m) => m.address)).toEqual(addresses);
    expect(signed.descriptor.corruptTolerated).toBe(0);

    // Devices generate their keys; the authority certifies them.
    const descriptorBytes = encodeDescriptor(signed.descriptor);
    const view = { descriptor: signed.descriptor, descriptorHash: sha256(descriptorBytes) };
    // One device certified offline, three through the enrolment service (a process apart from the coordinator).
    const devices = [];
    const first = generateEd25519KeyPair();
    const { stdout } = await veil('authority', 'certify-device', '--key', join(root, 'authority'), '--task-id', 'cli-task', '--device-id', 'dev-0',
      '--device-key', toBase64(first.publicKey), '--valid-hours', '1');
    const offline = JSON.parse(stdout) as DeviceCertificate;
    expect(offline.notAfterMs).toBeGreaterThan(Date.now());
    devices.push(makeDevice(view, { round: 1, deviceId: 'dev-0', key: first, certificate: offline }));
    await writeFile(join(root, 'enrolment-secret'), 'enrolment-secret-0123456789\n', { mode: 0o600 });
    const enrolment = spawn(
      process.execPath,
      [VEIL, 'authority', 'serve', '--key', join(root, 'authority'), '--listen', '127.0.0.1:0', '--task-id', 'cli-task', '--enrolment-secret-file', join(root, 'enrolment-secret')],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    children.push(enrolment);
    const url = await new Promise<string>((resolve, reject) => {
      createInterface({ input: enrolment.stdout! }).once('line', (line) => resolve((JSON.parse(line) as { url: string }).url));
      enrolment.once('exit', (code) => reject(new Error(`enrolment service exited ${code}`)));
    });
    for (let j = 1; j < 4; j += 1) {
      const key = generateEd25519KeyPair();
      const { certificate } = await requestDeviceCertificate({ url, enrolmentSecret: 'enrolment-secret-0123456789', taskId: 'cli-task', deviceId: `dev-${j}`, devicePublicKey: key.publicKey });
      devices.push(makeDevice(view, { round: 1, deviceId: `dev-${j}`, key, certificate }));
    }

    const signer = await readRequestSigner(join(root, 'coordinator', 'coordinator-request-key.json'));
    const client = createCommitteeClient({
      descriptor: descriptorBytes,
      descriptorSignature: fromBase64(signed.signature, 'signature', 64),
      signRequest: signer.sign,
      logger: pino({ level: 'silent' }),
    });
    try {
      const result = await client.collect(committeeRequest(1, devices));
      expect(result.ok).toBe(true);
      expect(result.answers).toHaveLength(2);
      expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
    } finally {
      await client.close();
    }
  });

  it('signs a descriptor with distributed DP from the command line, and refuses partial or unsafe DP flags', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'veil-cli-dp-'));
    try {
      await veil('authority', 'init', '--out', join(dir, 'authority'));
      for (const name of ['c1', 'c2']) await veil('custodian', 'init', '--out', join(dir, name));
      const base = [
        'authority', 'descriptor', '--key', join(dir, 'authority'), '--task-id', 'dp-task',
        ...['c1', 'c2'].flatMap((name, i) => ['--custodian', `h:${i + 1}=${join(dir, name, 'custodian-public.json')}`]),
        '--threshold', '2', '--min-devices', '10', '--max-rounds', '5', '--clip', '16',
      ];
      await veil(...base, '--dp-clip-norm', '1', '--dp-noise-multiplier', '1.2', '--dp-colluding', '2', '--dp-delta', '1e-5', '--out', join(dir, 'd.json'));
      const signed = JSON.parse(await readFile(join(dir, 'd.json'), 'utf8')) as SignedTaskDescriptor;
      expect(signed.descriptor.dp).toEqual({ mechanism: 'distributed-discrete-gaussian', clipNorm: 1, noiseMultiplier: 1.2, colludingDevices: 2, delta: 1e-5 });
      await expect(veil(...base, '--dp-clip-norm', '1', '--dp-noise-multiplier', '1.2')).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('needs all of') });
      // As many colluding devices as minDevices: no honest share would be left.
      await expect(veil(...base, '--dp-clip-norm', '1', '--dp-noise-multiplier', '1.2', '--dp-colluding', '10', '--dp-delta', '1e-5')).rejects.toMatchObject({
        code: 1,
        stderr: expect.stringContaining('colludingDevices must be an integer in [0, minDevices)'),
      });
      // The c0 width: without --c0-bits the narrowest that decrypts exactly at max-devices (24 bits
      // fit 10 devices' rounding at the largest Δ, 16 do not; 32 fit 100; 36 the default 1,000; only
      // the exact c0 fits 2,035); --c0-bits 44 or exact keeps the exact c0; 16 is refused; 20 is no width.
      const compressed = [...base.slice(0, -2), '--max-devices', '10'];
      const read = async (file: string) => (JSON.parse(await readFile(join(dir, file), 'utf8')) as SignedTaskDescriptor).descriptor.encoding;
      const made = await veil(...compressed, '--out', join(dir, 'auto.json'));
      expect(await read('auto.json')).toMatchObject({ c0Bits: 24, deltaBits: 26 });
      expect(made.stderr).toContain('c0 24 bits per coefficient, Δ = 2^26');
      await veil(...compressed, '--c0-bits', '24', '--out', join(dir, 'c.json'));
      expect(await read('c.json')).toMatchObject({ c0Bits: 24, deltaBits: 26 });
      await veil(...base.slice(0, -2), '--max-devices', '100', '--out', join(dir, 'hundred.json'));
      expect(await read('hundred.json')).toMatchObject({ c0Bits: 32, deltaBits: 23 });
      await veil(...base.slice(0, -2), '--out', join(dir, 'thousand.json'));
      expect(await read('thousand.json')).toEqual({ c0Bits: 36, deltaBits: 20, clipMaxAbs: 1, step: 2 ** -13, weightCap: 1 });
      await veil(...base.slice(0, -2), '--max-devices', '2035', '--out', join(dir, 'exact-2035.json'));
      expect(await read('exact-2035.json')).toEqual({ deltaBits: 12, clipMaxAbs: 1, step: 2 ** -13, weightCap: 1 });
      for (const exact of ['44', 'exact']) {
        const printed = await veil(...compressed, '--c0-bits', exact, '--out', join(dir, `exact-${exact}.json`));
        expect(await read(`exact-${exact}.json`)).toEqual({ deltaBits: 8, clipMaxAbs: 1, step: 2 ** -13, weightCap: 1 });
        expect(printed.stderr).toContain('c0 exact (44 bits) per coefficient');
      }
      await expect(veil(...compressed, '--c0-bits', '16')).rejects.toMatchObject({ code: 1, stderr: expect.stringContaining('rounding sum') });
      await expect(veil(...compressed, '--c0-bits', '20')).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('--c0-bits must be 16, 24, 32, 36, 44 or exact') });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
