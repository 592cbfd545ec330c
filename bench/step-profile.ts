// Where a BYOL training step's time goes: records every dispatch of one step (bench/cases/byol-step.ts's shape),
// then replays each alone (repeats in one submit, one wait) and sums the time per kernel name, and per family
// (conv, batchnorm, elementwise, matmul, optimizer, EMA, ...). Replayed dispatches read whatever the pooled buffers
// hold by then, so this is for timing only; alone, each dispatch also pays the wait for the device, which in the
// step overlaps with the next dispatch's recording.
// Usage: tsx bench/step-profile.ts [repeats] [--old] [--no-moments] [--stem KIND]   (--old: the older width-8 /
//   batch-256 row's shape; --no-moments: the convolutions write no moments for batchNorm, Conv2d.moments off;
//   --stem: the encoder's stem, e.g. small-s2)
//   BY_SHAPE=1: convolutions and batchnorm also by dispatch size, i.e. by layer

import { getDevice, releaseDevice, sync, recordDispatches, recorderStats, gpu } from '../nn/index.ts';
import { TRAIN_STEP_SHAPE, OLD_STEP_SHAPE, byolForStep, stepViews, stepFlops, stepConvs } from './cases/byol-step.ts';
import { median } from './harness.ts';
import { idleWhile } from '../engine/idle-wait.ts';
import type { ResNetStem } from '../byol/resnet.ts';

const argv = process.argv.slice(2);
const stem = argv.includes('--stem') ? (argv[argv.indexOf('--stem') + 1] as ResNetStem) : undefined;
const s = { ...(argv.includes('--old') ? OLD_STEP_SHAPE : TRAIN_STEP_SHAPE), ...(stem ? { stem } : {}) };
const repeats = Number(argv.find((a) => /^\d+$/.test(a)) ?? 3);
const ctx = await getDevice();
console.log(`device: ${ctx.info.description}`);
console.log(`shape: resnet-small w${s.width}${s.stem ? ` (${s.stem} stem)` : ''}, batch ${s.batch}, ${s.size}x${s.size}x${s.channels}, heads ${s.projHidden}/${s.projDim} (pred ${s.predHidden}), Adam`);
const [v1, v2] = stepViews(s);
const model = byolForStep(s);
if (argv.includes('--no-moments')) for (const c of stepConvs(model)) c.moments = false;
model.trainStep(v1, v2).loss.dispose(); // compiles everything
await sync();
const stepTimes: number[] = [];
const recordTimes: number[] = []; // until trainStep returns: the host recording (and submitting) the step
for (let i = 0; i < 3; i++) {
  const t0 = performance.now();
  model.trainStep(v1, v2).loss.dispose();
  recordTimes.push(performance.now() - t0);
  await sync();
  stepTimes.push(performance.now() - t0);
}
const stepMs = median(stepTimes);
const d0 = recorderStats();
recordDispatches(true);
model.trainStep(v1, v2).loss.dispose();
await sync();
const log = recordDispatches(false);
const d1 = recorderStats();

/** The kernel family of a dispatch, from its kernel name. */
function family(name: string): string {
  if (name.startsWith('conv2d')) return 'conv';
  if (name.startsWith('batchNorm')) return 'batchnorm';
  if (name.startsWith('matmul')) return 'matmul (heads)';
  if (name.startsWith('optim') || name.startsWith('arena')) return 'optimizer';
  if (name === 'ema' || name.startsWith('ema.')) return 'EMA';
  if (name.startsWith('cosineLoss')) return 'loss';
  if (name.includes('.reduce.')) return 'reduce (pool, sums)';
  return 'elementwise';
}

const { device } = gpu('profile');
const byName = new Map<string, { ms: number; count: number }>();
const byFamily = new Map<string, { ms: number; count: number }>();
const bySize = new Map<string, { ms: number; count: number }>();
const add = (m: Map<string, { ms: number; count: number }>, k: string, ms: number) => {
  const e = m.get(k) ?? { ms: 0, count: 0 };
  e.ms += ms;
  e.count++;
  m.set(k, e);
};
for (const d of log) {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(d.pipeline);
  pass.setBindGroup(0, d.bindGroup);
  for (let i = 0; i < repeats; i++) pass.dispatchWorkgroups(...d.workgroups);
  pass.end();
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await idleWhile(device.queue.onSubmittedWorkDone()); // asleep, as the engine's sync(): no core taken from lavapipe
  const ms = (performance.now() - t0) / repeats;
  // convolutions and BN per dispatch size too: the layers differ by orders of magnitude
  if (d.name.startsWith('conv2d') || d.name.startsWith('batchNorm')) add(bySize, `${d.name} ${d.workgroups.join('x')}`, ms);
  add(byName, d.name, ms);
  add(byFamily, family(d.name), ms);
}
const total = [...byName.values()].reduce((a, e) => a + e.ms, 0);
const flops = stepFlops(s).perStep;
console.log(`step ${stepMs.toFixed(0)} ms median of ${stepTimes.map((t) => t.toFixed(0)).join(', ')} (${((s.batch * 1000) / stepMs).toFixed(1)} img/s, ` +
  `${(flops / stepMs / 1e6).toFixed(1)} model GFLOPS); ${log.length} dispatches, ${d1.submits - d0.submits} submits, ${d1.readbacks - d0.readbacks} readbacks; ` +
  `replayed one by one: ${total.toFixed(0)} ms`);
console.log(`host: recording the step until trainStep returns ${median(recordTimes).toFixed(1)} ms (median); the device starts on the step at its first submit`);
const line = (name: string, e: { ms: number; count: number }) =>
  `${name.padEnd(40)} ${e.ms.toFixed(1).padStart(8)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}%  ${String(e.count).padStart(5)} dispatches  ${(e.ms / e.count).toFixed(2).padStart(7)} ms each`;
console.log('\nby family:');
for (const [name, e] of [...byFamily].sort((a, b) => b[1].ms - a[1].ms)) console.log(line(name, e));
console.log('\nby kernel:');
for (const [name, e] of [...byName].sort((a, b) => b[1].ms - a[1].ms)) console.log(line(name, e));
if (process.env.BY_SHAPE) {
  console.log('\nconv and batchnorm by dispatch size (workgroups):');
  for (const [name, e] of [...bySize].sort((a, b) => b[1].ms - a[1].ms)) console.log(line(name, e));
}
model.dispose();
v1.dispose();
v2.dispose();
releaseDevice();
