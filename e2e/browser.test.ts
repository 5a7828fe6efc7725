/**
 * Browser devices end to end (issue 14 items 4-5): the SDK's browser bundle (esbuild, built
 * here), the example page examples/web-device served by its own server, opened in separate
 * contexts of Debian's Chromium (playwright-core), and a Node device process, all in ONE task
 * with committee secure aggregation (3 `veil custodian serve` processes, t = 2) and local
 * differential privacy accounted by the coordinator's ledger, against a `veil server` process.
 * The browsers speak the Connect protocol to the coordinator's HTTP port; the Node device gRPC.
 *   - round 1: one page's first PutChunk reaches the coordinator but its answer is lost
 *     (playwright aborts the response): the upload resumes and is accepted once;
 *   - round 2: one page is closed in the middle of its chunked upload: the round closes at its
 *     deadline with the other three updates, the next opens;
 *   - round 3: a reopened page (a new device) takes its place;
 * then the global model is evaluated on held-out digits: it improves.
 */
import { randomUUID } from 'node:crypto';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { createInterface } from 'node:readline';
import { join } from 'node:path';
import { pino } from 'pino';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, expect, test } from 'vitest';
import { createMnistMlp } from '@veil/cli';
import { evaluateLocal, initTensorflow } from '@veil/client-sdk';
import {
  buildTaskDescriptor,
  createCiphertextAccumulator,
  createHeContext,
  createSumDecryptor,
  custodianFingerprint,
  encodeDescriptor,
  generateEd25519KeyPair,
  generateKeyBundle,
  serializeKeyMaterial,
  signDescriptor,
} from '@veil/crypto';
import { initCustodianDir, initRequestKey, startEnrolmentServer } from '@veil/custodian';
import { startWebDeviceServer } from '../examples/web-device/serve.mjs';
import type { DeviceConfig, DeviceMessage } from './device.js';
import {
  REPO_ROOT,
  VEIL_BIN,
  assertBuilt,
  createDatabase,
  createRestClient,
  createTempDir,
  float32Base64,
  freePorts,
  randomSecret,
  startCoordinatorProcess,
  startDeviceProcess,
  tail,
  waitFor,
  withTimeout,
  type DeviceProcess,
} from './support.js';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const PAGES = 3;
const DEVICES = PAGES + 1;
const MIN_DEVICES = 3;
const ROUNDS = 3;
const EXAMPLES = 400;
const CUSTODIANS = 3;
/** A 784-32-10 MLP: small enough that the e2e stays lean on a loaded 2-core machine (bench/browser.ts measures the demo's 784-200-200-10). */
const HIDDEN = [32];
const PARAMETERS = 784 * 32 + 32 + 32 * 10 + 10;
/** A round that waits for a device that went away closes at this deadline. */
const ROUND_DEADLINE_MS = 40_000;

function startCustodian(dir: string, requestPublicFile: string, authorityPublicFile: string): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, [VEIL_BIN, 'custodian', 'serve', '--dir', dir, '--listen', '127.0.0.1:0', '--coordinator-key', requestPublicFile, '--authority-key', authorityPublicFile, '--min-devices', String(MIN_DEVICES)], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const stderr: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`custodian did not start: ${stderr.join('')}`)), 60_000);
    createInterface({ input: child.stdout! }).once('line', (line) => {
      clearTimeout(timer);
      resolve({ child, address: (JSON.parse(line) as { listening: string }).listening });
    });
    child.once('exit', (code) => reject(new Error(`custodian exited with ${code}: ${stderr.join('')}`)));
  });
}

/**
 * The upload id and offset of a binary PutChunkRequest (fields 1 and 2, which the SDK's Connect
 * transport writes first; an offset of 0 may be left out).
 */
function putChunkTarget(body: Buffer): { uploadId: string; offset: number } {
  let at = 0;
  const varint = (): number => {
    let value = 0;
    for (let shift = 0; at < body.length; shift += 7) {
      const byte = body[at++]!;
      value += (byte & 0x7f) * 2 ** shift;
      if (byte < 0x80) break;
    }
    return value;
  };
  let uploadId = '';
  let offset = 0;
  while (at < body.length) {
    const key = varint();
    if (key === 0x0a) {
      const length = varint();
      uploadId = body.subarray(at, at + length).toString('utf8');
      at += length;
    } else if (key === 0x10) offset = varint();
    else break;
  }
  return { uploadId, offset };
}

interface PageState {
  status: string;
  backend: string | null;
  rounds: Array<{ roundNumber: number; uploadBytes: number; acceptedCount: number; evaluation: { accuracy: number } | null }>;
  summary: { taskStatus: string; rounds: number } | null;
  error: string | null;
}

/** The browser bundle, built once for the file's tests: its directory and printed sizes. */
let built: Promise<{ dir: string; sizes: { sdkAndDepsGzipKB: number; tfjsGzipKB: number; totalWithTfjsAndSealGzipKB: number } }> | undefined;
function buildBundle(): Promise<{ dir: string; sizes: { sdkAndDepsGzipKB: number; tfjsGzipKB: number; totalWithTfjsAndSealGzipKB: number } }> {
  built ??= (async () => {
    const dir = await mkdtemp(join(tmpdir(), 'veil-e2e-browser-sdk-'));
    const out = execFileSync(process.execPath, [join(REPO_ROOT, 'packages/client-sdk/scripts/build-browser.mjs'), '--outdir', dir], { encoding: 'utf8' });
    return { dir, sizes: JSON.parse(out.trim().split('\n').at(-1)!) };
  })();
  return built;
}

afterAll(async () => {
  if (built !== undefined) await rm((await built).dir, { recursive: true, force: true });
});

test('node-seal in the browser: loaded only when a shared-key BFV device encrypts; its update decrypts in Node to the values sent', async () => {
  assertBuilt();
  await using dataDir = await createTempDir('veil-e2e-browser-seal-');
  const { dir: sdkDir } = await buildBundle();
  const bundle = await generateKeyBundle({ taskId: 'browser-seal' });
  const values = Float32Array.from({ length: 5000 }, (_, i) => Math.sin(i * 0.37) * 0.9);
  const web = await startWebDeviceServer({ config: { coordinatorUrl: 'http://127.0.0.1:1', taskId: 'seal', enrolmentSecret: '' }, port: 0, sdkDir });
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  try {
    const page = await browser.newPage();
    await page.goto(`${web.url}/config.json`);
    const result = await page.evaluate(
      async ({ key, values }) => {
        const loaded = (): string[] => performance.getEntriesByType('resource').map((e) => e.name).filter((n) => /index_throws|seal_throws\.wasm/.test(n));
        // (Through Function: vitest rewrites a literal import() in this function's source.)
        const sdk = await (new Function('url', 'return import(url)') as (url: string) => Promise<any>)('/sdk/veil-sdk.js');
        const before = loaded();
        const deviceKey = sdk.parseDeviceKeyMaterial(Uint8Array.from(atob(key), (c) => c.charCodeAt(0)));
        const encryption = await sdk.createDeviceEncryption(deviceKey);
        const ctx = { taskId: 'seal', clientId: 'page', roundNumber: 1, modelVersion: 0, maxExampleCount: 100, config: {}, signal: undefined };
        const update = await encryption.middleware({ delta: Float32Array.from(values), exampleCount: 3, encoding: 'float32-le', notes: {} }, ctx, async (u: unknown) => u);
        let text = '';
        for (const b of update.payload as Uint8Array) text += String.fromCharCode(b);
        return { before, after: loaded(), encoding: update.encoding, exampleCount: update.exampleCount, payload: btoa(text) };
      },
      { key: Buffer.from(serializeKeyMaterial(bundle.device)).toString('base64'), values: Array.from(values) },
    );
    // node-seal's chunk and wasm were fetched for the encryption, not with the SDK.
    expect(result.before).toEqual([]);
    expect(result.after.some((n) => /\/chunks\/index_throws-[A-Z0-9]+\.js$/.test(n))).toBe(true);
    expect(result.after.some((n) => n.endsWith('seal_throws.wasm'))).toBe(true);
    expect([result.encoding, result.exampleCount]).toEqual(['bfv-v1', 3]);
    const ctx = await createHeContext(bundle.coordinator);
    const accumulator = createCiphertextAccumulator(ctx, { valueCount: values.length });
    const decryptor = createSumDecryptor(ctx, { deviceKey: bundle.device });
    try {
      accumulator.add(Buffer.from(result.payload, 'base64'));
      const mean = decryptor.decryptMean(accumulator.toPayload());
      expect(mean).toMatchObject({ clientCount: 1, totalWeight: 3 });
      // Quantisation step 2^-13: the mean is within half a step of each value.
      let maxError = 0;
      for (let i = 0; i < values.length; i++) maxError = Math.max(maxError, Math.abs(mean.mean[i]! - values[i]!));
      expect(maxError).toBeLessThanOrEqual(2 ** -14 + 1e-9);
    } finally {
      accumulator.dispose();
      decryptor.dispose();
      ctx.dispose();
    }
  } finally {
    await browser.close();
    await web.close();
  }
});

test('browser pages and a Node device train MNIST in one committee-encrypted, DP-accounted task', async () => {
  assertBuilt();
  const started = performance.now();
  await using dataDir = await createTempDir('veil-e2e-browser-');
  // The SDK's browser bundle, built from the sources now (esbuild: a few seconds); its sizes.
  const { dir: sdkDir, sizes: build } = await buildBundle();
  console.info(`browser bundle: SDK + deps ${build.sdkAndDepsGzipKB} KB gzip, TF.js ${build.tfjsGzipKB} KB, total with TF.js and SEAL wasm ${build.totalWithTfjsAndSealGzipKB} KB`);
  expect(build.sdkAndDepsGzipKB).toBeLessThanOrEqual(150);

  await using database = await createDatabase();
  const custodianProcs: ChildProcess[] = [];
  let browser: Browser | null = null;
  const devices: DeviceProcess<DeviceMessage>[] = [];
  let web: { url: string; close(): Promise<void> } | null = null;
  try {
    const authority = generateEd25519KeyPair();
    const authorityPublicFile = join(dataDir.path, 'authority-public.json');
    await writeFile(authorityPublicFile, JSON.stringify({ publicKey: Buffer.from(authority.publicKey).toString('base64') }));
    const request = await initRequestKey(join(dataDir.path, 'request-key'));
    const publics = [];
    const addresses: string[] = [];
    for (let i = 1; i <= CUSTODIANS; i++) {
      const dir = join(dataDir.path, `custodian-${i}`);
      publics.push(await initCustodianDir(dir));
      const proc = await startCustodian(dir, request.publicFile, authorityPublicFile);
      custodianProcs.push(proc.child);
      addresses.push(proc.address);
    }
    const taskId = randomUUID();
    const descriptor = buildTaskDescriptor({
      taskId,
      committee: publics.map((p, i) => ({ address: addresses[i]!, sealingPublicKey: Buffer.from(p.sealingKey, 'base64'), signingPublicKey: Buffer.from(p.signingKey, 'base64') })),
      threshold: 2,
      minDevices: MIN_DEVICES,
      maxDevices: 100,
      maxRounds: ROUNDS,
      encoding: { weightCap: 1 },
      authorityPublicKey: authority.publicKey,
    });
    const authoritySecret = randomSecret();
    await using enrolment = await startEnrolmentServer({ authority, enrolmentSecret: authoritySecret, taskIds: [taskId], statePath: join(dataDir.path, 'enrolment.jsonl'), logger: pino({ level: 'silent' }) });

    await mkdir(join(dataDir.path, 'coordinator'));
    const [grpcPort, httpPort] = (await freePorts(2)) as [number, number];
    const adminToken = randomSecret();
    const coordinatorSecret = randomSecret();
    await using coordinator = await startCoordinatorProcess({
      databaseUrl: database.url,
      dataDir: join(dataDir.path, 'coordinator'),
      grpcPort,
      httpPort,
      adminToken,
      enrolmentSecret: coordinatorSecret,
      env: { VEIL_COMMITTEE_REQUEST_KEY: request.secretFile },
    });
    const rest = createRestClient(coordinator.httpUrl, adminToken);
    const { tf } = await initTensorflow({ preferred: 'wasm' });
    const { spec, weights: initialWeights } = createMnistMlp(tf, { seed: 1, hidden: HIDDEN });
    await rest.createTask({
      name: 'e2e-browser-committee-dp',
      committee: { descriptor: Buffer.from(encodeDescriptor(descriptor)).toString('base64'), descriptorSignature: signDescriptor(descriptor, authority.privateKey).signature },
      // Local DP, every update weighs 1. The noise is small (z = 0.01) so that four devices learn in
      // three rounds; the point here is the accounting path, not a meaningful epsilon.
      privacy: { mode: 'local', epsilonCap: 1e6, delta: 1e-5, noiseMultiplier: 0.01, clipNorm: 2, samplingRate: 1 },
      rounds: ROUNDS,
      clientsPerRound: DEVICES,
      minClients: MIN_DEVICES,
      minAvailableClients: DEVICES,
      roundDeadlineMs: ROUND_DEADLINE_MS,
      training: { epochs: 2, batchSize: 16, learningRate: 0.2 },
      start: true,
      model: { topology: spec.topology, weightSpecs: spec.weightSpecs, weightsBase64: float32Base64(initialWeights) },
    } as Parameters<typeof rest.createTask>[0]);

    const pins = {
      minDevices: MIN_DEVICES,
      maxRounds: 10,
      pinnedFingerprints: publics.map((p) => custodianFingerprint(Buffer.from(p.signingKey, 'base64'), Buffer.from(p.sealingKey, 'base64'))),
      authorityKey: Buffer.from(authority.publicKey).toString('base64'),
    };
    web = await startWebDeviceServer({
      config: { coordinatorUrl: coordinator.httpUrl, taskId, enrolmentSecret: coordinatorSecret, shards: DEVICES, examples: EXAMPLES, committee: { pins, enrolmentUrl: enrolment.url, enrolmentSecret: authoritySecret } },
      port: 0,
      sdkDir,
    });

    // The Node device: the last shard of the same digits, through gRPC.
    const shardBytes = Buffer.from(await (await fetch(`${web.url}/data/mnist?shard=${PAGES}&shards=${DEVICES}&count=${EXAMPLES}`)).arrayBuffer());
    const shardPath = join(dataDir.path, 'node-shard.f32');
    await writeFile(shardPath, shardBytes);
    const nodeConfig: DeviceConfig = {
      coordinator: coordinator.grpcAddress,
      taskId,
      enrolmentSecret: coordinatorSecret,
      index: PAGES,
      shard: { path: shardPath, count: EXAMPLES, inputShape: [784], numClasses: 10 },
      committee: { pins, enrolmentUrl: enrolment.url, enrolmentSecret: authoritySecret },
    };
    devices.push(startDeviceProcess('device.ts', 'VEIL_E2E_DEVICE', nodeConfig, join(dataDir.path, 'node-device.log')));

    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
    const contexts: BrowserContext[] = [];
    const pages: Page[] = [];
    const consoleLines: string[][] = [];
    const open = async (index: number): Promise<Page> => {
      const context = await browser!.newContext();
      contexts[index] = context;
      const page = await context.newPage();
      consoleLines[index] = [];
      page.on('console', (m) => consoleLines[index]!.push(m.text()));
      page.on('pageerror', (e) => consoleLines[index]!.push(`pageerror: ${e.message}`));
      pages[index] = page;
      return page;
    };

    // Page 0 is closed during its round-2 upload (32 KiB chunks, so the upload takes several calls):
    // that upload's first PutChunk after its first chunk arrived is held here, never sent on, while the
    // page's context closes. (Closing it from a callback the page does not wait for raced the page's
    // next chunks: under load the upload could finish first.)
    const victim = await open(0);
    const victimUploads: string[] = [];
    let victimClosedAt: { uploadId: string; receivedBytes: number } | null = null;
    await victim.route('**/veil.v1.UploadService/PutChunk', async (route) => {
      const { uploadId, offset } = putChunkTarget(route.request().postDataBuffer() ?? Buffer.alloc(0));
      if (!victimUploads.includes(uploadId)) victimUploads.push(uploadId);
      if (victimUploads.length === 2 && offset > 0 && victimClosedAt === null) {
        victimClosedAt = { uploadId, receivedBytes: offset };
        await contexts[0]!.close();
        return;
      }
      return route.continue();
    });
    // Page 1's first PutChunk reaches the coordinator, but the answer is lost on the way back.
    const resumed = await open(1);
    let lostAnswers = 0;
    let putChunks = 0;
    await resumed.route('**/veil.v1.UploadService/PutChunk', async (route) => {
      putChunks++;
      if (lostAnswers === 0) {
        lostAnswers++;
        await route.fetch();
        return route.abort('connectionreset');
      }
      return route.continue();
    });
    await open(2);
    await Promise.all([
      victim.goto(`${web.url}/?shard=0&name=browser-0&chunkBytes=32768`),
      resumed.goto(`${web.url}/?shard=1&name=browser-1`),
      pages[2]!.goto(`${web.url}/?shard=2&name=browser-2`),
    ]);
    const state = (page: Page): Promise<PageState> => page.evaluate(() => (globalThis as unknown as { veil: PageState }).veil);

    // Round 2 closes at its deadline without the closed page; then a reopened page joins for round 3.
    await waitFor('round 2 to close', async () => {
      const rounds = await rest.listRounds(taskId);
      for (const i of [1, 2]) {
        const s = await state(pages[i]!);
        if (s.error) throw new Error(`page ${i} failed: ${s.error}\n${consoleLines[i]!.join('\n')}\ncoordinator:\n${tail(coordinator.logFile, 60)}`);
      }
      return rounds.length >= 2 && (rounds[1]!.state === 'CLOSED' || rounds[1]!.state === 'FAILED') ? rounds : undefined;
    }, 150_000, 1_000);
    expect(victimClosedAt, `victim uploads ${JSON.stringify(victimUploads)}; rounds ${JSON.stringify((await rest.listRounds(taskId)).map((r) => [r.number, r.state, r.received, r.events.map((e) => e.reason)]))}; victim console:\n${consoleLines[0]!.slice(-30).join('\n')}`).not.toBeNull();
    const reopened = await open(3);
    await reopened.goto(`${web.url}/?shard=0&name=browser-0-reopened`);

    const finalStates = await withTimeout(
      'the pages and the Node device to finish',
      (async () => {
        const exit = await devices[0]!.exit;
        expect(exit, `Node device log:\n${tail(devices[0]!.logFile)}\ncoordinator:\n${tail(coordinator.logFile)}`).toEqual({ exitCode: 0, signalCode: null });
        return Promise.all(
          [1, 2, 3].map((i) =>
            waitFor(`page ${i} to finish`, async () => {
              const s = await state(pages[i]!);
              if (s.error) throw new Error(`page ${i} failed: ${s.error}\n${consoleLines[i]!.join('\n')}\ncoordinator:\n${tail(coordinator.logFile, 60)}`);
              return s.summary !== null ? s : undefined;
            }, 120_000, 500),
          ),
        );
      })(),
      240_000,
    );

    // Every round closed; round 2 without the closed page (which had sent part of its upload).
    const rounds = await rest.listRounds(taskId);
    expect(rounds.map((r) => r.state)).toEqual(['CLOSED', 'CLOSED', 'CLOSED']);
    const deviceCounts = rounds.map((r) => (r.summary as { committee?: { deviceCount: number } }).committee?.deviceCount);
    expect(deviceCounts).toEqual([DEVICES, DEVICES - 1, DEVICES]);
    expect(victimClosedAt!.receivedBytes).toBeGreaterThan(0);
    // The page whose answer was lost: its chunk counted once, its round-1 update accepted once.
    expect(lostAnswers).toBe(1);
    // One update of one chunk per round: the lost call's chunk was not sent again (GetUpload said it had arrived).
    expect(putChunks).toBe(ROUNDS);
    const pageRounds = finalStates.map((s) => s.rounds.map((r) => r.roundNumber));
    expect(pageRounds).toEqual([[1, 2, 3], [1, 2, 3], [3]]);
    for (const s of finalStates) expect(s.summary).toMatchObject({ taskStatus: 'TASK_STATUS_COMPLETED' });
    const nodeRounds = devices[0]!.messages.filter((m): m is Extract<DeviceMessage, { type: 'round' }> => m.type === 'round');
    expect(nodeRounds.map((r) => r.roundNumber)).toEqual([1, 2, 3]);
    // Upload bytes per value: the same for browser and Node devices (one committee payload format).
    expect(finalStates[0]!.rounds[0]!.uploadBytes).toBe(nodeRounds[0]!.uploadBytes);
    const backends = finalStates.map((s) => s.backend);

    // The privacy ledger accounted every round and verifies.
    const audit = { headers: { authorization: `Bearer ${adminToken}` } };
    const privacy = (await (await fetch(`${coordinator.httpUrl}/v1/tasks/${taskId}/privacy`, audit)).json()) as {
      epsilonSpent: number;
      rounds: Array<{ roundNumber: number; decryption: { deviceCount: number } }>;
    };
    // Each round accounted, with the committee decryption of the round's updates beside it.
    expect(privacy.rounds.map((r) => [r.roundNumber, r.decryption.deviceCount])).toEqual([[1, DEVICES], [2, DEVICES - 1], [3, DEVICES]]);
    expect(privacy.epsilonSpent).toBeGreaterThan(0);
    const verify = (await (await fetch(`${coordinator.httpUrl}/v1/tasks/${taskId}/privacy/verify`, audit)).json()) as { ok: boolean };
    expect(verify.ok).toBe(true);

    // The model improved: held-out digits (the example server's test split), before and after.
    const testBytes = Buffer.from(await (await fetch(`${web.url}/data/mnist?split=test&count=2000`)).arrayBuffer());
    const all = new Float32Array(testBytes.buffer, testBytes.byteOffset, testBytes.byteLength / 4);
    const heldOut = { xs: all.subarray(0, 2000 * 784), ys: all.subarray(2000 * 784), count: 2000, inputShape: [784], numClasses: 10 };
    const response = await fetch(`${coordinator.httpUrl}/v1/tasks/${taskId}/model/weights.bin?version=${ROUNDS}`, audit);
    expect(response.headers.get('x-veil-model-encoding')).toBe('float32-le');
    const weights = new Float32Array(await response.arrayBuffer());
    expect(weights.length).toBe(PARAMETERS);
    const before = await evaluateLocal(tf, { spec, weights: initialWeights, data: heldOut });
    const after = await evaluateLocal(tf, { spec, weights, data: heldOut });
    console.info(
      `browser federation: ${PAGES} pages (+1 reopened, backends ${backends.join(',')}) and 1 Node device, ${ROUNDS} rounds, ` +
        `held-out accuracy ${before.accuracy.toFixed(4)} -> ${after.accuracy.toFixed(4)}, spent epsilon ${privacy.epsilonSpent.toFixed(0)} (z = 0.01), ` +
        `PutChunk calls of the resumed page ${putChunks}, upload ${nodeRounds[0]!.uploadBytes} bytes per device, ${((performance.now() - started) / 1000).toFixed(1)} s`,
    );
    expect(after.accuracy).toBeGreaterThan(before.accuracy + 0.3);
  } finally {
    if (process.env['VEIL_E2E_KEEP_LOGS']) execFileSync('cp', ['-r', dataDir.path, process.env['VEIL_E2E_KEEP_LOGS']]);
    await browser?.close();
    await web?.close();
    await Promise.all(devices.map((d) => d[Symbol.asyncDispose]()));
    for (const child of custodianProcs) child.kill('SIGTERM');
  }
});
