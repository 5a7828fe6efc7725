/** Shared types and helpers of the round-engine benchmark (bench/rounds.ts). */
import { readdir, readFile } from 'node:fs/promises';
import { constants as perfConstants, performance, PerformanceObserver } from 'node:perf_hooks';

/** Wall-clock ms with sub-ms resolution, comparable across the benchmark's processes. */
export const nowMs = (): number => performance.timeOrigin + performance.now();

export type DeviceBehavior =
  /** join → long-poll → download → submit a fixed delta → repeat until `ended`. */
  | 'normal'
  /** On its first assignment: report it and hold (the parent SIGKILLs the whole worker process). */
  | 'hold'
  /** On its first assignment: download, start the upload, then cut the TCP connection mid-stream and vanish. */
  | 'cut';

export interface DeviceWorkerInit {
  cmd: 'init';
  address: string;
  taskId: string;
  enrolmentSecret: string;
  count: number;
  namePrefix: string;
  behavior: DeviceBehavior;
  parameterCount: number;
  /** Long-poll length of WaitForAssignment, ms. */
  pollMs: number;
  /** Open the next round's long-poll when work on a round starts (afterRoundNumber), as the SDK does; false: poll after the acknowledgement (the SDK before 31ac146), for A/B runs. */
  pollAhead: boolean;
  /** Upper bound of loop iterations per device (polls). */
  maxIterations: number;
  /** Absolute wall-clock ms after which every loop stops. */
  hardStopAt: number;
  /** Concurrent joins per worker. */
  joinConcurrency: number;
  /**
   * Encrypted path: files of precomputed BFV update payloads (weight 1), used in turn
   * (device i in round r submits payload (i + r) mod n). Absent: plaintext float32 updates.
   */
  encryptedPayloadFiles?: string[];
  /**
   * Committee path (issue 11): each device generates an Ed25519 key, has it certified for its
   * client id by the task's enrolment authority (the bench's stand-in for enrolment: the worker
   * reads the authority key the local committee keeps apart from the coordinator), checks the
   * descriptor the coordinator announced against the pins, and builds its uploads with the SDK's
   * committee middleware (fresh secret, c0, sealed shares, signed manifest per device and round).
   */
  committee?: CommitteeDeviceInit;
  /** Writes a V8 CPU profile (.cpuprofile JSON) of the rounds window (from the release to the end) to this file. Default none. */
  roundsCpuProfileFile?: string;
}

export interface CommitteeDeviceInit {
  /** Directory of the enrolment authority's key (@veil/custodian readAuthorityKey). */
  authorityDir: string;
  /** What the app pins (SDK CommitteePins). */
  pins: { minDevices: number; maxRounds: number; pinnedFingerprints: string[]; authorityKey: string };
  /**
   * `before`: every device builds its uploads for rounds 1..rounds after joining and before the
   * rounds start (the round window then measures coordinator, custodians and transport, as the
   * devices of a real federation encrypt in parallel on their own CPUs); `live`: at submit time,
   * inside the round (this machine's two cores then do every device's encryption in sequence).
   */
  encrypt: 'before' | 'live';
  rounds: number;
}

export interface PhaseBytes {
  read: number;
  written: number;
}

export interface DeviceRoundRecord {
  round: number;
  assignedAt: number;
  downloadedAt: number;
  submittedAt: number;
  /** The coordinator's accepted count in the SubmitUpdate response. */
  acceptedCount: number;
  /** Size of the model version downloaded for this round (0: none, the device had it). */
  modelBytes: number;
  /** Size of the update submitted. */
  updateBytes: number;
  /**
   * The worker process's CPU (user + system, ms) during this round's long-poll that brought the
   * assignment, its download and its upload. Per device only with one device per worker process.
   */
  cpuMs: { wait: number; download: number; submit: number };
}

/** Every assignment a device acted on, whatever the outcome. */
export interface DeviceAttempt {
  round: number;
  assignedAt: number;
  downloadedAt: number | null;
  endedAt: number;
  outcome: string;
}

export interface DeviceReport {
  clientId: string;
  behavior: DeviceBehavior;
  rounds: DeviceRoundRecord[];
  attempts: DeviceAttempt[];
  polls: number;
  idlePolls: number;
  errors: string[];
  endedAt: number | null;
  endedReason: string | null;
  /** TCP connections this device's channel opened (1 expected). */
  sockets: number;
  /** Committee path: per upload built, wall and CPU ms of the SDK's committee middleware, and the c0 bytes. */
  committeeBuild?: { wallMs: number[]; cpuMs: number[]; c0Bytes: number; uploadBytes: number; committeeSize: number };
  /** Socket bytes by phase (device side: read = coordinator→device). */
  bytes: { join: PhaseBytes; wait: PhaseBytes; download: PhaseBytes; submit: PhaseBytes; total: PhaseBytes };
}

export interface WorkerDone {
  type: 'done';
  devices: DeviceReport[];
  /** Every TCP socket of the worker process (net.connect hook): cross-check of the per-device counts. */
  processSockets: number;
  processBytes: PhaseBytes;
  peakRss: number;
  /** The worker process's CPU time (user + system), ms, over its whole life (join included). */
  cpuMs: number;
  /** The worker process's CPU time (user + system), ms, from the parent's release ('go') to the end of its device loops: the rounds only. */
  roundsCpuMs: number;
  /** The same window's CPU by thread group (MainThread; V8Worker: GC marking and JIT compilation helpers; ...); null off Linux. */
  roundsCpuByThreadMs: ThreadCpu | null;
  /** The same window's garbage-collection pauses of the main thread. */
  roundsGcPauses: GcPauses;
  /** The same window's minor page faults (first touches of memory pages; each costs CPU in the kernel). Absent from older harnesses. */
  roundsMinorPageFaults?: number;
  /** The client SDK build the devices ran: this tree's packages/client-sdk/dist, or BENCH_SDK_DIST. */
  sdkDist: string;
}

export const median = (xs: readonly number[]): number => quantile(xs, 0.5);

/** Quantile with linear interpolation (type 7). */
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const pos = (s.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return s[lo]! + (s[hi]! - s[lo]!) * (pos - lo);
}

export const round1 = (x: number): number => Math.round(x * 10) / 10;
export const round3 = (x: number): number => Math.round(x * 1000) / 1000;

// ---------------------------------------------------------------- CPU per thread, GC pauses (coordinator and device processes)
/** CPU (user, system; ms) per thread group. */
export type ThreadCpu = Record<string, { user: number; system: number }>;

/** Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on Linux, whatever CONFIG_HZ is). */
const USER_HZ = 100;
/**
 * CPU (user, system; ms, 10 ms resolution per thread) so far of this process's threads grouped by
 * name: MainThread (JavaScript, the event loop), libuv-worker (the thread pool: file writes,
 * fdatasync, DNS), V8Worker (garbage collection and compilation helpers), others. Read from
 * /proc/self/task/<tid>/stat (fields 14, 15); threads that ended are missing, so the groups may sum
 * to less than process.cpuUsage(). Null off Linux.
 */
export async function cpuByThread(): Promise<ThreadCpu | null> {
  try {
    const out: ThreadCpu = {};
    for (const tid of await readdir('/proc/self/task')) {
      const stat = await readFile(`/proc/self/task/${tid}/stat`, 'utf8').catch(() => null);
      if (stat === null) continue;
      const name = stat.slice(stat.indexOf('(') + 1, stat.lastIndexOf(')'));
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const group = (out[name] ??= { user: 0, system: 0 });
      group.user += (Number(fields[11]) * 1000) / USER_HZ;
      group.system += (Number(fields[12]) * 1000) / USER_HZ;
    }
    return out;
  } catch {
    return null;
  }
}

/** `now - before` per thread group (ms). */
export function cpuByThreadSince(before: ThreadCpu | null, now: ThreadCpu | null): ThreadCpu | null {
  if (before === null || now === null) return null;
  return Object.fromEntries(
    Object.entries(now).map(([name, t]) => [name, { user: t.user - (before[name]?.user ?? 0), system: t.system - (before[name]?.system ?? 0) }]),
  );
}

/** Garbage-collection pauses of the main thread (count and total ms, all kinds and major only). */
export interface GcPauses {
  count: number;
  ms: number;
  majorCount: number;
  majorMs: number;
}

/**
 * Counts this process's garbage-collection pauses (perf_hooks `gc` entries) from now on, into the
 * returned object; `reset()` zeroes it (start of a measurement window). Concurrent marking on the
 * V8Worker threads is not a pause: see cpuByThread.
 */
export function observeGcPauses(): { pauses: GcPauses; reset(): void } {
  const pauses: GcPauses = { count: 0, ms: 0, majorCount: 0, majorMs: 0 };
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) {
      pauses.count++;
      pauses.ms += entry.duration;
      if ((entry as { detail?: { kind?: number } }).detail?.kind === perfConstants.NODE_PERFORMANCE_GC_MAJOR) {
        pauses.majorCount++;
        pauses.majorMs += entry.duration;
      }
    }
  }).observe({ entryTypes: ['gc'] });
  return { pauses, reset: () => Object.assign(pauses, { count: 0, ms: 0, majorCount: 0, majorMs: 0 }) };
}
