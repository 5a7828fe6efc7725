/**
 * The model cache on its own: a store and blob store that count their reads,
 * so each test shows which reads reach storage and which memory answers.
 */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { modelBlobKey } from '../blobs/blob-store.js';
import { VeilError } from '../errors.js';
import { createModelCache, type ModelCacheOptions, type StoredModel } from './model-cache.js';

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');
const bytesOf = (taskId: string, version: number): Buffer => Buffer.from(`${taskId} v${version}`);

/** Versions 0..`versions`-1 of tasks `a` and `b`, stored; `reads` counts store and blob reads. */
function storage(versions: number) {
  const reads: string[] = [];
  const options: ModelCacheOptions = {
    store: {
      async getModelVersion(taskId, version) {
        reads.push(`meta ${taskId}:${version}`);
        if (version >= versions) return null;
        const bytes = bytesOf(taskId, version);
        return { taskId, version, sha256: sha256(bytes), sizeBytes: bytes.byteLength, encoding: 'float32-le', roundNumber: null, strategyState: null, createdAt: new Date(0) };
      },
    },
    blobs: {
      async get(ref) {
        reads.push(`blob ${ref.key}`);
        const [, taskId, file] = ref.key.split('/');
        const bytes = bytesOf(taskId!, Number(file!.replace('.bin', '')));
        if (sha256(bytes) !== ref.sha256) throw new VeilError('internal', 'corrupted');
        return bytes;
      },
    },
  };
  return { reads, options };
}

const written = (taskId: string, version: number): StoredModel => {
  const bytes = bytesOf(taskId, version);
  return { version, bytes, sha256: sha256(bytes), encoding: 'float32-le' };
};

describe('model cache', () => {
  it('reads a version from storage once, digest checked, then from memory', async () => {
    const { reads, options } = storage(3);
    const cache = createModelCache(options);
    const first = await cache.read('a', 1);
    expect(first).toEqual({ version: 1, bytes: bytesOf('a', 1), sha256: sha256(bytesOf('a', 1)), encoding: 'float32-le' });
    expect(await cache.read('a', 1)).toBe(first);
    expect(reads).toEqual(['meta a:1', `blob ${modelBlobKey('a', 1)}`]);
    await expect(cache.read('a', 7)).rejects.toMatchObject({ code: 'not_found', message: 'task a has no model version 7' });
  });

  it("keeps each task's current version whatever else is read, and the one it replaces with the recent ones", async () => {
    const { reads, options } = storage(10);
    const cache = createModelCache({ ...options, entries: 1 });
    expect(cache.current('a')).toBeNull();
    cache.setCurrent('a', written('a', 4));
    cache.setCurrent('b', written('b', 2));
    // Reads of other versions go through the one-entry LRU and never push a current version out.
    await cache.read('a', 0);
    await cache.read('b', 0);
    expect(reads).toEqual(['meta a:0', `blob ${modelBlobKey('a', 0)}`, 'meta b:0', `blob ${modelBlobKey('b', 0)}`]);
    reads.length = 0;
    expect((await cache.read('a', 4)).bytes).toEqual(bytesOf('a', 4));
    expect((await cache.read('b', 2)).bytes).toEqual(bytesOf('b', 2));
    expect(cache.current('a')?.version).toBe(4);
    // A newer version becomes current; the old one is still served from memory.
    cache.setCurrent('a', written('a', 5));
    expect(cache.current('a')?.version).toBe(5);
    expect((await cache.read('a', 4)).bytes).toEqual(bytesOf('a', 4));
    expect(reads).toEqual([]);
    // The LRU holds one entry: reading b's version 0 again evicts a's version 4.
    await cache.read('b', 0);
    await cache.read('a', 4);
    expect(reads).toEqual(['meta b:0', `blob ${modelBlobKey('b', 0)}`, 'meta a:4', `blob ${modelBlobKey('a', 4)}`]);
  });

  it('drops a newer current version replaced by an older one (written for a round that then failed)', async () => {
    const { reads, options } = storage(3);
    const cache = createModelCache(options);
    cache.setCurrent('a', written('a', 2));
    const uncommitted = { ...written('a', 3), bytes: Buffer.from('never committed') };
    cache.setCurrent('a', uncommitted);
    cache.setCurrent('a', written('a', 2));
    // Version 3 is not kept: asked for it, the cache goes to the store (which has none).
    await expect(cache.read('a', 3)).rejects.toMatchObject({ code: 'not_found' });
    expect(reads).toEqual(['meta a:3']);
  });
});
