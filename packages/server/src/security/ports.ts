import type { Client } from '../rounds/model.js';

/** A per-task enrolment token, as listed (its secret is never stored nor shown again). */
export interface EnrolmentTokenInfo {
  id: string;
  taskId: string;
  label: string | null;
  /** Joins allowed at most; null: only the task's device cap limits them. */
  maxUses: number | null;
  uses: number;
  expiresAt: Date;
  revokedAt: Date | null;
  createdAt: Date;
}

/** A device identity of a task, as an admin sees it. */
export interface ClientInfo {
  id: string;
  taskId: string;
  name: string | null;
  joinedAt: Date;
  lastSeenAt: Date;
  revokedAt: Date | null;
  /** The enrolment token it joined with; null: the global enrolment secret. */
  enrolmentTokenId: string | null;
}

/** Outcome of an enrolment, decided atomically (task row locked) by the store. */
export type EnrolResult =
  | { kind: 'enrolled'; client: Client }
  | { kind: 'no_task' }
  | { kind: 'not_running'; status: string }
  /** The secret is no token of this task, or the token expired, was revoked or is used up. */
  | { kind: 'bad_token' }
  | { kind: 'device_cap'; maxDevices: number };

export interface EnrolInput {
  client: { id: string; taskId: string; name: string | null; credentialHash: string };
  /** SHA-256 (hex) of the presented per-task token; null when the global enrolment secret matched. */
  tokenHash: string | null;
  /** The task's cap on device identities that are not revoked. */
  maxDevices: number;
  now: Date;
}

/** One row of the audit trail. */
export interface AuditEventInput {
  at: Date;
  /** `admin`, `audit` (REST tokens), `device`, `anonymous`, `system` (the trail itself). */
  actor: 'admin' | 'audit' | 'device' | 'anonymous' | 'system';
  action: string;
  /** HTTP status of an admin action, or the refusal (e.g. `UNAUTHENTICATED`, `RESOURCE_EXHAUSTED`). */
  outcome: string;
  taskId: string | null;
  sourceAddress: string | null;
  details: Record<string, string | number | boolean | null> | null;
}

export interface AuditEvent extends AuditEventInput {
  id: string;
}

/** Storage of enrolment tokens, device identities and the audit trail. */
export interface SecurityStore {
  createEnrolmentToken(token: {
    id: string;
    taskId: string;
    tokenHash: string;
    label: string | null;
    maxUses: number | null;
    expiresAt: Date;
  }): Promise<EnrolmentTokenInfo>;
  listEnrolmentTokens(taskId: string): Promise<EnrolmentTokenInfo[]>;
  /** The token with this SHA-256 (hex), if any. */
  findEnrolmentToken(tokenHash: string): Promise<EnrolmentTokenInfo | null>;
  /** Revokes a token of the task; null when the task has no such token. */
  revokeEnrolmentToken(taskId: string, tokenId: string, at: Date): Promise<EnrolmentTokenInfo | null>;
  /**
   * In one transaction with the task row locked: the task must be RUNNING, the token (if any)
   * valid for it (not expired, revoked or used up; its use is counted), and the task below its
   * device cap; then the client is created.
   */
  enrol(input: EnrolInput): Promise<EnrolResult>;
  listClients(taskId: string, page: { offset: number; limit: number }): Promise<{ total: number; clients: ClientInfo[] }>;
  /** Revokes a client of the task (idempotent); null when the task has no such client. */
  revokeClient(taskId: string, clientId: string, at: Date): Promise<ClientInfo | null>;
  appendAudit(events: readonly AuditEventInput[]): Promise<void>;
  /** Newest first. */
  listAudit(query: { offset: number; limit: number; taskId?: string }): Promise<{ total: number; events: AuditEvent[] }>;
}
