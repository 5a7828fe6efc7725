import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createBlobStore, type BlobStore } from './blob-store.js';

describe('blob store', () => {
  let dir: string;
  let store: BlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'veil-blobs-'));
    store = createBlobStore({ dir });
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  it('stores, verifies and deletes blobs, leaving no temporary files', async () => {
    const ref = await store.put('models/t/1.bin', Buffer.from('hello'));
    // SHA-256("hello"), FIPS 180-4 test value.
    expect(ref.sha256).toBe('2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
    expect((await store.get(ref)).toString()).toBe('hello');
    expect(await readdir(join(dir, 'models/t'))).toEqual(['1.bin']);
    await store.delete('models/t/1.bin');
    await expect(store.get(ref)).rejects.toThrow(/missing/);
  });

  it('detects a corrupted blob instead of returning it', async () => {
    const ref = await store.put('updates/r/c.bin', Buffer.from([1, 2, 3]));
    await writeFile(join(dir, 'updates/r/c.bin'), Buffer.from([1, 2, 4]));
    await expect(store.get(ref)).rejects.toThrow(/corrupted/);
  });

  it('refuses keys that escape the store', async () => {
    await expect(store.put('../x', Buffer.from('x'))).rejects.toThrow(/invalid blob key/);
    await expect(store.put('/etc/passwd', Buffer.from('x'))).rejects.toThrow(/invalid blob key/);
  });
});
