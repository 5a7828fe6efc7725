/**
 * The custodian's durable state: an append-only JSON-lines file, each record durable before the
 * custodian acts on it (replies to the coordinator). It depends on nothing of the coordinator's.
 * The file is opened with O_SYNC (flag `as+`): a write returns once its data and the file's size
 * are on stable storage (POSIX "synchronized I/O file integrity completion", what write + fsync
 * give), in one system call, so an answer waits for one thread-pool round trip rather than two.
 *
 * Records:
 *   {"type":"task","taskId","descriptorHash"}        the descriptor this custodian serves a task under
 *   {"type":"answer","taskId","descriptorHash","round","hashD","count","statement","signature","shareSum"}
 *                                                     the exact signed answer bytes (base64)
 *
 * A crash can leave a torn last line: it is dropped on open (the answer it held was never sent,
 * since the reply waits for the synchronous write). A malformed line anywhere else is corruption: opening
 * fails rather than forgetting an answer and giving a second one.
 */
import { mkdir, open, readFile } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { dirname } from 'node:path';
import { toBase64 } from './bytes.js';
import { CustodianError } from './errors.js';

/** A stored answer: the bytes sent, exactly. */
export interface StoredAnswer {
  readonly taskId: string;
  /** hex */
  readonly descriptorHash: string;
  readonly round: number;
  /** hex */
  readonly hashD: string;
  readonly count: number;
  readonly statement: Uint8Array;
  readonly signature: Uint8Array;
  readonly shareSum: Uint8Array;
}

/** The custodian's answered-rounds state. */
export interface CustodianState {
  /** The descriptor hash (hex) this custodian serves `taskId` under, if any. */
  taskDescriptor(taskId: string): string | undefined;
  /** The answer given for (task, round), if any. */
  answer(taskId: string, round: number): StoredAnswer | undefined;
  /** Durably records the descriptor of a task (on stable storage when the promise resolves). */
  recordTask(taskId: string, descriptorHash: string): Promise<void>;
  /** Durably records an answer (on stable storage when the promise resolves). Refuses a second answer for (task, round). */
  recordAnswer(answer: StoredAnswer): Promise<void>;
  /** Number of answers recorded. */
  readonly answerCount: number;

  close(): Promise<void>;
}

const key = (taskId: string, round: number): string => `${round}\u0000${taskId}`;
const unb64 = (value: unknown): Uint8Array => {
  if (typeof value !== 'string') throw new TypeError('expected base64');
  return new Uint8Array(Buffer.from(value, 'base64'));
};

function parseRecord(line: string): { type: 'task'; taskId: string; descriptorHash: string } | ({ type: 'answer' } & StoredAnswer) {
  const r = JSON.parse(line) as Record<string, unknown>;
  if (r.type === 'task' && typeof r.taskId === 'string' && typeof r.descriptorHash === 'string') {
    return { type: 'task', taskId: r.taskId, descriptorHash: r.descriptorHash };
  }
  if (
    r.type === 'answer' &&
    typeof r.taskId === 'string' &&
    typeof r.descriptorHash === 'string' &&
    typeof r.round === 'number' &&
    typeof r.hashD === 'string' &&
    typeof r.count === 'number'
  ) {
    return {
      type: 'answer',
      taskId: r.taskId,
      descriptorHash: r.descriptorHash,
      round: r.round,
      hashD: r.hashD,
      count: r.count,
      statement: unb64(r.statement),
      signature: unb64(r.signature),
      shareSum: unb64(r.shareSum),
    };
  }
  throw new TypeError('unknown record');
}

/** Replays the log text: tasks, answers, and the byte length of its intact records. */
function replay(text: string, path: string): { tasks: Map<string, string>; answers: Map<string, StoredAnswer>; goodBytes: number } {
  const tasks = new Map<string, string>();
  const answers = new Map<string, StoredAnswer>();
  const lines = text.split('\n');
  // A file that does not end in '\n' ends in a torn record (a crash mid-append): drop it.
  let goodBytes = 0;
  for (let i = 0; i < lines.length; i += 1) {
    const line = lines[i] as string;
    const last = i === lines.length - 1;
    if (last && line === '') break;
    let record;
    try {
      if (last) throw new TypeError('no newline after the last record');
      record = parseRecord(line);
    } catch (error) {
      if (last) break; // torn tail (no final newline): never acknowledged
      throw new CustodianError('state_unavailable', `${path}: record ${i + 1} is corrupt`, { cause: error });
    }
    if (record.type === 'task') {
      tasks.set(record.taskId, record.descriptorHash);
    } else {
      const { type: _type, ...answer } = record;
      answers.set(key(answer.taskId, answer.round), answer);
    }
    goodBytes += Buffer.byteLength(line, 'utf8') + 1;
  }
  return { tasks, answers, goodBytes };
}

/**
 * Reads the answers in a state file without writing to it (safe while the custodian runs: a
 * record being appended is skipped, not truncated).
 */
export async function readCustodianAnswers(path: string): Promise<StoredAnswer[]> {
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new CustodianError('state_unavailable', `cannot read ${path}`, { cause: error });
  }
  return [...replay(text, path).answers.values()];
}

/** Opens (creating if needed) the state file at `path` and replays it. */
export async function openCustodianState(path: string): Promise<CustodianState> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 });
  let text = '';
  try {
    text = await readFile(path, 'utf8');
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new CustodianError('state_unavailable', `cannot read ${path}`, { cause: error });
    }
  }
  const { tasks, answers, goodBytes } = replay(text, path);

  let handle: FileHandle;
  try {
    handle = await open(path, 'as+', 0o600);
    if (goodBytes !== Buffer.byteLength(text, 'utf8')) await handle.truncate(goodBytes);
    await handle.sync();
    // Make the file's directory entry durable too.
    const dir = await open(dirname(path), 'r');
    try {
      await dir.sync();
    } finally {
      await dir.close();
    }
  } catch (error) {
    throw new CustodianError('state_unavailable', `cannot open ${path}`, { cause: error });
  }

  let queue: Promise<void> = Promise.resolve();
  // After a failed write the file may end in a partial record: write nothing more, so that the
  // next start finds it as a torn tail and drops it.
  let broken: unknown = undefined;
  const append = (record: object): Promise<void> => {
    const run = queue.then(async () => {
      if (broken !== undefined) throw new CustodianError('state_unavailable', `${path}: an earlier write failed; restart the custodian`, { cause: broken });
      try {
        // O_SYNC: durable when each write returns (see the module comment). The file is open for
        // appending (O_APPEND): each write goes to its end. A short write (rare on a regular file)
        // is followed by one for the rest, as FileHandle.appendFile does, without its general
        // writeFile machinery on the answer's path.
        const line = Buffer.from(`${JSON.stringify(record)}\n`, 'utf8');
        for (let offset = 0; offset < line.length; ) {
          const { bytesWritten } = await handle.write(line, offset, line.length - offset);
          if (bytesWritten <= 0) throw new Error(`${path}: a write stored no bytes`);
          offset += bytesWritten;
        }
      } catch (error) {
        broken = error;
        throw new CustodianError('state_unavailable', `cannot write ${path}`, { cause: error });
      }
    });
    queue = run.catch(() => undefined);
    return run;
  };

  return {
    taskDescriptor: (taskId) => tasks.get(taskId),
    answer: (taskId, round) => answers.get(key(taskId, round)),
    async recordTask(taskId, descriptorHash) {
      const known = tasks.get(taskId);
      if (known !== undefined) {
        if (known === descriptorHash) return;
        throw new CustodianError('descriptor_changed', `task ${taskId} is already served under another descriptor`);
      }
      await append({ type: 'task', taskId, descriptorHash });
      tasks.set(taskId, descriptorHash);
    },
    async recordAnswer(answer) {
      const k = key(answer.taskId, answer.round);
      if (answers.has(k)) throw new CustodianError('other_set_answered', `round ${answer.round} of task ${answer.taskId} was already answered`);
      await append({
        type: 'answer',
        taskId: answer.taskId,
        descriptorHash: answer.descriptorHash,
        round: answer.round,
        hashD: answer.hashD,
        count: answer.count,
        statement: toBase64(answer.statement),
        signature: toBase64(answer.signature),
        shareSum: toBase64(answer.shareSum),
      });
      answers.set(k, answer);
    },
    get answerCount() {
      return answers.size;
    },
    async close() {
      await queue;
      await handle.close();
    },
  };
}
