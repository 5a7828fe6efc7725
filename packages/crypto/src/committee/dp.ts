/**
 * Distributed differential privacy in committee mode (issue 11, item 4; design note
 * "Differential privacy"): the distributed discrete Gaussian of Kairouz, Liu & Steinke 2021
 * ("The Distributed Discrete Gaussian Mechanism for Federated Learning with Secure
 * Aggregation", ICML 2021, Algorithm 1) with its parameters fixed by the signed descriptor, so
 * devices, custodians' floors, the coordinator and the ledger all derive the same values and
 * none of them comes from the coordinator alone.
 *
 * - Noise shares: custodians count uploads, not honest noise shares, so a released sum over
 *   |D| >= minDevices devices is guaranteed only minDevices - colludingDevices honest shares
 *   (devices that collude with the coordinator can subtract their own). Each device's share is
 *   sized for that many: σ_local = z·C/√(minDevices - colludingDevices), so the honest shares
 *   alone carry stddev >= z·C.
 * - Grid: 1/γ = 1/step, the descriptor encoding's levels per model unit: a device's integer
 *   vector (clip to C, pad to d = 2^k, randomized Hadamard rotation with a public per-round
 *   seed, scale, conditional rounding, discrete Gaussian share) is encoded level for level with
 *   weight 1, and the decrypted level sums are the integer sum of KLS21 with no modular wrap.
 * - Rotation seed: the first 32 bits (little-endian) of SHA-256("veil/ddg-rotation/v1" ||
 *   descriptorHash || round as u32 BE); the coordinator derives it to decode the round's sum.
 */
import { CryptoError } from '../errors.js';
import { sha256, utf8 } from './bytes.js';
import type { TaskDescriptor } from './descriptor.js';

const ROTATION_DOMAIN = utf8('veil/ddg-rotation/v1');

/** The distributed discrete Gaussian of a DP committee task, as its descriptor fixes it. */
export interface CommitteeDdgParams {
  /** C: L2 clip norm of one update, model units. */
  readonly clipNorm: number;
  /** z: the sum's noise stddev over the honest shares is z·C. */
  readonly noiseMultiplier: number;
  /** Devices assumed to collude with the coordinator. */
  readonly colludingDevices: number;
  /** n: the honest noise shares every decryptable sum holds, minDevices - colludingDevices. */
  readonly noiseClients: number;
  /** 1/γ = 1/step: integer-grid steps per model unit. */
  readonly scale: number;
  /** σ_local = z·C/√n, model units, rounded up to 12 significant digits (the ledger's precision). */
  readonly localStddev: number;
  /** d: the parameter count padded to a power of two (the rotation's length, the upload's value count). */
  readonly dimension: number;
  /** δ of the descriptor. */
  readonly delta: number;
}

/** Smallest power of two >= n (n >= 1). */
function nextPowerOfTwo(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** x rounded UP to 12 significant digits: never less noise than z·C/√n. */
function roundUp12(x: number): number {
  const r = Number(x.toPrecision(12));
  if (r >= x) return r;
  return Number((x + Number(`1e${Math.floor(Math.log10(x)) - 11}`)).toPrecision(12));
}

/** The DDG parameters of a DP descriptor for a model of `parameterCount` values; null without DP. */
export function committeeDdgParams(descriptor: TaskDescriptor, parameterCount: number): CommitteeDdgParams | null {
  const dp = descriptor.dp;
  if (dp === null) return null;
  if (!Number.isSafeInteger(parameterCount) || parameterCount < 1) throw new CryptoError('invalid_argument', 'parameterCount must be a positive integer');
  const noiseClients = descriptor.minDevices - dp.colludingDevices;
  if (!Number.isSafeInteger(noiseClients) || noiseClients < 1) throw new CryptoError('parameter_mismatch', 'dp.colludingDevices must be below minDevices');
  return {
    clipNorm: dp.clipNorm,
    noiseMultiplier: dp.noiseMultiplier,
    colludingDevices: dp.colludingDevices,
    noiseClients,
    scale: 1 / descriptor.encoding.step,
    localStddev: roundUp12((dp.noiseMultiplier * dp.clipNorm) / Math.sqrt(noiseClients)),
    dimension: nextPowerOfTwo(parameterCount),
    delta: dp.delta,
  };
}

/** Values per committee upload: d (padded) under DP, else the parameter count. */
export function committeeValueCount(descriptor: TaskDescriptor, parameterCount: number): number {
  return descriptor.dp === null ? parameterCount : nextPowerOfTwo(parameterCount);
}

/** The public rotation seed of `round` (see the module comment); an integer in [0, 2^32). */
export function committeeRotationSeed(descriptorHash: Uint8Array, round: number): number {
  if (descriptorHash.length !== 32) throw new CryptoError('invalid_argument', 'descriptorHash must be 32 bytes');
  if (!Number.isSafeInteger(round) || round < 0 || round > 0xffff_ffff) throw new CryptoError('invalid_argument', 'round must be a u32');
  const r = new Uint8Array(4);
  new DataView(r.buffer).setUint32(0, round, false);
  const digest = sha256(ROTATION_DOMAIN, descriptorHash, r);
  return new DataView(digest.buffer, digest.byteOffset, 4).getUint32(0, true);
}
