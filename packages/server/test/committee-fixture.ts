/**
 * Committee tasks through the coordinator, for the integration tests: an enrolment authority, a
 * coordinator request key and custodian directories (real @veil/custodian keys) under a temporary
 * root; custodians served in process; the signed task descriptor; and the device side, the SDK's
 * committee middleware with the test's pins and an authority certificate.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import {
  buildTaskDescriptor,
  custodianFingerprint,
  encodeDescriptor,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  type RawKeyPair,
  type TaskDescriptor,
} from '@veil/crypto';
import {
  createCustodianService,
  initCustodianDir,
  initRequestKey,
  openCustodianState,
  readCustodianKeys,
  readRequestSigner,
  startCustodianServer,
  type CustodianServer,
} from '@veil/custodian';
import { createCommitteeEncryption } from '../../client-sdk/src/mods/committee.js';
import type { Device } from './helpers.js';

export interface CommitteeKeys extends AsyncDisposable {
  readonly root: string;
  readonly authority: RawKeyPair;
  /** The authority's public key as `veil custodian serve --authority-key` reads it. */
  readonly authorityPublicFile: string;
  /** The coordinator's request key: its secret file (the coordinator's `committeeRequestKey`), public file and key. */
  readonly request: { readonly secretFile: string; readonly publicFile: string; readonly publicKey: Uint8Array };
  readonly custodianDirs: readonly string[];
  readonly publics: readonly { readonly sealingKey: string; readonly signingKey: string }[];
  /** What devices pin: each custodian's fingerprint, in index order. */
  readonly fingerprints: readonly string[];
}

/** Keys of a committee of `custodians` under a new temporary directory (removed on dispose). */
export async function createCommitteeKeys(prefix: string, custodians: number): Promise<CommitteeKeys> {
  const root = await mkdtemp(join(tmpdir(), prefix));
  const authority = generateEd25519KeyPair();
  const request = await initRequestKey(join(root, 'request'));
  const publicKey = (await readRequestSigner(request.secretFile)).publicKey;
  const authorityPublicFile = join(root, 'authority-public.json');
  await writeFile(authorityPublicFile, JSON.stringify({ publicKey: Buffer.from(authority.publicKey).toString('base64') }));
  const custodianDirs: string[] = [];
  const publics: { sealingKey: string; signingKey: string }[] = [];
  for (let i = 1; i <= custodians; i++) {
    const dir = join(root, `custodian-${i}`);
    custodianDirs.push(dir);
    publics.push(await initCustodianDir(dir));
  }
  return {
    root,
    authority,
    authorityPublicFile,
    request: { secretFile: request.secretFile, publicFile: request.publicFile, publicKey },
    custodianDirs,
    publics,
    fingerprints: publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64'))),
    [Symbol.asyncDispose]: () => rm(root, { recursive: true, force: true }),
  };
}

type CustodianService = ReturnType<typeof createCustodianService>;

/**
 * A custodian of `dir` served in process (at least 3 devices a round); `close` also closes its
 * answer state. `wrap` may observe the service's calls (it returns the service to serve).
 */
export async function serveCustodian(
  keys: CommitteeKeys,
  dir: string,
  logger: Logger,
  wrap: (service: CustodianService) => CustodianService = (service) => service,
): Promise<{ server: CustodianServer; close(): Promise<void> }> {
  const state = await openCustodianState(join(dir, 'answers.jsonl'));
  const service = createCustodianService({
    keys: await readCustodianKeys(dir),
    state,
    coordinatorKeys: [keys.request.publicKey],
    authorityKeys: [keys.authority.publicKey],
    floors: { minDevices: 3 },
    logger,
  });
  const server = await startCustodianServer({ service: wrap(service), logger });
  return {
    server,
    close: async () => {
      await server.close();
      await state.close();
    },
  };
}

/**
 * The authority-signed descriptor of task `taskId` over the custodians at `addresses` (2 of them
 * decrypt; 3 to 50 devices a round; 5 rounds), with `extra` fields, and its task-body form.
 */
export function committeeDescriptor(
  keys: CommitteeKeys,
  taskId: string,
  addresses: readonly string[],
  extra: Partial<Parameters<typeof buildTaskDescriptor>[0]> = {},
): { descriptor: TaskDescriptor; body: { descriptor: string; descriptorSignature: string } } {
  const descriptor = buildTaskDescriptor({
    ...extra,
    taskId,
    committee: keys.publics.map((p, i) => ({ address: addresses[i]!, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
    threshold: 2,
    minDevices: 3,
    maxDevices: 50,
    maxRounds: 5,
    authorityPublicKey: keys.authority.publicKey,
  });
  return {
    descriptor,
    body: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, keys.authority.privateKey).signature },
  };
}

type EncryptionOptions = Parameters<typeof createCommitteeEncryption>[0];

/**
 * The device side of a committee round: the SDK's committee middleware with the test's pins (at
 * least 3 devices, the custodians' fingerprints, the authority key; `extra.pins` adds to them) and
 * a certificate from the authority. Returns the upload's payload and weight.
 */
export async function committeeUpdate(
  keys: CommitteeKeys,
  device: Device,
  roundNumber: number,
  delta: Float32Array,
  exampleCount: number,
  extra: { pins?: Partial<EncryptionOptions['pins']>; encryption?: Partial<Omit<EncryptionOptions, 'pins'>> } = {},
): Promise<{ payload: Uint8Array; weight: number }> {
  const deviceKey = generateEd25519KeyPair();
  const certificate = issueDeviceCertificate(keys.authority.privateKey, {
    taskId: device.task.taskId,
    deviceId: device.clientId,
    devicePublicKey: deviceKey.publicKey,
    notAfterMs: Date.now() + 3_600_000,
  });
  const enc = createCommitteeEncryption({
    committee: device.task.committee!,
    pins: { minDevices: 3, pinnedFingerprints: [...keys.fingerprints], authorityKey: Buffer.from(keys.authority.publicKey).toString('base64'), ...extra.pins },
    deviceId: device.clientId,
    deviceKey,
    certificate,
    ...extra.encryption,
  });
  const out = await enc.middleware(
    { delta, exampleCount, encoding: 'float32-le', notes: {} },
    { taskId: device.task.taskId, clientId: device.clientId, roundNumber, modelVersion: roundNumber - 1, maxExampleCount: 1000, config: {}, signal: undefined },
    async (u) => u,
  );
  return { payload: out.payload!, weight: out.exampleCount };
}
