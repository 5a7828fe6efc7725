/**
 * The live state of each task's latest round, kept from the round engine's
 * events (selected / downloaded / submitted / dropped, state, deadline), for
 * the dashboard's server-sent events. Only the "downloaded" count lives in
 * memory alone (downloads are not recorded in the database): after a restart,
 * or for a round that opened before this process, it is null until known.
 */
import type { EngineEvents, RoundEngine } from '../rounds/engine.js';
import type { Round, TaskStatus } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';

export interface LiveRound {
  number: number;
  state: Round['state'];
  baseModelVersion: number;
  /** Devices selected for the round (0 while SELECTING). */
  selected: number;
  /** Selected devices that received the round's model; null when not observed by this process. */
  downloaded: number | null;
  submitted: number;
  /** Selected devices without an update when the round closed (0 while it is open). */
  dropped: number;
  minClients: number;
  /** ISO time of the deadline (null while SELECTING). */
  deadlineAt: string | null;
  openedAt: string;
  closedAt: string | null;
  failureReason: string | null;
}

export type LiveEventType = 'snapshot' | keyof EngineEvents;

export interface LiveEvent {
  type: LiveEventType;
  taskId: string;
  round: LiveRound | null;
  /** Set on task-ended (and in snapshots of ended tasks). */
  taskStatus: TaskStatus | null;
  /** Server clock when the event was sent, ms since the epoch (to measure the dashboard's delay). */
  serverTimeMs: number;
}

interface Tracked {
  round: LiveRound;
  downloads: Set<string> | null;
}

export interface LiveRoundsOptions {
  engine: RoundEngine;
  store: FederationStore;
  /** Default `Date.now`. */
  now?: () => number;
}

export interface LiveRounds {
  /** Calls `listener` with every event of `taskId` from now on; returns the unsubscribe function. */
  subscribe(taskId: string, listener: (event: LiveEvent) => void): () => void;
  /** The latest round as known now (from memory, else from the store). */
  snapshot(taskId: string): Promise<LiveEvent>;
  /** Stops listening to the engine. */
  close(): void;
}

function fromRound(round: Round, previous: Tracked | undefined): Tracked {
  const same = previous !== undefined && previous.round.number === round.number;
  const open = round.state === 'SELECTING' || round.state === 'COLLECTING';
  const selected = round.state === 'SELECTING' ? 0 : round.targetCount;
  return {
    downloads: same ? previous.downloads : new Set(),
    round: {
      number: round.number,
      state: round.state,
      baseModelVersion: round.baseModelVersion,
      selected,
      downloaded: same ? (previous.downloads?.size ?? null) : 0,
      submitted: round.receivedCount,
      dropped: round.summary?.dropped ?? (open ? 0 : Math.max(0, selected - round.receivedCount)),
      minClients: round.minClients,
      deadlineAt: round.state === 'SELECTING' ? null : round.deadlineAt.toISOString(),
      openedAt: round.openedAt.toISOString(),
      closedAt: round.closedAt?.toISOString() ?? null,
      failureReason: round.failureReason,
    },
  };
}

export function createLiveRounds(options: LiveRoundsOptions): LiveRounds {
  const { engine, store } = options;
  const now = options.now ?? Date.now;
  const tracked = new Map<string, Tracked>();
  const listeners = new Map<string, Set<(event: LiveEvent) => void>>();
  const ended = new Map<string, TaskStatus>();

  const publish = (type: LiveEventType, taskId: string): void => {
    const set = listeners.get(taskId);
    if (set === undefined) return;
    const event: LiveEvent = { type, taskId, round: tracked.get(taskId)?.round ?? null, taskStatus: ended.get(taskId) ?? null, serverTimeMs: now() };
    for (const listener of set) listener(event);
  };
  const onRound = (type: 'round-opened' | 'round-collecting' | 'round-closed' | 'round-failed') => (e: { taskId: string; round: Round }) => {
    tracked.set(e.taskId, fromRound(e.round, tracked.get(e.taskId)));
    publish(type, e.taskId);
  };
  const handlers = {
    'round-opened': onRound('round-opened'),
    'round-collecting': onRound('round-collecting'),
    'round-closed': onRound('round-closed'),
    'round-failed': onRound('round-failed'),
    'update-accepted': (e: EngineEvents['update-accepted'][0]) => {
      const t = tracked.get(e.taskId);
      if (t === undefined || t.round.number !== e.roundNumber) return;
      t.round.submitted = e.receivedCount;
      publish('update-accepted', e.taskId);
    },
    'model-downloaded': (e: EngineEvents['model-downloaded'][0]) => {
      const t = tracked.get(e.taskId);
      if (t === undefined || t.downloads === null || t.round.state !== 'COLLECTING' || e.modelVersion !== t.round.baseModelVersion) return;
      t.downloads.add(e.clientId);
      t.round.downloaded = t.downloads.size;
      publish('model-downloaded', e.taskId);
    },
    'task-ended': (e: EngineEvents['task-ended'][0]) => {
      ended.set(e.taskId, e.status);
      publish('task-ended', e.taskId);
    },
  };
  for (const [name, handler] of Object.entries(handlers)) engine.on(name as keyof EngineEvents, handler as never);

  return {
    subscribe(taskId, listener) {
      let set = listeners.get(taskId);
      if (set === undefined) listeners.set(taskId, (set = new Set()));
      set.add(listener);
      return () => {
        set.delete(listener);
        if (set.size === 0) listeners.delete(taskId);
      };
    },
    async snapshot(taskId) {
      const task = await store.getTask(taskId);
      const latest = await store.getLatestRound(taskId);
      const known = tracked.get(taskId);
      let round: LiveRound | null = null;
      if (latest !== null) {
        if (known !== undefined && known.round.number === latest.number && known.round.state === latest.state) round = known.round;
        else {
          // Not observed by this process (or behind): counts from the database, downloads unknown.
          const [record] = await store.listRoundHistory(taskId, { offset: latest.number - 1, limit: 1 });
          const t = fromRound(latest, undefined);
          t.downloads = null;
          t.round.downloaded = null;
          if (record !== undefined && record.round.number === latest.number) {
            t.round.selected = record.participation.selected;
            t.round.dropped = record.participation.dropped;
            t.round.submitted = record.participation.submitted;
          }
          tracked.set(taskId, t);
          round = t.round;
        }
      }
      const status = task?.status ?? null;
      const over = status === 'COMPLETED' || status === 'FAILED' || status === 'BUDGET_EXHAUSTED';
      return { type: 'snapshot', taskId, round, taskStatus: over ? status : null, serverTimeMs: now() };
    },
    close() {
      for (const [name, handler] of Object.entries(handlers)) engine.off(name as keyof EngineEvents, handler as never);
      listeners.clear();
    },
  };
}
