// Coordinator CPU ladder (session 13): the same devices (the SDK's gRPC transport, one process and
// one connection each) against servers that do more and more of the coordinator's work, so the CPU
// per client-round of each layer shows. Synchronous rounds as /work/briefs/h2-floor.mjs: each round
// every device calls WaitForAssignmentAndModel (answered with an assignment and a 400,000-byte model
// once all N uploads of the previous round arrived) and SubmitUpdate (a 400,000-byte update).
//   MODE=h2     raw node:http2 answering the same gRPC bytes (precomputed frames): the floor
//   MODE=grpc   grpc-js with the coordinator's service definition, HTTP/2 settings and pooled
//               upload decoder (startGrpcServer + installPooledMessageDecoder), trivial handlers
//   MODE=grpc-sha  as grpc, plus the SHA-256 of every upload (as intake does)
//   WINDOW  (h2 only) the stream receive window it announces, default 65,535 (the coordinator's)
// Usage: MODE=grpc N=10 R=40 scripts/node24.sh node bench/coord-ladder.mjs
// Prints JSON: server CPU ms per client-round (process, and main thread vs others), median round ms.
import http2 from 'node:http2';
import { fork } from 'node:child_process';
import { createHash, hash } from 'node:crypto';
import { readFileSync, readdirSync } from 'node:fs';
const N = +(process.env.N ?? 10), R = +(process.env.R ?? 40), SIZE = 400_000, MODE = process.env.MODE ?? 'grpc';
const MODE_SHA = MODE.endsWith('-sha');
const WINDOW = +(process.env.WINDOW ?? 65_535);
const root = new URL('..', import.meta.url).pathname;
if (process.argv[2] === 'client') {
  const { createGrpcTransport } = await import(`${root}packages/client-sdk/dist/transport/grpc-transport.js`);
  const t = createGrpcTransport({ address: `grpc://127.0.0.1:${process.argv[3]}` });
  const payload = Buffer.alloc(SIZE, 7);
  const sha256 = createHash('sha256').update(payload).digest('hex');
  const c0 = process.cpuUsage();
  for (let r = 1; r <= R; r++) {
    const { response, model } = await t.waitForAssignmentAndModel('cred', 30_000);
    if (response.kind !== 'assignment' || model === null) throw new Error(`round ${r}: ${response.kind}`);
    t.releaseModel?.(model);
    await t.submitUpdate('cred', { roundNumber: r, modelVersion: 1, exampleCount: 1, encoding: 'float32-le', sha256 }, payload);
  }
  const c = process.cpuUsage(c0);
  t.close();
  process.send({ cpu: (c.user + c.system) / 1000 });
  setTimeout(() => process.exit(0), 50);
} else {
  const protocol = await import(`${root}packages/protocol/dist/index.js`);
  const { chunkPayload } = await import(`${root}packages/protocol/dist/codec.js`);
  const model = Buffer.alloc(SIZE, 3);
  const modelSha = createHash('sha256').update(model).digest();
  const assignment = (round) => ({
    answer: {
      assignment: {
        roundId: '00000000-0000-4000-8000-000000000000', roundNumber: round, modelVersion: 1, modelSha256: modelSha, modelSizeBytes: SIZE,
        deadlineUnixMs: Date.now() + 60_000, training: { epochs: 1, batchSize: 32, learningRate: 0.01 }, updateEncoding: 'UPDATE_ENCODING_FLOAT32_LE',
        maxUpdateBytes: SIZE, maxExampleCount: 1_000_000, evaluate: true, privacy: null, config: [],
      },
    },
  });
  const encoded = [
    protocol.encodeModelChunk({ header: { modelVersion: 1, encoding: 'MODEL_ENCODING_FLOAT32_LE', sizeBytes: SIZE, sha256: modelSha } }),
    ...[...chunkPayload(model)].map((data) => protocol.encodeModelChunk({ data })),
  ];
  const def = protocol.federationServiceDefinition();
  // The synchronous gate: a round's answers wait until all N uploads of the previous round arrived.
  let pending = [], ups = 0, round = 1, answered = 0;
  const roundEnds = [];
  const ask = (send) => {
    if (answered < N) { answered++; send(round); } else pending.push(send);
  };
  const uploaded = () => {
    if (++ups < N) return;
    ups = 0; round++; roundEnds.push(performance.now());
    const p = pending; pending = []; answered = 0;
    for (const send of p) ask(send);
  };
  let port, close;
  if (MODE === 'h2') {
    const frame = (bytes) => { const b = Buffer.allocUnsafe(bytes.length + 5); b[0] = 0; b.writeUInt32BE(bytes.length, 1); bytes.copy(b, 5); return b; };
    const ack = frame(def.SubmitUpdate.responseSerialize({ acceptedCount: 1, payloadSha256: modelSha }));
    const srv = http2.createServer({ settings: { maxFrameSize: 1 << 20, initialWindowSize: WINDOW } });
    srv.on('session', (s) => s.setLocalWindowSize(16 << 20));
    srv.on('stream', (st, h) => {
      st.on('error', () => {});
      if (h[':path'].endsWith('/WaitForAssignmentAndModel')) {
        st.on('data', () => {});
        st.on('end', () => ask((r) => {
          st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
          st.write(frame(def.WaitForAssignmentAndModel.responseSerialize(assignment(r))));
          for (const m of encoded) st.write(m.framed);
          st.end();
        }));
      } else {
        const cs = [];
        st.on('data', (c) => cs.push(c));
        st.on('end', () => {
          const all = Buffer.concat(cs);
          if (MODE_SHA) hash('sha256', all.subarray(all.length - SIZE), 'hex');
          st.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
          st.on('wantTrailers', () => st.sendTrailers({ 'grpc-status': '0' }));
          st.end(ack);
          uploaded();
        });
      }
    });
    await new Promise((res) => srv.listen(0, '127.0.0.1', res));
    port = srv.address().port; close = () => srv.close();
  } else {
    const { startGrpcServer } = await import(`${root}packages/server/dist/grpc/federation-service.js`);
    const { installPooledMessageDecoder, releaseMessageBuffer } = await import(`${root}packages/server/dist/grpc/message-pool.js`);
    installPooledMessageDecoder();
    const handlers = {
      WaitForAssignmentAndModel(call) {
        ask(async (r) => {
          call.write(assignment(r));
          for (const m of encoded) if (!call.write(m)) await new Promise((res) => call.once('drain', res));
          call.end();
        });
      },
      SubmitUpdate(call, callback) {
        const chunks = [];
        call.on('data', (m) => { if (m.part === 'chunk') chunks.push(m.chunk); });
        call.on('end', () => {
          if (MODE_SHA) hash('sha256', chunks.length === 1 ? chunks[0] : Buffer.concat(chunks), 'hex');
          for (const c of chunks) releaseMessageBuffer(c);
          callback(null, { acceptedCount: 1, payloadSha256: modelSha });
          uploaded();
        });
      },
    };
    const h = await startGrpcServer(handlers, { host: '127.0.0.1', port: 0 });
    port = h.port; close = () => h.close();
  }
  const threads = () => {
    const out = {};
    for (const tid of readdirSync('/proc/self/task')) {
      const f = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
      const name = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')')).replace(/[0-9]+$/, '');
      const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
      out[name] = (out[name] ?? 0) + (+rest[11] + +rest[12]) * 10;
    }
    return out;
  };
  const th0 = threads(); const t0 = process.cpuUsage(); const w0 = performance.now();
  const cpus = await Promise.all(Array.from({ length: N }, () => new Promise((res, rej) => {
    const c = fork(new URL(import.meta.url).pathname, ['client', port], { env: { ...process.env } });
    c.on('message', (m) => res(m.cpu)); c.on('exit', (code) => code && rej(new Error(`client exit ${code}`)));
  })));
  const c = process.cpuUsage(t0); const wall = performance.now() - w0; const th1 = threads();
  const gaps = roundEnds.slice(1).map((t, i) => t - roundEnds[i]).sort((a, b) => a - b);
  const perThread = Object.fromEntries(Object.keys(th1).map((k) => [k, +(((th1[k] - (th0[k] ?? 0)) / (N * R))).toFixed(3)]).filter(([, v]) => v > 0));
  console.log(JSON.stringify({ MODE, N, R, serverCpuMsPerClientRound: +((c.user + c.system) / 1000 / (N * R)).toFixed(3), byThreadMs: perThread,
    clientCpuMsPerClientRound: +(cpus.reduce((a, b) => a + b) / (N * R)).toFixed(3), wallMsPerRound: +(wall / R).toFixed(1),
    medianRoundMs: +gaps[gaps.length >> 1].toFixed(1), load: readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ') }));
  close(); setTimeout(() => process.exit(0), 100);
}
