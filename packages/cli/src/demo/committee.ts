/**
 * `veil demo`'s committee (issue 11): the demo plays every party apart from the coordinator —
 * an enrolment authority (its key stays in this module and its enrolment service; the
 * coordinator never receives it), three custodians as local `veil custodian serve` processes
 * with their own directories, and the coordinator's request key. It returns what the
 * coordinator (request key file), the operator (signed descriptor) and the devices (pins,
 * enrolment service) each get.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { writeFile } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommitteePins } from '@veil/client-sdk';
import { buildTaskDescriptor, custodianFingerprint, encodeDescriptor, generateEd25519KeyPair, signDescriptor, type TaskDescriptor } from '@veil/crypto';
import { initCustodianDir, initRequestKey, startEnrolmentServer, type EnrolmentServer } from '@veil/custodian';
import { createLogger } from '@veil/server';

/** What the demo's committee hands out. */
export interface DemoCommittee extends AsyncDisposable {
  readonly taskId: string;
  readonly descriptor: TaskDescriptor;
  /** For `POST /v1/tasks` / `engine.createTask`: `committee`. */
  readonly taskInput: { descriptor: string; descriptorSignature: string };
  /** The coordinator's request key file (VEIL_COMMITTEE_REQUEST_KEY). */
  readonly requestKeyFile: string;
  /** What each device app pins, and where it gets its certificate. */
  readonly device: { pins: CommitteePins; enrolmentUrl: string; enrolmentSecret: string };
  readonly custodianAddresses: readonly string[];
  close(): Promise<void>;
}

/** Options of {@link startDemoCommittee}. */
export interface DemoCommitteeOptions {
  /** Directory for the custodians', authority's and request key's files. */
  readonly dir: string;
  /** Custodians (n). Default 3. */
  readonly custodians?: number;
  /** Threshold t. Default 2 (c = 2t - n - 1 = 0 for 2-of-3). */
  readonly threshold?: number;
  /** Smallest |D| (the task's minClients). */
  readonly minDevices: number;
  /** Largest |D| (clients per round). */
  readonly maxDevices: number;
  readonly maxRounds: number;
  /** Largest weight a device's update carries (its example count, capped). Default 1: FedAvg by device. */
  readonly weightCap?: number;
}

const VEIL_BIN = fileURLToPath(new URL('../../bin/veil.js', import.meta.url));

function startCustodian(dir: string, requestPublicFile: string, authorityPublicFile: string, minDevices: number, logFile: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(
    process.execPath,
    [VEIL_BIN, 'custodian', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--coordinator-key', requestPublicFile, '--authority-key', authorityPublicFile, '--min-devices', String(minDevices)],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`custodian in ${dir} did not start: ${stderr.join('')}`)), 60_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      void writeFile(logFile, stderr.join(''));
      resolve({ child, address: (JSON.parse(line) as { listening: string }).listening });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`custodian in ${dir} exited with ${code}: ${stderr.join('')}`));
    });
  });
}

/** Starts the demo's authority, custodians and request key; see the module comment. */
export async function startDemoCommittee(options: DemoCommitteeOptions): Promise<DemoCommittee> {
  const n = options.custodians ?? 3;
  const threshold = options.threshold ?? 2;
  const authority = generateEd25519KeyPair();
  const authorityPublicFile = join(options.dir, 'authority-public.json');
  await writeFile(authorityPublicFile, JSON.stringify({ publicKey: Buffer.from(authority.publicKey).toString('base64') }));
  const request = await initRequestKey(join(options.dir, 'coordinator-request-key'));
  const children: ChildProcess[] = [];
  let enrolment: EnrolmentServer | null = null;
  const close = async (): Promise<void> => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
    await enrolment?.close();
    enrolment = null;
  };
  try {
    const publics = [];
    const addresses: string[] = [];
    for (let i = 1; i <= n; i++) {
      const dir = join(options.dir, `custodian-${i}`);
      publics.push(await initCustodianDir(dir));
      const started = await startCustodian(dir, request.publicFile, authorityPublicFile, options.minDevices, join(options.dir, `custodian-${i}.log`));
      children.push(started.child);
      addresses.push(started.address);
    }
    const taskId = randomUUID();
    const descriptor = buildTaskDescriptor({
      taskId,
      committee: publics.map((p, i) => ({ address: addresses[i]!, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
      threshold,
      minDevices: options.minDevices,
      maxDevices: Math.max(options.maxDevices, options.minDevices),
      maxRounds: options.maxRounds,
      encoding: { weightCap: options.weightCap ?? 1 },
      authorityPublicKey: authority.publicKey,
    });
    const enrolmentSecret = randomBytes(24).toString('base64url');
    enrolment = await startEnrolmentServer({
      authority,
      enrolmentSecret,
      taskIds: [taskId],
      statePath: join(options.dir, 'enrolment.jsonl'),
      logger: createLogger({ level: 'silent' }),
    });
    return {
      taskId,
      descriptor,
      taskInput: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature },
      requestKeyFile: request.secretFile,
      device: {
        pins: {
          minDevices: options.minDevices,
          maxRounds: options.maxRounds,
          pinnedFingerprints: publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64'))),
          authorityKey: Buffer.from(authority.publicKey).toString('base64'),
        },
        enrolmentUrl: enrolment.url,
        enrolmentSecret,
      },
      custodianAddresses: addresses,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
