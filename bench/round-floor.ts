/**
 * The transport floor under a Veil round: synchronous federated rounds over raw node:http2, with
 * the same process layout, bytes and HTTP/2 settings as `bench/rounds.ts --only small`, and
 * nothing else (no gRPC, no protobuf, no engine, no database, no durability, no aggregation).
 *
 *   npx tsx bench/round-floor.ts [--clients 10] [--rounds 20] [--parameters 100000]
 *     [--clients-per-process 1 at <= 10 clients, 10 above] [--windows veil|fixed|large|default]
 *
 * One server process (this one) and ceil(clients / clients-per-process) forked client processes,
 * each client with its own HTTP/2 connection. Round r: every client asks for the model (a GET the
 * server holds until round r opens, i.e. until all updates of round r - 1 arrived), receives
 * 4 x parameters bytes, and POSTs an update of 4 x parameters bytes; the server reads each update
 * whole (one Buffer, as the coordinator reassembles an upload) and checks its length; the round
 * closes when the last of the clients' updates is in. Round time is close-to-close, median over
 * rounds 2..R: the window bench/rounds.ts (`medianRoundMsExcludingFirst`) and Flower's runner take.
 *
 * --windows: `veil` announces what the coordinator and the SDK announce (server: 65,535-byte
 * stream windows, 16 MiB connection window, 1 MiB frames, packages/server/src/grpc/federation-service.ts,
 * and, as the coordinator does for an admitted upload (grpc/upload-window.ts), the connection's
 * stream window raised to 1 MiB while an update arrives on it and back to 65,535 after; client: 8 MiB
 * stream and connection windows, packages/client-sdk/src/transport/grpc-transport.ts); `fixed`: the
 * same without the raise (the coordinator before 1506404); `large`: the server's stream window
 * 1 MiB throughout; `default`: HTTP/2's defaults everywhere.
 *
 * Prints ONE JSON object: the median round, every round, and the CPU per client-round of the server
 * process and of the client processes over rounds 2..R. What a Veil round costs above this floor is
 * Veil's own work (gRPC framing, the round engine, durable writes, aggregation); what Flower's round
 * costs is its whole stack, so this floor is not a bound on Flower, only on anything built on node:http2.
 */
import { fork } from 'node:child_process';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg } from 'node:os';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { median } from './rounds/common.js';

type Windows = 'veil' | 'fixed' | 'large' | 'default';

interface ClientInit {
  port: number;
  clients: number;
  rounds: number;
  bytes: number;
  windows: Windows;
}

interface ClientDone {
  /** Process CPU (user + system, all threads) from the end of each client's round-1 upload to the end of its last, ms. */
  cpuMs: number;
  clientRounds: number;
}

const cpuMsNow = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

const round1 = (x: number): number => Math.round(x * 10) / 10;
const round3 = (x: number): number => Math.round(x * 1000) / 1000;

// ------------------------------------------------------------------ client process

async function runClients(init: ClientInit): Promise<ClientDone> {
  const update = Buffer.alloc(init.bytes, 7);
  let cpuFrom = 0;
  let started = 0;
  const one = async (): Promise<void> => {
    const session = http2.connect(
      `http://127.0.0.1:${init.port}`,
      init.windows === 'default' ? {} : { settings: { initialWindowSize: 8 * 2 ** 20, enablePush: false } },
    );
    if (init.windows !== 'default') session.once('connect', () => session.setLocalWindowSize(8 * 2 ** 20));
    const exchange = (headers: http2.OutgoingHttpHeaders, body: Buffer | null): Promise<number> =>
      new Promise((ok, fail) => {
        const req = session.request(headers);
        let received = 0;
        req.on('data', (chunk: Buffer) => {
          received += chunk.byteLength;
        });
        req.once('end', () => ok(received));
        req.once('error', fail);
        if (body === null) req.end();
        else req.end(body);
      });
    for (let round = 1; round <= init.rounds; round++) {
      const got = await exchange({ ':path': `/model?round=${round}` }, null);
      if (got !== init.bytes) throw new Error(`round ${round}: model of ${got} bytes, expected ${init.bytes}`);
      await exchange({ ':method': 'POST', ':path': `/update?round=${round}` }, update);
      if (round === 1 && ++started === init.clients) cpuFrom = cpuMsNow();
    }
    session.close();
  };
  await Promise.all(Array.from({ length: init.clients }, one));
  return { cpuMs: cpuMsNow() - cpuFrom, clientRounds: init.clients * (init.rounds - 1) };
}

if (process.argv[2] === '--client') {
  process.once('message', (init: ClientInit) => {
    runClients(init).then(
      (done) => process.send!(done, () => process.exit(0)),
      (error: unknown) => {
        process.stderr.write(`round-floor client: ${(error as Error).stack ?? String(error)}\n`);
        process.exit(1);
      },
    );
  });
} else {
  await main();
}

// ------------------------------------------------------------------ server (this process)

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      clients: { type: 'string', default: '10' },
      rounds: { type: 'string', default: '20' },
      parameters: { type: 'string', default: '100000' },
      'clients-per-process': { type: 'string' },
      windows: { type: 'string', default: 'veil' },
    },
  });
  const positive = (text: string, name: string): number => {
    const n = Number(text);
    if (!Number.isInteger(n) || n <= 0) throw new Error(`--${name}: expected a positive integer, got ${text}`);
    return n;
  };
  const clients = positive(args.clients, 'clients');
  const rounds = positive(args.rounds, 'rounds');
  if (rounds < 3) throw new Error('--rounds: at least 3 (the median is over rounds 2..R)');
  const bytes = 4 * positive(args.parameters, 'parameters');
  const perProcess = positive(args['clients-per-process'] ?? (clients <= 10 ? '1' : '10'), 'clients-per-process');
  const windows = args.windows as Windows;
  if (windows !== 'veil' && windows !== 'fixed' && windows !== 'large' && windows !== 'default') throw new Error(`--windows: veil, fixed, large or default, got ${args.windows}`);

  const model = Buffer.alloc(bytes, 3);
  const server = http2.createServer(
    windows === 'default'
      ? {}
      : { settings: { maxFrameSize: 2 ** 20, initialWindowSize: windows === 'large' ? 2 ** 20 : 65_535 } },
  );
  if (windows !== 'default') server.on('session', (session) => session.once('localSettings', () => session.setLocalWindowSize(16 * 2 ** 20)));

  let openRound = 1;
  const held = new Map<number, http2.ServerHttp2Stream[]>();
  let updatesIn = 0;
  const closedAt: number[] = [];
  const serverCpuAt: number[] = [];
  let failure: Error | null = null;
  let allClosed: () => void = () => {};
  const finished = new Promise<void>((ok) => (allClosed = ok));

  const uploadsOn = new WeakMap<http2.Http2Session, number>();
  const announce = (session: http2.Http2Session, initialWindowSize: number): void => {
    if (session.destroyed || session.closed) return;
    try {
      session.settings({ initialWindowSize });
    } catch {
      // (Too many SETTINGS not yet acknowledged: the client keeps its window, as with the coordinator.)
    }
  };
  const sendModel = (stream: http2.ServerHttp2Stream): void => {
    stream.respond({ ':status': 200 });
    stream.end(model);
  };
  server.on('stream', (stream, headers) => {
    const url = new URL(headers[':path'] ?? '/', 'http://x');
    const round = Number(url.searchParams.get('round'));
    if (url.pathname === '/model') {
      if (round <= openRound) sendModel(stream);
      else held.set(round, [...(held.get(round) ?? []), stream]);
      return;
    }
    // `veil`: the coordinator's raise for an admitted upload (grpc/upload-window.ts), per connection.
    const session = stream.session;
    let lower = (): void => {};
    if (windows === 'veil' && session !== undefined) {
      const open = (uploadsOn.get(session) ?? 0) + 1;
      uploadsOn.set(session, open);
      if (open === 1) announce(session, 2 ** 20);
      lower = () => {
        const left = uploadsOn.get(session)! - 1;
        uploadsOn.set(session, left);
        if (left === 0) announce(session, 65_535);
      };
    }
    const chunks: Buffer[] = [];
    let length = 0;
    stream.on('data', (chunk: Buffer) => {
      chunks.push(chunk);
      length += chunk.byteLength;
    });
    stream.once('end', () => {
      lower();
      const whole = Buffer.concat(chunks, length);
      if (whole.byteLength !== bytes || round !== openRound) failure ??= new Error(`update of ${whole.byteLength} bytes for round ${round} in round ${openRound}`);
      stream.respond({ ':status': 200 });
      stream.end();
      if (++updatesIn < clients) return;
      // Round closes; the next opens and the held model requests are answered.
      updatesIn = 0;
      closedAt.push(performance.now());
      serverCpuAt.push(cpuMsNow());
      if (openRound === rounds) {
        allClosed();
        return;
      }
      openRound++;
      for (const s of held.get(openRound) ?? []) sendModel(s);
      held.delete(openRound);
    });
  });
  // A round that never closes (a lost exchange) fails the run instead of hanging its caller.
  setTimeout(() => {
    process.stderr.write(`round-floor: no result after 180 s (round ${openRound} of ${rounds}, ${updatesIn} of ${clients} updates in)\n`);
    process.exit(1);
  }, 180_000);
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  const { port } = server.address() as AddressInfo;

  const here = fileURLToPath(import.meta.url);
  const children: Promise<ClientDone>[] = [];
  for (let left = clients; left > 0; left -= perProcess) {
    const count = Math.min(perProcess, left);
    const child = fork(here, ['--client'], { execArgv: process.execArgv, stdio: ['ignore', 'ignore', 2, 'ipc'] });
    children.push(
      new Promise((ok, fail) => {
        child.once('message', (done: ClientDone) => ok(done));
        child.once('exit', (code) => (code === 0 ? undefined : fail(new Error(`client process exited with ${String(code)}`))));
      }),
    );
    child.send({ port, clients: count, rounds, bytes, windows } satisfies ClientInit);
  }
  const done = await Promise.all(children);
  await finished;
  server.close();
  if (failure !== null) throw failure;

  const roundMs = closedAt.slice(1).map((t, i) => t - closedAt[i]!);
  const clientRounds = clients * (rounds - 1);
  const clientCpuMs = done.reduce((sum, d) => sum + d.cpuMs, 0);
  process.stdout.write(
    `${JSON.stringify({
      meta: { clients, rounds, parameters: bytes / 4, clientsPerProcess: perProcess, windows, cpus: cpus().length, node: process.version, loadAverage: loadavg().map(round1) },
      medianRoundMs: round1(median(roundMs)),
      roundMs: roundMs.map(round1),
      serverCpuMsPerClientRound: round3((serverCpuAt.at(-1)! - serverCpuAt[0]!) / clientRounds),
      clientCpuMsPerClientRound: round3(clientCpuMs / done.reduce((sum, d) => sum + d.clientRounds, 0)),
    })}\n`,
  );
  process.exit(0);
}
