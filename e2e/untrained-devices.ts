/**
 * Shared by the e2e crash tests that need no training (restart.test.ts, model-write-crash.test.ts):
 * a 784-10 softmax regression that only has to have a shape, devices that hold a gRPC transport,
 * a credential and an assignment, and updates whose FedAvg is exact in float32, so a lost or doubled
 * update shows in the model.
 */
import { withRetry, type Assignment, type Transport } from '@veil/client-sdk';

export const WEIGHT_SPECS = [
  { name: 'dense/kernel', shape: [784, 10], dtype: 'float32' },
  { name: 'dense/bias', shape: [10], dtype: 'float32' },
] as const;
export const PARAMETERS = 784 * 10 + 10;

/** The TF.js topology of that model, named `name`. */
export const topology = (name: string) => ({
  class_name: 'Sequential',
  config: {
    name,
    layers: [{ class_name: 'Dense', config: { name: 'dense', units: 10, activation: 'softmax', use_bias: true, batch_input_shape: [null, 784] } }],
  },
  keras_version: 'tfjs-layers 4.22.0',
  backend: 'tensor_flow.js',
});

/** Device k's update: every value k + 1 plus a per-index offset in sixteenths (exact in float32). */
export const deltaOf = (k: number): Float32Array => Float32Array.from({ length: PARAMETERS }, (_, i) => k + 1 + (i % 16) / 16);
/** Device k's weight: 10·(k+1) examples, so a lost or doubled update moves the weighted mean. */
export const examplesOf = (k: number): number => 10 * (k + 1);

/** A device without training: a gRPC transport, its credential and its assignment. */
export interface Device {
  index: number;
  transport: Transport;
  credential: string;
  assignment: Assignment;
  payload: Uint8Array;
  sha256: string;
}

/** Retries UNAVAILABLE (and the SDK's other transient codes) while the coordinator is down or restarting. */
export const retrying = <T>(fn: () => Promise<T>): Promise<T> => withRetry(fn, { maxAttempts: 60, initialDelayMs: 100, maxDelayMs: 1_000 });

/** Device's update for its assignment. */
export const submit = (device: Device): Promise<{ acceptedCount: number }> =>
  device.transport.submitUpdate(
    device.credential,
    {
      roundNumber: device.assignment.roundNumber,
      modelVersion: device.assignment.modelVersion,
      exampleCount: examplesOf(device.index),
      encoding: 'float32-le',
      sha256: device.sha256,
    },
    device.payload,
  );

/** `initial` plus the example-weighted mean of the devices' deltas, computed in float64 and rounded once. */
export function expectedFedAvg(initial: Float32Array, devices: readonly Device[]): Float32Array {
  const totalExamples = devices.reduce((sum, d) => sum + examplesOf(d.index), 0);
  const deltas = devices.map((d) => deltaOf(d.index));
  const expected = new Float32Array(PARAMETERS);
  for (let i = 0; i < PARAMETERS; i++) {
    let sum = 0;
    for (const [j, d] of devices.entries()) sum += examplesOf(d.index) * deltas[j]![i]!;
    expected[i] = initial[i]! + sum / totalExamples;
  }
  return expected;
}
