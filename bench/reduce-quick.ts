// Quick timing of the reduction paths of the 'reduce' record (kernels/reduce.ts): each tree at each workgroup
// size on row sums, a full sum, the LARS norms of a 4M-float arena, cosineLoss and long-row softmax, beside the
// device's default record in the same run. Each result is checked against the default's first. Not a test; on a
// shared CPU "GPU" the numbers are noisy.
// Usage: npx tsx bench/reduce-quick.ts [workgroup sizes, e.g. 64,256]

import { getDevice, releaseDevice, tensor, sync, sum, softmax, cosineLoss, type Tensor } from '../nn/index.ts';
import { Arena } from '../engine/arena.ts';
import { segmentStats } from '../kernels/optim.ts';
import { defaultReduceTuning, type ReduceTuning } from '../kernels/reduce.ts';
import { randArr, rng, relErr } from '../test/helpers/gradcheck.ts';

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
const flat = up([1 << 22]);
const p = up([512, 256]);
const z = up([512, 256]);
const logits = up([256, 1000]);
const arena = new Arena([{ name: 'w', shape: [2048, 2048], kind: 'weight' }, { name: 'b', shape: [2048], kind: 'bias' }], 'bench');
arena.write(Float32Array.from(randArr([arena.numel], r).data));

const ops: [string, number, (t: ReduceTuning) => Tensor][] = [
  ['sum rows [4096, 1024] axis 1', 4096 * 1024 * 4, (t) => sum(rows, 1, false, { tuning: t })],
  ['sum all [4M]', (1 << 22) * 4, (t) => sum(flat, undefined, false, { tuning: t })],
  ['LARS norms, 4.2M floats', 2 * arena.numel * 4, (t) => segmentStats(arena, arena.data, arena.grad, 1e-4, 1e-3, { tuning: t })],
  ['cosineLoss [512, 256]', 2 * 512 * 256 * 4, (t) => cosineLoss(p, z, { tuning: t })],
  ['softmax [256, 1000]', 2 * 256 * 1000 * 4, (t) => softmax(logits, { tuning: t })],
];

async function time(op: () => void): Promise<number> {
  op(); // compile and warm up
  await sync();
  let t0 = performance.now();
  op();
  await sync();
  const k = Math.max(1, Math.ceil(200 / (performance.now() - t0)));
  const samples: number[] = [];
  for (let s = 0; s < 5; s++) {
    t0 = performance.now();
    for (let i = 0; i < k; i++) op();
    await sync();
    samples.push((performance.now() - t0) / k);
  }
  samples.sort((a, b) => a - b);
  return samples[2];
}

console.log('| op | path | ms | GB/s | error vs default |');
console.log('|---|---|---|---|---|');
for (const [name, bytes, run] of ops) {
  const want = run(base);
  const ref = (await want.toArray()) as Float32Array;
  want.dispose();
  for (const [label, t] of paths) {
    const got = run(t);
    const err = relErr((await got.toArray()) as Float32Array, ref);
    got.dispose();
    const ms = await time(() => run(t).dispose());
    console.log(`| ${name} | ${label} | ${ms.toFixed(3)} | ${(bytes / ms / 1e6).toFixed(2)} | ${err.toExponential(1)} |`);
  }
}

for (const v of [rows, flat, p, z, logits]) v.dispose();
arena.dispose();
releaseDevice();
