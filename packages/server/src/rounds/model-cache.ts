import { modelBlobKey, type BlobStore } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import type { ModelEncoding } from './model.js';
import type { FederationStore } from './ports.js';

/** A stored global model version (digest verified on read). */
export interface StoredModel {
  version: number;
  bytes: Buffer;
  sha256: string;
  encoding: ModelEncoding;
}

export interface ModelCacheOptions {
  store: Pick<FederationStore, 'getModelVersion'>;
  blobs: Pick<BlobStore, 'get'>;
  /** Versions kept in memory (all tasks together), least recently read evicted first. Default 8. */
  entries?: number;
}

/** Reads model versions from the blob store, digest verified, keeping the most recently read in memory. */
export interface ModelCache {
  /** Model version `version` of a task; `not_found` when the store has none. */
  read(taskId: string, version: number): Promise<StoredModel>;
}

export function createModelCache(options: ModelCacheOptions): ModelCache {
  const entries = options.entries ?? 8;
  if (!Number.isInteger(entries) || entries < 0) throw new RangeError('entries must be a non-negative integer');
  /** Key `taskId:version`, least recently read first. */
  const cache = new Map<string, StoredModel>();
  return {
    async read(taskId, version) {
      const key = `${taskId}:${version}`;
      const cached = cache.get(key);
      if (cached !== undefined) {
        cache.delete(key);
        cache.set(key, cached);
        return cached;
      }
      const meta = await options.store.getModelVersion(taskId, version);
      if (meta === null) throw new VeilError('not_found', `task ${taskId} has no model version ${version}`);
      const bytes = await options.blobs.get({ key: modelBlobKey(taskId, version), sha256: meta.sha256 });
      const model: StoredModel = { version, bytes, sha256: meta.sha256, encoding: meta.encoding as ModelEncoding };
      cache.set(key, model);
      while (cache.size > entries) cache.delete(cache.keys().next().value!);
      return model;
    },
  };
}
