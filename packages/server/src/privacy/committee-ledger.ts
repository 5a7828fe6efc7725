/**
 * Verification of the committee decryption records in a task's privacy ledger (issue 11, item 4).
 * Each record holds the custodians' signed answers for one round's sum over D; this checks every
 * answer against the task's committee as the signed descriptor names it:
 *
 * - the record names this descriptor (its SHA-256);
 * - hash(D) = SHA-256("veil/D/v1" || sorted manifest digests) recomputes from the recorded
 *   digests, and |D| = the number of digests = the recorded participants;
 * - each answer is an Ed25519 signature (RFC 8032) over "veil/answer/v1" || the answer's RFC 8785
 *   canonical bytes by the committee member it names, for this descriptor, this round, this
 *   hash(D) and this |D| (@veil/crypto `verifyAnswer`);
 * - at least t distinct custodians approved, and |D| >= the descriptor's minDevices.
 *
 * Pure: entries and descriptor in, the first problem out. No transport, no store.
 */
import { CryptoError, descriptorHash as hashDescriptor, hashD, verifyAnswer, type SignedCustodianAnswer, type TaskDescriptor } from '@veil/crypto';
import { MECHANISM_DECRYPTION } from './accounting.js';
import type { LedgerEntry } from './ledger.js';

const HEX32 = /^[0-9a-f]{64}$/;
const bytesToHex = (bytes: Uint8Array): string => Buffer.from(bytes).toString('hex');

/**
 * A checker for {@link verifyLedger}'s `checkEntry`: null when an entry passes, else the reason.
 * `descriptor` is the task's committee descriptor, null for a task without one (which then must
 * have no decryption records).
 */
export function committeeEntryChecker(descriptor: TaskDescriptor | null): (entry: LedgerEntry) => string | null {
  const dh = descriptor === null ? null : hashDescriptor(descriptor);
  const dhHex = dh === null ? null : bytesToHex(dh);
  return (entry) => {
    const record = entry.decryption ?? null;
    if (entry.mechanism !== MECHANISM_DECRYPTION) return record === null ? null : 'a spend entry carries a decryption record';
    if (record === null) return 'a committee-decryption entry without its custodian answers';
    if (descriptor === null || dh === null) return 'a committee-decryption entry in a task without a committee descriptor';
    if (record.descriptorHash !== dhHex) return 'the decryption record names another task descriptor';
    const digests = record.manifestDigests;
    if (!Array.isArray(digests) || digests.some((d) => typeof d !== 'string' || !HEX32.test(d))) return 'the manifest digests of D are malformed';
    let recomputed: string;
    try {
      recomputed = bytesToHex(hashD(digests.map((d) => Buffer.from(d, 'hex'))));
    } catch (error) {
      return `D is malformed: ${CryptoError.from(error).message}`;
    }
    if (recomputed !== record.hashD) return 'hash(D) does not match the recorded manifest digests of D';
    if (digests.length !== entry.participants) return `|D| = ${digests.length} manifests, the entry records ${entry.participants} participants`;
    const approvedBy = new Set<number>();
    const answers = Array.isArray(record.answers) ? record.answers : [];
    for (const [i, signed] of answers.entries()) {
      const named = typeof signed?.answer?.custodianIndex === 'number' ? `custodian ${signed.answer.custodianIndex}` : `answer ${i + 1}`;
      try {
        const { custodianIndex } = verifyAnswer(signed as SignedCustodianAnswer, {
          descriptor,
          descriptorHash: dh,
          round: entry.roundNumber,
          hashD: Buffer.from(record.hashD, 'hex'),
          count: entry.participants,
        });
        if (approvedBy.has(custodianIndex)) return `custodian ${custodianIndex}'s answer is listed twice`;
        approvedBy.add(custodianIndex);
      } catch (error) {
        return `${named}'s answer (answer ${i + 1}) does not verify: ${CryptoError.from(error).message}`;
      }
    }
    if (approvedBy.size < descriptor.threshold) return `${approvedBy.size} custodian answers verify, the threshold is ${descriptor.threshold}`;
    if (entry.participants < descriptor.minDevices) return `|D| = ${entry.participants} is below the descriptor's minDevices ${descriptor.minDevices}`;
    return null;
  };
}

/** Which custodians approved a recorded decryption, and for how many devices (no verification: see {@link committeeEntryChecker}). */
export function decryptionApprovals(entry: LedgerEntry): { custodians: number[]; deviceCount: number } | null {
  if (entry.mechanism !== MECHANISM_DECRYPTION || entry.decryption == null) return null;
  return {
    custodians: entry.decryption.answers.map((a) => a.answer.custodianIndex).sort((a, b) => a - b),
    deviceCount: entry.participants,
  };
}
