/**
 * Committee rounds with the coordinator reaching its custodians over mutual TLS (issue 12 item 1):
 * custodians serve `grpcs://` with certificates from `veil tls dev-ca`'s generator and require
 * the coordinator's client certificate (--client-ca); the coordinator pins the CA
 * (VEIL_COMMITTEE_TLS_CA_FILE) and presents its certificate (VEIL_COMMITTEE_TLS_CERT_FILE /
 * VEIL_COMMITTEE_TLS_KEY_FILE). A coordinator without the client certificate gets no answer: its
 * round FAILS with the reason and nothing is decrypted. Real gRPC on loopback, real PostgreSQL.
 */
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  buildTaskDescriptor,
  custodianFingerprint,
  encodeDescriptor,
  generateEd25519KeyPair,
  issueDeviceCertificate,
  signDescriptor,
  type RawKeyPair,
} from '@veil/crypto';
import { initCustodianDir, initRequestKey, runCustodian, type RunningCustodian } from '@veil/custodian';
import { createCommitteeEncryption } from '../../client-sdk/src/mods/committee.js';
import { createDevCa, type DevCaFiles } from '../../cli/src/tls/dev-ca.js';
import { TINY_PARAMETERS, expectedFedAvg, fetchWeights, joinDevices, maxAbsDiff, pattern, sha256Hex, startTestCoordinator, tinyTaskBody, waitForRounds, type Device } from './helpers.js';

const logger = pino({ level: 'silent' });

let root: string;
let authority: RawKeyPair;
let requestKeyFile: string;
let pki: DevCaFiles;
const custodians: RunningCustodian[] = [];
let publics: { sealingKey: string; signingKey: string }[] = [];
let fingerprints: string[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'veil-committee-tls-'));
  authority = generateEd25519KeyPair();
  const request = await initRequestKey(join(root, 'request'));
  requestKeyFile = request.secretFile;
  pki = await createDevCa({ outDir: join(root, 'pki'), custodianNames: ['custodian-1', 'custodian-2', 'custodian-3'], coordinatorClient: true });
  for (let i = 1; i <= 3; i++) {
    const dir = join(root, `custodian-${i}`);
    publics.push(await initCustodianDir(dir));
    const pair = pki.custodians![i - 1]!;
    custodians.push(
      await runCustodian({
        dir,
        listen: '127.0.0.1:0',
        coordinatorKeyFiles: [request.publicFile],
        authorityKeyFiles: [await writeAuthority()],
        floors: { minDevices: 3 },
        tlsFiles: { certFile: pair.certFile, keyFile: pair.keyFile, caFile: pki.caCertFile },
        logger,
      }),
    );
  }
  fingerprints = publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64')));
}, 120_000);

async function writeAuthority(): Promise<string> {
  const { writeFile } = await import('node:fs/promises');
  const file = join(root, 'authority-public.json');
  await writeFile(file, JSON.stringify({ publicKey: Buffer.from(authority.publicKey).toString('base64') }));
  return file;
}

afterAll(async () => {
  for (const c of custodians) await c.close();
  await rm(root, { recursive: true, force: true });
});

function taskBody(taskId: string, base: Float32Array) {
  const descriptor = buildTaskDescriptor({
    taskId,
    // TLS to every custodian, as the signed descriptor says (the dev certificates also name 127.0.0.1).
    committee: publics.map((p, i) => ({ address: `grpcs://${custodians[i]!.server.address}`, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
    threshold: 2,
    minDevices: 3,
    maxDevices: 50,
    maxRounds: 5,
    encoding: { weightCap: 16 },
    authorityPublicKey: authority.publicKey,
  });
  const committee = { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature };
  return { descriptor, body: tinyTaskBody(base, { start: true, rounds: 1, roundDeadlineMs: 30_000, committee }) };
}

async function committeeUpload(device: Device, roundNumber: number, delta: Float32Array, exampleCount: number): Promise<{ acceptedCount: number }> {
  const deviceKey = generateEd25519KeyPair();
  const certificate = issueDeviceCertificate(authority.privateKey, { taskId: device.task.taskId, deviceId: device.clientId, devicePublicKey: deviceKey.publicKey, notAfterMs: Date.now() + 3_600_000 });
  const enc = createCommitteeEncryption({
    committee: device.task.committee!,
    pins: { minDevices: 3, pinnedFingerprints: fingerprints, authorityKey: Buffer.from(authority.publicKey).toString('base64') },
    deviceId: device.clientId,
    deviceKey,
    certificate,
  });
  const out = await enc.middleware(
    { delta, exampleCount, encoding: 'float32-le', notes: {} },
    { taskId: device.task.taskId, clientId: device.clientId, roundNumber, modelVersion: roundNumber - 1, maxExampleCount: 1000, signal: undefined },
    async (u) => u,
  );
  const payload = out.payload!;
  return device.transport.submitUpdate(device.credential, { roundNumber, modelVersion: roundNumber - 1, exampleCount: out.exampleCount, encoding: 'committee-v1', sha256: sha256Hex(payload) }, payload);
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
    const answered = await Promise.all(custodians.map((_, i) => readCustodianAnswers(join(root, `custodian-${i + 1}`, 'answers.jsonl'))));
    expect(answered.flat().every((a) => a.round === 1)).toBe(true);
    expect(new Set(answered.flat().map((a) => a.taskId)).size).toBe(1);
  }, 180_000);
});
