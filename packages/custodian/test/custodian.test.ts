/**
 * Custodians on loopback (real gRPC servers, real HPKE, real files with fsync): answers, cached
 * answers, refusals, and the committee client's verification.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { join } from 'node:path';
import { readFile } from 'node:fs/promises';
import {
  encodeDescriptor,
  generateEd25519KeyPair,
  signDescriptor,
  ed25519Sign,
} from '@veil/crypto';
import { fromBase64, sha256 } from '../src/bytes.js';
import { runCustodian, type RunningCustodian } from '../src/main.js';
import { createCommitteeClient, type CommitteeClient } from '../src/client.js';
import { createCustodianServiceClient } from '../src/grpc/proto.js';
import { requestSigningBytes, stageSigningBytes } from '../src/request-auth.js';
import { computeHashD } from '../src/protocol.js';
import { ERROR_CODE_METADATA_KEY } from '../src/errors.js';
import { createCustodianService, type CustodianService, type StagedMessage } from '../src/service.js';
import { startCustodianServer } from '../src/grpc/server.js';
import { readCustodianKeys } from '../src/keys.js';
import { openCustodianState } from '../src/state.js';
import {
  committeeRequest,
  createCommitteeFixture,
  makeDescriptor,
  makeDevice,
  makeDevices,
  reconstructAtZero,
  sumSecrets,
  type CommitteeFixture,
  type DeviceUpload,
} from './fixture.js';

/** A logger that keeps every line, to prove what is (not) logged. */
function capturingLogger(): { logger: pino.Logger; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString());
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

interface RawResult {
  readonly ok: boolean;
  readonly code?: number;
  readonly veilCode?: string;
  readonly details?: string;
  readonly statement?: Buffer;
  readonly signature?: Buffer;
  readonly shareSum?: Buffer;
}

type Entry = { manifest: Uint8Array; manifestSignature: Uint8Array; sealedShare: Uint8Array };

/** A ShareSum stream to `address`; `result` is how it ended (the channel is closed then). */
function openShareSum(address: string): { call: { write(message: object): boolean; end(): void; cancel(): void }; result: Promise<RawResult> } {
  const client = createCustodianServiceClient(address, grpc.credentials.createInsecure());
  let call!: ReturnType<typeof client.shareSum>;
  const result = new Promise<RawResult>((resolve) => {
    call = client.shareSum({ deadline: Date.now() + 20_000 }, (error, response) => {
      if (error) {
        resolve({ ok: false, code: error.code, veilCode: String(error.metadata?.get(ERROR_CODE_METADATA_KEY)[0] ?? ''), details: error.details });
      } else {
        resolve({ ok: true, statement: response!.statement, signature: response!.signature, shareSum: response!.shareSum });
      }
    });
  }).finally(() => client.close());
  return { call, result };
}

/** A request header as the coordinator signs it (`sign`, default the fixture's request key). */
function signedHeader(
  f: CommitteeFixture,
  opts: {
    round: number;
    custodianIndex: number;
    hashD: Uint8Array;
    deviceCount: number;
    descriptorBytes?: Uint8Array;
    descriptorSignature?: Uint8Array;
    sign?: (m: Uint8Array) => Uint8Array;
    issuedAtMs?: number;
  },
) {
  const descriptorBytes = opts.descriptorBytes ?? f.descriptorBytes;
  const issuedAtMs = opts.issuedAtMs ?? Date.now();
  const { round, hashD, deviceCount, custodianIndex } = opts;
  const signature = (opts.sign ?? f.signRequest)(requestSigningBytes({ descriptorHash: sha256(descriptorBytes), round, hashD, deviceCount, custodianIndex, issuedAtMs }));
  return {
    header: {
      descriptor: Buffer.from(descriptorBytes),
      descriptorSignature: Buffer.from(opts.descriptorSignature ?? f.descriptorSignature),
      round,
      hashD: Buffer.from(hashD),
      deviceCount,
      custodianIndex,
      issuedAtMs,
      coordinatorSignature: Buffer.from(signature),
    },
  };
}

const batchOf = (entries: readonly Entry[]) => ({
  batch: { devices: entries.map((e) => ({ manifest: Buffer.from(e.manifest), manifestSignature: Buffer.from(e.manifestSignature), sealedShare: Buffer.from(e.sealedShare) })) },
});

/** A hand-built ShareSum call, for requests the committee client would never send. */
async function rawShareSum(
  address: string,
  f: CommitteeFixture,
  opts: {
    round: number;
    custodianIndex: number;
    entries: readonly Entry[];
    hashD?: Uint8Array;
    deviceCount?: number;
    descriptorBytes?: Uint8Array;
    descriptorSignature?: Uint8Array;
    sign?: (m: Uint8Array) => Uint8Array;
    issuedAtMs?: number;
  },
): Promise<RawResult> {
  const { call, result } = openShareSum(address);
  call.write(signedHeader(f, { ...opts, hashD: opts.hashD ?? new Uint8Array(32), deviceCount: opts.deviceCount ?? opts.entries.length }));
  call.write(batchOf(opts.entries));
  call.end();
  return result;
}

/**
 * A hand-built staged ShareSum call: a stage header, each entry in its own batch (as a round
 * accepts them), then the final header (absent: the stream just ends).
 */
async function rawStaged(
  address: string,
  f: CommitteeFixture,
  opts: {
    round: number;
    custodianIndex: number;
    entries: readonly Entry[];
    final?: { round?: number; hashD: Uint8Array; deviceCount?: number } | null;
    stageSign?: (m: Uint8Array) => Uint8Array;
  },
): Promise<RawResult> {
  const { call, result } = openShareSum(address);
  const issuedAtMs = Date.now();
  const stageSignature = (opts.stageSign ?? f.signRequest)(stageSigningBytes({ descriptorHash: f.descriptorHash, round: opts.round, custodianIndex: opts.custodianIndex, issuedAtMs }));
  call.write({
    stage: {
      descriptor: Buffer.from(f.descriptorBytes),
      descriptorSignature: Buffer.from(f.descriptorSignature),
      round: opts.round,
      custodianIndex: opts.custodianIndex,
      issuedAtMs,
      coordinatorSignature: Buffer.from(stageSignature),
    },
  });
  for (const e of opts.entries) call.write(batchOf([e]));
  if (opts.final != null) {
    const { hashD } = opts.final;
    call.write(signedHeader(f, { round: opts.final.round ?? opts.round, custodianIndex: opts.custodianIndex, hashD, deviceCount: opts.final.deviceCount ?? opts.entries.length }));
  }
  call.end();
  return result;
}

/** Runs a custodian (`runCustodian`, as `veil custodian serve`) on each of the fixture's directories. */
function runCustodians(f: CommitteeFixture, logger: pino.Logger, extra: { tls?: { certChain: Buffer; privateKey: Buffer } } = {}): Promise<RunningCustodian[]> {
  return Promise.all(
    f.custodianDirs.map((dir) =>
      runCustodian({ dir, listen: '127.0.0.1:0', coordinatorKeyFiles: [f.requestKeyFile], authorityKeyFiles: [f.authorityKeyFile], floors: { minDevices: 3 }, logger, ...extra }),
    ),
  );
}

/** The coordinator's committee client for the fixture's descriptor and request key. */
function committeeClientFor(f: CommitteeFixture, options: Omit<Parameters<typeof createCommitteeClient>[0], 'descriptor' | 'descriptorSignature' | 'signRequest'>): CommitteeClient {
  return createCommitteeClient({ descriptor: f.descriptorBytes, descriptorSignature: f.descriptorSignature, signRequest: f.signRequest, ...options });
}

/** Custodian `i`'s own service over its directory (keys, answer state), for a test to wrap; `close` ends its state. */
async function custodianServiceOf(f: CommitteeFixture, i: number, logger: pino.Logger, extra: { maxDevices?: number; maxStagedRequests?: number } = {}) {
  const keys = await readCustodianKeys(f.custodianDirs[i - 1]!);
  const state = await openCustodianState(join(f.custodianDirs[i - 1]!, 'answers.jsonl'));
  const service = createCustodianService({
    keys,
    state,
    coordinatorKeys: [f.requestKey.publicKey],
    authorityKeys: [f.authority.publicKey],
    floors: { minDevices: 3 },
    ...extra,
    logger,
  });
  return { service, state };
}

/** `service` with each message of a staged request handed to `tap` (and awaited) before the service reads it. */
function tapStaged(service: CustodianService, tap: (message: StagedMessage) => unknown): CustodianService {
  return {
    ...service,
    stagedShareSum: (stage, messages) =>
      service.stagedShareSum(
        stage,
        (async function* () {
          for await (const message of messages) {
            await tap(message);
            yield message;
          }
        })(),
      ),
  };
}

function entriesFor(devices: readonly DeviceUpload[], custodianIndex: number) {
  return devices.map((d) => ({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature, sealedShare: d.sealedShares[custodianIndex - 1]! }));
}

function hashDOf(devices: readonly DeviceUpload[]): Uint8Array {
  return computeHashD(devices.map((d) => sha256(d.manifestBytes)));
}

describe('custodians answering a 4-of-7 committee', () => {
  let f: CommitteeFixture;
  let running: RunningCustodian[];
  let logs: string[];
  let client: CommitteeClient;

  beforeEach(async () => {
    f = await createCommitteeFixture({ n: 7, threshold: 4, minDevices: 3 });
    const captured = capturingLogger();
    logs = captured.lines;
    running = await runCustodians(f, captured.logger);
    client = committeeClientFor(f, { addresses: Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])), deadlineMs: 20_000, logger: pino({ level: 'silent' }) });
  });

  afterEach(async () => {
    await client.close();
    for (const r of running) await r.close();
    await f[Symbol.asyncDispose]();
  });

  it('reconstructs the sum of the devices\' secrets from t answers, and logs no share', async () => {
    const devices = makeDevices(f, 1, 5);
    const result = await client.collect(committeeRequest(1, devices));
    expect(result.ok).toBe(true);
    expect(result.answers).toHaveLength(4);
    expect(result.failures).toEqual([]);
    // The ledger's copy: the signed statement without the share sum.
    expect(result.answers[0]!.signed.answer).toMatchObject({ round: 1, count: 5, hashD: Buffer.from(result.hashD).toString('hex') });
    expect(JSON.stringify(result.answers[0]!.signed)).not.toContain('shareSum"');
    const secretSum = reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })));
    expect(secretSum).toEqual(sumSecrets(devices));
    // A different quorum reconstructs the same S_D: ask the remaining three plus one again.
    const direct = await Promise.all(
      [5, 6, 7, 1].map((i) => rawShareSum(running[i - 1]!.server.address, f, { round: 1, custodianIndex: i, entries: entriesFor(devices, i), hashD: hashDOf(devices) })),
    );
    expect(direct.every((r) => r.ok)).toBe(true);
    expect(reconstructAtZero(direct.map((r, k) => ({ x: [5, 6, 7, 1][k]!, shareSum: new Uint8Array(r.shareSum!) })))).toEqual(sumSecrets(devices));
    // Nothing in the logs carries a share or a share sum (base64 of any 16 bytes of them).
    const text = logs.join('');
    for (const a of result.answers) expect(text).not.toContain(Buffer.from(a.shareSum.subarray(0, 16)).toString('base64').slice(0, 20));
    expect(text).toContain('"msg":"answered"');
  });

  it('describes itself with the keys and fingerprint of its public file', async () => {
    const client = createCustodianServiceClient(running[2]!.server.address, grpc.credentials.createInsecure());
    try {
      const described = await new Promise<{ sealingKey: Buffer; signingKey: Buffer; fingerprint: string }>((resolve, reject) =>
        client.describe({}, (error, response) => (error ? reject(error) : resolve(response!))),
      );
      expect(described.sealingKey.toString('base64')).toBe(f.custodians[2]!.sealingKey);
      expect(described.signingKey.toString('base64')).toBe(f.custodians[2]!.signingKey);
      expect(described.fingerprint).toBe(f.custodians[2]!.fingerprint);
    } finally {
      client.close();
    }
  });

  it('gives the same signed bytes for the same D and refuses a different D for the same round', async () => {
    const devices = makeDevices(f, 1, 4);
    const first = await rawShareSum(running[0]!.server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), hashD: hashDOf(devices) });
    expect(first.ok).toBe(true);
    const again = await rawShareSum(running[0]!.server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), hashD: hashDOf(devices) });
    expect(again.ok).toBe(true);
    expect(Buffer.compare(again.statement!, first.statement!)).toBe(0);
    expect(Buffer.compare(again.signature!, first.signature!)).toBe(0);
    expect(Buffer.compare(again.shareSum!, first.shareSum!)).toBe(0);
    // D minus one device: the difference of the two answers would expose that device's share.
    const smaller = devices.slice(0, 3);
    const refused = await rawShareSum(running[0]!.server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(smaller, 1), hashD: hashDOf(smaller) });
    expect(refused).toMatchObject({ ok: false, code: grpc.status.FAILED_PRECONDITION, veilCode: 'other_set_answered' });
    // The next round is a new question.
    const next = makeDevices(f, 2, 3);
    const round2 = await rawShareSum(running[0]!.server.address, f, { round: 2, custodianIndex: 1, entries: entriesFor(next, 1), hashD: hashDOf(next) });
    expect(round2.ok).toBe(true);
  });

  it('refuses shares bound to another task, round or device, and phantom devices without a certified manifest', async () => {
    const address = running[1]!.server.address;
    const base = makeDevices(f, 1, 3);
    const ask = (extra: DeviceUpload) => {
      const set = [...base, extra];
      return rawShareSum(address, f, { round: 1, custodianIndex: 2, entries: entriesFor(set, 2), hashD: hashDOf(set) });
    };
    // A share sealed for another round (the manifest says round 1, the AAD round 2).
    expect(await ask(makeDevice(f, { round: 1, deviceId: 'r', sealBinding: { round: 2 } }))).toMatchObject({ ok: false, code: grpc.status.INVALID_ARGUMENT, veilCode: 'invalid_share' });
    // ... for another device (a share copied from another device's upload).
    expect(await ask(makeDevice(f, { round: 1, deviceId: 'd', sealBinding: { deviceId: 'someone-else' } }))).toMatchObject({ ok: false, veilCode: 'invalid_share' });
    // ... for another task descriptor.
    expect(await ask(makeDevice(f, { round: 1, deviceId: 't', sealBinding: { descriptorHash: sha256(new TextEncoder().encode('another task')) } }))).toMatchObject({
      ok: false,
      veilCode: 'invalid_share',
    });
    // A manifest for round 2 in a round-1 request.
    expect(await ask(makeDevice(f, { round: 2, deviceId: 'late' }))).toMatchObject({ ok: false, code: grpc.status.PERMISSION_DENIED, veilCode: 'invalid_manifest' });
    // A phantom device: the coordinator sealed shares itself and "certified" the key with a key of its own.
    const coordinatorMadeAuthority = generateEd25519KeyPair();
    expect(await ask(makeDevice(f, { round: 1, deviceId: 'phantom', authorityPrivateKey: coordinatorMadeAuthority.privateKey }))).toMatchObject({
      ok: false,
      code: grpc.status.PERMISSION_DENIED,
      veilCode: 'invalid_manifest',
    });
    // A real device's manifest with a share the coordinator swapped in (the manifest does not commit to it).
    const real = makeDevice(f, { round: 1, deviceId: 'swapped' });
    const forgedShare = makeDevice(f, { round: 1, deviceId: 'swapped', key: real.key }).sealedShares[1]!;
    const set = [...base, real];
    const swapped = entriesFor(set, 2).map((e, j) => (j === 3 ? { ...e, sealedShare: forgedShare } : e));
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 2, entries: swapped, hashD: hashDOf(set) })).toMatchObject({ ok: false, veilCode: 'invalid_manifest' });
    // An expired certificate.
    expect(await ask(makeDevice(f, { round: 1, deviceId: 'expired', notAfterMs: Date.now() - 1 }))).toMatchObject({ ok: false, veilCode: 'invalid_manifest' });
    // A tampered manifest signature.
    const tampered = makeDevice(f, { round: 1, deviceId: 'tampered' });
    const badSig = new Uint8Array(tampered.manifestSignature);
    badSig[0] = badSig[0]! ^ 1;
    expect(await ask({ ...tampered, manifestSignature: badSig })).toMatchObject({ ok: false, veilCode: 'invalid_manifest' });
    // None of these refusals spent the round: the honest D is still answered.
    expect((await rawShareSum(address, f, { round: 1, custodianIndex: 2, entries: entriesFor(base, 2), hashD: hashDOf(base) })).ok).toBe(true);
  });

  it('counts each device once: the same entry twice, or a retried upload beside the first, is refused', async () => {
    const address = running[2]!.server.address;
    const devices = makeDevices(f, 1, 3);
    const twice = [...entriesFor(devices, 3), entriesFor(devices, 3)[0]!];
    // hash(D) cannot even be formed over a repeated manifest; send the 3-device hash with 4 entries.
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 3, entries: twice, hashD: hashDOf(devices), deviceCount: 4 })).toMatchObject({
      ok: false,
      code: grpc.status.INVALID_ARGUMENT,
      veilCode: 'duplicate_device',
    });
    // A retry with a fresh secret (a new manifest) beside the first attempt: same device id.
    const retry = makeDevice(f, { round: 1, deviceId: devices[0]!.deviceId, key: devices[0]!.key });
    const withRetry = [...devices, retry];
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 3, entries: entriesFor(withRetry, 3), hashD: hashDOf(withRetry) })).toMatchObject({
      ok: false,
      veilCode: 'duplicate_device',
    });
    // One key under two device ids (a Sybil with one certified key) is refused too.
    const sameKey = makeDevice(f, { round: 1, deviceId: 'other-id', key: devices[1]!.key });
    const withSameKey = [...devices, sameKey];
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 3, entries: entriesFor(withSameKey, 3), hashD: hashDOf(withSameKey) })).toMatchObject({
      ok: false,
      veilCode: 'duplicate_device',
    });
    // A header whose hash of D does not match the devices sent.
    const other = makeDevices(f, 1, 3, 'other');
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 3, entries: entriesFor(devices, 3), hashD: hashDOf(other) })).toMatchObject({
      ok: false,
      veilCode: 'invalid_request',
    });
  });

  it('refuses |D| below the minimum, rounds past the cap, unauthenticated and stale requests', async () => {
    const address = running[3]!.server.address;
    const two = makeDevices(f, 1, 2);
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 4, entries: entriesFor(two, 4), hashD: hashDOf(two) })).toMatchObject({
      ok: false,
      code: grpc.status.FAILED_PRECONDITION,
      veilCode: 'below_minimum',
    });
    const late = makeDevices(f, 6, 3);
    expect(await rawShareSum(address, f, { round: 6, custodianIndex: 4, entries: entriesFor(late, 4), hashD: hashDOf(late) })).toMatchObject({
      ok: false,
      code: grpc.status.FAILED_PRECONDITION,
      veilCode: 'round_cap_exceeded',
    });
    const devices = makeDevices(f, 1, 3);
    const stranger = generateEd25519KeyPair();
    expect(
      await rawShareSum(address, f, { round: 1, custodianIndex: 4, entries: entriesFor(devices, 4), hashD: hashDOf(devices), sign: (m) => ed25519Sign(stranger.privateKey, m) }),
    ).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
    expect(
      await rawShareSum(address, f, { round: 1, custodianIndex: 4, entries: entriesFor(devices, 4), hashD: hashDOf(devices), issuedAtMs: Date.now() - 10 * 60_000 }),
    ).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED });
    // Asking custodian 4's server as if it were custodian 5: its keys are not at index 5.
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 5, entries: entriesFor(devices, 5), hashD: hashDOf(devices) })).toMatchObject({
      ok: false,
      veilCode: 'invalid_descriptor',
    });
  });

  it('refuses a descriptor changed by the coordinator, one signed by another authority, and a weaker re-signed one', async () => {
    const address = running[4]!.server.address;
    const devices = makeDevices(f, 1, 3);
    const entries = entriesFor(devices, 5);
    // minDevices lowered to 1 by the coordinator; the authority's signature no longer matches.
    const lowered = encodeDescriptor({ ...f.descriptor, minDevices: 1 });
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 5, entries, hashD: hashDOf(devices), descriptorBytes: lowered })).toMatchObject({
      ok: false,
      code: grpc.status.FAILED_PRECONDITION,
      veilCode: 'invalid_descriptor',
    });
    // The coordinator signs its own descriptor with an authority key of its own.
    const own = generateEd25519KeyPair();
    const ownDescriptor = makeDescriptor(f.custodians, own.publicKey);
    const ownSigned = signDescriptor(ownDescriptor, own.privateKey);
    expect(
      await rawShareSum(address, f, {
        round: 1,
        custodianIndex: 5,
        entries,
        hashD: hashDOf(devices),
        descriptorBytes: encodeDescriptor(ownDescriptor),
        descriptorSignature: fromBase64(ownSigned.signature, 's', 64),
      }),
    ).toMatchObject({ ok: false, veilCode: 'invalid_descriptor' });
    // A descriptor changed by the coordinator and re-signed by the real authority.
    const signedByAuthority = (descriptor: typeof f.descriptor) =>
      rawShareSum(address, f, {
        round: 1,
        custodianIndex: 5,
        entries,
        hashD: hashDOf(devices),
        descriptorBytes: encodeDescriptor(descriptor),
        descriptorSignature: fromBase64(signDescriptor(descriptor, f.authority.privateKey).signature, 's', 64),
      });
    // c > 2t - n - 1 (t = 4 of 7 allows c = 0), even when the real authority signed it.
    expect(await signedByAuthority({ ...f.descriptor, corruptTolerated: 1 })).toMatchObject({ ok: false, veilCode: 'invalid_descriptor' });
    // A c0 compressed to 32 bits, re-signed by the real authority: 1,000 devices' worst-case rounding
    // (1000 · 2^11) does not fit Δ/2 = 2^11, so decryption would not be exact.
    expect(await signedByAuthority({ ...f.descriptor, encoding: { ...f.descriptor.encoding, c0Bits: 32 as const } })).toMatchObject({ ok: false, code: grpc.status.FAILED_PRECONDITION, veilCode: 'invalid_descriptor', details: expect.stringContaining('rounding sum of up to 2048000 (c0Bits 32)') });
    // A descriptor whose bytes are not canonical (whitespace) is refused rather than hashed differently.
    const spaced = new TextEncoder().encode(` ${new TextDecoder().decode(f.descriptorBytes)}`);
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 5, entries, hashD: hashDOf(devices), descriptorBytes: spaced })).toMatchObject({
      ok: false,
    });
    // Answer once under the real descriptor; then the authority re-signs the task with a
    // different descriptor (here: more rounds). The custodian keeps serving the task under the first.
    expect((await rawShareSum(address, f, { round: 1, custodianIndex: 5, entries, hashD: hashDOf(devices) })).ok).toBe(true);
    // The custodian keeps the descriptor it verified, by its bytes and signature: the same bytes
    // under a flipped signature are still refused, and so is the same descriptor at an index whose
    // keys are not this custodian's.
    const flipped = new Uint8Array(f.descriptorSignature);
    flipped[7]! ^= 1;
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 5, entries, hashD: hashDOf(devices), descriptorSignature: flipped })).toMatchObject({
      ok: false,
      veilCode: 'invalid_descriptor',
    });
    expect(await rawShareSum(address, f, { round: 1, custodianIndex: 4, entries: entriesFor(devices, 4), hashD: hashDOf(devices) })).toMatchObject({
      ok: false,
      veilCode: 'invalid_descriptor',
    });
    const resigned = { ...f.descriptor, maxRounds: 4 };
    const next = makeDevices(f, 2, 3);
    expect(
      await rawShareSum(address, f, {
        round: 2,
        custodianIndex: 5,
        entries: entriesFor(next, 5),
        hashD: hashDOf(next),
        descriptorBytes: encodeDescriptor(resigned),
        descriptorSignature: fromBase64(signDescriptor(resigned, f.authority.privateKey).signature, 's', 64),
      }),
    ).toMatchObject({ ok: false, code: grpc.status.FAILED_PRECONDITION, veilCode: 'descriptor_changed' });
  });
});

describe('staged requests (devices streamed while the round collects)', () => {
  let f: CommitteeFixture;
  let running: RunningCustodian[];

  beforeEach(async () => {
    f = await createCommitteeFixture({ n: 5, threshold: 3, minDevices: 3 });
    running = await runCustodians(f, pino({ level: 'silent' }));
  });

  afterEach(async () => {
    for (const r of running) await r.close();
    await f[Symbol.asyncDispose]();
  });

  it('answers exactly the devices staged: the same bytes as a plain request for that D, which then gets them again; another D is refused', async () => {
    const address = running[0]!.server.address;
    const devices = makeDevices(f, 1, 4);
    const staged = await rawStaged(address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), final: { hashD: hashDOf(devices) } });
    expect(staged.ok).toBe(true);
    const plain = await rawShareSum(address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), hashD: hashDOf(devices) });
    expect(plain.ok).toBe(true);
    expect(Buffer.compare(plain.statement!, staged.statement!)).toBe(0);
    expect(Buffer.compare(plain.signature!, staged.signature!)).toBe(0);
    expect(Buffer.compare(plain.shareSum!, staged.shareSum!)).toBe(0);
    // A second staged request for D minus one device is refused like a plain one.
    const smaller = devices.slice(1);
    expect(await rawStaged(address, f, { round: 1, custodianIndex: 1, entries: entriesFor(smaller, 1), final: { hashD: hashDOf(smaller) } })).toMatchObject({
      ok: false,
      code: grpc.status.FAILED_PRECONDITION,
      veilCode: 'other_set_answered',
    });
    // Three staged answers reconstruct the devices' secret sum.
    const more = await Promise.all([2, 3].map((i) => rawStaged(running[i - 1]!.server.address, f, { round: 1, custodianIndex: i, entries: entriesFor(devices, i), final: { hashD: hashDOf(devices) } })));
    expect(reconstructAtZero([staged, ...more].map((r, k) => ({ x: k + 1, shareSum: new Uint8Array(r.shareSum!) })))).toEqual(sumSecrets(devices));
  });

  it('never answers for a set other than the devices staged, and answers nothing before the final header', async () => {
    const address = running[1]!.server.address;
    const devices = makeDevices(f, 2, 4);
    const three = devices.slice(0, 3);
    // Staged four, final header names three of them (by hash, or by count): refused, nothing recorded.
    expect(await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(devices, 2), final: { hashD: hashDOf(three), deviceCount: 3 } })).toMatchObject({
      ok: false,
      code: grpc.status.INVALID_ARGUMENT,
      veilCode: 'invalid_request',
    });
    expect(await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(devices, 2), final: { hashD: hashDOf(devices), deviceCount: 5 } })).toMatchObject({
      ok: false,
      veilCode: 'invalid_request',
    });
    // The final header of another round than the stage header's.
    expect(await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(devices, 2), final: { round: 3, hashD: hashDOf(devices) } })).toMatchObject({
      ok: false,
      veilCode: 'invalid_request',
    });
    // A stream that ends without its final header.
    expect(await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(devices, 2), final: null })).toMatchObject({ ok: false, veilCode: 'invalid_request' });
    // A stage header not signed by the coordinator's key: refused before any device is read.
    const stranger = generateEd25519KeyPair();
    expect(
      await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(devices, 2), final: { hashD: hashDOf(devices) }, stageSign: (m) => ed25519Sign(stranger.privateKey, m) }),
    ).toMatchObject({ ok: false, code: grpc.status.UNAUTHENTICATED, veilCode: 'unauthenticated' });
    // A staged share sealed for another device is refused as in a plain request.
    const foreign = makeDevice(f, { round: 2, deviceId: 'foreign', sealBinding: { deviceId: 'someone-else' } });
    const withForeign = [...three, foreign];
    expect(await rawStaged(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(withForeign, 2), final: { hashD: hashDOf(withForeign) } })).toMatchObject({
      ok: false,
      veilCode: 'invalid_share',
    });
    // None of these answered round 2: the three devices are still a valid D.
    const ok = await rawShareSum(address, f, { round: 2, custodianIndex: 2, entries: entriesFor(three, 2), hashD: hashDOf(three) });
    expect(ok.ok).toBe(true);
  });

  it('the committee client stages t custodians, asks them with the final header only, and falls back to plain requests when D differs', async () => {
    const client = committeeClientFor(f, { addresses: Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])), deadlineMs: 20_000, logger: pino({ level: 'silent' }) });
    try {
      const devices = makeDevices(f, 1, 4);
      const staging = client.stage(1);
      for (const d of devices) staging.add({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature }, (i) => d.sealedShares[i - 1]!);
      const result = await client.collect({ ...committeeRequest(1, devices), staged: staging });
      expect(result.ok).toBe(true);
      expect([...result.staged].sort()).toEqual([1, 2, 3]);
      expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));

      // D is not the staged set (a device staged but left out): plain requests, the right sum.
      const next = makeDevices(f, 2, 4);
      const staging2 = client.stage(2);
      for (const d of next) staging2.add({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature }, (i) => d.sealedShares[i - 1]!);
      const subset = next.slice(0, 3);
      const second = await client.collect({ ...committeeRequest(2, subset), staged: staging2 });
      expect(second.ok).toBe(true);
      expect(second.staged).toEqual([]);
      expect(reconstructAtZero(second.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(subset));

      // A staged custodian that went down mid-round: the collect asks another in its place.
      const devices3 = makeDevices(f, 3, 3);
      const [down] = running.splice(0, 1);
      await down!.close();
      const staging3 = client.stage(3);
      for (const d of devices3) staging3.add({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature }, (i) => d.sealedShares[i - 1]!);
      const third = await client.collect({ ...committeeRequest(3, devices3), staged: staging3 });
      expect(third.ok).toBe(true);
      expect(third.answers.map((a) => a.custodianIndex)).not.toContain(1);
      expect(reconstructAtZero(third.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices3));
    } finally {
      await client.close();
    }
  });
});

describe('the committee client', () => {
  it('refuses forged answers and still completes with t valid ones', async () => {
    await using f = await createCommitteeFixture({ n: 5, threshold: 3, minDevices: 3 });
    const logger = pino({ level: 'silent' });
    const servers: { address: string; close: () => Promise<void> }[] = [];
    const forgerKey = generateEd25519KeyPair();
    for (let i = 1; i <= 5; i += 1) {
      const { service: honest, state } = await custodianServiceOf(f, i, logger);
      // Custodians 1 and 2 are compromised: 1 re-signs with a key not in the committee, 2 changes
      // its share sum after signing.
      const service =
        i === 1
          ? { ...honest, shareSum: async (...args: Parameters<typeof honest.shareSum>) => {
              const a = await honest.shareSum(...args);
              return { ...a, signature: ed25519Sign(forgerKey.privateKey, a.statement) };
            } }
          : i === 2
            ? { ...honest, shareSum: async (...args: Parameters<typeof honest.shareSum>) => {
                const a = await honest.shareSum(...args);
                const shareSum = new Uint8Array(a.shareSum);
                shareSum[0] = (shareSum[0]! + 1) & 0xff;
                return { ...a, shareSum };
              } }
            : honest;
      const server = await startCustodianServer({ service, logger });
      servers.push({ address: server.address, close: async () => { await server.close(); await state.close(); } });
    }
    const client = committeeClientFor(f, { addresses: Object.fromEntries(servers.map((s, i) => [i + 1, s.address])), logger });
    try {
      const devices = makeDevices(f, 1, 4);
      const result = await client.collect(committeeRequest(1, devices));
      expect(result.ok).toBe(true);
      expect(result.answers.map((a) => a.custodianIndex).sort()).toEqual([3, 4, 5]);
      // The client stops at t valid answers: a forgery that arrives later is not waited for.
      for (const forger of [1, 2]) {
        const failure = result.failures.find((x) => x.custodianIndex === forger);
        if (failure === undefined) expect(result.notNeeded).toContain(forger);
        else expect(failure.code).toBe('forged_answer');
      }
      expect(result.failures.every((x) => x.code === 'forged_answer')).toBe(true);
      expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
      // With t = 3 and only custodians 1, 2 and one honest one reachable, the round cannot complete.
      await servers[3]!.close();
      await servers[4]!.close();
      const more = makeDevices(f, 2, 3);
      const failed = await client.collect(committeeRequest(2, more));
      expect(failed.ok).toBe(false);
      expect(failed.answers.map((a) => a.custodianIndex)).toEqual([3]);
      expect(failed.failures.map((x) => [x.custodianIndex, x.code]).sort()).toEqual([
        [1, 'forged_answer'],
        [2, 'forged_answer'],
        [4, 'unavailable'],
        [5, 'unavailable'],
      ]);
    } finally {
      await client.close();
      for (const s of servers.slice(0, 3)) await s.close();
    }
  });
});

describe('the committee client streams staged devices', () => {
  it('sends the devices added in one event-loop turn as one batch per staged custodian, and those added before the final header ahead of it', async () => {
    await using f = await createCommitteeFixture({ n: 5, threshold: 3, minDevices: 3 });
    const logger = pino({ level: 'silent' });
    const servers: { address: string; close: () => Promise<void> }[] = [];
    /** Per custodian, the size of each DeviceBatch its staged requests received, in order. */
    const batches = new Map<number, number[]>();
    for (let i = 1; i <= 5; i += 1) {
      const { service: honest, state } = await custodianServiceOf(f, i, logger);
      const seen: number[] = [];
      batches.set(i, seen);
      const service = tapStaged(honest, (message) => {
        if (message.kind === 'batch') seen.push(message.devices.length);
      });
      const server = await startCustodianServer({ service, logger });
      servers.push({ address: server.address, close: async () => { await server.close(); await state.close(); } });
    }
    const client = committeeClientFor(f, { addresses: Object.fromEntries(servers.map((s, i) => [i + 1, s.address])), deadlineMs: 20_000, logger });
    try {
      const devices = makeDevices(f, 1, 6);
      const staging = client.stage(1);
      const add = (d: DeviceUpload) => staging.add({ manifest: d.manifestBytes, manifestSignature: d.manifestSignature }, (i) => d.sealedShares[i - 1]!);
      // Four accepted together (one group commit), then one in a later turn, then one just before the collect.
      for (const d of devices.slice(0, 4)) add(d);
      await new Promise((resolve) => setTimeout(resolve, 50));
      add(devices[4]!);
      await new Promise((resolve) => setTimeout(resolve, 50));
      add(devices[5]!);
      const result = await client.collect({ ...committeeRequest(1, devices), staged: staging });
      expect(result.ok).toBe(true);
      expect([...result.staged].sort()).toEqual([1, 2, 3]);
      expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
      for (const i of [1, 2, 3]) expect(batches.get(i)).toEqual([4, 1, 1]);
      for (const i of [4, 5]) expect(batches.get(i)).toEqual([]);
    } finally {
      await client.close();
      for (const s of servers) await s.close();
    }
  });
});

describe('the committee client asks only t custodians', () => {
  it('asks t of n when all are healthy, another in place of one that fails, and another when one hangs past the hedge delay', async () => {
    await using f = await createCommitteeFixture({ n: 5, threshold: 3, minDevices: 3 });
    const logger = pino({ level: 'silent' });
    const servers: { address: string; close: () => Promise<void> }[] = [];
    /** Per custodian, the requests its service has handled (round numbers). */
    const handled = new Map<number, number[]>();
    let hung: number | null = null;
    let release!: () => void;
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    for (let i = 1; i <= 5; i += 1) {
      const { service: honest, state } = await custodianServiceOf(f, i, logger);
      const service = {
        ...honest,
        shareSum: async (...args: Parameters<typeof honest.shareSum>) => {
          const answer = await honest.shareSum(...args);
          handled.set(i, [...(handled.get(i) ?? []), args[0].round]);
          if (hung === i) await released;
          return answer;
        },
      };
      const server = await startCustodianServer({ service, logger });
      servers.push({ address: server.address, close: async () => { await server.close(); await state.close(); } });
    }
    const addresses = Object.fromEntries(servers.map((s, i) => [i + 1, s.address]));
    const askedIn = (round: number): number[] => [...handled].filter(([, rounds]) => rounds.includes(round)).map(([i]) => i).sort();
    // A hedge delay far above any answer time here: only failures make it ask more.
    const client = committeeClientFor(f, { addresses, hedgeDelayMs: 20_000, logger });
    let closed: number | null = null;
    try {
      // All healthy: exactly t = 3 custodians are asked (index order before any timings).
      const devices1 = makeDevices(f, 1, 3);
      const first = await client.collect(committeeRequest(1, devices1));
      expect(first.ok).toBe(true);
      expect(askedIn(1)).toEqual([1, 2, 3]);
      expect(first.answers.map((a) => a.custodianIndex).sort()).toEqual([1, 2, 3]);
      expect(first.failures).toEqual([]);
      expect([...first.notNeeded].sort()).toEqual([4, 5]);
      expect(reconstructAtZero(first.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices1));

      // One of the three that answered is down: the client asks custodian 4 in its place, never 5.
      closed = first.answers[0]!.custodianIndex;
      await servers[closed - 1]!.close();
      const devices2 = makeDevices(f, 2, 3);
      const second = await client.collect(committeeRequest(2, devices2));
      expect(second.ok).toBe(true);
      expect(second.failures.map((x) => [x.custodianIndex, x.code])).toEqual([[closed, 'unavailable']]);
      expect(second.answers.map((a) => a.custodianIndex).sort()).toEqual([1, 2, 3, 4].filter((i) => i !== closed));
      expect(askedIn(2)).toEqual([1, 2, 3, 4].filter((i) => i !== closed));
      expect(second.notNeeded).toEqual([5]);
      expect(reconstructAtZero(second.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices2));
    } finally {
      await client.close();
    }

    // A custodian that hangs (connected, never answering): after the hedge delay another is asked.
    const hedged = committeeClientFor(f, { addresses, hedgeDelayMs: 100, deadlineMs: 20_000, logger });
    try {
      hung = [1, 2, 3].find((i) => i !== closed)!;
      const devices3 = makeDevices(f, 3, 3);
      const third = await hedged.collect(committeeRequest(3, devices3));
      expect(third.ok).toBe(true);
      expect(third.answers.map((a) => a.custodianIndex)).not.toContain(hung);
      expect(third.answers.map((a) => a.custodianIndex)).not.toContain(closed);
      expect(third.notNeeded).toContain(hung);
      expect(reconstructAtZero(third.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices3));
    } finally {
      release();
      await hedged.close();
      for (const [i, s] of servers.entries()) if (i + 1 !== closed) await s.close();
    }
  });
});

describe('committee client construction', () => {
  it('refuses a descriptor whose authority signature does not verify', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2 });
    const wrong = new Uint8Array(f.descriptorSignature);
    wrong[10] = wrong[10]! ^ 0x40;
    expect(() =>
      createCommitteeClient({ descriptor: f.descriptorBytes, descriptorSignature: wrong, signRequest: f.signRequest, logger: pino({ level: 'silent' }) }),
    ).toThrow(expect.objectContaining({ code: 'invalid_descriptor' }));
  });
});

describe('key files', () => {
  it('keeps the secret key file 0600 in a 0700 directory and refuses a world-readable one', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2 });
    const { stat, chmod } = await import('node:fs/promises');
    expect((await stat(f.custodianDirs[0]!)).mode & 0o777).toBe(0o700);
    expect((await stat(join(f.custodianDirs[0]!, 'custodian-key.json'))).mode & 0o777).toBe(0o600);
    const pub = JSON.parse(await readFile(join(f.custodianDirs[0]!, 'custodian-public.json'), 'utf8')) as { sealingKey: string; fingerprint: string };
    expect(pub.sealingKey).toBe(f.custodians[0]!.sealingKey);
    expect(JSON.stringify(pub)).not.toContain('rivate');
    await chmod(join(f.custodianDirs[0]!, 'custodian-key.json'), 0o644);
    await expect(readCustodianKeys(f.custodianDirs[0]!)).rejects.toMatchObject({ code: 'invalid_key_material' });
  });
});

describe('TLS', () => {
  it('serves the committee over TLS and refuses a plaintext client', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2, minDevices: 3 });
    const { execFile } = await import('node:child_process');
    const { promisify } = await import('node:util');
    const key = join(f.root, 'tls-key.pem');
    const cert = join(f.root, 'tls-cert.pem');
    await promisify(execFile)('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert,
      '-days', '1', '-subj', '/CN=custodian', '-addext', 'subjectAltName=IP:127.0.0.1',
    ]);
    const tls = { certChain: await readFile(cert), privateKey: await readFile(key) };
    const logger = pino({ level: 'silent' });
    const running = await runCustodians(f, logger, { tls });
    const clientWith = (credentials: grpc.ChannelCredentials) =>
      committeeClientFor(f, { addresses: Object.fromEntries(running.map((r, i) => [i + 1, r.server.address])), credentials, deadlineMs: 5_000, logger });
    try {
      const devices = makeDevices(f, 1, 3);
      const secure = clientWith(grpc.credentials.createSsl(tls.certChain));
      const result = await secure.collect(committeeRequest(1, devices));
      await secure.close();
      expect(result.ok).toBe(true);
      expect(reconstructAtZero(result.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(devices));
      const plain = clientWith(grpc.credentials.createInsecure());
      const refused = await plain.collect(committeeRequest(2, makeDevices(f, 2, 3)));
      await plain.close();
      expect(refused.ok).toBe(false);
      expect(refused.failures.map((x) => x.code)).toEqual(['unavailable', 'unavailable']);
    } finally {
      for (const r of running) await r.close();
    }
  });
});

describe('request bounds', () => {
  it('refuses oversized requests and callers that go quiet, without blocking the round', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2, minDevices: 3 });
    const logger = pino({ level: 'silent' });
    const { service, state } = await custodianServiceOf(f, 1, logger, { maxDevices: 4 });
    const server = await startCustodianServer({ service, logger, idleTimeoutMs: 300 });
    try {
      const five = makeDevices(f, 1, 5);
      expect(await rawShareSum(server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(five, 1), hashD: hashDOf(five) })).toMatchObject({
        ok: false,
        code: grpc.status.RESOURCE_EXHAUSTED,
        veilCode: 'request_too_large',
      });
      // The descriptor's own maxDevices binds too (here 4 devices against a task maximum of 3).
      const small = makeDescriptor(f.custodians, f.authority.publicKey, { maxDevices: 3, taskId: 'small-task' });
      const smallSigned = signDescriptor(small, f.authority.privateKey);
      const four = makeDevices(f, 1, 4);
      expect(
        await rawShareSum(server.address, f, {
          round: 1,
          custodianIndex: 1,
          entries: entriesFor(four, 1),
          hashD: hashDOf(four),
          descriptorBytes: encodeDescriptor(small),
          descriptorSignature: fromBase64(smallSigned.signature, 's', 64),
        }),
      ).toMatchObject({ ok: false, code: grpc.status.RESOURCE_EXHAUSTED, details: expect.stringContaining("task's maximum") });
      // A header, then silence: refused after the idle timeout.
      const devices = makeDevices(f, 1, 3);
      const hashD = hashDOf(devices);
      const { call, result } = openShareSum(server.address);
      call.write(signedHeader(f, { round: 1, hashD, deviceCount: 3, custodianIndex: 1 }));
      expect(await result).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('no request message') });
      // The round is still open to a well-formed request.
      expect((await rawShareSum(server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), hashD })).ok).toBe(true);
    } finally {
      await server.close();
      await state.close();
    }
  });

  it('refuses a staged caller that goes quiet, frees the slot of a cancelled one, and reads devices written faster than it opens them', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2, minDevices: 3 });
    const logger = pino({ level: 'silent' });
    // One staged request at a time: a slot that is not freed refuses the next one.
    const { service: honest, state } = await custodianServiceOf(f, 1, logger, { maxStagedRequests: 1 });
    // A service that takes a few ms per message: the devices of a burst wait for it in the adapter.
    const service = tapStaged(honest, () => new Promise((resolve) => setTimeout(resolve, 3)));
    const server = await startCustodianServer({ service, logger, idleTimeoutMs: 60_000, stagedIdleTimeoutMs: 400 });
    const stageMessage = (round: number) => {
      const issuedAtMs = Date.now();
      const signature = f.signRequest(stageSigningBytes({ descriptorHash: f.descriptorHash, round, custodianIndex: 1, issuedAtMs }));
      return {
        stage: {
          descriptor: Buffer.from(f.descriptorBytes),
          descriptorSignature: Buffer.from(f.descriptorSignature),
          round,
          custodianIndex: 1,
          issuedAtMs,
          coordinatorSignature: Buffer.from(signature),
        },
      };
    };
    try {
      const devices = makeDevices(f, 1, 40);
      // A stage header and one device, then silence: refused after the staged idle limit.
      const quiet = openShareSum(server.address);
      quiet.call.write(stageMessage(1));
      quiet.call.write(batchOf(entriesFor(devices.slice(0, 1), 1)));
      const startedAt = Date.now();
      expect(await quiet.result).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringContaining('no request message for 400 ms') });
      expect(Date.now() - startedAt).toBeGreaterThanOrEqual(350);
      // A staged request the coordinator cancels after two devices gives its slot back.
      const cancelled = openShareSum(server.address);
      cancelled.call.write(stageMessage(1));
      cancelled.call.write(batchOf(entriesFor(devices.slice(0, 1), 1)));
      cancelled.call.write(batchOf(entriesFor(devices.slice(1, 2), 1)));
      await new Promise((resolve) => setTimeout(resolve, 100));
      cancelled.call.cancel();
      expect(await cancelled.result).toMatchObject({ ok: false, code: grpc.status.CANCELLED });
      await new Promise((resolve) => setTimeout(resolve, 100));
      // Forty devices, each its own DeviceBatch, written at once (more than the adapter reads ahead
      // of a slow service), then the final header: every one is opened, in order, and D matches.
      const staged = await rawStaged(server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), final: { hashD: hashDOf(devices) } });
      expect(staged.ok).toBe(true);
      const plain = await rawShareSum(server.address, f, { round: 1, custodianIndex: 1, entries: entriesFor(devices, 1), hashD: hashDOf(devices) });
      expect(plain.ok).toBe(true);
      expect(Buffer.compare(plain.shareSum!, staged.shareSum!)).toBe(0);
      expect(Buffer.compare(plain.statement!, staged.statement!)).toBe(0);
    } finally {
      await server.close();
      await state.close();
    }
  }, 60_000);
});
