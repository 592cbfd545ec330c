// Quick timing of batchNorm (training, forward and forward + backward) on an NHWC activation, reported as GB/s of
// the minimum traffic each pass needs. Not a test; a shared CPU "GPU" makes the numbers noisy.
// Usage: npx tsx bench/bn-quick.ts [N H W C] [--groups G] [--reduce 'JSON list of ReduceTuning overrides']
//   (default 32 32 32 64, 1 group). --reduce times training forward + backward with the ReLU under each of the
//   sums' settings, samples interleaved, and prints each one's median against the first's, e.g.
//   npx tsx bench/bn-quick.ts 128 28 28 16 --groups 2 --reduce '[{}, {"workgroupSize":64,"tree":"subgroup"}]'

import { getDevice, releaseDevice, tensor, tidy, backward, noGrad, sync, recorderStats, clearTape, type Tensor } from '../nn/index.ts';
import { ew } from '../kernels/elementwise.ts';
import { batchNorm, ref } from '../kernels/batchnorm.ts';
import type { ReduceTuning } from '../kernels/reduce.ts';
import { randArr, rng, relErr } from '../test/helpers/gradcheck.ts';
import { localSide, measureInterleaved } from './harness.ts';

const argv = process.argv.slice(2);
const flag = (name: string) => (argv.includes(name) ? argv[argv.indexOf(name) + 1] : undefined);
const dims = argv.filter((a, i) => /^\d+$/.test(a) && argv[i - 1] !== '--groups');
const shape = dims.length >= 4 ? dims.slice(0, 4).map(Number) : [32, 32, 32, 64];
const groups = Number(flag('--groups') ?? 1);
const reduceList: Partial<ReduceTuning>[] | null = flag('--reduce') ? JSON.parse(flag('--reduce')!) : null;
const C = shape[3];
const N = shape.reduce((a, b) => a * b, 1);
const ctx = await getDevice();
console.log(`device: ${ctx.info.description || ctx.info.vendor}; x ${JSON.stringify(shape)} (${(N * 4 / 2 ** 20).toFixed(1)} MiB)`);

const r = rng(1);
const xa = randArr(shape, r);
const ga = randArr([C], r, 0.5, 1.5);
const ba = randArr([C], r);
const x = tensor(Float32Array.from(xa.data), shape, { requiresGrad: true });
const gamma = tensor(Float32Array.from(ga.data), [C], { requiresGrad: true });
const beta = tensor(Float32Array.from(ba.data), [C], { requiresGrad: true });
const runningMean = tensor(new Float32Array(C), [C]);
const runningVar = tensor(new Float32Array(C).fill(1), [C]);
const dy = tensor(Float32Array.from(randArr(shape, r).data), shape);

function dropGrads(): void {
  for (const t of [x, gamma, beta]) {
    t.grad?.dispose();
    t.grad = null;
  }
}

function step(relu: boolean, withBackward: boolean, tuning?: Partial<ReduceTuning>): void {
  const run = () => batchNorm(x, gamma, beta, { runningMean, runningVar }, { training: true, relu, groups, tuning });
  // forward alone under noGrad: a recorded tape that is never consumed would keep every step's tensors alive
  if (withBackward) tidy(() => backward(run(), dy));
  else tidy(() => noGrad(run));
  dropGrads();
}

// check before timing: the forward against the float64 reference
{
  const y = tidy(() => batchNorm(x, gamma, beta, null, { training: true, relu: true }));
  const err = relErr(await y.toArray() as Float32Array, ref.batchNorm(xa, ga, ba, { training: true, relu: true }).data);
  console.log(`forward vs float64 reference: normalized error ${err.toExponential(2)}`);
  y.dispose();
  clearTape();
}

/** Median ms per op (bench/harness.ts: 5 samples of >= 300 ms) and dispatches per op after the warm-up call. */
async function time(op: () => void): Promise<{ ms: number; dispatches: number }> {
  let calls = 0;
  let dispatches = 0;
  const counted = () => {
    const d0 = recorderStats().dispatches;
    op();
    if (calls++ > 0) dispatches += recorderStats().dispatches - d0;
  };
  const [t] = await measureInterleaved([localSide(counted, sync)], { targetMs: 300, samples: 5, minSamples: 5 });
  return { ms: t.medianMs, dispatches: dispatches / (calls - 1) };
}

if (reduceList) {
  const sides = reduceList.map((tuning) => localSide(() => step(true, true, tuning), sync));
  const ts = await measureInterleaved(sides, { targetMs: 300, samples: 10, minSamples: 10 });
  console.log(`forward+backward relu=yes, ${groups} group(s), by the sums' setting (median ms; ratio of medians to the first):`);
  reduceList.forEach((tuning, i) => console.log(`  ${JSON.stringify(tuning)}: ${ts[i].medianMs.toFixed(2)} ms (${(ts[i].medianMs / ts[0].medianMs).toFixed(3)})`));
}

// what this machine's elementwise kernels reach on the same size: a copy (read x, write y)
{
  const { ms } = await time(() => ew('copy', 'a', [x], shape).dispose());
  console.log(`elementwise copy (baseline)  : ${ms.toFixed(2)} ms, ${(8 * N / ms / 1e6).toFixed(2)} GB/s`);
}

// minimum traffic in units of the activation size: stats read x; normalize reads x, writes y; the backward
// reduction reads x, dy (and y for the ReLU mask); the dx pass reads the same and writes dx
for (const relu of [false, true]) {
  const fwd = 3;
  const bwd = relu ? 7 : 5;
  for (const withBackward of [false, true]) {
    const { ms, dispatches } = await time(() => step(relu, withBackward));
    const bytes = (withBackward ? fwd + bwd : fwd) * N * 4;
    console.log(`${withBackward ? 'forward+backward' : 'forward         '} relu=${relu ? 'yes' : 'no '}: ${ms.toFixed(2)} ms, ` +
      `${(bytes / ms / 1e6).toFixed(2)} GB/s (${(bytes / 2 ** 20).toFixed(0)} MiB moved, ${dispatches} dispatches)`);
  }
}

for (const t of [x, gamma, beta, runningMean, runningVar, dy] as Tensor[]) t.dispose();
await sync();
releaseDevice();
