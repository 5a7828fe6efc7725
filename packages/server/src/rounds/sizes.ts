import { MAX_MANIFEST_BYTES, committeeUploadBytesWithoutManifest, maxUpdatePayloadBytes, type TaskDescriptor } from '@veil/crypto';
import type { Task } from './model.js';

/**
 * Values an update carries: the parameters, or in distributed-DP mode the
 * parameters padded to a power of two (the devices' random rotation, KLS21).
 */
export function updateValueCount(task: Pick<Task, 'parameterCount' | 'settings'>): number {
  return task.settings.privacy?.ddg?.dimension ?? task.parameterCount;
}

/**
 * Largest update (bytes) for the task's model: exact for float32 (4 bytes per
 * parameter), for committee uploads @veil/crypto's committee sizes, and for ciphertexts the bound @veil/crypto gives for the task's
 * parameter preset (its ring dimension and primes, not a constant here).
 */
export function maxUpdateBytes(task: Pick<Task, 'parameterCount' | 'encryption' | 'settings'>): number {
  const committee = task.settings.committee;
  if (committee != null) {
    // c0 (5.5 bytes per value) + one 4,144-byte sealed share per custodian + the signed manifest.
    const descriptor = JSON.parse(Buffer.from(committee.descriptor, 'base64').toString('utf8')) as TaskDescriptor;
    return committeeUploadBytesWithoutManifest(updateValueCount(task), descriptor.committee.length) + MAX_MANIFEST_BYTES;
  }
  if (task.encryption === null) return task.parameterCount * 4;
  return maxUpdatePayloadBytes(task.encryption.preset, updateValueCount(task));
}
