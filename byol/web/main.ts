// The page's entry (bundled by byol/web/build.ts): gets the WebGPU device, shows the adapter and whether it meets
// the engine's needs, runs the kernel checks on demand, and drives the training panel. Everything the page
// shows is also published as plain data on window.__byol, which test/browser/run.ts reads.
// URL parameters: ?filter=TEXT runs only the checks whose "family name" contains TEXT; ?steps=N sets the steps;
// ?skip=FAMILY,FAMILY leaves those families out; ?checkLimit=S gives each check at most S seconds (default 180;
// 0: no limit).

import { getDevice, onDeviceLost } from '../../nn/index.ts';
import { describeAdapter, type AdapterReport } from './adapter.ts';
import { planChecks, runChecks, CheckTimeout, type CheckResult } from './checks.ts';
import { TrainPanel, type TrainingState } from './train-panel.ts';
import { byolTrainer, setUserImages } from './byol-trainer.ts';
import { imagesFromFiles } from './dropped-images.ts';
import type { Trainer } from './trainer.ts';

const trainer: Trainer = byolTrainer;

// Images dropped anywhere on the page replace the built-in set for the next training run.
document.addEventListener('dragover', (e) => e.preventDefault());
document.addEventListener('drop', async (e) => {
  e.preventDefault();
  const files = Array.from(e.dataTransfer?.files ?? []).filter((f) => f.type.startsWith('image/'));
  if (!files.length) return;
  const note = document.getElementById('trainer-desc');
  try {
    const ds = await imagesFromFiles(files, 24);
    setUserImages(ds);
    if (note) note.textContent = `Training on your ${ds.n} dropped images (resized to 24×24 grayscale); no labels, so no kNN accuracy.`;
  } catch (err) {
    if (note) note.textContent = `Could not use the dropped files: ${(err as Error).message}`;
  }
});

export interface ChecksState {
  running: boolean;
  done: boolean;
  total: number;
  passed: number;
  failed: number;
  ms: number;
}

export interface PageState {
  /** the device is up and the buttons are enabled */
  ready: boolean;
  /** why the page cannot run (no WebGPU, device lost) */
  fatal: string | null;
  adapter: AdapterReport | null;
  checks: CheckResult[];
  checksRun: ChecksState;
  training: TrainingState;
  /** uncaught errors and unhandled rejections */
  errors: string[];
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => {
  const e = document.getElementById(id);
  if (!e) throw new Error(`page: element #${id} is missing from index.html`);
  return e as T;
};

function el(tag: string, text = '', className = ''): HTMLElement {
  const e = document.createElement(tag);
  e.textContent = text;
  if (className) e.className = className;
  return e;
}

function row(...cells: (string | HTMLElement)[]): HTMLTableRowElement {
  const tr = document.createElement('tr');
  for (const c of cells) tr.append(typeof c === 'string' ? el('td', c) : c);
  return tr;
}

const num = (v: string | number, cls = '') => el('td', String(v), `num ${cls}`.trim());

// One piece of engine work at a time: tidy() scopes and the command recorder are global to the page.
let queue: Promise<unknown> = Promise.resolve();
let busy = 0;
function exclusive<T>(fn: () => Promise<T>): Promise<T> {
  const run = queue.then(async () => {
    busy++;
    updateButtons();
    try {
      return await fn();
    } finally {
      busy--;
      updateButtons();
    }
  });
  queue = run.catch(() => undefined);
  return run;
}

const params = new URLSearchParams(location.search);
const panel = new TrainPanel(trainer, {
  steps: $<HTMLInputElement>('train-steps'),
  start: $<HTMLButtonElement>('train-start'),
  stop: $<HTMLButtonElement>('train-stop'),
  download: $<HTMLButtonElement>('download'),
  step: $('stat-step'),
  loss: $('stat-loss'),
  rate: $('stat-rate'),
  rateLabel: $('stat-rate-label'),
  knn: $('stat-knn'),
  lossCanvas: $<HTMLCanvasElement>('loss-canvas'),
  previewCanvas: $<HTMLCanvasElement>('preview-canvas'),
  previewCaption: $('preview-caption'),
  status: $('train-status'),
  name: $('trainer-name'),
  description: $('trainer-desc'),
}, exclusive);
if (params.get('steps')) $<HTMLInputElement>('train-steps').value = params.get('steps')!;

const state: PageState = {
  ready: false,
  fatal: null,
  adapter: null,
  checks: [],
  checksRun: { running: false, done: false, total: 0, passed: 0, failed: 0, ms: 0 },
  training: panel.state,
  errors: [],
};
(globalThis as any).__byol = state;

addEventListener('error', (e) => state.errors.push(String(e.error?.stack ?? e.message)));
addEventListener('unhandledrejection', (e) => state.errors.push(String((e.reason as Error)?.stack ?? e.reason)));

function updateButtons(): void {
  const ok = state.ready && !state.fatal;
  $<HTMLButtonElement>('run-checks').disabled = !ok || busy > 0;
  panel.enable(ok && busy === 0);
}

function fatal(msg: string): void {
  state.fatal = msg;
  $('fatal').style.display = 'block';
  $('fatal-msg').textContent = msg;
  updateButtons();
}

function showAdapter(r: AdapterReport): void {
  const info = $('adapter-info');
  info.replaceChildren(
    row('vendor', r.vendor || '(not reported)'),
    row('architecture', r.architecture || '(not reported)'),
    row('description', r.description || '(not reported)'),
    row('kind', r.isFallback ? 'fallback (CPU) adapter' : 'hardware adapter'),
  );
  const feat = $('adapter-features');
  const yes = (on: boolean, extra = '') => el('td', on ? `available${extra}` : 'not available', on ? 'ok' : 'muted');
  feat.replaceChildren(
    row('shader-f16', yes(r.features['shader-f16']), el('td', r.features['shader-f16'] ? 'requested; kernels stay f32' : 'kernels use f32 only', 'muted')),
    row('subgroups', yes(r.features.subgroups, !r.subgroupSizes ? '' : r.subgroupSizes[0] === r.subgroupSizes[1] ? ` (size ${r.subgroupSizes[0]})` : ` (size ${r.subgroupSizes[0]}–${r.subgroupSizes[1]})`), el('td', r.features.subgroups ? 'requested; not required' : 'not required', 'muted')),
    row('timestamp-query', yes(r.features['timestamp-query']), el('td', 'for kernel timing', 'muted')),
  );
  $('adapter-limits').replaceChildren(
    ...r.requirements.map((q) => row(q.limit, num(q.have.toLocaleString('en-US')), num(q.need.toLocaleString('en-US')), el('td', q.what, 'muted'), el('td', q.ok ? '✓' : '✗ too low', q.ok ? 'ok' : 'bad'))),
  );
}

// ---- kernel checks ----------------------------------------------------------------------------------------

const familyRows = new Map<string, { cases: HTMLElement; passed: HTMLElement; failed: HTMLElement; ms: HTMLElement; t: number }>();

function resetCheckTables(families: string[], counts: Map<string, number>): void {
  familyRows.clear();
  const body = $('checks-families');
  body.replaceChildren();
  for (const f of families) {
    const r = { cases: num(counts.get(f)!), passed: num(0), failed: num(0), ms: num('–'), t: 0 };
    familyRows.set(f, r);
    body.append(row(f, r.cases, r.passed, r.failed, r.ms));
  }
  $('checks-rows').replaceChildren();
}

/** Per-check time limit: generous for CPU adapters, where each new pipeline costs seconds to minutes of compiling. */
const CHECK_LIMIT_S = Number(params.get('checkLimit') ?? 180);

async function runKernelChecks(): Promise<void> {
  const plan = planChecks(params.get('filter') ?? '', (params.get('skip') ?? '').split(',').filter(Boolean));
  const run = state.checksRun;
  Object.assign(run, { running: true, done: false, total: plan.length, passed: 0, failed: 0, ms: 0 });
  state.checks = [];
  const families = [...new Set(plan.map((p) => p.family))];
  const counts = new Map(families.map((f) => [f, plan.filter((p) => p.family === f).length]));
  resetCheckTables(families, counts);
  const progress = $<HTMLProgressElement>('checks-progress');
  progress.hidden = false;
  progress.max = plan.length;
  progress.value = 0;
  const summary = $('checks-summary');
  summary.className = 'muted';
  const t0 = performance.now();
  try {
    await exclusive(() =>
      runChecks(plan, (r) => {
        state.checks.push(r);
        r.ok ? run.passed++ : run.failed++;
        const f = familyRows.get(r.family)!;
        f.t += r.ms;
        (r.ok ? f.passed : f.failed).textContent = String(Number((r.ok ? f.passed : f.failed).textContent) + 1);
        if (!r.ok) f.failed.className = 'num bad';
        f.ms.textContent = `${(f.t / 1000).toFixed(1)} s`;
        const result = r.ok ? el('td', 'passed', 'ok') : el('td', r.err ?? 'failed', 'err');
        $('checks-rows').append(row(r.family, r.name, result, num(r.ms.toFixed(0))));
        if (!r.ok) $<HTMLDetailsElement>('checks-details').open = true;
        progress.value = state.checks.length;
        summary.textContent = `${state.checks.length} / ${plan.length} run, ${run.failed} failed`;
      }, CHECK_LIMIT_S * 1000),
    );
  } catch (e) {
    // a stuck check leaves the GPU busy: the page cannot go on (the check's row already says which one)
    if (e instanceof CheckTimeout) fatal(`kernel checks stopped: ${e.message}`);
    else state.errors.push(`kernel checks stopped: ${(e as Error)?.message ?? e}`);
  } finally {
    run.ms = performance.now() - t0;
    run.running = false;
    run.done = true;
    progress.hidden = true;
    summary.textContent = `${run.passed} passed, ${run.failed} failed in ${(run.ms / 1000).toFixed(1)} s`;
    summary.className = run.failed || run.passed !== run.total ? 'bad' : 'ok';
  }
}

$('run-checks').onclick = () => void runKernelChecks();

// ---- start -----------------------------------------------------------------------------------------------

try {
  const ctx = await getDevice();
  state.adapter = describeAdapter(ctx);
  showAdapter(state.adapter);
  onDeviceLost((reason) => fatal(`the WebGPU device was lost: ${reason}. Reload the page.`));
  state.ready = true;
  updateButtons();
} catch (e) {
  $('adapter-info').replaceChildren(row('no adapter'));
  // device.ts's hint about `npx byol setup` is for Node; the page gives the browser's instead
  const msg = String((e as Error)?.message ?? e).replace(/ On Linux without a GPU run .*$/, '');
  fatal(`${msg}\n\nThis page needs WebGPU: a recent Chrome, Edge or Safari, or Firefox 141+. ` +
    'Chromium on a machine without a usable GPU gives a (CPU) adapter only when started with --enable-unsafe-webgpu.');
}
