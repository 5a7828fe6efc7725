import { createHash } from 'node:crypto';

/** The fields of a ledger entry that its hash covers. */
export interface LedgerFields {
  taskId: string;
  sequence: number;
  roundNumber: number;
  mechanism: string;
  samplingRate: number;
  noiseMultiplier: number;
  clipNorm: number;
  participants: number;
  participantIds: string[];
  epsilon: number;
  delta: number;
  order: number;
  createdAt: string;
  /** Distributed mode (mechanism `ddg-distributed`): what the round's RDP is recomputed from; null otherwise. */
  ddg: LedgerDdgParams | null;
  /**
   * Committee decryptions (mechanism `committee-decryption`, issue 11): the custodians' signed
   * answers that let the coordinator decrypt this round's sum over D; null for spend entries.
   * Optional so entries built before committee mode type-check; absent means null.
   */
  decryption?: LedgerDecryption | null;
  /**
   * Committee tasks with distributed DP: the cumulative ε against the coordinator, which chooses
   * D and so gets no subsampling amplification (every round composed at q = 1), at `delta`.
   * `epsilon` stays the ε for observers of the released models (amplified by q). Absent or null
   * for other tasks.
   */
  epsilonCoordinator?: number | null;
}

/**
 * The record of one committee decryption: what the custodians signed and what it was over. The
 * answers are kept whole (fields and base64 Ed25519 signature, without the share sums, whose
 * SHA-256 is signed), so anyone holding the task descriptor can re-verify them.
 */
export interface LedgerDecryption {
  /** hex SHA-256 of the task descriptor the answers name. */
  descriptorHash: string;
  /** hex hash(D) = SHA-256("veil/D/v1" || sorted manifest digests) (@veil/crypto `hashD`). */
  hashD: string;
  /** hex SHA-256 of each manifest of D, sorted: hash(D) is recomputed from them. */
  manifestDigests: string[];
  /** The signed answers used, in the order the coordinator used them. */
  answers: LedgerAnswer[];
}

/** A custodian's signed answer as stored (see @veil/crypto `SignedCustodianAnswer`). */
export interface LedgerAnswer {
  answer: {
    descriptorHash: string;
    round: number;
    hashD: string;
    count: number;
    custodianIndex: number;
    shareSumSha256: string;
  };
  signature: string;
}

/** The distributed discrete Gaussian's accounting parameters (KLS21), as recorded. */
export interface LedgerDdgParams {
  /** n: noise shares the accounting assumes in the sum. */
  noiseClients: number;
  /** 1/γ. */
  scale: number;
  /** σ per device, model units. */
  localStddev: number;
  /** d, padded. */
  dimension: number;
  /** β of the conditional rounding. */
  roundingBeta: number;
}

export interface LedgerEntry extends LedgerFields {
  prevHash: string;
  hash: string;
}

export const GENESIS_HASH = '0'.repeat(64);

/**
 * Computed reals are recorded with 12 significant digits, so the value hashed
 * is exactly the value the database returns (a double with at most 15
 * significant digits survives any decimal round trip); 12 digits keep ε far
 * more precisely than any accountant comparison needs (relative 5e-13).
 */
export function ledgerNumber(x: number): number {
  return Number.isFinite(x) ? Number(x.toPrecision(12)) : x;
}

/**
 * SHA-256 (FIPS 180-4) over a canonical serialization: the fields in a fixed
 * order as a JSON array, then the previous entry's hash. Changing any field of
 * any entry changes its hash and so breaks the chain from there on.
 */
export function hashLedgerEntry(fields: LedgerFields, prevHash: string): string {
  const canonical = JSON.stringify([
    fields.taskId,
    fields.sequence,
    fields.roundNumber,
    fields.mechanism,
    fields.samplingRate,
    fields.noiseMultiplier,
    fields.clipNorm,
    fields.participants,
    fields.participantIds,
    fields.epsilon,
    fields.delta,
    fields.order,
    fields.createdAt,
    // Entries without mechanism parameters keep the original 13-field form (chains written before them still verify).
    ...(fields.ddg === null
      ? []
      : [['ddg', fields.ddg.noiseClients, fields.ddg.scale, fields.ddg.localStddev, fields.ddg.dimension, fields.ddg.roundingBeta]]),
    ...(fields.epsilonCoordinator == null ? [] : [['coordinator', fields.epsilonCoordinator]]),
    // Committee decryptions: every answer field and signature in a fixed order (whatever key order the database returns).
    ...(fields.decryption == null ? [] : [decryptionCanonical(fields.decryption)]),
  ]);
  return createHash('sha256').update(canonical).update('\n').update(prevHash).digest('hex');
}

/** The canonical (fixed-order) form of a decryption record inside the hashed array. */
function decryptionCanonical(d: LedgerDecryption): unknown[] {
  // Fields a stored answer has beyond the signed six are hashed too (verification refuses them).
  const extra = (a: LedgerAnswer): unknown[] => {
    const known = new Set(['descriptorHash', 'round', 'hashD', 'count', 'custodianIndex', 'shareSumSha256']);
    const answer = (a.answer ?? {}) as unknown as Record<string, unknown>;
    return Object.keys(answer)
      .filter((k) => !known.has(k))
      .sort()
      .map((k) => [k, answer[k]]);
  };
  return [
    'committee',
    d.descriptorHash,
    d.hashD,
    d.manifestDigests,
    (d.answers ?? []).map((a) => [
      a.answer?.descriptorHash,
      a.answer?.round,
      a.answer?.hashD,
      a.answer?.count,
      a.answer?.custodianIndex,
      a.answer?.shareSumSha256,
      a.signature,
      ...extra(a),
    ]),
  ];
}

export interface VerifyResult {
  ok: boolean;
  entries: number;
  /** First entry that does not match, and why. */
  firstMismatch: { sequence: number; reason: string } | null;
}

/**
 * Recomputes the hash chain and, with `recomputeEpsilon`, every cumulative ε
 * from the recorded mechanism parameters. Names the first entry that differs.
 */
export function verifyLedger(
  entries: readonly LedgerEntry[],
  recomputeEpsilon: (upTo: readonly LedgerEntry[]) => number,
  tolerance = 1e-9,
  /** Further checks of one entry (e.g. custodian signatures): a reason when it fails, null when it passes. */
  checkEntry: (entry: LedgerEntry) => string | null = () => null,
  /** Recomputes an entry's `epsilonCoordinator` (when it has one) from the entries up to it. */
  recomputeCoordinatorEpsilon: (upTo: readonly LedgerEntry[]) => number = () => Number.NaN,
): VerifyResult {
  let prev = GENESIS_HASH;
  for (let i = 0; i < entries.length; i++) {
    const e = entries[i]!;
    const fail = (reason: string): VerifyResult => ({ ok: false, entries: entries.length, firstMismatch: { sequence: e.sequence, reason } });
    if (e.sequence !== i + 1) return fail(`sequence ${e.sequence} where ${i + 1} was expected (entry missing or reordered)`);
    if (e.prevHash !== prev) return fail('prevHash does not match the previous entry');
    // Before the hash: an altered answer is named for what it is, even when the chain was recomputed around it.
    const problem = checkEntry(e);
    if (problem !== null) return fail(problem);
    if (hashLedgerEntry(e, e.prevHash) !== e.hash) return fail('hash does not match the entry (a field was altered)');
    if (e.participants !== e.participantIds.length) return fail('participants differs from the recorded participant ids');
    const epsilon = recomputeEpsilon(entries.slice(0, i + 1));
    if (!(Math.abs(epsilon - e.epsilon) <= tolerance * Math.max(1, Math.abs(epsilon)))) {
      return fail(`recorded epsilon ${e.epsilon} differs from ${epsilon} recomputed from the recorded parameters`);
    }
    if (e.epsilonCoordinator != null) {
      const against = recomputeCoordinatorEpsilon(entries.slice(0, i + 1));
      if (!(Math.abs(against - e.epsilonCoordinator) <= tolerance * Math.max(1, Math.abs(against)))) {
        return fail(`recorded epsilon against the coordinator ${e.epsilonCoordinator} differs from ${against} recomputed without amplification`);
      }
    }
    prev = e.hash;
  }
  return { ok: true, entries: entries.length, firstMismatch: null };
}
