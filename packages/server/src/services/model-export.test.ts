import { describe, expect, it } from 'vitest';
import { VeilError } from '../errors.js';
import type { Task } from '../rounds/model.js';
import { createModelExportService } from './model-export.js';

const topology = {
  class_name: 'Sequential',
  config: { name: 'tiny', layers: [{ class_name: 'Dense', config: { name: 'dense', units: 3, activation: 'linear', batch_input_shape: [null, 4] } }] },
};
const weightSpecs = [
  { name: 'dense/kernel', shape: [4, 3], dtype: 'float32' },
  { name: 'dense/bias', shape: [3], dtype: 'float32' },
];

function service(encodings: string[]) {
  const task = { id: 't', modelTopology: topology, weightSpecs, currentModelVersion: encodings.length - 1 } as unknown as Task;
  return createModelExportService({
    getTask: async () => task,
    readModelVersion: async (_id, version) => ({ version, encoding: encodings[version]!, bytes: new Uint8Array(15 * 4) }),
  });
}

describe('model export service', () => {
  it("refuses an encrypted task's ciphertext versions with failed_precondition, and exports its plaintext version 0", async () => {
    const s = service(['float32-le', 'bfv-sum-v1']);
    const refused = await s.exportModel('t', { format: 'onnx', quantize: 'none' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(VeilError);
    expect(refused).toMatchObject({ code: 'failed_precondition', message: expect.stringMatching(/encrypted sum; only a key holder/) });
    const v0 = await s.exportModel('t', { format: 'onnx', quantize: 'none', version: 0 });
    expect({ version: v0.version, quantization: v0.quantization, nonEmpty: v0.bytes.byteLength > 0 }).toEqual({ version: 0, quantization: 'float32', nonEmpty: true });
  });
});
