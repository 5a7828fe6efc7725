/**
 * Micro-benchmark of @veil/crypto: one FedAvg round of encrypted aggregation.
 *
 *   npx tsx bench/he.ts [--clients 100] [--values 199210] [--seed 1] [--merge '{"plainRoundMs":1234}']
 *
 * Defaults: 100 clients x 199,210 values (the 784-200-200-10 MLP), updates uniform in [-1, 1],
 * integer weights uniform in [1, 128], default preset and quantization, one core. Prints ONE JSON
 * object. Headline times are wall-clock; `cpuMsPerMillion` gives the same figures in process CPU
 * time, which is what one dedicated core would take when the machine is busy (see `loadAverage1m`).
 * `plainRoundMs` / `encryptedRoundMs` are end-to-end round times measured by the demo:
 * they are null here unless passed with --merge (a JSON object, or a path to a JSON file; may be
 * repeated), whose keys are merged into the output. `npm run bench:he` also merges the
 * committee-mode figures of bench/he-committee.ts under `committee`.
 */
import { existsSync, readFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import {
  createCiphertextAccumulator,
  createHeContext,
  createSumDecryptor,
  createUpdateEncryptor,
  generateKeyBundle,
  loadSeal,
  sealRuntimeStats,
} from '../packages/crypto/src/index.js';
import { createSeededRng } from '../packages/privacy/src/index.js';

const { values: args } = parseArgs({
  options: {
    clients: { type: 'string', default: '100' },
    values: { type: 'string', default: '199210' },
    seed: { type: 'string', default: '1' },
    merge: { type: 'string', multiple: true },
  },
});
const clients = Number(args.clients);
const P = Number(args.values);

/** Seeded uniform values in [0, 1) (@veil/privacy's test generator), so failures reproduce. */
function rng(seed: number): () => number {
  const generator = createSeededRng(seed);
  return () => generator.nextDouble();
}

const random = rng(Number(args.seed));
await loadSeal();
const bundle = await generateKeyBundle({ taskId: 'bench-he' });
const deviceCtx = await createHeContext(bundle.device);
const serverCtx = await createHeContext(bundle.coordinator); // holds no secret key
const encryptor = createUpdateEncryptor(deviceCtx, { deviceKey: bundle.device });
const accumulator = createCiphertextAccumulator(serverCtx, { valueCount: P });
const decryptor = createSumDecryptor(deviceCtx, { deviceKey: bundle.device, valueCount: P });

const plainWeightedSum = new Float64Array(P);
const update = new Float32Array(P);
let encryptMs = 0;
let serverMs = 0;
let encryptCpuMs = 0;
let serverCpuMs = 0;
const cpuMs = (since: NodeJS.CpuUsage): number => {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
};
let uploadBytes = 0;
let heapAfterWarmup: number | undefined;
for (let k = 0; k < clients; k++) {
  for (let i = 0; i < P; i++) update[i] = random() * 2 - 1;
  const weight = 1 + Math.floor(random() * 128);
  for (let i = 0; i < P; i++) plainWeightedSum[i]! += weight * update[i]!;

  let started = performance.now();
  let cpu = process.cpuUsage();
  const payload = encryptor.encrypt(update, weight);
  encryptMs += performance.now() - started;
  encryptCpuMs += cpuMs(cpu);
  uploadBytes += payload.byteLength;

  started = performance.now();
  cpu = process.cpuUsage();
  accumulator.add(payload);
  serverMs += performance.now() - started;
  serverCpuMs += cpuMs(cpu);
  if (k === 4) heapAfterWarmup = sealRuntimeStats().heapBytes;
}

let started = performance.now();
const sumPayload = accumulator.toPayload();
const toPayloadMs = performance.now() - started;
started = performance.now();
const decryptCpu = process.cpuUsage();
const result = decryptor.decryptMean(sumPayload);
const decryptMs = performance.now() - started;
const decryptCpuMs = cpuMs(decryptCpu);

let maxAbsError = 0;
for (let i = 0; i < P; i++) {
  maxAbsError = Math.max(maxAbsError, Math.abs(result.mean[i]! - plainWeightedSum[i]! / result.totalWeight));
}
const heapEnd = sealRuntimeStats().heapBytes;
encryptor.dispose();
accumulator.dispose();
decryptor.dispose();
deviceCtx.dispose();
serverCtx.dispose();

const perMillion = 1e6 / P;
const round = (x: number, digits = 2): number => Number(x.toFixed(digits));
const merged: Record<string, unknown> = {};
for (const source of args.merge ?? []) {
  const text = existsSync(source) ? readFileSync(source, 'utf8') : source;
  Object.assign(merged, JSON.parse(text) as Record<string, unknown>);
}

console.log(
  JSON.stringify({
    bytesPerValue: round(uploadBytes / clients / P, 3),
    clientEncryptMsPerMillion: round((encryptMs / clients) * perMillion),
    serverMsPerClientPerMillion: round((serverMs / clients) * perMillion),
    decryptMsPerMillion: round(decryptMs * perMillion),
    maxAbsErrorVsPlainFedAvg: maxAbsError,
    quantizationStep: deviceCtx.quantization.step,
    cpuMsPerMillion: {
      clientEncrypt: round((encryptCpuMs / clients) * perMillion),
      serverPerClient: round((serverCpuMs / clients) * perMillion),
      decrypt: round(decryptCpuMs * perMillion),
    },
    loadAverage1m: round(loadavg()[0] ?? Number.NaN),
    plainRoundMs: null,
    encryptedRoundMs: null,
    clients,
    valueCount: P,
    preset: bundle.coordinator.preset,
    sumBytes: sumPayload.byteLength,
    sumSerializeMs: round(toPayloadMs),
    noiseBudgetBits: result.noiseBudgetBits,
    sealInitMs: round(sealRuntimeStats().initMs ?? Number.NaN),
    sealHeapGrowthBytesAfterWarmup: heapEnd !== undefined && heapAfterWarmup !== undefined ? heapEnd - heapAfterWarmup : null,
    ...merged,
  }),
);
