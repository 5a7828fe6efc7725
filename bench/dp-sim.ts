/**
 * DP-FedAvg simulation in one process (no network, no encryption): N light
 * clients with a small MNIST share each, Poisson sampling with rate q, the
 * distributed discrete Gaussian (Kairouz, Liu & Steinke 2021) encode/decode of
 * @veil/privacy with the modular sum taken in JS, FedAvg of the clipped
 * updates. Used to choose the settings of e2e/dp.test.ts (accounting here on
 * dp_accounting's default orders; the coordinator's distributed accounting adds
 * the integers to 256, see DDG_RDP_ORDERS).
 *
 *   npx tsx bench/dp-sim.ts [--clients 400] [--q 0.5] [--rounds 10] [--z 1.4]
 *     [--clip 0.5] [--epochs 1] [--lr 0.1] [--batch 10] [--hidden 0] [--no-dp]
 */
import { parseArgs } from 'node:util';
import {
  computeDistributedDiscreteGaussianRdp,
  createRdpAccountant,
  decodeDistributedDiscreteGaussian,
  encodeDistributedDiscreteGaussian,
} from '../packages/privacy/src/index.js';
import { evaluateLocal, initTensorflow, trainLocal } from '../packages/client-sdk/src/training/index.js';
import { loadMnist } from '../packages/cli/src/demo/mnist.js';
import { createSeededRng, partitionIid } from '../packages/cli/src/demo/partition.js';

const { values } = parseArgs({
  options: {
    clients: { type: 'string', default: '400' },
    q: { type: 'string', default: '0.5' },
    rounds: { type: 'string', default: '10' },
    z: { type: 'string', default: '1.4' },
    clip: { type: 'string', default: '0.5' },
    epochs: { type: 'string', default: '1' },
    lr: { type: 'string', default: '0.1' },
    batch: { type: 'string', default: '10' },
    hidden: { type: 'string', default: '0' },
    scale: { type: 'string', default: '256' },
    'min-clients': { type: 'string', default: '0' },
    'no-dp': { type: 'boolean', default: false },
    seed: { type: 'string', default: '1' },
  },
});
const N = Number(values.clients);
const q = Number(values.q);
const T = Number(values.rounds);
const z = Number(values.z);
const C = Number(values.clip);
const hidden = Number(values.hidden);
const scale = Number(values.scale);
const dp = !values['no-dp'];
const modulus = 536_813_569; // a 29-bit batching prime like the BFV default t (exact value irrelevant here)
const { tf } = await initTensorflow({ preferred: 'wasm' });
const { train, test } = loadMnist();
const rng = createSeededRng(Number(values.seed));
const shares = partitionIid(train, N, rng);
const layers = hidden > 0
  ? [tf.layers.dense({ inputShape: [784], units: hidden, activation: 'relu' }), tf.layers.dense({ units: 10, activation: 'softmax' })]
  : [tf.layers.dense({ inputShape: [784], units: 10, activation: 'softmax' })];
const model = tf.sequential({ layers });
const spec = { topology: model.toJSON(null, false) as unknown as Record<string, unknown>, weightSpecs: model.weights.map((v) => ({ name: v.originalName, shape: v.shape as number[], dtype: 'float32' as const })) };
const P = spec.weightSpecs.reduce((s, w) => s + w.shape.reduce((a, b) => a * b, 1), 0);
let global = new Float32Array(P);
{ // Glorot uniform kernels
  let off = 0;
  for (const w of spec.weightSpecs) {
    const n = w.shape.reduce((a, b) => a * b, 1);
    if (w.shape.length === 2) { const lim = Math.sqrt(6 / (w.shape[0]! + w.shape[1]!)); for (let i = 0; i < n; i++) global[off + i] = (rng.next() * 2 - 1) * lim; }
    off += n;
  }
}
let d = 1; while (d < P) d *= 2;
const minClients = Number(values['min-clients']) || Math.max(1, Math.floor(N * q * 0.8));
const localStddev = (z * C) / Math.sqrt(minClients);
const rdp = computeDistributedDiscreteGaussianRdp({ clipNorm: C, scale, localStddev, clients: minClients, dimension: d, samplingRate: q });
const acc = createRdpAccountant();
console.log(JSON.stringify({ N, q, T, z, C, P, d, minClients, localStddev, scale, dp }));
for (let round = 1; round <= T; round++) {
  const t0 = performance.now();
  const sum = new Float64Array(dp ? d : P);
  let n = 0; const norms: number[] = [];
  const seedRot = round * 7919;
  for (const [k, data] of shares.entries()) {
    if (rng.next() >= q) continue;
    const r = await trainLocal(tf, { spec, weights: global, data, epochs: Number(values.epochs), batchSize: Number(values.batch), learningRate: Number(values.lr), seed: round * 100003 + k });
    let sq = 0; for (const v of r.delta) sq += v * v; norms.push(Math.sqrt(sq));
    if (dp) {
      const enc = encodeDistributedDiscreteGaussian(r.delta, { clipNorm: C, scale, localStddev, modulus, rotationSeed: seedRot });
      for (let i = 0; i < d; i++) sum[i] = (sum[i]! + enc.encoded[i]!) % modulus;
    } else for (let i = 0; i < P; i++) sum[i]! += r.delta[i]!;
    n++;
  }
  const mean = dp ? decodeDistributedDiscreteGaussian(sum, { scale, modulus, originalDimension: P, rotationSeed: seedRot }) : sum;
  const next = new Float32Array(P);
  for (let i = 0; i < P; i++) next[i] = global[i]! + mean[i]! / n;
  global = next;
  acc.compose({ kind: 'rdp', rdp });
  const e = await evaluateLocal(tf, { spec, weights: global, data: test });
  norms.sort((a, b) => a - b);
  console.log(JSON.stringify({ round, n, accuracy: +e.accuracy.toFixed(4), epsilon: dp ? +acc.getEpsilon(1e-5).epsilon.toFixed(3) : null, medianNorm: +norms[norms.length >> 1]!.toFixed(3), ms: Math.round(performance.now() - t0) }));
}
