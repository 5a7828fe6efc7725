/**
 * Test-only fault points for the crash tests (issue 11, "Bad input and faults"): with
 * NODE_ENV=test and VEIL_TEST_FAULT naming a point, the process sends itself SIGKILL when it
 * reaches that point. That is a real crash (no handler, no flush, no graceful close) at an exact
 * place in the protocol, which a kill from outside could only hit by timing. Outside
 * NODE_ENV=test this does nothing: a production coordinator never acts on VEIL_TEST_FAULT.
 *
 * Points:
 *   committee-answered   a committee round's custodians answered and the next model was decrypted,
 *                        before the coordinator writes it (aggregation/committee-aggregator.ts;
 *                        e2e/committee-crash.test.ts)
 *   model-blob-unsynced  a round's next model is written at its final key but not yet fsynced, and
 *                        no commit references it (blobs/blob-store.ts `write`;
 *                        e2e/model-write-crash.test.ts)
 */
export type FaultPoint = 'committee-answered' | 'model-blob-unsynced';

/** Kills this process with SIGKILL if NODE_ENV=test and VEIL_TEST_FAULT=`point`; otherwise returns. */
export function faultPoint(point: FaultPoint): void {
  if (process.env['NODE_ENV'] === 'test' && process.env['VEIL_TEST_FAULT'] === point) process.kill(process.pid, 'SIGKILL');
}
