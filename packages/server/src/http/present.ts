/** JSON shapes of the REST responses (the schemas in schemas.ts document them). */
import type { Task } from '../rounds/model.js';
import type { DeviceRecord, RoundRecord } from '../rounds/ports.js';
import type { TaskView } from '../services/task-overview.js';

export function presentTask({ task, progress, warnings }: TaskView) {
  return {
    id: task.id,
    name: task.name,
    status: task.status,
    statusReason: task.statusReason,
    settings: task.settings,
    parameterCount: task.parameterCount,
    encryption: presentEncryption(task),
    currentModelVersion: task.currentModelVersion,
    createdAt: task.createdAt.toISOString(),
    updatedAt: task.updatedAt.toISOString(),
    progress,
    warnings,
  };
}

function presentEncryption(task: Task) {
  if (task.encryption === null) return null;
  const { keyId, fingerprint, preset, weightCap, clipMaxAbs, step } = task.encryption;
  return { keyId, fingerprint, preset, weightCap, clipMaxAbs, step };
}

export function presentRound({ round, events, participation, evaluation }: RoundRecord) {
  return {
    number: round.number,
    state: round.state,
    failureReason: round.failureReason,
    baseModelVersion: round.baseModelVersion,
    selected: round.targetCount,
    received: round.receivedCount,
    participation,
    minClients: round.minClients,
    deadlineAt: round.state === 'SELECTING' ? null : round.deadlineAt.toISOString(),
    training: round.config,
    summary: round.summary,
    evaluation,
    events: events.map((e) => ({ ...e, at: e.at.toISOString() })),
    openedAt: round.openedAt.toISOString(),
    closedAt: round.closedAt?.toISOString() ?? null,
  };
}

export function presentDevice(d: DeviceRecord) {
  return {
    id: d.id,
    name: d.name,
    joinedAt: d.joinedAt.toISOString(),
    lastSeenAt: d.lastSeenAt.toISOString(),
    roundsSelected: d.roundsSelected,
    roundsSubmitted: d.roundsSubmitted,
    roundsDropped: d.roundsDropped,
    trainedExamples: d.trainedExamples,
    // The bearer credential from Join: active until an admin revokes it (POST /v1/tasks/:id/clients/:clientId/revoke).
    credential: d.revokedAt === null ? ('active' as const) : ('revoked' as const),
    revokedAt: d.revokedAt?.toISOString() ?? null,
  };
}
