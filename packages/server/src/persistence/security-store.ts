import type { PrismaClient } from '../gen/prisma/client.js';
import type { AuditEvent, ClientInfo, EnrolmentTokenInfo, SecurityStore } from '../security/ports.js';
import { withBusyTranslation } from './busy.js';

type TokenRow = Awaited<ReturnType<PrismaClient['enrolmentToken']['findFirstOrThrow']>>;
type ClientRow = Awaited<ReturnType<PrismaClient['client']['findFirstOrThrow']>>;

const toToken = (row: TokenRow): EnrolmentTokenInfo => ({
  id: row.id,
  taskId: row.taskId,
  label: row.label,
  maxUses: row.maxUses,
  uses: row.uses,
  expiresAt: row.expiresAt,
  revokedAt: row.revokedAt,
  createdAt: row.createdAt,
});

const toClient = (row: ClientRow): ClientInfo => ({
  id: row.id,
  taskId: row.taskId,
  name: row.name,
  joinedAt: row.joinedAt,
  lastSeenAt: row.lastSeenAt,
  revokedAt: row.revokedAt,
  enrolmentTokenId: row.enrolmentTokenId,
});

/** The {@link SecurityStore} on Prisma (PostgreSQL or PGlite); a busy database surfaces as `unavailable` (see busy.ts). */
export function createSecurityStore(prisma: PrismaClient): SecurityStore {
  return withBusyTranslation<SecurityStore>({
    async createEnrolmentToken(token) {
      return toToken(await prisma.enrolmentToken.create({ data: token }));
    },

    async listEnrolmentTokens(taskId) {
      return (await prisma.enrolmentToken.findMany({ where: { taskId }, orderBy: { createdAt: 'asc' } })).map(toToken);
    },

    async findEnrolmentToken(tokenHash) {
      const row = await prisma.enrolmentToken.findUnique({ where: { tokenHash } });
      return row === null ? null : toToken(row);
    },

    async revokeEnrolmentToken(taskId, tokenId, at) {
      const found = await prisma.enrolmentToken.findFirst({ where: { id: tokenId, taskId } });
      if (found === null) return null;
      if (found.revokedAt !== null) return toToken(found);
      return toToken(await prisma.enrolmentToken.update({ where: { id: tokenId }, data: { revokedAt: at } }));
    },

    async enrol({ client, tokenHash, maxDevices, now }) {
      return prisma.$transaction(async (tx) => {
        // The task row lock serialises enrolments of one task: the device cap and a token's
        // use count cannot be overshot by concurrent Joins.
        const task = await tx.$queryRawUnsafe<Array<{ status: string }>>('SELECT status::text AS status FROM "Task" WHERE id = $1::uuid FOR UPDATE', client.taskId);
        if (task.length === 0) return { kind: 'no_task' } as const;
        if (task[0]!.status !== 'RUNNING') return { kind: 'not_running', status: task[0]!.status } as const;
        let enrolmentTokenId: string | null = null;
        if (tokenHash !== null) {
          const token = await tx.enrolmentToken.findUnique({ where: { tokenHash } });
          if (
            token === null ||
            token.taskId !== client.taskId ||
            token.revokedAt !== null ||
            token.expiresAt.getTime() <= now.getTime() ||
            (token.maxUses !== null && token.uses >= token.maxUses)
          ) {
            return { kind: 'bad_token' } as const;
          }
          enrolmentTokenId = token.id;
        }
        const active = await tx.client.count({ where: { taskId: client.taskId, revokedAt: null } });
        if (active >= maxDevices) return { kind: 'device_cap', maxDevices } as const;
        if (enrolmentTokenId !== null) await tx.enrolmentToken.update({ where: { id: enrolmentTokenId }, data: { uses: { increment: 1 } } });
        const row = await tx.client.create({ data: { ...client, enrolmentTokenId, joinedAt: now, lastSeenAt: now } });
        return { kind: 'enrolled', client: { id: row.id, taskId: row.taskId, name: row.name } } as const;
      });
    },

    async listClients(taskId, page) {
      const [total, rows] = await Promise.all([
        prisma.client.count({ where: { taskId } }),
        prisma.client.findMany({ where: { taskId }, orderBy: [{ joinedAt: 'asc' }, { id: 'asc' }], skip: page.offset, take: page.limit }),
      ]);
      return { total, clients: rows.map(toClient) };
    },

    async revokeClient(taskId, clientId, at) {
      const found = await prisma.client.findFirst({ where: { id: clientId, taskId } });
      if (found === null) return null;
      if (found.revokedAt !== null) return toClient(found);
      return toClient(await prisma.client.update({ where: { id: clientId }, data: { revokedAt: at } }));
    },

    async appendAudit(events) {
      if (events.length === 0) return;
      await prisma.auditEvent.createMany({
        data: events.map(({ details, ...e }) => ({ ...e, ...(details !== null && { details }) })),
      });
    },

    async listAudit(query) {
      const where = query.taskId === undefined ? {} : { taskId: query.taskId };
      const [total, rows] = await Promise.all([
        prisma.auditEvent.count({ where }),
        prisma.auditEvent.findMany({ where, orderBy: { id: 'desc' }, skip: query.offset, take: query.limit }),
      ]);
      return {
        total,
        events: rows.map(
          (r): AuditEvent => ({
            id: r.id.toString(),
            at: r.at,
            actor: r.actor as AuditEvent['actor'],
            action: r.action,
            outcome: r.outcome,
            taskId: r.taskId,
            sourceAddress: r.sourceAddress,
            details: (r.details as AuditEvent['details']) ?? null,
          }),
        ),
      };
    },
  });
}
