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
            if (prop === 'sync') calls.push(`syncing ${path}`);
            await (value as () => Promise<void>).call(target);
            calls.push(`${prop} ${path}`);
          };
        }
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
  return {
    ...fs,
    open: async (path: string, flags?: string, mode?: number) => {
      const handle = await fs.open(path, flags, mode);
      if (flags?.startsWith('w')) calls.push(`create ${path}`);
      return observed(path, handle);
    },
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

  it('writes an unreferenced blob in place: no temporary file or rename, its directory fsynced after it exists, the data fsynced, both before it returns', async () => {
    const store = createBlobStore({ dir: root });
    const t = join(root, 'models', 't');
    await store.put('models/t/0.bin', Buffer.from('initial')); // the directory exists already, as for a task's next version
    calls.length = 0;
    const data = Buffer.from('model version 1');
    const ref = await store.write!('models/t/1.bin', data);
    const file = join(t, '1.bin');
    expect(calls.filter((c) => c.startsWith('rename') || c.includes('.tmp'))).toEqual([]);
    expect(calls).toContain(`sync ${file}`);
    // The directory's fsync starts once the name exists (it covers the new entry) and ends before the write returns.
    expect(calls.indexOf(`syncing ${t}`)).toBeGreaterThan(calls.indexOf(`create ${file}`));
    expect(calls).toContain(`sync ${t}`);
    expect(calls.indexOf(`create ${file}`)).toBe(0);
    expect(await store.get(ref)).toEqual(data);
    await store.close();
  });

  it('replaces a partial file a crash left at an unreferenced key (truncated, not appended to or kept)', async () => {
    const store = createBlobStore({ dir: root });
    const { writeFile, mkdir } = await import('node:fs/promises');
    await mkdir(join(root, 'models', 't'), { recursive: true });
    await writeFile(join(root, 'models', 't', '2.bin'), Buffer.alloc(4096, 7)); // longer than the blob
    const data = Buffer.from('model version 2');
    const ref = await store.write!('models/t/2.bin', data);
    expect(await store.get(ref)).toEqual(data);
    await store.close();
  });

  it('each concurrent writer\'s directory fsync starts after its file exists (one requested while another runs is a new one)', async () => {
    const store = createBlobStore({ dir: root });
    await store.put('models/t/0.bin', Buffer.from('initial'));
    const t = join(root, 'models', 't');
    calls.length = 0;
    await Promise.all([1, 2, 3].map((v) => store.write!(`models/t/${v}.bin`, Buffer.from(`v${v}`))));
    const creates = calls.map((c, i) => [c, i] as const).filter(([c]) => c.startsWith('create '));
    const dirSyncs = calls.map((c, i) => [c, i] as const).filter(([c]) => c === `syncing ${t}`);
    // Every created file has a directory fsync that started after its creation.
    expect(creates).toHaveLength(3);
    for (const [, at] of creates) expect(dirSyncs.some(([, s]) => s > at)).toBe(true);
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

  it('creates the next segment, file and directory entry durable, ahead of time: the append that rolls into it creates and syncs nothing else', async () => {
    const store = createBlobStore({ dir: root, segmentBytesLimit: 1000 });
    const dir = join(root, 'updates', 'tasks', 't');
    // Two 400-byte records (352-byte payloads): the segment is half full, so its successor is created in the background.
    const first = await store.append('updates/tasks/t', Buffer.alloc(352, 1));
    await store.append('updates/tasks/t', Buffer.alloc(352, 2));
    const creates = (): string[] => calls.filter((c) => c.startsWith('create '));
    for (const until = Date.now() + 10_000; calls.filter((c) => c === `sync ${dir}`).length < 2; ) {
      if (Date.now() > until) throw new Error('the next segment was not created');
      await new Promise((resolve) => setTimeout(resolve, 2));
    }
    expect(creates()).toHaveLength(2);
    const next = creates()[1]!.slice('create '.length);
    // Its directory entry is durable (a directory fsync that started after it was created).
    expect(calls.indexOf(`syncing ${dir}`, calls.indexOf(`create ${next}`))).toBeGreaterThan(-1);
    calls.length = 0;
    const rolled = await store.append('updates/tasks/t', Buffer.alloc(352, 3));
    expect(join(root, rolled.key.split('#')[0]!)).toBe(next);
    expect(join(root, rolled.key.split('#')[0]!)).not.toBe(join(root, first.key.split('#')[0]!));
    // The full segment is closed; nothing else is opened, created or synced: one fdatasync of the record.
    expect(calls).toEqual([`datasync ${next}`]);
    await store.close();
  });
});
