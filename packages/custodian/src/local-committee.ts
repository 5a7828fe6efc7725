/**
 * A whole committee on this machine, for the demo and tests: an enrolment authority (its key in
 * a directory of its own, never the coordinator's), a coordinator request key, n custodians as
 * separate `custodian serve` processes on 127.0.0.1, and the task descriptor signed by the
 * authority naming their addresses. One operator then holds everything, which protects nothing
 * against that operator: this is for trying the protocol (docs/custodians.md).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { encodeDescriptor, type DescriptorDp, type DescriptorEncoding, type DeviceCertificate, type SignedTaskDescriptor } from '@veil/crypto';
import { certifyDevice, createSignedDescriptor, initAuthorityDir, readAuthorityKey } from './authority.js';
import { fromBase64, sha256 } from './bytes.js';
import { CustodianError } from './errors.js';
import { initCustodianDir } from './keys.js';
import { initRequestKey, readRequestSigner } from './main.js';

/** Options of {@link startLocalCommittee}. */
export interface LocalCommitteeOptions {
  /** Directory for every key and state file (created; the caller removes it). */
  readonly dir: string;
  readonly taskId: string;
  /** n. Default 3. */
  readonly custodians?: number;
  /** t. Default ⌊n/2⌋ + 1. */
  readonly threshold?: number;
  readonly minDevices: number;
  /** Default 1000. */
  readonly maxDevices?: number;
  /** Default 1000. */
  readonly maxRounds?: number;
  readonly encoding?: Partial<DescriptorEncoding>;
  readonly dp?: DescriptorDp | null;
  /** Custodians' pino level (their logs go to DIR/custodian-N/custodian.log). Default `info`. */
  readonly logLevel?: string;
}

/** A running local committee. */
export interface LocalCommittee extends AsyncDisposable {
  /** The signed descriptor (what the coordinator and the device app are given). */
  readonly signed: SignedTaskDescriptor;
  /** Canonical descriptor bytes and the raw authority signature, as the committee client takes them. */
  readonly descriptorBytes: Uint8Array;
  readonly descriptorSignature: Uint8Array;
  readonly descriptorHash: Uint8Array;
  /** Custodians' `host:port`, by index - 1. */
  readonly addresses: readonly string[];
  /** Fingerprints (hex) of the custodians, for apps to pin. */
  readonly fingerprints: readonly string[];
  /** The coordinator's request signer (its key file is DIR/coordinator/coordinator-request-key.json). */
  readonly signRequest: (message: Uint8Array) => Uint8Array;
  /** The authority certifies a device key for this task (the demo's stand-in for enrolment). */
  certify(deviceId: string, devicePublicKey: Uint8Array): DeviceCertificate;
  /** Files: authority key dir, request key file, custodian dirs. */
  readonly paths: { readonly authority: string; readonly requestKey: string; readonly custodians: readonly string[] };
  /** SIGKILLs custodian `index` (1..n), for fault tests; {@link restart} starts it again on its port. */
  kill(index: number): Promise<void>;
  restart(index: number): Promise<void>;
  /** Stops every custodian (SIGTERM, graceful). */
  close(): Promise<void>;
}

// From the compiled package: dist/serve-process.js beside this file; from the sources (tests), the build's copy.
const SERVE_SCRIPT = fileURLToPath(new URL(import.meta.url.endsWith('.ts') ? '../dist/serve-process.js' : './serve-process.js', import.meta.url));

interface Proc {
  child: ChildProcess;
  address: string;
}

/** Starts a committee of local custodian processes and signs its descriptor. */
export async function startLocalCommittee(options: LocalCommitteeOptions): Promise<LocalCommittee> {
  const n = options.custodians ?? 3;
  const threshold = options.threshold ?? Math.floor(n / 2) + 1;
  await mkdir(options.dir, { recursive: true, mode: 0o700 });
  const authorityDir = join(options.dir, 'authority');
  await initAuthorityDir(authorityDir);
  const authority = await readAuthorityKey(authorityDir);
  const requestKey = await initRequestKey(join(options.dir, 'coordinator'));
  const signer = await readRequestSigner(requestKey.secretFile);
  const authorityPublicFile = join(authorityDir, 'authority-public.json');
  const dirs: string[] = [];
  const infos = [];
  for (let i = 1; i <= n; i += 1) {
    const dir = join(options.dir, `custodian-${i}`);
    infos.push(await initCustodianDir(dir));
    dirs.push(dir);
  }

  const procs = new Map<number, Proc>();
  const start = async (index: number, listen: string): Promise<Proc> => {
    const dir = dirs[index - 1] as string;
    const { openSync } = await import('node:fs');
    const logFd = openSync(join(dir, 'custodian.log'), 'a', 0o600);
    const child = spawn(
      process.execPath,
      [
        SERVE_SCRIPT, 'serve', '--dir', dir, '--listen', listen,
        '--coordinator-key', requestKey.publicFile, '--authority-key', authorityPublicFile,
        '--min-devices', String(options.minDevices), '--log-level', options.logLevel ?? 'info',
      ],
      { stdio: ['ignore', 'pipe', logFd] },
    );
    const address = await new Promise<string>((resolve, reject) => {
      const timer = setTimeout(() => reject(new CustodianError('unavailable', `custodian ${index} did not start (see ${dir}/custodian.log)`)), 30_000);
      createInterface({ input: child.stdout! }).once('line', (line) => {
        clearTimeout(timer);
        resolve((JSON.parse(line) as { listening: string }).listening);
      });
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new CustodianError('unavailable', `custodian ${index} exited with ${code} (see ${dir}/custodian.log)`));
      });
    });
    const proc = { child, address };
    procs.set(index, proc);
    return proc;
  };
  const stop = async (index: number, signal: NodeJS.Signals): Promise<void> => {
    const proc = procs.get(index);
    if (proc === undefined || proc.child.exitCode !== null || proc.child.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      proc.child.once('exit', () => resolve());
      proc.child.kill(signal);
    });
  };

  try {
    for (let i = 1; i <= n; i += 1) await start(i, '127.0.0.1:0');
  } catch (error) {
    for (let i = 1; i <= n; i += 1) await stop(i, 'SIGKILL');
    throw error;
  }
  const addresses = Array.from({ length: n }, (_, i) => (procs.get(i + 1) as Proc).address);
  const { signed } = createSignedDescriptor(authority, {
    taskId: options.taskId,
    committee: infos.map((info, i) => ({ address: addresses[i] as string, custodian: info })),
    threshold,
    minDevices: options.minDevices,
    ...(options.maxDevices !== undefined && { maxDevices: options.maxDevices }),
    maxRounds: options.maxRounds ?? 1000,
    ...(options.encoding !== undefined && { encoding: options.encoding }),
    ...(options.dp !== undefined && { dp: options.dp }),
  });
  await writeFile(join(options.dir, 'descriptor.json'), `${JSON.stringify(signed, null, 2)}\n`);
  const descriptorBytes = encodeDescriptor(signed.descriptor);
  const close = async (): Promise<void> => {
    for (let i = 1; i <= n; i += 1) await stop(i, 'SIGTERM');
  };
  return {
    signed,
    descriptorBytes,
    descriptorSignature: fromBase64(signed.signature, 'signature', 64),
    descriptorHash: sha256(descriptorBytes),
    addresses,
    fingerprints: infos.map((info) => info.fingerprint),
    signRequest: signer.sign,
    certify: (deviceId, devicePublicKey) => certifyDevice(authority, { taskId: options.taskId, deviceId, devicePublicKey }),
    paths: { authority: authorityDir, requestKey: requestKey.secretFile, custodians: dirs },
    kill: (index) => stop(index, 'SIGKILL'),
    async restart(index) {
      await stop(index, 'SIGKILL');
      const address = addresses[index - 1];
      if (address === undefined) throw new CustodianError('invalid_request', `no custodian ${index}`);
      await start(index, address);
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}
