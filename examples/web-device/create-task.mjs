#!/usr/bin/env node
// Creates the task of the README's "Browser devices" guide on a coordinator: a small classifier
// (2 inputs -> 16 ReLU -> 2 softmax) for points the page generates itself (inside / outside the
// unit circle), plaintext, 3 rounds, one device per round. Prints the task id and the page URL.
//
//   VEIL_HTTP=http://127.0.0.1:8080 VEIL_ADMIN_TOKEN=... node examples/web-device/create-task.mjs [--page http://127.0.0.1:8000/]
import { initTensorflow, taskBody } from '@veil/client-sdk';

const args = process.argv.slice(2);
if (args.includes('--help') || args.includes('-h')) {
  console.log('usage: VEIL_HTTP=URL VEIL_ADMIN_TOKEN=TOKEN [VEIL_ENROLMENT_SECRET=S] node examples/web-device/create-task.mjs [--page URL]');
  process.exit(0);
}
const http = process.env.VEIL_HTTP ?? 'http://127.0.0.1:8080';
const page = args.includes('--page') ? args[args.indexOf('--page') + 1] : 'http://127.0.0.1:8000/';
const { tf } = await initTensorflow({ preferred: 'wasm' });
const model = tf.sequential({
  layers: [tf.layers.dense({ inputShape: [2], units: 16, activation: 'relu' }), tf.layers.dense({ units: 2, activation: 'softmax' })],
});
const body = taskBody(model, {
  name: 'web-circle',
  rounds: 3,
  clientsPerRound: 1,
  minClients: 1,
  minAvailableClients: 1,
  encryption: { mode: 'none' },
  training: { epochs: 10, batchSize: 16, learningRate: 0.3 },
  start: true,
});
const response = await fetch(`${http}/v1/tasks`, {
  method: 'POST',
  headers: { authorization: `Bearer ${process.env.VEIL_ADMIN_TOKEN}`, 'content-type': 'application/json' },
  body: JSON.stringify(body),
});
const task = await response.json();
if (response.status !== 201) {
  console.error(response.status, JSON.stringify(task));
  process.exit(1);
}
const query = new URLSearchParams({ coordinator: http, task: task.id, secret: process.env.VEIL_ENROLMENT_SECRET ?? '' });
console.log(`task ${task.id} (${task.parameterCount} parameters)\nopen ${page}?${query}`);
