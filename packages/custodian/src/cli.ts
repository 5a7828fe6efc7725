/**
 * `veil custodian ...`: the subcommands, kept here so the `veil` binary only dispatches.
 */
import { parseArgs } from 'node:util';
import { formatFingerprint } from '@veil/crypto';
import { CustodianError } from './errors.js';
import { CUSTODIAN_PUBLIC_FILE, initCustodianDir } from './keys.js';
import { createCustodianLogger, initRequestKey, runCustodian } from './main.js';

export const CUSTODIAN_USAGE = `  custodian init --out DIR
                         new custodian keys: an X25519 sealing key and an Ed25519 signing key in DIR
                         (0700; secret file 0600); prints the fingerprint, writes DIR/${CUSTODIAN_PUBLIC_FILE}
  custodian serve --dir DIR --listen HOST:PORT --coordinator-key FILE --authority-key FILE --min-devices N
                  [--max-rounds N] [--min-threshold T] [--max-devices N] [--log-level L]
                         serve the coordinator (gRPC veil.v1.CustodianService); answers once per (task, round),
                         state fsynced in DIR/answers.jsonl; --coordinator-key / --authority-key may repeat
  custodian request-key --out DIR
                         the coordinator's request-signing key pair (secret for the coordinator, public for
                         every custodian's --coordinator-key)
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
export async function runCustodianCommand(args: readonly string[], out: NodeJS.WritableStream = process.stdout): Promise<number> {
  try {
    return await run(args, out);
  } catch (error) {
    // Refusals (existing keys, unreadable key files, ...) are messages for the operator, not crashes.
    if (error instanceof CustodianError && error.code !== 'internal') {
      process.stderr.write(`veil custodian: ${error.message}\n`);
      return 1;
    }
    throw error;
  }
}

async function run(args: readonly string[], out: NodeJS.WritableStream): Promise<number> {
  const [sub, ...rest] = args;
  switch (sub) {
    case 'init': {
      const { values } = parseArgs({ args: [...rest], strict: true, options: { out: { type: 'string' } } });
      if (values.out === undefined) throw new CustodianUsageError('--out DIR is required');
      const info = await initCustodianDir(values.out);
      out.write(
        `custodian keys in ${values.out}\n  fingerprint: ${formatFingerprint(info.fingerprint)}\n  (full: ${info.fingerprint})\n  public half for the task descriptor: ${values.out}/${CUSTODIAN_PUBLIC_FILE}\n`,
      );
      return 0;
    }
    case 'request-key': {
      const { values } = parseArgs({ args: [...rest], strict: true, options: { out: { type: 'string' } } });
      if (values.out === undefined) throw new CustodianUsageError('--out DIR is required');
      const result = await initRequestKey(values.out);
      out.write(`coordinator request key ${result.publicKey}\n  secret (coordinator only): ${result.secretFile}\n  public (custodians' --coordinator-key): ${result.publicFile}\n`);
      return 0;
    }
    case 'serve': {
      const { values } = parseArgs({
        args: [...rest],
        strict: true,
        options: {
          dir: { type: 'string' },
          listen: { type: 'string' },
          'coordinator-key': { type: 'string', multiple: true },
          'authority-key': { type: 'string', multiple: true },
          'min-devices': { type: 'string' },
          'max-rounds': { type: 'string' },
          'min-threshold': { type: 'string' },
          'max-devices': { type: 'string' },
          'log-level': { type: 'string' },
        },
      });
      if (values.dir === undefined) throw new CustodianUsageError('--dir DIR is required');
      if (values.listen === undefined || !/^.+:\d+$/.test(values.listen)) throw new CustodianUsageError('--listen HOST:PORT is required');
      if (values['coordinator-key'] === undefined) throw new CustodianUsageError('--coordinator-key FILE is required (the coordinator request key\'s public half)');
      if (values['authority-key'] === undefined) throw new CustodianUsageError('--authority-key FILE is required (the enrolment authority this custodian trusts)');
      const minDevices = posInt(values['min-devices'], 'min-devices');
      if (minDevices === undefined) throw new CustodianUsageError('--min-devices N is required (the smallest |D| this custodian answers for)');
      const maxRounds = posInt(values['max-rounds'], 'max-rounds');
      const minThreshold = posInt(values['min-threshold'], 'min-threshold');
      const maxDevices = posInt(values['max-devices'], 'max-devices');
      const logger = createCustodianLogger(values['log-level'] ?? 'info');
      const running = await runCustodian({
        dir: values.dir,
        listen: values.listen,
        coordinatorKeyFiles: values['coordinator-key'],
        authorityKeyFiles: values['authority-key'],
        floors: { minDevices, ...(maxRounds !== undefined && { maxRounds }), ...(minThreshold !== undefined && { minThreshold }) },
        ...(maxDevices !== undefined && { maxDevices }),
        logger,
      });
      out.write(`${JSON.stringify({ listening: running.server.address, port: running.server.port })}\n`);
      await new Promise<void>((resolve) => {
        const stop = (): void => {
          process.off('SIGTERM', stop);
          process.off('SIGINT', stop);
          resolve();
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      await running.close();
      logger.info('custodian stopped');
      return 0;
    }
    default:
      throw new CustodianUsageError(sub === undefined ? 'custodian needs a subcommand: init, serve or request-key' : `unknown custodian subcommand ${JSON.stringify(sub)}`);
  }
}

