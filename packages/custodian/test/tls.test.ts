/**
 * Coordinator -> custodian over TLS (issue 12 item 1): `veil tls dev-ca` issues the custodians'
 * server certificates and the coordinator's client certificate; custodians run as real
 * `veil custodian serve --tls-cert --tls-key --client-ca` processes; the committee client pins the
 * CA bundle and presents its certificate (mutual TLS), addressing the custodians as `grpcs://`.
 * A coordinator without a client certificate, and a custodian whose certificate comes from another
 * CA, are refused at the handshake; renewed files are taken up without a restart on both sides.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFile, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createCommitteeClient } from '../src/client.js';
import { committeeChannelCredentials, parseCustodianAddress, watchTlsFiles, type WatchedTlsFiles } from '../src/tls.js';
import { committeeRequest, createCommitteeFixture, makeDevices, reconstructAtZero, sumSecrets, type CommitteeFixture } from './fixture.js';

const VEIL = fileURLToPath(new URL('../../cli/bin/veil.js', import.meta.url));
const logger = pino({ level: 'silent' });

function devCa(out: string, ...args: string[]): void {
  const run = spawnSync(process.execPath, [VEIL, 'tls', 'dev-ca', '--out', out, ...args], { encoding: 'utf8' });
  expect(run.status, run.stderr).toBe(0);
}

interface Proc {
  child: ChildProcess;
  address: string;
  stderr: string[];
}

async function startTlsCustodian(f: CommitteeFixture, index: number, tls: { cert: string; key: string; clientCa?: string }): Promise<Proc> {
  const child = spawn(
    process.execPath,
    [
      VEIL, 'custodian', 'serve',
      '--dir', f.custodianDirs[index - 1]!,
      '--listen', '127.0.0.1:0',
      '--coordinator-key', f.requestKeyFile,
      '--authority-key', f.authorityKeyFile,
      '--min-devices', '3',
      '--tls-cert', tls.cert,
      '--tls-key', tls.key,
      ...(tls.clientCa !== undefined ? ['--client-ca', tls.clientCa] : []),
      // Only SIGHUP reloads within the test.
      '--tls-reload-ms', '3600000',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  const address = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`custodian ${index} did not start: ${stderr.join('')}`)), 30_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve((JSON.parse(line) as { listening: string }).listening);
    });
    child.once('exit', (code) => reject(new Error(`custodian ${index} exited with ${code}: ${stderr.join('')}`)));
  });
  return { child, address, stderr };
}

describe('committee over TLS', () => {
  let f: CommitteeFixture;
  let pki: string;
  let other: string;
  const procs: Proc[] = [];
  const watched: WatchedTlsFiles[] = [];

  beforeAll(async () => {
    f = await createCommitteeFixture({ n: 2, threshold: 2, minDevices: 3, maxRounds: 100 });
    pki = join(f.root, 'pki');
    other = join(f.root, 'pki-other');
    devCa(pki, '--custodian', 'custodian-1', '--custodian', 'custodian-2', '--coordinator-client');
    devCa(other, '--custodian', 'custodian-1', '--coordinator-client');
    // Custodian 1 serves live copies of its pair (replaced below, as a renewal would), starting
    // with a certificate from the OTHER CA; custodian 2 serves the right one. Both require the
    // coordinator's client certificate from the first CA.
    await copyFile(join(other, 'custodian-1.crt'), join(f.root, 'live-1.crt'));
    await copyFile(join(other, 'custodian-1.key'), join(f.root, 'live-1.key'));
    procs.push(await startTlsCustodian(f, 1, { cert: join(f.root, 'live-1.crt'), key: join(f.root, 'live-1.key'), clientCa: join(pki, 'ca.crt') }));
    procs.push(await startTlsCustodian(f, 2, { cert: join(pki, 'custodian-2.crt'), key: join(pki, 'custodian-2.key'), clientCa: join(pki, 'ca.crt') }));
  }, 60_000);

  afterAll(async () => {
    for (const w of watched) w.close();
    for (const p of procs) p.child.kill('SIGKILL');
    await f[Symbol.asyncDispose]();
  });

  const clientWith = async (files: { caFile?: string; certFile?: string; keyFile?: string }) => {
    const w = await watchTlsFiles({ files, role: 'client', logger, pollIntervalMs: 3_600_000 });
    watched.push(w);
    return {
      watched: w,
      client: createCommitteeClient({
        descriptor: f.descriptorBytes,
        descriptorSignature: f.descriptorSignature,
        signRequest: f.signRequest,
        addresses: Object.fromEntries(procs.map((p, i) => [i + 1, `grpcs://${p.address}`])),
        tls: committeeChannelCredentials(w),
        deadlineMs: 10_000,
        logger,
      }),
    };
  };

  it('parses grpcs:// addresses as TLS and plain ones as cleartext', () => {
    expect(parseCustodianAddress('grpcs://custodian-1:50061')).toEqual({ target: 'custodian-1:50061', tls: true });
    expect(parseCustodianAddress('127.0.0.1:50061')).toEqual({ target: '127.0.0.1:50061', tls: false });
  });

  it('refuses a custodian certificate from another CA, and a coordinator without a client certificate; renewed files apply without a restart', async () => {
    const mutual = { caFile: join(pki, 'ca.crt'), certFile: join(pki, 'coordinator-client.crt'), keyFile: join(pki, 'coordinator-client.key') };

    // Custodian 1 presents a certificate from another CA: the coordinator refuses it at the handshake.
    const { client } = await clientWith(mutual);
    const wrongCa = await client.collect(committeeRequest(1, makeDevices(f, 1, 3)));
    expect(wrongCa.ok).toBe(false);
    expect(wrongCa.answers.map((a) => a.custodianIndex)).toEqual([2]);
    expect(wrongCa.failures.map((x) => [x.custodianIndex, x.code, x.grpcStatus])).toEqual([[1, 'unavailable', grpc.status.UNAVAILABLE]]);

    // A coordinator that pins the right CA but presents no client certificate: both custodians
    // refuse the handshake (custodian 2 too, whose certificate it would accept).
    const noCert = await clientWith({ caFile: join(pki, 'ca.crt') });
    const refused = await noCert.client.collect(committeeRequest(2, makeDevices(f, 2, 3)));
    await noCert.client.close();
    expect(refused.ok).toBe(false);
    expect(refused.answers).toEqual([]);
    expect(refused.failures.map((x) => [x.custodianIndex, x.code, x.grpcStatus]).sort()).toEqual([
      [1, 'unavailable', grpc.status.UNAVAILABLE],
      [2, 'unavailable', grpc.status.UNAVAILABLE],
    ]);
    // A client certificate from another CA is refused as well.
    const otherCert = await clientWith({ caFile: join(pki, 'ca.crt'), certFile: join(other, 'coordinator-client.crt'), keyFile: join(other, 'coordinator-client.key') });
    const refused2 = await otherCert.client.collect(committeeRequest(2, makeDevices(f, 2, 3)));
    await otherCert.client.close();
    expect(refused2.answers).toEqual([]);
    expect(refused2.failures.every((x) => x.code === 'unavailable' && x.grpcStatus === grpc.status.UNAVAILABLE)).toBe(true);

    // Custodian 1's certificate is renewed from the right CA and it gets SIGHUP: same process, new handshakes succeed.
    await copyFile(join(pki, 'custodian-1.crt'), join(f.root, 'live-1.crt'));
    await copyFile(join(pki, 'custodian-1.key'), join(f.root, 'live-1.key'));
    const pid = procs[0]!.child.pid;
    procs[0]!.child.kill('SIGHUP');
    const until = Date.now() + 15_000;
    let devices = makeDevices(f, 3, 3);
    let result = await client.collect(committeeRequest(3, devices));
    for (let round = 4; !result.ok; round += 1) {
      if (Date.now() > until) throw new Error(`the renewed certificate was not taken up: ${procs[0]!.stderr.join('')}`);
      await new Promise((resolve) => setTimeout(resolve, 300));
      devices = makeDevices(f, round, 3);
      result = await client.collect(committeeRequest(round, devices));
    }
    await client.close();
    expect(procs[0]!.child.pid).toBe(pid);
    expect(procs[0]!.child.exitCode).toBeNull();
    // A committee round over mutual TLS: t = 2 verified answers reconstruct the devices' summed secrets.
    expect(result.answers.map((a) => a.custodianIndex).sort()).toEqual([1, 2]);
    expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
    expect(procs[0]!.stderr.join('')).toContain('TLS material reloaded');
  }, 60_000);

  it('takes up a renewed client certificate and CA bundle on the coordinator side without a new client', async () => {
    // The coordinator starts with the other CA's client certificate (refused by both custodians), then its files are renewed.
    const live = { caFile: join(f.root, 'coord-ca.crt'), certFile: join(f.root, 'coord.crt'), keyFile: join(f.root, 'coord.key') };
    await copyFile(join(pki, 'ca.crt'), live.caFile);
    await copyFile(join(other, 'coordinator-client.crt'), live.certFile);
    await copyFile(join(other, 'coordinator-client.key'), live.keyFile);
    const { client, watched: w } = await clientWith(live);
    const before = await client.collect(committeeRequest(20, makeDevices(f, 20, 3)));
    expect(before.answers).toEqual([]);
    await copyFile(join(pki, 'coordinator-client.crt'), live.certFile);
    await copyFile(join(pki, 'coordinator-client.key'), live.keyFile);
    expect(await w.reload()).toBe(true);
    const devices = makeDevices(f, 21, 3);
    const after = await client.collect(committeeRequest(21, devices));
    await client.close();
    expect(after.ok).toBe(true);
    expect(reconstructAtZero(after.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
    // A half-written renewal (a key that does not match) is refused; the previous material stays.
    await copyFile(join(other, 'coordinator-client.key'), live.keyFile);
    expect(await w.reload()).toBe(false);
    expect(w.current().key).toEqual(await readFile(join(pki, 'coordinator-client.key')));
  }, 60_000);

  it('serve --init creates the keys of an empty directory once and keeps them across restarts (containers)', async () => {
    const dir = join(f.root, 'fresh', 'custodian');
    const start = async (): Promise<{ child: ChildProcess; stderr: string }> => {
      const child = spawn(
        process.execPath,
        [VEIL, 'custodian', 'serve', '--init', '--dir', dir, '--listen', '127.0.0.1:0', '--coordinator-key', f.requestKeyFile, '--authority-key', f.authorityKeyFile, '--min-devices', '3',
          '--tls-cert', join(pki, 'custodian-1.crt'), '--tls-key', join(pki, 'custodian-1.key'), '--client-ca', join(pki, 'ca.crt')],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const err: string[] = [];
      child.stderr!.on('data', (c: Buffer) => err.push(c.toString()));
      await new Promise<void>((resolve, reject) => {
        createInterface({ input: child.stdout! }).once('line', () => resolve());
        child.once('exit', (code) => reject(new Error(`exited with ${code}: ${err.join('')}`)));
      });
      return { child, stderr: err.join('') };
    };
    const stop = (child: ChildProcess): Promise<void> => new Promise((resolve) => { child.once('exit', () => resolve()); child.kill('SIGTERM'); });
    const first = await start();
    const created = await readFile(join(dir, 'custodian-public.json'), 'utf8');
    expect(first.stderr).toMatch(/new keys in .*fingerprint/);
    await stop(first.child);
    const second = await start();
    await stop(second.child);
    expect(second.stderr).not.toMatch(/new keys/);
    expect(await readFile(join(dir, 'custodian-public.json'), 'utf8')).toBe(created);
  }, 60_000);
});
