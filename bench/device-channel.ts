/**
 * Device-side CPU of the SDK's gRPC channel (packages/client-sdk/src/transport/grpc-channel.ts)
 * alone, per call, with no coordinator, database or protobuf: the floor under a device's round.
 *
 *   npx tsx bench/device-channel.ts [--mode round|small|download|upload] [--cycles 200] [--blocks 6] [--warmup 200]
 *     [--server-window coordinator|default|large] [--channel /abs/path/to/dist/transport/grpc-channel.js ...]
 *
 * A forked peer process (this file with --serve) runs a node:http2 server that answers like the
 * coordinator on the wire: `small` a unary call with a 4-byte answer (a long-poll's shape), `download`
 * one 400,000-byte message (sent in HTTP/2's default 16 KiB DATA frames, as the coordinator sends),
 * `upload` a 400,000-byte request message (the device writes its 5-byte prefix, the protobuf
 * field prefix and the payload unchanged, as the SDK's transport does) answered by 4 bytes; `round`
 * is the three in turn. --server-window: the server's receive windows, `coordinator` (the default: what
 * the coordinator announces, packages/server federation-service.ts: 65,535 bytes per stream, 16 MiB per
 * connection), `default` (HTTP/2's 64 KiB per stream and per connection) or `large` (1 MiB per stream,
 * 16 MiB per connection, as the coordinator announced from 5ee8e5d until its stream window went back
 * to 65,535; this tool's default until 2026-12-07, s13).
 *
 * Each --channel (default: this tree's build) gets its own connection. After --warmup cycles each,
 * the channels run --blocks blocks of --cycles cycles, in alternating order (A B, B A, ...), and
 * this process's CPU (user + system, all threads: GC and JIT helpers included) and minor page faults
 * per cycle are taken per block. Prints one JSON object: per channel the medians over blocks and
 * every block's figures, and the machine's load average. `--warmup 0 --cycles 1 --blocks 30` shows
 * a fresh device's first calls one by one: a cold download's CPU follows its page faults (fresh
 * memory for the message and for node:http2's read buffers, until V8 frees old ones). The server's CPU is in the other process and not counted.
 */
import { fork } from 'node:child_process';
import http2 from 'node:http2';
import { loadavg } from 'node:os';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { GrpcChannel as GrpcChannelClass } from '../packages/client-sdk/dist/transport/grpc-channel.js';
import { median, round3 } from './rounds/common.js';

const MESSAGE_BYTES = 400_000;
const SMALL_ANSWER = Buffer.from([8, 1, 16, 2]);

/** A gRPC message: 5-byte prefix (uncompressed, big-endian length) and the message. */
function framed(message: Buffer): Buffer[] {
  const prefix = Buffer.alloc(5);
  prefix.writeUInt32BE(message.length, 1);
  return [prefix, message];
}

function serve(window: 'coordinator' | 'default' | 'large'): void {
  const model = Buffer.alloc(MESSAGE_BYTES, 7);
  const large = window === 'large';
  const server = http2.createServer({ settings: { maxFrameSize: 2 ** 20, ...(large && { initialWindowSize: 2 ** 20 }) } });
  if (window !== 'default') server.on('session', (session) => session.setLocalWindowSize(16 * 2 ** 20));
  server.on('stream', (stream, headers) => {
    let received = 0;
    stream.on('data', (chunk: Buffer) => {
      received += chunk.length;
    });
    stream.on('end', () => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      const download = headers[':path'] === '/bench.Channel/Download';
      for (const part of framed(download ? model : Buffer.from([...SMALL_ANSWER.subarray(0, 3), received & 0x7f]))) stream.write(part);
      stream.end();
    });
  });
  server.listen(0, '127.0.0.1', () => process.send?.({ port: (server.address() as { port: number }).port }));
  process.on('disconnect', () => process.exit(0));
}

async function measure(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      mode: { type: 'string', default: 'round' },
      cycles: { type: 'string', default: '200' },
      blocks: { type: 'string', default: '6' },
      warmup: { type: 'string', default: '200' },
      'server-window': { type: 'string', default: 'coordinator' },
      channel: { type: 'string', multiple: true },
    },
  });
  const mode = args.mode;
  if (!['round', 'small', 'download', 'upload'].includes(mode)) throw new Error(`--mode round|small|download|upload, got ${mode}`);
  const window = args['server-window'];
  if (window !== 'coordinator' && window !== 'default' && window !== 'large') throw new Error(`--server-window coordinator|default|large, got ${window}`);
  const cycles = Number(args.cycles);
  const blocks = Number(args.blocks);
  const paths = args.channel ?? [fileURLToPath(new URL('../packages/client-sdk/dist/transport/grpc-channel.js', import.meta.url))];

  const peer = fork(fileURLToPath(import.meta.url), ['--serve', window], { execArgv: process.execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const { port } = await new Promise<{ port: number }>((resolve) => peer.once('message', resolve as (m: unknown) => void));
  const channels = await Promise.all(
    paths.map(async (path) => {
      const { GrpcChannel } = (await import(pathToFileURL(path).href)) as { GrpcChannel: typeof GrpcChannelClass };
      return new GrpcChannel({ target: `127.0.0.1:${port}`, tls: null, receiveWindowBytes: 8 * 2 ** 20, maxMessageBytes: 2 * 2 ** 20, keepaliveMs: 60_000 });
    }),
  );

  const upload = Buffer.alloc(MESSAGE_BYTES, 3);
  // SubmitUpdateRequest.chunk (field 2, bytes) of 400,000 bytes: tag 0x12, varint length.
  const chunkPrefix = Buffer.from([0x12, 0x80, 0xb5, 0x18]);
  const metadata = { authorization: 'Bearer 0123456789abcdef0123456789abcdef' };
  const call = async (channel: GrpcChannelClass, method: string, message: readonly Buffer[]): Promise<number> => {
    let bytes = 0;
    const c = channel.call(`/bench.Channel/${method}`, { metadata, timeoutMs: 30_000, onMessage: (m) => (bytes += m.length) });
    c.write(message);
    c.end();
    await c.done;
    return bytes;
  };
  const cycle = async (channel: GrpcChannelClass): Promise<void> => {
    if (mode === 'round' || mode === 'small') await call(channel, 'Small', [Buffer.from([8, 1])]);
    if ((mode === 'round' || mode === 'download') && (await call(channel, 'Download', [Buffer.from([8, 1])])) !== MESSAGE_BYTES) throw new Error('short download');
    if (mode === 'round' || mode === 'upload') await call(channel, 'Upload', [chunkPrefix, upload]);
  };

  for (const channel of channels) for (let i = 0; i < Number(args.warmup); i++) await cycle(channel);
  const perBlock: number[][] = channels.map(() => []);
  const faultsPerBlock: number[][] = channels.map(() => []);
  const loadAtStart = loadavg()[0]!;
  for (let b = 0; b < blocks; b++) {
    const order = channels.map((_, i) => i);
    if (b % 2 === 1) order.reverse();
    for (const i of order) {
      const faultsBefore = process.resourceUsage().minorPageFault;
      const before = process.cpuUsage();
      for (let k = 0; k < cycles; k++) await cycle(channels[i]!);
      const used = process.cpuUsage(before);
      perBlock[i]!.push((used.user + used.system) / 1000 / cycles);
      faultsPerBlock[i]!.push((process.resourceUsage().minorPageFault - faultsBefore) / cycles);
    }
  }
  for (const channel of channels) channel.close();
  peer.disconnect();
  console.log(
    JSON.stringify(
      {
        benchmark: 'bench/device-channel.ts',
        mode,
        serverWindow: window,
        cycles,
        blocks,
        warmupCycles: Number(args.warmup),
        node: process.version,
        loadAvg: { atStart: loadAtStart, atEnd: loadavg()[0] },
        channels: paths.map((path, i) => ({
          path,
          cpuMsPerCycleMedian: round3(median(perBlock[i]!)),
          pageFaultsPerCycleMedian: round3(median(faultsPerBlock[i]!)),
          cpuMsPerCycleByBlock: perBlock[i]!.map(round3),
          pageFaultsPerCycleByBlock: faultsPerBlock[i]!.map(round3),
        })),
      },
      null,
      2,
    ),
  );
}

if (process.argv[2] === '--serve') serve(process.argv[3] === 'large' || process.argv[3] === 'default' ? process.argv[3] : 'coordinator');
else await measure();
