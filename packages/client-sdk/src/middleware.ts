/**
 * Update middleware, shaped like Flower's client mods
 * (`(msg, ctx, call_next) -> msg`, adap/flower `client/typing.py`): each
 * middleware receives the local update and the round context and calls
 * `next` to continue the chain. Clipping, noise and encryption are
 * middleware; the chain ends by encoding the update into its payload.
 */

export interface RoundContext {
  taskId: string;
  clientId: string;
  roundNumber: number;
  modelVersion: number;
  /** Largest example count the coordinator accepts as the update's weight. */
  maxExampleCount: number;
  /** The strategy's fit config of the round (`assignment.config`). */
  config: Readonly<Record<string, number | string | boolean>>;
  signal: AbortSignal | undefined;
}

/**
 * `float32-le`: plaintext delta; `bfv-v1`: BFV-encrypted weighted delta (@veil/crypto, shared
 * device key); `committee-v1`: one-shot RLWE c0 + sealed shares + signed manifest (committee mode).
 */
export type UpdateEncodingName = 'float32-le' | 'bfv-v1' | 'committee-v1';

/**
 * Integer levels that a privacy mechanism produced itself (distributed DP): the
 * encryption step packs them exactly (`UpdateEncryptor.encryptLevels`) instead
 * of quantising `delta`.
 */
export interface IntegerLevels {
  /** Residues in [0, modulus); length = the mechanism's (padded) dimension. */
  readonly residues: Int32Array;
  /** m, the modulus of the residues; must equal the task's BFV plain modulus t. */
  readonly modulus: number;
}

export interface LocalUpdate {
  /** Δ = local − global, flat in weight-spec order. */
  delta: Float32Array;
  /** FedAvg weight of the update. */
  exampleCount: number;
  /** Encoded payload, once a middleware (or the final encoder) has produced it. */
  payload?: Uint8Array;
  encoding: UpdateEncodingName;
  /**
   * Set by distributed-DP middleware: the update as integer residues mod m. When
   * set, the encryption step encrypts these (weight 1) and ignores `delta`.
   */
  levels?: IntegerLevels;
  /** Free-form notes middleware leaves for later ones (e.g. the clip factor). */
  notes: Record<string, unknown>;
}

export type UpdateHandler = (update: LocalUpdate, ctx: RoundContext) => Promise<LocalUpdate>;
export type UpdateMiddleware = (update: LocalUpdate, ctx: RoundContext, next: UpdateHandler) => Promise<LocalUpdate>;

/** Composes middleware left to right around `last`. */
export function composeMiddleware(middleware: readonly UpdateMiddleware[], last: UpdateHandler): UpdateHandler {
  return middleware.reduceRight<UpdateHandler>((next, mw) => (update, ctx) => mw(update, ctx, next), last);
}
