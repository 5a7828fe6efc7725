import { bytesToFloat32, float32ToBytes, float32View } from '@veil/protocol/codec';
import {
  createCiphertextAccumulator,
  loadUpdate,
  readPayloadHeader,
  CryptoError,
  type CiphertextAccumulator,
  type HeContext,
  type LoadedUpdate,
} from '@veil/crypto';
import { VeilError } from '../errors.js';
import { assertFinite } from '../rounds/task-settings.js';
import type { CommitteeRoundSummary, ModelEncoding, UpdateBound } from '../rounds/model.js';
import type { LedgerDecryption } from '../privacy/ledger.js';
import { boundedValues, refuseOverBound, updateNorm } from './update-bound.js';
import type { Aggregator, AggregatorInput, FitFailure, Strategy, StrategyState } from './strategy.js';

/** A model blob with its encoding. */
export interface ModelBlob {
  bytes: Uint8Array;
  encoding: ModelEncoding;
}

/**
 * An update validated once: its payload and, for plaintext updates, the
 * decoded values (so folding does not decode again).
 */
export interface CheckedUpdate {
  readonly payload: Uint8Array;
  readonly values?: Float32Array;
  /** Encrypted updates: the ciphertexts loaded by the check, added without parsing again (see {@link releaseChecked}). */
  readonly loaded?: LoadedUpdate;
  /** Updates added to the aggregate before they were recorded ({@link RoundAggregator.foldEarly}): takes it out again unless `add` confirmed it. */
  readonly unfold?: () => void;
  /** Hex SHA-256 of the payload, when the check hashed it anyway (a committee upload: in one pass with its c0). */
  readonly payloadSha256?: string;
}

/**
 * Frees what a checked update holds unless an aggregator took it, and takes an update folded
 * early out of the aggregate unless it was confirmed (idempotent; a no-op for plaintext).
 */
export function releaseChecked(update: CheckedUpdate): void {
  update.loaded?.dispose();
  update.unfold?.();
}

/** A round's outcome: the next model, the strategy state that goes with it, and (committee rounds) who approved it. */
export interface RoundResult {
  model: ModelBlob;
  state: StrategyState | null;
  /** Committee rounds: the custodians' signed answers used for the decryption. */
  committee?: CommitteeRoundSummary;
  /** Committee rounds: what the privacy ledger records of the decryption (D's device ids and manifest digests, the answers). */
  decryption?: { clientIds: string[]; record: LedgerDecryption };
}

/**
 * What the round engine folds updates into, whatever their encoding. Updates
 * are validated first, without changing anything (`checkPlaintextUpdate`,
 * `checkEncryptedUpdate`), so a rejected update is never recorded; `add` folds
 * an update that was checked and recorded (raw bytes, or the checked form).
 */
export interface RoundAggregator {
  /** `trainingLoss`: the device's F_k(w_t) when the round asked for it (FitResult.trainingLoss), else null. */
  add(clientId: string, exampleCount: number, update: Uint8Array | CheckedUpdate, trainingLoss?: number | null): void;
  /**
   * Optional: checks an update and adds it to the aggregate provisionally, before it is recorded
   * (outside the task's lock). `add` with the returned update confirms it without adding again;
   * {@link releaseChecked} of an unconfirmed one takes it out; `finish` and `count` leave out every
   * update not confirmed. Exactly once: an update is in the aggregate iff `add` accepted it.
   */
  foldEarly?(clientId: string, payload: Uint8Array): CheckedUpdate;
  readonly count: number;
  /**
   * The next model version's blob and the strategy state that goes with it,
   * from the current ones; null to keep the model (and its state).
   */
  finish(current: ModelBlob, failures: readonly FitFailure[], state: StrategyState | null): RoundResult | null | Promise<RoundResult | null>;
  /**
   * Optional: the round takes no more updates (its move to AGGREGATING is committing): precompute
   * what `finish` needs from the updates alone, while the engine waits for the store. An `add`
   * afterwards drops what was precomputed.
   */
  prepare?(): void;
  /**
   * Optional: the updates are final and the store's record of them matches this aggregate (the
   * move to AGGREGATING may still be committing): start the slow part of `finish` that depends on
   * the updates alone — a committee round asks its custodians here. `finish` uses what was started.
   */
  startFinish?(): void;
  dispose(): void;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

const isAligned = (bytes: Uint8Array): boolean => LITTLE_ENDIAN && bytes.byteOffset % 4 === 0 && bytes.byteLength % 4 === 0;

/** Values read through a scratch array, reused by the next call: used and dropped before it. */
let scratch = new Float32Array(0);

/**
 * float32-le bytes as values: a zero-copy view when aligned (on little-endian hosts); otherwise
 * (an update arrives at an odd offset inside its gRPC message) a copy into `scratch`, valid until
 * the next call: no allocation per update (every allocation of an update's size brings V8's next
 * full garbage collection closer).
 */
function float32Values(bytes: Uint8Array): { values: Float32Array; retainable: boolean } {
  if (isAligned(bytes)) return { values: new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4), retainable: true };
  const n = bytes.byteLength / 4;
  if (!LITTLE_ENDIAN) return { values: bytesToFloat32(bytes), retainable: true };
  if (scratch.length < n) scratch = new Float32Array(n);
  new Uint8Array(scratch.buffer, 0, bytes.byteLength).set(bytes);
  return { values: scratch.subarray(0, n), retainable: false };
}

/**
 * Validates a plaintext (float32) update for a model of `parameterCount` values: size, finite
 * values, and the task's bound when it refuses (`onExceed: 'reject'`). Its decoded values
 * are kept when they are a view of the payload (so folding does not decode again); otherwise
 * folding reads the payload again, through the scratch array.
 */
export function checkPlaintextUpdate(payload: Uint8Array, parameterCount: number, bound: UpdateBound | null = null): CheckedUpdate {
  if (payload.byteLength !== parameterCount * 4) {
    throw new VeilError('invalid_argument', `update has ${payload.byteLength} bytes, the model needs ${parameterCount * 4}`);
  }
  const { values, retainable } = float32Values(payload);
  // Under a refusing bound one pass gives the norm and finiteness (NaN: some value is not finite).
  const norm = bound !== null && bound.onExceed === 'reject' ? updateNorm(values, bound.norm) : Number.NaN;
  if (Number.isNaN(norm)) assertFinite(values, 'update');
  if (bound !== null) refuseOverBound(norm, bound);
  return retainable ? { payload, values } : { payload };
}

/**
 * Plaintext updates (float32 deltas) aggregated by a strategy, each bounded by `bound` when folded
 * (clipped, or refused again when rebuilt from the store).
 */
export function createPlaintextAggregator(strategy: Strategy, input: AggregatorInput, bound: UpdateBound | null = null): RoundAggregator {
  const { round, parameterCount } = input;
  const inner: Aggregator = strategy.createAggregator(input);
  return {
    add(clientId, exampleCount, update, trainingLoss = null) {
      // Raw bytes (a round rebuilt from the store) are checked here; a checked update was already.
      const checked = update instanceof Uint8Array ? checkPlaintextUpdate(update, parameterCount, bound) : update;
      // Unaligned bytes keep no values (checkPlaintextUpdate): read them again through the scratch array.
      const raw = checked.values ?? float32Values(checked.payload).values;
      // A `reject` bound was checked by checkPlaintextUpdate (here for raw bytes); a `clip` bound clips now.
      const values = bound === null ? raw : boundedValues(raw, bound);
      // Aggregators fold `values` before returning and keep none of it (Aggregator.add's contract).
      inner.add({ clientId, exampleCount, update: values, ...(trainingLoss !== null && { trainingLoss }) });
    },
    get count() {
      return inner.count;
    },
    finish(current, failures, state) {
      if (current.encoding !== 'float32-le') throw new VeilError('internal', 'plaintext task with a non-float32 model');
      // The current model is read in place (strategies do not modify `current`) and the next one's
      // bytes are its parameters' own memory (a fresh array each strategy gives away): no copy of
      // the model's size each round (each allocation of that size brings the next full GC closer).
      const next = inner.finish({ round, current: float32View(current.bytes), failures, state });
      if (next === null) return null;
      if (next.parameters.length !== parameterCount) {
        throw new VeilError('internal', `strategy ${strategy.name} returned ${next.parameters.length} parameters, the model has ${parameterCount}`);
      }
      assertFinite(next.parameters, 'aggregated model');
      if (next.state !== null) checkStrategyState(next.state, strategy.name);
      const parameters = next.parameters;
      const bytes = LITTLE_ENDIAN ? new Uint8Array(parameters.buffer, parameters.byteOffset, parameters.byteLength) : float32ToBytes(parameters);
      return { model: { bytes, encoding: 'float32-le' }, state: next.state };
    },
    dispose() {},
  };
}

/** Maps @veil/crypto errors on client payloads to the coordinator's codes. */
export function payloadError(error: unknown): VeilError {
  if (error instanceof VeilError) return error;
  if (error instanceof CryptoError) {
    return new VeilError(error.code === 'headroom_exceeded' ? 'resource_exhausted' : 'invalid_argument', `encrypted update rejected: ${error.message}`, {
      cause: error,
    });
  }
  return VeilError.from(error);
}

/**
 * Encrypted updates (BFV, @veil/crypto) summed homomorphically: the
 * coordinator holds no secret key; the round's encrypted sum becomes the next
 * model version, which key holders decrypt and apply
 * (w_v = w_{v-1} + Σ w_i Δ_i / Σ w_i).
 */
function checkEncryptedHeader(ctx: HeContext, parameterCount: number, payload: Uint8Array, exampleCount: number): void {
  const header = readPayloadHeader(payload);
  if (header.kind !== 'update' || header.clientCount !== 1) throw new VeilError('invalid_argument', 'payload is not a single client update');
  if (header.keyId !== ctx.keyId) throw new VeilError('invalid_argument', "payload is encrypted under another key than the task's");
  if (header.valueCount !== parameterCount) {
    throw new VeilError('invalid_argument', `payload holds ${header.valueCount} values, the model has ${parameterCount}`);
  }
  if (header.totalWeight !== exampleCount) {
    throw new VeilError('invalid_argument', `payload weight ${header.totalWeight} differs from the declared example count ${exampleCount}`);
  }
}

/**
 * Validates an encrypted update fully without touching any round's sum: its
 * header against the task, then every check @veil/crypto and SEAL run when
 * adding it (`loadUpdate`). The loaded ciphertexts are kept, so folding the
 * update does not parse it again; whoever holds the result calls
 * {@link releaseChecked} once it is folded or refused.
 */
export function checkEncryptedUpdate(ctx: HeContext, parameterCount: number, payload: Uint8Array, exampleCount: number): CheckedUpdate {
  try {
    checkEncryptedHeader(ctx, parameterCount, payload, exampleCount);
    return { payload, loaded: loadUpdate(ctx, payload, { valueCount: parameterCount }) };
  } catch (error) {
    throw payloadError(error);
  }
}

export function createEncryptedAggregator(ctx: HeContext, parameterCount: number): RoundAggregator {
  let sum: CiphertextAccumulator | null = createCiphertextAccumulator(ctx, { valueCount: parameterCount });
  return {
    add(_clientId, exampleCount, update) {
      if (sum === null) throw new VeilError('internal', 'aggregator disposed');
      try {
        if (!(update instanceof Uint8Array) && update.loaded !== undefined) {
          // Checked by checkEncryptedUpdate against this task (header and weight included).
          sum.addLoaded(update.loaded);
          return;
        }
        const payload = update instanceof Uint8Array ? update : update.payload;
        checkEncryptedHeader(ctx, parameterCount, payload, exampleCount);
        sum.add(payload);
      } catch (error) {
        throw payloadError(error);
      }
    },
    get count() {
      return sum?.count ?? 0;
    },
    finish() {
      if (sum === null || sum.count === 0) return null;
      // Encrypted tasks run stateless strategies only (capabilities are checked at task creation).
      return { model: { bytes: sum.toPayload(), encoding: 'bfv-sum-v1' }, state: null };
    },
    dispose() {
      sum?.dispose();
      sum = null;
    },
  };
}

/** Refuses a state the loop could not store faithfully (non-finite numbers). */
export function checkStrategyState(state: StrategyState, strategy: string): void {
  for (const [name, value] of Object.entries(state.scalars)) {
    if (!Number.isFinite(value)) throw new VeilError('internal', `strategy ${strategy} returned a non-finite state scalar ${name}`);
  }
  for (const [name, vector] of Object.entries(state.vectors)) {
    if (!(vector instanceof Float32Array)) throw new VeilError('internal', `strategy ${strategy} state vector ${name} is not a Float32Array`);
    assertFinite(vector, `strategy state ${name}`);
  }
}
