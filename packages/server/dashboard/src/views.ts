/** The dashboard's views. Each renders into `main` and marks its root `data-ready` once its data is shown. */
import { api, apiBlob, ApiError, streamEvents, type Role } from './api.js';
import { lineChart, type Chart } from './chart.js';
import { badge, budgetBar, fmt, h, help, replace } from './dom.js';
import type { DeviceJson, EvaluationJson, LedgerEntryJson, LiveEventJson, LiveRoundJson, PrivacyJson, RoundJson, TaskJson, VerifyJson } from './types.js';

export interface View {
  ready: Promise<void>;
  dispose(): void;
}

const COLORS = { accuracy: '#2f5bd3', loss: '#d9480f', participants: '#137a3a', dropped: '#b42318', bytes: '#7048e8', duration: '#0b7285', epsilon: '#2f5bd3', cap: '#b42318' };

function root(main: HTMLElement, name: string, ...children: Array<Node | string>): HTMLElement {
  const el = h('section', { 'data-view': name }, ...children);
  replace(main, el);
  return el;
}

// ------------------------------------------------------------------ tasks

export function tasksView(main: HTMLElement, role: Role): View {
  const body = h('tbody');
  const el = root(
    main,
    'tasks',
    h('h1', {}, 'Tasks'),
    h('table', { id: 'tasks' }, h('thead', {}, h('tr', {}, ...['Task', 'State', 'Round', 'Devices', 'Encryption', 'Privacy', 'ε spent / cap', ''].map((t) => h('th', {}, t)))), body),
    help(
      'What these columns mean',
      h('p', {}, 'Round: the latest round and the rounds the task runs. Devices: devices that joined. Encryption: BFV (updates encrypted on the device, summed as ciphertexts) or none. Privacy: local or distributed differential privacy, or none.'),
      h('p', {}, 'ε spent / cap: the cumulative ε (epsilon) the task has spent so far (all rounds together, at the task\'s δ) against the budget cap it may never exceed.'),
    ),
  );
  const ready = api<{ tasks: TaskJson[] }>('/v1/tasks').then(({ tasks }) => {
    for (const t of tasks) {
      const p = t.settings.privacy;
      const link = role === 'admin' ? `#/tasks/${t.id}` : p !== null ? `#/tasks/${t.id}/privacy` : null;
      body.append(
        h(
          'tr',
          { 'data-task': t.id },
          h('td', {}, link === null ? t.name : h('a', { href: link }, t.name)),
          h('td', {}, badge(t.status)),
          h('td', { class: 'num' }, `${t.progress.currentRound ?? 0} / ${t.settings.rounds}`),
          h('td', { class: 'num', 'data-devices': t.progress.devices }, fmt.int(t.progress.devices)),
          h('td', {}, t.encryption === null ? 'none' : `BFV (${t.encryption.preset})`),
          h('td', {}, p === null ? 'none' : p.mode),
          h(
            'td',
            { 'data-epsilon-spent': t.progress.epsilonSpent ?? '', 'data-epsilon-cap': p?.epsilonCap ?? '' },
            p === null ? '–' : h('div', {}, budgetBar(t.progress.epsilonSpent ?? 0, p.epsilonCap), h('span', { class: 'muted' }, `${fmt.eps(t.progress.epsilonSpent)} / ${fmt.eps(p.epsilonCap)}`)),
          ),
          h('td', {}, ...t.warnings.map((w) => h('span', { class: 'warn', title: w }, '⚠ ε cap above 10'))),
        ),
      );
    }
    if (tasks.length === 0) body.append(h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'No tasks yet.')));
    el.dataset['ready'] = 'true';
  });
  return { ready, dispose() {} };
}

// ------------------------------------------------------------------ one task

/** All rounds, page by page (1,000 per request, one query each). */
async function allRounds(taskId: string): Promise<RoundJson[]> {
  const rounds: RoundJson[] = [];
  for (;;) {
    const page = await api<{ rounds: RoundJson[] }>(`/v1/tasks/${taskId}/rounds?offset=${rounds.length}&limit=1000&events=false`);
    rounds.push(...page.rounds);
    if (page.rounds.length < 1000) return rounds;
  }
}

function roundSeries(rounds: RoundJson[], evaluations: EvaluationJson[]) {
  const finished = rounds.filter((r) => r.closedAt !== null);
  return {
    // Each evaluation is plotted against the model version it evaluated (the final model's included).
    evalX: evaluations.map((e) => e.modelVersion),
    accuracy: evaluations.map((e) => e.metrics['accuracy'] ?? null),
    loss: evaluations.map((e) => e.metrics['loss'] ?? null),
    roundX: finished.map((r) => r.number),
    participants: finished.map((r) => r.summary?.participants ?? r.participation.submitted),
    dropped: finished.map((r) => r.participation.dropped),
    uploadBytes: finished.map((r) => r.summary?.uploadBytes ?? 0),
    weights: finished.map((r) => r.summary?.examples ?? null),
    trainedExamples: finished.map((r) => r.participation.trainedExamples),
    durationS: finished.map((r) => Number(((Date.parse(r.closedAt!) - Date.parse(r.openedAt)) / 1000).toFixed(3))),
  };
}

export function taskView(main: HTMLElement, taskId: string): View {
  const abort = new AbortController();
  const timers: number[] = [];
  let countdownTimer: number | null = null;
  const header = h('div');
  const live = h('div', { class: 'card', id: 'live', 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Connecting to the live round…'));
  // The events as they arrive, newest first (a round can open, fill and close within a second).
  const log = h('ol', { id: 'live-log', class: 'log', reversed: true });
  const charts = h('div', { class: 'grid' });
  const el = root(main, 'task', header, h('h2', {}, 'Live round'), live, h('details', { class: 'help', open: true }, h('summary', {}, 'Recent events'), log), h('h2', {}, 'Over rounds'), charts);
  let task: TaskJson;
  let rounds: RoundJson[] = [];
  let evaluations: EvaluationJson[] = [];
  const finalNote = h('p', { class: 'muted', id: 'final-evaluation' });
  let chartList: Record<string, Chart> = {};
  let lastLive: LiveRoundJson | null = null;

  const renderHeader = (): void => {
    const p = task.settings.privacy;
    const actions = h('span', {});
    if (task.status === 'RUNNING' || task.status === 'DRAFT' || task.status === 'PAUSED') {
      const action = task.status === 'RUNNING' ? 'pause' : 'start';
      actions.append(
        h('button', {
          id: `task-${action}`,
          onclick: () =>
            void api<TaskJson>(`/v1/tasks/${taskId}/${action}`, { method: 'POST' }).then((t) => {
              task = t;
              renderHeader();
            }),
        }, action === 'pause' ? 'Pause' : task.status === 'DRAFT' ? 'Start' : 'Resume'),
      );
    }
    replace(
      header,
      h('h1', {}, task.name, ' ', badge(task.status), ' ', actions),
      h('p', { class: 'muted' }, `Task ${task.id} · ${task.settings.rounds} rounds · encryption ${task.encryption === null ? 'none' : `BFV (${task.encryption.preset})`} · privacy ${p === null ? 'none' : `${p.mode}, ε cap ${p.epsilonCap}`} · model version ${task.currentModelVersion}`),
      task.statusReason ? h('p', {}, task.statusReason) : null,
      ...task.warnings.map((w) => h('p', { class: 'warn' }, `⚠ ${w}`)),
    );
  };

  const LOG_TEXT: Record<string, (r: LiveRoundJson) => string> = {
    snapshot: (r) => `state ${r.state}`,
    'round-opened': () => 'opened, selecting devices',
    'round-collecting': (r) => `${r.selected} devices selected, collecting`,
    'model-downloaded': (r) => `${r.downloaded} of ${r.selected} downloaded the model`,
    'update-accepted': (r) => `update accepted (${r.submitted} of ${r.selected})`,
    'round-closed': (r) => `closed with ${r.submitted} updates, ${r.dropped} dropped`,
    'round-failed': (r) => `failed: ${r.failureReason ?? ''}`,
  };
  const logEvent = (event: LiveEventJson): void => {
    const r = event.round;
    const value = r === null ? null : event.type === 'round-collecting' ? r.selected : event.type === 'model-downloaded' ? r.downloaded : event.type === 'update-accepted' ? r.submitted : null;
    const text = event.type === 'task-ended' ? `task ended: ${event.taskStatus}` : r === null ? event.type : `round ${r.number}: ${LOG_TEXT[event.type]?.(r) ?? event.type}`;
    log.prepend(h('li', { 'data-type': event.type, 'data-round': r?.number ?? '', 'data-value': value ?? '', 'data-server-time-ms': event.serverTimeMs, 'data-rendered-at-ms': Date.now() }, h('span', { class: 'muted' }, new Date(event.serverTimeMs).toISOString().slice(11, 23)), ' ', text));
    while (log.children.length > 50) log.lastElementChild?.remove();
  };

  const renderLive = (round: LiveRoundJson | null, taskStatus: string | null, serverTimeMs: number): void => {
    lastLive = round;
    if (round === null) {
      replace(live, h('p', { class: 'muted' }, 'No round yet.'));
    } else {
      const countdown = h('b', { id: 'deadline' }, '–');
      const stat = (name: string, value: number | null, label: string) => h('div', { class: 'stat', 'data-stat': name }, h('b', {}, value === null ? '–' : String(value)), h('span', {}, label));
      replace(
        live,
        h('div', { class: 'stats' },
          h('div', { class: 'stat' }, h('b', { id: 'live-round' }, `#${round.number}`), h('span', {}, 'round')),
          h('div', { class: 'stat' }, h('b', {}, badge(round.state)), h('span', {}, 'state')),
          stat('selected', round.selected, 'selected'),
          stat('downloaded', round.downloaded, 'downloaded the model'),
          stat('submitted', round.submitted, `submitted (need ${round.minClients})`),
          stat('dropped', round.dropped, 'dropped'),
          h('div', { class: 'stat' }, countdown, h('span', {}, 'until the deadline')),
        ),
        round.failureReason ? h('p', { class: 'bad' }, round.failureReason) : null,
        taskStatus ? h('p', {}, `Task ended: ${taskStatus}`) : null,
      );
      const tick = (): void => {
        if (round.deadlineAt === null || (round.state !== 'COLLECTING')) {
          countdown.textContent = '–';
          return;
        }
        const ms = Date.parse(round.deadlineAt) - Date.now();
        countdown.textContent = ms <= 0 ? 'passed' : `${Math.floor(ms / 60000)}:${String(Math.floor((ms % 60000) / 1000)).padStart(2, '0')}`;
      };
      tick();
      if (countdownTimer !== null) clearInterval(countdownTimer);
      countdownTimer = window.setInterval(tick, 500);
    }
    Object.assign(live.dataset, {
      round: round?.number ?? '',
      state: round?.state ?? '',
      selected: round?.selected ?? '',
      downloaded: round?.downloaded ?? '',
      submitted: round?.submitted ?? '',
      dropped: round?.dropped ?? '',
      serverTimeMs: serverTimeMs,
      renderedAtMs: Date.now(),
    });
  };

  const renderCharts = (): void => {
    const s = roundSeries(rounds, evaluations);
    const final = evaluations.find((e) => e.source === 'final');
    finalNote.textContent = final
      ? `Final model (version ${final.modelVersion}), evaluated by ${final.clients} devices on ${final.examples} held-out examples after the last round: ${Object.entries(final.metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(', ')}.`
      : 'The final model has not been evaluated yet (devices evaluate it after the last round).';
    if (Object.keys(chartList).length === 0) {
      chartList = {
        evaluation: lineChart({ name: 'evaluation', title: 'Federated evaluation: accuracy and loss of each model version', xLabel: 'model version', x: s.evalX, series: [{ label: 'accuracy', values: s.accuracy, color: COLORS.accuracy }, { label: 'loss', values: s.loss, color: COLORS.loss, scale: 'loss' }] }),
        participants: lineChart({ name: 'participants', title: 'Participants per round', xLabel: 'round', x: s.roundX, series: [{ label: 'participants', values: s.participants, color: COLORS.participants }, { label: 'dropped', values: s.dropped, color: COLORS.dropped }] }),
        examples: lineChart({ name: 'examples', title: 'Examples per round: trained on (reported by devices) and the updates\' FedAvg weight', xLabel: 'round', x: s.roundX, series: [{ label: 'trained on', values: s.trainedExamples, color: COLORS.participants }, { label: 'weight', values: s.weights, color: COLORS.bytes, dash: [6, 4] }] }),
        upload: lineChart({ name: 'upload', title: 'Upload bytes per round', xLabel: 'round', x: s.roundX, series: [{ label: 'upload bytes', values: s.uploadBytes, color: COLORS.bytes }] }),
        duration: lineChart({ name: 'duration', title: 'Round duration (s, open to close)', xLabel: 'round', x: s.roundX, series: [{ label: 'seconds', values: s.durationS, color: COLORS.duration }] }),
      };
      replace(charts, ...Object.values(chartList).map((c) => h('div', { class: 'card' }, c.figure, c === chartList['evaluation'] ? finalNote : null)));
      charts.append(
        h('div', { class: 'card' }, help(
          'About these plots',
          h('p', {}, 'Accuracy and loss come from federated evaluation: the devices of round N evaluate the model they received (version N − 1, the model before round N trained) on their own held-out data, and after the last round they evaluate the final model; the values are means weighted by their example counts, plotted against the model version evaluated.'),
          h('p', {}, 'Participants: accepted updates per closed round; dropped: selected devices without an update at the close. Upload bytes: the update payloads accepted. Duration: from the round opening (selection) to its close.'),
          h('p', {}, 'Examples: what the devices report they trained on, and the weight their updates carry in FedAvg. Without differential privacy the weight is the example count (capped); with it every update weighs 1, so the weight counts updates, not examples.'),
        )),
      );
    } else {
      chartList['evaluation']!.update(s.evalX, [s.accuracy, s.loss]);
      chartList['participants']!.update(s.roundX, [s.participants, s.dropped]);
      chartList['examples']!.update(s.roundX, [s.trainedExamples, s.weights]);
      chartList['upload']!.update(s.roundX, [s.uploadBytes]);
      chartList['duration']!.update(s.roundX, [s.durationS]);
    }
    charts.dataset['rounds'] = String(rounds.length);
  };

  const loadEvaluations = async (): Promise<EvaluationJson[]> => (await api<{ evaluations: EvaluationJson[] }>(`/v1/tasks/${taskId}/evaluations`)).evaluations;
  /** After a round closed or failed: refetch it (and any newer one) and the evaluations, and redraw. */
  const refreshRounds = async (fromNumber: number): Promise<void> => {
    const [page, evals] = await Promise.all([api<{ rounds: RoundJson[] }>(`/v1/tasks/${taskId}/rounds?offset=${fromNumber - 1}&limit=1000&events=false`), loadEvaluations()]);
    rounds = [...rounds.filter((r) => r.number < fromNumber), ...page.rounds];
    evaluations = evals;
    renderCharts();
  };

  const ready = Promise.all([api<TaskJson>(`/v1/tasks/${taskId}`), allRounds(taskId), loadEvaluations()]).then(([t, r, e]) => {
    task = t;
    rounds = r;
    evaluations = e;
    renderHeader();
    renderCharts();
    el.dataset['ready'] = 'true';
    streamEvents(
      `/v1/tasks/${taskId}/events`,
      (_type, data) => {
        const event = data as LiveEventJson;
        renderLive(event.round, event.taskStatus, event.serverTimeMs);
        logEvent(event);
        if (event.type === 'round-closed' || event.type === 'round-failed' || (event.type === 'snapshot' && event.round !== null)) {
          const last = rounds.at(-1)?.number ?? 0;
          if (event.round !== null && (event.round.number > last || rounds.at(-1)?.closedAt === null)) void refreshRounds(Math.min(event.round.number, last === 0 ? 1 : last));
        }
        if (event.type === 'task-ended' || event.type === 'round-opened') void api<TaskJson>(`/v1/tasks/${taskId}`).then((t) => { task = t; renderHeader(); });
        // Devices report the final model's evaluation after the end: look again a few times.
        if (event.type === 'task-ended') for (const ms of [2_000, 10_000, 30_000]) timers.push(window.setTimeout(() => void loadEvaluations().then((e) => { evaluations = e; renderCharts(); }), ms));
      },
      abort.signal,
      (connected) => { live.dataset['connected'] = String(connected); },
    );
  });
  void lastLive;
  return {
    ready,
    dispose() {
      abort.abort();
      timers.forEach((t) => clearTimeout(t));
      if (countdownTimer !== null) clearInterval(countdownTimer);
    },
  };
}

// ------------------------------------------------------------------ privacy

const LEDGER_PAGE = 100;

export function privacyView(main: HTMLElement, taskId: string): View {
  const summaryBox = h('div');
  const chartBox = h('div', { class: 'card' });
  const clientsBody = h('tbody');
  const ledgerBody = h('tbody');
  const pager = h('div', { class: 'pager' });
  const verifyResult = h('p', { id: 'verify-result', role: 'status' });
  const headHash = h('code', { id: 'head-hash', class: 'hash' }, '…');
  const el = root(
    main,
    'privacy',
    summaryBox,
    chartBox,
    h('h2', {}, 'Verify and anchor the ledger'),
    h('div', { class: 'card' },
      h('p', {}, h('button', { id: 'verify', class: 'primary', onclick: () => void verify() }, 'Verify the ledger'), ' ', h('span', { class: 'muted' }, 'Recomputes every entry\'s SHA-256 and every cumulative ε from the recorded parameters.')),
      verifyResult,
      h('p', {}, 'Head hash: ', headHash, ' ', h('button', { id: 'copy-head', onclick: () => void navigator.clipboard?.writeText(headHash.textContent ?? '') }, 'Copy'), ' ', h('button', { id: 'download-checkpoint', onclick: () => void downloadCheckpoint() }, 'Download checkpoint (JSON)')),
      help(
        'Why keep the head hash elsewhere, and how',
        h('p', {}, 'Verification here proves that the ledger agrees with itself: every entry holds the SHA-256 of the previous one, so an entry cannot be changed without changing every later hash. It cannot prove that the whole chain was not rewritten by someone with write access to the database. Anchor the head outside Veil: copy the head hash (or download the checkpoint, which also records the sequence number, the cumulative ε and the time) into a system the operator does not control — a ticket, a signed e-mail to the privacy officer, a git commit in another organisation, a transparency log. Later, the entry with that sequence number must still have that hash.'),
        h('p', {}, 'The checkpoint is not signed: the coordinator holds no signing key of its own, and a signature by the party being audited would prove little. Its value comes from where you keep it.'),
        h('p', {}, 'Hash format (SHA-256, FIPS 180-4, hex): over the UTF-8 JSON array [taskId, sequence, roundNumber, mechanism, samplingRate, noiseMultiplier, clipNorm, participants, participantIds, epsilon, delta, order, createdAt] (distributed mode appends ["ddg", noiseClients, scale, localStddev, dimension, roundingBeta]; a committee DP task\'s entries append ["coordinator", epsilonCoordinator]; its committee-decryption entries append ["committee", descriptorHash, hashD, manifestDigests, answers], each answer as [descriptorHash, round, hashD, count, custodianIndex, shareSumSha256, signature]), then a newline, then the previous entry\'s hash (64 zeros for the first).'),
      ),
    ),
    h('h2', {}, 'Per-device spend'),
    h('table', { id: 'privacy-devices' }, h('thead', {}, h('tr', {}, h('th', {}, 'Device'), h('th', {}, 'Id'), h('th', { class: 'num' }, 'Rounds taken part in'), h('th', { class: 'num' }, 'ε of this device (cumulative)'))), clientsBody),
    help('What a device\'s ε means', h('p', {}, 'A device knows when it took part, so its own guarantee cannot count on the sampling: it composes the mechanism without amplification (q = 1) over the rounds it took part in. It is therefore larger than the task\'s ε for the same rounds.')),
    h('h2', {}, 'Ledger'),
    pager,
    h('table', { id: 'ledger' }, h('thead', {}, h('tr', {}, ...['#', 'Round', 'Mechanism', 'q', 'z', 'C', 'Participants', 'ε cumulative', 'RDP order', 'Recorded', 'Hash (prev → this)'].map((t) => h('th', {}, t)))), ledgerBody),
  );
  let page = 0;
  let total = 0;

  const loadLedger = async (): Promise<void> => {
    const data = await api<{ total: number; entries: LedgerEntryJson[] }>(`/v1/tasks/${taskId}/privacy/ledger?offset=${page * LEDGER_PAGE}&limit=${LEDGER_PAGE}`);
    total = data.total;
    replace(
      ledgerBody,
      ...data.entries.map((e) =>
        h('tr', { 'data-sequence': e.sequence, 'data-hash': e.hash },
          h('td', { class: 'num' }, e.sequence), h('td', { class: 'num' }, e.roundNumber), h('td', {}, e.mechanism),
          h('td', { class: 'num' }, e.samplingRate), h('td', { class: 'num' }, e.noiseMultiplier), h('td', { class: 'num' }, e.clipNorm),
          h('td', { class: 'num' }, e.participants), h('td', { class: 'num' }, fmt.eps(e.epsilon)), h('td', { class: 'num' }, e.order),
          h('td', {}, fmt.time(e.createdAt)), h('td', { class: 'hash' }, `${e.prevHash.slice(0, 12)}… → `, h('span', { title: e.hash }, e.hash)),
        ),
      ),
    );
    const pages = Math.max(1, Math.ceil(total / LEDGER_PAGE));
    replace(pager,
      h('button', { disabled: page === 0, onclick: () => { page--; void loadLedger(); } }, '← Earlier'),
      h('span', { class: 'muted' }, `entries ${total === 0 ? 0 : page * LEDGER_PAGE + 1}–${Math.min(total, (page + 1) * LEDGER_PAGE)} of ${total} (page ${page + 1} of ${pages})`),
      h('button', { disabled: page + 1 >= pages, onclick: () => { page++; void loadLedger(); } }, 'Later →'),
    );
  };

  const verify = async (): Promise<void> => {
    verifyResult.textContent = 'Verifying…';
    delete verifyResult.dataset['ok'];
    try {
      const v = await api<VerifyJson>(`/v1/tasks/${taskId}/privacy/verify`);
      headHash.textContent = v.headHash;
      verifyResult.dataset['ok'] = String(v.ok);
      replace(
        verifyResult,
        v.ok
          ? h('span', { class: 'ok' }, `Intact: ${v.entries} entries; every hash and every cumulative ε recomputed and equal${v.withinCap ? ', all within the cap' : ', but an entry exceeds the cap'}.`)
          : h('span', { class: 'bad' }, `Broken at entry #${v.firstMismatch?.sequence}: ${v.firstMismatch?.reason}.`),
      );
    } catch (e) {
      verifyResult.textContent = `Verification failed: ${(e as Error).message}`;
    }
  };

  const downloadCheckpoint = async (): Promise<void> => {
    const { blob, filename } = await apiBlob(`/v1/tasks/${taskId}/privacy/checkpoint`);
    const url = URL.createObjectURL(blob);
    const a = h('a', { href: url, download: filename ?? 'veil-ledger-checkpoint.json' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  };

  const ready = api<PrivacyJson>(`/v1/tasks/${taskId}/privacy`).then(async (p) => {
    const pr = p.projection;
    replace(
      summaryBox,
      h('h1', {}, 'Privacy budget ', badge(p.status)),
      ...p.warnings.map((w) => h('p', { class: 'warn' }, `⚠ ${w}`)),
      h('div', { class: 'card' },
        h('div', { class: 'stats', id: 'privacy-stats', 'data-epsilon-spent': p.epsilonSpent, 'data-epsilon-cap': p.epsilonCap, 'data-exhausted-at-round': pr.exhaustedAtRound ?? '' },
          h('div', { class: 'stat' }, h('b', {}, fmt.eps(p.epsilonSpent)), h('span', {}, 'ε spent (cumulative)')),
          h('div', { class: 'stat' }, h('b', {}, fmt.eps(p.epsilonCap)), h('span', {}, 'ε cap')),
          h('div', { class: 'stat' }, h('b', {}, fmt.eps(p.remaining)), h('span', {}, 'ε remaining')),
          h('div', { class: 'stat' }, h('b', {}, String(p.delta)), h('span', {}, 'δ')),
          h('div', { class: 'stat' }, h('b', {}, fmt.eps(pr.nextRoundEpsilon)), h('span', {}, 'ε the next round adds')),
          h('div', { class: 'stat' }, h('b', { id: 'exhausted-at' }, pr.exhaustedAtRound === null ? 'not before the task ends' : `round ${pr.exhaustedAtRound}`), h('span', {}, 'budget runs out at (projected)')),
        ),
        h('p', {}, budgetBar(p.epsilonSpent, p.epsilonCap)),
        h('p', { class: 'muted' }, `${p.mode} mode, mechanism ${p.mechanism}: sampling rate q = ${p.accountant.samplingRate}, noise multiplier z = ${p.accountant.noiseMultiplier}, clip norm C = ${p.accountant.clipNorm}.`),
        help(
          'What each figure means',
          h('p', {}, 'ε (epsilon) and δ (delta) bound how much the released models can reveal about any one device\'s data: (ε, δ)-differential privacy, at the level of a whole device (user-level DP-FedAvg). Smaller ε is stronger; values above 10 bound little.'),
          h('p', {}, 'ε spent is cumulative: the guarantee of all rounds so far together, at the task\'s δ, not the cost of the last round. Each ledger entry\'s ε is likewise the cumulative ε after that round. The cap is enforced: no round opens whose ε would exceed it.'),
          h('p', {}, 'RDP order: the accountant composes rounds in Rényi differential privacy and converts to (ε, δ) by minimising over orders α; the order is the α at which the recorded ε was attained.'),
          h('p', {}, `Accountant: ${p.accountant.description}.`),
          h('p', {}, 'Projection: the accountant computes the cumulative ε after each further round with the current settings (with Poisson sampling the cost of a round does not depend on who takes part); the budget runs out at the first round that would exceed the cap.'),
        ),
      ),
    );
    // ε against the cap over rounds, with the x axis reaching the projected exhaustion (or the task's end).
    const xs = p.rounds.map((r) => r.roundNumber);
    const eps: Array<number | null> = p.rounds.map((r) => r.epsilonCumulative);
    const horizon = pr.exhaustedAtRound ?? null;
    if (horizon !== null && horizon > (xs.at(-1) ?? 0)) {
      xs.push(horizon);
      eps.push(null);
    }
    const chart = lineChart({ name: 'epsilon', title: 'ε spent (cumulative) against the cap', xLabel: 'round', x: xs, series: [{ label: 'ε cumulative', values: eps, color: COLORS.epsilon }, { label: 'ε cap', values: xs.map(() => p.epsilonCap), color: COLORS.cap, dash: [6, 4] }] });
    replace(chartBox, chart.figure, h('p', { class: 'muted' }, horizon === null ? 'The budget is projected to last until the task\'s last round.' : `Projected: the budget runs out at round ${horizon} (the plot\'s right edge).`));
    replace(clientsBody, ...p.clients.map((c) => h('tr', { 'data-client': c.clientId }, h('td', {}, c.name ?? h('span', { class: 'muted' }, '(no name)')), h('td', { class: 'hash' }, c.clientId), h('td', { class: 'num' }, c.participations), h('td', { class: 'num' }, fmt.eps(c.epsilon)))));
    await loadLedger();
    const last = await api<{ entries: LedgerEntryJson[] }>(`/v1/tasks/${taskId}/privacy/ledger?offset=${Math.max(0, total - 1)}&limit=1`);
    headHash.textContent = last.entries[0]?.hash ?? '0'.repeat(64);
    el.dataset['ready'] = 'true';
  }).catch((e: unknown) => {
    if (e instanceof ApiError && e.code === 'failed_precondition') {
      replace(el, h('h1', {}, 'Privacy'), h('p', {}, 'This task runs without differential privacy: there is no budget or ledger.'));
      el.dataset['ready'] = 'true';
      return;
    }
    throw e;
  });
  return { ready, dispose() {} };
}

// ------------------------------------------------------------------ devices

export function devicesView(main: HTMLElement, taskId: string): View {
  const body = h('tbody');
  const el = root(
    main,
    'devices',
    h('h1', {}, 'Devices'),
    h('table', { id: 'devices' }, h('thead', {}, h('tr', {}, ...['Name', 'Id', 'Joined', 'Last seen', 'Selected', 'Submitted', 'Dropped', 'Credential', 'Examples trained on'].map((t) => h('th', {}, t)))), body),
    help('About these columns', h('p', {}, 'Last seen: the later of the device\'s join and its last accepted update (what the database records). Selected / submitted / dropped: rounds the device was selected for, rounds whose update was accepted, and rounds it was selected for without an update by the close. Credential: the bearer credential the device received at Join (stored only as a hash): active, or revoked by an admin (a revoked device is refused on every call).')),
  );
  const ready = api<{ devices: DeviceJson[] }>(`/v1/tasks/${taskId}/devices`).then(({ devices }) => {
    replace(
      body,
      ...devices.map((d) =>
        h('tr', { 'data-device': d.id },
          h('td', {}, d.name ?? h('span', { class: 'muted' }, '(no name)')), h('td', { class: 'hash' }, d.id), h('td', {}, fmt.time(d.joinedAt)),
          h('td', { title: d.lastSeenAt }, fmt.ago(d.lastSeenAt)), h('td', { class: 'num' }, d.roundsSelected), h('td', { class: 'num' }, d.roundsSubmitted),
          h('td', { class: 'num' }, d.roundsDropped), h('td', { class: d.credential === 'revoked' ? 'bad' : null, title: d.revokedAt ?? '' }, d.credential), h('td', { class: 'num' }, fmt.int(d.trainedExamples)),
        ),
      ),
    );
    if (devices.length === 0) body.append(h('tr', {}, h('td', { colspan: 9, class: 'muted' }, 'No device has joined.')));
    el.dataset['ready'] = 'true';
  });
  return { ready, dispose() {} };
}
