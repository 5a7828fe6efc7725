/**
 * The custodian's domain logic, without transport: given a coordinator's request for one round
 * (a header and the device entries of the accepted set D), it checks everything it can check
 * itself and answers with its share sum over D, signed, at most once per (task, round).
 *
 * Design: shared/designs/committee-aggregation.md (one-shot secure aggregation with a committee,
 * in the family of Willow, ePrint 2024/936, and OPA, ePrint 2024/723) and the security review's
 * requirements listed there: the task descriptor must verify against a pinned enrolment
 * authority and this custodian's floors; only distinct devices with a certified, signed manifest
 * count; the associated data of each share is built here; the answer for a (task, round) is
 * cached bytes, on stable storage before it is sent; opened shares are erased after summing.
 */
import type { Logger } from 'pino';
import { prepareEd25519PrivateKey, prepareX25519PrivateKey } from '@veil/crypto';
import { CustodianError } from './errors.js';
import type { CustodianKeys } from './keys.js';
import type { CustodianState, StoredAnswer } from './state.js';
import { REQUEST_MAX_SKEW_MS, requestSigningBytes, stageSigningBytes } from './request-auth.js';
import {
  computeHashD,
  openDescriptor,
  openManifest,
  openShare,
  signAnswer,
  verifySignature,
  sha256,
  bytesEqual,
  toHex,
  type DescriptorFloors,
  type TaskDescriptorView,
} from './protocol.js';

/** The largest |D| a request may carry: p = 65521 holds |D| <= 32,760 (design note, "Limits"). */
export const MAX_DEVICES_PER_REQUEST = 32_760;

/** A ShareSum request header (see proto/veil/v1/custodian.proto). */
export interface ShareSumHeader {
  readonly descriptor: Uint8Array;
  readonly descriptorSignature: Uint8Array;
  readonly round: number;
  readonly hashD: Uint8Array;
  readonly deviceCount: number;
  readonly custodianIndex: number;
  readonly issuedAtMs: number;
  readonly coordinatorSignature: Uint8Array;
}

/** A StageHeader: opens a staged request (see proto/veil/v1/custodian.proto). */
export interface StageHeader {
  readonly descriptor: Uint8Array;
  readonly descriptorSignature: Uint8Array;
  readonly round: number;
  readonly custodianIndex: number;
  readonly issuedAtMs: number;
  readonly coordinatorSignature: Uint8Array;
}

/** What follows a StageHeader: batches of devices as they are accepted, then the final D's header. */
export type StagedMessage =
  | { readonly kind: 'batch'; readonly devices: readonly DeviceEntry[] }
  | { readonly kind: 'header'; readonly header: ShareSumHeader };

/** Staged requests one custodian holds at once, by default. */
export const DEFAULT_MAX_STAGED_REQUESTS = 256;

/** One device of D, as the coordinator relays it to this custodian. */
export interface DeviceEntry {
  readonly manifest: Uint8Array;
  readonly manifestSignature: Uint8Array;
  readonly sealedShare: Uint8Array;
}

/** A signed answer: the statement, its signature, and the share sum the statement hashes. */
export interface SignedAnswer {
  readonly statement: Uint8Array;
  readonly signature: Uint8Array;
  readonly shareSum: Uint8Array;
}

/** Options of {@link createCustodianService}. */
export interface CustodianServiceOptions {
  /** This custodian's keys. */
  readonly keys: CustodianKeys;
  /** Durable answered-rounds state ({@link openCustodianState}). */
  readonly state: CustodianState;
  /** Ed25519 public keys (32 bytes) whose signed requests are accepted. At least one. */
  readonly coordinatorKeys: readonly Uint8Array[];
  /**
   * Ed25519 public keys of the enrolment authorities this custodian trusts. A descriptor naming
   * another authority is refused, whoever signed it. At least one.
   */
  readonly authorityKeys: readonly Uint8Array[];
  /** This custodian's floors; a descriptor below them is refused. */
  readonly floors: DescriptorFloors;
  /** Largest |D| accepted. Default {@link MAX_DEVICES_PER_REQUEST}. */
  readonly maxDevices?: number;
  /** Staged requests held at once (each a running sum of 8 KB plus a digest per device). Default {@link DEFAULT_MAX_STAGED_REQUESTS}. */
  readonly maxStagedRequests?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly clock?: () => number;
  /** pino logger; shares, share sums and keys are never logged. */
  readonly logger: Logger;
}

/** The custodian service. */
export interface CustodianService {
  /** This custodian's public keys. */
  readonly sealingPublicKey: Uint8Array;
  readonly signingPublicKey: Uint8Array;
  /**
   * Answers one request: `devices` is read lazily (batches of entries), and not at all when the
   * answer is already cached or the header is refused. Throws {@link CustodianError}.
   */
  shareSum(header: ShareSumHeader, devices: AsyncIterable<readonly DeviceEntry[]>): Promise<SignedAnswer>;
  /**
   * Answers a staged request: `stage` opens it while the round still collects; each device in
   * `messages` is verified, opened and added to a running sum as it arrives (its share erased at
   * once); the final header must name exactly the devices staged (|D| and hash of D), and is then
   * answered like {@link shareSum} (once per (task, round), cached bytes for the same D, a
   * different D refused). Throws {@link CustodianError}.
   */
  stagedShareSum(stage: StageHeader, messages: AsyncIterable<StagedMessage>): Promise<SignedAnswer>;
}

/** Creates the custodian service. */
export function createCustodianService(options: CustodianServiceOptions): CustodianService {
  const { keys, state, logger } = options;
  const clock = options.clock ?? Date.now;
  const maxDevices = options.maxDevices ?? MAX_DEVICES_PER_REQUEST;
  if (options.coordinatorKeys.length === 0) throw new CustodianError('invalid_request', 'at least one coordinator key is required');
  if (options.authorityKeys.length === 0) throw new CustodianError('invalid_request', 'at least one enrolment authority key is required');
  if (!Number.isInteger(maxDevices) || maxDevices < 1 || maxDevices > MAX_DEVICES_PER_REQUEST) {
    throw new CustodianError('invalid_request', `maxDevices must be an integer in [1, ${MAX_DEVICES_PER_REQUEST}]`);
  }
  const maxStaged = options.maxStagedRequests ?? DEFAULT_MAX_STAGED_REQUESTS;
  if (!Number.isInteger(maxStaged) || maxStaged < 0) throw new CustodianError('invalid_request', 'maxStagedRequests must be an integer >= 0');
  let staged = 0;
  const coordinatorKeys = options.coordinatorKeys.map((k) => new Uint8Array(k));
  // Device certificates verified in earlier rounds, per task (a device's certificate is the same
  // every round; the expiry is checked on every request). Bounded: cleared past 100,000 entries.
  const certificateCaches = new Map<string, Set<string>>();
  const certificateCacheOf = (taskId: string): Set<string> => {
    let cache = certificateCaches.get(taskId);
    if (cache === undefined) {
      if (certificateCaches.size >= 64) certificateCaches.clear();
      cache = new Set();
      certificateCaches.set(taskId, cache);
    } else if (cache.size >= 100_000) {
      cache.clear();
    }
    return cache;
  };
  const authorityKeys = options.authorityKeys.map((k) => new Uint8Array(k));
  // Parsed once: every share sealed to this custodian is opened with it.
  const sealingKey = prepareX25519PrivateKey(keys.sealing.privateKey);
  // Parsed once too: every answer is signed with it.
  const signingKey = prepareEd25519PrivateKey(keys.signing.privateKey);

  // One request at a time per (task, round): the check "answered already?" and the record of the
  // answer must not interleave with another request for the same round.
  const locks = new Map<string, Promise<unknown>>();
  const withLock = async <T>(lockKey: string, fn: () => Promise<T>): Promise<T> => {
    const previous = locks.get(lockKey) ?? Promise.resolve();
    const run = previous.then(fn, fn);
    const settled = run.catch(() => undefined);
    locks.set(lockKey, settled);
    try {
      return await run;
    } finally {
      if (locks.get(lockKey) === settled) locks.delete(lockKey);
    }
  };

  function authenticate(header: ShareSumHeader | StageHeader, descriptorHash: Uint8Array): void {
    let message: Uint8Array;
    try {
      message =
        'hashD' in header
          ? requestSigningBytes({
              descriptorHash,
              round: header.round,
              hashD: header.hashD,
              deviceCount: header.deviceCount,
              custodianIndex: header.custodianIndex,
              issuedAtMs: header.issuedAtMs,
            })
          : stageSigningBytes({ descriptorHash, round: header.round, custodianIndex: header.custodianIndex, issuedAtMs: header.issuedAtMs });
    } catch (error) {
      throw new CustodianError('invalid_request', `malformed request header: ${(error as Error).message}`);
    }
    if (!coordinatorKeys.some((key) => verifySignature(key, message, header.coordinatorSignature))) {
      throw new CustodianError('unauthenticated', 'the request is not signed by a coordinator key this custodian accepts');
    }
    const skew = Math.abs(clock() - header.issuedAtMs);
    if (skew > REQUEST_MAX_SKEW_MS) {
      throw new CustodianError('unauthenticated', `the request was issued ${Math.round(skew / 1000)} s away from this custodian's clock (limit ${REQUEST_MAX_SKEW_MS / 1000} s)`);
    }
  }

  // Descriptors that passed every check below but the committee one, by SHA-256 of their bytes and
  // the authority's signature: a task's coordinator sends the same descriptor with each of its two
  // headers of every round, and parsing, validating (custodian fingerprints, canonical form) and
  // verifying it was a sizeable part of a 10-device round's custodian CPU. The checks depend only
  // on those bytes, that signature and this custodian's fixed floors and authorities, so a hit is
  // a descriptor verified before. Refusals are not kept. Bounded: cleared past 64 entries.
  const verifiedDescriptors = new Map<string, TaskDescriptorView>();

  function checkDescriptor(header: ShareSumHeader | StageHeader, descriptorHash: Uint8Array): TaskDescriptorView {
    const cacheKey = `${toHex(descriptorHash)}:${toHex(header.descriptorSignature)}`;
    let descriptor = verifiedDescriptors.get(cacheKey);
    if (descriptor === undefined) {
      const opened = openDescriptor(header.descriptor, header.descriptorSignature, options.floors);
      if (!authorityKeys.some((key) => bytesEqual(key, opened.authorityKey))) {
        throw new CustodianError('invalid_descriptor', 'the descriptor names an enrolment authority this custodian does not trust');
      }
      if (verifiedDescriptors.size >= 64) verifiedDescriptors.clear();
      verifiedDescriptors.set(cacheKey, opened);
      descriptor = opened;
    }
    const me = descriptor.committee.find((member) => member.index === header.custodianIndex);
    if (me === undefined || !bytesEqual(me.sealingKey, keys.sealing.publicKey) || !bytesEqual(me.signingKey, keys.signing.publicKey)) {
      throw new CustodianError('invalid_descriptor', `the descriptor's committee does not hold this custodian's keys at index ${header.custodianIndex}`);
    }
    return descriptor;
  }

  /**
   * A running share sum over verified devices: each entry's manifest is checked (certified,
   * signed, naming this task and round, committing to the sealed share sent), distinct devices and
   * keys only, and its share opened with associated data built here, added, and erased.
   */
  function createSummer(descriptor: TaskDescriptorView, round: number, custodianIndex: number) {
    const n = descriptor.ringDegree;
    const p = descriptor.shareModulus;
    // Each share value is < p = 65521 and |D| <= 32,760, so the plain sum stays below 2^31.
    const acc = new Uint32Array(n);
    const digests: Uint8Array[] = [];
    const deviceIds = new Set<string>();
    const deviceKeys = new Set<string>();
    const certificates = certificateCacheOf(descriptor.taskId);
    return {
      get count(): number {
        return digests.length;
      },
      add(entry: DeviceEntry, now: number): void {
        const manifest = openManifest(entry.manifest, entry.manifestSignature, descriptor, round, now, certificates);
        if (deviceIds.has(manifest.deviceId)) throw new CustodianError('duplicate_device', `device ${manifest.deviceId} appears twice in D`);
        const keyHex = toHex(manifest.devicePublicKey);
        if (deviceKeys.has(keyHex)) throw new CustodianError('duplicate_device', `device ${manifest.deviceId} uses a key that another device of D uses`);
        const committed = manifest.shareSha256[custodianIndex - 1];
        if (committed === undefined || !bytesEqual(committed, sha256(entry.sealedShare))) {
          throw new CustodianError('invalid_manifest', `device ${manifest.deviceId}'s manifest does not commit to the share sent for custodian ${custodianIndex}`);
        }
        const share = openShare({
          descriptor,
          round,
          deviceId: manifest.deviceId,
          custodianIndex,
          sealingPrivateKey: sealingKey,
          sealingPublicKey: keys.sealing.publicKey,
          sealed: entry.sealedShare,
        });
        try {
          for (let k = 0; k < n; k += 1) acc[k] = (acc[k] as number) + (share[k] as number);
        } finally {
          share.fill(0);
        }
        deviceIds.add(manifest.deviceId);
        deviceKeys.add(keyHex);
        digests.push(manifest.digest);
      },
      /** Checks that the devices added are exactly the header's D. */
      checkD(header: ShareSumHeader): void {
        if (digests.length !== header.deviceCount) {
          throw new CustodianError('invalid_request', `the header announced ${header.deviceCount} devices, the request carried ${digests.length}`);
        }
        if (!bytesEqual(computeHashD(digests), header.hashD)) {
          throw new CustodianError('invalid_request', "the header's hash of D does not match the devices sent");
        }
      },
      /** The sum mod p as N little-endian u16 values. */
      shareSum(): Uint8Array {
        const out = new Uint8Array(2 * n);
        const view = new DataView(out.buffer);
        for (let k = 0; k < n; k += 1) view.setUint16(2 * k, (acc[k] as number) % p, true);
        return out;
      },
      erase(): void {
        acc.fill(0);
      },
    };
  }

  async function sum(header: ShareSumHeader, descriptor: TaskDescriptorView, devices: AsyncIterable<readonly DeviceEntry[]>, log: Logger): Promise<Uint8Array> {
    const summer = createSummer(descriptor, header.round, header.custodianIndex);
    const now = clock();
    let seen = 0;
    try {
      for await (const batch of devices) {
        for (const entry of batch) {
          seen += 1;
          if (seen > header.deviceCount) {
            throw new CustodianError('invalid_request', `more device entries than the header's device count ${header.deviceCount}`);
          }
          summer.add(entry, now);
        }
      }
      summer.checkD(header);
      log.debug({ devices: seen }, 'share sum computed');
      return summer.shareSum();
    } finally {
      summer.erase();
    }
  }

  /** The checks of a ShareSum header that need no device: round, cap, |D| limits and floor. */
  function checkHeader(header: ShareSumHeader, descriptor: TaskDescriptorView): void {
    if (!Number.isInteger(header.round) || header.round < 1) throw new CustodianError('invalid_request', 'round must be >= 1');
    if (header.round > descriptor.maxRounds) {
      throw new CustodianError('round_cap_exceeded', `round ${header.round} is past the task's cap of ${descriptor.maxRounds} rounds`);
    }
    if (header.deviceCount > maxDevices) {
      throw new CustodianError('request_too_large', `|D| = ${header.deviceCount} is above this custodian's limit of ${maxDevices}`);
    }
    // The task's own bound: above it the encoded sum may not decode and the lift of S_D mod p may wrap.
    if (header.deviceCount > descriptor.maxDevices) {
      throw new CustodianError('request_too_large', `|D| = ${header.deviceCount} is above the task's maximum of ${descriptor.maxDevices} devices`);
    }
    const minimum = Math.max(descriptor.minDevices, options.floors.minDevices);
    if (header.deviceCount < minimum) {
      throw new CustodianError('below_minimum', `|D| = ${header.deviceCount} is below the minimum of ${minimum} devices`);
    }
  }

  /**
   * Answers (task, round) once, under its lock: the cached bytes for the same D, a refusal for
   * another, else `compute`d, signed, recorded (durably) and returned.
   */
  function answerOnce(header: ShareSumHeader, descriptor: TaskDescriptorView, log: Logger, compute: () => Promise<Uint8Array>, staged: boolean): Promise<SignedAnswer> {
    const hashDHex = toHex(header.hashD);
    return withLock(`${header.round}\u0000${descriptor.taskId}`, async () => {
      const known = state.taskDescriptor(descriptor.taskId);
      if (known !== undefined && known !== descriptor.hashHex) {
        throw new CustodianError('descriptor_changed', `task ${descriptor.taskId} is already served under another descriptor`);
      }
      const cached = state.answer(descriptor.taskId, header.round);
      if (cached !== undefined) {
        if (cached.hashD !== hashDHex) {
          log.warn({ answeredHashD: cached.hashD, requestedHashD: hashDHex }, 'refused a second accepted set for an answered round');
          throw new CustodianError('other_set_answered', `round ${header.round} of task ${descriptor.taskId} was already answered for another set of devices`);
        }
        log.info({ devices: cached.count }, 'answered again from the stored answer');
        return { statement: cached.statement, signature: cached.signature, shareSum: cached.shareSum };
      }
      const started = performance.now();
      const shareSum = await compute();
      const { statement, signature } = signAnswer({
        descriptor,
        round: header.round,
        hashD: header.hashD,
        count: header.deviceCount,
        custodianIndex: header.custodianIndex,
        shareSum,
        signingPrivateKey: signingKey,
      });
      const stored: StoredAnswer = {
        taskId: descriptor.taskId,
        descriptorHash: descriptor.hashHex,
        round: header.round,
        hashD: hashDHex,
        count: header.deviceCount,
        statement,
        signature,
        shareSum,
      };
      await state.recordTask(descriptor.taskId, descriptor.hashHex);
      await state.recordAnswer(stored);
      log.info({ devices: header.deviceCount, hashD: hashDHex, staged, durationMs: Math.round(performance.now() - started) }, 'answered');
      return { statement, signature, shareSum };
    });
  }

  return {
    sealingPublicKey: keys.sealing.publicKey,
    signingPublicKey: keys.signing.publicKey,
    async shareSum(header, devices) {
      if (header.hashD.length !== 32) throw new CustodianError('invalid_request', 'hash_d must be 32 bytes');
      const descriptorHash = sha256(header.descriptor);
      authenticate(header, descriptorHash);
      const descriptor = checkDescriptor(header, descriptorHash);
      const log = logger.child({ taskId: descriptor.taskId, round: header.round, custodianIndex: header.custodianIndex });
      checkHeader(header, descriptor);
      return answerOnce(header, descriptor, log, () => sum(header, descriptor, devices, log), false);
    },
    async stagedShareSum(stage, messages) {
      const descriptorHash = sha256(stage.descriptor);
      authenticate(stage, descriptorHash);
      const descriptor = checkDescriptor(stage, descriptorHash);
      const log = logger.child({ taskId: descriptor.taskId, round: stage.round, custodianIndex: stage.custodianIndex });
      if (!Number.isInteger(stage.round) || stage.round < 1) throw new CustodianError('invalid_request', 'round must be >= 1');
      if (stage.round > descriptor.maxRounds) {
        throw new CustodianError('round_cap_exceeded', `round ${stage.round} is past the task's cap of ${descriptor.maxRounds} rounds`);
      }
      if (staged >= maxStaged) throw new CustodianError('request_too_large', `this custodian already holds ${staged} staged requests`);
      staged += 1;
      const limit = Math.min(maxDevices, descriptor.maxDevices);
      const summer = createSummer(descriptor, stage.round, stage.custodianIndex);
      try {
        for await (const message of messages) {
          if (message.kind === 'batch') {
            for (const entry of message.devices) {
              if (summer.count >= limit) throw new CustodianError('request_too_large', `more than ${limit} devices staged`);
              summer.add(entry, clock());
            }
            continue;
          }
          // The final header: the D of exactly the devices staged on this stream, nothing else.
          const header = message.header;
          if (header.hashD.length !== 32) throw new CustodianError('invalid_request', 'hash_d must be 32 bytes');
          authenticate(header, descriptorHash);
          if (!bytesEqual(header.descriptor, stage.descriptor) || header.round !== stage.round || header.custodianIndex !== stage.custodianIndex) {
            throw new CustodianError('invalid_request', 'the final header names another descriptor, round or custodian than the stage header');
          }
          checkHeader(header, descriptor);
          summer.checkD(header);
          const shareSum = summer.shareSum();
          return await answerOnce(header, descriptor, log, async () => shareSum, true);
        }
        throw new CustodianError('invalid_request', 'the staged request ended before its final header');
      } finally {
        summer.erase();
        staged -= 1;
      }
    },
  };
}
