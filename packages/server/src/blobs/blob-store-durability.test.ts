import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';

/**
 * Which file-system calls the blob store makes, in order: the real node:fs/promises, observed.
 * A name is durable only once its directory is fsynced (POSIX fsync(2)): these tests fail if a
 * rename, a new segment file or a new directory is acknowledged before that.
 */
const calls: string[] = [];
vi.mock('node:fs/promises', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs/promises')>();
  const observed = (path: string, handle: import('node:fs/promises').FileHandle) =>
    new Proxy(handle, {
      get(target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown;
        if (prop === 'sync' || prop === 'datasync') {
          return async () => {
            await (value as () => Promise<void>).call(target);
            calls.push(`${prop} ${path}`);
          };
        }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  return {
    ...fs,
    open: async (path: string, flags?: string, mode?: number) => observed(path, await fs.open(path, flags, mode)),
    rename: async (from: string, to: string) => {
      await fs.rename(from, to);
      calls.push(`rename ${to}`);
    },
    mkdir: async (path: string, options: import('node:fs').MakeDirectoryOptions & { recursive: true }) => {
      const first = await fs.mkdir(path, options);
      calls.push(`mkdir ${path}`);
      return first;
    },
  };
});

const { createBlobStore } = await import('./blob-store.js');

describe('blob store durability of names', () => {
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'veil-blobs-dur-'));
    calls.length = 0;
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  it('fsyncs the directory after renaming a blob into it, and each new directory\'s parent', async () => {
    const store = createBlobStore({ dir: root });
    await store.put('models/t/1.bin', Buffer.from('hello'));
    const models = join(root, 'models');
    const t = join(models, 't');
    const file = join(t, '1.bin');
    const at = (entry: string): number => calls.indexOf(entry);
    // models/ and models/t/ are new: their entries live in root and models/.
    expect(at(`sync ${root}`)).toBeGreaterThan(at(`mkdir ${t}`));
    expect(at(`sync ${models}`)).toBeGreaterThan(at(`sync ${root}`));
    expect(at(`rename ${file}`)).toBeGreaterThan(-1);
    expect(calls.indexOf(`sync ${t}`, at(`rename ${file}`))).toBeGreaterThan(at(`rename ${file}`));
    // A second blob in the same directory: no new directory, but the rename is made durable again.
    calls.length = 0;
    await store.put('models/t/2.bin', Buffer.from('again'));
    expect(calls.filter((c) => c.startsWith('sync ') && !c.endsWith('.tmp'))).toEqual([`sync ${t}`]);
    expect(calls.at(-1)).toBe(`sync ${t}`);
    await store.close();
  });

  it('fsyncs a new segment\'s directory before its first record is acknowledged', async () => {
    const store = createBlobStore({ dir: root });
    const ref = await store.append('updates/r1', Buffer.from([1, 2, 3]));
    const dir = join(root, 'updates', 'r1');
    const segment = join(root, ref.key.split('#')[0]!);
    expect(dirname(segment)).toBe(dir);
    expect(calls).toContain(`sync ${dir}`);
    expect(calls).toContain(`sync ${join(root, 'updates')}`);
    expect(calls.indexOf(`sync ${dir}`)).toBeLessThan(calls.indexOf(`datasync ${segment}`));
    // Later records of the same segment cost no directory fsync.
    calls.length = 0;
    await store.append('updates/r1', Buffer.from([4, 5]));
    expect(calls).toEqual([`datasync ${segment}`]);
    await store.close();
  });
});
