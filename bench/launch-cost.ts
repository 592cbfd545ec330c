// What one launch costs the host in Dawn's Node binding, and how much of it is the bind group.
// 1. device.createBindGroup alone, three storage buffers, as the recorder creates one (inside an error scope) and bare.
// 2. A small elementwise op (add, 256 floats) recorded in a loop with the recorder's bind-group reuse on and off:
//    host time per launch until the recording returns (the device's work is waited for outside the timed part).
// Medians of alternating rounds, so load from other processes falls on both sides.
// Usage: npx tsx bench/launch-cost.ts [launches per round] [rounds]   (default 2000 7)

import { getDevice, releaseDevice, gpu, tensor, add, sync, flush, setBindGroupReuse, recorderStats } from '../nn/index.ts';
import { median } from './harness.ts';

const launches = Number(process.argv[2] ?? 2000);
const rounds = Number(process.argv[3] ?? 7);
await getDevice();
const { device, info } = gpu('launch-cost');

const storage = (binding: number): GPUBindGroupLayoutEntry => ({ binding, visibility: GPUShaderStage.COMPUTE, buffer: { type: 'storage' } });
const layout = device.createBindGroupLayout({ entries: [storage(0), storage(1), storage(2)] });
const buffers = [0, 1, 2].map(() => device.createBuffer({ size: 1024, usage: GPUBufferUsage.STORAGE }));
const entries = buffers.map((buffer, binding) => ({ binding, resource: { buffer } }));

/** µs per createBindGroup over `launches` calls. */
async function bindGroupMicros(scoped: boolean): Promise<number> {
  const s = performance.now();
  const scopes: Promise<GPUError | null>[] = [];
  for (let i = 0; i < launches; i++) {
    if (scoped) device.pushErrorScope('validation');
    device.createBindGroup({ layout, entries });
    if (scoped) scopes.push(device.popErrorScope());
  }
  const ms = performance.now() - s;
  const errors = (await Promise.all(scopes)).filter((e) => e);
  if (errors.length) throw new Error(`launch-cost: createBindGroup failed: ${errors[0]!.message}`);
  return (1000 * ms) / launches;
}

const a = tensor(new Float32Array(256).fill(1), [256]);
const b = tensor(new Float32Array(256).fill(2), [256]);

/** µs of host time per recorded add, with bind-group reuse on or off, and the share of launches that reused one. */
async function launchMicros(reuse: boolean): Promise<{ us: number; hitRate: number }> {
  const prev = setBindGroupReuse(reuse);
  const before = recorderStats();
  try {
    const s = performance.now();
    for (let i = 0; i < launches; i++) {
      add(a, b).dispose();
      if (i % 100 === 99) flush(); // as a step does at its submits: keeps the encoder's size bounded
    }
    const ms = performance.now() - s;
    await sync();
    const after = recorderStats();
    return { us: (1000 * ms) / launches, hitRate: (after.bindGroupHits - before.bindGroupHits) / launches };
  } finally {
    setBindGroupReuse(prev);
  }
}

for (const scoped of [true, false]) await bindGroupMicros(scoped); // warm-up
await launchMicros(true);
await launchMicros(false);
const us: Record<string, number[]> = { scoped: [], bare: [], reuseOn: [], reuseOff: [] };
let hitRate = 0;
for (let r = 0; r < rounds; r++) {
  us.scoped.push(await bindGroupMicros(true));
  us.bare.push(await bindGroupMicros(false));
  const on = await launchMicros(true);
  us.reuseOn.push(on.us);
  hitRate = on.hitRate;
  us.reuseOff.push((await launchMicros(false)).us);
}
const m = Object.fromEntries(Object.entries(us).map(([k, v]) => [k, median(v)]));
console.log(`${info.description}; ${launches} launches per round, medians of ${rounds} alternating rounds`);
console.log(`createBindGroup in an error scope: ${m.scoped.toFixed(1)} µs; bare: ${m.bare.toFixed(1)} µs`);
console.log(`one add launch, host time: reuse on ${m.reuseOn.toFixed(1)} µs (${(100 * hitRate).toFixed(0)}% reused), off ${m.reuseOff.toFixed(1)} µs; on/off ${(m.reuseOn / m.reuseOff).toFixed(3)}`);
for (const t of [a, b]) t.dispose();
for (const buf of buffers) buf.destroy();
releaseDevice();
