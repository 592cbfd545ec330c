import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { liveTensors, sync } from '../nn/index.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { tuneConv, clearConvTuneMemo, candidatesFor, convTuningName, choosePrologue, SWITCH_MARGIN, type ConvTuneLayer } from '../kernels/conv2d-tune.ts';
import { convTuning, defaultConvTuning, convSubgroupWidth, bnPrologueDefault, tiledEpilogueFits, DEFAULT_TILED_TILES } from '../kernels/conv2d.ts';

const t = suite('conv2d-tune');
const dir = mkdtempSync(join(tmpdir(), 'byol-conv-tune-'));
const cacheFile = join(dir, 'conv2d-tune.json');
// small layers keep the test short; the real ones are DEFAULT_TUNE_LAYERS
const layers: ConvTuneLayer[] = [[2, 10, 16, 16], [2, 9, 8, 4]];

t.before(() => clearConvTuneMemo());
t.after(() => {
  setDeviceTuning('conv2d', defaultConvTuning());
  clearConvTuneMemo();
  rmSync(dir, { recursive: true, force: true });
});

t('the candidates: the default first, every variant this adapter can run, the tiled kernel among them', () => {
  const c = candidatesFor();
  assert.is(convTuningName(c[0]), convTuningName(defaultConvTuning()));
  const variants = new Set(c.map((x) => x.variant));
  assert.ok(variants.has('tiled') && variants.has('portable'));
  assert.is(variants.has('subgroups'), convSubgroupWidth() > 0);
  assert.is(new Set(c.map(convTuningName)).size, c.length, 'no candidate twice');
  if (tiledEpilogueFits(DEFAULT_TILED_TILES)) {
    for (const x of c) if (x.variant === 'tiled') assert.ok(tiledEpilogueFits(x.tiled), `${convTuningName(x)} keeps the moments and dx sums`);
  }
});

t('measures, keeps the default unless a candidate beats it on every layer, installs the choice', async () => {
  const before = liveTensors();
  const candidates = [defaultConvTuning(), { ...defaultConvTuning(), variant: 'tiled' as const, tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } }];
  // a budget no compile on a loaded machine reaches, so that both candidates are timed
  const r = await tuneConv({ cacheFile, layers, candidates, budgetMs: 1e7 });
  assert.is(r.source, 'measured');
  assert.is(r.timings.length, 2);
  assert.ok(r.timings.every((x) => x.ms.length === layers.length && x.ms.every(Number.isFinite)), 'both timed on both layers');
  const [def, other] = r.timings.map((x) => x.ms);
  const beats = other.every((v, i) => v <= def[i] * SWITCH_MARGIN);
  // a tiled choice also carries its measured prologue setting
  assert.is(convTuningName({ ...r.choice, bnPrologue: undefined }), convTuningName(candidates[beats ? 1 : 0]));
  assert.is(!!r.prologue, beats, 'the prologue is measured where the tiled kernel is chosen');
  assert.is(convTuningName(convTuning()), r.name, 'installed as the device record');
  assert.is(existsSync(cacheFile), false, 'explicit candidates are not cached');
  await sync();
  assert.is(liveTensors(), before, 'tuning frees its tensors');
});

t('choosePrologue keeps the default unless the other setting wins by the margin on every layer', () => {
  const fast = 100 * SWITCH_MARGIN - 1;
  assert.is(choosePrologue(true, { on: [100, 100], off: [fast, fast] }), false, 'off wins everywhere');
  assert.is(choosePrologue(true, { on: [100, 100], off: [fast, 100] }), true, 'off wins on one layer only');
  assert.is(choosePrologue(true, { on: [100, 100], off: [99, 99] }), true, 'off wins by less than the margin');
  assert.is(choosePrologue(false, { on: [fast, fast], off: [100, 100] }), true, 'on wins everywhere');
  assert.is(choosePrologue(false, { on: [fast, 101], off: [100, 100] }), false);
});

t('a tiled choice measures batchNorm -> conv with the prologue on and off and keeps the pick in the record', async () => {
  const before = liveTensors();
  const tiled = { ...defaultConvTuning(), variant: 'tiled' as const, tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } };
  const r = await tuneConv({ cacheFile, layers, candidates: [tiled], budgetMs: 1e7 });
  assert.ok(r.prologue, 'measured');
  for (const ms of [r.prologue!.on, r.prologue!.off]) assert.ok(ms.length === layers.length && ms.every((v) => Number.isFinite(v) && v > 0), JSON.stringify(r.prologue));
  assert.is(r.choice.bnPrologue, choosePrologue(bnPrologueDefault(), r.prologue!));
  assert.ok(r.name.endsWith(r.choice.bnPrologue ? '+bn-prologue' : '-bn-prologue'), r.name);
  assert.is(convTuning().bnPrologue, r.choice.bnPrologue, 'installed');
  await sync();
  assert.is(liveTensors(), before, 'the measurement frees its tensors and gradients');
});

t('apply: false reports without installing; the choice is cached per adapter on disk and in memory', async () => {
  setDeviceTuning('conv2d', defaultConvTuning());
  const portable = { ...defaultConvTuning(), variant: 'portable' as const };
  // a budget that reaches nothing but the default: the default, written to the cache under this adapter's key
  const r1 = await tuneConv({ cacheFile, force: true, budgetMs: 0, apply: false });
  assert.is(r1.name, convTuningName(defaultConvTuning()), 'nothing timed but the default: the default');
  assert.is(convTuningName(convTuning()), convTuningName(defaultConvTuning()), 'apply: false leaves the record');
  const k = Object.keys(JSON.parse(readFileSync(cacheFile, 'utf8')))[0];
  const fake: Record<string, unknown> = {};
  fake[k] = { name: convTuningName(portable), choice: portable, ms: [1], date: 'then' };
  writeFileSync(cacheFile, JSON.stringify(fake));
  clearConvTuneMemo();
  const r2 = await tuneConv({ cacheFile });
  assert.is(r2.source, 'cache');
  assert.is(convTuning().variant, 'portable');
  const r3 = await tuneConv({ cacheFile });
  assert.is(r3.source, 'memory');
});

t.run();
