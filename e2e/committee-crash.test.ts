/**
 * End to end in committee mode (issue 11, "Bad input and faults"), with real processes: three
 * `veil custodian serve`, a `veil server`, devices in this process using the client SDK's
 * committee encryption over gRPC, certified by an authority key that stays here.
 *
 * 1. The coordinator is killed with SIGKILL after the custodians answered round 1 and the next
 *    model was decrypted, but before it was written (the test-only fault point
 *    `committee-answered`, honoured only under NODE_ENV=test: a real SIGKILL at an exact place).
 *    Restarted on the same database, data directory and ports, it asks the same D again; the
 *    custodians give the same signed bytes (no second answer), and model version 1 is exactly the
 *    FedAvg of the three acknowledged updates: nothing lost, nothing counted twice, the selected
 *    device whose uploads were all refused is not in D.
 * 2. Round 1 also gets the bad uploads that only a device-side attacker can make, through gRPC:
 *    a c0 coefficient >= q re-signed by the certified device, one byte too many, a retried
 *    upload's share swapped in, shares sealed and signed by someone other than the device. Each
 *    is refused with its status and never stored. After the restart, a re-sent acknowledged
 *    upload and a round-1 upload replayed into round 2 are refused too.
 * 3. After round 2 (run by the restarted process), the coordinator's process memory, a full
 *    pg_dump of its database and every file of its data directory (blobs, log) are searched for
 *    each device's single-use secret, its plaintext shares and its signing key, recorded device
 *    side: none is there, while positive controls (the descriptor in memory, sealed shares in
 *    the blob files, update digests in the dump) are found.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdir, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { expect, test } from 'vitest';
import { createSeededRng } from '@veil/cli';
import { ClientError, createCommitteeEncryption, createGrpcTransport, type Assignment, type Transport } from '@veil/client-sdk';
import {
  buildCommitteeUpload,
  deriveRoundSeed,
  descriptorHash,
  encodeAnswer,
  encodeC0Payload,
  encodeCommitteeUploadPayload,
  encodeShareBytes,
  encodeUpdate,
  encryptUpdate,
  generateEd25519KeyPair,
  hashD,
  issueDeviceCertificate,
  sampleTernary,
  sealShare,
  secureRandomBytes,
  sha256Hex,
  shareSecret,
  signManifest,
  verifyCommitteeUpload,
  type DeviceCertificate,
  type RandomBytes,
  type RawKeyPair,
  type SignedCustodianAnswer,
  type TaskDescriptor,
} from '@veil/crypto';
import { CUSTODIAN_STATE_FILE, readCustodianAnswers, type StoredAnswer } from '@veil/custodian';
import { scanProcessMemory, type Needle } from './memory-scan.js';
import {
  assertBuilt,
  createDatabase,
  createRestClient,
  createTempDir,
  exited,
  freePorts,
  randomSecret,
  startCoordinatorProcess,
  startE2eCommittee,
  tail,
  waitFor,
  withTimeout,
  type RoundView,
  SOFTMAX_PARAMETERS,
  softmaxModel,
} from './support.js';

const DEVICES = 4;
/** Devices 0..2 are acknowledged in round 1; device 3 is selected but every upload of its is refused. */
const ACKED = 3;
const CUSTODIANS = 3;
const THRESHOLD = 2;
const WEIGHT_CAP = 16;
const STEP = 2 ** -13;
/** A 784-10 softmax regression: the model only has to have a shape; nothing trains. */
const PARAMETERS = SOFTMAX_PARAMETERS;

/**
 * Device k's update in `round`: whole quantisation levels in [-100, 100] times the step, so the
 * committee's encoding is exact and the expected model can be computed exactly.
 */
const deltaOf = (k: number, round: number): Float32Array =>
  Float32Array.from({ length: PARAMETERS }, (_, i) => ((((i * 31 + k * 17 + round * 7) % 201) - 100) * STEP));
/** Distinct weights, so a lost or doubled update moves the weighted mean. */
const weightOf = (k: number): number => k + 2;

/**
 * The committee FedAvg, computed here from the plain updates: base + Σ w_k Δ_k / Σ w_k (float64
 * sums; the mean is a float32 vector, as the committee decryption returns it, added to the model
 * and stored as float32).
 */
function expectedModel(base: Float32Array, updates: ReadonlyArray<{ delta: Float32Array; weight: number }>): Float32Array {
  const total = updates.reduce((a, u) => a + u.weight, 0);
  return Float32Array.from(base, (b, i) => b + Math.fround(updates.reduce((a, u) => a + u.weight * u.delta[i]!, 0) / total));
}

interface Device {
  index: number;
  clientId: string;
  credential: string;
  transport: Transport;
  key: RawKeyPair;
  certificate: DeviceCertificate;
}

/** One upload and what the device erased after sending it (recorded here for the scans). */
interface Recorded {
  device: Device;
  round: number;
  payload: Uint8Array;
  weight: number;
  /** The single-use RLWE secret s (ternary, one byte per coefficient). */
  secret: Int8Array;
  /** The plaintext Shamir shares of s, one per custodian. */
  shares: Uint16Array[];
  /** The shares as sealed in the upload. */
  sealed: Uint8Array[];
}

/**
 * Builds a device's upload with the SDK's committee middleware on the CSPRNG, recording the
 * random bytes it drew; then replays them through the same steps as buildCommitteeUpload to
 * recover the secret and plaintext shares it erased. The replay is checked: it must give the
 * upload's exact c0 and sealed shares (so the recorded secret and shares are the real ones).
 */
async function recordedUpload(device: Device, descriptor: TaskDescriptor, committee: { descriptor: Uint8Array; descriptorSignature: Uint8Array }, pins: Parameters<typeof createCommitteeEncryption>[0]['pins'], round: number): Promise<Recorded> {
  const drawn: Uint8Array[] = [];
  const recording: RandomBytes = (length) => {
    const bytes = secureRandomBytes(length);
    drawn.push(Uint8Array.from(bytes)); // a copy: the callers zero their buffers
    return bytes;
  };
  const enc = createCommitteeEncryption({ committee, pins, deviceId: device.clientId, deviceKey: device.key, certificate: device.certificate, random: recording });
  const delta = deltaOf(device.index, round);
  const out = await enc.middleware(
    { delta, exampleCount: weightOf(device.index), encoding: 'float32-le', notes: {} },
    { taskId: descriptor.taskId, clientId: device.clientId, roundNumber: round, modelVersion: round - 1, maxExampleCount: WEIGHT_CAP, config: {}, signal: undefined },
    async (u) => u,
  );
  expect(out.exampleCount).toBe(weightOf(device.index));
  let at = 0;
  const replay: RandomBytes = (length) => {
    const bytes = drawn[at++];
    if (bytes === undefined || bytes.length !== length) throw new Error(`replay diverged at draw ${at}`);
    return Uint8Array.from(bytes);
  };
  const dh = descriptorHash(descriptor);
  const m = encodeUpdate(delta, weightOf(device.index), descriptor.encoding);
  const secret = sampleTernary(replay);
  const c0 = encodeC0Payload(encryptUpdate(m, secret, { descriptorHash: dh, round, roundSeed: deriveRoundSeed(dh, round), deltaBits: descriptor.encoding.deltaBits, random: replay }), PARAMETERS);
  const shares = shareSecret(secret, { threshold: descriptor.threshold, shares: descriptor.committee.length, random: replay });
  const sealed = descriptor.committee.map((member, i) =>
    sealShare(Buffer.from(member.sealingKey, 'base64'), { descriptorHash: dh, round, deviceId: device.clientId, custodianIndex: member.index }, shares[i]!, { random: replay }),
  );
  expect(at, 'every random draw replayed').toBe(drawn.length);
  const payload = Buffer.from(out.payload!);
  expect(payload.includes(Buffer.from(c0)) && sealed.every((s) => payload.includes(Buffer.from(s))), 'the replay reproduces the upload').toBe(true);
  return { device, round, payload: out.payload!, weight: out.exampleCount, secret, shares, sealed };
}

const submit = (device: Device, round: number, payload: Uint8Array, weight: number): Promise<{ acceptedCount: number }> =>
  device.transport.submitUpdate(device.credential, { roundNumber: round, modelVersion: round - 1, exampleCount: weight, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);

/** The gRPC status of a refused call (the SDK wraps it in a ClientError); throws if the call succeeded. */
async function refusal(call: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await call;
  } catch (error) {
    const cause = (error instanceof ClientError ? error.cause : error) as Partial<grpc.ServiceError> | undefined;
    if (typeof cause?.code === 'number') return { code: grpc.status[cause.code]!, details: cause.details ?? '' };
    throw error;
  }
  throw new Error('expected the upload to be refused; it was accepted');
}

/** Byte strings whose presence anywhere would show a secret in the clear, in raw, hex and base64 forms. */
function secretNeedles(name: string, bytes: Uint8Array, window = 64): Needle[] {
  const buffer = Buffer.from(bytes);
  const at = Math.max(0, Math.floor((buffer.length - window) / 2));
  const slice = buffer.subarray(at, at + window);
  const b64 = buffer.toString('base64');
  const b64At = Math.max(0, Math.floor((b64.length - window) / 2));
  return [
    { name: `${name} (raw)`, bytes: slice },
    { name: `${name} (hex)`, bytes: Buffer.from(slice.toString('hex')) },
    { name: `${name} (base64)`, bytes: Buffer.from(b64.slice(b64At, b64At + window)) },
  ];
}

function needlesOf(r: Recorded): Needle[] {
  const who = `device ${r.device.index} round ${r.round}`;
  return [
    ...secretNeedles(`${who} secret s (int8)`, new Uint8Array(r.secret.buffer, r.secret.byteOffset, r.secret.byteLength)),
    // s mod p as u16 LE: the form a reconstructed single secret would have in the share field.
    ...secretNeedles(`${who} secret s (mod p)`, encodeShareBytes(Array.from(r.secret, (v) => (v < 0 ? v + 65_521 : v)))),
    ...r.shares.flatMap((share, i) => secretNeedles(`${who} plaintext share ${i + 1}`, encodeShareBytes(share))),
    ...secretNeedles(`${who} device signing key`, r.device.key.privateKey, 32),
  ];
}

function search(haystack: Buffer, needles: readonly Needle[]): string[] {
  return needles.filter((n) => haystack.includes(n.bytes)).map((n) => n.name).sort();
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile()).map((e) => join(e.parentPath, e.name));
}

test('committee mode: a coordinator SIGKILLed after the custodians answered completes the round exactly on restart; bad uploads refused; no secret or share in its memory, database or files', async () => {
  assertBuilt();
  const started = performance.now();
  await using database = await createDatabase();
  await using dataDir = await createTempDir('veil-e2e-committee-crash-');
  await using committee = await startE2eCommittee(dataDir.path, { custodians: CUSTODIANS, minDevices: ACKED });
  const coordinatorDir = join(dataDir.path, 'coordinator');
  const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
  const settings = {
    databaseUrl: database.url,
    dataDir: coordinatorDir,
    grpcPort,
    httpPort,
    adminToken: randomSecret(),
    enrolmentSecret: randomSecret(),
    env: { VEIL_COMMITTEE_REQUEST_KEY: committee.request.secretFile },
  };
  await mkdir(coordinatorDir);
  // The first process crashes at the fault point; NODE_ENV=test is what lets it read VEIL_TEST_FAULT.
  await using first = await startCoordinatorProcess({ ...settings, env: { ...settings.env, NODE_ENV: 'test', VEIL_TEST_FAULT: 'committee-answered' } });
  const rest = createRestClient(first.httpUrl, settings.adminToken);

  const { descriptor, body } = committee.descriptor({
    taskId: randomUUID(),
    threshold: THRESHOLD,
    minDevices: ACKED,
    maxDevices: 10,
    maxRounds: 2,
    encoding: { weightCap: WEIGHT_CAP, step: STEP },
  });
  const rng = createSeededRng(11);
  const initial = Float32Array.from({ length: PARAMETERS }, () => Math.fround(rng.next() - 0.5));
  const task = await rest.createTask({
    name: 'e2e-committee-crash',
    committee: body,
    rounds: 2,
    clientsPerRound: DEVICES,
    minClients: ACKED,
    minAvailableClients: DEVICES,
    // Round 1 aggregates at the deadline with the three acknowledged updates of the four selected.
    roundDeadlineMs: 12_000,
    training: { epochs: 1, batchSize: 32, learningRate: 0.1 },
    start: true,
    model: softmaxModel('e2e_committee_crash', initial),
  } as Parameters<typeof rest.createTask>[0]);
  expect(task).toMatchObject({ id: descriptor.taskId, status: 'RUNNING', parameterCount: PARAMETERS });

  const transportFor = (address: string): Transport => createGrpcTransport({ address, callTimeoutMs: 10_000 });
  const devices: Device[] = [];
  try {
    for (let index = 0; index < DEVICES; index++) {
      const transport = transportFor(first.grpcAddress);
      const joined = await transport.join({ taskId: task.id, enrolmentSecret: settings.enrolmentSecret, clientName: `e2e-committee-crash-${index}` });
      const key = generateEd25519KeyPair();
      const certificate = issueDeviceCertificate(committee.authority.privateKey, { taskId: task.id, deviceId: joined.clientId, devicePublicKey: key.publicKey, notAfterMs: Date.now() + 3_600_000 });
      devices.push({ index, clientId: joined.clientId, credential: joined.credential, transport, key, certificate });
    }
    const joined = await devices[0]!.transport.getTask(devices[0]!.credential);
    const taskCommittee = joined.committee!;
    expect(taskCommittee).not.toBeNull();
    const upload = (d: Device, round: number): Promise<Recorded> => recordedUpload(d, descriptor, taskCommittee, committee.pins, round);
    const assignment = (d: Device): Promise<Assignment> =>
      waitFor(`an assignment for device ${d.index}`, async () => {
        const r = await d.transport.waitForAssignment(d.credential, 5_000);
        return r.kind === 'assignment' ? r.assignment : undefined;
      }, 60_000, 0);

    // ---------------------------------------------------------------- round 1, first process
    const round1 = await Promise.all(devices.map((d) => upload(d, 1)));
    const assignments1 = await Promise.all(devices.map(assignment));
    for (const a of assignments1) expect(a).toMatchObject({ roundNumber: 1, modelVersion: 0, updateEncoding: 'committee-v1' });
    const d3 = devices[3]!;
    const dh = descriptorHash(descriptor);
    const build = (d: Device, key = d.key, certificate = d.certificate) =>
      buildCommitteeUpload({ descriptor, descriptorHash: dh, round: 1, roundSeed: deriveRoundSeed(dh, 1), deviceId: d.clientId, devicePrivateKey: key.privateKey, devicePublicKey: key.publicKey, certificate, values: deltaOf(d.index, 1), weight: weightOf(d.index) });
    const honest3 = build(d3);
    // A c0 coefficient >= q, in a manifest the certified device itself re-signed: only the range check can refuse it.
    const badC0 = Uint8Array.from(honest3.c0);
    badC0.fill(0xff, 12, 23);
    const outOfRange = encodeCommitteeUploadPayload({ ...honest3, c0: badC0, manifest: signManifest({ ...honest3.manifest.manifest, c0Sha256: sha256Hex(badC0) }, d3.key.privateKey) });
    expect(await refusal(submit(d3, 1, outOfRange, weightOf(3)))).toMatchObject({ code: 'INVALID_ARGUMENT', details: expect.stringMatching(/committee upload rejected/) });
    // One byte too many after a valid upload.
    const oversized = new Uint8Array([...encodeCommitteeUploadPayload(honest3), 0]);
    expect(await refusal(submit(d3, 1, oversized, weightOf(3)))).toMatchObject({ code: 'INVALID_ARGUMENT' });
    // A retried attempt (fresh secret) whose first share is swapped into this upload: the manifest's share digest refuses it.
    const retried = build(d3);
    const swapped = encodeCommitteeUploadPayload({ ...honest3, sealedShares: [retried.sealedShares[0]!, ...honest3.sealedShares.slice(1)] });
    expect(await refusal(submit(d3, 1, swapped, weightOf(3)))).toMatchObject({ code: 'PERMISSION_DENIED' });
    // Shares sealed and a manifest signed by someone other than the device (its own key beside the device's certificate).
    const forger = generateEd25519KeyPair();
    const forged = encodeCommitteeUploadPayload(build(d3, forger));
    expect(await refusal(submit(d3, 1, forged, weightOf(3)))).toMatchObject({ code: 'PERMISSION_DENIED' });
    // ... and one certified by an authority the task does not name.
    const otherAuthority = generateEd25519KeyPair();
    const selfCertified = encodeCommitteeUploadPayload(
      build(d3, forger, issueDeviceCertificate(otherAuthority.privateKey, { taskId: task.id, deviceId: d3.clientId, devicePublicKey: forger.publicKey, notAfterMs: Date.now() + 3_600_000 })),
    );
    expect(await refusal(submit(d3, 1, selfCertified, weightOf(3)))).toMatchObject({ code: 'PERMISSION_DENIED' });

    // The three acknowledged updates; at the deadline the round aggregates, the committee answers, and the process dies.
    for (let k = 0; k < ACKED; k++) expect(await submit(devices[k]!, 1, round1[k]!.payload, round1[k]!.weight)).toEqual({ acceptedCount: k + 1 });
    expect(await withTimeout('the coordinator to die at the fault point', exited(first.child), 120_000)).toEqual({ exitCode: null, signalCode: 'SIGKILL' });
    expect(tail(first.logFile, 200)).toMatch(/"msg":"round collecting"/);

    // What the crash left: round 1 AGGREGATING, no model version 1, exactly the three acknowledged updates stored.
    const roundRows = (): Promise<Array<{ number: number; state: string }>> =>
      database.query(`SELECT number, state::text AS state FROM "Round" WHERE "taskId" = $1 ORDER BY number`, [task.id]);
    expect(await roundRows()).toEqual([{ number: 1, state: 'AGGREGATING' }]);
    expect(await database.query(`SELECT "currentModelVersion" FROM "Task" WHERE id = $1`, [task.id])).toEqual([{ currentModelVersion: 0 }]);
    const participations = (round: number): Promise<Array<{ clientId: string; status: string; updateDigest: string | null }>> =>
      database.query(
        `SELECT p."clientId", p.status::text AS status, p."updateDigest" FROM "Participation" p JOIN "Round" r ON r.id = p."roundId"
         WHERE r."taskId" = $1 AND r.number = $2 ORDER BY p."clientId"`,
        [task.id, round],
      );
    const digests = (records: readonly Recorded[]): string[] => records.map((r) => sha256Hex(r.payload)).sort();
    const stored1 = await participations(1);
    expect(stored1.filter((p) => p.status === 'SUBMITTED').map((p) => p.updateDigest).sort()).toEqual(digests(round1.slice(0, ACKED)));
    expect(stored1.find((p) => p.clientId === d3.clientId)).toMatchObject({ status: 'DROPPED', updateDigest: null });

    // The custodians answered before the crash, durably: one answer each at most, all for the same D = the three acknowledged.
    const expectedHashD = Buffer.from(
      hashD(round1.slice(0, ACKED).map((r) => verifyCommitteeUpload(r.payload, { descriptor, round: 1, valueCount: PARAMETERS, deviceId: r.device.clientId, nowMs: Date.now() }).manifestDigest)),
    ).toString('hex');
    const answersOf = async (): Promise<StoredAnswer[][]> => Promise.all(committee.dirs.map((dir) => readCustodianAnswers(join(dir, CUSTODIAN_STATE_FILE))));
    const beforeRestart = await answersOf();
    const answered = beforeRestart.flatMap((list, i) => list.map((a) => ({ custodian: i + 1, ...a })));
    expect(answered.length).toBeGreaterThanOrEqual(THRESHOLD);
    for (const list of beforeRestart) expect(list.length).toBeLessThanOrEqual(1);
    for (const a of answered) expect(a).toMatchObject({ taskId: task.id, round: 1, count: ACKED, hashD: expectedHashD });

    // ---------------------------------------------------------------- restart
    await using second = await startCoordinatorProcess(settings);
    const rest2 = createRestClient(second.httpUrl, settings.adminToken);
    const closed1 = await waitFor('round 1 to close after the restart', async () => {
      const r = (await rest2.listRounds(task.id)).find((x) => x.number === 1);
      return r?.state === 'CLOSED' || r?.state === 'FAILED' ? r : undefined;
    }, 60_000);
    expect(closed1, JSON.stringify(closed1)).toMatchObject({ state: 'CLOSED', received: ACKED, summary: { participants: ACKED, dropped: 1, modelVersion: 1 } });
    const summary1 = closed1.summary as RoundView['summary'] & { committee: { deviceCount: number; custodians: number[]; answers: SignedCustodianAnswer[] } };
    expect(summary1.committee.deviceCount).toBe(ACKED);
    // The same signed bytes: no custodian answered round 1 a second time, and the answers used are the ones stored before the crash.
    expect(await answersOf()).toEqual(beforeRestart);
    expect(summary1.committee.answers).toHaveLength(THRESHOLD);
    for (const [j, used] of summary1.committee.answers.entries()) {
      const custodian = summary1.committee.custodians[j]!;
      const stored = beforeRestart[custodian - 1]![0];
      expect(stored, `custodian ${custodian} answered before the crash`).toBeDefined();
      expect(Buffer.from(encodeAnswer(used.answer)).equals(Buffer.from(stored!.statement))).toBe(true);
      expect(used.signature).toBe(Buffer.from(stored!.signature).toString('base64'));
    }
    // Model version 1 is exactly the FedAvg of the acknowledged updates, each once.
    const v1 = await rest2.modelWeights(task.id, 1);
    const expected1 = expectedModel(initial, round1.slice(0, ACKED).map((r) => ({ delta: deltaOf(r.device.index, 1), weight: r.weight })));
    expect(v1.weights.length).toBe(PARAMETERS);
    const mismatches1 = expected1.reduce((n, v, i) => n + (v === v1.weights[i] ? 0 : 1), 0);
    expect(mismatches1, `first value ${v1.weights[0]} vs expected ${expected1[0]}`).toBe(0);

    // Re-sent after the restart: device 0's acknowledged upload, and device 3's honest one now that round 1 is closed.
    for (const d of devices) d.transport.close();
    for (const d of devices) d.transport = transportFor(second.grpcAddress);
    const resent = await refusal(submit(devices[0]!, 1, round1[0]!.payload, round1[0]!.weight));
    expect(resent.code).not.toBe('OK');
    const late = await refusal(submit(d3, 1, round1[3]!.payload, round1[3]!.weight));
    expect(late.code).not.toBe('OK');

    // ---------------------------------------------------------------- round 2, restarted process
    const assignments2 = await Promise.all(devices.map(assignment));
    for (const a of assignments2) expect(a).toMatchObject({ roundNumber: 2, modelVersion: 1 });
    // Device 0's round-1 upload replayed into round 2: its manifest names round 1.
    expect(await refusal(submit(devices[0]!, 2, round1[0]!.payload, round1[0]!.weight))).toMatchObject({ code: 'FAILED_PRECONDITION' });
    const round2 = await Promise.all(devices.map((d) => upload(d, 2)));
    for (const [k, r] of round2.entries()) expect(await submit(devices[k]!, 2, r.payload, r.weight)).toEqual({ acceptedCount: k + 1 });
    const done = await waitFor('the task to complete', async () => {
      const t = await rest2.getTask(task.id);
      return t.status === 'COMPLETED' || t.status === 'FAILED' ? t : undefined;
    }, 60_000);
    expect(done).toMatchObject({ status: 'COMPLETED', currentModelVersion: 2 });
    const v2 = await rest2.modelWeights(task.id, 2);
    const expected2 = expectedModel(v1.weights, round2.map((r) => ({ delta: deltaOf(r.device.index, 2), weight: r.weight })));
    expect(expected2.reduce((n, v, i) => n + (v === v2.weights[i] ? 0 : 1), 0)).toBe(0);
    const rounds = await rest2.listRounds(task.id);
    expect(rounds.map((r) => [r.number, r.state, r.received])).toEqual([[1, 'CLOSED', ACKED], [2, 'CLOSED', DEVICES]]);
    expect((await participations(2)).map((p) => p.updateDigest).sort()).toEqual(digests(round2));

    // ---------------------------------------------------------------- scans of the coordinator
    const recorded = [...round1, ...round2];
    const needles = recorded.flatMap(needlesOf);
    // Memory of the running (restarted) coordinator, which rebuilt round 1 from its store and ran round 2.
    const descriptorText = body.descriptor.slice(Math.floor(body.descriptor.length / 2), Math.floor(body.descriptor.length / 2) + 64);
    const scanStarted = performance.now();
    const memory = await scanProcessMemory(second.child.pid!, [...needles, { name: 'control: the task descriptor (base64)', bytes: Buffer.from(descriptorText) }]);
    expect(memory.bytesScanned).toBeGreaterThan(10_000_000);
    expect(memory.found).toEqual(['control: the task descriptor (base64)']);
    // Every file of its data directory (blob store, log).
    const control = { name: 'control: a sealed share of device 0, round 2', bytes: Buffer.from(round2[0]!.sealed[0]!.subarray(1000, 1064)) };
    const found: string[] = [];
    const files = await filesUnder(coordinatorDir);
    for (const file of files) found.push(...search(await readFile(file), [...needles, control]).map((n) => `${n} in ${file.slice(coordinatorDir.length + 1)}`));
    expect(found.filter((f) => !f.startsWith('control:')), files.join('\n')).toEqual([]);
    // The uploads are stored (in the blob store's segment files) as sent: sealed, so the control is there.
    expect(found.filter((f) => f.startsWith('control:')), files.join('\n')).toEqual([expect.stringMatching(/ in blobs\//)]);
    // A full dump of its database (schema and data, bytea as hex).
    const dump = execFileSync('pg_dump', ['--no-owner', database.url], { maxBuffer: 256 * 1024 * 1024 });
    const dumpControl = { name: 'control: an update digest', bytes: Buffer.from(sha256Hex(round2[1]!.payload)) };
    expect(search(dump, [...needles, dumpControl])).toEqual(['control: an update digest']);
    console.info(
      `committee crash: round 1 completed after SIGKILL with the same custodian answers and the exact FedAvg; ${needles.length} secret/share needles ` +
        `absent from ${(memory.bytesScanned / 1e6).toFixed(0)} MB of coordinator memory (${((performance.now() - scanStarted) / 1000).toFixed(1)} s with the files and dump), ` +
        `${files.length} files and a ${(dump.length / 1e3).toFixed(0)} kB pg_dump; ` +
        `${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
  } catch (error) {
    console.error(`coordinator log (both runs):\n${tail(first.logFile, 80)}`);
    throw error;
  } finally {
    for (const d of devices) d.transport.close();
  }
}, 600_000);
