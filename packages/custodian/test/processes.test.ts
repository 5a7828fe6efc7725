/**
 * Custodians as separate `veil custodian serve` processes: SIGKILLed mid-round (the round
 * completes with t of n) and restarted (the answered-rounds state survives the kill).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { sha256 } from '../src/bytes.js';
import { createCommitteeClient } from '../src/client.js';
import { createCustodianServiceClient } from '../src/grpc/proto.js';
import { requestSigningBytes } from '../src/request-auth.js';
import { computeHashD } from '../src/protocol.js';
import { ERROR_CODE_METADATA_KEY } from '../src/errors.js';
import { committeeRequest, createCommitteeFixture, makeDevices, reconstructAtZero, sumSecrets, type CommitteeFixture, type DeviceUpload } from './fixture.js';

const VEIL = fileURLToPath(new URL('../../cli/bin/veil.js', import.meta.url));

interface Proc {
  child: ChildProcess;
  address: string;
  stderr: string[];
}

async function startCustodianProcess(f: CommitteeFixture, index: number): Promise<Proc> {
  const child = spawn(
    process.execPath,
    [
      VEIL, 'custodian', 'serve',
      '--dir', f.custodianDirs[index - 1]!,
      '--listen', '127.0.0.1:0',
      '--coordinator-key', f.requestKeyFile,
      '--authority-key', f.authorityKeyFile,
      '--min-devices', '3',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const lines = createInterface({ input: child.stdout! });
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`custodian ${index} did not start: ${stderr.join('')}`)), 30_000);
    lines.once('line', (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { listening: string }).listening);
    });
    child.once('exit', (code) => reject(new Error(`custodian ${index} exited with ${code}: ${stderr.join('')}`)));
  });
  return { child, address, stderr };
}

async function kill(proc: Proc, signal: NodeJS.Signals): Promise<number | null> {
  if (proc.child.exitCode !== null) return proc.child.exitCode;
  return new Promise((resolve) => {
    proc.child.once('exit', (code) => resolve(code));
    proc.child.kill(signal);
  });
}

async function askOne(address: string, f: CommitteeFixture, round: number, index: number, devices: readonly DeviceUpload[]) {
  const client = createCustodianServiceClient(address, grpc.credentials.createInsecure());
  const hashD = computeHashD(devices.map((d) => sha256(d.manifestBytes)));
  const issuedAtMs = Date.now();
  const signature = f.signRequest(requestSigningBytes({ descriptorHash: f.descriptorHash, round, hashD, deviceCount: devices.length, custodianIndex: index, issuedAtMs }));
  try {
    return await new Promise<{ ok: boolean; veilCode?: string; statement?: Buffer; signature?: Buffer; shareSum?: Buffer }>((resolve) => {
      const call = client.shareSum({ deadline: Date.now() + 20_000 }, (error, response) =>
        resolve(error ? { ok: false, veilCode: String(error.metadata?.get(ERROR_CODE_METADATA_KEY)[0]) } : { ok: true, ...response! }),
      );
      call.write({
        header: {
          descriptor: Buffer.from(f.descriptorBytes),
          descriptorSignature: Buffer.from(f.descriptorSignature),
          round,
          hashD: Buffer.from(hashD),
          deviceCount: devices.length,
          custodianIndex: index,
          issuedAtMs,
          coordinatorSignature: Buffer.from(signature),
        },
      });
      call.write({ batch: { devices: devices.map((d) => ({ manifest: Buffer.from(d.manifestBytes), manifestSignature: Buffer.from(d.manifestSignature), sealedShare: Buffer.from(d.sealedShares[index - 1]!) })) } });
      call.end();
    });
  } finally {
    client.close();
  }
}

describe('custodian processes', () => {
  let f: CommitteeFixture;
  const procs = new Map<number, Proc>();

  beforeAll(async () => {
    f = await createCommitteeFixture({ n: 7, threshold: 4, minDevices: 3 });
    for (let i = 1; i <= 7; i += 1) procs.set(i, await startCustodianProcess(f, i));
  });

  afterAll(async () => {
    for (const proc of procs.values()) await kill(proc, 'SIGKILL');
    await f[Symbol.asyncDispose]();
  });

  it('completes a 4-of-7 round with three custodians SIGKILLed, and a restarted custodian keeps its answers', async () => {
    const logger = pino({ level: 'silent' });
    const clientFor = () =>
      createCommitteeClient({
        descriptor: f.descriptorBytes,
        descriptorSignature: f.descriptorSignature,
        signRequest: f.signRequest,
        addresses: Object.fromEntries([...procs].map(([i, p]) => [i, p.address])),
        deadlineMs: 15_000,
        logger,
      });

    // Custodian 7 is down before the round; 5 and 6 are killed while it is asked.
    await kill(procs.get(7)!, 'SIGKILL');
    const devices = makeDevices(f, 1, 6);
    const client = clientFor();
    const pending = client.collect(committeeRequest(1, devices));
    await Promise.all([kill(procs.get(5)!, 'SIGKILL'), kill(procs.get(6)!, 'SIGKILL')]);
    const result = await pending;
    await client.close();
    expect(result.ok).toBe(true);
    expect(result.answers).toHaveLength(4);
    // Custodian 7 is reported unavailable, unless t answers arrived before its connection failed.
    const seven = result.failures.find((x) => x.custodianIndex === 7);
    if (seven === undefined) expect(result.notNeeded).toContain(7);
    else expect(seven.code).toBe('unavailable');
    expect(result.answers.map((a) => a.custodianIndex)).not.toContain(7);
    expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));

    // Custodian 1 answered round 1. Kill it without warning and start it again on the same directory.
    const answered1 = result.answers.find((a) => a.custodianIndex === 1)!;
    expect(answered1).toBeDefined();
    await kill(procs.get(1)!, 'SIGKILL');
    procs.set(1, await startCustodianProcess(f, 1));
    // The same D gets the same bytes ...
    const again = await askOne(procs.get(1)!.address, f, 1, 1, devices);
    expect(again.ok).toBe(true);
    expect(Buffer.compare(again.statement!, Buffer.from(answered1.statement))).toBe(0);
    expect(Buffer.compare(again.signature!, Buffer.from(answered1.signature))).toBe(0);
    expect(Buffer.compare(again.shareSum!, Buffer.from(answered1.shareSum))).toBe(0);
    // ... and D minus one device is still refused after the restart.
    expect(await askOne(procs.get(1)!.address, f, 1, 1, devices.slice(1))).toMatchObject({ ok: false, veilCode: 'other_set_answered' });

    // An operator reads the answered rounds beside the running custodian.
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const { stdout } = await promisify(execFile)(process.execPath, [VEIL, 'custodian', 'status', '--dir', f.custodianDirs[0]!, '--json']);
    expect(JSON.parse(stdout)).toMatchObject({ fingerprint: f.custodians[0]!.fingerprint, answers: [{ taskId: f.descriptor.taskId, round: 1, devices: 6 }] });

    // The killed custodians come back and the next round runs with the whole committee.
    for (const i of [5, 6, 7]) procs.set(i, await startCustodianProcess(f, i));
    const next = makeDevices(f, 2, 3);
    const client2 = clientFor();
    const round2 = await client2.collect(committeeRequest(2, next));
    await client2.close();
    expect(round2.ok).toBe(true);
    expect(round2.failures).toEqual([]);
    expect(reconstructAtZero(round2.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(next));

    // SIGTERM is a graceful stop.
    expect(await kill(procs.get(2)!, 'SIGTERM')).toBe(0);
  });
});
