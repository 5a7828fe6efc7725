/**
 * A device app: trains on the device's own data and never sends it anywhere;
 * only model updates leave, through the SDK. Start it with start.mjs (which
 * checks the Node version first): `node examples/device-app/start.mjs --help`.
 *
 * Production-shaped: the device keeps its credential, its committee signing key
 * and its local differential-privacy spend in files (0600), so a restart neither
 * re-enrols it nor resets its privacy budget; it takes the task's encryption
 * (shared BFV key or committee) and TLS settings from the command line.
 */
import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createClient, type ClientOptions, type LocalDataset } from '@veil/client-sdk';
import { ed25519PublicKey, readDeviceKeyMaterial, secureRandomBytes } from '@veil/crypto';
import { requestDeviceCertificate } from '@veil/custodian';
import { committeePinsFrom } from './pins.js';

const USAGE = `Usage: node examples/device-app/start.mjs --task ID --data FILE [options]

Takes part in a Veil task with the examples in FILE until the task ends (Ctrl-C stops).
  --coordinator ADDR        coordinator gRPC address: host:port or grpcs://host:port (default 127.0.0.1:50051)
  --task ID                 the task to join (required)
  --data FILE               local examples: {"inputShape":[784],"numClasses":10,"xs":[[...],...],"ys":[3,1,...]} (required)
  --secret S                the task's enrolment secret (first run; later runs use the stored credential);
                            or VEIL_ENROLMENT_SECRET=S, which keeps it off the command line (ps);
                            a secret starting with '-' is given as --secret=S
  --credential-file FILE    where the device credential is kept (default .veil-device-credential.json)
  --tls-ca FILE [--tls-cert FILE --tls-key FILE]
                            pin the coordinator's CA; client certificate for mutual TLS
Encryption (what the task was created with):
  --device-key DIR          shared-key tasks: the federation's device key bundle (veil keys generate: DIR/device)
  --committee-pins FILE     committee tasks: JSON {"pinnedFingerprints":[...],"authorityKey":"..."} the app pins
  --enrolment-url URL       committee tasks: the enrolment authority's service (veil authority serve)
  --enrolment-authority-secret S
                            committee tasks: the secret of that service
  --committee-key-file FILE the device's Ed25519 key for committee tasks (default .veil-device-committee-key.json)
Distributed differential privacy (committee tasks whose descriptor sets dp; pins.dp):
  --committee-dp-colluding K
                            the devices this app assumes may collude with the coordinator: joins a DP
                            committee task only if each noise share allows for at least K (env
                            VEIL_COMMITTEE_DP_COLLUDING; or "dp":{"colludingDevices":K} in the pins file).
                            Without it a DP committee task is refused; with it, a task without DP too
  --committee-dp-min-noise-multiplier Z
                            refuse a noise multiplier below Z (env VEIL_COMMITTEE_DP_MIN_NOISE_MULTIPLIER)
  --committee-dp-max-clip-norm C
                            refuse a clip norm above C (env VEIL_COMMITTEE_DP_MAX_CLIP_NORM)
Local differential privacy (tasks in local DP mode):
  --dp-epsilon-cap E        this device's own epsilon cap (default: the task's)
  --dp-delta D              delta of that cap (default: the task's)
  --dp-state FILE           the device's privacy spend, restored at start and written before every
                            release (default .veil-device-dp.json)
  -h, --help                print this help and exit (starts and writes nothing)
`;

interface LocalFile {
  inputShape: number[];
  numClasses: number;
  xs: number[][];
  /** Class indices. */
  ys: number[];
}

function toDataset(file: LocalFile): LocalDataset {
  const width = file.inputShape.reduce((a, b) => a * b, 1);
  const xs = new Float32Array(file.xs.length * width);
  const ys = new Float32Array(file.ys.length * file.numClasses);
  file.xs.forEach((row, i) => {
    if (row.length !== width) throw new Error(`example ${i} has ${row.length} values, expected ${width}`);
    xs.set(row, i * width);
  });
  file.ys.forEach((label, i) => {
    ys[i * file.numClasses + label] = 1;
  });
  return { xs, ys, count: file.ys.length, inputShape: file.inputShape, numClasses: file.numClasses };
}

/** Writes `data` to `path` atomically and durably (temporary file, fsync, rename), mode 0600. */
function writeFileDurably(path: string, data: string): void {
  const temporary = `${path}.tmp`;
  const fd = openSync(temporary, 'w', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
}

function fail(message: string): never {
  process.stderr.write(`veil device app: ${message}\n\n${USAGE}`);
  process.exit(2);
}

const { values } = (() => {
  try {
    return parseArgs({
      options: {
        help: { type: 'boolean', short: 'h' },
        coordinator: { type: 'string', default: '127.0.0.1:50051' },
        task: { type: 'string' },
        secret: { type: 'string' },
        data: { type: 'string' },
        'credential-file': { type: 'string', default: '.veil-device-credential.json' },
        'tls-ca': { type: 'string' },
        'tls-cert': { type: 'string' },
        'tls-key': { type: 'string' },
        'device-key': { type: 'string' },
        'committee-pins': { type: 'string' },
        'enrolment-url': { type: 'string' },
        'enrolment-authority-secret': { type: 'string' },
        'committee-key-file': { type: 'string', default: '.veil-device-committee-key.json' },
        'committee-dp-colluding': { type: 'string' },
        'committee-dp-min-noise-multiplier': { type: 'string' },
        'committee-dp-max-clip-norm': { type: 'string' },
        'dp-epsilon-cap': { type: 'string' },
        'dp-delta': { type: 'string' },
        'dp-state': { type: 'string', default: '.veil-device-dp.json' },
      },
    });
  } catch (error) {
    return fail((error as Error).message);
  }
})();
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
if (!values.task || !values.data) fail('--task and --data are required');
const positive = (value: string | undefined, name: string): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!(Number.isFinite(n) && n > 0)) fail(`--${name} must be a positive number`);
  return n;
};
const epsilonCap = positive(values['dp-epsilon-cap'], 'dp-epsilon-cap');
const delta = positive(values['dp-delta'], 'dp-delta');
if (values['committee-pins'] !== undefined && (values['enrolment-url'] === undefined || values['enrolment-authority-secret'] === undefined)) {
  fail('--committee-pins needs --enrolment-url and --enrolment-authority-secret');
}
const committeeDpFlags = {
  colluding: values['committee-dp-colluding'],
  minNoiseMultiplier: values['committee-dp-min-noise-multiplier'],
  maxClipNorm: values['committee-dp-max-clip-norm'],
};
if (values['committee-pins'] === undefined && Object.values(committeeDpFlags).some((v) => v !== undefined)) fail('--committee-dp-* need --committee-pins');
const committeePins = (() => {
  if (values['committee-pins'] === undefined) return undefined;
  try {
    return committeePinsFrom(readFileSync(values['committee-pins'], 'utf8'), committeeDpFlags, process.env);
  } catch (error) {
    return fail((error as Error).message);
  }
})();
if (values['tls-ca'] === undefined && (values['tls-cert'] !== undefined || values['tls-key'] !== undefined)) fail('--tls-cert and --tls-key need --tls-ca');

const local = toDataset(JSON.parse(readFileSync(values.data, 'utf8')) as LocalFile);
// Keep 10% of the device's examples to evaluate the global models it receives.
const holdOut = Math.max(1, Math.floor(local.count / 10));
const width = local.xs.length / local.count;
const train: LocalDataset = { ...local, count: local.count - holdOut, xs: local.xs.subarray(0, (local.count - holdOut) * width), ys: local.ys.subarray(0, (local.count - holdOut) * local.numClasses) };
const evalData: LocalDataset = { ...local, count: holdOut, xs: local.xs.subarray((local.count - holdOut) * width), ys: local.ys.subarray((local.count - holdOut) * local.numClasses) };

const credentialFile = values['credential-file'];
const stored = existsSync(credentialFile) ? (JSON.parse(readFileSync(credentialFile, 'utf8')) as { clientId: string; credential: string }) : null;
const enrolmentSecret = values.secret ?? process.env['VEIL_ENROLMENT_SECRET'];
if (stored === null && !enrolmentSecret) fail('first run: --secret or VEIL_ENROLMENT_SECRET (the task enrolment secret) is required');

// The device's committee signing key: made once, kept, so the device is not re-enrolled at every start.
const committeeKey = (): { privateKey: Uint8Array; publicKey: Uint8Array } => {
  const file = values['committee-key-file'];
  if (existsSync(file)) {
    const saved = JSON.parse(readFileSync(file, 'utf8')) as { privateKey: string };
    const privateKey = new Uint8Array(Buffer.from(saved.privateKey, 'base64'));
    return { privateKey, publicKey: ed25519PublicKey(privateKey) };
  }
  const privateKey = secureRandomBytes(32);
  writeFileDurably(file, JSON.stringify({ privateKey: Buffer.from(privateKey).toString('base64') }));
  return { privateKey, publicKey: ed25519PublicKey(privateKey) };
};

const dpStateFile = values['dp-state'];
const restore = existsSync(dpStateFile) ? (JSON.parse(readFileSync(dpStateFile, 'utf8')) as NonNullable<NonNullable<ClientOptions['privacy']>['restore']>) : undefined;

const options: ClientOptions = {
  coordinator: values.coordinator,
  taskId: values.task,
  credentials: stored ?? { enrolmentSecret: enrolmentSecret! },
  ...(values['tls-ca'] !== undefined && {
    tls: {
      ca: readFileSync(values['tls-ca']),
      ...(values['tls-cert'] !== undefined && { cert: readFileSync(values['tls-cert']) }),
      ...(values['tls-key'] !== undefined && { key: readFileSync(values['tls-key']) }),
    },
  }),
  ...(values['device-key'] !== undefined && { encryption: { deviceKey: await readDeviceKeyMaterial(values['device-key']) } }),
  ...(committeePins !== undefined && {
    committee: {
      pins: committeePins,
      deviceKey: committeeKey(),
      certify: async ({ taskId, deviceId, devicePublicKey }) =>
        (
          await requestDeviceCertificate({
            url: values['enrolment-url']!,
            enrolmentSecret: values['enrolment-authority-secret']!,
            taskId,
            deviceId,
            devicePublicKey,
          })
        ).certificate,
    },
  }),
  // Used by tasks in local DP mode: the spend is restored, and written durably before each release.
  privacy: {
    ...(epsilonCap !== undefined && { epsilonCap }),
    ...(delta !== undefined && { delta }),
    ...(restore !== undefined && { restore }),
    persist: (state) => writeFileDurably(dpStateFile, JSON.stringify(state)),
  },
};
const client = createClient(options);
const identity = await client.join();
writeFileDurably(credentialFile, JSON.stringify(identity));

const controller = new AbortController();
process.on('SIGINT', () => controller.abort());
try {
  const summary = await client.run({
    data: train,
    evalData,
    signal: controller.signal,
    onRound: (r) => {
      const privacy = client.privacyStatus();
      console.log(
        `round ${r.roundNumber}: trained on ${r.trainedExamples} examples (update weight ${r.exampleCount}), global model accuracy here ${r.evaluation?.accuracy.toFixed(3) ?? 'n/a'}` +
          (privacy === null ? '' : `, epsilon spent ${privacy.spentEpsilon.toFixed(3)} of ${privacy.epsilonCap} (delta ${privacy.delta})`),
      );
    },
  });
  console.log(`task ${summary.taskStatus} after ${summary.rounds} rounds`);
} finally {
  client.close();
}
