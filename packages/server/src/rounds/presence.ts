import type { CalibrationRoundConfig } from './calibration.js';
import type { PrivacySettings } from '../privacy/settings.js';
import type { Client, Round, TaskStatus, UpdateEncoding } from './model.js';
import { maxUpdateBytes } from './sizes.js';
import type { EngineContext } from './engine-context.js';
import type { TaskRuntime, TaskRuntimes } from './task-runtime.js';

/** What a device gets when it asks for work. */
export type AssignmentResult =
  | {
      kind: 'assignment';
      round: Round;
      model: { version: number; sha256: string; sizeBytes: number };
      maxUpdateBytes: number;
      maxExampleCount: number;
      updateEncoding: UpdateEncoding;
      privacy: PrivacySettings | null;
      /** A calibration round's plan (the device reports statistics instead of training), or null. */
      calibration: CalibrationRoundConfig | null;
    }
  | { kind: 'idle'; taskStatus: TaskStatus; currentRound: number }
  | { kind: 'ended'; taskStatus: TaskStatus; reason: string; finalModelVersion: number };

/** Options of a long-poll for work. */
export interface WaitOptions {
  /**
   * The client has done its part of rounds up to this number (its update is sent, perhaps not yet
   * acknowledged): only an assignment to a later round answers the poll. Default 0: any round.
   * With it a device keeps a long-poll open while its upload is being acknowledged: the
   * coordinator acknowledges a round's last updates after it has closed that round and opened the
   * next, and a device that asked again only then would hear of the new round one round trip late.
   */
  afterRoundNumber?: number;
}

/**
 * Device presence: long-polls for work, which devices count as available for
 * selection (a poll within `presenceTtlMs`, or an open poll), and the
 * assignment a selected device receives. A poll that could make a selection
 * succeed asks the round loop for one (`select`, run on the task's mutex).
 */
export class Presence {
  constructor(
    private readonly ctx: EngineContext,
    private readonly runtimes: TaskRuntimes,
    /** A client counts as available for selection this long after its last poll, in ms. */
    private readonly presenceTtlMs: number,
    /** Runs a selection (mutex held): the round loop's `maybeSelect`. */
    private readonly select: (rt: TaskRuntime) => Promise<void>,
  ) {}

  /**
   * Long-poll for work: resolves with an assignment as soon as the client is
   * selected, or `idle` after `waitMs`, or `ended` when the task is over.
   */
  async waitForAssignment(client: Client, waitMs: number, signal?: AbortSignal, options: WaitOptions = {}): Promise<AssignmentResult> {
    const afterRoundNumber = options.afterRoundNumber ?? 0;
    const rt = await this.runtimes.load(client.taskId);
    const until = this.ctx.clock.now() + waitMs;
    // An open long-poll makes the client present for as long as it is open.
    rt.presence.set(client.id, this.ctx.clock.now());
    rt.polling.set(client.id, (rt.polling.get(client.id) ?? 0) + 1);
    try {
      this.requestSelection(rt);
      for (;;) {
        const result = this.currentAssignment(rt, client, afterRoundNumber);
        if (result !== null) return result;
        const remaining = until - this.ctx.clock.now();
        if (remaining <= 0 || this.ctx.closed || signal?.aborted) {
          return { kind: 'idle', taskStatus: rt.task.status, currentRound: rt.open?.round.number ?? 0 };
        }
        await new Promise<void>((resolve) => {
          const done = (): void => {
            cancel();
            rt.waiters.delete(done);
            signal?.removeEventListener('abort', done);
            resolve();
          };
          const cancel = this.ctx.timer.schedule(done, remaining);
          rt.waiters.add(done);
          signal?.addEventListener('abort', done);
        });
      }
    } finally {
      const open = (rt.polling.get(client.id) ?? 1) - 1;
      if (open > 0) rt.polling.set(client.id, open);
      else {
        rt.polling.delete(client.id);
        // A cancelled poll means the device went away; otherwise it stays present for the TTL.
        if (signal?.aborted && !this.ctx.closed) rt.presence.delete(client.id);
        else rt.presence.set(client.id, this.ctx.clock.now());
      }
    }
  }

  /**
   * Queues a selection when one could succeed: the round is SELECTING and
   * enough clients are present. At most one selection waits on the mutex.
   */
  requestSelection(rt: TaskRuntime): void {
    if (rt.selectQueued || this.ctx.closed || rt.task.status !== 'RUNNING' || rt.open?.round.state !== 'SELECTING') return;
    if (this.availableClients(rt).length < rt.task.settings.minAvailableClients) return;
    rt.selectQueued = true;
    void rt.mutex
      .run(() => {
        rt.selectQueued = false;
        return this.select(rt);
      })
      .catch((error) => this.ctx.log.error({ err: error, taskId: rt.task.id }, 'selection failed'));
  }

  private currentAssignment(rt: TaskRuntime, client: Client, afterRoundNumber: number): AssignmentResult | null {
    const { task } = rt;
    if (task.status === 'COMPLETED' || task.status === 'FAILED' || task.status === 'BUDGET_EXHAUSTED') {
      return { kind: 'ended', taskStatus: task.status, reason: task.statusReason ?? '', finalModelVersion: task.currentModelVersion };
    }
    const open = rt.open;
    const round = open?.round ?? null;
    const model = this.ctx.models.current(task.id);
    if (
      open !== null &&
      round !== null &&
      round.state === 'COLLECTING' &&
      round.number > afterRoundNumber &&
      open.selected.has(client.id) &&
      !open.folded.has(client.id) &&
      model !== null &&
      round.deadlineAt.getTime() > this.ctx.clock.now()
    ) {
      return {
        kind: 'assignment',
        round,
        model: { version: model.version, sha256: model.sha256, sizeBytes: model.bytes.byteLength },
        maxUpdateBytes: maxUpdateBytes(task),
        maxExampleCount: task.settings.maxExampleCount,
        updateEncoding: task.settings.updateEncoding,
        privacy: task.settings.privacy,
        calibration: round.config.calibration ?? null,
      };
    }
    return null;
  }

  /** Clients present now (polled within the TTL, or polling); forgets the others. */
  availableClients(rt: TaskRuntime): string[] {
    const cutoff = this.ctx.clock.now() - this.presenceTtlMs;
    const out: string[] = [];
    for (const [id, seen] of rt.presence) {
      if (seen >= cutoff || rt.polling.has(id)) out.push(id);
      else rt.presence.delete(id);
    }
    return out;
  }
}
