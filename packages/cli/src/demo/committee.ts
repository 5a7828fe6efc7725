/**
 * `veil demo`'s committee (issue 11), on @veil/custodian's `startLocalCommittee`: an enrolment
 * authority, the coordinator's request key and three custodians as local `custodian serve`
 * processes (2-of-3) with a descriptor the authority signed. The demo adds the authority's
 * enrolment service, so device processes get their keys certified by the authority over HTTP,
 * never by the coordinator (which only receives the request key file and the signed descriptor).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { CommitteePins } from '@veil/client-sdk';
import type { TaskDescriptor } from '@veil/crypto';
import { readAuthorityKey, startEnrolmentServer, startLocalCommittee, type EnrolmentServer, type LocalCommittee } from '@veil/custodian';
import { createLogger } from '@veil/server';
import { join } from 'node:path';

/** What the demo's committee hands out. */
export interface DemoCommittee extends AsyncDisposable {
  readonly taskId: string;
  readonly descriptor: TaskDescriptor;
  /** For `engine.createTask` / `POST /v1/tasks`: `committee`. */
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
  /** Smallest |D| (the task's minClients). */
  readonly minDevices: number;
  /** Largest |D| (clients per round). */
  readonly maxDevices: number;
  readonly maxRounds: number;
  /**
   * Distributed DP in the signed descriptor (KLS21 discrete Gaussian through the committee): the
   * devices pin `colludingDevices` as their allowance (pins.dp). Default none.
   */
  readonly dp?: { readonly clipNorm: number; readonly noiseMultiplier: number; readonly colludingDevices: number; readonly delta: number };
}

/**
 * The clip range of a DP demo descriptor: a device's rotated, noised coordinate is at most the
 * clip norm plus its noise share (σ = zC/√n, n = minDevices − colluding honest shares); the
 * coordinator refuses a task whose tail bound (1e-9 per device) exceeds the range, so give ten
 * standard deviations, rounded up to a power of two.
 */
export function demoDpClipMaxAbs(dp: NonNullable<DemoCommitteeOptions['dp']>, minDevices: number): number {
  const sigma = (dp.noiseMultiplier * dp.clipNorm) / Math.sqrt(minDevices - dp.colludingDevices);
  return 2 ** Math.ceil(Math.log2(dp.clipNorm + 10 * sigma));
}

/** Starts the demo's committee and enrolment service; see the module comment. */
export async function startDemoCommittee(options: DemoCommitteeOptions): Promise<DemoCommittee> {
  const taskId = randomUUID();
  const committee: LocalCommittee = await startLocalCommittee({
    dir: options.dir,
    taskId,
    custodians: 3,
    threshold: 2,
    minDevices: options.minDevices,
    maxDevices: Math.max(options.maxDevices, options.minDevices),
    maxRounds: options.maxRounds,
    // FedAvg by device: each update weighs 1 (the count slot and the weight slot then agree).
    encoding: { weightCap: 1, ...(options.dp !== undefined && { clipMaxAbs: demoDpClipMaxAbs(options.dp, options.minDevices) }) },
    ...(options.dp !== undefined && { dp: { mechanism: 'distributed-discrete-gaussian' as const, ...options.dp } }),
  });
  let enrolment: EnrolmentServer | null = null;
  const close = async (): Promise<void> => {
    await enrolment?.close();
    enrolment = null;
    await committee.close();
  };
  try {
    const authority = await readAuthorityKey(committee.paths.authority);
    const enrolmentSecret = randomBytes(24).toString('base64url');
    enrolment = await startEnrolmentServer({
      authority,
      enrolmentSecret,
      taskIds: [taskId],
      statePath: join(options.dir, 'enrolment.jsonl'),
      logger: createLogger({ level: 'silent' }),
    });
    const descriptor = committee.signed.descriptor;
    return {
      taskId,
      descriptor,
      taskInput: { descriptor: Buffer.from(committee.descriptorBytes).toString('base64'), descriptorSignature: committee.signed.signature },
      requestKeyFile: committee.paths.requestKey,
      device: {
        pins: {
          minDevices: options.minDevices,
          maxRounds: options.maxRounds,
          pinnedFingerprints: [...committee.fingerprints],
          authorityKey: descriptor.authorityKey,
          // The app's own allowance: it joins a DP task only if each noise share allows for this many colluders.
          ...(options.dp !== undefined && { dp: { colludingDevices: options.dp.colludingDevices } }),
        },
        enrolmentUrl: enrolment.url,
        enrolmentSecret,
      },
      custodianAddresses: committee.addresses,
      close,
      [Symbol.asyncDispose]: close,
    };
  } catch (error) {
    await close();
    throw error;
  }
}
