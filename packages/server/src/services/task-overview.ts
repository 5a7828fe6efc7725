/**
 * Read views of tasks for operators and auditors: a task with its progress
 * (latest round, devices, cumulative ε) and warnings, the round history and
 * the devices. Loads from the store; no transport here.
 */
import { VeilError } from '../errors.js';
import type { Task } from '../rounds/model.js';
import type { DeviceRecord, FederationStore, ModelEvaluationRecord, RoundRecord } from '../rounds/ports.js';
import { taskWarnings } from './privacy-audit.js';
import { auditCommitteeRounds, type CommitteeAudit } from './committee-audit.js';
import type { Round } from '../rounds/model.js';

export interface TaskProgress {
  /** Number of the latest round (open or finished); null before the first. */
  currentRound: number | null;
  currentRoundState: string | null;
  /** Devices that joined the task. */
  devices: number;
  /** Cumulative ε spent (DP tasks; null otherwise). */
  epsilonSpent: number | null;
}

export interface TaskView {
  task: Task;
  progress: TaskProgress;
  warnings: string[];
}

export interface TaskOverviewServiceOptions {
  store: FederationStore;
}

export function createTaskOverviewService(options: TaskOverviewServiceOptions) {
  const { store } = options;
  const getTask = async (id: string): Promise<Task> => {
    const task = await store.getTask(id);
    if (task === null) throw new VeilError('not_found', `task ${id} does not exist`);
    return task;
  };
  const view = async (task: Task): Promise<TaskView> => {
    const [latest, devices, head] = await Promise.all([
      store.getLatestRound(task.id),
      store.listDevices(task.id),
      task.settings.privacy === null ? Promise.resolve(null) : store.lastLedgerEntry(task.id),
    ]);
    return {
      task,
      progress: {
        currentRound: latest?.number ?? null,
        currentRoundState: latest?.state ?? null,
        devices: devices.length,
        epsilonSpent: task.settings.privacy === null ? null : (head?.epsilon ?? 0),
      },
      warnings: taskWarnings(task),
    };
  };
  return {
    getTask,
    view,
    async get(id: string): Promise<TaskView> {
      return view(await getTask(id));
    },
    async list(): Promise<TaskView[]> {
      return Promise.all((await store.listTasks()).map(view));
    },
    async rounds(id: string, page: { offset: number; limit: number; events?: boolean }): Promise<RoundRecord[]> {
      await getTask(id);
      return store.listRoundHistory(id, page);
    },
    async evaluations(id: string): Promise<ModelEvaluationRecord[]> {
      await getTask(id);
      return store.listModelEvaluations(id);
    },
    /** Committee tasks: who approved each round's decryption, every signature checked. */
    async committeeAudit(id: string): Promise<CommitteeAudit> {
      const task = await getTask(id);
      const rounds: Round[] = [];
      for (let offset = 0; ; offset += 1000) {
        const page = await store.listRounds(id, { offset, limit: 1000 });
        rounds.push(...page);
        if (page.length < 1000) break;
      }
      return auditCommitteeRounds(task, rounds);
    },
    async devices(id: string): Promise<DeviceRecord[]> {
      await getTask(id);
      return store.listDevices(id);
    },
  };
}

export type TaskOverviewService = ReturnType<typeof createTaskOverviewService>;
