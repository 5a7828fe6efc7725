/**
 * Encrypted aggregation through the real coordinator: devices encrypt with
 * @veil/crypto (BFV, node-seal), the coordinator sums ciphertexts with public
 * material only, and a key holder decrypts the new global model.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  createHeContext,
  createUpdateEncryptor,
  generateKeyBundle,
  sealRuntimeStats,
  serializeKeyMaterial,
  writeKeyBundle,
  type DeviceKeyMaterial,
  type KeyBundle,
} from '@veil/crypto';
import { decryptGlobalModel } from '../../client-sdk/src/mods/encrypt.js';
import { initTensorflow } from '../../client-sdk/src/training/backend.js';
import { flattenWeights } from '../../client-sdk/src/training/model.js';
import { loadGlobalModel } from '../../client-sdk/src/training/task-model.js';
import { loadConfig, startCoordinator, createLogger, createFedAvg, type StrategyDefinition } from '../src/index.js';
import {
  TINY_PARAMETERS,
  TINY_TOPOLOGY,
  createTestStorage,
  createTinyTask,
  grpcStatusOf,
  joinDevices,
  pattern,
  sha256Hex,
  startTestCoordinator,
  storedUpdateFiles,
  tinyTaskBody,
  toBase64,
  waitForRounds,
  type Device,
} from './helpers.js';

const publicKeyJson = (bundle: KeyBundle): unknown => JSON.parse(Buffer.from(serializeKeyMaterial(bundle.coordinator)).toString('utf8'));

async function encrypt(deviceKey: DeviceKeyMaterial, delta: Float32Array, weight: number): Promise<Uint8Array> {
  const ctx = await createHeContext(deviceKey);
  const encryptor = createUpdateEncryptor(ctx, { deviceKey });
  try {
    return encryptor.encrypt(delta, weight);
  } finally {
    encryptor.dispose();
    ctx.dispose();
  }
}

function submitEncrypted(device: Device, assignment: { roundNumber: number; modelVersion: number }, payload: Uint8Array, weight: number) {
  return device.transport.submitUpdate(
    device.credential,
    { roundNumber: assignment.roundNumber, modelVersion: assignment.modelVersion, exampleCount: weight, encoding: 'bfv-v1', sha256: sha256Hex(payload) },
    payload,
  );
}

/** Deltas within the clip range [-1, 1] (values beyond it would be clipped by design). */
const delta = (seed: number): Float32Array => pattern(TINY_PARAMETERS, seed).map((x) => x * 0.4);

describe('encrypted aggregation (PostgreSQL)', () => {
  let bundle: KeyBundle;
  let other: KeyBundle;
  beforeAll(async () => {
    bundle = await generateKeyBundle({ taskId: 'integration' });
    other = await generateKeyBundle({ taskId: 'someone-else' });
  });

  it('sums ciphertexts into a model only key holders can read, equal to plaintext FedAvg within the quantization step', async () => {
    await using t = await startTestCoordinator();
    const { id, base, task } = await createTinyTask(t.rest, { encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(bundle) } });
    expect(task.encryption).toMatchObject({ keyId: bundle.coordinator.keyId, weightCap: bundle.coordinator.quantization.weightCap });
    expect(JSON.stringify(task)).not.toContain('secretKey');
    using devices = await joinDevices(t.coordinator, id, 3);
    expect(devices[0]!.task.encryption?.keyId).toBe(bundle.coordinator.keyId);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    expect(assignments.every((a) => a.updateEncoding === 'bfv-v1')).toBe(true);
    const weights = [3, 5, 7];
    const deltas = [delta(2), delta(3), delta(4)];
    for (const [k, device] of devices.entries()) {
      await submitEncrypted(device, assignments[k]!, await encrypt(bundle.device, deltas[k]!, weights[k]!), weights[k]!);
    }
    await waitForRounds(t.rest, id, (rounds) => rounds[0]?.state === 'CLOSED');
    // Each update is recorded with the encoding it arrived in.
    expect(await t.storage.sql(`SELECT DISTINCT encoding FROM "Participation" WHERE status = 'SUBMITTED'`)).toEqual([{ encoding: 'bfv-v1' }]);

    const model = await t.rest.request('GET', `/v1/tasks/${id}/model`);
    expect(model.body.veil).toMatchObject({ encrypted: true, version: 1, keyId: bundle.coordinator.keyId });
    expect(model.body.veil.chain.map((c: { encoding: string }) => c.encoding)).toEqual(['float32-le', 'bfv-sum-v1']);
    const sum = await t.rest.bytes(`/v1/tasks/${id}/model/weights.bin?version=1`);
    expect(sum.headers.get('x-veil-model-encoding')).toBe('bfv-sum-v1');

    const decrypted = await decryptGlobalModel({ deviceKey: bundle.device, initial: base, sums: [new Uint8Array(sum.bytes)] });
    const step = bundle.coordinator.quantization.step;
    for (let i = 0; i < TINY_PARAMETERS; i++) {
      const expected = base[i]! + (weights[0]! * deltas[0]![i]! + weights[1]! * deltas[1]![i]! + weights[2]! * deltas[2]![i]!) / 15;
      expect(Math.abs(decrypted[i]! - expected)).toBeLessThanOrEqual(step / 2 + 1e-6);
    }
    // The ciphertext sum is not the plaintext model.
    expect(sum.bytes.byteLength).toBeGreaterThan(TINY_PARAMETERS * 4 * 10);

    // The SDK's loadGlobalModel does the same over REST and returns a TF.js model holding those weights.
    const { tf } = await initTensorflow({ preferred: 'cpu' });
    const source = { coordinatorUrl: t.coordinator.httpUrl, taskId: id, token: t.coordinator.adminToken };
    const loaded = await loadGlobalModel(tf, { ...source, deviceKey: bundle.device });
    try {
      expect(loaded.version).toBe(1);
      expect(loaded.weights).toEqual(decrypted);
      expect(flattenWeights(loaded.model)).toEqual(decrypted);
    } finally {
      loaded.model.dispose();
    }
    // Version 0 is the plaintext initial model; without the device key a later version cannot be opened.
    const initial = await loadGlobalModel(tf, { ...source, version: 0, deviceKey: bundle.device });
    expect(initial.weights).toEqual(base);
    initial.model.dispose();
    await expect(loadGlobalModel(tf, source)).rejects.toMatchObject({ name: 'ClientError', code: 'failed_precondition' });
  });

  it('frees what the payload check loaded when an update is refused at recording (replays)', async () => {
    // 40,000 values: 20 ciphertexts, ~0.65 MB of SEAL memory per loaded update, so 60 leaked ones
    // (~39 MB) would have to grow SEAL's WebAssembly memory, which only ever grows.
    const P = 40_000;
    const base = new Float32Array(P);
    await using t = await startTestCoordinator();
    const { id } = await createTinyTask(
      t.rest,
      {
        encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(bundle) },
        model: { topology: TINY_TOPOLOGY, weightSpecs: [{ name: 'dense/kernel', shape: [200, 200], dtype: 'float32' }], weightsBase64: toBase64(base) },
      },
      base,
    );
    using devices = await joinDevices(t.coordinator, id, 3);
    const [a, b, c] = devices as unknown as [Device, Device, Device];
    const [as, bs] = await Promise.all([a, b, c].map((d) => d.nextAssignment()));
    const good = await encrypt(bundle.device, Float32Array.from({ length: P }, (_, i) => Math.sin(i) * 0.5), 2);
    await submitEncrypted(a, as!, good, 2);
    // Each replay passes the payload check (its ciphertexts loaded into SEAL) and is refused when recorded.
    const replay = async (): Promise<void> => {
      expect(await grpcStatusOf(submitEncrypted(b, bs!, good, 2))).toMatchObject({ code: grpc.status.INVALID_ARGUMENT, details: expect.stringMatching(/replay/) });
    };
    for (let i = 0; i < 5; i++) await replay(); // warm SEAL's memory pool
    const heapBefore = sealRuntimeStats().heapBytes;
    expect(heapBefore).toBeGreaterThan(0);
    for (let i = 0; i < 60; i++) await replay();
    expect(sealRuntimeStats().heapBytes).toBe(heapBefore);
    expect((await storedUpdateFiles(t.storage.dataDir)).length).toBe(1);
  });

  it('rejects plaintext, foreign, corrupted, truncated, mislabelled and replayed updates, stores none, and keeps the round intact', async () => {
    await using t = await startTestCoordinator();
    const { id, base } = await createTinyTask(t.rest, { encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(bundle) } });
    using devices = await joinDevices(t.coordinator, id, 3);
    const [a, b, c] = devices as unknown as [Device, Device, Device];
    const [as, bs, cs] = await Promise.all([a, b, c].map((d) => d.nextAssignment()));
    const good = await encrypt(bundle.device, delta(5), 4);
    const invalid = grpc.status.INVALID_ARGUMENT;

    // A plaintext update to an encrypted task.
    expect((await grpcStatusOf(b.submit(bs!, delta(1), 4))).code).toBe(invalid);
    // Encrypted under another federation's key (other parameters fingerprint and key id).
    const foreign = await encrypt(other.device, delta(6), 4);
    expect(await grpcStatusOf(submitEncrypted(b, bs!, foreign, 4))).toMatchObject({ code: invalid, details: expect.stringMatching(/key|parameter/) });
    // Corrupted ciphertext bytes (digest recomputed, so only the content is wrong).
    const corrupted = Uint8Array.from(good);
    corrupted[corrupted.length - 100]! ^= 0xff;
    corrupted[corrupted.length - 2000]! ^= 0x5a;
    expect((await grpcStatusOf(submitEncrypted(b, bs!, corrupted, 4))).code).toBe(invalid);
    // Truncated payload.
    expect((await grpcStatusOf(submitEncrypted(b, bs!, good.subarray(0, good.length - 64), 4))).code).toBe(invalid);
    // Declared weight differs from the weight inside the payload.
    expect((await grpcStatusOf(submitEncrypted(b, bs!, good, 5))).code).toBe(invalid);
    expect(await storedUpdateFiles(t.storage.dataDir)).toEqual([]);

    // A valid update is accepted; replaying its bytes (same or another device) is refused.
    await submitEncrypted(a, as!, good, 4);
    expect(await grpcStatusOf(submitEncrypted(b, bs!, good, 4))).toMatchObject({ code: invalid, details: expect.stringMatching(/replay/) });
    expect((await storedUpdateFiles(t.storage.dataDir)).length).toBe(1);

    const bDelta = delta(7);
    const cDelta = delta(8);
    await submitEncrypted(b, bs!, await encrypt(bundle.device, bDelta, 2), 2);
    await submitEncrypted(c, cs!, await encrypt(bundle.device, cDelta, 6), 6);
    const rounds = await waitForRounds(t.rest, id, (r) => r[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ received: 3, summary: { participants: 3, dropped: 0 } });
    const sum = await t.rest.bytes(`/v1/tasks/${id}/model/weights.bin?version=1`);
    const decrypted = await decryptGlobalModel({ deviceKey: bundle.device, initial: base, sums: [new Uint8Array(sum.bytes)] });
    const aDelta = delta(5);
    for (let i = 0; i < TINY_PARAMETERS; i++) {
      const expected = base[i]! + (4 * aDelta[i]! + 2 * bDelta[i]! + 6 * cDelta[i]!) / 12;
      expect(Math.abs(decrypted[i]! - expected)).toBeLessThanOrEqual(bundle.coordinator.quantization.step / 2 + 1e-6);
    }
  });

  it('refuses secret key material, impossible headroom, fractional selection and reused keys at task creation', async () => {
    await using t = await startTestCoordinator();
    const secret = JSON.parse(Buffer.from(serializeKeyMaterial(bundle.device)).toString('utf8'));
    const refused = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { encryption: { mode: 'bfv', coordinatorKey: secret } }),
    });
    expect(refused.status).toBe(400);
    expect(refused.body.message).toMatch(/secret/i);

    const tooMany = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { clientsPerRound: 50_000, minAvailableClients: 50_000, encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(other) } }),
    });
    expect(tooMany.status).toBe(400);
    expect(tooMany.body.message).toMatch(/client|weight|headroom/i);

    const fraction = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), {
        clientsPerRound: undefined,
        clientFraction: 0.5,
        minAvailableClients: 3,
        encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(other) },
      }),
    });
    expect(fraction.status).toBe(400);
    expect(fraction.body.message).toMatch(/clientsPerRound/);

    // Encrypted updates are bounded by the devices' quantisation, not by a server-side bound.
    const bounded = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), {
        updateBound: { norm: 'l2', maxNorm: 1, onExceed: 'clip' },
        encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(other) },
      }),
    });
    expect(bounded.status).toBe(400);
    expect(bounded.body.message).toMatch(/updateBound applies to plaintext tasks/);

    const created = await createTinyTask(t.rest, { encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(other) } });
    expect(created.task.settings.updateBound).toBeNull();
    const reused = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(other) } }),
    });
    expect(reused.status).toBe(409);
    expect(reused.body.message).toMatch(/already belongs/);
  });

  it('refuses, at creation and with the reason, a strategy that reads individual updates for an encrypted task', async () => {
    // A registered strategy that needs every update in the clear (as median or Krum do).
    const individual: StrategyDefinition = {
      name: 'individual-test',
      create: (params) => ({ ...createFedAvg(), name: 'individual-test', params: { ...(params as Record<string, number>) }, capabilities: { individualUpdates: true, plaintextAggregate: false } }),
    };
    await using t = await startTestCoordinator({ strategies: [individual] });
    const key = await generateKeyBundle({ taskId: 'strategy-refusal' });
    const refused = await t.rest.request('POST', '/v1/tasks', {
      body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { strategy: { name: 'individual-test' }, encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(key) } }),
    });
    expect(refused.status).toBe(400);
    expect(refused.body.code).toBe('invalid_argument');
    expect(refused.body.message).toMatch(/individual-test reads individual updates, but an encrypted task's coordinator only holds their encrypted sum/);
    // Nothing was stored: the key is still free, and no task was created.
    expect((await t.rest.request('GET', '/v1/tasks')).body.tasks).toHaveLength(0);
    const unknown = await t.rest.request('POST', '/v1/tasks', { body: tinyTaskBody(pattern(TINY_PARAMETERS, 1), { strategy: { name: 'no-such' } }) });
    expect(unknown.status).toBe(400);
    expect(unknown.body.message).toMatch(/unknown strategy "no-such" \(known: bulyan, fedadagrad, fedadam, fedavg, fedavgm, fedmedian, fedprox, fedtrimmedavg, fedyogi, individual-test, krum, multikrum, qfedavg\)/);
    // The same strategy runs a plaintext task, and an encrypted task takes the default (fedavg).
    const plain = await createTinyTask(t.rest, { strategy: { name: 'individual-test' } });
    expect(plain.task.settings.strategy).toEqual({ name: 'individual-test', params: {} });
    const encrypted = await createTinyTask(t.rest, { encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(key) } });
    expect(encrypted.task.settings.strategy).toEqual({ name: 'fedavg', params: {} });
  });

  describe('VEIL_KEYS_DIR', () => {
    let dir: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), 'veil-keys-'));
      await writeKeyBundle(await generateKeyBundle({ taskId: 'keys-dir' }), dir);
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it('the coordinator refuses to start when given secret key material', async () => {
      await using storage = await createTestStorage('postgres');
      const start = (keysDir: string) =>
        startCoordinator({
          config: { ...loadConfig({}), host: '127.0.0.1', grpcPort: 0, httpPort: 0, dataDir: storage.dataDir, blobDir: join(storage.dataDir, 'blobs'), databaseUrl: storage.databaseUrl, adminToken: 'a'.repeat(24), enrolmentSecret: 'b'.repeat(24), logLevel: 'silent', keysDir },
          logger: createLogger({ level: 'silent' }),
        });
      await expect(start(dir)).rejects.toMatchObject({ code: 'secret_key_material' });
      await expect(start(join(dir, 'device'))).rejects.toMatchObject({ code: 'secret_key_material' });
      const coordinator = await start(join(dir, 'coordinator'));
      await coordinator.close();
    });
  });
});
