import type { Logger } from 'pino';
import type { AuditEventInput, SecurityStore } from './ports.js';

export interface AuditTrailOptions {
  store: Pick<SecurityStore, 'appendAudit'>;
  logger: Logger;
  /**
   * Events waiting to be written at most (memory bound under a flood of failed authentications);
   * beyond it events are dropped and counted, and the count is written as a `system` event
   * `audit.dropped`. Default 10 000.
   */
  maxPending?: number;
  /** Events per database insert. Default 500. */
  batchSize?: number;
}

/**
 * The audit trail's writer: `record` never blocks nor throws (a caller is answered at once); events
 * are written in batches, in order, right after. `flush` waits until everything recorded so far is
 * written (the audit API calls it before reading, so a caller sees its own actions).
 */
export interface AuditTrail {
  record(event: AuditEventInput): void;
  flush(): Promise<void>;
}

export function createAuditTrail(options: AuditTrailOptions): AuditTrail {
  const maxPending = options.maxPending ?? 10_000;
  const batchSize = options.batchSize ?? 500;
  const log = options.logger.child({ component: 'audit' });
  let pending: AuditEventInput[] = [];
  let dropped = 0;
  let writing: Promise<void> | null = null;

  const drain = async (): Promise<void> => {
    while (pending.length > 0 || dropped > 0) {
      if (dropped > 0) {
        pending.push({ at: new Date(), actor: 'system', action: 'audit.dropped', outcome: 'dropped', taskId: null, sourceAddress: null, details: { count: dropped } });
        log.warn({ count: dropped }, 'audit events dropped (too many pending)');
        dropped = 0;
      }
      const batch = pending.slice(0, batchSize);
      pending = pending.slice(batch.length);
      try {
        await options.store.appendAudit(batch);
      } catch (error) {
        // The database is down: the events are logged instead (they hold no secret).
        log.error({ err: error, events: batch }, 'audit events could not be written');
      }
    }
  };
  const start = (): Promise<void> =>
    (writing ??= (async () => {
      try {
        await drain();
      } finally {
        writing = null;
      }
    })());

  return {
    record(event) {
      if (pending.length >= maxPending) dropped++;
      else pending.push(event);
      void start();
    },
    async flush() {
      while (writing !== null || pending.length > 0) await start();
    },
  };
}
