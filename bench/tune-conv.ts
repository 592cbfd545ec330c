// Runs tuneConv() once and prints what it timed and chose, without installing or caching the choice. With
// `--tiled` the only candidate is the tiled kernel at its default tile, so the batchNorm-prologue measurement runs on
// any adapter (on GPUs the tiled kernel is the default anyway; on lavapipe this is how to see the prologue's cost).
// Usage: npx tsx bench/tune-conv.ts [--tiled]

import { getDevice, releaseDevice } from '../nn/index.ts';
import { tuneConv } from '../kernels/conv2d-tune.ts';
import { defaultConvTuning, DEFAULT_TILED_TILES } from '../kernels/conv2d.ts';

const ctx = await getDevice();
const tiled = process.argv.includes('--tiled');
console.log(`device: ${ctx.info.description}`);
const r = await tuneConv({
  apply: false,
  cacheFile: null,
  force: true,
  budgetMs: 1e7,
  ...(tiled ? { candidates: [{ ...defaultConvTuning(), variant: 'tiled' as const, tiled: DEFAULT_TILED_TILES }] } : {}),
});
const fmt = (ms: number[]) => ms.map((v) => (Number.isFinite(v) ? `${v.toFixed(1)} ms` : '-')).join(', ');
for (const t of r.timings) console.log(`${t.name.padEnd(48)} ${fmt(t.ms)}`);
if (r.prologue) {
  console.log(`batchNorm -> conv, prologue on:  ${fmt(r.prologue.on)}`);
  console.log(`batchNorm -> conv, prologue off: ${fmt(r.prologue.off)}`);
  console.log(`on/off per layer: ${r.prologue.on.map((v, i) => (v / r.prologue!.off[i]).toFixed(3)).join(', ')}`);
}
console.log(`choice: ${r.name} (${(r.ms / 1000).toFixed(1)} s)`);
releaseDevice();
