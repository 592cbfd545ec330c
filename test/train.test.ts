// The training script end to end on Fashion-MNIST, tiny: resume gives bit-identical weights, kill -9 in the
// middle of a run loses at most the steps since the last checkpoint, and a diverging loss stops the run with a
// clear message while the last good checkpoint stays loadable.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node:child_process';
import { train, TRAIN_DEFAULTS, DEFAULT_BASE_LR, type TrainOptions } from '../byol/train.ts';
import { parseTrainArgs } from '../byol/cli.ts';
import { loadLatestCheckpoint, saveCheckpoint } from '../nn/checkpoint-node.ts';
import { parseSafetensors } from '../engine/safetensors.ts';
import { liveTensors, sync } from '../nn/index.ts';

const t = suite('train');
const haveData = existsSync('/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz');
const quiet = () => {};

function tiny(out: string, extra: Partial<TrainOptions> = {}): TrainOptions {
  return {
    ...TRAIN_DEFAULTS,
    out, width: 4, batchSize: 32, projHidden: 32, projDim: 16, predHidden: 32, epochs: 1,
    maxSteps: 6, checkpointEvery: 3, logEvery: 3, evaluate: 'none', quiet: true, ...extra,
  };
}

async function weights(dir: string): Promise<Map<string, Float32Array>> {
  const ck = await loadLatestCheckpoint(join(dir, 'checkpoints'));
  return new Map([...ck.tensors].map(([n, e]) => [n, e.data]));
}

function sameWeights(a: Map<string, Float32Array>, b: Map<string, Float32Array>): void {
  assert.equal([...a.keys()].sort(), [...b.keys()].sort());
  for (const [n, x] of a) {
    const y = b.get(n)!;
    let diff = 0;
    for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) diff++;
    assert.is(diff, 0, `${n}: ${diff} of ${x.length} values differ`);
  }
}

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'byol-train-'));
  dirs.push(d);
  return d;
};
t.after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

t('CLI flags: defaults, the model and augmentation flags, and bad values named', () => {
  const d = parseTrainArgs([]);
  assert.equal([d.width, d.headChannels, d.cropScale, d.solarize], [TRAIN_DEFAULTS.width, TRAIN_DEFAULTS.headChannels, TRAIN_DEFAULTS.cropScale, TRAIN_DEFAULTS.solarize]);
  const o = parseTrainArgs(['--head-channels', '0', '--crop-scale', '0.08,1', '--solarize', '0.2', '--width', '8']);
  assert.equal([o.headChannels, o.cropScale, o.solarize, o.width], [0, [0.08, 1], 0.2, 8]);
  assert.is(parseTrainArgs(['--head-channels', '256']).headChannels, 256);
  assert.throws(() => parseTrainArgs(['--head-channels=-4']), /--head-channels: expected an integer >= 0, got '-4'/);
  assert.throws(() => parseTrainArgs(['--crop-scale', '0.5']), /--crop-scale: expected LO,HI .* got '0.5'/);
  assert.throws(() => parseTrainArgs(['--crop-scale', '0.9,0.2']), /--crop-scale/);
  assert.throws(() => parseTrainArgs(['--crop-scale', '0,1']), /--crop-scale/);
  assert.throws(() => parseTrainArgs(['--solarize', '1.5']), /--solarize: expected a probability in \[0, 1\], got '1.5'/);
  assert.throws(() => parseTrainArgs(['--solarise', '0']), /solarise/);
});

t('CLI flags: --warmup, and a default learning rate per optimizer', () => {
  const d = parseTrainArgs([]);
  assert.equal([d.optimizer, d.baseLr, d.warmup], ['adam', 0.012, 0.1], 'Adam keeps 3e-3 at batch 64 and 10% warm-up');
  assert.is(parseTrainArgs(['--warmup', '0.3']).warmup, 0.3);
  assert.is(parseTrainArgs(['--warmup', '0']).warmup, 0);
  for (const bad of ['1', '1.5', '-0.1', 'x', '']) {
    assert.throws(() => parseTrainArgs(['--warmup', bad]), (e: Error) => e.message === `--warmup: expected a fraction of the steps with 0 <= F < 1, got '${bad}'`, bad);
  }
  assert.ok(DEFAULT_BASE_LR.lars !== DEFAULT_BASE_LR.adam);
  assert.is(parseTrainArgs(['--optimizer', 'lars']).baseLr, DEFAULT_BASE_LR.lars);
  assert.is(parseTrainArgs(['--optimizer', 'lars', '--lr', '1.5']).baseLr, 1.5);
  assert.is(parseTrainArgs(['--optimizer', 'sgd']).baseLr, 0.012);
  assert.is(parseTrainArgs(['--optimizer', 'adam', '--lr', '0.02']).baseLr, 0.02);
});

t('--warmup and the LARS default rate reach the schedule; a checkpoint from before --warmup resumes only at 0.1', async () => {
  if (!haveData) return console.log('  (skipped: Fashion-MNIST is not installed)');
  const bad = join(tmp(), 'never');
  let err: Error | null = null;
  try {
    await train(tiny(bad, { warmup: 1 }), quiet);
  } catch (e) {
    err = e as Error;
  }
  assert.match(err?.message ?? '', /warmup must be a fraction of the steps in \[0, 1\), got 1/);
  assert.not.ok(existsSync(bad), 'a refused run writes nothing');

  const dir = tmp();
  // tiny(): batch 32, one epoch of 60000 images = 1875 steps; no baseLr, so the optimizer's default
  await train(tiny(dir, { optimizer: 'lars', warmup: 0.5, maxSteps: 3, logEvery: 1 }), quiet);
  const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
  assert.equal([cfg.baseLr, cfg.warmup, cfg.warmupSteps], [DEFAULT_BASE_LR.lars, 0.5, 938]);
  const lines = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(lines.map((l) => l.step), [0, 1, 2]);
  for (const l of lines) {
    const want = ((DEFAULT_BASE_LR.lars * 32) / 256) * (l.step / 938);
    assert.ok(Math.abs(l.lr - want) <= 1e-12, `lr at step ${l.step}: ${l.lr}, expected ${want}`);
  }

  // a checkpoint whose identity has no warmup was made with 0.1: another value is refused, naming both
  const ck = await loadLatestCheckpoint(join(dir, 'checkpoints'));
  const { warmup, ...older } = (ck.meta as { identity: Record<string, unknown> }).identity;
  assert.is(warmup, 0.5);
  await saveCheckpoint(join(dir, 'checkpoints'), ck.step, { tensors: ck.tensors, meta: { identity: older } });
  err = null;
  try {
    await train(tiny(dir, { optimizer: 'lars', warmup: 0.5, resume: true, maxSteps: 4 }), quiet);
  } catch (e) {
    err = e as Error;
  }
  assert.match(err?.message ?? '', /different warmup \(0\.1 vs 0\.5\)/);
});

t('a run stopped after a checkpoint and resumed gives bit-identical weights, and leaks nothing', async () => {
  if (!haveData) return console.log('  (skipped: Fashion-MNIST is not installed; run bash engine/setup.sh --data)');
  await sync();
  const before = liveTensors();
  const full = tmp();
  await train(tiny(full), quiet);
  const part = tmp();
  await train(tiny(part, { maxSteps: 3 }), quiet);
  const r = await train(tiny(part, { resume: true }), quiet);
  assert.is(r.steps, 6);
  sameWeights(await weights(full), await weights(part));
  await sync();
  assert.is(liveTensors(), before, 'the run released every buffer it made');
});

t('kill -9 during training, then --resume: the run completes from the last checkpoint', async () => {
  if (!haveData) return console.log('  (skipped: Fashion-MNIST is not installed)');
  const dir = tmp();
  const args = ['tsx', 'byol/cli.ts', 'train', '--out', dir, '--width', '4', '--batch', '32', '--proj-hidden', '32', '--proj-dim', '16',
    '--pred-hidden', '32', '--epochs', '1', '--max-steps', '60', '--checkpoint-every', '3', '--log-every', '3', '--no-eval'];
  const child = spawn('npx', args, { stdio: 'ignore', detached: true });
  // wait for a second checkpoint, then kill the whole process group without warning
  const ckdir = join(dir, 'checkpoints');
  const t0 = Date.now();
  while (Date.now() - t0 < 240_000) {
    if (existsSync(ckdir) && readdirSync(ckdir).filter((f) => f.endsWith('.safetensors')).length >= 2) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  process.kill(-child.pid!, 'SIGKILL');
  await new Promise((r) => child.once('exit', r));
  const ck = await loadLatestCheckpoint(ckdir);
  assert.ok(ck.step >= 6 && ck.step % 3 === 0, `a complete checkpoint survives (step ${ck.step})`);
  const r = await train(tiny(dir, { maxSteps: ck.step + 3, resume: true }), quiet);
  assert.is(r.steps, ck.step + 3);
});

t('--head-channels: the run trains a wider representation and exports conv_head / bn_head', async () => {
  if (!haveData) return console.log('  (skipped: Fashion-MNIST is not installed)');
  const dir = tmp();
  const r = await train(tiny(dir, { maxSteps: 2, headChannels: 24, cropScale: [0.6, 1], solarize: 0 }), quiet);
  assert.equal([r.feature_dim, r.head_channels, r.crop_scale, r.solarize], [24, 24, [0.6, 1], 0]);
  const enc = parseSafetensors(readFileSync(join(dir, 'encoder.safetensors')));
  assert.equal(enc.get('conv_head.weight')!.shape, [24, 32, 1, 1]);
  assert.equal(enc.get('bn_head.running_var')!.shape, [24]);
});

t('a diverging loss stops the run naming the step; the last good checkpoint stays', async () => {
  if (!haveData) return console.log('  (skipped: Fashion-MNIST is not installed)');
  const dir = tmp();
  await train(tiny(dir, { maxSteps: 3 }), quiet);
  let err: Error | null = null;
  try {
    // the same run resumed with an absurd learning rate is refused: the identity check protects checkpoints
    await train(tiny(dir, { resume: true, baseLr: 1e30 }), quiet);
  } catch (e) {
    err = e as Error;
  }
  assert.match(err?.message ?? '', /different baseLr/);
  for (const [extra, want] of [[{ headChannels: 8 }, /different headChannels \(0 vs 8\)/], [{ cropScale: [0.5, 1] as [number, number] }, /different cropScale/]] as const) {
    err = null;
    try {
      await train(tiny(dir, { resume: true, ...extra }), quiet);
    } catch (e) {
      err = e as Error;
    }
    assert.match(err?.message ?? '', want);
  }
  // a checkpoint whose identity lacks a key cannot show it was made with the same value: refused, naming the key
  const prior = await loadLatestCheckpoint(join(dir, 'checkpoints'));
  const { solarize, ...older } = (prior.meta as { identity: Record<string, unknown> }).identity;
  assert.is(solarize, 0.2);
  await saveCheckpoint(join(dir, 'checkpoints'), prior.step, { tensors: prior.tensors, meta: { identity: older } });
  err = null;
  try {
    await train(tiny(dir, { resume: true, maxSteps: prior.step + 1 }), quiet);
  } catch (e) {
    err = e as Error;
  }
  assert.match(err?.message ?? '', /does not record solarize/);
  const wild = tmp();
  try {
    await train(tiny(wild, { baseLr: 1e30, optimizer: 'sgd', checkpointEvery: 1, logEvery: 1 }), quiet);
    err = null;
  } catch (e) {
    err = e as Error;
  }
  assert.ok(err, 'training with lr 1e30 must stop');
  assert.match(err!.message, /(loss|weights) became .*at step \d+/);
  const ck = await loadLatestCheckpoint(join(wild, 'checkpoints'));
  for (const [n, e] of ck.tensors) assert.ok(e.data.every(Number.isFinite), `${n} in the kept checkpoint is finite`);
});

t.run();
