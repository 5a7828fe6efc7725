import { maxUpdateBytes as maxPayloadBytes, type TaskDescriptor } from '@veil/crypto';
import type { CommitteeSettings, Task } from './model.js';

/**
 * Values an update carries: the parameters, or in distributed-DP mode the
 * parameters padded to a power of two (the devices' random rotation, KLS21).
 */
export function updateValueCount(task: Pick<Task, 'parameterCount' | 'settings'>): number {
  return task.settings.privacy?.ddg?.dimension ?? task.parameterCount;
}

/**
 * Largest update (bytes) for the task: @veil/crypto's limit for the task's
 * update encoding (float32, the BFV key's parameter preset, or the committee's
 * framing for its number of custodians); no size arithmetic here.
 */
export function maxUpdateBytes(task: Pick<Task, 'parameterCount' | 'encryption' | 'settings'>): number {
  const committee = task.settings.committee;
  if (committee != null) return maxPayloadBytes({ encoding: 'committee-v1', valueCount: updateValueCount(task), committeeSize: committeeSize(committee) });
  if (task.encryption === null) return maxPayloadBytes({ encoding: 'float32-le', valueCount: task.parameterCount });
  return maxPayloadBytes({ encoding: 'bfv-v1', preset: task.encryption.preset, valueCount: updateValueCount(task) });
}

/** Custodians per committee descriptor, parsed once per task settings (each upload checks its size several times). */
const committeeSizes = new WeakMap<CommitteeSettings, number>();

function committeeSize(committee: CommitteeSettings): number {
  let size = committeeSizes.get(committee);
  if (size === undefined) {
    size = (JSON.parse(Buffer.from(committee.descriptor, 'base64').toString('utf8')) as TaskDescriptor).committee.length;
    committeeSizes.set(committee, size);
  }
  return size;
}
