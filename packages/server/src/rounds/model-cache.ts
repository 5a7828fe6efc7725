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
  /** Versions kept in memory besides each task's current one (all tasks together), least recently read evicted first. Default 8. */
  entries?: number;
}

/**
 * Every model version the engine holds in memory, in one place: each task's
 * current version (the one its rounds train from and assignments announce),
 * kept until replaced, and the most recently read other versions.
 */
export interface ModelCache {
  /**
   * Model version `version` of a task, digest verified when it came from the
   * blob store; `not_found` when the store has none. Ask only for committed
   * versions: `setCurrent` may hold a version whose round has not committed yet.
   */
  read(taskId: string, version: number): Promise<StoredModel>;
  /** The task's current version as last set by `setCurrent`, or null (none set since start). */
  current(taskId: string): StoredModel | null;
  /**
   * Makes `model` the task's current version: written by the coordinator (its
   * digest computed then) or read through `read`. An older version it
   * replaces joins the recently read ones (late devices may still download
   * it); a newer one (written for a round that then failed) is dropped.
   */
  setCurrent(taskId: string, model: StoredModel): void;
}

export function createModelCache(options: ModelCacheOptions): ModelCache {
  const entries = options.entries ?? 8;
  if (!Number.isInteger(entries) || entries < 0) throw new RangeError('entries must be a non-negative integer');
  /** Each task's current version. */
  const currents = new Map<string, StoredModel>();
  /** Other versions, key `taskId:version`, least recently read first. */
  const recent = new Map<string, StoredModel>();
  const remember = (taskId: string, model: StoredModel): void => {
    const key = `${taskId}:${model.version}`;
    recent.delete(key);
    recent.set(key, model);
    while (recent.size > entries) recent.delete(recent.keys().next().value!);
  };
  return {
    async read(taskId, version) {
      const current = currents.get(taskId);
      if (current !== undefined && current.version === version) return current;
      const key = `${taskId}:${version}`;
      const cached = recent.get(key);
      if (cached !== undefined) {
        remember(taskId, cached);
        return cached;
      }
      const meta = await options.store.getModelVersion(taskId, version);
      if (meta === null) throw new VeilError('not_found', `task ${taskId} has no model version ${version}`);
      const bytes = await options.blobs.get({ key: modelBlobKey(taskId, version), sha256: meta.sha256 });
      const model: StoredModel = { version, bytes, sha256: meta.sha256, encoding: meta.encoding as ModelEncoding };
      remember(taskId, model);
      return model;
    },

    current(taskId) {
      return currents.get(taskId) ?? null;
    },

    setCurrent(taskId, model) {
      const previous = currents.get(taskId);
      currents.set(taskId, model);
      recent.delete(`${taskId}:${model.version}`);
      // An older version stays readable; a newer one being replaced was never committed (its round failed).
      if (previous !== undefined && previous.version < model.version) remember(taskId, previous);
    },
  };
}
