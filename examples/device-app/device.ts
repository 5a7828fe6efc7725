/**
 * A device app: trains on the device's own data and never sends it anywhere;
 * only model updates leave, through the SDK.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { createClient, type LocalDataset } from '@veil/client-sdk';

interface LocalFile {
  inputShape: number[];
  numClasses: number;
  xs: number[][];
  /** Class indices. */
  ys: number[];
}

function toDataset(file: LocalFile): LocalDataset {
  const width = file.inputShape.reduce((a, b) => a * b, 1);
  const xs = new Float32Array(file.xs.length * width);
  const ys = new Float32Array(file.ys.length * file.numClasses);
  file.xs.forEach((row, i) => {
    if (row.length !== width) throw new Error(`example ${i} has ${row.length} values, expected ${width}`);
    xs.set(row, i * width);
  });
  file.ys.forEach((label, i) => {
    ys[i * file.numClasses + label] = 1;
  });
  return { xs, ys, count: file.ys.length, inputShape: file.inputShape, numClasses: file.numClasses };
}

const { values } = parseArgs({
  options: {
    coordinator: { type: 'string', default: '127.0.0.1:50051' },
    task: { type: 'string' },
    secret: { type: 'string' },
    data: { type: 'string' },
    'credential-file': { type: 'string', default: '.veil-device-credential.json' },
  },
});
if (!values.task || !values.data) throw new Error('--task and --data are required');

const local = toDataset(JSON.parse(readFileSync(values.data, 'utf8')) as LocalFile);
// Keep 10% of the device's examples to evaluate the global models it receives.
const holdOut = Math.max(1, Math.floor(local.count / 10));
const width = local.xs.length / local.count;
const train: LocalDataset = { ...local, count: local.count - holdOut, xs: local.xs.subarray(0, (local.count - holdOut) * width), ys: local.ys.subarray(0, (local.count - holdOut) * local.numClasses) };
const evalData: LocalDataset = { ...local, count: holdOut, xs: local.xs.subarray((local.count - holdOut) * width), ys: local.ys.subarray((local.count - holdOut) * local.numClasses) };

const credentialFile = values['credential-file'];
const stored = existsSync(credentialFile) ? (JSON.parse(readFileSync(credentialFile, 'utf8')) as { clientId: string; credential: string }) : null;
if (stored === null && !values.secret) throw new Error('first run: --secret (the task enrolment secret) is required');

const client = createClient({
  coordinator: values.coordinator,
  taskId: values.task,
  credentials: stored ?? { enrolmentSecret: values.secret! },
});
const identity = await client.join();
writeFileSync(credentialFile, JSON.stringify(identity), { mode: 0o600 });

const controller = new AbortController();
process.on('SIGINT', () => controller.abort());
const summary = await client.run({
  data: train,
  evalData,
  signal: controller.signal,
  onRound: (r) => console.log(`round ${r.roundNumber}: trained on ${r.trainedExamples} examples (update weight ${r.exampleCount}), global model accuracy here ${r.evaluation?.accuracy.toFixed(3) ?? 'n/a'}`),
});
console.log(`task ${summary.taskStatus} after ${summary.rounds} rounds`);
client.close();
