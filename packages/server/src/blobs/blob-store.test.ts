import { appendFile, mkdir, mkdtemp, open, readdir, readFile, readlink, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { createBlobStore, parseSegment, updateBlobDir, type BlobStore } from './blob-store.js';

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

  describe('segments across rounds (one per task, rolled at a size limit)', () => {
    // A 352-byte payload makes a 400-byte record (48-byte header); the limit holds two of them.
    const LIMIT = 1000;
    const record = (i: number): Buffer => Buffer.alloc(352, i);
    const segmentOf = (key: string): string => key.split('#')[0]!.split('/').at(-1)!;
    const filesIn = async (sub: string): Promise<string[]> => (await readdir(join(dir, sub))).sort();
    /** Segment files of `sub` this process holds open (Linux: /proc/self/fd). */
    const openIn = async (sub: string): Promise<string[]> => {
      const prefix = join(dir, sub) + '/';
      const targets = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
      return targets.filter((t) => t.startsWith(prefix)).map((t) => t.slice(prefix.length)).sort();
    };
    /** Waits (at most 10 s) for a background step (the next segment's creation). */
    const eventually = async (condition: () => Promise<boolean>): Promise<void> => {
      for (const until = Date.now() + 10_000; !(await condition()); ) {
        if (Date.now() > until) throw new Error('condition not reached');
        await new Promise((resolve) => setTimeout(resolve, 2));
      }
    };

    it('rolls to a new segment at the limit: no record spans two, one larger than the limit gets its own, all read back', async () => {
      const small = createBlobStore({ dir, segmentBytesLimit: LIMIT });
      const t = updateBlobDir('task-a');
      expect(t).toBe('updates/tasks/task-a');
      const refs = [];
      for (const data of [record(1), record(2), record(3), Buffer.alloc(2000, 4), record(5)]) refs.push({ data, ref: await small.append(t, data) });
      const [a, b, c, d, e] = refs.map((r) => r.ref) as [typeof refs[0]['ref'], ...Array<typeof refs[0]['ref']>];
      expect(segmentOf(b!.key)).toBe(segmentOf(a.key));
      expect(b!.key.endsWith('#400')).toBe(true);
      // 800 + 400 > 1000: the third record starts the next segment, the 2048-byte one a segment of its own, the last one the next.
      expect(new Set([a, c, d, e].map((r) => segmentOf(r!.key))).size).toBe(4);
      for (const r of [c, d, e]) expect(r!.key.endsWith('#0')).toBe(true);
      for (const { data, ref } of refs) expect((await small.get(ref)).equals(data)).toBe(true);
      await small.close();
      const sizes = await Promise.all([a, c, d, e].map(async (r) => (await stat(join(dir, t, segmentOf(r!.key)))).size));
      expect(sizes).toEqual([800, 400, 2048, 400]);
      // Nothing else is left: the last segment was not half full, so no next one was created.
      expect(await filesIn(t)).toEqual([a, c, d, e].map((r) => segmentOf(r!.key)).sort());
    });

    it('creates the next segment once the current one is half full, and rolls into it', async () => {
      const small = createBlobStore({ dir, segmentBytesLimit: LIMIT });
      const t = updateBlobDir('task-b');
      const first = await small.append(t, record(1));
      expect(await filesIn(t)).toEqual([segmentOf(first.key)]);
      await small.append(t, record(2)); // 800 bytes: half full
      await eventually(async () => (await filesIn(t)).length === 2);
      const [next] = (await filesIn(t)).filter((f) => f !== segmentOf(first.key));
      expect((await stat(join(dir, t, next!))).size).toBe(0);
      const rolled = await small.append(t, record(3));
      expect(rolled.key).toBe(`${t}/${next}#0`);
      await small.close();
    });

    it('keeps a full segment open only while its appends are in flight, and at most maxOpenSegments directories (their next segments removed when closed)', async () => {
      const small = createBlobStore({ dir, segmentBytesLimit: LIMIT, maxOpenSegments: 2 });
      const [a, b, c] = ['a', 'b', 'c'].map((x) => updateBlobDir(`task-${x}`)) as [string, string, string];
      const refs = [];
      for (let i = 0; i < 6; i++) refs.push(await small.append(a, record(i)));
      const used = [...new Set(refs.map((r) => segmentOf(r.key)))];
      expect(used).toHaveLength(3);
      // The third segment is half full: its next one exists. The two full ones are closed.
      await eventually(async () => (await filesIn(a)).length === 4);
      const spare = (await filesIn(a)).find((f) => !used.includes(f))!;
      expect(await openIn(a)).toEqual([used[2]!, spare].sort());
      // Two other tasks' segments push task a's out: closed, its unused next segment removed.
      await small.append(b, record(7));
      await small.append(c, record(8));
      expect(await openIn(a)).toEqual([]);
      expect(await filesIn(a)).toEqual([...used].sort());
      // Its next append starts a new segment (never one a closed segment was followed by).
      const again = await small.append(a, record(9));
      expect([...used, spare]).not.toContain(segmentOf(again.key));
      for (const [i, ref] of refs.entries()) expect((await small.get(ref)).equals(record(i))).toBe(true);
      await small.close();
      expect(await openIn('updates/tasks')).toEqual([]);
    });

    it('reads and erases updates stored in the per-round layout (updates/<roundId>/) next to the per-task one', async () => {
      // A segment as the per-round layout wrote it: the same record format (header doc in blob-store.ts).
      const payload = Buffer.from('an update of round 7');
      const digest = createHash('sha256').update(payload).digest('hex');
      const header = Buffer.alloc(48);
      header.write('VSEG', 0, 'latin1');
      header[4] = 1;
      header[5] = 1;
      header.writeBigUInt64LE(BigInt(payload.length), 8);
      header.write(digest, 16, 32, 'hex');
      const old = 'updates/3f0e2d7c-2a51-4c57-9e8a-0d6c1f4b9a10';
      await mkdir(join(dir, old), { recursive: true });
      await writeFile(join(dir, old, '0b9d1a52-6a0c-4f8e-8d43-5e2f7c1a9b36.seg'), Buffer.concat([header, payload]));
      const oldRef = { key: `${old}/0b9d1a52-6a0c-4f8e-8d43-5e2f7c1a9b36.seg#0`, sha256: digest };
      const fresh = await store.append(updateBlobDir('task-c'), Buffer.from('an update of round 8'));
      expect(fresh.key.startsWith('updates/tasks/task-c/')).toBe(true);
      expect((await store.get(oldRef)).equals(payload)).toBe(true);
      expect((await store.get(fresh)).toString()).toBe('an update of round 8');
      // Erasing its only record removes the old segment; the task's segment is untouched.
      await store.delete(oldRef.key);
      expect(await readdir(join(dir, old))).toEqual([]);
      expect((await store.get(fresh)).toString()).toBe('an update of round 8');
      await store.close();
    });

    it('after a crash (a torn record at the end, a next segment created ahead) a new process appends to neither of its segments', async () => {
      const crashed = createBlobStore({ dir, segmentBytesLimit: LIMIT });
      const t = updateBlobDir('task-d');
      const before = [await crashed.append(t, record(1)), await crashed.append(t, record(2))];
      await eventually(async () => (await filesIn(t)).length === 2);
      // The process dies mid-append: a torn record at the end of its segment (never acknowledged), no close.
      const current = join(dir, t, segmentOf(before[0]!.key));
      await appendFile(current, Buffer.alloc(100, 9));
      const left = await filesIn(t);
      const restarted = createBlobStore({ dir, segmentBytesLimit: LIMIT });
      const after = [await restarted.append(t, record(3)), await restarted.append(t, record(4)), await restarted.append(t, record(5))];
      for (const ref of after) expect(left).not.toContain(segmentOf(ref.key));
      expect((await stat(current)).size).toBe(900);
      const spare = left.find((f) => f !== segmentOf(before[0]!.key))!;
      expect((await stat(join(dir, t, spare))).size).toBe(0);
      for (const [i, ref] of [...before, ...after].entries()) expect((await restarted.get(ref)).equals(record(i + 1))).toBe(true);
      expect(parseSegment(await readFile(current)).map((r) => r.offset)).toEqual([0, 400]);
      await restarted.close();
      await crashed.close();
    });

    it('erases a refused update in a shared segment in place; removes a segment once all its records are erased, full or current (its next one takes over)', async () => {
      const small = createBlobStore({ dir, segmentBytesLimit: LIMIT });
      const t = updateBlobDir('task-e');
      // Round 1 accepted one update; round 2's only upload is refused: erased in place, the segment stays for round 1's record.
      const accepted = await small.append(t, record(1));
      const refused = await small.append(t, record(2));
      await small.delete(refused.key);
      await expect(small.get(refused)).rejects.toThrow(/erased/);
      expect((await small.get(accepted)).equals(record(1))).toBe(true);
      const first = segmentOf(accepted.key);
      await eventually(async () => (await filesIn(t)).length === 2);
      const spare = (await filesIn(t)).find((f) => f !== first)!;
      // The next record rolls into the next segment; erasing the full one's last live record removes it.
      const third = await small.append(t, record(3));
      expect(segmentOf(third.key)).toBe(spare);
      await small.delete(accepted.key);
      expect(await filesIn(t)).toEqual([spare]);
      // The current segment, half full with a next one created ahead, loses all its records: it goes and its next one takes over.
      const fourth = await small.append(t, record(4));
      await eventually(async () => (await filesIn(t)).length === 2);
      const after = (await filesIn(t)).find((f) => f !== spare)!;
      await small.delete(third.key);
      await small.delete(fourth.key);
      expect(await filesIn(t)).toEqual([after]);
      const fifth = await small.append(t, record(5));
      expect(fifth.key).toBe(`${t}/${after}#0`);
      expect((await small.get(fifth)).equals(record(5))).toBe(true);
      await small.close();
    });
  });
});
