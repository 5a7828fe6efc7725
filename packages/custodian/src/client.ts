/**
 * The coordinator's committee client: asks t of the n custodians of a task (those that answered
 * fastest before first) for their share sums over the accepted set D, in parallel and under one
 * deadline, and another one in place of each that fails, forges or has not answered within a hedge
 * delay (a custodian answers a (task, round) once, with the same D, so asking it late is safe);
 * verifies every answer against the
 * descriptor's committee (Ed25519, RFC 8032) and the request (descriptor, round, hash of D, |D|,
 * custodian index, share-sum hash); returns the first t valid answers and says why each other
 * custodian failed. Forged or mismatched answers never reach the caller.
 */
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CustodianError, ERROR_CODE_METADATA_KEY, isCustodianErrorCode, type CustodianErrorCode } from './errors.js';
import type { CustodianServiceClient } from './gen/veil/v1/CustodianService.js';
import type { DeviceEntry } from './gen/veil/v1/DeviceEntry.js';
import type { ShareSumRequest } from './gen/veil/v1/ShareSumRequest.js';
import type { ShareSumResponse__Output } from './gen/veil/v1/ShareSumResponse.js';
import { MAX_DEVICES_PER_BATCH, createCustodianServiceClient } from './grpc/proto.js';
import { requestSigningBytes, stageSigningBytes } from './request-auth.js';
import { parseCustodianAddress } from './tls.js';
import type { SignedCustodianAnswer } from '@veil/crypto';
import { computeHashD, manifestDigest, openDescriptorForCoordinator, signedAnswerOf, toHex, verifyAnswer, type TaskDescriptorView } from './protocol.js';

/** One device of D as the coordinator stored it. */
export interface CommitteeDevice {
  /** The manifest's canonical bytes. */
  readonly manifest: Uint8Array;
  /** The device's signature over them. */
  readonly manifestSignature: Uint8Array;
}

/** A round's request to the committee. */
export interface CommitteeRequest {
  readonly round: number;
  /** The accepted set D. */
  readonly devices: readonly CommitteeDevice[];
  /**
   * The sealed share of `devices[deviceIndex]` for custodian `custodianIndex` (1..n). Called
   * lazily while streaming, so shares need not all sit in memory.
   */
  sealedShare(deviceIndex: number, custodianIndex: number): Uint8Array | Promise<Uint8Array>;
  /**
   * The round's staged requests ({@link CommitteeClient.stage}), if any: a custodian whose staged
   * request holds exactly `devices` is asked by sending it the final header only; the others are
   * asked with every device as usual.
   */
  readonly staged?: StagedRound;
}

/**
 * A round's staged requests (see proto/veil/v1/custodian.proto, "Staged requests"): open while
 * the round collects, each accepted device streamed to the custodians as it is accepted, so that
 * they verify and open its share then, not at the round's end.
 */
export interface StagedRound {
  /**
   * Streams one accepted device (its manifest, signature and the share sealed to each custodian
   * index 1..n) to the staged custodians: the devices added in one event-loop turn go as one
   * DeviceBatch, written at the end of the turn (or before a collect's final header). Never throws:
   * a staged request that breaks is dropped, and the collect asks that custodian with every device
   * instead.
   */
  add(device: CommitteeDevice, sealedShare: (custodianIndex: number) => Uint8Array): void;
  /** Cancels the staged requests no collect has finished (the round failed or its aggregate was dropped). Idempotent. */
  cancel(): void;
}

/** A verified custodian answer. */
export interface VerifiedAnswer {
  readonly custodianIndex: number;
  /** Canonical statement bytes (descriptor hash, round, hash of D, |D|, index, share-sum hash). */
  readonly statement: Uint8Array;
  /** The custodian's Ed25519 signature over `statement`. */
  readonly signature: Uint8Array;
  /** N little-endian u16 values mod p. */
  readonly shareSum: Uint8Array;
  /** The answer as the ledger keeps it (statement fields + base64 signature, no share sum). */
  readonly signed: SignedCustodianAnswer;
}

/** Why one custodian gave no usable answer. */
export interface CustodianFailure {
  readonly custodianIndex: number;
  readonly address: string;
  /** `forged_answer` for an answer that did not verify; `unavailable` for no answer in time; else the custodian's refusal. */
  readonly code: CustodianErrorCode;
  /** The gRPC status received, if any. */
  readonly grpcStatus: number | null;
  readonly reason: string;
}

/** What {@link CommitteeClient.collect} returns. */
export interface CommitteeResult {
  /** True when `answers` holds t valid answers. */
  readonly ok: boolean;
  /** hash(D) as sent (32 bytes). */
  readonly hashD: Uint8Array;
  readonly deviceCount: number;
  /** The first t valid answers (fewer when `ok` is false), in the order they arrived. */
  readonly answers: readonly VerifiedAnswer[];
  /** Custodians that refused, failed, did not answer in time or answered with a forgery. */
  readonly failures: readonly CustodianFailure[];
  /** Custodians still working when t valid answers had arrived (their calls are cancelled), or never asked. */
  readonly notNeeded: readonly number[];
  /** Custodians asked through their staged request (sent only the final header). */
  readonly staged: readonly number[];
}

/** Options of {@link createCommitteeClient}. */
export interface CommitteeClientOptions {
  /** The task descriptor's canonical bytes. */
  readonly descriptor: Uint8Array;
  /** The enrolment authority's signature over the descriptor hash (64 bytes). */
  readonly descriptorSignature: Uint8Array;
  /** Signs a request header with the coordinator's request key (Ed25519, 64-byte signatures). */
  readonly signRequest: (message: Uint8Array) => Uint8Array;
  /**
   * Channel credentials for every custodian, whatever its address says (tests). Default: TLS for
   * a `grpcs://host:port` address (credentials from `tls`), cleartext for a plain `host:port`
   * (loopback or a TLS-terminating proxy).
   */
  readonly credentials?: grpc.ChannelCredentials;
  /**
   * TLS credentials for `grpcs://` custodians, asked before every collect: the pinned CA bundle and
   * the coordinator's client certificate ({@link committeeChannelCredentials}). A new object (the
   * files were renewed) rebuilds those channels. Default: the system CAs, no client certificate.
   */
  readonly tls?: () => grpc.ChannelCredentials;
  /** Deadline of one collect, ms. Default 30,000. */
  readonly deadlineMs?: number;
  /**
   * A collect asks t custodians first; when one of them has not answered after this many ms, it
   * asks one more (and again after each further delay). Default: twice the time the previous
   * collect took to its t-th answer, scaled up by |D| growth, at least 200 ms; 2,000 ms before any.
   */
  readonly hedgeDelayMs?: number;
  /** Milliseconds since the epoch. Default `Date.now`. */
  readonly clock?: () => number;
  /**
   * Custodians {@link CommitteeClient.stage} opens a staged request with: the first ones a collect
   * would ask (fastest before first). Default: the threshold t; 0 stages nothing.
   */
  readonly stagedCustodians?: number;
  /** Deadline of a staged request from its opening, ms (a round that collects longer is asked unstaged). Default 3,600,000. */
  readonly stageDeadlineMs?: number;
  /** Overrides the address of a custodian (by index), e.g. in tests. */
  readonly addresses?: Readonly<Record<number, string>>;
  readonly logger: Logger;
}

/** The committee client of one task. */
export interface CommitteeClient extends AsyncDisposable {
  readonly descriptor: TaskDescriptorView;
  /** Asks t custodians (another in place of each that fails, forges or is slow) for their share sums over `request.devices`. Never throws for custodian failures. */
  collect(request: CommitteeRequest): Promise<CommitteeResult>;
  /** Opens the staged requests of a round (see {@link StagedRound}); pass the handle to the round's collect. */
  stage(round: number): StagedRound;
  close(): Promise<void>;
}

/**
 * Creates a committee client for one task. Throws `CustodianError('invalid_descriptor')` for a
 * descriptor that is malformed or not signed by the authority it names.
 */
/** Hedge delay of a client's first collect (no timings yet), ms. */
const DEFAULT_FIRST_HEDGE_MS = 2_000;
/** Floor of the adaptive hedge delay, ms. */
const MIN_HEDGE_MS = 200;

export function createCommitteeClient(options: CommitteeClientOptions): CommitteeClient {
  const descriptor = openDescriptorForCoordinator(options.descriptor, options.descriptorSignature);
  const deadlineMs = options.deadlineMs ?? 30_000;
  const clock = options.clock ?? Date.now;
  const { logger } = options;
  if (!Number.isInteger(deadlineMs) || deadlineMs <= 0) throw new CustodianError('invalid_request', 'deadlineMs must be a positive integer');
  if (options.hedgeDelayMs !== undefined && (!Number.isInteger(options.hedgeDelayMs) || options.hedgeDelayMs <= 0)) {
    throw new CustodianError('invalid_request', 'hedgeDelayMs must be a positive integer');
  }
  const stagedCustodians = options.stagedCustodians ?? descriptor.threshold;
  const stageDeadlineMs = options.stageDeadlineMs ?? 3_600_000;
  if (!Number.isInteger(stagedCustodians) || stagedCustodians < 0) throw new CustodianError('invalid_request', 'stagedCustodians must be an integer >= 0');
  if (!Number.isInteger(stageDeadlineMs) || stageDeadlineMs <= 0) throw new CustodianError('invalid_request', 'stageDeadlineMs must be a positive integer');
  const insecure = grpc.credentials.createInsecure();
  let systemTls: grpc.ChannelCredentials | null = null;
  const credentialsFor = (tls: boolean): grpc.ChannelCredentials =>
    options.credentials ?? (tls ? (options.tls?.() ?? (systemTls ??= grpc.credentials.createSsl())) : insecure);
  const members = descriptor.committee.map((member) => {
    const address = options.addresses?.[member.index] ?? member.address;
    const { target, tls } = parseCustodianAddress(address);
    const credentials = credentialsFor(tls);
    return { ...member, address, target, tls, credentials, client: createCustodianServiceClient(target, credentials) as CustodianServiceClient };
  });
  /** Renewed TLS files: new channels for the TLS custodians (calls in flight keep theirs). */
  const refreshChannels = (): void => {
    for (const member of members) {
      if (!member.tls) continue;
      const credentials = credentialsFor(true);
      if (credentials === member.credentials) continue;
      const old = member.client;
      member.credentials = credentials;
      member.client = createCustodianServiceClient(member.target, credentials) as CustodianServiceClient;
      old.close();
    }
  };

  /**
   * Per custodian, the ms from asking to its verified answer in the last collect that asked it
   * (a lower bound for one cancelled as not needed; +Infinity after a failure or a forgery).
   */
  const latencyMs = new Map<number, number>();
  /** The last successful collect: ms to its t-th verified answer, and |D|. */
  let lastCollect: { ms: number; devices: number } | null = null;
  /** The hedge delay of a collect over `devices` devices, ms. */
  const hedgeDelayFor = (devices: number): number => {
    if (options.hedgeDelayMs !== undefined) return options.hedgeDelayMs;
    if (lastCollect === null) return DEFAULT_FIRST_HEDGE_MS;
    return Math.max(MIN_HEDGE_MS, Math.ceil(2 * lastCollect.ms * Math.max(1, devices / lastCollect.devices)));
  };

  /** Fastest answerers of earlier collects first, never-asked ones next, failed ones last (index breaks ties). */
  const rank = (index: number): number => latencyMs.get(index) ?? Number.MAX_SAFE_INTEGER;
  const ranked = (): (typeof members)[number][] => [...members].sort((a, b) => rank(a.index) - rank(b.index) || a.index - b.index);

  /** One custodian's staged request. */
  interface StagedCall {
    readonly member: (typeof members)[number];
    readonly call: grpc.ClientWritableStream<ShareSumRequest>;
    readonly result: Promise<ShareSumResponse__Output>;
    /** hex manifest digests of the devices written to it. */
    readonly digests: Set<string>;
    /** Ended (an error, an early response) or cancelled: unusable. */
    broken: boolean;
    /** Its final header was sent by a collect. */
    finalSent: boolean;
    /** Devices added but not yet written: sent together as one DeviceBatch (see `flushStaged`). */
    pending: DeviceEntry[];
  }
  const stagedCalls = new WeakMap<StagedRound, { round: number; calls: Map<number, StagedCall> }>();
  /** Staged calls not yet ended, cancelled by `close`. */
  const liveStaged = new Set<StagedCall>();

  /** The final header of a request for D (staged or not), signed over its claims now. */
  function requestHeader(request: CommitteeRequest, hashD: Uint8Array, custodianIndex: number) {
    const issuedAtMs = clock();
    const claims = { descriptorHash: descriptor.hash, round: request.round, hashD, deviceCount: request.devices.length, custodianIndex, issuedAtMs };
    return {
      descriptor: Buffer.from(options.descriptor),
      descriptorSignature: Buffer.from(options.descriptorSignature),
      round: request.round,
      hashD: Buffer.from(hashD),
      deviceCount: request.devices.length,
      custodianIndex,
      issuedAtMs,
      coordinatorSignature: Buffer.from(options.signRequest(requestSigningBytes(claims))),
    };
  }

  function openStaged(member: (typeof members)[number], round: number): StagedCall {
    const issuedAtMs = clock();
    const coordinatorSignature = options.signRequest(stageSigningBytes({ descriptorHash: descriptor.hash, round, custodianIndex: member.index, issuedAtMs }));
    let settle!: { resolve: (r: ShareSumResponse__Output) => void; reject: (e: unknown) => void };
    const result = new Promise<ShareSumResponse__Output>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const call = member.client.shareSum({ deadline: Date.now() + stageDeadlineMs }, (error, response) => {
      if (error) settle.reject(error);
      else if (response === undefined) settle.reject(new CustodianError('invalid_request', 'empty response'));
      else settle.resolve(response);
    });
    const staged: StagedCall = { member, call, result, digests: new Set(), broken: false, finalSent: false, pending: [] };
    // Whatever ends the call before a collect sent the final header makes it unusable; the collect
    // reads the outcome of a finished one from `result`.
    liveStaged.add(staged);
    result.then(
      () => {
        liveStaged.delete(staged);
        if (!staged.finalSent) staged.broken = true;
      },
      () => {
        liveStaged.delete(staged);
        staged.broken = true;
      },
    );
    call.write({
      stage: {
        descriptor: Buffer.from(options.descriptor),
        descriptorSignature: Buffer.from(options.descriptorSignature),
        round,
        custodianIndex: member.index,
        issuedAtMs,
        coordinatorSignature: Buffer.from(coordinatorSignature),
      },
    });
    return staged;
  }

  /**
   * Writes the devices added to a staged request since its last write as one DeviceBatch (at most
   * MAX_DEVICES_PER_BATCH each): the updates one group commit accepts reach the custodian as one
   * message, not one message (and one pass through its stream, decoder and iterator) per device.
   * Never throws: a staged request that cannot be written is dropped (the collect then asks that
   * custodian with every device).
   */
  function flushStaged(staged: StagedCall, round: number): void {
    if (staged.pending.length === 0) return;
    const devices = staged.pending;
    staged.pending = [];
    if (staged.broken) return;
    try {
      for (let start = 0; start < devices.length; start += MAX_DEVICES_PER_BATCH) {
        staged.call.write({ batch: { devices: devices.slice(start, start + MAX_DEVICES_PER_BATCH) } });
      }
    } catch (error) {
      staged.broken = true;
      staged.call.cancel();
      logger.warn({ taskId: descriptor.taskId, round, custodianIndex: staged.member.index, reason: (error as Error).message }, 'staged request dropped');
    }
  }

  /**
   * Finishes a staged request: the final header names D, which is exactly the devices staged
   * (checked by the caller, and again by the custodian through |D| and hash(D)).
   */
  function finishStaged(staged: StagedCall, request: CommitteeRequest, hashD: Uint8Array, deadline: number, onCall: (call: grpc.ClientWritableStream<ShareSumRequest>) => void): Promise<ShareSumResponse__Output> {
    // Devices still waiting to be written go first: the custodian checks D against what it received.
    flushStaged(staged, request.round);
    staged.finalSent = true;
    const { member, call } = staged;
    const header = requestHeader(request, hashD, member.index);
    onCall(call);
    // The collect's deadline applies to the answer, whatever the staged call's own deadline.
    const timer = setTimeout(() => call.cancel(), Math.max(0, deadline - Date.now()));
    timer.unref?.();
    try {
      call.write({ header });
      call.end();
    } catch (error) {
      call.cancel();
      clearTimeout(timer);
      return Promise.reject(error);
    }
    return staged.result.finally(() => clearTimeout(timer));
  }

  async function ask(
    member: (typeof members)[number],
    request: CommitteeRequest,
    hashD: Uint8Array,
    deadline: number,
    onCall: (call: grpc.ClientWritableStream<ShareSumRequest>) => void,
  ): Promise<ShareSumResponse__Output> {
    const header = requestHeader(request, hashD, member.index);
    let settle!: { resolve: (r: ShareSumResponse__Output) => void; reject: (e: unknown) => void };
    const result = new Promise<ShareSumResponse__Output>((resolve, reject) => {
      settle = { resolve, reject };
    });
    const call = member.client.shareSum({ deadline }, (error, response) => {
      if (error) settle.reject(error);
      else if (response === undefined) settle.reject(new CustodianError('invalid_request', 'empty response'));
      else settle.resolve(response);
    });
    onCall(call);
    // Waits for 'drain' under backpressure, or for the call's end (no 'drain' comes after it).
    const write = (message: ShareSumRequest): Promise<void> =>
      new Promise((resolve) => {
        if (call.write(message)) {
          resolve();
        } else {
          call.once('drain', resolve);
          result.then(() => resolve(), () => resolve());
        }
      });
    // Streaming stops silently when the call ends early (cached answer, refusal, deadline): the
    // callback above reports the outcome.
    const stream = async (): Promise<void> => {
      let ended = false;
      const stop = (): void => {
        ended = true;
      };
      result.then(stop, stop);
      await write({ header });
      for (let start = 0; start < request.devices.length && !ended; start += MAX_DEVICES_PER_BATCH) {
        const batch = [];
        for (let j = start; j < Math.min(start + MAX_DEVICES_PER_BATCH, request.devices.length); j += 1) {
          const device = request.devices[j] as CommitteeDevice;
          batch.push({
            manifest: Buffer.from(device.manifest),
            manifestSignature: Buffer.from(device.manifestSignature),
            sealedShare: Buffer.from(await request.sealedShare(j, member.index)),
          });
        }
        if (ended) break;
        await write({ batch: { devices: batch } });
      }
      if (!ended) call.end();
    };
    stream().catch((error: unknown) => {
      call.cancel();
      settle.reject(error);
    });
    return result;
  }

  return {
    descriptor,
    stage(round) {
      const calls = new Map<number, StagedCall>();
      if (stagedCustodians > 0) {
        refreshChannels();
        for (const member of ranked().slice(0, stagedCustodians)) calls.set(member.index, openStaged(member, round));
      }
      // One write per event-loop turn at most: the devices added meanwhile go as one batch.
      let flushQueued = false;
      const flushAll = (): void => {
        flushQueued = false;
        for (const staged of calls.values()) if (!staged.finalSent) flushStaged(staged, round);
      };
      const handle: StagedRound = {
        add(device, sealedShare) {
          let digest: string | null = null;
          for (const staged of calls.values()) {
            if (staged.broken || staged.finalSent) continue;
            try {
              digest ??= toHex(manifestDigest(device.manifest));
              staged.pending.push({
                manifest: Buffer.from(device.manifest),
                manifestSignature: Buffer.from(device.manifestSignature),
                sealedShare: Buffer.from(sealedShare(staged.member.index)),
              });
              staged.digests.add(digest);
            } catch (error) {
              staged.broken = true;
              staged.pending = [];
              staged.call.cancel();
              logger.warn({ taskId: descriptor.taskId, round, custodianIndex: staged.member.index, reason: (error as Error).message }, 'staged request dropped');
            }
          }
          if (!flushQueued) {
            flushQueued = true;
            setImmediate(flushAll);
          }
        },
        cancel() {
          for (const staged of calls.values()) {
            if (staged.finalSent) continue;
            staged.pending = [];
            staged.broken = true;
            staged.call.cancel();
          }
        },
      };
      stagedCalls.set(handle, { round, calls });
      return handle;
    },
    async collect(request) {
      refreshChannels();
      const digests = request.devices.map((d) => manifestDigest(d.manifest));
      const hashD = computeHashD(digests);
      // Staged requests usable for this D: the same round, every device of D staged and no other.
      const stagedRound = request.staged === undefined ? undefined : stagedCalls.get(request.staged);
      const usable = new Map<number, StagedCall>();
      if (stagedRound !== undefined && stagedRound.round === request.round) {
        const dHex = new Set(digests.map(toHex));
        for (const [index, staged] of stagedRound.calls) {
          if (!staged.broken && !staged.finalSent && staged.digests.size === dHex.size && [...staged.digests].every((d) => dHex.has(d))) usable.set(index, staged);
        }
      }
      const stagedAsked: number[] = [];
      const started = clock();
      const deadline = Date.now() + deadlineMs;
      const t = descriptor.threshold;
      const answers: VerifiedAnswer[] = [];
      const failures: CustodianFailure[] = [];
      const notNeeded: number[] = [];
      const calls = new Map<number, grpc.ClientWritableStream<ShareSumRequest>>();
      let done = false;
      const log = logger.child({ taskId: descriptor.taskId, round: request.round });
      // Custodians with a usable staged request first, then by rank.
      const queue = ranked().sort((a, b) => Number(usable.has(b.index)) - Number(usable.has(a.index)));
      const asked = new Set<number>();
      const hedgeMs = Math.min(deadlineMs, hedgeDelayFor(request.devices.length));
      let hedge: ReturnType<typeof setTimeout> | undefined;

      await new Promise<void>((resolveAll) => {
        let pending = 0;
        const finish = (): void => {
          done = true;
          clearTimeout(hedge);
          resolveAll();
        };
        const settleOne = (): void => {
          pending -= 1;
          if (pending === 0 && queue.length === 0) finish();
        };
        /** Asks the next custodian in `queue`, if any is left; false when none is. */
        const askNext = (): boolean => {
          const member = queue.shift();
          if (member === undefined) return false;
          asked.add(member.index);
          pending += 1;
          const askedAt = clock();
          const staged = usable.get(member.index);
          if (staged !== undefined && !staged.broken) stagedAsked.push(member.index);
          const onCall = (call: grpc.ClientWritableStream<ShareSumRequest>): void => void calls.set(member.index, call);
          (staged !== undefined && !staged.broken ? finishStaged(staged, request, hashD, deadline, onCall) : ask(member, request, hashD, deadline, onCall)).then(
            (response) => {
              if (done) {
                settleOne();
                return;
              }
              const wire = {
                statement: new Uint8Array(response.statement),
                signature: new Uint8Array(response.signature),
                shareSum: new Uint8Array(response.shareSum),
              };
              const problem = verifyAnswer(wire, {
                descriptor,
                round: request.round,
                hashD,
                count: request.devices.length,
                custodianIndex: member.index,
              });
              if (problem === null) {
                latencyMs.set(member.index, clock() - askedAt);
                answers.push({ custodianIndex: member.index, ...wire, signed: signedAnswerOf(wire.statement, wire.signature) });
                if (answers.length === t) {
                  lastCollect = { ms: Math.max(1, clock() - started), devices: Math.max(1, request.devices.length) };
                  for (const [index, call] of calls) {
                    if (index !== member.index && !answers.some((a) => a.custodianIndex === index) && !failures.some((f) => f.custodianIndex === index)) {
                      // A custodian whose channel cannot connect is down, not merely slower than t others.
                      const other = members.find((m) => m.index === index);
                      const state = other?.client.getChannel().getConnectivityState(false);
                      if (other !== undefined && state === grpc.connectivityState.TRANSIENT_FAILURE) {
                        latencyMs.set(index, Number.POSITIVE_INFINITY);
                        failures.push({ custodianIndex: index, address: other.address, code: 'unavailable', grpcStatus: grpc.status.UNAVAILABLE, reason: 'cannot connect' });
                      } else {
                        // Slower than the t-th answer: ranked after the custodians that answered.
                        latencyMs.set(index, Math.max(latencyMs.get(index) ?? 0, clock() - started));
                        notNeeded.push(index);
                      }
                      call.cancel();
                    }
                  }
                  // Custodians never asked this round were not needed either.
                  for (const m of members) if (!asked.has(m.index)) notNeeded.push(m.index);
                  finish();
                }
              } else {
                log.warn({ custodianIndex: member.index, reason: problem }, 'custodian answer refused');
                latencyMs.set(member.index, Number.POSITIVE_INFINITY);
                failures.push({ custodianIndex: member.index, address: member.address, code: 'forged_answer', grpcStatus: null, reason: problem });
                askNext();
              }
              settleOne();
            },
            (error: unknown) => {
              if (!done) {
                const failure = describeFailure(member.index, member.address, error);
                log.warn({ custodianIndex: member.index, code: failure.code, grpcStatus: failure.grpcStatus, reason: failure.reason }, 'custodian failed');
                latencyMs.set(member.index, Number.POSITIVE_INFINITY);
                failures.push(failure);
                // One of the asked custodians cannot answer: ask another in its place.
                askNext();
              }
              settleOne();
            },
          );
          return true;
        };
        // A custodian that has not answered within the hedge delay: ask one more, and again after each delay.
        const armHedge = (): void => {
          hedge = setTimeout(() => {
            if (done) return;
            if (askNext()) armHedge();
          }, hedgeMs);
          hedge.unref?.();
        };
        for (let i = 0; i < t && askNext(); i += 1);
        armHedge();
      });
      clearTimeout(hedge);
      // Staged requests this collect did not finish are of no further use.
      if (stagedRound !== undefined) {
        for (const staged of stagedRound.calls.values()) {
          if (!staged.finalSent) {
            staged.broken = true;
            staged.call.cancel();
          }
        }
      }
      const ok = answers.length >= t;
      log.info(
        { answered: answers.map((a) => a.custodianIndex), failed: failures.map((f) => f.custodianIndex), notAsked: members.filter((m) => !asked.has(m.index)).map((m) => m.index), staged: stagedAsked, ok },
        'committee asked',
      );
      return { ok, hashD, deviceCount: request.devices.length, answers, failures, notNeeded, staged: stagedAsked };
    },
    async close() {
      for (const staged of liveStaged) {
        staged.broken = true;
        staged.call.cancel();
      }
      for (const member of members) member.client.close();
    },
    async [Symbol.asyncDispose]() {
      await this.close();
    },
  };
}


function describeFailure(custodianIndex: number, address: string, error: unknown): CustodianFailure {
  const status = typeof error === 'object' && error !== null ? (error as { code?: unknown }).code : undefined;
  if (typeof status === 'number') {
    const details = (error as { details?: unknown }).details;
    const metadata = (error as { metadata?: unknown }).metadata;
    const sent = metadata instanceof grpc.Metadata ? metadata.get(ERROR_CODE_METADATA_KEY)[0] : undefined;
    // A custodian names its refusal in the trailer; anything without one is a transport failure.
    const code: CustodianErrorCode = isCustodianErrorCode(sent) ? sent : status === grpc.status.UNAUTHENTICATED ? 'unauthenticated' : 'unavailable';
    return {
      custodianIndex,
      address,
      code,
      grpcStatus: status,
      reason: typeof details === 'string' && details !== '' ? details : grpc.status[status] ?? String(status),
    };
  }
  const e = CustodianError.from(error);
  return { custodianIndex, address, code: e.code, grpcStatus: null, reason: e.message };
}
