/**
 * Fairness of the upload path (issue 12): no device may hold the upload budget
 * by opening streams and sending nothing. Every SubmitUpdate stream has an idle
 * timeout (no header yet, or no data since admission or since its last chunk);
 * a device may have only so many uploads open at once; every stream of a
 * round still receiving when the round closes is cancelled with a clear status;
 * and an admitted upload whose data rate stays under a minimum (a slow-loris
 * sending a byte now and then, which the idle timeout alone never catches) is
 * cancelled with DEADLINE_EXCEEDED ({@link createRateMonitor}).
 */
import { VeilError } from '../errors.js';

export interface UploadGuardOptions {
  /** An upload stream that sends nothing (no header, or no chunk once admitted) for this long is closed, ms. Default 60 000. */
  idleTimeoutMs?: number;
  /** Upload streams one device may have open at once (over every round); more are refused with RESOURCE_EXHAUSTED. Default 2. */
  maxStreamsPerDevice?: number;
  /** Minimum upload rate once admitted, bytes/s; 0 turns the check off. Default 1024. */
  minBytesPerSecond?: number;
  /** The rate is measured over consecutive windows of this length, ms. Default 30 000. */
  minRateWindowMs?: number;
  /** No rate check during this long after admission (connection ramp-up), ms. Default 10 000. */
  minRateGraceMs?: number;
}

/** Defaults of {@link UploadGuardOptions}. */
export const UPLOAD_GUARD_DEFAULTS = {
  idleTimeoutMs: 60_000,
  maxStreamsPerDevice: 2,
  minBytesPerSecond: 1024,
  minRateWindowMs: 30_000,
  minRateGraceMs: 10_000,
} as const;

/** One device's upload of one round, registered once its header checked out. */
export interface UploadSlot {
  /** All bytes arrived: the engine decides from now on; a round close no longer cancels it. */
  processing(): void;
  /** The stream ended, however (idempotent). */
  close(): void;
}

export interface UploadGuard {
  readonly idleTimeoutMs: number;
  /** The minimum-rate settings ({@link createRateMonitor}); `minBytesPerSecond` 0: off. */
  readonly minRate: { readonly minBytesPerSecond: number; readonly windowMs: number; readonly graceMs: number };
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
  const minBytesPerSecond = options.minBytesPerSecond ?? UPLOAD_GUARD_DEFAULTS.minBytesPerSecond;
  const windowMs = options.minRateWindowMs ?? UPLOAD_GUARD_DEFAULTS.minRateWindowMs;
  const graceMs = options.minRateGraceMs ?? UPLOAD_GUARD_DEFAULTS.minRateGraceMs;
  if (!Number.isSafeInteger(minBytesPerSecond) || minBytesPerSecond < 0) throw new RangeError(`minBytesPerSecond must be an integer >= 0, got ${minBytesPerSecond}`);
  if (!Number.isSafeInteger(windowMs) || windowMs < 1) throw new RangeError(`minRateWindowMs must be a positive integer, got ${windowMs}`);
  if (!Number.isSafeInteger(graceMs) || graceMs < 0) throw new RangeError(`minRateGraceMs must be an integer >= 0, got ${graceMs}`);
  const perDevice = new Map<string, number>();
  /** Receiving uploads by `taskId/roundNumber`. */
  const receiving = new Map<string, Set<(error: VeilError) => void>>();
  let open = 0;
  return {
    idleTimeoutMs,
    minRate: { minBytesPerSecond, windowMs, graceMs },
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

/**
 * The status of an upload cancelled by {@link createRateMonitor}: DEADLINE_EXCEEDED, not
 * RESOURCE_EXHAUSTED: like the idle timeout, the device did not deliver its data in the time the
 * coordinator allows; nothing of ours ran out, and a retry at a usable rate is welcome
 * (RESOURCE_EXHAUSTED would tell it to back off). One text for both ports.
 */
export function tooSlowError(observedBytesPerSecond: number, settings: { readonly minBytesPerSecond: number; readonly windowMs: number }): VeilError {
  return new VeilError(
    'deadline_exceeded',
    `upload too slow: ${observedBytesPerSecond} bytes/s over ${settings.windowMs} ms, at least ${settings.minBytesPerSecond} bytes/s required`,
  );
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

/**
 * The minimum upload rate of one admitted stream: after `graceMs`, every `windowMs` the bytes that
 * arrived in that window are compared with `minBytesPerSecond * windowMs / 1000`; a window short
 * of it calls `onTooSlow` once (the caller cancels the stream). Bytes are counted only while the
 * coordinator reads the stream (the monitor starts at admission and stops with `stop()`, e.g. once
 * the whole declared payload arrived), so a device held back by our flow control is never blamed.
 * `minBytesPerSecond` 0: never fires.
 */
export function createRateMonitor(
  settings: { readonly minBytesPerSecond: number; readonly windowMs: number; readonly graceMs: number },
  onTooSlow: (observedBytesPerSecond: number) => void,
): { add(bytes: number): void; stop(): void } {
  const { minBytesPerSecond, windowMs, graceMs } = settings;
  let timer: NodeJS.Timeout | null = null;
  let inWindow = 0;
  let stopped = minBytesPerSecond === 0;
  const stop = (): void => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    timer = null;
  };
  const arm = (ms: number, check: boolean): void => {
    timer = setTimeout(() => {
      timer = null;
      if (stopped) return;
      if (check && inWindow * 1000 < minBytesPerSecond * windowMs) {
        const observed = Math.round((inWindow * 1000) / windowMs);
        stop();
        onTooSlow(observed);
        return;
      }
      inWindow = 0;
      arm(windowMs, true);
    }, ms);
    timer.unref?.();
  };
  if (!stopped) arm(graceMs, false);
  return {
    add(bytes) {
      inWindow += bytes;
    },
    stop,
  };
}
