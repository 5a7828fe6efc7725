/**
 * The TensorFlow.js `model.json` of a task's model version. Plaintext tasks
 * get a layers model whose weights manifest points at the version's blob;
 * encrypted tasks get the chain of versions a key holder applies in order
 * (version 0 is the plaintext initial model, each later version the encrypted
 * sum of a round; @veil/client-sdk `decryptGlobalModel`), with the
 * distributed-DP parameters the sums are decoded with when the task uses them.
 */
import { VeilError } from '../errors.js';
import type { ModelVersion, Task } from '../rounds/model.js';
import type { FederationStore } from '../rounds/ports.js';

type VersionMeta = Pick<ModelVersion, 'sha256' | 'sizeBytes' | 'encoding'>;

/** model.json for `version`, given the metadata of versions 0..version (encrypted tasks) or of `version` alone. */
export function modelDocument(task: Task, version: number, versions: ReadonlyMap<number, VersionMeta>) {
  const meta = versions.get(version);
  if (meta === undefined) throw new VeilError('not_found', `task has no model version ${version}`);
  if (task.encryption === null) {
    return {
      format: 'layers-model',
      generatedBy: 'veil',
      convertedBy: null,
      modelTopology: task.modelTopology,
      weightsManifest: [{ paths: [`model/weights.bin?version=${version}`], weights: task.weightSpecs }],
      veil: { taskId: task.id, version, sha256: meta.sha256, sizeBytes: meta.sizeBytes, encoding: meta.encoding, encrypted: false },
    };
  }
  const ddg = task.settings.privacy?.ddg;
  const chain = [];
  for (let v = 0; v <= version; v++) {
    const m = versions.get(v);
    if (m === undefined) throw new VeilError('internal', `model version ${v} is missing`);
    chain.push({ version: v, path: `model/weights.bin?version=${v}`, sha256: m.sha256, sizeBytes: m.sizeBytes, encoding: m.encoding });
  }
  return {
    format: 'layers-model',
    generatedBy: 'veil',
    convertedBy: null,
    modelTopology: task.modelTopology,
    veil: {
      taskId: task.id,
      version,
      encrypted: true,
      keyId: task.encryption.keyId,
      weightSpecs: task.weightSpecs,
      chain,
      // Distributed DP (KLS21): each sum holds DDG residues, decoded with these and version v's rotation seed.
      ...(ddg != null && { distributedDp: { scale: ddg.scale, modulus: ddg.modulus, minNoiseClients: ddg.noiseClients } }),
    },
  };
}

/** Loads what `modelDocument` needs from the store. */
export async function loadModelDocument(store: FederationStore, task: Task, version: number) {
  const versions = new Map<number, VersionMeta>();
  const meta = await store.getModelVersion(task.id, version);
  if (meta === null) throw new VeilError('not_found', `task has no model version ${version}`);
  versions.set(version, meta);
  if (task.encryption !== null) {
    for (let v = 0; v < version; v++) {
      const m = await store.getModelVersion(task.id, v);
      if (m !== null) versions.set(v, m);
    }
  }
  return modelDocument(task, version, versions);
}
