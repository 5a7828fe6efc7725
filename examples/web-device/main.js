// The web device: joins the task named in config.json (or the query string), trains on its slice
// of MNIST served by this example's server, and takes part in rounds until the task ends.
// window.veil exposes the state for tests: { status, backend, rounds, summary, error }.
import { browserLogger, createClient, createConnectTransport, initTensorflow } from './sdk/veil-sdk.js';

const state = (window.veil = { status: 'starting', backend: null, rounds: [], summary: null, error: null, upload: null });
const $ = (id) => document.getElementById(id);
const setStatus = (text) => {
  state.status = text;
  $('status').textContent = text;
};
const log = (text) => ($('log').textContent += `${new Date().toISOString().slice(11, 19)} ${text}\n`);

async function fetchDataset(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  const count = Number(response.headers.get('x-count'));
  const bytes = await response.arrayBuffer();
  const xs = new Float32Array(bytes, 0, count * 784);
  const ys = new Float32Array(bytes, count * 784 * 4, count * 10);
  return { xs, ys, count, inputShape: [784], numClasses: 10 };
}

async function main() {
  const params = new URLSearchParams(location.search);
  const config = await (await fetch('./config.json')).json();
  const shard = Number(params.get('shard') ?? 0);
  const shards = Number(params.get('shards') ?? config.shards ?? 1);
  const examples = Number(params.get('examples') ?? config.examples ?? 500);
  const name = params.get('name') ?? `web-device-${shard}`;

  // TF.js and its backend load now (webgpu → webgl → wasm → cpu, or ?backend=...); wasm files come from the SDK's folder.
  setStatus('loading TensorFlow.js');
  const preferred = params.get('backend') ?? undefined;
  const { backend } = await initTensorflow({ ...(preferred && { preferred }), wasmPaths: new URL('./sdk/', location.href).href });
  state.backend = backend;
  $('backend').textContent = backend;
  log(`TensorFlow.js backend: ${backend}`);

  setStatus('loading data');
  const data = await fetchDataset(`./data/mnist?shard=${shard}&shards=${shards}&count=${examples}`);
  const evalData = await fetchDataset(`./data/mnist?split=test&count=500`);
  log(`${data.count} training digits, ${evalData.count} held-out digits in the page`);

  // The device's DP spend survives reloads (localStorage); a real app would keep its credential too.
  const dpKey = `veil-dp-${config.taskId}-${name}`;
  const restore = localStorage.getItem(dpKey);
  const transport = createConnectTransport({
    baseUrl: params.get('coordinator') ?? config.coordinatorUrl,
    chunkBytes: Number(params.get('chunkBytes') ?? 1024 * 1024),
    onChunk: (p) => {
      state.upload = p;
    },
  });
  const client = createClient({
    coordinator: config.coordinatorUrl,
    transport,
    taskId: config.taskId,
    credentials: { enrolmentSecret: config.enrolmentSecret },
    name,
    logger: browserLogger,
    privacy: { ...(restore !== null && { restore: JSON.parse(restore) }), persist: (s) => localStorage.setItem(dpKey, JSON.stringify(s)) },
    ...(config.committee && {
      committee: {
        pins: config.committee.pins,
        // The app's backend (this example's server) asks the enrolment authority to certify the device key.
        certify: async ({ taskId, deviceId, devicePublicKey }) => {
          const response = await fetch('./enrol', {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ taskId, deviceId, devicePublicKey: btoa(String.fromCharCode(...devicePublicKey)) }),
          });
          const body = await response.json();
          if (!response.ok) throw new Error(`enrolment refused: ${body.error ?? response.status}`);
          return body.certificate;
        },
      },
    }),
  });
  setStatus('joining');
  await client.join();
  setStatus('in the federation');
  const summary = await client.run({
    data,
    evalData,
    onRound: (r) => {
      state.rounds.push(r);
      const acc = r.evaluation ? (100 * r.evaluation.accuracy).toFixed(1) + ' %' : '-';
      $('rounds').insertAdjacentHTML(
        'beforeend',
        `<tr><td>${r.roundNumber}</td><td>${r.trainedExamples}</td><td>${r.trainLoss.toFixed(3)}</td><td>${Math.round(r.trainMs)}</td><td>${r.uploadBytes}</td><td>${r.acceptedCount}</td><td>${acc}</td></tr>`,
      );
      log(`round ${r.roundNumber}: update accepted (${r.acceptedCount} so far)`);
    },
  });
  state.summary = summary;
  const final = summary.finalEvaluation;
  setStatus(`done: ${summary.taskStatus}${final ? `, final model ${(100 * final.accuracy).toFixed(1)} % on the page's held-out digits` : ''}`);
  client.close();
}

main().catch((error) => {
  state.error = String(error?.stack ?? error);
  setStatus(`failed: ${error?.message ?? error}`);
  log(state.error);
});
