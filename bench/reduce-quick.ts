// Quick timing of the reduction paths of the 'reduce' record (kernels/reduce.ts): each tree at each workgroup
// size on row sums (short, medium and long rows; the default record's longRow 0 takes one invocation per row), a
// full sum, the LARS norms of a 4M-float arena, cosineLoss and long-row softmax, beside the device's default
// record in the same run. Each result is checked against the default's first. Timing by
// bench/harness.ts: the paths of one op sampled in turn (5 samples of >= 200 ms each, median per op). Not a test;
// on a shared CPU "GPU" the numbers are noisy.
// Usage: npx tsx bench/reduce-quick.ts [workgroup sizes, e.g. 64,256]

import { getDevice, releaseDevice, tensor, sync, sum, softmax, cosineLoss, type Tensor } from '../nn/index.ts';
import { Arena } from '../engine/arena.ts';
import { segmentStats } from '../kernels/optim.ts';
import { defaultReduceTuning, type ReduceTuning } from '../kernels/reduce.ts';
import { randArr, rng, relErr } from '../test/helpers/gradcheck.ts';
import { localSide, measureInterleaved } from './harness.ts';

const sizes = (process.argv[2] ?? '64,128,256').split(',').map(Number);
const ctx = await getDevice();
const info: any = (ctx.adapter as any).info ?? {};
const base = defaultReduceTuning();
console.log(`device: ${ctx.info.description || ctx.info.vendor}; subgroups ${ctx.hasSubgroups ? `${info.subgroupMinSize}..${info.subgroupMaxSize}` : 'none'}; default ${JSON.stringify(base)}`);

const paths: [string, ReduceTuning][] = [['default', base]];
for (const tree of ctx.hasSubgroups ? (['shared', 'subgroup'] as const) : (['shared'] as const)) {
  for (const workgroupSize of sizes) paths.push([`${tree} ${workgroupSize}`, { workgroupSize, tree, longRow: 1 }]);
}

const r = rng(1);
const up = (shape: number[]) => tensor(Float32Array.from(randArr(shape, r).data), shape);
const rows = up([4096, 1024]);
const shortRows = up([60000, 128]); // the kNN's train-row norms
const longRows = up([16, 500000]);
const flat = up([1 << 22]);
const p = up([512, 256]);
const z = up([512, 256]);
const logits = up([256, 1000]);
const arena = new Arena([{ name: 'w', shape: [2048, 2048], kind: 'weight' }, { name: 'b', shape: [2048], kind: 'bias' }], 'bench');
arena.write(Float32Array.from(randArr([arena.numel], r).data));

const ops: [string, number, (t: ReduceTuning) => Tensor][] = [
  ['sum rows [4096, 1024] axis 1', 4096 * 1024 * 4, (t) => sum(rows, 1, false, { tuning: t })],
  ['sum rows [60000, 128] axis 1', 60000 * 128 * 4, (t) => sum(shortRows, 1, false, { tuning: t })],
  ['sum rows [16, 500000] axis 1', 16 * 500000 * 4, (t) => sum(longRows, 1, false, { tuning: t })],
  ['sum all [4M]', (1 << 22) * 4, (t) => sum(flat, undefined, false, { tuning: t })],
  ['LARS norms, 4.2M floats', 2 * arena.numel * 4, (t) => segmentStats(arena, arena.data, arena.grad, 1e-4, 1e-3, { tuning: t })],
  ['cosineLoss [512, 256]', 2 * 512 * 256 * 4, (t) => cosineLoss(p, z, { tuning: t })],
  ['softmax [256, 1000]', 2 * 256 * 1000 * 4, (t) => softmax(logits, { tuning: t })],
];

console.log('| op | path | ms | GB/s | error vs default |');
console.log('|---|---|---|---|---|');
for (const [name, bytes, run] of ops) {
  const want = run(base);
  const ref = (await want.toArray()) as Float32Array;
  want.dispose();
  const errs: number[] = [];
  for (const [, t] of paths) {
    const got = run(t);
    errs.push(relErr((await got.toArray()) as Float32Array, ref));
    got.dispose();
  }
  // the paths' samples interleaved, so that other load on the machine hits them alike
  const timings = await measureInterleaved(paths.map(([, t]) => localSide(() => run(t).dispose(), sync)), { targetMs: 200, samples: 5, minSamples: 5 });
  paths.forEach(([label], i) => {
    const ms = timings[i].medianMs;
    console.log(`| ${name} | ${label} | ${ms.toFixed(3)} | ${(bytes / ms / 1e6).toFixed(2)} | ${errs[i].toExponential(1)} |`);
  });
}

for (const v of [rows, shortRows, longRows, flat, p, z, logits]) v.dispose();
arena.dispose();
releaseDevice();
