import type { FastifyPluginAsync } from 'fastify';
import type { ServerResponse } from 'node:http';
import type { LiveRounds } from '../../services/live-rounds.js';
import type { TaskOverviewService } from '../../services/task-overview.js';
import { errorResponses, idParams, secured } from './common.js';

export interface EventRoutesOptions {
  live: LiveRounds;
  tasks: TaskOverviewService;
  /** Interval of the keep-alive comment, ms. Default 15 000. */
  heartbeatMs?: number;
}

/**
 * Server-sent events of a task's latest round (admin token, in the
 * Authorization header: the dashboard reads the stream with fetch, so the
 * token never appears in a URL). A `snapshot` first, then one event per
 * engine event of the task.
 */
export const eventRoutes: FastifyPluginAsync<EventRoutesOptions> = async (app, { live, tasks, heartbeatMs = 15_000 }) => {
  const open = new Set<ServerResponse>();
  // Hijacked responses are not closed by Fastify: end them before the server waits for its connections.
  app.addHook('preClose', async () => {
    for (const res of open) res.end();
  });

  app.get<{ Params: { id: string } }>(
    '/v1/tasks/:id/events',
    {
      config: { auth: 'admin' },
      schema: {
        ...secured,
        tags: ['rounds'],
        summary: 'Live round progress as server-sent events (text/event-stream): snapshot, then round-opened, round-collecting, model-downloaded, update-accepted, round-closed, round-failed, task-ended',
        params: idParams,
        response: {
          200: {
            description: 'Each event\'s data is JSON: { type, taskId, round: { number, state, selected, downloaded, submitted, dropped, deadlineAt, ... }, taskStatus, serverTimeMs }',
            content: { 'text/event-stream': { schema: { type: 'string' } } },
          },
          ...errorResponses,
        },
      },
    },
    async (request, reply) => {
      const taskId = request.params.id;
      await tasks.getTask(taskId);
      const res = reply.raw;
      reply.hijack();
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-store', connection: 'keep-alive', 'x-accel-buffering': 'no' });
      open.add(res);
      const send = (event: { type: string }): void => {
        res.write(`event: ${event.type}\ndata: ${JSON.stringify(event)}\n\n`);
      };
      // Subscribe before the snapshot: an event in between is sent after it (newer state wins in the client).
      const queued: Array<{ type: string }> = [];
      let ready = false;
      const unsubscribe = live.subscribe(taskId, (event) => (ready ? send(event) : queued.push(event)));
      const heartbeat = setInterval(() => res.write(': keep-alive\n\n'), heartbeatMs);
      const cleanup = (): void => {
        clearInterval(heartbeat);
        unsubscribe();
        open.delete(res);
      };
      res.on('close', cleanup);
      try {
        send(await live.snapshot(taskId));
        ready = true;
        for (const event of queued.splice(0)) send(event);
      } catch (error) {
        request.log.error({ err: error }, 'live snapshot failed');
        res.end();
      }
    },
  );
};
