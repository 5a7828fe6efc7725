import { appendFile, mkdtemp, open, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createBlobStore, parseSegment, type BlobStore } from './blob-store.js';

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

  describe('segments (append)', () => {
    const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
    const segmentFiles = async (sub: string): Promise<string[]> => (await readdir(join(dir, sub))).filter((f) => f.endsWith('.seg'));

    it('appends records to one segment per directory and reads each back verified', async () => {
      const a = await store.append('updates/r1', Buffer.from('hello'));
      const b = await store.append('updates/r1', Buffer.from([1, 2, 3, 4]));
      expect(a.sha256).toBe('2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
      expect(a.key).toMatch(/^updates\/r1\/[0-9a-f-]{36}\.seg#0$/);
      // Record = 48-byte header + payload: the second record starts after the first's 5 bytes.
      expect(b.key).toBe(a.key.replace(/#0$/, '#53'));
      expect((await store.get(a)).toString()).toBe('hello');
      expect([...(await store.get(b))]).toEqual([1, 2, 3, 4]);
      const [file] = await segmentFiles('updates/r1');
      const records = parseSegment(await readFile(join(dir, 'updates/r1', file!)));
      expect(records).toEqual([
        { offset: 0, live: true, sizeBytes: 5, sha256: a.sha256 },
        { offset: 53, live: true, sizeBytes: 4, sha256: sha(Buffer.from([1, 2, 3, 4])) },
      ]);
    });

    it('gives concurrent appends disjoint records', async () => {
      const payloads = Array.from({ length: 64 }, (_, i) => Buffer.alloc(1000 + i * 37, i + 1));
      const refs = await Promise.all(payloads.map((p) => store.append('updates/r2', p, sha(p))));
      expect(new Set(refs.map((r) => r.key)).size).toBe(64);
      for (const [i, ref] of refs.entries()) expect((await store.get(ref)).equals(payloads[i]!)).toBe(true);
      const [file] = await segmentFiles('updates/r2');
      const records = parseSegment(await readFile(join(dir, 'updates/r2', file!)));
      expect(records).toHaveLength(64);
      expect(records.reduce((n, r) => n + 48 + r.sizeBytes, 0)).toBe(payloads.reduce((n, p) => n + 48 + p.length, 0));
    });

    it('erases a deleted record in place: zeros on disk, not readable, neighbours intact', async () => {
      const keep1 = await store.append('updates/r3', Buffer.from('first'));
      const gone = await store.append('updates/r3', Buffer.from('secret update bytes'));
      const keep2 = await store.append('updates/r3', Buffer.from('third'));
      await store.delete(gone.key);
      await expect(store.get(gone)).rejects.toThrow(/erased/);
      expect((await store.get(keep1)).toString()).toBe('first');
      expect((await store.get(keep2)).toString()).toBe('third');
      const [file] = await segmentFiles('updates/r3');
      const bytes = await readFile(join(dir, 'updates/r3', file!));
      expect(bytes.includes(Buffer.from('secret update bytes'))).toBe(false);
      expect(parseSegment(bytes).map((r) => r.live)).toEqual([true, false, true]);
      // Also through a store that did not write it (after a restart), and idempotent.
      const other = createBlobStore({ dir });
      await other.delete(keep2.key);
      await other.delete(keep2.key);
      expect(parseSegment(await readFile(join(dir, 'updates/r3', file!))).map((r) => r.live)).toEqual([true, false, false]);
    });

    it('removes a segment whose every record was erased (a refused upload leaves no file), and only when nothing can still append to it', async () => {
      // The open segment of a round whose only upload was refused: the file goes; the next append starts a new one.
      const refused = await store.append('updates/r5', Buffer.from('refused update'));
      await store.delete(refused.key);
      expect(await segmentFiles('updates/r5')).toEqual([]);
      const next = await store.append('updates/r5', Buffer.from('accepted'));
      expect((await store.get(next)).toString()).toBe('accepted');
      expect(await segmentFiles('updates/r5')).toHaveLength(1);
      // A live neighbour keeps the segment; once it is erased too (by a store that did not write it) the file goes.
      const gone = await store.append('updates/r5', Buffer.from('refused too'));
      await store.delete(gone.key);
      expect(await segmentFiles('updates/r5')).toHaveLength(1);
      expect((await store.get(next)).toString()).toBe('accepted');
      await createBlobStore({ dir }).delete(next.key);
      expect(await segmentFiles('updates/r5')).toEqual([]);
      // An erasure racing with an append to the same open segment keeps the file and the appended record.
      const first = await store.append('updates/r6', Buffer.from('one'));
      const [, second] = await Promise.all([store.delete(first.key), store.append('updates/r6', Buffer.from('two'))]);
      expect((await store.get(second)).toString()).toBe('two');
    });

    it('detects a corrupted record and a key pointing at no record', async () => {
      const ref = await store.append('updates/r4', Buffer.from([9, 9, 9]));
      const [file] = await segmentFiles('updates/r4');
      const path = join(dir, 'updates/r4', file!);
      const bytes = await readFile(path);
      bytes[48] = 8;
      await writeFile(path, bytes);
      await expect(store.get(ref)).rejects.toThrow(/corrupted/);
      await expect(store.get({ key: ref.key.replace(/#0$/, '#7'), sha256: ref.sha256 })).rejects.toThrow(/corrupted/);
      await expect(store.get({ key: 'updates/r4/none.seg#0', sha256: ref.sha256 })).rejects.toThrow(/missing/);
    });

    it('starts a new segment after a restart or close; old records stay readable', async () => {
      const before = await store.append('updates/r5', Buffer.from('one'));
      const restarted = createBlobStore({ dir });
      const after = await restarted.append('updates/r5', Buffer.from('two'));
      await restarted.close();
      const reopened = await restarted.append('updates/r5', Buffer.from('three'));
      // Three segments: the first store's, the restarted store's, and a new one after its close.
      expect(new Set([before, after, reopened].map((r) => r.key.split('#')[0])).size).toBe(3);
      expect(reopened.key.endsWith('#0')).toBe(true);
      for (const [ref, text] of [[before, 'one'], [after, 'two'], [reopened, 'three']] as const) {
        expect((await restarted.get(ref)).toString()).toBe(text);
      }
      await restarted.close();
      await store.close();
    });

    it('keeps at most maxOpenSegments open and starts a new segment for a directory whose segment was closed', async () => {
      const small = createBlobStore({ dir, maxOpenSegments: 1 });
      const refs = [];
      for (const round of ['a', 'b', 'a', 'c', 'a']) refs.push(await small.append(`updates/${round}`, Buffer.from(round)));
      for (const ref of refs) expect((await small.get(ref)).toString()).toBe(ref.key.split('/')[1]);
      expect((await segmentFiles('updates/a')).length).toBe(3);
      await small.close();
    });

    it('stops at a torn record at the end of a segment (a crash during an append)', async () => {
      const ref = await store.append('updates/r6', Buffer.from('whole'));
      const [file] = await segmentFiles('updates/r6');
      await store.close();
      const path = join(dir, 'updates/r6', file!);
      const torn = Buffer.from(await readFile(path)).subarray(0, 48 + 2);
      await appendFile(path, torn);
      expect(parseSegment(await readFile(path))).toEqual([{ offset: 0, live: true, sizeBytes: 5, sha256: ref.sha256 }]);
      expect((await store.get(ref)).toString()).toBe('whole');
    });

    it('makes each append durable with an fdatasync that started after its write, shared by appends finishing together', async () => {
      // Record, in order, every record write that completed and every fdatasync's start and end.
      const probe = await open(join(dir, 'probe'), 'w');
      const proto = Object.getPrototypeOf(probe) as { writev: (...a: unknown[]) => Promise<unknown>; datasync: () => Promise<void> };
      await probe.close();
      const events: string[] = [];
      const { writev, datasync } = proto;
      let syncs = 0;
      proto.writev = async function (this: unknown, ...a: unknown[]) {
        const result = await writev.apply(this, a);
        events.push(`wrote ${String(a[1])}`);
        return result;
      };
      proto.datasync = async function (this: unknown) {
        const id = syncs++;
        events.push(`sync-start ${id}`);
        await datasync.apply(this);
        events.push(`sync-end ${id}`);
      };
      try {
        const payloads = Array.from({ length: 40 }, (_, i) => Buffer.alloc(20_000, i));
        const refs = await Promise.all(
          payloads.map(async (p) => {
            const ref = await store.append('updates/sync', p);
            events.push(`done ${ref.key.split('#')[1]}`);
            return ref;
          }),
        );
        expect(refs).toHaveLength(40);
        expect(syncs).toBeGreaterThanOrEqual(1);
        expect(syncs).toBeLessThan(40);
        for (const ref of refs) {
          const offset = ref.key.split('#')[1]!;
          const wrote = events.indexOf(`wrote ${offset}`);
          const done = events.indexOf(`done ${offset}`);
          // Some fdatasync started after this record's write completed and ended before its append returned.
          const covered = events.some((e, i) => e.startsWith('sync-start') && i > wrote && events.indexOf(e.replace('start', 'end')) < done);
          expect(covered, `record at ${offset}`).toBe(true);
        }
      } finally {
        proto.writev = writev;
        proto.datasync = datasync;
      }
    });

    it('refuses directories that escape the store', async () => {
      await expect(store.append('../x', Buffer.from('x'))).rejects.toThrow(/invalid blob key/);
    });
  });
});
