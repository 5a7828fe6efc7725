/**
 * Entry point of a custodian child process (`node serve-process.js serve ...`), used by
 * {@link startLocalCommittee} so that the custodian package needs no `veil` binary.
 */
import { runCustodianCommand } from './cli.js';

runCustodianCommand(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`veil custodian: ${(error as Error).stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
