import type { RoundAggregator } from '../aggregation/round-aggregator.js';
import type { Round, Submission } from './model.js';

/** An update folded into a round's aggregate, as its record holds it. */
export type FoldedUpdate = Pick<Submission, 'sha256' | 'exampleCount' | 'sizeBytes'>;

/**
 * A task's open round in memory: the round as last written to the store, its
 * participants, the updates folded into its aggregate, and its deadline.
 * One object per round, disposed when the round settles (closes, fails, or
 * the task ends or is reset), so nothing of a finished round outlives it: the
 * next round starts from a new object.
 */
export class OpenRound implements Disposable {
  /** The round (its state moves SELECTING -> COLLECTING -> AGGREGATING; replaced by the store's copy at each step). */
  round: Round;
  /** Participants of the round (empty while SELECTING). */
  selected: Set<string>;
  /** Clients whose accepted update is folded into `aggregator`, with that update as recorded (its SHA-256, weight and size). */
  folded = new Map<string, FoldedUpdate>();
  /** The round's aggregate, or null (SELECTING, or being rebuilt). Owned: disposed with the round. */
  aggregator: RoundAggregator | null;
  /** Cancels the round's deadline, or null. */
  deadlineTimer: (() => void) | null = null;

  constructor(round: Round, with_: { selected?: readonly string[]; aggregator?: RoundAggregator } = {}) {
    this.round = round;
    this.selected = new Set(with_.selected ?? []);
    this.aggregator = with_.aggregator ?? null;
  }

  /** Replaces the round's deadline (`cancel`: the new one's cancel function, or null for none). */
  setDeadline(cancel: (() => void) | null): void {
    this.deadlineTimer?.();
    this.deadlineTimer = cancel;
  }

  /** Replaces the aggregate, freeing the previous one. */
  setAggregator(aggregator: RoundAggregator | null): void {
    this.aggregator?.dispose();
    this.aggregator = aggregator;
  }

  /** Stops the deadline, frees the aggregate, forgets the participants. Idempotent. */
  [Symbol.dispose](): void {
    this.setDeadline(null);
    this.setAggregator(null);
    this.selected = new Set();
    this.folded = new Map();
  }
}
