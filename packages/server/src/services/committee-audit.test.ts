import {
  buildAnswer,
  buildTaskDescriptor,
  descriptorHash,
  encodeDescriptor,
  encodeShareBytes,
  generateCustodianKeys,
  generateEd25519KeyPair,
  hashD,
  signAnswer,
  signDescriptor,
} from '@veil/crypto';
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Round, Task } from '../rounds/model.js';
import { auditCommitteeRounds } from './committee-audit.js';

const custodians = Array.from({ length: 3 }, () => generateCustodianKeys());
const authority = generateEd25519KeyPair();
const descriptor = buildTaskDescriptor({
  taskId: '0b8e6a3c-1f2d-4e5a-9b7c-6d5e4f3a2b1c',
  committee: custodians.map((k, i) => ({ address: `c${i}`, sealingPublicKey: k.sealing.publicKey, signingPublicKey: k.signing.publicKey })),
  threshold: 2,
  minDevices: 3,
  maxRounds: 10,
  authorityPublicKey: authority.publicKey,
});
const dh = descriptorHash(descriptor);
const task = {
  id: descriptor.taskId,
  settings: { committee: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature } },
} as unknown as Task;
const shareSum = encodeShareBytes(new Array(2048).fill(3));
const hD = hashD([1, 2, 3].map((i) => new Uint8Array(createHash('sha256').update(String(i)).digest())));
const answer = (index: number, round: number, count: number, key = custodians[index - 1]!.signing.privateKey) =>
  signAnswer(buildAnswer({ descriptorHash: dh, round, hashD: hD, count, custodianIndex: index, shareSum }), key);
const round = (number: number, deviceCount: number, answers: unknown[]): Round =>
  ({ number, state: 'CLOSED', summary: { modelVersion: number, committee: { deviceCount, custodians: [], answers, failures: [] } } }) as unknown as Round;

describe('committee audit', () => {
  it('reports who approved each round and for how many devices when every signature verifies', () => {
    const audit = auditCommitteeRounds(task, [round(1, 3, [answer(1, 1, 3), answer(3, 1, 3)]), round(2, 3, [answer(2, 2, 3), answer(3, 2, 3)])]);
    expect(audit.valid).toBe(true);
    expect(audit.rounds.map((r) => r.approvedBy)).toEqual([[1, 3], [2, 3]]);
  });

  it('catches an edited |D|, an approval for another round, a forged answer, a duplicate and too few approvals', () => {
    const edited = auditCommitteeRounds(task, [round(1, 4, [answer(1, 1, 3), answer(2, 1, 3)])]);
    expect(edited.valid).toBe(false);
    expect(edited.rounds[0]!.problems.join('; ')).toMatch(/counted 3 devices, the round records 4/);
    const replayed = auditCommitteeRounds(task, [round(2, 3, [answer(1, 1, 3), answer(2, 2, 3)])]);
    expect(replayed.rounds[0]!.problems.join('; ')).toMatch(/approved round 1, not 2/);
    const forged = auditCommitteeRounds(task, [round(1, 3, [answer(1, 1, 3), answer(2, 1, 3, generateEd25519KeyPair().privateKey)])]);
    expect(forged.rounds[0]!.problems.join('; ')).toMatch(/does not verify/);
    const twice = auditCommitteeRounds(task, [round(1, 3, [answer(1, 1, 3), answer(1, 1, 3)])]);
    expect(twice.rounds[0]!.problems.join('; ')).toMatch(/listed twice.*threshold is 2/);
    const none = auditCommitteeRounds(task, [{ number: 1, state: 'CLOSED', summary: { modelVersion: 1 } } as unknown as Round]);
    expect(none.rounds[0]!.problems).toEqual(['no custodian answers recorded for a decrypted aggregate']);
    expect([edited, replayed, forged, twice, none].every((a) => !a.valid)).toBe(true);
  });

  it('audits calibration rounds too: their statistics are a decrypted aggregate without a model version', () => {
    const calibration = { number: 3, state: 'CLOSED', summary: { modelVersion: null, calibration: { stage: 'range' }, committee: { deviceCount: 3, custodians: [], answers: [answer(1, 3, 3), answer(2, 3, 3)], failures: [] } } } as unknown as Round;
    const missing = { number: 4, state: 'CLOSED', summary: { modelVersion: null, calibration: { stage: 'histogram' } } } as unknown as Round;
    const failed = { number: 5, state: 'FAILED', summary: null } as unknown as Round;
    const audit = auditCommitteeRounds(task, [calibration, missing, failed]);
    expect(audit.rounds.map((r) => [r.roundNumber, r.approvedBy, r.valid])).toEqual([[3, [1, 2], true], [4, [], false]]);
  });
});
