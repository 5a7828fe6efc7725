import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { EngineEvents, RoundEngine } from '../rounds/engine.js';
import type { Round } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';
import { createLiveRounds, type LiveEvent } from './live-rounds.js';

const TASK = '00000000-0000-4000-8000-0000000000aa';
const round = (over: Partial<Round>): Round => ({
  id: 'r',
  taskId: TASK,
  number: 1,
  state: 'SELECTING',
  failureReason: null,
  baseModelVersion: 0,
  targetCount: 0,
  minClients: 2,
  receivedCount: 0,
  deadlineAt: new Date(60_000),
  config: { epochs: 1, batchSize: 1, learningRate: 0.1 },
  fitConfig: {},
  summary: null,
  openedAt: new Date(0),
  closedAt: null,
  ...over,
});

// The engine's event source: LiveRounds only listens to it (the engine itself is tested elsewhere).
const events = () => new EventEmitter<EngineEvents>() as unknown as RoundEngine;

describe('createLiveRounds', () => {
  it('follows a round through the engine events: selected, downloaded (of the round model only, once per device), submitted, dropped', () => {
    const engine = events();
    const live = createLiveRounds({ engine, store: {} as FederationStore, now: () => 42 });
    const seen: LiveEvent[] = [];
    live.subscribe(TASK, (e) => seen.push(structuredClone(e)));
    const other: LiveEvent[] = [];
    live.subscribe('another-task', (e) => other.push(e));

    engine.emit('round-opened', { taskId: TASK, round: round({}) });
    engine.emit('round-collecting', { taskId: TASK, round: round({ state: 'COLLECTING', targetCount: 3 }) });
    engine.emit('model-downloaded', { taskId: TASK, clientId: 'a', modelVersion: 0 });
    engine.emit('model-downloaded', { taskId: TASK, clientId: 'a', modelVersion: 0 });
    engine.emit('model-downloaded', { taskId: TASK, clientId: 'b', modelVersion: 7 });
    engine.emit('model-downloaded', { taskId: TASK, clientId: 'b', modelVersion: 0 });
    engine.emit('update-accepted', { taskId: TASK, roundNumber: 1, clientId: 'a', receivedCount: 1, targetCount: 3 });
    engine.emit('update-accepted', { taskId: TASK, roundNumber: 9, clientId: 'x', receivedCount: 5, targetCount: 3 });
    engine.emit('round-closed', { taskId: TASK, round: round({ state: 'CLOSED', targetCount: 3, receivedCount: 2, summary: { participants: 2, dropped: 1, examples: 2, uploadBytes: 8, modelVersion: 1, aggregationMs: 1 } }) });
    engine.emit('task-ended', { taskId: TASK, status: 'COMPLETED', reason: 'done' });

    expect(seen.map((e) => [e.type, e.round?.selected, e.round?.downloaded, e.round?.submitted, e.round?.dropped, e.round?.state])).toEqual([
      ['round-opened', 0, 0, 0, 0, 'SELECTING'],
      ['round-collecting', 3, 0, 0, 0, 'COLLECTING'],
      ['model-downloaded', 3, 1, 0, 0, 'COLLECTING'],
      ['model-downloaded', 3, 1, 0, 0, 'COLLECTING'], // the same device again
      ['model-downloaded', 3, 2, 0, 0, 'COLLECTING'],
      ['update-accepted', 3, 2, 1, 0, 'COLLECTING'],
      ['round-closed', 3, 2, 2, 1, 'CLOSED'],
      ['task-ended', 3, 2, 2, 1, 'CLOSED'],
    ]);
    expect(seen.at(-1)).toMatchObject({ taskStatus: 'COMPLETED', serverTimeMs: 42 });
    expect(other).toEqual([]);
    live.close();
    engine.emit('round-opened', { taskId: TASK, round: round({ number: 2 }) });
    expect(seen).toHaveLength(8);
  });

  it('snapshots a round it did not observe from the store, with the download count unknown', async () => {
    const engine = events();
    const latest = round({ number: 4, state: 'COLLECTING', targetCount: 5, receivedCount: 2 });
    const store = {
      getTask: async () => ({ status: 'RUNNING' }),
      getLatestRound: async () => latest,
      listRoundHistory: async (_id: string, page: { offset: number; limit: number }) => {
        expect(page).toEqual({ offset: 3, limit: 1 });
        return [{ round: latest, events: [], participation: { selected: 6, submitted: 2, dropped: 0 }, evaluation: null }];
      },
    } as unknown as FederationStore;
    const live = createLiveRounds({ engine, store });
    const snap = await live.snapshot(TASK);
    expect(snap).toMatchObject({ type: 'snapshot', taskStatus: null, round: { number: 4, state: 'COLLECTING', selected: 6, submitted: 2, downloaded: null } });
    // Downloads seen after the snapshot are not counted from zero: the count stays unknown for this round.
    engine.emit('model-downloaded', { taskId: TASK, clientId: 'a', modelVersion: 0 });
    expect((await live.snapshot(TASK)).round?.downloaded).toBeNull();
  });
});
