// The buffer-to-texture copies of one training step (bench/cases/byol-step.ts's shape): conv2d, batchNorm and
// matmul read operands through textures (engine/textures.ts), and every such read first copies the tensor into
// its texture. Counts them by texture kind, counts sources copied more than once in the step (the same buffer
// range and size: a pooled buffer may hold another tensor by then, so this is an upper bound on repeats), and
// replays all of them in one submit to time them. Not a test; the replay's timing is as noisy as the machine.
// Usage: npx tsx bench/step-copies.ts [replays]

import { getDevice, releaseDevice, sync, gpu } from '../nn/index.ts';
import { idleWhile } from '../engine/idle-wait.ts';
import { TRAIN_STEP_SHAPE as s, byolForStep, stepViews } from './cases/byol-step.ts';
import { median } from './harness.ts';

const replays = Number(process.argv[2] ?? 5);
const ctx = await getDevice();
console.log(`device: ${ctx.info.description}; resnet-small w${s.width}, batch ${s.batch}`);
const [v1, v2] = stepViews(s);
const model = byolForStep(s);
model.trainStep(v1, v2).loss.dispose(); // compiles everything
await sync();

type Copy = [GPUTexelCopyBufferInfo, GPUTexelCopyTextureInfo, number[]];
const { device } = gpu('step-copies');
const probe = device.createCommandEncoder();
const proto = Object.getPrototypeOf(probe) as GPUCommandEncoder;
probe.finish();
const copyBufferToTexture = proto.copyBufferToTexture;
const log: Copy[] = [];
proto.copyBufferToTexture = function (this: GPUCommandEncoder, src: GPUTexelCopyBufferInfo, dst: GPUTexelCopyTextureInfo, size: GPUExtent3D) {
  log.push([src, dst, [...(size as number[])]]);
  return copyBufferToTexture.call(this, src, dst, size);
};
try {
  model.trainStep(v1, v2).loss.dispose();
  await sync();
} finally {
  proto.copyBufferToTexture = copyBufferToTexture;
}

const bytesOf = ([src, , size]: Copy) => (src.bytesPerRow ?? 0) * (size[1] ?? 1);
const byKind = new Map<string, { copies: number; bytes: number }>();
const bySource = new Map<string, number>();
const ids = new Map<GPUBuffer, number>();
for (const c of log) {
  const kind = String(c[1].texture.label).replace(/ \[.*/, '');
  const e = byKind.get(kind) ?? { copies: 0, bytes: 0 };
  e.copies++;
  e.bytes += bytesOf(c);
  byKind.set(kind, e);
  if (!ids.has(c[0].buffer)) ids.set(c[0].buffer, ids.size);
  const key = `${ids.get(c[0].buffer)}@${c[0].offset ?? 0}/${bytesOf(c)}`;
  bySource.set(key, (bySource.get(key) ?? 0) + 1);
}
const MiB = (b: number) => (b / 2 ** 20).toFixed(1);
const total = log.reduce((a, c) => a + bytesOf(c), 0);
console.log(`${log.length} buffer-to-texture copies per step, ${MiB(total)} MiB`);
for (const [kind, e] of [...byKind].sort((a, b) => b[1].bytes - a[1].bytes)) console.log(`  ${kind.padEnd(20)} ${String(e.copies).padStart(4)} copies ${MiB(e.bytes).padStart(7)} MiB`);
const repeats = [...bySource.values()].filter((k) => k > 1);
console.log(`sources copied more than once: ${repeats.length} (${repeats.reduce((a, k) => a + k - 1, 0)} extra copies; an upper bound, see above)`);

const times: number[] = [];
for (let r = 0; r < replays; r++) {
  const enc = device.createCommandEncoder();
  for (const [src, dst, size] of log) copyBufferToTexture.call(enc, src, dst, size);
  const t0 = performance.now();
  device.queue.submit([enc.finish()]);
  await idleWhile(device.queue.onSubmittedWorkDone());
  times.push(performance.now() - t0);
}
console.log(`all of them replayed in one submit: ${median(times).toFixed(1)} ms median of ${times.map((t) => t.toFixed(1)).join(', ')}`);
model.dispose();
v1.dispose();
v2.dispose();
releaseDevice();
