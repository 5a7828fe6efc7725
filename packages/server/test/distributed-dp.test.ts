/**
 * Distributed differential privacy through the real coordinator: devices run
 * the distributed discrete Gaussian (Kairouz, Liu & Steinke 2021) of the
 * client SDK and encrypt its residues with BFV (node-seal); the coordinator
 * sums ciphertexts of the padded dimension, accounts each round with the DDG
 * RDP in its hash-chained ledger, and a key holder decodes the noisy mean.
 */
import * as grpc from '@grpc/grpc-js';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateKeyBundle, serializeKeyMaterial, type KeyBundle } from '@veil/crypto';
import { DDG_RDP_ORDERS, computeDistributedDiscreteGaussianEpsilon } from '@veil/privacy';
import { createDistributedDpMiddleware, rotationSeedForVersion } from '../../client-sdk/src/mods/dp.js';
import { createDeviceEncryption, type DeviceEncryption } from '../../client-sdk/src/mods/encrypt.js';
import type { LocalUpdate, RoundContext } from '../../client-sdk/src/middleware.js';
import { TINY_PARAMETERS, createTinyTask, grpcStatusOf, joinDevices, pattern, sha256Hex, startTestCoordinator, waitForRounds, type Device } from './helpers.js';

const publicKeyJson = (bundle: KeyBundle): unknown => JSON.parse(Buffer.from(serializeKeyMaterial(bundle.coordinator)).toString('utf8'));
const delta = 1e-5;
const z = 0.01; // tiny noise, so the decoded mean can be checked value by value
const clipNorm = 1;
const scale = 2 ** 12;

describe('distributed DP (PostgreSQL, BFV)', () => {
  let bundle: KeyBundle;
  beforeAll(async () => {
    bundle = await generateKeyBundle({ taskId: 'distributed-dp' });
  });

  it('runs DDG rounds: padded encrypted sums, the noisy mean of clipped updates for key holders, a verified DDG ledger', async () => {
    await using t = await startTestCoordinator();
    const { id, base } = await createTinyTask(t.rest, {
      rounds: 2,
      minClients: 3,
      minAvailableClients: 3,
      encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(bundle) },
      privacy: { mode: 'distributed', epsilonCap: 1e6, delta, noiseMultiplier: z, clipNorm, samplingRate: 1, scale },
    });
    using devices = await joinDevices(t.coordinator, id, 3);
    const encryption = await createDeviceEncryption(bundle.device);
    try {
      const spec = devices[0]!.task.privacy!;
      expect(spec).toMatchObject({ mode: 'distributed', clipNorm, noiseMultiplier: z, samplingRate: 1 });
      expect(spec.distributed).toMatchObject({ scale, minNoiseClients: 3, modulus: encryption.plainModulus, dimension: 16 });
      expect(spec.distributed!.localStddev).toBeCloseTo((z * clipNorm) / Math.sqrt(3), 12);

      const ddg = createDistributedDpMiddleware({
        clipNorm,
        scale,
        localStddev: spec.distributed!.localStddev,
        modulus: spec.distributed!.modulus,
        beta: spec.distributed!.roundingBeta,
        rotationSeed: (ctx) => rotationSeedForVersion(id, ctx.modelVersion + 1),
      });
      // Updates beyond the clip norm (norms 3.6 to 4.4): the mean must be of the clipped ones.
      const deltas = devices.map((_, k) => pattern(TINY_PARAMETERS, k + 2).map((x) => x * 2));
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      expect(assignments.every((a) => a.maxExampleCount === 1 && a.updateEncoding === 'bfv-v1')).toBe(true);

      // An encrypted update of the unpadded length is refused: the sum is over the rotation's 16 values.
      const unpadded = await encryptWith(encryption, { delta: deltas[0]!, exampleCount: 1, encoding: 'float32-le', notes: {} }, ctxOf(id, assignments[0]!));
      expect(await grpcStatusOf(submit(devices[0]!, assignments[0]!, unpadded))).toMatchObject({
        code: grpc.status.INVALID_ARGUMENT,
        details: expect.stringMatching(/15 values.*16|16.*15/),
      });

      for (const [k, device] of devices.entries()) {
        const ctx = ctxOf(id, assignments[k]!);
        const update = await ddg.middleware({ delta: deltas[k]!, exampleCount: 1, encoding: 'float32-le', notes: {} }, ctx, async (u) => u);
        expect(update.levels!.residues).toHaveLength(16);
        await submit(device, assignments[k]!, await encryptWith(encryption, update, ctx));
      }
      await waitForRounds(t.rest, id, (rounds) => rounds[0]?.state === 'CLOSED');
      const sum = await t.rest.bytes(`/v1/tasks/${id}/model/weights.bin?version=1`);
      expect(sum.headers.get('x-veil-model-encoding')).toBe('bfv-sum-v1');
      const options = { scale, modulus: spec.distributed!.modulus, rotationSeed: rotationSeedForVersion(id, 1), minClients: 3 };
      const decoded = encryption.applyDistributedDpSum(base, new Uint8Array(sum.bytes), options);
      const clipped = deltas.map((d) => {
        const norm = Math.hypot(...d);
        return d.map((x) => (x * clipNorm) / norm);
      });
      // Noise on the mean: stddev z·C/3 per value, plus rounding (at most about 1/scale per value, divided by 3).
      const tolerance = 6 * ((z * clipNorm) / 3) + 2 / scale;
      for (let i = 0; i < TINY_PARAMETERS; i++) {
        const expected = base[i]! + (clipped[0]![i]! + clipped[1]![i]! + clipped[2]![i]!) / 3;
        expect(Math.abs(decoded[i]! - expected)).toBeLessThan(tolerance);
      }
      // A key holder refuses to decode a sum with fewer noise shares than the accounting assumed.
      expect(() => encryption.applyDistributedDpSum(base, new Uint8Array(sum.bytes), { ...options, minClients: 4 })).toThrow(/fewer than the 4/);

      // The ledger accounts the round with the DDG's RDP, from recorded parameters. Round 2 opens and
      // selects right after round 1 closes (the devices are present), in a write of its own: wait for it.
      await waitForRounds(t.rest, id, (rounds) => rounds[1]?.state === 'COLLECTING');
      const audit = { token: t.coordinator.auditToken };
      const ledger = (await t.rest.request('GET', `/v1/tasks/${id}/privacy/ledger`, audit)).body;
      expect(ledger.entries).toHaveLength(2); // round 2 opened and selected at once: its spend is recorded with its selection
      const [first] = ledger.entries;
      expect(first).toMatchObject({
        mechanism: 'ddg-distributed',
        samplingRate: 1,
        noiseMultiplier: z,
        clipNorm,
        participants: 3,
        ddg: { noiseClients: 3, scale, dimension: 16, localStddev: spec.distributed!.localStddev, roundingBeta: spec.distributed!.roundingBeta },
      });
      const expected = computeDistributedDiscreteGaussianEpsilon({
        clipNorm,
        scale,
        localStddev: spec.distributed!.localStddev,
        clients: 3,
        dimension: 16,
        beta: spec.distributed!.roundingBeta,
        samplingRate: 1,
        delta,
        orders: DDG_RDP_ORDERS,
      });
      expect(first.epsilon).toBeCloseTo(expected.epsilon, 6);
      const summary = (await t.rest.request('GET', `/v1/tasks/${id}/privacy`, audit)).body;
      expect(summary).toMatchObject({ mode: 'distributed', mechanism: 'ddg-distributed', accountant: { distributedDiscreteGaussian: { noiseClients: 3, dimension: 16 } } });
      expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toEqual({ ok: true, entries: 2, withinCap: true, firstMismatch: null, headHash: ledger.entries[1].hash });
      // A changed mechanism parameter is caught by the hash chain and named.
      await t.storage.sql(`UPDATE "PrivacyLedgerEntry" SET "ddgLocalStddev" = "ddgLocalStddev" * 10 WHERE "taskId" = $1 AND sequence = 1`, [id]);
      expect((await t.rest.request('GET', `/v1/tasks/${id}/privacy/verify`, audit)).body).toMatchObject({ ok: false, firstMismatch: { sequence: 1 } });
    } finally {
      encryption.dispose();
    }
  });

  it('refuses distributed mode without encryption, and a scale whose sum could wrap around the plain modulus', async () => {
    await using t = await startTestCoordinator();
    const privacy = { mode: 'distributed', epsilonCap: 8, delta, noiseMultiplier: 1, clipNorm: 1, samplingRate: 0.5 };
    const plain = await t.rest.request('POST', '/v1/tasks', { body: await tinyBody({ privacy, encryption: { mode: 'none' } }) });
    expect(plain).toMatchObject({ status: 400, body: { message: expect.stringMatching(/needs encrypted aggregation/) } });
    const wrap = await t.rest.request('POST', '/v1/tasks', {
      body: await tinyBody({ privacy: { ...privacy, scale: 2 ** 24 }, encryption: { mode: 'bfv', coordinatorKey: publicKeyJson(bundle) } }),
    });
    expect(wrap).toMatchObject({ status: 400, body: { message: expect.stringMatching(/wrap around the plain modulus/) } });
    expect((await t.rest.request('GET', '/v1/tasks')).body.tasks ?? []).toHaveLength(0);
  });
});

async function tinyBody(overrides: Record<string, unknown>): Promise<Record<string, unknown>> {
  const { tinyTaskBody } = await import('./helpers.js');
  return tinyTaskBody(pattern(TINY_PARAMETERS, 1), { clientsPerRound: 10, minClients: 2, ...overrides });
}

function ctxOf(taskId: string, a: { roundNumber: number; modelVersion: number; maxExampleCount: number }): RoundContext {
  return { taskId, clientId: 'test', roundNumber: a.roundNumber, modelVersion: a.modelVersion, maxExampleCount: a.maxExampleCount, config: {}, signal: undefined };
}

async function encryptWith(encryption: DeviceEncryption, update: LocalUpdate, ctx: RoundContext): Promise<Uint8Array> {
  return (await encryption.middleware(update, ctx, async (u) => u)).payload!;
}

function submit(device: Device, a: { roundNumber: number; modelVersion: number }, payload: Uint8Array) {
  return device.transport.submitUpdate(
    device.credential,
    { roundNumber: a.roundNumber, modelVersion: a.modelVersion, exampleCount: 1, encoding: 'bfv-v1', sha256: sha256Hex(payload) },
    payload,
  );
}
