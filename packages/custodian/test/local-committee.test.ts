/** startLocalCommittee: custodian processes, a signed descriptor, certification, kill and restart. */
import { describe, expect, it } from 'vitest';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { generateEd25519KeyPair, verifyDescriptorSignature } from '@veil/crypto';
import { startLocalCommittee } from '../src/local-committee.js';
import { createCommitteeClient } from '../src/client.js';
import { committeeRequest, makeDevice, reconstructAtZero, sumSecrets } from './fixture.js';

describe('a local committee', () => {
  it('runs a 2-of-3 committee of processes that survives a custodian being killed and restarted', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'veil-local-committee-'));
    const committee = await startLocalCommittee({ dir, taskId: 'local-task', custodians: 3, minDevices: 3, logLevel: 'warn' });
    try {
      expect(verifyDescriptorSignature(committee.signed)).toBe(true);
      expect(committee.signed.descriptor.committee.map((m) => m.address)).toEqual(committee.addresses);
      expect(committee.signed.descriptor.threshold).toBe(2);
      expect((await stat(join(committee.paths.authority, 'authority-key.json'))).mode & 0o777).toBe(0o600);
      const view = { descriptor: committee.signed.descriptor, descriptorHash: committee.descriptorHash };
      const devicesFor = (round: number) =>
        Array.from({ length: 3 }, (_, j) => {
          const key = generateEd25519KeyPair();
          return makeDevice(view, { round, deviceId: `d-${round}-${j}`, key, certificate: committee.certify(`d-${round}-${j}`, key.publicKey) });
        });
      const client = createCommitteeClient({
        descriptor: committee.descriptorBytes,
        descriptorSignature: committee.descriptorSignature,
        signRequest: committee.signRequest,
        deadlineMs: 15_000,
        logger: pino({ level: 'silent' }),
      });
      try {
        const round1 = devicesFor(1);
        const first = await client.collect(committeeRequest(1, round1));
        expect(first.ok).toBe(true);
        expect(reconstructAtZero(first.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(round1));

        await committee.kill(3);
        const round2 = devicesFor(2);
        const second = await client.collect(committeeRequest(2, round2));
        expect(second.ok).toBe(true);
        expect(second.answers.map((a) => a.custodianIndex).sort()).toEqual([1, 2]);
        // Custodian 3 is reported unavailable, unless both answers arrived before its connection failed.
        if (second.failures.length === 0) expect(second.notNeeded).toEqual([3]);
        else expect(second.failures).toMatchObject([{ custodianIndex: 3, code: 'unavailable' }]);

        // Back on its address; asked round 1 again, every custodian repeats its answer.
        await committee.restart(3);
        const again = await client.collect(committeeRequest(1, round1));
        expect(again.ok).toBe(true);
        for (const answer of again.answers) {
          const before = first.answers.find((a) => a.custodianIndex === answer.custodianIndex);
          if (before !== undefined) expect(Buffer.from(answer.statement).equals(Buffer.from(before.statement))).toBe(true);
        }
        expect(reconstructAtZero(again.answers.map((a) => ({ x: a.custodianIndex, shareSum: a.shareSum })))).toEqual(sumSecrets(round1));
      } finally {
        await client.close();
      }
    } finally {
      await committee.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
