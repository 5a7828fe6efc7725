/**
 * Group commit of accepted updates: uploads that finish while a store write is
 * under way are recorded together by the next write. The counts, the
 * aggregate and the refusals must be exactly those of one write per update.
 */
import { status } from '@grpc/grpc-js';
import { describe, expect, it } from 'vitest';
import {
  TINY_PARAMETERS,
  createTinyTask,
  expectedFedAvg,
  fetchWeights,
  grpcStatusOf,
  joinDevices,
  pattern,
  startTestCoordinator,
  storedUpdateFiles,
  waitForRounds,
} from './helpers.js';

describe('group commit of updates (PostgreSQL)', () => {
  it('records updates that arrive during a write in one write: distinct counts 1..N, one update per device, the exact FedAvg', async () => {
    const N = 16;
    await using t = await startTestCoordinator();
    const { id, base } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: N, minClients: N, minAvailableClients: N });
    // Hold the first store write until every other upload is queued behind it, and count the updates per write.
    const engine = t.coordinator.engine as unknown as {
      store: { recordSubmissions: (roundId: string, list: unknown[]) => Promise<unknown[]> };
      runtimes: Map<string, { pendingRecords: unknown[] }>;
    };
    const original = engine.store.recordSubmissions.bind(engine.store);
    const batches: number[] = [];
    engine.store.recordSubmissions = async (roundId, list) => {
      batches.push(list.length);
      if (batches.length === 1) {
        const until = Date.now() + 20_000;
        while (engine.runtimes.get(id)!.pendingRecords.length < 2 * N - 1 && Date.now() < until) await new Promise((r) => setTimeout(r, 10));
      }
      return original(roundId, list);
    };
    using devices = await joinDevices(t.coordinator, id, N);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    const updates = devices.map((_, k) => ({ delta: pattern(TINY_PARAMETERS, k + 3), n: 1 + (k % 5) }));
    // Each device sends two different updates at once (weights n and 7): exactly one of them is accepted.
    const results = await Promise.allSettled(
      devices.flatMap((d, k) => [d.submit(assignments[k]!, updates[k]!.delta, updates[k]!.n), d.submit(assignments[k]!, pattern(TINY_PARAMETERS, 99 + k), 7)]),
    );
    // The first write carried one update; the second all the others at once, one per device (a device's
    // second update is refused as a duplicate without a write: within the batch, or after its first was folded).
    expect(batches).toEqual([1, N - 1]);
    const accepted = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value.acceptedCount] : []));
    expect(accepted.sort((a, b) => a - b)).toEqual(Array.from({ length: N }, (_, i) => i + 1));
    for (const r of results) if (r.status === 'rejected') expect(r.reason.code).toBe('already_exists');

    const rounds = await waitForRounds(t.rest, id, (rs) => rs[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ received: N, summary: { participants: N } });
    // The model is FedAvg of the update of each device that was accepted (told apart by its weight).
    const stored = await t.storage.sql<{ name: string; exampleCount: number }>(
      `SELECT c.name, p."exampleCount" FROM "Participation" p JOIN "Client" c ON c.id = p."clientId" WHERE p.status = 'SUBMITTED'`,
    );
    expect(stored).toHaveLength(N);
    const byName = new Map(stored.map((s) => [s.name, s.exampleCount]));
    // One recorded update per device, and it is one of the two that device sent (weights n_k <= 5, or 7).
    expect(byName.size).toBe(N);
    for (const [k, d] of devices.entries()) expect([updates[k]!.n, 7]).toContain(byName.get(d.name));
    const winners = devices.map((d, k) =>
      byName.get(d.name) === 7 ? { delta: pattern(TINY_PARAMETERS, 99 + k), n: 7 } : { delta: updates[k]!.delta, n: updates[k]!.n },
    );
    // The refused duplicates were stored before the write refused them: they were erased, the accepted ones kept.
    const storedRecords = (await storedUpdateFiles(t.storage.dataDir)).filter((f) => f.startsWith(`tasks/${id}/`)); // the task's only round
    expect(storedRecords).toHaveLength(N);
    const weights = await fetchWeights(t.rest, id);
    const expected = expectedFedAvg(base, winners);
    for (let i = 0; i < TINY_PARAMETERS; i++) expect(weights[i]).toBeCloseTo(expected[i]!, 5);
  });

  it('a failure while folding answers the submitter, and the round is rebuilt from the store with every recorded update', async () => {
    const N = 3;
    await using t = await startTestCoordinator();
    const { id, base } = await createTinyTask(t.rest, { rounds: 1, clientsPerRound: N, minClients: N, minAvailableClients: N });
    using devices = await joinDevices(t.coordinator, id, N);
    const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
    // The first fold fails once (after the store recorded the update), as an unexpected fault would.
    const engine = t.coordinator.engine as unknown as { runtimes: Map<string, { open: { aggregator: { add: (...a: unknown[]) => void } | null } | null }> };
    const aggregator = engine.runtimes.get(id)!.open!.aggregator!;
    const add = aggregator.add.bind(aggregator);
    let failures = 0;
    aggregator.add = (...a) => {
      if (failures++ === 0) throw new Error('injected fold failure');
      add(...a);
    };
    const updates = devices.map((_, k) => ({ delta: pattern(TINY_PARAMETERS, 40 + k), n: 2 + k }));
    const first = await grpcStatusOf(devices[0]!.submit(assignments[0]!, updates[0]!.delta, updates[0]!.n));
    expect(first.code).toBe(status.INTERNAL);
    // It was recorded, so a retry is a duplicate; the others are accepted after it.
    expect((await grpcStatusOf(devices[0]!.submit(assignments[0]!, updates[0]!.delta, updates[0]!.n))).code).toBe(status.ALREADY_EXISTS);
    for (const k of [1, 2]) expect(await devices[k]!.submit(assignments[k]!, updates[k]!.delta, updates[k]!.n)).toEqual({ acceptedCount: k + 1 });
    const rounds = await waitForRounds(t.rest, id, (rs) => rs[0]?.state === 'CLOSED');
    expect(rounds[0]).toMatchObject({ received: N, summary: { participants: N } });
    // The model holds all three updates: the rebuilt aggregate includes the one whose fold failed.
    const weights = await fetchWeights(t.rest, id);
    const expected = expectedFedAvg(base, updates);
    for (let i = 0; i < TINY_PARAMETERS; i++) expect(weights[i]).toBeCloseTo(expected[i]!, 5);
  });
});
