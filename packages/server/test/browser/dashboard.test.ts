/**
 * The operator dashboard in Debian's Chromium (playwright-core), served by a
 * real coordinator (gRPC and HTTP on loopback, PostgreSQL):
 * - sign-in with each token; the audit token reaches the task list and the
 *   privacy views, and the API refuses it every admin action;
 * - a live round of a federation of SDK-transport devices advancing on the
 *   page (selected, downloaded, submitted, closed) as the engine's events happen;
 * - plotted values read back from the page and compared with the API;
 * - verify on an intact ledger and on one tampered through SQL;
 * - first paint and asset size for a task with 1,000 rounds (seeded through
 *   the store), and the live view's delay, printed as one JSON line.
 * VEIL_DASHBOARD_SCREENSHOTS=<dir> also writes a screenshot of each view there.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { TINY_PARAMETERS, createTestStorage, createTinyTask, joinDevice, joinDevices, pattern, startTestCoordinator, type TestCoordinator, type TestStorage } from '../helpers.js';
import { openStore, seedHistory } from '../seed-history.js';

const CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync'];
const screenshots = process.env['VEIL_DASHBOARD_SCREENSHOTS'];
const figures: Record<string, unknown> = {};

describe('dashboard in Chromium', () => {
  let storage: TestStorage;
  let t: TestCoordinator;
  let browser: Browser;
  let seeded: Awaited<ReturnType<typeof seedHistory>>;
  let base: string;

  beforeAll(async () => {
    storage = await createTestStorage('postgres');
    t = await startTestCoordinator({ storage });
    base = t.coordinator.httpUrl;
    await using opened = await openStore(storage.databaseUrl!, storage.dataDir);
    seeded = await seedHistory({ store: opened.store, prisma: opened.db.prisma }, { name: 'keyboard-1000', rounds: 1000, devices: 4, dp: { epsilonCap: 30, noiseMultiplier: 8, delta: 1e-5 } });
    browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  });
  afterAll(async () => {
    await browser?.close();
    await t?.close();
    await storage?.[Symbol.asyncDispose]();
    console.log(`dashboard-figures ${JSON.stringify(figures)}`);
  });

  const newPage = async (): Promise<Page> => (await browser.newContext({ viewport: { width: 1280, height: 900 } })).newPage();
  const signIn = async (page: Page, token: string, hash = '#/tasks'): Promise<void> => {
    await page.goto(`${base}/dashboard/${hash}`);
    await page.fill('#token', token);
    await page.click('button[type=submit]');
    await page.waitForSelector('#role');
  };
  const shot = async (page: Page, name: string): Promise<void> => {
    if (screenshots === undefined) return;
    await mkdir(screenshots, { recursive: true });
    await page.screenshot({ path: join(screenshots, `dashboard-${name}.png`), fullPage: false });
  };
  const api = async (path: string, token = t.coordinator.adminToken) => (await fetch(`${base}${path}`, { headers: { authorization: `Bearer ${token}` } })).json() as Promise<any>;

  it('signs in with each token; the audit token sees the task list and privacy views, and the API refuses it admin actions', async () => {
    const page = await newPage();
    await page.goto(`${base}/dashboard/`);
    await page.fill('#token', 'not-the-token-not-the-token');
    await page.click('button[type=submit]');
    await expect.poll(() => page.textContent('#signin-error')).toMatch(/not valid/);

    await page.fill('#token', t.coordinator.auditToken);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-view=tasks][data-ready]');
    expect(await page.getAttribute('#role', 'data-role')).toBe('audit');
    expect(page.url()).not.toContain(t.coordinator.auditToken);
    expect(await page.evaluate(() => sessionStorage.getItem('veil.session'))).toContain('"role":"audit"');
    const row = page.locator(`tr[data-task="${seeded.taskId}"]`);
    expect(await row.getAttribute('data-task')).toBe(seeded.taskId);
    expect(Number(await row.locator('[data-epsilon-spent]').getAttribute('data-epsilon-spent'))).toBe(seeded.ledger.at(-1)!.epsilon);
    expect(await row.textContent()).toContain('ε cap above 10');
    // The auditor's link goes to the privacy view; the task view is not offered and says why.
    expect(await row.locator('a').getAttribute('href')).toBe(`#/tasks/${seeded.taskId}/privacy`);
    await page.goto(`${base}/dashboard/#/tasks/${seeded.taskId}`);
    await expect.poll(() => page.textContent('main')).toMatch(/task list and the privacy views only/);
    // Enforced by the API, not by the page: with the page's own session token every admin route is refused.
    const statuses = await page.evaluate(async (id) => {
      const { token } = JSON.parse(sessionStorage.getItem('veil.session')!) as { token: string };
      const headers = { authorization: `Bearer ${token}` };
      const calls: Array<[string, string]> = [
        ['POST', `/v1/tasks/${id}/pause`],
        ['POST', `/v1/tasks/${id}/start`],
        ['GET', `/v1/tasks/${id}`],
        ['GET', `/v1/tasks/${id}/rounds`],
        ['GET', `/v1/tasks/${id}/devices`],
        ['GET', `/v1/tasks/${id}/events`],
        ['GET', `/v1/tasks/${id}/model`],
        ['POST', '/v1/tasks'],
      ];
      return Promise.all(calls.map(async ([method, path]) => [method, path, (await fetch(path, { method, headers })).status] as const));
    }, seeded.taskId);
    for (const [method, path, status] of statuses) expect({ method, path, status }).toEqual({ method, path, status: 403 });
    await page.goto(`${base}/dashboard/#/tasks/${seeded.taskId}/privacy`);
    await page.waitForSelector('[data-view=privacy][data-ready]');
    await shot(page, 'privacy');

    await page.click('#signout');
    await page.waitForSelector('#token');
    expect(await page.evaluate(() => sessionStorage.getItem('veil.session'))).toBeNull();
    await page.fill('#token', t.coordinator.adminToken);
    await page.click('button[type=submit]');
    await page.waitForSelector('[data-view=tasks][data-ready]');
    expect(await page.getAttribute('#role', 'data-role')).toBe('admin');
    // The admin's link goes to the task view.
    expect(await page.locator(`tr[data-task="${seeded.taskId}"] a`).getAttribute('href')).toBe(`#/tasks/${seeded.taskId}`);
    await page.context().close();
  });

  it('paints a 1,000-round task within the targets and plots exactly what the API returns', async () => {
    const page = await newPage();
    await signIn(page, t.coordinator.adminToken);
    // A fresh load of the task view (token already in this tab), cold cache.
    const cdp = await page.context().newCDPSession(page);
    await cdp.send('Network.setCacheDisabled', { cacheDisabled: true });
    await page.goto('about:blank');
    const started = Date.now();
    await page.goto(`${base}/dashboard/#/tasks/${seeded.taskId}`);
    await page.waitForSelector('[data-view=task][data-ready] figure[data-chart=duration] canvas');
    const readyMs = Date.now() - started;
    const perf = await page.evaluate(() => {
      const paint = performance.getEntriesByType('paint').find((e) => e.name === 'first-contentful-paint');
      const resources = performance.getEntriesByType('resource') as PerformanceResourceTiming[];
      const nav = performance.getEntriesByType('navigation')[0] as PerformanceNavigationTiming;
      const assets = resources.filter((r) => r.name.includes('/dashboard/'));
      return {
        firstContentfulPaintMs: paint?.startTime ?? null,
        assetsTransferBytes: nav.transferSize + assets.reduce((a, r) => a + r.transferSize, 0),
        assetsEncodedBytes: nav.encodedBodySize + assets.reduce((a, r) => a + r.encodedBodySize, 0),
        apiBytes: resources.filter((r) => r.name.includes('/v1/')).reduce((a, r) => a + r.encodedBodySize, 0),
        roundsRequestMs: Math.round(resources.filter((r) => r.name.includes('/rounds')).reduce((a, r) => Math.max(a, r.responseEnd - r.startTime), 0)),
      };
    });
    // What the server sends for the page with gzip only (the browser got brotli): the 300 KB target is in gzip.
    const manifest = JSON.parse(await readFile(join(import.meta.dirname, '../../dist/dashboard/manifest.json'), 'utf8')) as Record<string, { gzipBytes: number }>;
    const gzipBytes = Object.values(manifest).reduce((a, m) => a + m.gzipBytes, 0);
    figures['thousandRounds'] = { ...perf, assetsGzipBytes: gzipBytes, dataShownMs: readyMs };
    expect(gzipBytes).toBeLessThan(300 * 1024);
    expect(perf.assetsEncodedBytes).toBeLessThan(300 * 1024);

    // Plotted data = the API's.
    const rounds = (await api(`/v1/tasks/${seeded.taskId}/rounds?limit=1000`)).rounds as any[];
    const evaluations = (await api(`/v1/tasks/${seeded.taskId}/evaluations`)).evaluations as any[];
    const plotted = async (name: string) =>
      page.$eval(`figure[data-chart=${name}]`, (f) => ({ x: JSON.parse((f as HTMLElement).dataset['x']!), series: JSON.parse((f as HTMLElement).dataset['series']!) }));
    const evaluation = await plotted('evaluation');
    // Every model version 0..1000, the final one (evaluated after the last round) included.
    expect(evaluation.x).toEqual(Array.from({ length: 1001 }, (_, v) => v));
    expect(evaluation.x).toEqual(evaluations.map((e) => e.modelVersion));
    expect(evaluation.series.accuracy).toEqual(evaluations.map((e) => e.metrics.accuracy));
    expect(evaluation.series.loss).toEqual(evaluations.map((e) => e.metrics.loss));
    expect(evaluation.series.accuracy.slice(0, 1000)).toEqual(rounds.map((r) => r.evaluation.metrics.accuracy));
    expect(await page.textContent('#final-evaluation')).toMatch(/Final model \(version 1000\), evaluated by 4 devices/);
    const participants = await plotted('participants');
    expect(participants.x).toEqual(rounds.map((r) => r.number));
    expect(participants.series.participants).toEqual(seeded.rounds.map((r) => r.participants));
    expect(participants.series.dropped).toEqual(seeded.rounds.map((r) => r.dropped));
    expect((await plotted('upload')).series['upload bytes']).toEqual(seeded.rounds.map((r) => r.uploadBytes));
    expect((await plotted('duration')).series.seconds).toEqual(rounds.map((r) => (Date.parse(r.closedAt) - Date.parse(r.openedAt)) / 1000));
    await shot(page, 'task');
    // The accessible table holds the same values.
    await page.click('figure[data-chart=upload] summary');
    await page.waitForSelector('figure[data-chart=upload] details table');
    expect(await page.locator('figure[data-chart=upload] details tbody tr').count()).toBe(1000);
    expect(await page.textContent('figure[data-chart=upload] details tbody tr:nth-child(5) td:nth-child(2)')).toBe(String(seeded.rounds[4]!.uploadBytes));

    await page.goto(`${base}/dashboard/#/tasks/${seeded.taskId}/privacy`);
    await page.waitForSelector('[data-view=privacy][data-ready] figure[data-chart=epsilon] canvas');
    const privacy = await api(`/v1/tasks/${seeded.taskId}/privacy`);
    const eps = await plotted('epsilon');
    expect(eps.x).toEqual(privacy.rounds.map((r: any) => r.roundNumber));
    expect(eps.series['ε cumulative']).toEqual(privacy.rounds.map((r: any) => r.epsilonCumulative));
    expect(eps.series['ε cap']).toEqual(privacy.rounds.map(() => 30));
    expect(await page.textContent('#exhausted-at')).toBe('not before the task ends');
    expect(await page.locator('#privacy-devices tbody tr').count()).toBe(4);
    expect(await page.locator('#ledger tbody tr').count()).toBe(100);
    expect(await page.textContent('#head-hash')).toBe(seeded.ledger.at(-1)!.hash);

    await page.goto(`${base}/dashboard/#/tasks/${seeded.taskId}/devices`);
    await page.waitForSelector('[data-view=devices][data-ready]');
    const devices = await page.$$eval('#devices tbody tr', (rows) => rows.map((r) => [...r.querySelectorAll('td')].map((td) => td.textContent)));
    expect(devices.map((d) => [d[0], d[4], d[5], d[6], d[7]])).toEqual([
      ['phone-01', '1000', '800', '200', 'active'],
      ['phone-02', '1000', '1000', '0', 'active'],
      ['phone-03', '1000', '1000', '0', 'active'],
      ['phone-04', '1000', '1000', '0', 'active'],
    ]);
    await shot(page, 'devices');
    await page.context().close();
  });

  it('runs verify on the intact ledger, then on one tampered through SQL, and exports the head', async () => {
    const page = await newPage();
    await signIn(page, t.coordinator.auditToken, `#/tasks/${seeded.taskId}/privacy`);
    await page.waitForSelector('[data-view=privacy][data-ready]');
    await page.click('#verify');
    await page.waitForSelector('#verify-result[data-ok]');
    expect(await page.getAttribute('#verify-result', 'data-ok')).toBe('true');
    expect(await page.textContent('#verify-result')).toMatch(/Intact: 1000 entries/);
    const download = page.waitForEvent('download');
    await page.click('#download-checkpoint');
    const file = await download;
    const checkpoint = JSON.parse(await readFile((await file.path())!, 'utf8'));
    expect(file.suggestedFilename()).toBe(`veil-ledger-${seeded.taskId}-1000.json`);
    expect(checkpoint).toMatchObject({ taskId: seeded.taskId, sequence: 1000, headHash: seeded.ledger.at(-1)!.hash, signed: false });

    await storage.sql(`UPDATE "PrivacyLedgerEntry" SET participants = participants - 1, "participantIds" = "participantIds" - 0 WHERE "taskId" = $1 AND sequence = 617`, [seeded.taskId]);
    await page.click('#verify');
    await expect.poll(() => page.getAttribute('#verify-result', 'data-ok')).toBe('false');
    expect(await page.textContent('#verify-result')).toMatch(/Broken at entry #617: hash does not match/);
    await page.context().close();
  });

  it('shows a live round of a real federation advancing within a second of each event', async () => {
    // Running, waiting for three devices: two join now, the third once the page watches.
    const { id } = await createTinyTask(t.rest, { name: 'live', rounds: 3, clientsPerRound: 3, minClients: 3, minAvailableClients: 3 });
    using early = await joinDevices(t.coordinator, id, 2, 'tablet');
    const page = await newPage();
    page.on('console', (m) => console.log('page:', m.text()));
    page.on('pageerror', (e) => console.log('page error:', e.message));
    await signIn(page, t.coordinator.adminToken, `#/tasks/${id}`);
    await page.waitForSelector('[data-view=task][data-ready]');
    await expect.poll(() => page.getAttribute('#live', 'data-connected')).toBe('true');

    // The engine's event times, taken in this process (same clock as the page's), by round.
    const emitted: Array<{ type: string; round: number; at: number; value: number }> = [];
    const engine = t.coordinator.engine;
    let current = 0;
    engine.on('round-collecting', ({ taskId, round }) => {
      if (taskId !== id) return;
      current = round.number;
      emitted.push({ type: 'round-collecting', round: round.number, at: Date.now(), value: round.targetCount });
    });
    engine.on('model-downloaded', ({ taskId }) => {
      if (taskId !== id) return;
      emitted.push({ type: 'model-downloaded', round: current, at: Date.now(), value: emitted.filter((e) => e.type === 'model-downloaded' && e.round === current).length + 1 });
    });
    engine.on('update-accepted', ({ taskId, roundNumber, receivedCount }) => taskId === id && emitted.push({ type: 'update-accepted', round: roundNumber, at: Date.now(), value: receivedCount }));
    const delays: number[] = [];
    /** Waits for the page's event log to show the event, and takes its delay from the engine's emit to the page's render. */
    const seen = async (type: string, round: number, value: number): Promise<void> => {
      const selector = `#live-log li[data-type="${type}"][data-round="${round}"][data-value="${value}"]`;
      await page.waitForSelector(selector, { timeout: 10_000 }).catch(async (e) => {
        throw new Error(`the page never showed ${type} round ${round} value ${value}: ${await page.textContent('#live-log')} / engine ${JSON.stringify(emitted)}`, { cause: e });
      });
      const renderedAt = Number(await page.getAttribute(selector, 'data-rendered-at-ms'));
      const event = emitted.find((e) => e.type === type && e.round === round && e.value === value)!;
      delays.push(renderedAt - event.at);
    };
    expect(await page.getAttribute('#live', 'data-state')).toBe('SELECTING');
    using late = await joinDevice(t.coordinator, id, 'tablet-3');
    const devices = [...early, late];

    for (let round = 1; round <= 2; round++) {
      const target = pattern(TINY_PARAMETERS, 100);
      const assignments = await Promise.all(devices.map((d) => d.nextAssignment()));
      await seen('round-collecting', round, 3);
      for (let k = 0; k < devices.length; k++) {
        const model = await devices[k]!.download(assignments[k]!.modelVersion);
        await seen('model-downloaded', round, k + 1);
        // Federated evaluation: each device reports the squared distance of the model it received to a shared target.
        const loss = model.weights.reduce((a, w, i) => a + (w - target[i]!) ** 2, 0) / TINY_PARAMETERS;
        await devices[k]!.transport.reportEvaluation(devices[k]!.credential, { roundNumber: round, modelVersion: model.version, exampleCount: 10 * (k + 1), metrics: { loss } });
        // The update moves the model half way to the target.
        await devices[k]!.submit(assignments[k]!, model.weights.map((w, i) => 0.5 * (target[i]! - w)), 10);
        await seen('update-accepted', round, k + 1);
      }
      await page.waitForSelector(`#live-log li[data-type="round-closed"][data-round="${round}"]`);
      await page.waitForFunction((n) => document.querySelector('figure[data-chart=participants]')?.getAttribute('data-x') === JSON.stringify(Array.from({ length: n }, (_, i) => i + 1)), round, { timeout: 10_000 });
    }
    // The plots hold what the API says, and the live card shows round 3 (opened, selecting or collecting).
    const rounds = (await t.rest.request('GET', `/v1/tasks/${id}/rounds`)).body.rounds;
    const evaluation = await page.$eval('figure[data-chart=evaluation]', (f) => ({ x: JSON.parse((f as HTMLElement).dataset['x']!), series: JSON.parse((f as HTMLElement).dataset['series']!) }));
    expect(evaluation.x).toEqual([0, 1]);
    expect(evaluation.series.loss).toEqual(rounds.filter((r: any) => r.evaluation).map((r: any) => r.evaluation.metrics.loss));
    expect(evaluation.series.loss).toEqual((await t.rest.request('GET', `/v1/tasks/${id}/evaluations`)).body.evaluations.map((e: any) => e.metrics.loss));
    expect(evaluation.series.loss[1]).toBeLessThan(evaluation.series.loss[0]);
    const upload = await page.$eval('figure[data-chart=upload]', (f) => JSON.parse((f as HTMLElement).dataset['series']!));
    expect(upload['upload bytes']).toEqual(rounds.filter((r: any) => r.closedAt).map((r: any) => r.summary.uploadBytes));
    await expect.poll(() => page.getAttribute('#live', 'data-round')).toBe('3');
    // The live card itself shows the latest state.
    expect(Number(await page.getAttribute('#live', 'data-selected'))).toBe(3);
    await shot(page, 'live');
    // An admin action from the page: pause.
    await page.click('#task-pause');
    await expect.poll(async () => (await t.rest.request('GET', `/v1/tasks/${id}`)).body.status).toBe('PAUSED');
    await page.goto(`${base}/dashboard/#/tasks`);
    await page.waitForSelector('[data-view=tasks][data-ready]');
    await shot(page, 'tasks');
    const sorted = [...delays].sort((a, b) => a - b);
    figures['liveUpdateDelayMs'] = { events: delays.length, median: sorted[Math.floor(sorted.length / 2)], max: sorted.at(-1) };
    expect(delays).toHaveLength(14);
    await page.context().close();
  });
});
