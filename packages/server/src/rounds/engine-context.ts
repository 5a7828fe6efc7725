import type { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { Rng } from '../aggregation/strategy.js';
import type { StrategyRegistry } from '../aggregation/registry.js';
import type { CommitteeCollect, CommitteeStaging, CommitteeTask } from '../aggregation/committee-aggregator.js';
import type { BlobStore } from '../blobs/blob-store.js';
import type { CoordinatorKeyMaterial } from '@veil/crypto';
import type { Round, TaskStatus } from './model.js';
import type { FederationStore } from './ports.js';
import type { ModelCache } from './model-cache.js';
import type { Clock, Timer } from './clock.js';
import type { PrivacyBudget } from './privacy-budget.js';

export interface EngineEvents {
  'round-opened': [{ taskId: string; round: Round }];
  'round-collecting': [{ taskId: string; round: Round }];
  'update-accepted': [{ taskId: string; roundNumber: number; clientId: string; receivedCount: number; targetCount: number }];
  'round-closed': [{ taskId: string; round: Round }];
  'round-failed': [{ taskId: string; round: Round }];
  'task-ended': [{ taskId: string; status: TaskStatus; reason: string | null }];
  /** A device received a whole model version (the dashboard's live "downloaded" count). */
  'model-downloaded': [{ taskId: string; clientId: string; modelVersion: number }];
}

/** Connects the engine to a committee task's custodians. */
export interface CommitteeConnector {
  open(descriptor: Uint8Array, descriptorSignature: Uint8Array): {
    collect: CommitteeCollect;
    stage?: (round: number) => CommitteeStaging;
    /** The round's decryption (absent: @veil/crypto decryptSum in the engine's thread). */
    decrypt?: CommitteeTask['decrypt'];
    /** The round's public polynomials derived off the event loop (absent: on it, one per turn). */
    derivePublicPolynomials?: CommitteeTask['derivePublicPolynomials'];
    close(): Promise<void>;
  };
}

/**
 * What the engine's parts (task service, presence, intake, round loop) share:
 * the ports, injected time and randomness, the strategy registry, and the
 * engine's event emitter. Built once by `RoundEngine`; `closed` turns true on
 * `close()`.
 */
export interface EngineContext {
  readonly store: FederationStore;
  readonly blobs: BlobStore;
  readonly log: Logger;
  readonly strategies: StrategyRegistry;
  /** Model versions in memory: each task's current one and the recently read others. */
  readonly models: ModelCache;
  readonly clock: Clock;
  readonly timer: Timer;
  /** DP tasks' privacy budget: the check before rounds open, the ledger entries. */
  readonly budget: PrivacyBudget;
  /** Randomness for client selection. */
  readonly rng: Rng;
  /** Public coordinator key material for tasks created without explicit encryption settings, or null. */
  readonly defaultKey: CoordinatorKeyMaterial | null;
  readonly committeeConnector: CommitteeConnector | null;
  /** The engine's events (the engine itself). */
  readonly events: EventEmitter<EngineEvents>;
  /** True once the engine is closing: no new selection, long-polls answer at once. */
  closed: boolean;
}
