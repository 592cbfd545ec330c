// The browser test (npm run test:browser): builds the page, serves dist/web on 127.0.0.1, opens it in Debian's
// headless Chromium (WebGPU on its bundled SwiftShader adapter: no GPU needed, see /work/shared/browser-recipe.md),
// clicks "Run kernel checks" and "Start training", downloads the checkpoint, and checks what the page published
// on window.__byol. Saves a full-page screenshot. Ends with "N passed, N failed"; exits 1 on any failure.
// Usage: tsx test/browser/run.ts [--screenshot FILE] [--filter TEXT] [--steps N] [--timeout SECONDS] [--chromium PATH] [--skip F,G] [--check-limit S] [--any-adapter]
//   --filter TEXT  only the kernel checks whose "family name" contains TEXT, e.g. 'matmul' or 'reduce max'
//   --skip F,G     leave out whole kernel families (reported as skipped, which fails the run)
//   --check-limit S  each kernel check must finish within S seconds (default: the page's, 180)
//   --any-adapter  do not require SwiftShader's shape (subgroups of 4, 256 invocations, no shader-f16)
//   --steps N      training steps (default: the trainer's own)
//   --timeout S    give up after S seconds (default 1500: the page must finish within 25 minutes)

import { createServer, type Server } from 'node:http';
import { readFile, copyFile, mkdir } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { extname, join, resolve, sep, dirname } from 'node:path';
import type { AddressInfo } from 'node:net';
import { chromium, type Browser, type Page } from 'playwright-core';
import { buildWeb } from '../../byol/web/build.ts';
import { decodeSafetensors } from '../../engine/safetensors.ts';
import type { PageState } from '../../byol/web/main.ts';
import { checkFamilies } from '../../byol/checks.ts';

// the kernel checks take about a minute on SwiftShader; the 60 training steps, on conv2d's tiled kernel there, about
// 12 minutes (README, In the browser)
const DEFAULT_LIMIT_S = 1500;
/** What the page may fetch from the server: itself and data files a trainer puts under dist/web/data/. */
const EXPECTED_REQUEST = /^\/(index\.html|main\.js(\.map)?|data\/.+)$/;
/**
 * The training test passes when the mean loss of the last 10 steps is at most this fraction of the first 10's.
 * BYOL's symmetric loss starts near 4 (unrelated projections) and, at the page's batch of 32, is near 2.8 after 60
 * steps in SwiftShader: 0.8 asserts clear progress without asking a 60-step run for convergence.
 */
const LOSS_RATIO = 0.8;
/** The page's kNN accuracy on the held-out shapes must reach this: twice chance (10 balanced classes). */
const KNN_MIN = 0.2;

const argv = process.argv.slice(2);
const arg = (name: string) => {
  const i = argv.indexOf(name);
  return i >= 0 ? argv[i + 1] : undefined;
};
const screenshotCopy = arg('--screenshot');
const filter = arg('--filter') ?? '';
const steps = arg('--steps');
const checkLimit = arg('--check-limit');
const skip = (arg('--skip') ?? '').split(',').filter(Boolean);
const executablePath = arg('--chromium') ?? '/usr/bin/chromium';
const LIMIT_MS = 1000 * Number(arg('--timeout') ?? DEFAULT_LIMIT_S);
const anyAdapter = argv.includes('--any-adapter');

const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.png': 'image/png',
  '.bin': 'application/octet-stream',
};

/** Serves `dir` read-only on 127.0.0.1 at a free port; records every path asked for. */
async function serve(dir: string, requested: string[]): Promise<{ server: Server; base: string }> {
  const root = resolve(dir);
  const server = createServer(async (req, res) => {
    const path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname);
    requested.push(path);
    const file = resolve(root, '.' + (path === '/' ? '/index.html' : path));
    if (req.method !== 'GET' || (file !== root && !file.startsWith(root + sep))) {
      res.writeHead(req.method !== 'GET' ? 405 : 403).end();
      return;
    }
    try {
      const body = await readFile(file);
      res.writeHead(200, { 'content-type': MIME[extname(file)] ?? 'application/octet-stream', 'cache-control': 'no-store' }).end(body);
    } catch {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((ok, fail) => server.once('error', fail).listen(0, '127.0.0.1', ok));
  return { server, base: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

interface Outcome {
  name: string;
  ok: boolean;
  detail?: string;
}
const outcomes: Outcome[] = [];
function record(name: string, ok: boolean, detail?: string): void {
  outcomes.push({ name, ok, detail });
  console.log(`${ok ? '✓' : '✗'} ${name}${detail ? (ok ? `  (${detail})` : `\n    ${detail.replace(/\n/g, '\n    ')}`) : ''}`);
}

const started = Date.now();
const deadline = started + LIMIT_MS;
const secs = () => `${((Date.now() - started) / 1000).toFixed(1)} s`;

async function pageState(page: Page): Promise<PageState> {
  return page.evaluate(() => (globalThis as any).__byol);
}

/** Polls the page until `done(state)`; `each` sees every state; throws when the 10-minute budget runs out. */
async function waitFor(page: Page, phase: string, done: (s: PageState) => boolean, each: (s: PageState) => void = () => {}): Promise<PageState> {
  for (;;) {
    const s = await pageState(page);
    each(s);
    if (done(s)) return s;
    if (s?.fatal) throw new Error(`${phase}: the page reports: ${s.fatal}`);
    if (Date.now() > deadline) {
      throw new Error(`${phase}: the page did not finish within ${LIMIT_MS / 1000} s (the --timeout limit; ` +
        `last state: ${JSON.stringify({ checksRun: s?.checksRun, step: s?.training?.step, errors: s?.errors })})`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

async function main(): Promise<void> {
  if (!existsSync(executablePath)) throw new Error(`no Chromium at ${executablePath}: run 'bash engine/setup.sh --browser' (installs Debian's chromium)`);
  const build = await buildWeb();
  console.log(`built ${build.files[0]} (${(build.bundleBytes / 1024).toFixed(0)} KiB, ${build.inputs.length} sources) in ${secs()}`);
  const requested: string[] = [];
  const { server, base } = await serve(build.outdir, requested);
  let browser: Browser | null = null;
  // a last resort if Playwright itself hangs: kill the browser and exit
  const guard = setTimeout(() => {
    console.error(`browser test: still running ${LIMIT_MS / 1000 + 60} s after start (--timeout + 60 s); killing the browser`);
    try {
      (browser as any)?.process?.()?.kill('SIGKILL');
    } catch {}
    console.log(`${outcomes.filter((o) => o.ok).length} passed, ${outcomes.filter((o) => !o.ok).length + 1} failed`);
    process.exit(1);
  }, LIMIT_MS + 60_000);
  guard.unref();
  try {
    browser = await chromium.launch({
      executablePath,
      headless: true,
      args: [
        '--no-sandbox',
        '--enable-unsafe-webgpu', // without it requestAdapter() returns null; with it, Chromium's SwiftShader adapter
        '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync',
      ],
    });
    console.log(`chromium ${browser.version()} started in ${secs()}`);
    const context = await browser.newContext({ viewport: { width: 1240, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    const pageErrors: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') pageErrors.push(`console error: ${m.text()}`);
    });
    page.on('pageerror', (e) => pageErrors.push(`uncaught: ${e.stack ?? e.message}`));
    page.on('requestfailed', (r) => pageErrors.push(`request failed: ${r.url()} (${r.failure()?.errorText})`));
    page.on('request', (r) => {
      const u = r.url();
      if (!u.startsWith(base + '/') && !u.startsWith('data:') && !u.startsWith('blob:')) pageErrors.push(`request outside the test server: ${u}`);
    });

    const query = new URLSearchParams();
    if (filter) query.set('filter', filter);
    if (steps) query.set('steps', steps);
    if (checkLimit) query.set('checkLimit', checkLimit);
    if (skip.length) query.set('skip', skip.join(','));
    await page.goto(`${base}/index.html${query.size ? '?' + query : ''}`);
    const ready = await waitFor(page, 'loading the page', (s) => !!s && (s.ready || !!s.fatal));
    if (ready.fatal) {
      record('the page gets a WebGPU device', false, ready.fatal);
      return;
    }
    const a = ready.adapter!;
    record('the page gets a WebGPU device', true, `${a.vendor}/${a.architecture}${a.isFallback ? ', fallback adapter' : ''}; ` +
      `shader-f16 ${a.features['shader-f16'] ? 'yes' : 'no'}, subgroups ${a.features.subgroups ? 'yes' : 'no'}`);
    const low = a.requirements.filter((r) => !r.ok);
    record('the adapter meets the engine\'s limits', low.length === 0,
      low.length ? low.map((r) => `${r.limit}: ${r.have} < ${r.need} (${r.what})`).join('\n') : a.requirements.map((r) => `${r.limit.replace(/^max(Compute)?/, '')} ${r.have}≥${r.need}`).join(', '));

    // The checks are asserted on SwiftShader, the adapter headless Chromium gives without a GPU: it has the
    // constraints a browser may impose that lavapipe lacks (subgroups of 4, 256 invocations per workgroup, no f16).
    if (!anyAdapter) {
      const inv = a.requirements.find((r) => r.limit === 'maxComputeInvocationsPerWorkgroup')?.have;
      const sg = a.subgroupSizes;
      record('the adapter has SwiftShader\'s shape: subgroups of 4, 256 invocations per workgroup, no shader-f16',
        a.architecture === 'swiftshader' && !!sg && sg[0] === 4 && sg[1] === 4 && inv === 256 && !a.features['shader-f16'],
        `${a.architecture}: subgroups ${sg ? sg.join('..') : 'none'}, ${inv} invocations, shader-f16 ${a.features['shader-f16'] ? 'yes' : 'no'} (--any-adapter skips this)`);
    }

    // kernel checks, printed as they land
    await page.click('#run-checks');
    let shown = 0;
    const checks = await waitFor(page, 'kernel checks', (s) => s.checksRun.done, (s) => {
      for (; shown < s.checks.length; shown++) {
        const c = s.checks[shown];
        record(`${c.family}: ${c.name}`, c.ok, c.ok ? `${c.ms.toFixed(0)} ms` : c.err ?? 'failed');
      }
    });
    const cr = checks.checksRun;
    if (cr.total === 0) record('kernel checks: at least one case matches the filter', false, `no case matches --filter '${filter}'`);
    else if (checks.checks.length !== cr.total) record('kernel checks: every planned case ran', false, `${checks.checks.length} of ${cr.total} ran`);
    console.log(`kernel checks: ${cr.passed} passed, ${cr.failed} failed in ${(cr.ms / 1000).toFixed(1)} s`);
    // every family's every check ran and passed (byol/checks.ts: what the page runs)
    for (const [family, list] of Object.entries(checkFamilies)) {
      const want = list.filter((c) => `${family} ${c.name}`.includes(filter)).length;
      if (filter && want === 0) continue;
      if (skip.includes(family)) {
        record(`kernel family ${family}: all ${want} checks pass`, false, 'skipped (--skip)');
        continue;
      }
      const ran = checks.checks.filter((c) => c.family === family);
      const passed = ran.filter((c) => c.ok).length;
      const secs = ran.reduce((t, c) => t + c.ms, 0) / 1000;
      record(`kernel family ${family}: all ${want} checks pass`, ran.length === want && passed === want, `${passed} of ${want} passed, ${ran.length} ran, ${secs.toFixed(1)} s`);
    }
    // a check over its time limit leaves the GPU busy: the page stops there, and so does the test
    if (checks.fatal) {
      record('the kernel checks finish', false, checks.fatal);
      return;
    }

    // training
    await page.click('#train-start');
    let lastLog = Date.now();
    const trained = await waitFor(page, 'training', (s) => s.training.done, (s) => {
      if (Date.now() - lastLog > 5000) {
        lastLog = Date.now();
        const t = s.training;
        console.log(`  training: step ${t.step}, loss ${t.losses.at(-1)?.toPrecision(4) ?? '–'}`);
      }
    });
    const t = trained.training;
    const want = Number(steps ?? (await page.inputValue('#train-steps')));
    const head = t.losses.slice(0, 10);
    const tail = t.losses.slice(-10);
    const avg = (v: number[]) => v.reduce((x, y) => x + y, 0) / v.length;
    const rate = t.samplesPerSec === null ? '–' : t.samplesPerSec.toFixed(0);
    if (t.error) record(`training (${t.trainer})`, false, t.error);
    else {
      record(`training runs all ${want} steps`, t.losses.length === want && t.losses.every(Number.isFinite), `${t.losses.length} finite losses in ${(t.ms / 1000).toFixed(1)} s, ${rate} samples/s`);
      const ok = t.losses.length >= 20 && avg(tail) <= LOSS_RATIO * avg(head);
      record('the training loss goes down', ok, `mean of the first 10 steps ${avg(head).toPrecision(4)}, of the last 10 ${avg(tail).toPrecision(4)} (must be ≤ ${LOSS_RATIO}×)`);
      // ten balanced classes: chance is 0.1
      record('kNN accuracy of the learned encoder is well above chance', t.knn !== null && t.knn >= KNN_MIN, `kNN top-1 ${t.knn === null ? '–' : t.knn.toFixed(3)} (must be ≥ ${KNN_MIN}; chance 0.1)`);
    }

    // checkpoint download
    if (t.checkpointReady) {
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: Math.max(1000, deadline - Date.now()) }), page.click('#download')]);
      const path = await download.path();
      try {
        const bytes = new Uint8Array(await readFile(path));
        const tensors = [...decodeSafetensors(bytes).tensors.values()];
        const finite = tensors.every((x) => x.data.every(Number.isFinite));
        const params = tensors.reduce((n, x) => n + x.data.length, 0);
        const names = [...decodeSafetensors(bytes).tensors.keys()];
        record('the checkpoint download is a valid safetensors file with torchvision names', download.suggestedFilename().endsWith('.safetensors') && tensors.length > 0 && finite &&
          names.includes('conv1.weight') && names.includes('layer1.0.bn1.running_var'),
          `${download.suggestedFilename()}: ${tensors.length} tensors, ${params} values, ${bytes.length} bytes`);
      } catch (e) {
        record('the checkpoint download is a valid safetensors file', false, (e as Error).message);
      }
    } else if (!t.error) record('the trainer offers a checkpoint download', false, 'TrainResult.checkpoint is missing');

    const shot = join(build.outdir, 'screenshot.png');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.screenshot({ path: shot, fullPage: true });
    if (screenshotCopy) {
      await mkdir(dirname(resolve(screenshotCopy)), { recursive: true });
      await copyFile(shot, screenshotCopy);
    }
    console.log(`screenshot: ${shot}${screenshotCopy ? ` (copied to ${screenshotCopy})` : ''}`);

    const final = await pageState(page);
    const strange = requested.filter((p) => !EXPECTED_REQUEST.test(p));
    const problems = [...pageErrors, ...final.errors, ...strange.map((p) => `unexpected request for ${p} (the page loads only index.html, main.js and data/*)`)];
    record('no page errors (console errors, uncaught exceptions, failed or unexpected requests)', problems.length === 0, problems.join('\n') || undefined);
  } finally {
    await browser?.close().catch(() => {});
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
    clearTimeout(guard);
  }
}

try {
  await main();
} catch (e) {
  // a timeout or a page-reported failure is explained by its message; anything else gets its stack
  const err = e as Error;
  record('browser test', false, err?.message?.includes(': the page ') ? err.message : err?.stack ?? String(e));
}
const failed = outcomes.filter((o) => !o.ok).length;
console.log(`browser test took ${secs()}`);
console.log(`${outcomes.length - failed} passed, ${failed} failed`);
process.exitCode = failed || outcomes.length === 0 ? 1 : 0;
