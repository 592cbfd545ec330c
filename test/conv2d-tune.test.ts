import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { liveTensors, sync } from '../nn/index.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { tuneConv, clearConvTuneMemo, candidatesFor, convTuningName, SWITCH_MARGIN, type ConvTuneLayer } from '../kernels/conv2d-tune.ts';
import { convTuning, defaultConvTuning, convSubgroupWidth } from '../kernels/conv2d.ts';

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
  assert.is(r.name, convTuningName(candidates[beats ? 1 : 0]));
  assert.is(convTuningName(convTuning()), r.name, 'installed as the device record');
  assert.is(existsSync(cacheFile), false, 'explicit candidates are not cached');
  await sync();
  assert.is(liveTensors(), before, 'tuning frees its tensors');
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
