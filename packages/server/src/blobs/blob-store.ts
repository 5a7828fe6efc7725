import { createHash, randomUUID } from 'node:crypto';
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join, normalize, sep } from 'node:path';
import { VeilError } from '../errors.js';

/** A stored blob's identity: where it is and what it must hash to. */
export interface BlobRef {
  key: string;
  sha256: string;
  sizeBytes: number;
}

/**
 * Blob store on local disk for model weights and client updates. Writes are
 * atomic (temporary file, fsync, rename); reads verify the SHA-256 recorded
 * in the database, so a corrupted file is detected, never used.
 */
export interface BlobStore {
  /**
   * Writes a blob durably (fsync, then an atomic rename). `sha256`: the data's
   * hex digest when the caller computed it already from the same bytes (it is
   * recorded as is; a wrong one makes every later read fail as corrupted).
   */
  put(key: string, data: Uint8Array, sha256?: string): Promise<BlobRef>;
  /** Reads and verifies a blob; throws VeilError('internal') when missing or corrupted. */
  get(ref: { key: string; sha256: string }): Promise<Buffer>;
  delete(key: string): Promise<void>;
}

export interface BlobStoreOptions {
  /** Root directory; created when missing. */
  dir: string;
}

export function createBlobStore(options: BlobStoreOptions): BlobStore {
  const root = normalize(options.dir);
  const createdDirs = new Set<string>();
  const pathOf = (key: string): string => {
    if (!/^[a-zA-Z0-9_][a-zA-Z0-9/_.-]*$/.test(key) || key.includes('..')) throw new Error(`invalid blob key ${key}`);
    const path = normalize(join(root, key));
    if (!path.startsWith(root + sep)) throw new Error(`blob key escapes the store: ${key}`);
    return path;
  };
  return {
    async put(key, data, sha256) {
      const path = pathOf(key);
      const dir = dirname(path);
      // One mkdir per directory per process, not per blob (a round's updates share one).
      if (!createdDirs.has(dir)) {
        await mkdir(dir, { recursive: true });
        createdDirs.add(dir);
        if (createdDirs.size > 10_000) createdDirs.clear();
      }
      const tmp = `${path}.${randomUUID()}.tmp`;
      const handle = await open(tmp, 'w').catch(async (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOENT') throw error;
        // The directory went away since it was created (removed by hand): create it again.
        await mkdir(dir, { recursive: true });
        return open(tmp, 'w');
      });
      try {
        await handle.writeFile(data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await rename(tmp, path);
      return { key, sha256: sha256 ?? createHash('sha256').update(data).digest('hex'), sizeBytes: data.byteLength };
    },
    async get(ref) {
      let data: Buffer;
      try {
        data = await readFile(pathOf(ref.key));
      } catch (error) {
        throw new VeilError('internal', `blob ${ref.key} is missing`, { cause: error });
      }
      const digest = createHash('sha256').update(data).digest('hex');
      if (digest !== ref.sha256) throw new VeilError('internal', `blob ${ref.key} is corrupted (digest mismatch)`);
      return data;
    },
    async delete(key) {
      await rm(pathOf(key), { force: true });
    },
  };
}

/** Blob key of a global model version. */
export const modelBlobKey = (taskId: string, version: number): string => `models/${taskId}/${version}.bin`;
/** Blob key of a client's update in a round. */
export const updateBlobKey = (roundId: string, clientId: string): string => `updates/${roundId}/${clientId}.bin`;
