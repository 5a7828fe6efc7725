#!/usr/bin/env node
import { parseArgs } from 'node:util';
import { AUTHORITY_USAGE, CUSTODIAN_USAGE, CustodianUsageError } from '@veil/custodian';
// Only the demo's defaults (quoted by the usage): each command imports what it runs when it runs.
import { DEMO_DEFAULTS, DEMO_DP_COLLUDING } from '../demo/defaults.js';
import type { DemoOptions } from '../demo/run-demo.js';

const USAGE = `Usage: veil <command> [options]

Commands:
  server                 Start a coordinator (configured by environment variables; see README)
  migrate                Apply pending database migrations and exit
  keys generate --out DIR [--label NAME] [--preset P] [--weight-cap N] [--clip X] [--step S]
                         new federation key bundle: DIR/device (secret, for device apps)
                         and DIR/coordinator (public, for VEIL_KEYS_DIR or task creation)
  tls dev-ca --out DIR [--name HOST]... [--client NAME] [--custodian NAME]... [--coordinator-client] [--days N]
                         development CA (DIR/ca.crt, ca.key) and a server certificate for localhost,
                         127.0.0.1, ::1 and each --name (DIR/server.crt, server.key: VEIL_TLS_CERT_FILE /
                         VEIL_TLS_KEY_FILE); --client NAME adds DIR/client.crt, client.key for mutual TLS;
                         --custodian NAME adds DIR/NAME.crt, NAME.key (a custodian's server pair, for
                         grpcs://NAME:PORT); --coordinator-client adds DIR/coordinator-client.crt, .key
                         (VEIL_COMMITTEE_TLS_CERT_FILE / VEIL_COMMITTEE_TLS_KEY_FILE towards custodians)
${CUSTODIAN_USAGE}${AUTHORITY_USAGE}  privacy epsilon --sampling-rate Q --noise-multiplier Z --rounds T --delta D [--json]
                         epsilon of T rounds of the Poisson-subsampled Gaussian mechanism (RDP accountant)
  privacy calibrate --target-epsilon E --delta D --sampling-rate Q --rounds T [--json]
                         smallest noise multiplier that meets the target
  export --task ID --format onnx --quantize none|float16|int8 --out FILE
         (--coordinator-http URL | --data-dir DIR) [--device-key DIR] [--version N] [--calibration FILE]
         [--force-static]
                         write a task's global model as ONNX (float32, float16 weights, or int8: static with
                         the activation ranges in --calibration FILE, else those of the task's own calibration
                         rounds (task setting calibration), else dynamic). When the DP noise swamped the
                         calibration statistics (their noiseSwamped points) int8 falls back to dynamic and says
                         so; --force-static writes static with those ranges anyway. --coordinator-http: a running
                         coordinator (VEIL_ADMIN_TOKEN from the environment); --data-dir: a stopped one's data
                         directory (e.g. veil demo --data-dir DIR), opened for the export. Encrypted tasks need a
                         key holder's --device-key DIR (veil demo: DIR/keys/device)
  calibration --task ID --out FILE (--coordinator-http URL | --data-dir DIR) [--version N] [--device-key DIR]
                         write the task's federated calibration statistics (activation ranges and aggregated
                         histograms of its calibration rounds) to FILE, which export --calibration FILE accepts;
                         a shared-key task's statistics are encrypted: --device-key DIR opens them
  demo [options]         Start a coordinator and simulated devices training MNIST with FedAvg
      --clients N          devices, each its own process (default ${DEMO_DEFAULTS.clients})
      --rounds N           federated rounds (default ${DEMO_DEFAULTS.rounds})
      --partition P        iid | dirichlet (default ${DEMO_DEFAULTS.partition})
      --alpha A            Dirichlet concentration (default ${DEMO_DEFAULTS.alpha})
      --epochs N           local epochs per round (default ${DEMO_DEFAULTS.epochs})
      --batch-size N       local batch size (default ${DEMO_DEFAULTS.batchSize})
      --learning-rate X    local SGD learning rate (default ${DEMO_DEFAULTS.learningRate})
      --seed N             model and split seed (default ${DEMO_DEFAULTS.seed})
      --deadline-ms N      round deadline (default ${DEMO_DEFAULTS.roundDeadlineMs})
      --data-dir DIR       keep the embedded database and logs here (default: a temporary directory)
      --plaintext          send plaintext updates (debugging; default: committee aggregation)
      --shared-key         encrypt under one BFV key every device holds (weaker: any device app can
                           decrypt any stored update) instead of the default committee mode, where
                           3 local custodian processes (2-of-3) and an enrolment authority are started
                           and no party holds a key that opens one device's update
      --dp                 differential privacy with an enforced budget; prints epsilon after each round.
                           Committee mode: distributed DP through the committee (discrete Gaussian fixed by
                           the signed descriptor, devices pin the colluder allowance); epsilon for observers
                           and against the coordinator (calibration rounds too). --shared-key/--plaintext: local DP
                           (each device adds the full noise). --epsilon-cap E (8), --noise-multiplier Z (0.7), --clip-norm C (1),
                           --dp-colluding K (committee: devices assumed to collude with the coordinator, 1),
                           delta 1e-5
      --calibrate          after the last round, 2 calibration rounds: devices report activation statistics
                           (aggregated like updates) and export --quantize int8 uses the ranges; with
                           --shared-key they stay encrypted: export --device-key DIR/keys/device opens them
      --json               print only a JSON summary on stdout
      --keep-running       keep the coordinator (REST API, dashboard) up after the last round, until Ctrl-C
      --http-port N        REST and dashboard port (default: any free port; the URL is printed)
      --coordinator-grpc HOST:PORT --coordinator-http URL [--device-key DIR]
                           run the demo against an already running coordinator (e.g. docker compose);
                           VEIL_ADMIN_TOKEN and VEIL_ENROLMENT_SECRET from the environment; --device-key is
                           the device/ key bundle when the coordinator encrypts with VEIL_KEYS_DIR
      --tls-ca FILE [--tls-cert FILE --tls-key FILE]
                           a TLS coordinator (grpcs://HOST:PORT, https://...): pin this CA; client
                           certificate for mutual TLS
`;

class UsageError extends Error {}

function usage(message: string): never {
  throw new UsageError(message);
}

function int(value: string | undefined, name: string, fallback: number, min = 1): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isInteger(n) || n < min) throw new UsageError(`--${name} must be an integer >= ${min}`);
  return n;
}

function num(value: string | undefined, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`--${name} must be a positive number`);
  return n;
}

function demoOptions(args: string[]): DemoOptions & {
  remote: { grpc: string; http: string; deviceKeyDir: string | null; tls: { caFile: string; certFile?: string; keyFile?: string } | null } | null;
} {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      clients: { type: 'string' },
      rounds: { type: 'string' },
      partition: { type: 'string' },
      alpha: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      'learning-rate': { type: 'string' },
      seed: { type: 'string' },
      'deadline-ms': { type: 'string' },
      'data-dir': { type: 'string' },
      json: { type: 'boolean' },
      plaintext: { type: 'boolean' },
      'shared-key': { type: 'boolean' },
      dp: { type: 'boolean' },
      'coordinator-grpc': { type: 'string' },
      'coordinator-http': { type: 'string' },
      'device-key': { type: 'string' },
      'tls-ca': { type: 'string' },
      'tls-cert': { type: 'string' },
      'tls-key': { type: 'string' },
      'epsilon-cap': { type: 'string' },
      'noise-multiplier': { type: 'string' },
      'clip-norm': { type: 'string' },
      'dp-colluding': { type: 'string' },
      'keep-running': { type: 'boolean' },
      'http-port': { type: 'string' },
      calibrate: { type: 'boolean' },
    },
  });
  const partition = values.partition ?? DEMO_DEFAULTS.partition;
  if (partition !== 'iid' && partition !== 'dirichlet') throw new UsageError('--partition must be iid or dirichlet');
  return {
    clients: int(values.clients, 'clients', DEMO_DEFAULTS.clients),
    rounds: int(values.rounds, 'rounds', DEMO_DEFAULTS.rounds),
    partition,
    alpha: num(values.alpha, 'alpha', DEMO_DEFAULTS.alpha),
    epochs: int(values.epochs, 'epochs', DEMO_DEFAULTS.epochs),
    batchSize: int(values['batch-size'], 'batch-size', DEMO_DEFAULTS.batchSize),
    learningRate: num(values['learning-rate'], 'learning-rate', DEMO_DEFAULTS.learningRate),
    seed: int(values.seed, 'seed', DEMO_DEFAULTS.seed, 0),
    roundDeadlineMs: int(values['deadline-ms'], 'deadline-ms', DEMO_DEFAULTS.roundDeadlineMs, 100),
    json: values.json ?? false,
    plaintext: values.plaintext ?? false,
    sharedKey: values['shared-key'] ?? false,
    dp: values.dp
      ? {
          epsilonCap: num(values['epsilon-cap'], 'epsilon-cap', 8),
          delta: 1e-5,
          noiseMultiplier: num(values['noise-multiplier'], 'noise-multiplier', 0.7),
          clipNorm: num(values['clip-norm'], 'clip-norm', 1),
          colludingDevices: int(values['dp-colluding'], 'dp-colluding', DEMO_DP_COLLUDING, 0),
        }
      : values['dp-colluding'] !== undefined
        ? usage('--dp-colluding needs --dp')
        : null,
    dataDir: values['data-dir'],
    keepRunning: values['keep-running'] ?? false,
    httpPort: int(values['http-port'], 'http-port', DEMO_DEFAULTS.httpPort, 0),
    calibrate: values.calibrate ?? false,
    remote:
      values['coordinator-grpc'] !== undefined || values['coordinator-http'] !== undefined
        ? {
            grpc: values['coordinator-grpc'] ?? usage('--coordinator-http needs --coordinator-grpc'),
            http: values['coordinator-http'] ?? usage('--coordinator-grpc needs --coordinator-http'),
            deviceKeyDir: values['device-key'] ?? null,
            tls:
              values['tls-ca'] === undefined
                ? values['tls-cert'] !== undefined || values['tls-key'] !== undefined
                  ? usage('--tls-cert and --tls-key need --tls-ca')
                  : null
                : {
                    caFile: values['tls-ca'],
                    ...(values['tls-cert'] !== undefined && { certFile: values['tls-cert'] }),
                    ...(values['tls-key'] !== undefined && { keyFile: values['tls-key'] }),
                  },
          }
        : null,
  };
}

const COMMANDS = ['server', 'migrate', 'keys', 'tls', 'custodian', 'authority', 'privacy', 'export', 'calibration', 'demo'] as const;

/**
 * The part of {@link USAGE} about `command` (and `sub`, e.g. `custodian serve`): every entry
 * starting with `  command` up to the next command entry; null for an unknown command.
 */
function commandHelp(command: string, sub?: string): string | null {
  if (!(COMMANDS as readonly string[]).includes(command)) return null;
  const lines = USAGE.split('\n');
  const entry = /^ {2}[a-z]/;
  const pick = (prefix: string): string[] => {
    const out: string[] = [];
    let inside = false;
    for (const line of lines) {
      if (entry.test(line)) inside = line === `  ${prefix}` || line.startsWith(`  ${prefix} `);
      if (inside) out.push(line);
    }
    return out;
  };
  const picked = (sub !== undefined && !sub.startsWith('-') && pick(`${command} ${sub}`).length > 0 ? pick(`${command} ${sub}`) : pick(command));
  return `Usage: veil ${command}${sub !== undefined && !sub.startsWith('-') && picked[0]?.startsWith(`  ${command} ${sub}`) ? ` ${sub}` : ''} [options]\n\n${picked.join('\n')}\n`;
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  // `veil COMMAND ... --help` prints that command's help and starts or writes nothing.
  if (command !== undefined && (rest.includes('--help') || rest.includes('-h'))) {
    const help = commandHelp(command, rest[0]);
    if (help === null) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
    process.stdout.write(help);
    return 0;
  }
  switch (command) {
    case 'server': {
      const { runServer } = await import('@veil/server');
      await runServer();
      return 0;
    }
    case 'migrate': {
      const { runMigrate } = await import('@veil/server');
      const applied = await runMigrate();
      process.stdout.write(applied.length === 0 ? 'database is up to date\n' : `applied ${applied.join(', ')}\n`);
      return 0;
    }
    case 'keys': {
      const [sub, ...keyArgs] = rest;
      if (sub !== 'generate') throw new UsageError('usage: veil keys generate --out DIR');
      const { values } = parseArgs({
        args: keyArgs,
        strict: true,
        options: {
          out: { type: 'string' },
          label: { type: 'string' },
          preset: { type: 'string' },
          'weight-cap': { type: 'string' },
          clip: { type: 'string' },
          step: { type: 'string' },
        },
      });
      if (values.out === undefined) throw new UsageError('--out DIR is required');
      const { generateKeys, KEY_PRESETS, DEFAULT_PRESET } = await import('../keys.js');
      const preset = (values.preset ?? DEFAULT_PRESET) as (typeof KEY_PRESETS)[number];
      if (!KEY_PRESETS.includes(preset)) throw new UsageError(`--preset must be one of ${KEY_PRESETS.join(', ')}`);
      const result = await generateKeys({
        outDir: values.out,
        label: values.label ?? 'veil',
        preset,
        ...(values['weight-cap'] !== undefined && { weightCap: int(values['weight-cap'], 'weight-cap', 1) }),
        ...(values.clip !== undefined && { clipMaxAbs: num(values.clip, 'clip', 1) }),
        ...(values.step !== undefined && { step: num(values.step, 'step', 1) }),
      });
      process.stdout.write(
        `key ${result.keyId}\n  device (SECRET, give to device apps only): ${result.deviceKeyFile}\n  coordinator (public):                     ${result.coordinatorKeyFile}\n`,
      );
      return 0;
    }
    case 'tls': {
      const [sub, ...tlsArgs] = rest;
      if (sub !== 'dev-ca') throw new UsageError('usage: veil tls dev-ca --out DIR [--name HOST]... [--client NAME] [--custodian NAME]... [--coordinator-client] [--days N]');
      const { values } = parseArgs({
        args: tlsArgs,
        strict: true,
        options: {
          out: { type: 'string' },
          name: { type: 'string', multiple: true },
          client: { type: 'string' },
          custodian: { type: 'string', multiple: true },
          'coordinator-client': { type: 'boolean' },
          days: { type: 'string' },
        },
      });
      if (values.out === undefined) throw new UsageError('--out DIR is required');
      const { createDevCa } = await import('../tls/dev-ca.js');
      const files = await createDevCa({
        outDir: values.out,
        serverNames: values.name ?? [],
        ...(values.client !== undefined && { clientName: values.client }),
        ...(values.custodian !== undefined && { custodianNames: values.custodian }),
        ...(values['coordinator-client'] === true && { coordinatorClient: true }),
        ...(values.days !== undefined && { validityDays: int(values.days, 'days', 825) }),
      });
      process.stdout.write(
        [
          `CA certificate (give to devices and clients to pin): ${files.caCertFile}`,
          `CA key (keep private; development only):              ${files.caKeyFile}`,
          `server certificate (VEIL_TLS_CERT_FILE):              ${files.serverCertFile}`,
          `server key (VEIL_TLS_KEY_FILE):                       ${files.serverKeyFile}`,
          ...(files.clientCertFile ? [`client certificate and key (mutual TLS):             ${files.clientCertFile} ${files.clientKeyFile}`] : []),
          ...(files.custodians ?? []).map((c) => `custodian ${c.name} (serve --tls-cert/--tls-key):     ${c.certFile} ${c.keyFile}`),
          ...(files.coordinatorClientCertFile
            ? [`coordinator client certificate and key (VEIL_COMMITTEE_TLS_CERT_FILE/KEY_FILE): ${files.coordinatorClientCertFile} ${files.coordinatorClientKeyFile}`]
            : []),
        ].join('\n') + '\n',
      );
      return 0;
    }
    case 'custodian': {
      const { runCustodianCommand } = await import('@veil/custodian');
      return runCustodianCommand(rest);
    }
    case 'authority': {
      const { runAuthorityCommand } = await import('@veil/custodian');
      return runAuthorityCommand(rest);
    }
    case 'privacy': {
      const { PrivacyError, formatPrivacyResult, parsePrivacyArgs, runPrivacyCommand } = await import('@veil/privacy');
      try {
        const args = parsePrivacyArgs(rest);
        process.stdout.write(`${formatPrivacyResult(runPrivacyCommand(args), { json: args.json })}\n`);
        return 0;
      } catch (error) {
        if (error instanceof PrivacyError) throw new UsageError(error.message);
        throw error;
      }
    }
    case 'export': {
      const { values } = parseArgs({
        args: rest,
        strict: true,
        options: {
          task: { type: 'string' },
          format: { type: 'string' },
          quantize: { type: 'string' },
          out: { type: 'string' },
          'coordinator-http': { type: 'string' },
          'data-dir': { type: 'string' },
          'device-key': { type: 'string' },
          version: { type: 'string' },
          calibration: { type: 'string' },
          'force-static': { type: 'boolean' },
          json: { type: 'boolean' },
        },
      });
      if (values.task === undefined || values.out === undefined) throw new UsageError('veil export needs --task ID and --out FILE');
      const format = values.format ?? 'onnx';
      if (format !== 'onnx') throw new UsageError('--format must be onnx');
      const quantize = values.quantize ?? 'none';
      if (quantize !== 'none' && quantize !== 'float16' && quantize !== 'int8') throw new UsageError('--quantize must be none, float16 or int8');
      if ((values['coordinator-http'] === undefined) === (values['data-dir'] === undefined)) throw new UsageError('give exactly one of --coordinator-http URL and --data-dir DIR');
      const { runExport } = await import('../export.js');
      const result = await runExport({
        taskId: values.task,
        format,
        quantize,
        out: values.out,
        coordinatorHttp: values['coordinator-http'] ?? null,
        adminToken: process.env['VEIL_ADMIN_TOKEN'] ?? null,
        dataDir: values['data-dir'] ?? null,
        deviceKeyDir: values['device-key'] ?? null,
        version: values.version === undefined ? null : int(values.version, 'version', 0, 0),
        calibrationFile: values.calibration ?? null,
        forceStatic: values['force-static'] === true,
      }).catch((error: unknown) => {
        // ExportCommandError (missing key, refused request) and @veil/export's ExportError (unsupported layer): no stack.
        const name = (error as Error).name;
        if (name === 'ExportCommandError' || name === 'ExportError') {
          process.stderr.write(`veil export: ${(error as Error).message}\n`);
          return null;
        }
        throw error;
      });
      if (result === null) return 1;
      const ranges = result.calibration === null ? '' : `, ${result.calibration} calibration`;
      process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : `wrote ${result.out}: model version ${result.version}, ${result.quantization}${ranges}, ${result.bytes} bytes\n`);
      if (result.fallback !== undefined && !values.json) process.stdout.write(`int8-static not written: ${result.fallback.message}\n`);
      return 0;
    }
    case 'calibration': {
      const { values } = parseArgs({
        args: rest,
        strict: true,
        options: {
          task: { type: 'string' },
          out: { type: 'string' },
          'coordinator-http': { type: 'string' },
          'data-dir': { type: 'string' },
          'device-key': { type: 'string' },
          version: { type: 'string' },
          json: { type: 'boolean' },
        },
      });
      if (values.task === undefined || values.out === undefined) throw new UsageError('veil calibration needs --task ID and --out FILE');
      if ((values['coordinator-http'] === undefined) === (values['data-dir'] === undefined)) throw new UsageError('give exactly one of --coordinator-http URL and --data-dir DIR');
      const { runCalibration } = await import('../calibration.js');
      const result = await runCalibration({
        taskId: values.task,
        out: values.out,
        coordinatorHttp: values['coordinator-http'] ?? null,
        adminToken: process.env['VEIL_ADMIN_TOKEN'] ?? null,
        dataDir: values['data-dir'] ?? null,
        version: values.version === undefined ? null : int(values.version, 'version', 0, 0),
        deviceKeyDir: values['device-key'] ?? null,
      }).catch((error: unknown) => {
        if ((error as Error).name === 'ExportCommandError') {
          process.stderr.write(`veil calibration: ${(error as Error).message}\n`);
          return null;
        }
        throw error;
      });
      if (result === null) return 1;
      process.stdout.write(values.json ? `${JSON.stringify(result)}\n` : `wrote ${result.out}: calibration of model version ${result.modelVersion}, ${result.points} points\n`);
      return 0;
    }
    case 'demo': {
      const options = demoOptions(rest);
      if (options.remote !== null) {
        const adminToken = process.env['VEIL_ADMIN_TOKEN'];
        const enrolmentSecret = process.env['VEIL_ENROLMENT_SECRET'];
        if (!adminToken || !enrolmentSecret) throw new UsageError('a remote demo needs VEIL_ADMIN_TOKEN and VEIL_ENROLMENT_SECRET in the environment');
        const { runRemoteDemo } = await import('../demo/remote-demo.js');
        const summary = await runRemoteDemo({
          ...options,
          coordinatorGrpc: options.remote.grpc,
          coordinatorHttp: options.remote.http,
          adminToken,
          enrolmentSecret,
          deviceKeyDir: options.remote.deviceKeyDir,
          ...(options.remote.tls && { tls: options.remote.tls }),
        });
        if (options.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
        return summary.taskStatus === 'COMPLETED' ? 0 : 1;
      }
      const { checkDemoOptions, DemoOptionsError, runDemo } = await import('../demo/run-demo.js');
      try {
        checkDemoOptions(options);
      } catch (error) {
        throw error instanceof DemoOptionsError ? new UsageError(error.message) : error;
      }
      const summary = await runDemo(options);
      if (options.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
      return summary.taskStatus === 'COMPLETED' ? 0 : 1;
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== 0) process.exitCode = code;
  },
  (error: unknown) => {
    if (error instanceof UsageError || error instanceof CustodianUsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`veil: ${(error as Error).message}\n\n${USAGE}`);
      process.exitCode = 2;
    } else {
      process.stderr.write(`veil: ${(error as Error).stack ?? String(error)}\n`);
      process.exitCode = 1;
    }
  },
);
