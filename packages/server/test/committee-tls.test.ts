/**
 * Committee rounds with the coordinator reaching its custodians over mutual TLS (issue 12 item 1):
 * custodians serve `grpcs://` with certificates from `veil tls dev-ca`'s generator and require
 * the coordinator's client certificate (--client-ca); the coordinator pins the CA
 * (VEIL_COMMITTEE_TLS_CA_FILE) and presents its certificate (VEIL_COMMITTEE_TLS_CERT_FILE /
 * VEIL_COMMITTEE_TLS_KEY_FILE). A coordinator without the client certificate gets no answer: its
 * round FAILS with the reason and nothing is decrypted. Real gRPC on loopback, real PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runCustodian, type RunningCustodian } from '@veil/custodian';
import { createDevCa, type DevCaFiles } from '../../cli/src/tls/dev-ca.js';
import { committeeDescriptor, committeeUpdate, createCommitteeKeys, type CommitteeKeys } from './committee-fixture.js';
import { TINY_PARAMETERS, expectedFedAvg, fetchWeights, joinDevices, maxAbsDiff, pattern, sha256Hex, startTestCoordinator, tinyTaskBody, waitForRounds, type Device } from './helpers.js';

const logger = pino({ level: 'silent' });

let keys: CommitteeKeys;
let requestKeyFile: string;
let pki: DevCaFiles;
const custodians: RunningCustodian[] = [];

beforeAll(async () => {
  keys = await createCommitteeKeys('veil-committee-tls-', 3);
  requestKeyFile = keys.request.secretFile;
  pki = await createDevCa({ outDir: join(keys.root, 'pki'), custodianNames: ['custodian-1', 'custodian-2', 'custodian-3'], coordinatorClient: true });
  for (const [i, dir] of keys.custodianDirs.entries()) {
    const pair = pki.custodians![i]!;
    custodians.push(
      await runCustodian({
        dir,
        listen: '127.0.0.1:0',
        coordinatorKeyFiles: [keys.request.publicFile],
        authorityKeyFiles: [keys.authorityPublicFile],
        floors: { minDevices: 3 },
        tlsFiles: { certFile: pair.certFile, keyFile: pair.keyFile, caFile: pki.caCertFile },
        logger,
      }),
    );
  }
}, 120_000);

afterAll(async () => {
  for (const c of custodians) await c.close();
  await keys?.[Symbol.asyncDispose]();
});

function taskBody(taskId: string, base: Float32Array) {
  // TLS to every custodian, as the signed descriptor says (the dev certificates also name 127.0.0.1).
  const addresses = custodians.map((c) => `grpcs://${c.server.address}`);
  const { descriptor, body: committee } = committeeDescriptor(keys, taskId, addresses, { encoding: { weightCap: 16 } });
  return { descriptor, body: tinyTaskBody(base, { start: true, rounds: 1, roundDeadlineMs: 30_000, committee }) };
}

async function committeeUpload(device: Device, roundNumber: number, delta: Float32Array, exampleCount: number): Promise<{ acceptedCount: number }> {
  const { payload, weight } = await committeeUpdate(keys, device, roundNumber, delta, exampleCount);
  return device.transport.submitUpdate(device.credential, { roundNumber, modelVersion: roundNumber - 1, exampleCount: weight, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);
}

describe('committee over mutual TLS', () => {
  it('a committee round completes over mutual TLS; without its client certificate the coordinator gets no answer and the round fails', async () => {
    const tlsConfig = { caFile: pki.caCertFile, certFile: pki.coordinatorClientCertFile, keyFile: pki.coordinatorClientKeyFile, reloadIntervalMs: 10_000 };
    {
      await using t = await startTestCoordinator({ config: { committeeRequestKey: requestKeyFile, committeeTls: tlsConfig } });
      const base = pattern(TINY_PARAMETERS, 1);
      const { descriptor, body } = taskBody(randomUUID(), base);
      const created = await t.rest.request('POST', '/v1/tasks', { body });
      expect(created.status, JSON.stringify(created.body)).toBe(201);
      using devices = await joinDevices(t.coordinator, descriptor.taskId, 3);
      await Promise.all(devices.map((d) => d.nextAssignment()));
      const deltas = devices.map((_, k) => pattern(TINY_PARAMETERS, k + 2).map((x) => x * 0.3));
      for (let k = 0; k < 3; k++) expect((await committeeUpload(devices[k]!, 1, deltas[k]!, 2 + k)).acceptedCount).toBe(k + 1);
      const rounds = await waitForRounds(t.rest, descriptor.taskId, (r) => r[0]?.state === 'CLOSED' || r[0]?.state === 'FAILED', 60_000);
      expect(rounds[0].state, JSON.stringify(rounds[0])).toBe('CLOSED');
      expect(rounds[0].summary.committee.custodians).toHaveLength(2);
      const expected = expectedFedAvg(base, deltas.map((delta, k) => ({ delta, n: 2 + k })));
      expect(maxAbsDiff(await fetchWeights(t.rest, descriptor.taskId, 1), expected)).toBeLessThanOrEqual(descriptor.encoding.step / 2 + 1e-6);
    }
    {
      // The same CA pinned, no client certificate: every custodian refuses the handshake.
      await using t = await startTestCoordinator({
        config: { committeeRequestKey: requestKeyFile, committeeTls: { ...tlsConfig, certFile: undefined, keyFile: undefined }, committeeDeadlineMs: 10_000 },
      });
      const { descriptor, body } = taskBody(randomUUID(), pattern(TINY_PARAMETERS, 1));
      expect((await t.rest.request('POST', '/v1/tasks', { body })).status).toBe(201);
      using devices = await joinDevices(t.coordinator, descriptor.taskId, 3);
      await Promise.all(devices.map((d) => d.nextAssignment()));
      for (let k = 0; k < 3; k++) await committeeUpload(devices[k]!, 1, pattern(TINY_PARAMETERS, k + 2).map((x) => x * 0.3), 1);
      const rounds = await waitForRounds(t.rest, descriptor.taskId, (r) => r[0]?.state === 'CLOSED' || r[0]?.state === 'FAILED', 60_000);
      expect(rounds[0].state).toBe('FAILED');
      expect(JSON.stringify(rounds[0])).toMatch(/custodian/i);
      expect(await t.rest.request('GET', `/v1/tasks/${descriptor.taskId}/model/weights.bin?version=1`).then((r) => r.status)).toBe(404);
    }
    // Nothing was answered for the refused round: each custodian's log holds the first task's round only.
    const { readCustodianAnswers } = await import('@veil/custodian');
    const answered = await Promise.all(custodians.map((_, i) => readCustodianAnswers(join(keys.custodianDirs[i]!, 'answers.jsonl'))));
    expect(answered.flat().every((a) => a.round === 1)).toBe(true);
    expect(new Set(answered.flat().map((a) => a.taskId)).size).toBe(1);
  }, 180_000);
});
