/**
 * The SDK's long-poll for the next round, opened when work on a round starts
 * (WaitForAssignmentRequest.after_round_number), with real SDK clients
 * (createClient, TF.js on the cpu backend) over gRPC to a real coordinator and
 * PostgreSQL. The coordinator acknowledges a round's last updates after it has
 * opened the next round; a device that asked for work only then heard of that
 * round a round trip late.
 */
import { describe, expect, it } from 'vitest';
import { createClient, createGrpcTransport, type AssignmentResponse, type RoundReport, type Transport } from '../../client-sdk/src/index.js';
import type { LocalDataset } from '../../client-sdk/src/training/types.js';
import { createTinyTask, pattern, secretOf, startTestCoordinator, waitForRounds } from './helpers.js';

function dataset(count: number, seed: number): LocalDataset {
  const xs = pattern(count * 4, seed);
  const ys = new Float32Array(count * 3);
  for (let i = 0; i < count; i++) ys[i * 3 + (i % 3)] = 1;
  return { xs, ys, count, inputShape: [4], numClasses: 3 };
}

interface Poll {
  afterRoundNumber: number;
  openedAt: number;
  answer: string;
}

/**
 * The real gRPC transport, recording each long-poll (plain or with the model), each separate model
 * download and each upload; `dropOptions` plays a transport (or coordinator) that ignores the
 * long-poll's options.
 */
function recordingTransport(
  address: string,
  dropOptions: boolean,
): { transport: Transport; polls: Poll[]; acks: Map<number, number>; downloads: number[] } {
  const inner = createGrpcTransport({ address });
  const polls: Poll[] = [];
  const acks = new Map<number, number>();
  const downloads: number[] = [];
  let clock = 0;
  const record = async <T>(afterRoundNumber: number | undefined, call: () => Promise<T>, response: (r: T) => AssignmentResponse): Promise<T> => {
    const poll: Poll = { afterRoundNumber: afterRoundNumber ?? 0, openedAt: clock++, answer: 'pending' };
    polls.push(poll);
    try {
      const r = await call();
      const answer = response(r);
      poll.answer = answer.kind === 'assignment' ? `round ${answer.assignment.roundNumber}` : answer.kind;
      return r;
    } catch (error) {
      poll.answer = 'error';
      throw error;
    }
  };
  const transport: Transport = {
    ...inner,
    waitForAssignment: (credential, waitMs, signal, options) =>
      record(options?.afterRoundNumber, () => inner.waitForAssignment(credential, waitMs, signal, dropOptions ? undefined : options), (r) => r),
    waitForAssignmentAndModel: (credential, waitMs, signal, options) =>
      record(
        options?.afterRoundNumber,
        () => inner.waitForAssignmentAndModel!(credential, waitMs, signal, dropOptions ? { ...options, afterRoundNumber: 0 } : options),
        (r) => r.response,
      ),
    async downloadModel(credential, which, signal) {
      const model = await inner.downloadModel(credential, which, signal);
      downloads.push(model.version);
      return model;
    },
    async submitUpdate(credential, header, payload, signal) {
      const r = await inner.submitUpdate(credential, header, payload, signal);
      acks.set(header.roundNumber, clock++);
      return r;
    },
  };
  return { transport, polls, acks, downloads };
}

async function runDevices(dropOptions: boolean) {
  await using t = await startTestCoordinator();
  const rounds = 3;
  const { id } = await createTinyTask(t.rest, { rounds, clientsPerRound: 2, minClients: 2, minAvailableClients: 2 });
  const devices = [0, 1].map(() => recordingTransport(t.coordinator.grpcAddress, dropOptions));
  const reports: RoundReport[][] = [[], []];
  const summaries = await Promise.all(
    devices.map(async ({ transport }, k) => {
      const client = createClient({
        coordinator: t.coordinator.grpcAddress,
        transport,
        taskId: id,
        credentials: { enrolmentSecret: secretOf(t.coordinator) },
        logger: { debug: () => {}, info: () => {}, warn: () => {}, error: () => {} },
        backend: 'cpu',
        pollWaitMs: 5_000,
      });
      try {
        return await client.run({ data: dataset(12, k + 1), onRound: (r) => reports[k]!.push(r) });
      } finally {
        client.close();
      }
    }),
  );
  const history = await waitForRounds(t.rest, id, (rs) => rs.filter((r) => r.state === 'CLOSED').length === rounds);
  return { devices, reports, summaries, history, rounds };
}

describe('long-poll for the next round while the upload is acknowledged', () => {
  it('each device asks for the round after its current one before its upload is acknowledged, and is answered with that round', async () => {
    const { devices, reports, summaries, history, rounds } = await runDevices(false);
    expect(summaries.map((s) => s.taskStatus)).toEqual(['TASK_STATUS_COMPLETED', 'TASK_STATUS_COMPLETED']);
    expect(history.map((r) => r.summary.participants)).toEqual([2, 2, 2]);
    for (const [k, { polls, acks }] of devices.entries()) {
      expect(reports[k]!.map((r) => r.roundNumber)).toEqual([1, 2, 3]);
      for (let n = 1; n <= rounds; n++) {
        const ahead = polls.filter((p) => p.afterRoundNumber === n);
        // One poll after round n, opened before round n's acknowledgement, answered with round n+1 (or the task's end).
        expect(ahead).toHaveLength(1);
        expect(ahead[0]!.openedAt).toBeLessThan(acks.get(n)!);
        expect(ahead[0]!.answer).toBe(n < rounds ? `round ${n + 1}` : 'ended');
      }
      // Only the first poll asked for any round; none came back with a round the device had already worked on.
      expect(polls.filter((p) => p.afterRoundNumber === 0).map((p) => p.answer)).toEqual(['round 1']);
    }
    // Each round's model came with its assignment (WaitForAssignmentAndModel): no separate download.
    expect(devices.map((d) => d.downloads)).toEqual([[], []]);
  }, 180_000);

  it('a transport that drops the option still takes part in each round once: the early answer naming the current round is set aside', async () => {
    const { devices, reports, summaries, history, rounds } = await runDevices(true);
    expect(summaries.map((s) => s.taskStatus)).toEqual(['TASK_STATUS_COMPLETED', 'TASK_STATUS_COMPLETED']);
    expect(history.map((r) => r.summary.participants)).toEqual([2, 2, 2]);
    for (const [k, { polls }] of devices.entries()) {
      expect(reports[k]!.map((r) => r.roundNumber)).toEqual([1, 2, 3]);
      // The coordinator saw a plain poll, opened before the update was in: it answered with the round being worked on.
      for (let n = 1; n <= rounds; n++) expect(polls.filter((p) => p.afterRoundNumber === n).map((p) => p.answer)).toEqual([`round ${n}`]);
    }
  }, 180_000);
});
