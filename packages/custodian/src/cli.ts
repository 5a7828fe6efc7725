/**
 * `veil custodian ...`: the subcommands, kept here so the `veil` binary only dispatches.
 */
import { parseArgs, type ParseArgsOptionsConfig } from 'node:util';
import { readFile, stat, writeFile } from 'node:fs/promises';
import { formatFingerprint, descriptorHashHex, isC0Bits, type TaskDescriptor } from '@veil/crypto';
import { CustodianError } from './errors.js';
import { CUSTODIAN_KEY_FILE, CUSTODIAN_PUBLIC_FILE, initCustodianDir } from './keys.js';
import { readCustodianAnswers } from './state.js';
import { AUTHORITY_PUBLIC_FILE, certifyDevice, createSignedDescriptor, initAuthorityDir, readAuthorityKey, signValidated } from './authority.js';
import { fromBase64 } from './bytes.js';
import { startEnrolmentServer } from './enrolment.js';
import { dirname, join } from 'node:path';
import { CUSTODIAN_STATE_FILE, createCustodianLogger, initRequestKey, runCustodian } from './main.js';

export const CUSTODIAN_USAGE = `  custodian init --out DIR
                         new custodian keys: an X25519 sealing key and an Ed25519 signing key in DIR
                         (0700; secret file 0600); prints the fingerprint, writes DIR/${CUSTODIAN_PUBLIC_FILE}
  custodian serve --dir DIR --listen HOST:PORT --coordinator-key FILE --authority-key FILE --min-devices N
                  [--max-rounds N] [--min-threshold T] [--max-devices N] [--log-level L]
                  [--tls-cert PEM --tls-key PEM [--client-ca PEM] [--tls-reload-ms MS]] [--init]
                         serve the coordinator (gRPC veil.v1.CustodianService); answers once per (task, round),
                         state fsynced in DIR/answers.jsonl; --coordinator-key / --authority-key may repeat;
                         TLS with --tls-cert/--tls-key (name it grpcs://HOST:PORT in the descriptor), mutual TLS
                         with --client-ca (the coordinator's certificate must chain to it); renewed files are
                         taken up without a restart (polled every --tls-reload-ms, default 10000, or kill -HUP);
                         --init creates DIR's keys first when it has none (containers; fingerprint on stderr)
  custodian public --dir DIR
                         print DIR/${CUSTODIAN_PUBLIC_FILE} (the public keys and fingerprint) on stdout
  custodian status --dir DIR [--json]
                         the tasks and rounds this custodian answered (task, round, |D|, hash of D), from its log
  custodian request-key --out DIR
                         the coordinator's request-signing key pair (secret for the coordinator, public for
                         every custodian's --coordinator-key)
`;

export const AUTHORITY_USAGE = `  authority init --out DIR
                         the enrolment authority's Ed25519 key (keep DIR away from the coordinator);
                         DIR/${AUTHORITY_PUBLIC_FILE} is what custodians (--authority-key) and apps pin
  authority descriptor --key DIR --task-id ID --custodian HOST:PORT=PUBLIC.json [--custodian ...]
                  --threshold T --min-devices N --max-rounds R [--max-devices M] [--corrupt-tolerated C]
                  [--weight-cap W] [--clip X] [--step S] [--c0-bits 16|24|32|36|44|exact] [--out FILE]
                  [--dp-clip-norm C --dp-noise-multiplier Z --dp-colluding K --dp-delta D]
                         build, validate and sign a committee task descriptor (custodians in index order);
                         devices send c0 compressed to the fewest bits per coefficient (16, 24, 32 or 36, with the
                         largest Δ the sum bound allows) whose worst-case rounding over max-devices still
                         decrypts exactly, else exact (44 bits); --c0-bits picks the width (44 or exact: the
                         exact c0; a narrower width is refused when its rounding does not fit the noise budget)
                         the --dp-* flags (all four) set distributed DP: each device's discrete Gaussian share
                         is sized so the min-devices - K honest shares carry noise z*C (the task is then created
                         with privacy.mode "distributed" and the same C, z and delta)
  authority sign-descriptor --key DIR --descriptor FILE [--out FILE]
                         validate and sign a descriptor written by hand
  authority serve --key DIR --listen HOST:PORT --task-id ID [--task-id ...] --enrolment-secret-file FILE
                  [--state FILE] [--valid-hours H] [--log-level L]
                         the enrolment service (HTTP POST /v1/certificates) devices get their key certified at,
                         run apart from the coordinator; prints {"url": ...}
  authority certify-device --key DIR --task-id ID --device-id ID --device-key BASE64 [--valid-hours H]
                         certify a device's Ed25519 key for one task (prints the certificate JSON)
`;

/** Thrown for bad command-line usage; the caller prints it with the usage text. */
export class CustodianUsageError extends Error {
  override readonly name = 'CustodianUsageError';
}

function posInt(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isSafeInteger(n) || n < 1) throw new CustodianUsageError(`--${name} must be an integer >= 1`);
  return n;
}

/**
 * Runs `veil custodian <sub> ...`. Resolves with the exit code; `serve` resolves only after
 * SIGTERM or SIGINT (graceful shutdown).
 */
export function runCustodianCommand(args: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  return reportRefusals('veil custodian', () => run(args, out));
}

/**
 * Runs a command; refusals (existing keys, unreadable key files, ...) are messages for the
 * operator on stderr with exit code 1, not crashes.
 */
async function reportRefusals(command: string, body: () => Promise<number>): Promise<number> {
  try {
    return await body();
  } catch (error) {
    if (error instanceof CustodianError && error.code !== 'internal') {
      process.stderr.write(`${command}: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

/** Strict `parseArgs` of a subcommand's arguments (unknown flags are refused). */
function flags<const O extends ParseArgsOptionsConfig>(args: readonly string[], options: O) {
  return parseArgs({ args: [...args], strict: true, options }).values;
}

/** `--listen HOST:PORT`, required. */
function listenAddress(value: string | undefined): string {
  if (value === undefined || !/^.+:\d+$/.test(value)) throw new CustodianUsageError('--listen HOST:PORT is required');
  return value;
}

/** Resolves on the first SIGTERM or SIGINT (a serving command's graceful stop). */
function stopSignal(): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (): void => {
      process.off('SIGTERM', stop);
      process.off('SIGINT', stop);
      resolve();
    };
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
  });
}

async function run(args: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'init': {
      const values = flags(rest, { out: { type: 'string' } });
      const dir = need(values.out, 'out', 'DIR');
      const info = await initCustodianDir(dir);
      out.write(
        `custodian keys in ${dir}\n  fingerprint: ${formatFingerprint(info.fingerprint)}\n  (full: ${info.fingerprint})\n  public half for the task descriptor: ${dir}/${CUSTODIAN_PUBLIC_FILE}\n`,
      );
      return 0;
    }
    case 'public': {
      const values = flags(rest, { dir: { type: 'string' } });
      out.write(await readFile(join(need(values.dir, 'dir'), CUSTODIAN_PUBLIC_FILE), 'utf8'));
      return 0;
    }
    case 'status': {
      const values = flags(rest, { dir: { type: 'string' }, json: { type: 'boolean' } });
      const dir = need(values.dir, 'dir');
      // Read-only (the public file and the answer log): safe beside a running `serve`.
      const { fingerprint } = JSON.parse(await readFile(join(dir, CUSTODIAN_PUBLIC_FILE), 'utf8')) as { fingerprint: string };
      const answers = (await readCustodianAnswers(join(dir, CUSTODIAN_STATE_FILE))).map((a) => ({
        taskId: a.taskId,
        descriptorHash: a.descriptorHash,
        round: a.round,
        devices: a.count,
        hashD: a.hashD,
      }));
      if (values.json === true) {
        out.write(`${JSON.stringify({ fingerprint, answers })}\n`);
      } else {
        out.write(`custodian ${formatFingerprint(fingerprint)}: ${answers.length} answer(s)\n`);
        for (const a of answers) out.write(`  ${a.taskId} round ${a.round}: |D| = ${a.devices}, hash(D) ${a.hashD.slice(0, 16)}…, descriptor ${a.descriptorHash.slice(0, 16)}…\n`);
      }
      return 0;
    }
    case 'request-key': {
      const values = flags(rest, { out: { type: 'string' } });
      const result = await initRequestKey(need(values.out, 'out', 'DIR'));
      out.write(`coordinator request key ${result.publicKey}\n  secret (coordinator only): ${result.secretFile}\n  public (custodians' --coordinator-key): ${result.publicFile}\n`);
      return 0;
    }
    case 'serve': {
      const values = flags(rest, {
          dir: { type: 'string' },
          listen: { type: 'string' },
          'coordinator-key': { type: 'string', multiple: true },
          'authority-key': { type: 'string', multiple: true },
          'min-devices': { type: 'string' },
          'max-rounds': { type: 'string' },
          'min-threshold': { type: 'string' },
          'max-devices': { type: 'string' },
          'tls-cert': { type: 'string' },
          'tls-key': { type: 'string' },
          'client-ca': { type: 'string' },
          'tls-reload-ms': { type: 'string' },
          init: { type: 'boolean' },
          'log-level': { type: 'string' },
        });
      const dir = need(values.dir, 'dir', 'DIR');
      if (values.init === true) {
        const exists = await stat(join(dir, CUSTODIAN_KEY_FILE)).then(
          () => true,
          (error: NodeJS.ErrnoException) => {
            if (error.code === 'ENOENT') return false;
            throw error;
          },
        );
        if (!exists) {
          const info = await initCustodianDir(dir);
          process.stderr.write(`veil custodian: new keys in ${dir}, fingerprint ${formatFingerprint(info.fingerprint)} (full: ${info.fingerprint})\n`);
        }
      }
      const listen = listenAddress(values.listen);
      if (values['coordinator-key'] === undefined) throw new CustodianUsageError('--coordinator-key FILE is required (the coordinator request key\'s public half)');
      if (values['authority-key'] === undefined) throw new CustodianUsageError('--authority-key FILE is required (the enrolment authority this custodian trusts)');
      const minDevices = posInt(values['min-devices'], 'min-devices');
      if (minDevices === undefined) throw new CustodianUsageError('--min-devices N is required (the smallest |D| this custodian answers for)');
      const maxRounds = posInt(values['max-rounds'], 'max-rounds');
      const minThreshold = posInt(values['min-threshold'], 'min-threshold');
      const maxDevices = posInt(values['max-devices'], 'max-devices');
      if ((values['tls-cert'] === undefined) !== (values['tls-key'] === undefined)) throw new CustodianUsageError('--tls-cert and --tls-key go together');
      if (values['tls-cert'] === undefined && (values['client-ca'] !== undefined || values['tls-reload-ms'] !== undefined)) {
        throw new CustodianUsageError('--client-ca and --tls-reload-ms need --tls-cert and --tls-key');
      }
      const reloadMs = posInt(values['tls-reload-ms'], 'tls-reload-ms');
      const tlsFiles =
        values['tls-cert'] !== undefined && values['tls-key'] !== undefined
          ? { certFile: values['tls-cert'], keyFile: values['tls-key'], caFile: values['client-ca'], ...(reloadMs !== undefined && { pollIntervalMs: reloadMs }) }
          : undefined;
      const logger = createCustodianLogger(values['log-level'] ?? 'info');
      const running = await runCustodian({
        dir,
        listen,
        coordinatorKeyFiles: values['coordinator-key'],
        authorityKeyFiles: values['authority-key'],
        floors: { minDevices, ...(maxRounds !== undefined && { maxRounds }), ...(minThreshold !== undefined && { minThreshold }) },
        ...(maxDevices !== undefined && { maxDevices }),
        ...(tlsFiles !== undefined && { tlsFiles }),
        logger,
      });
      out.write(`${JSON.stringify({ listening: running.server.address, port: running.server.port })}\n`);
      // SIGHUP: reread the TLS files now (renewed certificates apply to new connections).
      const hup = (): void => void running.reloadTls();
      process.on('SIGHUP', hup);
      await stopSignal();
      process.off('SIGHUP', hup);
      await running.close();
      logger.info('custodian stopped');
      return 0;
    }
    default:
      throw new CustodianUsageError(sub === undefined ? 'custodian needs a subcommand: init, serve, public, status or request-key' : `unknown custodian subcommand ${JSON.stringify(sub)}`);
  }
}


function need<T>(value: T | undefined, flag: string, metavar?: string): T {
  if (value === undefined) throw new CustodianUsageError(`--${flag}${metavar === undefined ? '' : ` ${metavar}`} is required`);
  return value;
}

function positiveNumber(value: string | undefined, name: string): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new CustodianUsageError(`--${name} must be a positive number`);
  return n;
}

async function writeSigned(path: string | undefined, value: object, out: NodeJS.WritableStream): Promise<void> {
  const text = `${JSON.stringify(value, null, 2)}\n`;
  if (path === undefined) out.write(text);
  else await writeFile(path, text);
}

/** Runs `veil authority <sub> ...` (the enrolment authority's tools). Resolves with the exit code. */
export function runAuthorityCommand(args: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  return reportRefusals('veil authority', () => runAuthority(args, out));
}

async function runAuthority(args: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'init': {
      const values = flags(rest, { out: { type: 'string' } });
      const dir = need(values.out, 'out');
      const { publicKey } = await initAuthorityDir(dir);
      out.write(`enrolment authority key ${publicKey}\n  secret (keep away from the coordinator): ${dir}/authority-key.json\n  public (custodians' --authority-key, apps): ${dir}/${AUTHORITY_PUBLIC_FILE}\n`);
      return 0;
    }
    case 'descriptor': {
      const values = flags(rest, {
          key: { type: 'string' },
          'task-id': { type: 'string' },
          custodian: { type: 'string', multiple: true },
          threshold: { type: 'string' },
          'min-devices': { type: 'string' },
          'max-rounds': { type: 'string' },
          'max-devices': { type: 'string' },
          'corrupt-tolerated': { type: 'string' },
          'weight-cap': { type: 'string' },
          clip: { type: 'string' },
          step: { type: 'string' },
          'c0-bits': { type: 'string' },
          out: { type: 'string' },
          'dp-clip-norm': { type: 'string' },
          'dp-noise-multiplier': { type: 'string' },
          'dp-colluding': { type: 'string' },
          'dp-delta': { type: 'string' },
        });
      const dpFlags = ['dp-clip-norm', 'dp-noise-multiplier', 'dp-colluding', 'dp-delta'] as const;
      const dpGiven = dpFlags.filter((f) => values[f] !== undefined);
      if (dpGiven.length !== 0 && dpGiven.length !== dpFlags.length) throw new CustodianUsageError(`distributed DP needs all of --${dpFlags.join(', --')}`);
      const colluding = values['dp-colluding'] === undefined ? undefined : Number(values['dp-colluding']);
      if (colluding !== undefined && !(Number.isInteger(colluding) && colluding >= 0)) throw new CustodianUsageError('--dp-colluding must be an integer >= 0');
      const dpDelta = positiveNumber(values['dp-delta'], 'dp-delta');
      const dp =
        dpGiven.length === 0
          ? null
          : {
              mechanism: 'distributed-discrete-gaussian' as const,
              clipNorm: need(positiveNumber(values['dp-clip-norm'], 'dp-clip-norm'), 'dp-clip-norm'),
              noiseMultiplier: need(positiveNumber(values['dp-noise-multiplier'], 'dp-noise-multiplier'), 'dp-noise-multiplier'),
              colludingDevices: colluding!,
              delta: dpDelta!,
            };
      const authority = await readAuthorityKey(need(values.key, 'key'));
      const committee = await Promise.all(
        need(values.custodian, 'custodian').map(async (spec) => {
          const at = spec.indexOf('=');
          if (at <= 0) throw new CustodianUsageError(`--custodian takes HOST:PORT=PUBLIC.json, got ${JSON.stringify(spec)}`);
          const info = JSON.parse(await readFile(spec.slice(at + 1), 'utf8')) as { sealingKey?: unknown; signingKey?: unknown };
          if (typeof info.sealingKey !== 'string' || typeof info.signingKey !== 'string') {
            throw new CustodianUsageError(`${spec.slice(at + 1)} is not a custodian-public.json`);
          }
          return { address: spec.slice(0, at), custodian: { sealingKey: info.sealingKey, signingKey: info.signingKey } };
        }),
      );
      const corrupt = values['corrupt-tolerated'] === undefined ? undefined : Number(values['corrupt-tolerated']);
      if (corrupt !== undefined && !(Number.isInteger(corrupt) && corrupt >= 0)) throw new CustodianUsageError('--corrupt-tolerated must be an integer >= 0');
      const weightCap = posInt(values['weight-cap'], 'weight-cap');
      const clipMaxAbs = positiveNumber(values.clip, 'clip');
      const step = positiveNumber(values.step, 'step');
      const maxDevices = posInt(values['max-devices'], 'max-devices');
      const c0Bits = values['c0-bits'] === undefined ? undefined : values['c0-bits'] === 'exact' ? 44 : Number(values['c0-bits']);
      if (c0Bits !== undefined && !isC0Bits(c0Bits)) throw new CustodianUsageError('--c0-bits must be 16, 24, 32, 36, 44 or exact');
      const { signed, check } = createSignedDescriptor(authority, {
        taskId: need(values['task-id'], 'task-id'),
        committee,
        threshold: need(posInt(values.threshold, 'threshold'), 'threshold'),
        ...(corrupt !== undefined && { corruptTolerated: corrupt }),
        minDevices: need(posInt(values['min-devices'], 'min-devices'), 'min-devices'),
        ...(maxDevices !== undefined && { maxDevices }),
        maxRounds: need(posInt(values['max-rounds'], 'max-rounds'), 'max-rounds'),
        encoding: {
          ...(weightCap !== undefined && { weightCap }),
          ...(clipMaxAbs !== undefined && { clipMaxAbs }),
          ...(step !== undefined && { step }),
          ...(c0Bits !== undefined && { c0Bits }),
        },
        dp,
      });
      await writeSigned(values.out, signed, out);
      process.stderr.write(
        `descriptor ${check.descriptorHash}: ${signed.descriptor.threshold}-of-${check.committeeSize}, tolerates ${signed.descriptor.corruptTolerated} corrupt (max 2t-n-1 = ${check.maxCorruptTolerated}), ${check.livenessSlack} may be offline; c0 ${check.c0Bits === 44 ? 'exact (44 bits)' : `${check.c0Bits} bits`} per coefficient, Δ = 2^${signed.descriptor.encoding.deltaBits}\n`,
      );
      return 0;
    }
    case 'sign-descriptor': {
      const values = flags(rest, { key: { type: 'string' }, descriptor: { type: 'string' }, out: { type: 'string' } });
      const authority = await readAuthorityKey(need(values.key, 'key'));
      const parsed = JSON.parse(await readFile(need(values.descriptor, 'descriptor'), 'utf8')) as { descriptor?: TaskDescriptor } & TaskDescriptor;
      const descriptor = parsed.descriptor ?? parsed;
      const { signed } = signValidated(authority, descriptor);
      await writeSigned(values.out, signed, out);
      process.stderr.write(`descriptor ${descriptorHashHex(descriptor)} signed\n`);
      return 0;
    }
    case 'serve': {
      const values = flags(rest, {
          key: { type: 'string' },
          listen: { type: 'string' },
          'task-id': { type: 'string', multiple: true },
          'enrolment-secret-file': { type: 'string' },
          state: { type: 'string' },
          'valid-hours': { type: 'string' },
          'log-level': { type: 'string' },
        });
      const keyPath = need(values.key, 'key');
      const authority = await readAuthorityKey(keyPath);
      const listen = listenAddress(values.listen);
      const secret = (await readFile(need(values['enrolment-secret-file'], 'enrolment-secret-file'), 'utf8')).trim();
      const hours = positiveNumber(values['valid-hours'], 'valid-hours');
      const logger = createCustodianLogger(values['log-level'] ?? 'info');
      const server = await startEnrolmentServer({
        authority,
        enrolmentSecret: secret,
        taskIds: need(values['task-id'], 'task-id'),
        statePath: values.state ?? join((await stat(keyPath)).isDirectory() ? keyPath : dirname(keyPath), 'enrolments.jsonl'),
        listen,
        logger,
        ...(hours !== undefined && { validForMs: Math.round(hours * 3_600_000) }),
      });
      out.write(`${JSON.stringify({ url: server.url })}\n`);
      await stopSignal();
      await server.close();
      return 0;
    }
    case 'certify-device': {
      const { values } = parseArgs({
        args: [...rest],
        strict: true,
        options: { key: { type: 'string' }, 'task-id': { type: 'string' }, 'device-id': { type: 'string' }, 'device-key': { type: 'string' }, 'valid-hours': { type: 'string' } },
      });
      const authority = await readAuthorityKey(need(values.key, 'key'));
      let devicePublicKey: Uint8Array;
      try {
        devicePublicKey = fromBase64(need(values['device-key'], 'device-key'), '--device-key', 32);
      } catch (error) {
        if (error instanceof CustodianUsageError) throw error;
        throw new CustodianUsageError('--device-key must be a 32-byte Ed25519 public key in base64');
      }
      const hours = positiveNumber(values['valid-hours'], 'valid-hours');
      const certificate = certifyDevice(authority, {
        taskId: need(values['task-id'], 'task-id'),
        deviceId: need(values['device-id'], 'device-id'),
        devicePublicKey,
        ...(hours !== undefined && { validForMs: Math.round(hours * 3_600_000) }),
      });
      out.write(`${JSON.stringify(certificate)}\n`);
      return 0;
    }
    default:
      throw new CustodianUsageError(
        sub === undefined ? 'authority needs a subcommand: init, descriptor, sign-descriptor, serve or certify-device' : `unknown authority subcommand ${JSON.stringify(sub)}`,
      );
  }
}
