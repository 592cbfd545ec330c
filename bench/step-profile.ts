// Where a BYOL training step's time goes: records every dispatch of one step (bench/cases/byol-step.ts's shape),
// then replays each alone (repeats in one submit, one wait) and sums the time per kernel name. Replayed
// dispatches read whatever the pooled buffers hold by then, so this is for timing only.
// Usage: tsx bench/step-profile.ts [repeats]   (BY_SHAPE=1: convolutions also by dispatch size, i.e. by layer)

import { getDevice, releaseDevice, tensor, sync, recordDispatches, gpu } from '../nn/index.ts';
import { randomData } from './case.ts';
import { TRAIN_STEP_SHAPE as s, byolForStep } from './cases/byol-step.ts';

const repeats = Number(process.argv[2] ?? 3);
const ctx = await getDevice();
console.log(`device: ${ctx.info.description}`);
const shape = [s.batch, s.size, s.size, s.channels];
const n = shape.reduce((a, b) => a * b, 1);
const v1 = tensor(randomData(n, 1), shape);
const v2 = tensor(randomData(n, 2), shape);
const model = byolForStep(s);
model.trainStep(v1, v2).loss.dispose(); // compiles everything
await sync();
let t0 = performance.now();
model.trainStep(v1, v2).loss.dispose();
await sync();
const stepMs = performance.now() - t0;
recordDispatches(true);
model.trainStep(v1, v2).loss.dispose();
await sync();
const log = recordDispatches(false);

const { device } = gpu('profile');
const byName = new Map<string, { ms: number; count: number }>();
for (const d of log) {
  const enc = device.createCommandEncoder();
  const pass = enc.beginComputePass();
  pass.setPipeline(d.pipeline);
  pass.setBindGroup(0, d.bindGroup);
  for (let i = 0; i < repeats; i++) pass.dispatchWorkgroups(...d.workgroups);
  pass.end();
  t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await device.queue.onSubmittedWorkDone();
  const ms = (performance.now() - t0) / repeats;
  // convolutions per dispatch size too: the layers differ by orders of magnitude
  const key = d.name.startsWith('conv2d') && process.env.BY_SHAPE ? `${d.name} ${d.workgroups[0]}x${d.workgroups[1]}` : d.name;
  const e = byName.get(key) ?? { ms: 0, count: 0 };
  e.ms += ms;
  e.count++;
  byName.set(key, e);
}
const total = [...byName.values()].reduce((a, e) => a + e.ms, 0);
console.log(`step ${stepMs.toFixed(0)} ms (${((s.batch * 1000) / stepMs).toFixed(1)} img/s); ${log.length} dispatches, replayed one by one: ${total.toFixed(0)} ms`);
for (const [name, e] of [...byName].sort((a, b) => b[1].ms - a[1].ms)) {
  console.log(`${name.padEnd(28)} ${e.ms.toFixed(1).padStart(8)} ms ${((100 * e.ms) / total).toFixed(1).padStart(5)}%  (${e.count} dispatches)`);
}
model.dispose();
v1.dispose();
v2.dispose();
releaseDevice();
