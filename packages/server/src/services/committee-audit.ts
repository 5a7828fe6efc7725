/**
 * The committee audit (issue 11): for each closed round of a committee task, which custodians
 * approved the decryption and for how many devices, with every stored answer's Ed25519 signature
 * checked against the task's descriptor (the custodian's key, the descriptor hash) and its round
 * and |D| compared with the round's record. A coordinator that edited a round's |D| or forged an
 * approval is caught here. Loads from the store; no transport.
 */
import { CryptoError, descriptorHash as hashDescriptor, verifyAnswerStatement, type SignedCustodianAnswer, type TaskDescriptor } from '@veil/crypto';
import { VeilError } from '../errors.js';
import type { Round, Task } from '../rounds/model.js';

/** One round's approval as the audit reports it. */
export interface CommitteeRoundAudit {
  roundNumber: number;
  state: string;
  /** |D| as the round recorded it. */
  deviceCount: number | null;
  /** Custodian indices whose signed answers verified. */
  approvedBy: number[];
  /** True when at least t answers verified, each for this round and this |D|. */
  valid: boolean;
  /** Why not, when invalid. */
  problems: string[];
}

/** The audit of a committee task. */
export interface CommitteeAudit {
  taskId: string;
  descriptorHash: string;
  threshold: number;
  committeeSize: number;
  corruptTolerated: number;
  minDevices: number;
  rounds: CommitteeRoundAudit[];
  /** Every closed round valid. */
  valid: boolean;
}

/** Audits the closed rounds of a committee task (pure: task and rounds in). */
export function auditCommitteeRounds(task: Task, rounds: readonly Round[]): CommitteeAudit {
  const settings = task.settings.committee;
  if (settings == null) throw new VeilError('failed_precondition', `task ${task.id} does not use committee aggregation`);
  const descriptor = JSON.parse(Buffer.from(settings.descriptor, 'base64').toString('utf8')) as TaskDescriptor;
  const dh = hashDescriptor(descriptor);
  const audited = rounds
    // Every decryption the committee approved: a new model version, or a calibration round's statistics.
    .filter((r) => r.state === 'CLOSED' && (r.summary?.modelVersion != null || r.summary?.calibration !== undefined))
    .map((round): CommitteeRoundAudit => {
      const record = round.summary?.committee;
      const problems: string[] = [];
      const approvedBy: number[] = [];
      if (record === undefined) {
        return { roundNumber: round.number, state: round.state, deviceCount: null, approvedBy, valid: false, problems: ['no custodian answers recorded for a decrypted aggregate'] };
      }
      for (const answer of record.answers as SignedCustodianAnswer[]) {
        try {
          const statement = verifyAnswerStatement(answer, { descriptor, descriptorHash: dh });
          if (statement.round !== round.number) problems.push(`custodian ${statement.custodianIndex} approved round ${statement.round}, not ${round.number}`);
          else if (statement.count !== record.deviceCount) problems.push(`custodian ${statement.custodianIndex} counted ${statement.count} devices, the round records ${record.deviceCount}`);
          else if (approvedBy.includes(statement.custodianIndex)) problems.push(`custodian ${statement.custodianIndex} listed twice`);
          else approvedBy.push(statement.custodianIndex);
        } catch (error) {
          problems.push(`an answer does not verify: ${CryptoError.from(error).message}`);
        }
      }
      if (approvedBy.length < descriptor.threshold) problems.push(`${approvedBy.length} valid approvals, the threshold is ${descriptor.threshold}`);
      if (record.deviceCount < descriptor.minDevices) problems.push(`|D| = ${record.deviceCount} is below the descriptor's minDevices ${descriptor.minDevices}`);
      return { roundNumber: round.number, state: round.state, deviceCount: record.deviceCount, approvedBy: approvedBy.sort((a, b) => a - b), valid: problems.length === 0, problems };
    });
  return {
    taskId: task.id,
    descriptorHash: Buffer.from(dh).toString('hex'),
    threshold: descriptor.threshold,
    committeeSize: descriptor.committee.length,
    corruptTolerated: descriptor.corruptTolerated,
    minDevices: descriptor.minDevices,
    rounds: audited,
    valid: audited.every((r) => r.valid),
  };
}
