/** The enrolment authority's HTTP service on loopback, with its binding log on disk. */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { pino } from 'pino';
import { generateEd25519KeyPair, verifyDeviceCertificate } from '@veil/crypto';
import { initAuthorityDir, readAuthorityKey } from '../src/authority.js';
import { requestDeviceCertificate, startEnrolmentServer } from '../src/enrolment.js';
import { fromBase64, toBase64 } from '../src/bytes.js';
import { createCommitteeFixture } from './fixture.js';

describe('enrolment service', () => {
  it('certifies device keys for its tasks, binds each device id to one key, and keeps the binding across restarts', async () => {
    await using f = await createCommitteeFixture({ n: 2, threshold: 2 });
    const dir = join(f.root, 'authority');
    await initAuthorityDir(dir);
    const authority = await readAuthorityKey(dir);
    const secret = 'enrol-0123456789abcdef';
    const statePath = join(dir, 'enrolments.jsonl');
    const logger = pino({ level: 'silent' });
    const start = () => startEnrolmentServer({ authority, enrolmentSecret: secret, taskIds: ['task-a'], statePath, logger });
    const device = generateEd25519KeyPair();
    const other = generateEd25519KeyPair();
    const post = (url: string, body: unknown, token = secret) =>
      fetch(`${url}/v1/certificates`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

    let server = await start();
    const got = await requestDeviceCertificate({ url: server.url, enrolmentSecret: secret, taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: device.publicKey });
    expect(got.authorityKey).toBe(toBase64(authority.publicKey));
    expect(verifyDeviceCertificate(fromBase64(got.authorityKey, 'k', 32), { taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: device.publicKey }, got.certificate, Date.now())).toBe(true);
    expect(verifyDeviceCertificate(authority.publicKey, { taskId: 'task-a', deviceId: 'dev-2', devicePublicKey: device.publicKey }, got.certificate, Date.now())).toBe(false);

    await expect(
      requestDeviceCertificate({ url: server.url, enrolmentSecret: 'wrong-secret-0123456', taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: device.publicKey }),
    ).rejects.toMatchObject({ code: 'unauthenticated' });
    expect((await post(server.url, { taskId: 'task-b', deviceId: 'dev-1', devicePublicKey: toBase64(device.publicKey) })).status).toBe(403);
    expect((await post(server.url, { taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: toBase64(other.publicKey) })).status).toBe(409);
    expect((await post(server.url, { taskId: 'task-a', deviceId: 'dev-3', devicePublicKey: 'AAAA' })).status).toBe(400);
    expect((await post(server.url, { taskId: 'task-a', deviceId: 'x'.repeat(5000), devicePublicKey: toBase64(other.publicKey) })).status).toBe(413);
    await server.close();

    // After a restart the binding holds: the same key is certified again, another key is refused.
    server = await start();
    try {
      expect((await post(server.url, { taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: toBase64(device.publicKey) })).status).toBe(200);
      expect((await post(server.url, { taskId: 'task-a', deviceId: 'dev-1', devicePublicKey: toBase64(other.publicKey) })).status).toBe(409);
    } finally {
      await server.close();
    }
  });
});
