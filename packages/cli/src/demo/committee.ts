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
    encoding: { weightCap: 1 },
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
        pins: { minDevices: options.minDevices, maxRounds: options.maxRounds, pinnedFingerprints: [...committee.fingerprints], authorityKey: descriptor.authorityKey },
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
