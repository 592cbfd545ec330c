import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, readFileSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { tensor, matmul, liveTensors, sync } from '../nn/index.ts';
import { tuneMatmul, clearTuneMemo, candidatesFor, SWITCH_MARGIN } from '../kernels/matmul-tune.ts';
import { matmulTuning, tileName, defaultTile, DEFAULT_TILE, MATMUL_TUNING, type MatmulTuning } from '../kernels/matmul.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { rng, relErr } from './helpers/gradcheck.ts';

const t = suite('tune');
const dir = mkdtempSync(join(tmpdir(), 'byol-tune-'));
const cacheFile = join(dir, 'tune.json');
let saved: MatmulTuning; // the tuner writes this device's record: restored after the suite

t.before(() => {
  saved = matmulTuning();
  clearTuneMemo();
});
t.after(() => {
  setDeviceTuning(MATMUL_TUNING, saved);
  clearTuneMemo();
  rmSync(dir, { recursive: true, force: true });
});

t('measures once, sets the fastest candidate, caches it in memory and on disk', async () => {
  const before = liveTensors();
  const r = await tuneMatmul({ cacheFile, size: 128 });
  assert.is(r.source, 'measured');
  assert.equal(matmulTuning().tile, r.choice.tile);
  const finite = r.timings.filter((x) => Number.isFinite(x.ms));
  assert.ok(finite.length >= 1, 'at least one candidate timed');
  const fastest = Math.min(...finite.map((x) => x.ms));
  const chosen = r.timings.find((x) => x.name === r.choice.name)!.ms;
  // the fastest, or the default when nothing beats it by more than the switch margin
  assert.ok(chosen === fastest || (r.choice.name === tileName(defaultTile()) && fastest > chosen * SWITCH_MARGIN), `chose ${r.choice.name} (${chosen} ms), fastest ${fastest} ms`);
  const onDisk = JSON.parse(readFileSync(cacheFile, 'utf8'));
  assert.equal(Object.values(onDisk).map((e: any) => tileName(e.tile)), [r.choice.name]);
  const again = await tuneMatmul({ cacheFile });
  assert.is(again.source, 'memory');
  await sync();
  assert.is(liveTensors(), before, 'tuning frees its tensors');
});

t('a later process reads the cached choice instead of measuring', async () => {
  clearTuneMemo();
  setDeviceTuning(MATMUL_TUNING, { ...matmulTuning(), tile: DEFAULT_TILE });
  const onDisk = JSON.parse(readFileSync(cacheFile, 'utf8'));
  const key = Object.keys(onDisk)[0];
  const other = candidatesFor().find((c) => tileName(c) !== tileName(onDisk[key].tile))!;
  onDisk[key].tile = other; // pretend an earlier run chose another candidate
  writeFileSync(cacheFile, JSON.stringify(onDisk));
  const r = await tuneMatmul({ cacheFile });
  assert.is(r.source, 'cache');
  assert.is(tileName(matmulTuning().tile), tileName(other));
});

t('explicit candidates are measured and not cached', async () => {
  const cachedBefore = readFileSync(cacheFile, 'utf8');
  const r = await tuneMatmul({ cacheFile, size: 64, candidates: [DEFAULT_TILE] });
  assert.is(r.source, 'measured');
  assert.is(r.choice.name, tileName(DEFAULT_TILE));
  assert.is(readFileSync(cacheFile, 'utf8'), cachedBefore, 'the cache file is untouched');
});

t('every candidate gives the same product up to rounding', async () => {
  const r = rng(7);
  const [M, K, N] = [37, 52, 45];
  const ad = Float32Array.from({ length: M * K }, () => r() - 0.5);
  const bd = Float32Array.from({ length: K * N }, () => r() - 0.5);
  const a = tensor(ad, [M, K]);
  const b = tensor(bd, [K, N]);
  let first: Float32Array | null = null;
  for (const tile of candidatesFor()) {
    const c = matmul(a, b, false, false, { tuning: { tile } });
    const got = (await c.toArray()) as Float32Array;
    c.dispose();
    if (!first) first = got;
    else assert.ok(relErr(got, first) < 1e-5, `${tileName(tile)} agrees with ${tileName(candidatesFor()[0])}`);
  }
  a.dispose();
  b.dispose();
});

t.run();
