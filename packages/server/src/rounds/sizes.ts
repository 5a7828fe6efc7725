import { maxUpdateBytes as maxPayloadBytes, type C0Bits, type TaskDescriptor } from '@veil/crypto';
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
  if (committee != null) return maxPayloadBytes({ encoding: 'committee-v1', valueCount: updateValueCount(task), ...committeeShape(committee) });
  if (task.encryption === null) return maxPayloadBytes({ encoding: 'float32-le', valueCount: task.parameterCount });
  return maxPayloadBytes({ encoding: 'bfv-v1', preset: task.encryption.preset, valueCount: updateValueCount(task) });
}

/** Custodians and c0 width per committee descriptor, parsed once per task settings (each upload checks its size several times). */
const committeeShapes = new WeakMap<CommitteeSettings, { committeeSize: number; c0Bits?: C0Bits }>();

function committeeShape(committee: CommitteeSettings): { committeeSize: number; c0Bits?: C0Bits } {
  let shape = committeeShapes.get(committee);
  if (shape === undefined) {
    const descriptor = JSON.parse(Buffer.from(committee.descriptor, 'base64').toString('utf8')) as TaskDescriptor;
    const c0Bits = descriptor.encoding.c0Bits;
    shape = { committeeSize: descriptor.committee.length, ...(c0Bits !== undefined && { c0Bits }) };
    committeeShapes.set(committee, shape);
  }
  return shape;
}
