/** Shared types and helpers of the round-engine benchmark (bench/rounds.ts). */
import { performance } from 'node:perf_hooks';

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
