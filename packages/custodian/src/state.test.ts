import { describe, expect, it } from 'vitest';
import { constants } from 'node:fs';
import { mkdtemp, readFile, readdir, readlink, rm, writeFile, appendFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openCustodianState, readCustodianAnswers, type StoredAnswer } from './state.js';

const answer = (round: number, hashD: string): StoredAnswer => ({
  taskId: 'task-1',
  descriptorHash: 'ab'.repeat(32),
  round,
  hashD,
  count: 3,
  statement: new TextEncoder().encode(`{"round":${round}}`),
  signature: new Uint8Array(64).fill(round),
  shareSum: new Uint8Array(4096).fill(7),
});

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), 'veil-state-'));
  try {
    return await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('custodian state', () => {
  it('replays answers and tasks after a reopen, byte for byte', () =>
    withDir(async (dir) => {
      const path = join(dir, 'answers.jsonl');
      const state = await openCustodianState(path);
      await state.recordTask('task-1', 'ab'.repeat(32));
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      await state.close();
      const again = await openCustodianState(path);
      expect(again.taskDescriptor('task-1')).toBe('ab'.repeat(32));
      expect(again.answer('task-1', 1)).toEqual(answer(1, 'cd'.repeat(32)));
      expect(again.answer('task-1', 2)).toBeUndefined();
      expect(again.answerCount).toBe(1);
      await again.close();
    }));

  it('writes its records synchronously: the state file is open with O_SYNC, so an answer is on disk when its write returns', () =>
    withDir(async (dir) => {
      const path = join(dir, 'answers.jsonl');
      const state = await openCustodianState(path);
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      // Linux: the descriptor open on the state file and its open flags (octal) in /proc.
      const fds = await readdir('/proc/self/fd');
      const flags: number[] = [];
      for (const fd of fds) {
        const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
        if (target !== path) continue;
        const info = await readFile(`/proc/self/fdinfo/${fd}`, 'utf8').catch(() => '');
        const match = /^flags:\s+([0-7]+)$/m.exec(info);
        if (match !== null) flags.push(parseInt(match[1]!, 8));
      }
      await state.close();
      expect(flags).toHaveLength(1);
      expect(flags[0]! & constants.O_SYNC).toBe(constants.O_SYNC);
      expect(flags[0]! & constants.O_APPEND).toBe(constants.O_APPEND);
    }));

  it('refuses a second answer for a (task, round) and a second descriptor for a task', () =>
    withDir(async (dir) => {
      const state = await openCustodianState(join(dir, 'answers.jsonl'));
      await state.recordTask('task-1', 'ab'.repeat(32));
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      await expect(state.recordAnswer(answer(1, 'ef'.repeat(32)))).rejects.toMatchObject({ code: 'other_set_answered' });
      await expect(state.recordTask('task-1', 'ff'.repeat(32))).rejects.toMatchObject({ code: 'descriptor_changed' });
      await state.recordTask('task-1', 'ab'.repeat(32));
      await state.close();
    }));

  it('drops a torn last record (a crash mid-append) and keeps appending after it', () =>
    withDir(async (dir) => {
      const path = join(dir, 'answers.jsonl');
      const state = await openCustodianState(path);
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      await state.close();
      await appendFile(path, '{"type":"answer","taskId":"task-1","round":2,"ha');
      const reopened = await openCustodianState(path);
      expect(reopened.answer('task-1', 2)).toBeUndefined();
      await reopened.recordAnswer(answer(2, 'ee'.repeat(32)));
      await reopened.close();
      const lines = (await readFile(path, 'utf8')).split('\n');
      expect(lines).toHaveLength(3);
      expect(lines[2]).toBe('');
      const last = await openCustodianState(path);
      expect(last.answer('task-1', 2)?.hashD).toBe('ee'.repeat(32));
      await last.close();
    }));

  it('reads answers without touching the file (a record being appended is skipped, not truncated)', () =>
    withDir(async (dir) => {
      const path = join(dir, 'answers.jsonl');
      const state = await openCustodianState(path);
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      await appendFile(path, '{"type":"answer","taskId":"task-1","round":2');
      const before = await readFile(path, 'utf8');
      expect((await readCustodianAnswers(path)).map((a) => a.round)).toEqual([1]);
      expect(await readFile(path, 'utf8')).toBe(before);
      expect(await readCustodianAnswers(join(dir, 'missing.jsonl'))).toEqual([]);
      await state.close();
    }));

  it('refuses to start on a corrupt record in the middle rather than forget an answer', () =>
    withDir(async (dir) => {
      const path = join(dir, 'answers.jsonl');
      const state = await openCustodianState(path);
      await state.recordAnswer(answer(1, 'cd'.repeat(32)));
      await state.recordAnswer(answer(2, 'ee'.repeat(32)));
      await state.close();
      const text = await readFile(path, 'utf8');
      await writeFile(path, text.replace('"round":1', '"round":"x"'));
      await expect(openCustodianState(path)).rejects.toMatchObject({ code: 'state_unavailable' });
    }));
});
