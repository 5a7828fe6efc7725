/**
 * A fair upload budget (issue 12, item 3): a selected device that opens
 * SubmitUpdate streams, sends a valid header and then nothing cannot hold the
 * upload budget. Honest uploads go through, the round completes with them, and
 * the idle streams are closed with a clear status at the idle timeout or when
 * their round closes. Real gRPC on loopback, real PostgreSQL.
 */
import * as grpc from '@grpc/grpc-js';
import { describe, expect, test } from 'vitest';
import { createFederationServiceClient, GRPC_CHANNEL_OPTIONS, type SubmitUpdateRequest } from '@veil/protocol';
import { float32ToBytes } from '@veil/protocol/codec';
import {
  TINY_PARAMETERS,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  joinDevices,
  maxAbsDiff,
  pattern,
  sha256Hex,
  startTestCoordinator,
  waitForRounds,
  type Device,
} from './helpers.js';
import type { Coordinator } from '../src/index.js';

interface OpenStream {
  write(message: SubmitUpdateRequest): void;
  /** How the call ended, and when (ms after it was opened). */
  readonly outcome: Promise<{ code: grpc.status; details: string; afterMs: number }>;
  close(): void;
}

/** A SubmitUpdate stream left open: messages are written, the stream is never ended. */
function openUpload(coordinator: Coordinator, credential: string): OpenStream {
  const client = createFederationServiceClient(coordinator.grpcAddress, grpc.credentials.createInsecure(), { ...GRPC_CHANNEL_OPTIONS });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${credential}`);
  const opened = Date.now();
  let call!: grpc.ClientWritableStream<SubmitUpdateRequest>;
  const outcome = new Promise<{ code: grpc.status; details: string; afterMs: number }>((resolve) => {
    call = client.SubmitUpdate(metadata, (error) => {
      resolve({ code: error?.code ?? grpc.status.OK, details: error?.details ?? '', afterMs: Date.now() - opened });
    });
    call.on('error', () => {});
  });
  return {
    write: (message) => call.write(message),
    outcome,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

/** An honest header for `delta` (valid for the device's assignment). */
function headerFor(roundNumber: number, delta: Float32Array, exampleCount: number): SubmitUpdateRequest {
  const payload = float32ToBytes(delta);
  return {
    header: {
      roundNumber,
      modelVersion: 0,
      exampleCount,
      encoding: 'UPDATE_ENCODING_FLOAT32_LE',
      payloadSizeBytes: payload.byteLength,
      payloadSha256: Buffer.from(sha256Hex(payload), 'hex'),
    },
  };
}

const timed = async <T>(p: Promise<T>): Promise<{ value: T; ms: number }> => {
  const started = Date.now();
  const value = await p;
  return { value, ms: Date.now() - started };
};

describe('fair upload budget', () => {
  test('streams that send a header and then nothing neither starve honest uploads nor outlive the idle timeout', async () => {
    const idleMs = 700;
    // The budget holds one update at a time: one stalled upload admitted to it would block every other.
    await using env = await startTestCoordinator({
      uploadBudgetBytes: TINY_PARAMETERS * 4,
      config: { uploadIdleTimeoutMs: idleMs, maxUploadStreamsPerDevice: 2 },
    });
    const { rest, coordinator } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 3, minClients: 2, minAvailableClients: 3, roundDeadlineMs: 6_000 });
    using devices = await joinDevices(coordinator, taskId, 3);
    const [attacker, h1, h2] = devices as unknown as [Device, Device, Device];
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));

    // The attacker: three streams with a valid header and then nothing, one with nothing at all.
    const stalled = [0, 1, 2].map(() => openUpload(coordinator, attacker.credential));
    for (const s of stalled) s.write(headerFor(1, pattern(TINY_PARAMETERS, 3), 5));
    const silent = openUpload(coordinator, attacker.credential);
    try {
      await new Promise((resolve) => setTimeout(resolve, 150));
      const d1 = pattern(TINY_PARAMETERS, 11);
      const d2 = pattern(TINY_PARAMETERS, 12);
      const honest = await Promise.all([timed(h1.submit(assignments[1]!, d1, 4)), timed(h2.submit(assignments[2]!, d2, 6))]);
      expect(honest.map((h) => h.value.acceptedCount).sort()).toEqual([1, 2]);
      // They waited at most for the stalled streams' idle timeouts (two admitted in turn), not for the round.
      for (const h of honest) expect(h.ms).toBeLessThan(4 * idleMs + 1_500);

      const outcomes = await Promise.all(stalled.map((s) => s.outcome));
      const byCode = outcomes.map((o) => grpc.status[o.code]).sort();
      // One stream over the per-device limit is refused at once; the other two are closed when idle.
      expect(byCode).toEqual(['DEADLINE_EXCEEDED', 'DEADLINE_EXCEEDED', 'RESOURCE_EXHAUSTED']);
      const refused = outcomes.find((o) => o.code === grpc.status.RESOURCE_EXHAUSTED)!;
      expect(refused.details).toMatch(/already has 2 uploads open \(at most 2\)/);
      expect(refused.afterMs).toBeLessThan(idleMs);
      for (const o of outcomes.filter((x) => x.code === grpc.status.DEADLINE_EXCEEDED)) {
        expect(o.details).toBe(`no update data for ${idleMs} ms`);
        expect(o.afterMs).toBeGreaterThanOrEqual(idleMs - 50);
        expect(o.afterMs).toBeLessThan(3 * idleMs + 1_000);
      }
      const none = await silent.outcome;
      expect(grpc.status[none.code]).toBe('DEADLINE_EXCEEDED');
      expect(none.details).toBe(`no update header within ${idleMs} ms`);

      // The round completes at its deadline with the honest updates.
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED', 15_000);
      expect(rounds[0]).toMatchObject({ received: 2, summary: { participants: 2, dropped: 1, modelVersion: 1 } });
      const expected = expectedFedAvg(base, [
        { delta: d1, n: 4 },
        { delta: d2, n: 6 },
      ]);
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expected)).toBeLessThan(1e-6);
    } finally {
      for (const s of [...stalled, silent]) s.close();
    }
  });

  test("a stream still receiving when its round closes is cancelled then, with the round's state", async () => {
    // Idle timeout far beyond the test: only the round's close can end the stalled stream.
    await using env = await startTestCoordinator({ config: { uploadIdleTimeoutMs: 600_000 } });
    const { rest, coordinator } = env;
    const { id: taskId } = await createTinyTask(rest, { rounds: 2, clientsPerRound: 2, minClients: 1, minAvailableClients: 2, roundDeadlineMs: 1_500 });
    using devices = await joinDevices(coordinator, taskId, 2);
    const [attacker, honest] = devices as unknown as [Device, Device];
    const [a, h] = await Promise.all([attacker.nextAssignment(), honest.nextAssignment()]);
    const delta = pattern(TINY_PARAMETERS, 4);
    const stalled = openUpload(coordinator, attacker.credential);
    try {
      // A valid header and the first half of the payload, then nothing.
      stalled.write(headerFor(1, delta, 5));
      stalled.write({ chunk: Buffer.from(float32ToBytes(delta)).subarray(0, 28) });
      expect(await honest.submit(h, pattern(TINY_PARAMETERS, 5), 3)).toEqual({ acceptedCount: 1 });
      const deadline = a.deadlineUnixMs;
      const outcome = await stalled.outcome;
      expect(grpc.status[outcome.code]).toBe('FAILED_PRECONDITION');
      expect(outcome.details).toBe('round 1 is CLOSED: this upload did not finish in time');
      // Closed with the round (which closes at its deadline), long before any idle timeout.
      expect(Date.now() - deadline).toBeLessThan(3_000);
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED');
      expect(rounds[0]).toMatchObject({ received: 1, summary: { participants: 1 } });
      // The attacker's slot is free again: it takes part in round 2 normally.
      const next = await attacker.nextAssignment();
      expect(next.roundNumber).toBe(2);
      expect(await attacker.submit(next, delta, 5)).toEqual({ acceptedCount: 1 });
    } finally {
      stalled.close();
    }
  });

  test('a slow-loris upload (a byte now and then, never idle) is cancelled under the minimum rate and frees the budget for a fast device', async () => {
    // The budget holds one update: while the slow-loris holds it, the fast device waits for it.
    const minRate = { bytesPerSecond: 200, windowMs: 400, graceMs: 200 };
    await using env = await startTestCoordinator({
      uploadBudgetBytes: TINY_PARAMETERS * 4,
      // The idle timeout alone would never end it: a byte arrives far more often than that.
      config: { uploadIdleTimeoutMs: 600_000, uploadMinRate: minRate },
    });
    const { rest, coordinator } = env;
    const { id: taskId, base } = await createTinyTask(rest, { rounds: 1, clientsPerRound: 2, minClients: 1, minAvailableClients: 2, roundDeadlineMs: 4_000 });
    using devices = await joinDevices(coordinator, taskId, 2);
    const [loris, fast] = devices as unknown as [Device, Device];
    const [, f] = await Promise.all([loris.nextAssignment(), fast.nextAssignment()]);
    const delta = pattern(TINY_PARAMETERS, 7);
    const payload = Buffer.from(float32ToBytes(delta));
    const stream = openUpload(coordinator, loris.credential);
    // A real slow-loris over loopback: a valid header, then one byte every 100 ms (10 bytes/s).
    stream.write(headerFor(1, delta, 5));
    let sent = 0;
    const drip = setInterval(() => {
      if (sent < payload.byteLength - 1) stream.write({ chunk: payload.subarray(sent, ++sent) });
    }, 100);
    try {
      // Queued behind the slow-loris's budget share until that stream is cancelled.
      const fastDelta = pattern(TINY_PARAMETERS, 8);
      const fastResult = fast.submit(f, fastDelta, 3);
      const outcome = await stream.outcome;
      expect(grpc.status[outcome.code]).toBe('DEADLINE_EXCEEDED');
      expect(outcome.details).toMatch(/^upload too slow: \d+ bytes\/s over 400 ms, at least 200 bytes\/s required$/);
      // It was still sending (never idle for long), and had not sent its whole payload.
      expect(sent).toBeGreaterThan(0);
      expect(sent).toBeLessThan(payload.byteLength - 1);
      expect(await fastResult).toEqual({ acceptedCount: 1 });
      // Nothing of the slow-loris was recorded: the round closes with the fast device's update alone.
      const rounds = await waitForRounds(rest, taskId, (r) => r[0]?.state === 'CLOSED', 10_000);
      expect(rounds[0]).toMatchObject({ received: 1, summary: { participants: 1, modelVersion: 1 } });
      expect(maxAbsDiff(await fetchWeights(rest, taskId), expectedFedAvg(base, [{ delta: fastDelta, n: 3 }]))).toBeLessThan(1e-6);
    } finally {
      clearInterval(drip);
      stream.close();
    }
  });
});
