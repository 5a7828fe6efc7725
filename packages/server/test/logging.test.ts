/**
 * What the coordinator logs through a full round (debug level, bad requests
 * included): useful structured lines, and never a credential, the enrolment
 * secret, the admin token or model weights/updates.
 */
import { randomBytes } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import { float32ToBytes } from '@veil/protocol/codec';
import {
  TINY_PARAMETERS,
  captureLogger,
  createTinyTask,
  grpcStatusOf,
  joinDevice,
  joinDevices,
  pattern,
  startTestCoordinator,
  toBase64,
  waitForRounds,
} from './helpers.js';

/** The ways a float vector could end up in a log line. */
function renderings(values: Float32Array): string[] {
  const bytes = Buffer.from(float32ToBytes(values));
  return [
    toBase64(values),
    bytes.toString('hex'),
    bytes.subarray(0, 12).toString('base64'),
    // Any single value printed as a number (as JSON prints it), cut to 7 decimals.
    ...Array.from(values)
      .filter((v) => Number.isFinite(v) && Math.abs(v) > 1e-3)
      .map((v) => String(v).slice(0, String(v).indexOf('.') + 8)),
  ];
}

describe('logs (PostgreSQL)', () => {
  test('a full round logs structured events and no secret or weight', async () => {
    const capture = captureLogger('debug');
    const adminToken = randomBytes(24).toString('base64url');
    const enrolmentSecret = randomBytes(24).toString('base64url');
    const wrongToken = randomBytes(24).toString('base64url');
    const wrongSecret = randomBytes(24).toString('base64url');
    const secrets: string[] = [adminToken, enrolmentSecret, wrongToken, wrongSecret];
    const weights: Float32Array[] = [];
    {
      await using env = await startTestCoordinator({ database: 'postgres', logger: capture.logger, adminToken, enrolmentSecret });
      const { coordinator, rest } = env;
      const base = pattern(TINY_PARAMETERS, 41);
      weights.push(base);
      const { id: taskId } = await createTinyTask(rest, { rounds: 1 }, base);
      expect((await rest.request('GET', '/v1/tasks', { token: wrongToken })).status).toBe(403);
      await grpcStatusOf(joinDevice(coordinator, taskId, 'intruder', wrongSecret));

      using devices = await joinDevices(coordinator, taskId, 3);
      secrets.push(...devices.map((d) => d.credential));
      await grpcStatusOf(devices[0]!.transport.waitForAssignment(devices[0]!.credential.slice(0, -2) + 'xx', 10));
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      const rejected = pattern(TINY_PARAMETERS, 42);
      rejected[3] = Number.NaN;
      weights.push(rejected);
      await grpcStatusOf(devices[0]!.submit(assignments[0]!, rejected, 5));
      for (const [k, device] of devices.entries()) {
        const delta = pattern(TINY_PARAMETERS, 43 + k);
        weights.push(delta);
        await device.download();
        await device.transport.reportEvaluation(device.credential, { roundNumber: 1, modelVersion: 0, exampleCount: 5, metrics: { accuracy: 0.25 } });
        await device.submit(assignments[k]!, delta, 5 + k);
      }
      await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
      const model = await rest.bytes(`/v1/tasks/${taskId}/model/weights.bin`);
      weights.push(new Float32Array(model.bytes.buffer.slice(model.bytes.byteOffset, model.bytes.byteOffset + model.bytes.byteLength)));
      await rest.request('GET', `/v1/tasks/${taskId}/model`);
    }

    const text = capture.text();
    const lines = text.trim().split('\n').map((line) => JSON.parse(line) as Record<string, unknown>);
    const messages = lines.map((l) => l['msg']);
    for (const expected of ['coordinator ready', 'task created', 'client joined', 'round collecting', 'update accepted', 'round closed', 'request rejected']) {
      expect(messages).toContain(expected);
    }
    expect(lines.find((l) => l['msg'] === 'round closed')).toMatchObject({ roundNumber: 1, participants: 3, taskId: expect.any(String) });

    for (const secret of secrets) expect(text).not.toContain(secret);
    for (const vector of weights) {
      for (const rendering of renderings(vector)) expect(text).not.toContain(rendering);
    }
  });
});
