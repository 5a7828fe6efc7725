/**
 * Fairness of the upload path (issue 12): no device may hold the upload budget
 * by opening streams and sending nothing. Every SubmitUpdate stream has an idle
 * timeout (no header yet, or no data since admission or since its last chunk);
 * a device may have only so many uploads open at once; and every stream of a
 * round still receiving when the round closes is cancelled with a clear status.
 */
import { VeilError } from '../errors.js';

export interface UploadGuardOptions {
  /** An upload stream that sends nothing (no header, or no chunk once admitted) for this long is closed, ms. Default 60 000. */
  idleTimeoutMs?: number;
  /** Upload streams one device may have open at once (over every round); more are refused with RESOURCE_EXHAUSTED. Default 2. */
  maxStreamsPerDevice?: number;
}

/** Defaults of {@link UploadGuardOptions}. */
export const UPLOAD_GUARD_DEFAULTS = { idleTimeoutMs: 60_000, maxStreamsPerDevice: 2 } as const;

/** One device's upload of one round, registered once its header checked out. */
export interface UploadSlot {
  /** All bytes arrived: the engine decides from now on; a round close no longer cancels it. */
  processing(): void;
  /** The stream ended, however (idempotent). */
  close(): void;
}

export interface UploadGuard {
  readonly idleTimeoutMs: number;
  /**
   * Registers an upload of `clientId` for `taskId`'s round `roundNumber`; `cancel` closes the stream
   * when the round closes first. Throws `resource_exhausted` when the device already has its
   * maximum of uploads open.
   */
  open(upload: { clientId: string; taskId: string; roundNumber: number }, cancel: (error: VeilError) => void): UploadSlot;
  /** Cancels every upload of the round that is still receiving. */
  roundClosed(taskId: string, roundNumber: number, state: string): void;
  /** Uploads open now (all devices). */
  readonly openCount: number;
}

export function createUploadGuard(options: UploadGuardOptions = {}): UploadGuard {
  const idleTimeoutMs = options.idleTimeoutMs ?? UPLOAD_GUARD_DEFAULTS.idleTimeoutMs;
  const maxStreamsPerDevice = options.maxStreamsPerDevice ?? UPLOAD_GUARD_DEFAULTS.maxStreamsPerDevice;
  if (!Number.isSafeInteger(idleTimeoutMs) || idleTimeoutMs < 1) throw new RangeError(`idleTimeoutMs must be a positive integer, got ${idleTimeoutMs}`);
  if (!Number.isSafeInteger(maxStreamsPerDevice) || maxStreamsPerDevice < 1) {
    throw new RangeError(`maxStreamsPerDevice must be a positive integer, got ${maxStreamsPerDevice}`);
  }
  const perDevice = new Map<string, number>();
  /** Receiving uploads by `taskId/roundNumber`. */
  const receiving = new Map<string, Set<(error: VeilError) => void>>();
  let open = 0;
  return {
    idleTimeoutMs,
    get openCount() {
      return open;
    },
    open({ clientId, taskId, roundNumber }, cancel) {
      const count = perDevice.get(clientId) ?? 0;
      if (count >= maxStreamsPerDevice) {
        throw new VeilError('resource_exhausted', `this device already has ${count} uploads open (at most ${maxStreamsPerDevice})`);
      }
      perDevice.set(clientId, count + 1);
      open++;
      const key = `${taskId}/${roundNumber}`;
      let set = receiving.get(key);
      if (set === undefined) receiving.set(key, (set = new Set()));
      set.add(cancel);
      const leaveRound = (): void => {
        const s = receiving.get(key);
        if (s === undefined) return;
        s.delete(cancel);
        if (s.size === 0) receiving.delete(key);
      };
      let closed = false;
      return {
        processing: leaveRound,
        close() {
          if (closed) return;
          closed = true;
          leaveRound();
          open--;
          const left = (perDevice.get(clientId) ?? 1) - 1;
          if (left > 0) perDevice.set(clientId, left);
          else perDevice.delete(clientId);
        },
      };
    },
    roundClosed(taskId, roundNumber, state) {
      const key = `${taskId}/${roundNumber}`;
      const set = receiving.get(key);
      if (set === undefined) return;
      receiving.delete(key);
      const error = new VeilError('failed_precondition', `round ${roundNumber} is ${state}: this upload did not finish in time`);
      for (const cancel of set) cancel(error);
    },
  };
}

/** A restartable one-shot timer: `start` (re)arms it, `stop` disarms it. */
export function createIdleTimer(ms: number, onIdle: () => void): { start(): void; stop(): void } {
  let timer: NodeJS.Timeout | null = null;
  const stop = (): void => {
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  return {
    start() {
      stop();
      timer = setTimeout(() => {
        timer = null;
        onIdle();
      }, ms);
      timer.unref?.();
    },
    stop,
  };
}
