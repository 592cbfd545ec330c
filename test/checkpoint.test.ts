// Checkpoints: round trip, keep-last-K, rejection of truncated and corrupt files with clear errors, fallback
// to the previous checkpoint, and a crash test: a child process saving in a loop is killed with SIGKILL at
// random moments; what loads afterwards is always a complete checkpoint from the last completed save.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, readdir, rm, truncate, writeFile, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  saveCheckpoint, loadLatestCheckpoint, readCheckpoint, listCheckpoints, checkpointName, type LoadedCheckpoint,
} from '../nn/checkpoint-node.ts';
import { saveSafetensors } from '../nn/safetensors-node.ts';
import type { TensorEntry } from '../engine/safetensors.ts';
import { tensor, mean, mul, sub, backward, tidy, liveTensors, sync } from '../nn/index.ts';
import { Linear, ReLU, Sequential, materialize } from '../nn/module.ts';
import { Adam } from '../nn/optim.ts';
import { stepData } from './helpers/checkpoint-writer.ts';
import { rng } from './helpers/gradcheck.ts';

const t = suite('checkpoint');

const tmp = () => mkdtemp(join(tmpdir(), 'byol-ckpt-'));

function payload(step: number, n = 100): { tensors: Map<string, TensorEntry>; meta: object } {
  return {
    tensors: new Map([
      ['w', { shape: [n], data: stepData(step, n) }],
      ['b', { shape: [2, 3], data: Float32Array.of(step, 1, 2, 3, 4, 5) }],
    ]),
    meta: { step, lr: 0.5, nested: { epoch: Math.floor(step / 10) } },
  };
}

async function loadQuiet(dir: string): Promise<LoadedCheckpoint> {
  return loadLatestCheckpoint(dir, { onWarning: () => {} });
}

async function rejects(p: Promise<unknown>, ...parts: (string | RegExp)[]): Promise<string> {
  try {
    await p;
  } catch (e) {
    const m = (e as Error).message;
    for (const part of parts) assert.ok(typeof part === 'string' ? m.includes(part) : part.test(m), `message lacks ${part}: ${m}`);
    return m;
  }
  assert.unreachable('expected a rejection');
  return '';
}

t('round trip, latest.json, and only the newest K checkpoints are kept', async () => {
  const dir = await tmp();
  for (let s = 1; s <= 5; s++) await saveCheckpoint(dir, s * 10, payload(s * 10), { keep: 3 });
  assert.equal((await listCheckpoints(dir)).map((c) => c.step), [50, 40, 30]);
  assert.equal(JSON.parse(await readFile(join(dir, 'latest.json'), 'utf8')), { format: 'byol-webgpu-checkpoint/1', step: 50, file: 'ckpt-50.safetensors' });
  const r = await loadQuiet(dir);
  assert.is(r.step, 50);
  assert.equal(r.warnings, []);
  assert.equal(r.meta, { step: 50, lr: 0.5, nested: { epoch: 5 } });
  assert.equal([...r.tensors.keys()], ['w', 'b']);
  assert.equal([...r.tensors.get('w')!.data], [...stepData(50, 100)]);
  assert.equal(r.tensors.get('b')!.shape, [2, 3]);
  assert.equal((await readdir(dir)).sort(), ['ckpt-30.safetensors', 'ckpt-40.safetensors', 'ckpt-50.safetensors', 'latest.json']);
  await rm(dir, { recursive: true });
});

t('a truncated newest checkpoint is rejected and the previous one loads, with a warning', async () => {
  const dir = await tmp();
  await saveCheckpoint(dir, 1, payload(1, 5000));
  await saveCheckpoint(dir, 2, payload(2, 5000));
  const p2 = join(dir, checkpointName(2));
  const size = (await stat(p2)).size;
  for (const cut of [size - 1, Math.floor(size / 2), 100, 7, 0]) {
    await truncate(p2, cut);
    await rejects(readCheckpoint(p2), p2, 'truncated');
    const warnings: string[] = [];
    const r = await loadLatestCheckpoint(dir, { onWarning: (m) => warnings.push(m) });
    assert.is(r.step, 1, `cut at ${cut}`);
    assert.equal([...r.tensors.get('w')!.data], [...stepData(1, 5000)]);
    assert.is(warnings.length, 1);
    assert.match(warnings[0], /skipping damaged checkpoint: .*ckpt-2\.safetensors: .*truncated/);
    assert.equal(r.warnings, warnings);
  }
  await rm(dir, { recursive: true });
});

t('corrupt checkpoints are rejected with clear errors: header, data (checksum), format, step, meta', async () => {
  const dir = await tmp();
  await saveCheckpoint(dir, 7, payload(7));
  const p = join(dir, checkpointName(7));
  const good = new Uint8Array(await readFile(p));
  const corrupt = async (f: (b: Uint8Array) => void, ...parts: (string | RegExp)[]) => {
    const b = good.slice();
    f(b);
    await writeFile(p, b);
    await rejects(readCheckpoint(p, 7), p, ...parts);
  };
  await corrupt((b) => b.fill(0xff, 0, 8), 'header length', 'not plausible');
  await corrupt((b) => (b[9] = 0x7b), 'not valid JSON');
  await corrupt((b) => (b[b.length - 3] ^= 0x40), 'checksum mismatch', 'corrupt data'); // one bit in the data
  await corrupt((b) => b.fill(0, 8 + 20, 8 + 60), /not valid|unsupported|invalid|header/);
  // a plain safetensors file, and a checkpoint under another step's name
  await saveSafetensors(p, new Map([['w', { shape: [1], data: Float32Array.of(1) }]]));
  await rejects(readCheckpoint(p), 'not a checkpoint of this format');
  await writeFile(p, good);
  await rejects(readCheckpoint(p, 8), 'holds step 7 but its name says step 8');
  assert.is((await readCheckpoint(p, 7)).step, 7, 'the original bytes are fine');
  await rm(dir, { recursive: true });
});

t('no valid checkpoint: a clear error that lists why each one failed; none at all: a clear error', async () => {
  const dir = await tmp();
  await rejects(loadQuiet(dir), 'no checkpoint in', dir);
  await rejects(loadQuiet(join(dir, 'does-not-exist')), 'no checkpoint in');
  await saveCheckpoint(dir, 1, payload(1));
  await saveCheckpoint(dir, 2, payload(2));
  await truncate(join(dir, checkpointName(1)), 10);
  await writeFile(join(dir, checkpointName(2)), 'garbage');
  await rejects(loadQuiet(dir), 'no valid checkpoint', '2 damaged', 'ckpt-2.safetensors', 'ckpt-1.safetensors');
  await rm(dir, { recursive: true });
});

t('latest.json missing, corrupt or stale: the checkpoint files decide, with a warning', async () => {
  const dir = await tmp();
  await saveCheckpoint(dir, 3, payload(3));
  await saveCheckpoint(dir, 4, payload(4));
  await writeFile(join(dir, 'latest.json'), '{"step": 4, "fi');
  let r = await loadQuiet(dir);
  assert.is(r.step, 4);
  assert.match(r.warnings.join('\n'), /latest\.json is unreadable/);
  await rm(join(dir, 'latest.json'));
  r = await loadQuiet(dir);
  assert.is(r.step, 4);
  assert.match(r.warnings.join('\n'), /no latest\.json/);
  // a crash between renaming ckpt-5 and updating latest.json: ckpt-5 is complete, so it wins
  await saveCheckpoint(dir, 5, payload(5));
  await writeFile(join(dir, 'latest.json'), JSON.stringify({ format: 'byol-webgpu-checkpoint/1', step: 4, file: 'ckpt-4.safetensors' }));
  r = await loadQuiet(dir);
  assert.is(r.step, 5);
  assert.match(r.warnings.join('\n'), /newer than the step 4 named in latest\.json/);
  // latest.json naming a deleted file
  await writeFile(join(dir, 'latest.json'), JSON.stringify({ format: 'byol-webgpu-checkpoint/1', step: 9, file: 'ckpt-9.safetensors' }));
  r = await loadQuiet(dir);
  assert.is(r.step, 5);
  assert.match(r.warnings.join('\n'), /names step 9, but ckpt-9\.safetensors is missing/);
  await rm(dir, { recursive: true });
});

t('invalid arguments are rejected before anything is written; temporaries of dead writers are removed', async () => {
  const dir = await tmp();
  assert.throws(() => saveCheckpoint(dir, -1, payload(1)), /step must be a non-negative integer/);
  assert.throws(() => saveCheckpoint(dir, 1, payload(1), { keep: 0 }), /keep must be an integer >= 1/);
  const cyclic: any = {};
  cyclic.self = cyclic;
  assert.throws(() => saveCheckpoint(dir, 1, { tensors: new Map(), meta: cyclic }), /not JSON-serializable/);
  await rejects(saveCheckpoint(dir, 1, { tensors: new Map([['x', { shape: [3], data: new Float32Array(2) }]]), meta: {} }), 'shape [3]');
  assert.equal(await listCheckpoints(dir), []);
  // a writer killed mid-save leaves `<file>.tmp-<pid>`; the next save removes it once that pid is gone
  const dead = await deadPid();
  await writeFile(join(dir, `ckpt-3.safetensors.tmp-${dead}`), 'partial');
  await writeFile(join(dir, `latest.json.tmp-${process.pid}`), 'ours: in use'); // (not removed: this process is alive)
  await saveCheckpoint(dir, 4, payload(4));
  const names = await readdir(dir);
  assert.not.ok(names.includes(`ckpt-3.safetensors.tmp-${dead}`), names.join(', '));
  assert.is((await loadQuiet(dir)).step, 4);
  await rm(dir, { recursive: true });
});

async function deadPid(): Promise<number> {
  const c = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => c.on('exit', r));
  return c.pid!;
}

t('a model and its optimizer restored from a checkpoint continue exactly where they left off', async () => {
  const before = liveTensors();
  const dir = await tmp();
  const make = () => materialize(new Sequential(new Linear(4, 8), new ReLU(), new Linear(8, 2)), { seed: 3 });
  const r = rng(11);
  const batches = Array.from({ length: 6 }, () => Float32Array.from({ length: 20 }, () => r() * 2 - 1));
  const step = (m: ReturnType<typeof make>, opt: Adam, k: number) => {
    const x = tensor(batches[k], [5, 4]);
    tidy(() => {
      const y = m.forward(x);
      backward(mean(mul(y, y)));
    });
    opt.step();
    x.dispose();
  };
  const a = make();
  const optA = new Adam(a, { lr: 0.05 });
  for (let k = 0; k < 3; k++) step(a, optA, k);
  const tensors = new Map<string, TensorEntry>();
  for (const [n, e] of await a.stateDict()) tensors.set(`model.${n}`, e);
  for (const [n, e] of await optA.stateDict()) tensors.set(`opt.${n}`, e);
  await saveCheckpoint(dir, 3, { tensors, meta: { step: 3 } });
  for (let k = 3; k < 6; k++) step(a, optA, k);

  const loaded = await loadQuiet(dir);
  const b = make();
  const optB = new Adam(b, { lr: 0.05 });
  const part = (prefix: string) => new Map([...loaded.tensors].filter(([n]) => n.startsWith(prefix)).map(([n, e]) => [n.slice(prefix.length), e]));
  b.loadStateDict(part('model.'));
  optB.loadStateDict(part('opt.'));
  for (let k = loaded.meta.step; k < 6; k++) step(b, optB, k);
  assert.equal([...(await b.arena!.read())], [...(await a.arena!.read())], 'bit-identical parameters after resuming');
  for (const x of [optA, optB, a, b]) x.dispose();
  await sync();
  assert.is(liveTensors(), before);
  await rm(dir, { recursive: true });
});

const WRITER = fileURLToPath(new URL('./helpers/checkpoint-writer.ts', import.meta.url));

/** Starts the writer, waits for its first completed save, kills it with SIGKILL `delayMs` later. */
async function crashRun(dir: string, floats: number, delayMs: number): Promise<{ lastSaved: number; leftovers: string[] }> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dir, String(floats)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stderr.on('data', (d) => (err += d));
  const exited = new Promise<void>((res) => child.on('exit', () => res()));
  await new Promise<void>((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`writer produced no save within 30 s: ${err}`)), 30_000);
    child.stdout.on('data', (d) => {
      out += d;
      if (out.includes('saved 1\n')) (clearTimeout(timer), res());
    });
    child.on('exit', (code) => (clearTimeout(timer), rej(new Error(`writer exited early (${code}): ${err}`))));
  });
  await new Promise((res) => setTimeout(res, delayMs));
  child.kill('SIGKILL');
  await exited;
  const saved = [...out.matchAll(/saved (\d+)\n/g)].map((m) => Number(m[1]));
  const leftovers = (await readdir(dir)).filter((n) => n.includes('.tmp-'));
  return { lastSaved: saved[saved.length - 1], leftovers };
}

t('crash test: SIGKILL at random moments during saves always leaves the last completed save loadable', async () => {
  const r = rng(2024);
  for (let run = 0; run < 10; run++) {
    const dir = await tmp();
    const delay = Math.floor(r() * 400);
    const { lastSaved, leftovers } = await crashRun(dir, 500_000, delay);
    const c = await loadQuiet(dir);
    const where = `run ${run} (killed ${delay} ms after the first save, last reported save ${lastSaved}, leftovers ${leftovers.join(', ') || 'none'})`;
    // the save in flight may have completed without being reported: never older, at most one newer
    assert.ok(c.step === lastSaved || c.step === lastSaved + 1, `${where}: loaded step ${c.step}`);
    assert.equal(c.meta.step, c.step, where);
    // writes are atomic: a kill never leaves a damaged file under a checkpoint's name (only a temporary)
    assert.not.match(c.warnings.join('\n'), /damaged/, `${where}: ${c.warnings.join('; ')}`);
    const w = c.tensors.get('params')!;
    assert.equal(w.shape, [500_000]);
    const want = stepData(c.step, 500_000);
    assert.ok(w.data.every((v, i) => v === want[i]), `${where}: params content`);
    assert.equal([...c.tensors.get('opt.momentum')!.data], [...stepData(c.step + 1, 15)], where);
    await rm(dir, { recursive: true });
  }
});

t.run();
