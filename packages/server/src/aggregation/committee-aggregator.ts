/**
 * Committee rounds (issue 11): the coordinator's side of one-shot secure aggregation with a
 * custodian committee (@veil/crypto committee/, design note steps 4-6). Each accepted upload is
 * checked completely (`verifyCommitteeUpload`: framing, c0 ranges, one sealed share per
 * custodian, the device's certified, signed manifest naming this task, round and device) and
 * its c0 is added mod q; the sealed shares and manifest are kept for the committee. Intake adds
 * the c0 while it checks the upload, outside the task's lock (`foldEarly`: the same pass checks
 * its range), provisionally: recording the upload confirms it, a refusal subtracts it again, and
 * the round's end leaves out any upload never confirmed, so the sum holds each accepted upload
 * exactly once. At the end of
 * the round the committee is asked (through an injected `collect`, so this module holds no gRPC)
 * for its share sums over D = every accepted upload; from t verified answers S_D is
 * reconstructed, Σc0 + a·S_D decrypted and checked (count slot = |D|, weight sum, clip range),
 * S_D erased, and the weighted FedAvg delta applied to the model: the next version is a plaintext
 * float32 model. The coordinator never holds a key that opens one device's update.
 *
 * Rebuilding from the store after a crash re-verifies the stored payloads and asks the same D
 * again: custodians return their cached signed answer for the same hash(D), so a round whose
 * committee answered before the crash completes with the same result.
 */
import { setImmediate as nextTurn } from 'node:timers/promises';
import { float32Bytes, float32View } from '@veil/protocol/codec';
import {
  COMMITTEE_RING_DEGREE,
  CryptoError,
  createC0Accumulator,
  decodeShareBytes,
  decryptSum,
  derivePublicPolynomialNtt,
  deriveRoundSeed,
  hashD,
  committeeDdgParams,
  committeeRotationSeed,
  committeeValueCount,
  polynomialCount,
  reconstructCentred,
  type DecryptedAggregate,
  type DecryptSumOptions,
  type RoundBinding,
  verifyCommitteeUpload,
  type C0Accumulator,
  type SignedCustodianAnswer,
  type TaskDescriptor,
  type VerifiedCommitteeUpload,
} from '@veil/crypto';
import { inverseRandomizedHadamard } from '@veil/privacy';
import { VeilError } from '../errors.js';
import { faultPoint } from '../test-faults.js';
import type { CheckedUpdate, ModelBlob, RoundAggregator, RoundResult } from './round-aggregator.js';
import type { FitFailure, StrategyState } from './strategy.js';

/** One device of D as the committee client needs it. */
export interface CommitteeDeviceEntry {
  /** Canonical manifest bytes. */
  readonly manifest: Uint8Array;
  /** The device's 64-byte Ed25519 signature over them. */
  readonly manifestSignature: Uint8Array;
}

/** What the committee client returns (see @veil/custodian `CommitteeClient.collect`). */
export interface CommitteeCollectResult {
  readonly ok: boolean;
  readonly answers: readonly { readonly custodianIndex: number; readonly shareSum: Uint8Array; readonly signed: SignedCustodianAnswer }[];
  readonly failures: readonly { readonly custodianIndex: number; readonly code: string; readonly reason: string }[];
}

/**
 * A round's staged requests (@veil/custodian `StagedRound`): each accepted device is streamed to
 * the custodians while the round collects, so they verify and open its share then; at the round's
 * end a custodian whose staged request holds exactly D is sent only the final header.
 */
export interface CommitteeStaging {
  /** Streams one accepted device (never throws: a broken staged request is asked unstaged at the end). */
  add(device: CommitteeDeviceEntry, sealedShare: (custodianIndex: number) => Uint8Array): void;
  /** Cancels what no collect finished. Idempotent. */
  cancel(): void;
}

/** Asks the committee for its share sums over D (injected: @veil/custodian's client in production). */
export type CommitteeCollect = (request: {
  readonly round: number;
  readonly devices: readonly CommitteeDeviceEntry[];
  sealedShare(deviceIndex: number, custodianIndex: number): Uint8Array;
  readonly staged?: CommitteeStaging;
}) => Promise<CommitteeCollectResult>;

/** A committee task as the coordinator runs it. */
export interface CommitteeTask {
  readonly descriptor: TaskDescriptor;
  /** SHA-256 of the canonical descriptor bytes. */
  readonly descriptorHash: Uint8Array;
  readonly collect: CommitteeCollect;
  /** Opens a round's staged requests (absent: custodians get every device at the round's end). */
  readonly stage?: (round: number) => CommitteeStaging;
  /** Unix ms for certificate expiry. Default Date.now. */
  readonly clock?: () => number;
  /**
   * Decrypts the round's sum: @veil/crypto `decryptSum`, or the same spread over worker threads
   * (`createDecryptPool`, injected by the app). Default: `decryptSum` in this thread.
   */
  readonly decrypt?: (options: DecryptSumOptions) => Promise<DecryptedAggregate>;
  /**
   * Derives the round's public polynomials off the event loop (`DecryptPool.derivePublicPolynomials`,
   * injected by the app); null or a rejection: they are derived here, one per event-loop turn.
   */
  readonly derivePublicPolynomials?: (binding: RoundBinding, count: number, out?: Float64Array) => Promise<Float64Array[] | null>;
}

/**
 * A strategy's server step on a committee round's decrypted average (see `committeeRounds`):
 * the next model and state from the current ones and Δ_t. Absent: FedAvg (w + Δ_t), stateless.
 */
export type CommitteeServerStep = (input: {
  readonly round: number;
  readonly current: Float32Array;
  /** The decrypted FedAvg update Δ_t = Σ n_k Δ_k / Σ n_k. */
  readonly mean: ArrayLike<number>;
  readonly failures: readonly FitFailure[];
  readonly state: StrategyState | null;
}) => { parameters: Float32Array; state: StrategyState | null };

/** Who approved a committee decryption (for the privacy ledger and audit API). */
export interface CommitteeRoundAudit {
  readonly round: number;
  /** |D|. */
  readonly deviceCount: number;
  /** The t signed answers used (share sums not included; their hashes are signed). */
  readonly answers: readonly SignedCustodianAnswer[];
  readonly failures: readonly { readonly custodianIndex: number; readonly code: string; readonly reason: string }[];
}

/** A checked committee upload (see {@link checkCommitteeUpload}). */
export interface CheckedCommitteeUpload extends CheckedUpdate {
  readonly committee: VerifiedCommitteeUpload;
}

/** A committee round's aggregator: `finish` is asynchronous (it asks the committee) and reports the audit. */
export interface CommitteeRoundAggregator extends RoundAggregator {
  finish(...args: Parameters<RoundAggregator['finish']>): Promise<(RoundResult & { audit: CommitteeRoundAudit }) | null>;
}

/** Maps @veil/crypto refusals of an upload to the coordinator's codes. */
function uploadError(error: unknown): VeilError {
  if (error instanceof VeilError) return error;
  const e = CryptoError.from(error);
  const code = e.code === 'invalid_signature' ? 'permission_denied' : e.code === 'parameter_mismatch' ? 'failed_precondition' : 'invalid_argument';
  return new VeilError(code, `committee upload rejected: ${e.message}`, { cause: error });
}

/**
 * Device certificates verified per task: a device sends the same certificate in every round, so its
 * authority signature is verified once (the expiry is checked on every upload). Bounded: cleared
 * past {@link MAX_CACHED_CERTIFICATES} entries.
 */
const certificateCaches = new WeakMap<CommitteeTask, Set<string>>();
const MAX_CACHED_CERTIFICATES = 100_000;

function certificateCacheOf(task: CommitteeTask): Set<string> {
  let cache = certificateCaches.get(task);
  if (cache === undefined) {
    cache = new Set();
    certificateCaches.set(task, cache);
  } else if (cache.size >= MAX_CACHED_CERTIFICATES) {
    cache.clear();
  }
  return cache;
}

/**
 * A committee round's big buffers, 8 bytes per coefficient (about 0.8 MB each at 100,000 values):
 * the running c0 sum, its reduced copy that the decryption reads, the public polynomials, and the
 * decryption's outputs. Fresh ones every round were about 4 MB of external memory per round,
 * each kept until a major GC (bench:rounds small committee: coordinator peak arrayBuffers 93 MiB,
 * 52 MiB with reuse; bench/rounds/ab-h1-round-buffers-2026-12-07-s12.json); they are reused from
 * round to round of a task instead:
 * taken when a round's aggregator starts, handed back once it is disposed and nothing reads or
 * writes them any more (its derivation settled, no `finish` running, the decryption's worker
 * threads done: `DecryptedAggregate.settled`). A crash-restart starts with none (memory only).
 * None holds a secret (NTT(S_D) stays in the decryption's own memory, zeroed after it); every
 * value is overwritten before it is read (the sum's storage is zeroed when taken). A task keeps
 * one free set between its rounds (36 bytes per value), until {@link dropRoundBuffers}.
 */
interface RoundBuffers {
  readonly valueCount: number;
  /** The running sum (C0Accumulator storage). */
  readonly acc: Float64Array;
  /** The rest on shared memory: the decryption pool's workers read and write them in place. */
  readonly c0Sum: Float64Array;
  readonly publicPolynomials: Float64Array;
  readonly levelSums: Float64Array;
  readonly mean: Float32Array;
}

/** Free round buffers per task: a task runs one round at a time, and its next round takes them. */
const roundBufferPools = new WeakMap<CommitteeTask, RoundBuffers[]>();
const MAX_POOLED_ROUND_BUFFERS = 1;

function takeRoundBuffers(task: CommitteeTask, valueCount: number): RoundBuffers {
  const pool = roundBufferPools.get(task);
  const at = pool?.findIndex((b) => b.valueCount === valueCount) ?? -1;
  if (pool !== undefined && at >= 0) return pool.splice(at, 1)[0]!;
  const coefficients = polynomialCount(valueCount) * COMMITTEE_RING_DEGREE;
  const shared64 = (length: number) => new Float64Array(new SharedArrayBuffer(length * 8));
  return {
    valueCount,
    acc: new Float64Array(coefficients),
    c0Sum: shared64(coefficients),
    publicPolynomials: shared64(coefficients),
    levelSums: shared64(valueCount),
    mean: new Float32Array(new SharedArrayBuffer(valueCount * 4)),
  };
}

function giveRoundBuffers(task: CommitteeTask, buffers: RoundBuffers): void {
  let pool = roundBufferPools.get(task);
  if (pool === undefined) roundBufferPools.set(task, (pool = []));
  // The newest set (another value count, e.g. a calibration round's, does not stay in the way).
  pool.push(buffers);
  if (pool.length > MAX_POOLED_ROUND_BUFFERS) pool.shift();
}

/** Frees `task`'s round buffers kept for its next round (its rounds are over: the engine closes its committee client). */
export function dropRoundBuffers(task: CommitteeTask): void {
  roundBufferPools.delete(task);
}

/** Round buffers free for `task` (tests). */
export function pooledRoundBuffers(task: CommitteeTask): number {
  return roundBufferPools.get(task)?.length ?? 0;
}

/**
 * Checks a committee upload completely without touching any sum: see the module comment.
 * Throws `VeilError` (`invalid_argument` malformed, `failed_precondition` another task/round/
 * device, `permission_denied` uncertified or badly signed).
 */
export function checkCommitteeUpload(
  task: CommitteeTask,
  round: number,
  parameterCount: number,
  clientId: string,
  payload: Uint8Array,
  fold?: C0Accumulator,
): CheckedCommitteeUpload {
  try {
    const committee = verifyCommitteeUpload(payload, {
      // With `fold`: a verified c0 is added to it (its range check), a refused one is not.
      ...(fold !== undefined && { fold }),
      descriptor: task.descriptor,
      descriptorHash: task.descriptorHash,
      round,
      // Under DP the upload carries the padded, rotated integer vector (d values).
      valueCount: committeeValueCount(task.descriptor, parameterCount),
      deviceId: clientId,
      nowMs: (task.clock ?? Date.now)(),
      certificateCache: certificateCacheOf(task),
    });
    return { payload, committee, payloadSha256: Buffer.from(committee.payloadSha256).toString('hex') };
  } catch (error) {
    throw uploadError(error);
  }
}

/**
 * The server side of the distributed discrete Gaussian in committee mode (KLS21 Algorithm 1,
 * decoding; @veil/crypto committee/dp.ts): the decrypted level sums are the exact integer sum of
 * the devices' rotated, scaled, rounded and noised vectors (no modular wrap: the descriptor's
 * encoding bounds it); unscale by 1/γ = 1/step, undo the rotation with the round's public seed,
 * truncate to the model, divide by |D|. Every DP update weighs 1: a weight slot other than |D|
 * is refused.
 */
function ddgMean(descriptor: TaskDescriptor, descriptorHash: Uint8Array, round: number, parameterCount: number, decrypted: DecryptedAggregate): Float64Array {
  if (decrypted.weightSum !== decrypted.count) {
    throw new CryptoError('integrity_check_failed', `a DP committee round weighs every update 1: the weight slot decrypted to ${decrypted.weightSum}, |D| = ${decrypted.count}`);
  }
  const ddg = committeeDdgParams(descriptor, parameterCount)!;
  const scaled = new Float64Array(decrypted.levelSums.length);
  for (let i = 0; i < scaled.length; i++) scaled[i] = decrypted.levelSums[i]! / ddg.scale;
  const sum = inverseRandomizedHadamard(scaled, parameterCount, committeeRotationSeed(descriptorHash, round));
  for (let i = 0; i < sum.length; i++) sum[i] = sum[i]! / decrypted.count;
  return sum;
}

/**
 * next[i] = weights[i] + mean[i] (FedAvg's server step, w + Δ_t) for every value of `next`. A
 * function of its own rather than a loop in the async `finishRound`: V8 optimizes this one after
 * a few rounds and keeps that code, while the loop inline started in the interpreter every round
 * and moved to on-stack-replaced code only after many iterations, boxing every intermediate
 * double as a heap number meanwhile (0.1-0.9 MB of garbage per call at 100,000 values in a
 * standalone check, bringing the next major GC closer).
 */
function addMean(next: Float32Array, weights: Float32Array, mean: ArrayLike<number>): void {
  for (let i = 0; i < next.length; i++) next[i] = weights[i]! + mean[i]!;
}

/** Starts one committee round's aggregation. */
export function createCommitteeAggregator(task: CommitteeTask, round: number, parameterCount: number, serverStep?: CommitteeServerStep): CommitteeRoundAggregator {
  const { descriptor, descriptorHash } = task;
  const valueCount = committeeValueCount(descriptor, parameterCount);
  // The round's big buffers (see RoundBuffers), handed back once disposed and idle: `holds` counts
  // the derivation and `finish` calls under way; `workersHold` is set while a decryption's worker
  // threads may still touch them, `decrypting` while a decryption runs. While either is set, a
  // second sum copy or decryption of this round gets fresh memory.
  const buffers = takeRoundBuffers(task, valueCount);
  let holds = 0;
  let disposed = false;
  let decrypting = false;
  let workersHold: Promise<void> | null = null;
  const buffersFree = (): boolean => !decrypting && workersHold === null;
  const handBack = (): void => {
    const pending = workersHold;
    if (pending === null) giveRoundBuffers(task, buffers);
    else void pending.then(() => giveRoundBuffers(task, buffers));
  };
  const release = (): void => {
    if (--holds === 0 && disposed) handBack();
  };
  let sum: C0Accumulator | null = createC0Accumulator({
    valueCount,
    storage: buffers.acc,
    ...(descriptor.encoding.c0Bits !== undefined && { c0Bits: descriptor.encoding.c0Bits }),
  });
  // Per device, only what the committee needs (copies: views into the upload would keep its whole
  // payload, c0 included, alive for the round — about 1.1 MB per device at 199,210 values).
  const devices: { clientId: string; manifest: Uint8Array; manifestSignature: Uint8Array; manifestDigest: Uint8Array; sealedShares: Uint8Array[] }[] = [];
  const seen = new Set<string>();
  // The round's public polynomials â_l = NTT(a_{r,l}) (design note, "Deriving a") depend only on
  // the descriptor and the round: derive them while the round collects, one per event-loop turn,
  // so that its end only multiplies and transforms (decryptSum derives any still missing). They
  // take 8 bytes per value, as much as the c0 sum. With `task.derivePublicPolynomials` a worker
  // thread derives them all at once and the event loop only receives them.
  const roundSeed = deriveRoundSeed(descriptorHash, round);
  const polys = polynomialCount(valueCount);
  const publicPolynomials: Float64Array[] = [];
  let precomputing = true;
  // Σc0 reduced mod q, taken by `prepare` while the round's move to AGGREGATING commits (for `count` uploads).
  let prepared: { count: number; c0Sum: Float64Array } | null = null;
  // The committee's answers for D, asked by `startFinish` while the round's move to AGGREGATING
  // commits (for `count` devices); `finish` asks itself when it was not.
  let asked: { count: number; answers: Promise<CommitteeCollectResult> } | null = null;
  // Accepted devices go to the custodians as they are accepted (see CommitteeStaging). The staged
  // requests open on the next event-loop turn, once the engine has told the round's devices of it
  // (the first accepted update opens them itself if it comes first).
  let staging: CommitteeStaging | null | undefined;
  const openStaging = (): CommitteeStaging | null => (staging === undefined ? (staging = task.stage?.(round) ?? null) : staging);
  holds++;
  void (async () => {
    await nextTurn();
    if (precomputing) openStaging();
    // Into the round's buffer: a worker writes it until this settles (the buffer is held until then).
    const derived = await task.derivePublicPolynomials?.({ descriptorHash, round, roundSeed }, polys, buffers.publicPolynomials).catch(() => null);
    if (derived != null) {
      if (precomputing && publicPolynomials.length === 0) publicPolynomials.push(...derived);
      return;
    }
    for (let l = 0; l < polys; l++) {
      await nextTurn();
      if (!precomputing) return;
      publicPolynomials.push(derivePublicPolynomialNtt(descriptorHash, round, roundSeed, l));
    }
  })()
    .catch(() => undefined)
    .finally(release);
  // Uploads checked and added to `sum` before they were recorded, not yet confirmed by `add`, with their client.
  const provisional = new Map<CheckedCommitteeUpload, string>();
  // Of those, the ones streamed to the staged requests as they were checked (`foldEarly`), before
  // their record commits: the custodians verify and open a device's share while the coordinator
  // stores it, so that little is left for them once the last upload is recorded. One refused
  // after that is in no D: the round's staged requests are opened again without it (`restage`:
  // every device streamed and opened again). So a second upload of a device that has one staged
  // or counted already (a retry: at most one of them is recorded) is not staged when checked: at
  // most one per client.
  const stagedEarly = new Map<string, CheckedCommitteeUpload>();
  // Set by `prepare` (the round takes no more updates): an upload checked from then on is not staged.
  let ending = false;
  // Set once the committee is asked for this round.
  let collecting = false;
  const stageDevice = (device: CommitteeDeviceEntry, sealedShares: readonly Uint8Array[], clientId: string): void => {
    openStaging()?.add(device, (custodianIndex) => {
      const share = sealedShares[custodianIndex - 1];
      if (share === undefined) throw new VeilError('internal', `no sealed share ${custodianIndex} for client ${clientId}`);
      return share;
    });
  };
  /**
   * Cancels the staged requests and opens new ones with the devices that may still be in D (not
   * once the committee is asked: its collect takes only staged requests that hold exactly D).
   */
  const restage = (): void => {
    if (staging == null || collecting) return;
    staging.cancel();
    staging = task.stage?.(round) ?? null;
    for (const d of devices) stageDevice(d, d.sealedShares, d.clientId);
    for (const [clientId, c] of stagedEarly) stageDevice(c.committee, c.committee.sealedShares, clientId);
  };
  /** Takes a provisional upload out of the sum (refused, or the round ends without it). */
  const unfold = (checked: CheckedCommitteeUpload): void => {
    const clientId = provisional.get(checked);
    if (sum === null || clientId === undefined) return;
    provisional.delete(checked);
    sum.subtract(checked.committee.c0);
    if (stagedEarly.get(clientId) === checked) {
      stagedEarly.delete(clientId);
      restage();
    }
  };
  /** Asks the committee for its share sums over D = every device added. */
  const ask = (): Promise<CommitteeCollectResult> => {
    collecting = true;
    return task.collect({
      round,
      devices: devices.map((d) => ({ manifest: d.manifest, manifestSignature: d.manifestSignature })),
      sealedShare: (deviceIndex, custodianIndex) => {
        const share = devices[deviceIndex]?.sealedShares[custodianIndex - 1];
        if (share === undefined) throw new VeilError('internal', `no sealed share ${custodianIndex} for device ${deviceIndex}`);
        return share;
      },
      ...(staging != null && { staged: staging }),
    });
  };
  return {
    foldEarly(clientId, payload) {
      if (sum === null) throw new VeilError('internal', 'aggregator disposed');
      // One pass over the c0 both checks its range and adds it (under the task's lock, only the
      // confirmation is left: `add`).
      const checked = checkCommitteeUpload(task, round, parameterCount, clientId, payload, sum);
      const early: CheckedCommitteeUpload = { ...checked, unfold: () => unfold(early) };
      provisional.set(early, clientId);
      if (!ending && !seen.has(clientId) && !stagedEarly.has(clientId)) {
        // The staged requests copy what they send: no view into the payload is kept.
        stageDevice(checked.committee, checked.committee.sealedShares, clientId);
        stagedEarly.set(clientId, early);
      }
      return early;
    },
    add(clientId, _exampleCount, update) {
      if (sum === null) throw new VeilError('internal', 'aggregator disposed');
      if (seen.has(clientId)) throw new VeilError('already_exists', `client ${clientId} already has an update in this round`);
      const given = !(update instanceof Uint8Array) && 'committee' in update ? (update as CheckedCommitteeUpload) : null;
      // Folded early into this sum: confirmed, not added again. Otherwise (rebuilt from the store,
      // or folded into an aggregate since replaced) added now.
      const checked = given ?? checkCommitteeUpload(task, round, parameterCount, clientId, update instanceof Uint8Array ? update : update.payload);
      // Streamed to the staged requests when it was checked: not again.
      const staged = stagedEarly.get(clientId) === checked;
      if (staged) stagedEarly.delete(clientId);
      if (!provisional.delete(checked)) {
        try {
          sum.add(checked.committee.c0);
        } catch (error) {
          throw uploadError(error);
        }
      }
      prepared = null;
      seen.add(clientId);
      const c = checked.committee;
      const device = {
        clientId,
        manifest: Uint8Array.from(c.manifest),
        manifestSignature: Uint8Array.from(c.manifestSignature),
        manifestDigest: Uint8Array.from(c.manifestDigest),
        sealedShares: c.sealedShares.map((share) => Uint8Array.from(share)),
      };
      devices.push(device);
      if (!staged) stageDevice(device, device.sealedShares, clientId);
    },
    get count() {
      return sum === null ? 0 : devices.length;
    },
    prepare() {
      ending = true;
      // No upload is recorded any more: one folded early and not confirmed never will be.
      for (const checked of [...provisional.keys()]) unfold(checked);
      if (sum !== null && prepared?.count !== sum.count) prepared = { count: sum.count, c0Sum: sum.sum(buffersFree() ? buffers.c0Sum : undefined) };
    },
    startFinish() {
      // Only a D that `finish` would ask for (it refuses an empty or too small one before asking).
      if (sum === null || devices.length === 0 || devices.length < descriptor.minDevices || asked !== null) return;
      const answers = ask();
      answers.catch(() => undefined); // awaited by `finish`, or moot when the round does not finish here
      asked = { count: devices.length, answers };
    },
    async finish(current, failures = [], state = null) {
      holds++;
      try {
        return await finishRound(current, failures, state);
      } finally {
        release();
      }
    },
    dispose() {
      sum = null;
      prepared = null;
      asked = null;
      provisional.clear();
      stagedEarly.clear();
      staging ??= null; // never opened now
      staging?.cancel();
      precomputing = false;
      publicPolynomials.length = 0;
      devices.length = 0;
      if (!disposed) {
        disposed = true;
        if (holds === 0) handBack();
      }
    },
  };

  async function finishRound(
    current: ModelBlob,
    failures: readonly FitFailure[],
    state: StrategyState | null,
  ): Promise<(RoundResult & { audit: CommitteeRoundAudit }) | null> {
    if (sum === null) throw new VeilError('internal', 'aggregator disposed');
    if (current.encoding !== 'float32-le') throw new VeilError('internal', 'a committee task keeps float32 models');
    if (devices.length === 0) return null;
    if (devices.length < descriptor.minDevices) {
      throw new VeilError('failed_precondition', `only ${devices.length} updates, the task's committee decrypts sums of at least ${descriptor.minDevices}`);
    }
    const result = await (asked?.count === devices.length ? asked.answers : ask());
    asked = null;
    if (!result.ok || result.answers.length < descriptor.threshold) {
      const why = result.failures.map((f) => `custodian ${f.custodianIndex}: ${f.code} (${f.reason})`).join('; ');
      throw new VeilError('unavailable', `${result.answers.length} of the ${descriptor.threshold} custodian answers needed arrived: ${why}`);
    }
    const used = result.answers.slice(0, descriptor.threshold);
    // D is the confirmed uploads: one folded early but never recorded is not part of the sum.
    for (const checked of [...provisional.keys()]) unfold(checked);
    if (sum.count !== devices.length) throw new VeilError('internal', `the c0 sum holds ${sum.count} uploads, D has ${devices.length}`);
    let secretSum: Int32Array | null = null;
    try {
      secretSum = reconstructCentred(used.map((a) => ({ index: a.custodianIndex, share: decodeShareBytes(a.shareSum) })), descriptor.threshold);
      precomputing = false;
      const decryptOptions: DecryptSumOptions = {
        descriptorHash,
        round,
        roundSeed,
        publicPolynomials,
        encoding: descriptor.encoding,
        valueCount,
        c0Sum: prepared?.count === sum.count ? prepared.c0Sum : sum.sum(buffersFree() ? buffers.c0Sum : undefined),
        secretSum,
        count: devices.length,
        ...(buffersFree() && { output: { levelSums: buffers.levelSums, mean: buffers.mean } }),
      };
      let decrypted: DecryptedAggregate;
      decrypting = true;
      try {
        decrypted = task.decrypt === undefined ? decryptSum(decryptOptions) : await task.decrypt(decryptOptions);
      } finally {
        decrypting = false;
      }
      const { settled } = decrypted;
      if (settled !== undefined) {
        workersHold = settled;
        void settled.then(() => {
          if (workersHold === settled) workersHold = null;
        });
      }
      // Read in place (strategies do not modify `current`), and the next model's bytes are its own
      // memory (a fresh array each step gives away), as on plaintext rounds: no copies of the
      // model's size at the round's end.
      const weights = float32View(current.bytes);
      if (weights.length !== parameterCount) throw new VeilError('internal', `the model has ${weights.length} values, the task ${parameterCount}`);
      const mean = descriptor.dp === null ? decrypted.mean : ddgMean(descriptor, descriptorHash, round, parameterCount, decrypted);
      let next: Float32Array = new Float32Array(parameterCount);
      let nextState: StrategyState | null = null;
      if (serverStep === undefined) {
        addMean(next, weights, mean);
      } else {
        ({ parameters: next, state: nextState } = serverStep({ round, current: weights, mean, failures, state }));
      }
      const audit: CommitteeRoundAudit = { round, deviceCount: devices.length, answers: used.map((a) => a.signed), failures: result.failures };
      const hex = (b: Uint8Array) => Buffer.from(b).toString('hex');
      faultPoint('committee-answered'); // crash tests only (NODE_ENV=test): the custodians answered, the model is not written
      return {
        decryption: {
          clientIds: devices.map((d) => d.clientId),
          record: {
            descriptorHash: hex(descriptorHash),
            hashD: hex(hashD(devices.map((d) => d.manifestDigest))),
            manifestDigests: devices.map((d) => hex(d.manifestDigest)).sort(),
            answers: audit.answers.map((a) => ({ answer: { ...a.answer }, signature: a.signature })),
          },
        },
        model: { bytes: float32Bytes(next), encoding: 'float32-le' },
        state: nextState,
        audit,
        committee: {
          deviceCount: audit.deviceCount,
          custodians: used.map((a) => a.custodianIndex),
          answers: [...audit.answers],
          failures: audit.failures.map((f) => ({ custodianIndex: f.custodianIndex, code: f.code, reason: f.reason })),
        },
      };
    } catch (error) {
      if (error instanceof VeilError) throw error;
      const e = CryptoError.from(error);
      throw new VeilError('failed_precondition', `committee decryption failed: ${e.message}`, { cause: error });
    } finally {
      secretSum?.fill(0);
      prepared = null;
    }
  }
}
