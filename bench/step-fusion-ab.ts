// A/B of one fusion at the level that matters, the whole BYOL step (bench/cases/byol-step.ts's shape): steps
// with the fusion on and off alternate in one process, so both sides see the same load, and the ratio of their
// medians is the figure (absolute times on a shared machine move with its load). It also reports the process's
// CPU time per step (lavapipe's threads included), which moves far less with other processes' load than wall time.
// Usage: tsx bench/step-fusion-ab.ts [pairs] [--old] [--record JSON]
//          [--what moments|bn-sums|bn-prologue|textures|idle-wait|submit:N|bind-groups|conv:JSON|batchNorm:JSON]
//   --record JSON: the device's conv2d record with JSON's fields over it for both sides (e.g. {"variant":"tiled"})
// What is compared (on vs off):
//   moments (default): conv2d writing its output's per-channel moments in the epilogue (Conv2d.moments), which
//     batchNorm then reads instead of its statistics pass over the conv's output;
//   bn-sums: a residual block's first batchNorm taking its backward sums from the next conv's dx epilogue
//     (BatchNorm.fuseConv, kernels/batchnorm-conv.ts) against its own pass over x and dy;
//   bn-prologue: with the tiled conv kernels, that batchNorm as the prologue of the conv's forward and dW
//     (ConvTuning.bnPrologue) against a normalize pass, e.g. --record '{"variant":"tiled"}' --what bn-prologue;
//   textures: the conv lane kernels reading their operands through operand textures (ConvTuning.textures);
//   idle-wait: the main thread asleep while it waits for the GPU (engine/idle-wait.ts) against Dawn's spinning poll;
//   bind-groups: the recorder reusing bind groups (setBindGroupReuse) against creating one per launch;
//   submit:N: a submit every N dispatches (setAutoFlush), so the device starts while the host still records the
//     step, against the step's own submits (two: before the optimizer's queue writes, and at its end);
//   conv:JSON: the device's conv2d record with JSON's fields over it (e.g. conv:{"tiles":{"narrowRows":32}})
//     against the record itself; batchNorm:JSON the same for the batchNorm record (e.g. batchNorm:{"textures":false}).

import { getDevice, releaseDevice, sync } from '../nn/index.ts';
import { convTuning } from '../kernels/conv2d.ts';
import { batchNormTuning } from '../kernels/batchnorm.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { setIdleWait } from '../engine/idle-wait.ts';
import { setAutoFlush, setBindGroupReuse } from '../engine/recorder.ts';
import { BatchNorm } from '../nn/layers.ts';
import { TRAIN_STEP_SHAPE, OLD_STEP_SHAPE, byolForStep, stepViews, stepConvs } from './cases/byol-step.ts';
import { median, loadAverage } from './harness.ts';

const argv = process.argv.slice(2);
const s = argv.includes('--old') ? OLD_STEP_SHAPE : TRAIN_STEP_SHAPE;
const pairs = Number(argv.find((a) => /^\d+$/.test(a)) ?? 5);
const whatAt = argv.indexOf('--what');
const what = whatAt >= 0 ? argv[whatAt + 1] : 'moments';
if (!['moments', 'bn-sums', 'bn-prologue', 'textures', 'idle-wait', 'bind-groups'].includes(what) && !/^submit:[1-9]\d*$/.test(what) && !what.startsWith('conv:') && !what.startsWith('batchNorm:')) {
  throw new Error(`step-fusion-ab: --what must be moments, bn-sums, bn-prologue, textures, idle-wait, submit:N, bind-groups, conv:JSON or batchNorm:JSON, got ${what}`);
}
const recordAt = argv.indexOf('--record');
const ctx = await getDevice();
if (recordAt >= 0) setDeviceTuning('conv2d', convTuning(JSON.parse(argv[recordAt + 1])));
console.log(`device: ${ctx.info.description}`);
console.log(`shape: resnet-small w${s.width}, batch ${s.batch}, ${s.size}x${s.size}x${s.channels}; load average before: ${loadAverage()}`);
if (recordAt >= 0) console.log(`conv2d record: ${JSON.stringify(convTuning())}`);
const [v1, v2] = stepViews(s);
const model = byolForStep(s);
const convs = stepConvs(model);
const norms = [model.online, model.target].flatMap((net) => net.namedModules().map(([, m]) => m)).filter((m): m is BatchNorm => m instanceof BatchNorm);
const record = convTuning();
const bnRecord = batchNormTuning();
const autoFlush = setAutoFlush({});
const setFusion = (on: boolean) => {
  if (what === 'moments') convs.forEach((c) => (c.moments = on));
  else if (what === 'bn-sums') norms.forEach((b) => (b.fuseConv = on));
  else if (what === 'textures') setDeviceTuning('conv2d', { ...record, textures: on });
  else if (what === 'bn-prologue') setDeviceTuning('conv2d', { ...record, bnPrologue: on });
  else if (what === 'idle-wait') setIdleWait(on);
  else if (what === 'bind-groups') setBindGroupReuse(on);
  else if (what.startsWith('submit:')) setAutoFlush({ dispatches: on ? Number(what.slice(7)) : autoFlush.dispatches });
  else if (what.startsWith('conv:')) setDeviceTuning('conv2d', on ? convTuning(JSON.parse(what.slice(5))) : record);
  else setDeviceTuning('batchNorm', on ? batchNormTuning(JSON.parse(what.slice(10))) : bnRecord);
};

/** wall and CPU milliseconds of one step, and the host's recording of it (until trainStep returns) */
async function step(): Promise<[number, number, number]> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  model.trainStep(v1, v2).loss.dispose();
  const recorded = performance.now() - t0;
  await sync();
  const c = process.cpuUsage(c0);
  return [performance.now() - t0, (c.user + c.system) / 1000, recorded];
}
for (const on of [true, false]) (setFusion(on), await step()); // compiles both sides' kernels
const wall: Record<'on' | 'off', number[]> = { on: [], off: [] };
const cpu: Record<'on' | 'off', number[]> = { on: [], off: [] };
const recording: Record<'on' | 'off', number[]> = { on: [], off: [] };
for (let i = 0; i < pairs; i++) {
  // alternate which side goes first, so a drift in load does not favour one
  for (const on of i % 2 ? [false, true] : [true, false]) {
    setFusion(on);
    const [w, c, r] = await step();
    wall[on ? 'on' : 'off'].push(w);
    cpu[on ? 'on' : 'off'].push(c);
    recording[on ? 'on' : 'off'].push(r);
  }
}
console.log(`${convs.length} Conv2d modules; ${pairs} pairs of steps`);
for (const [kind, t] of [['wall', wall], ['CPU', cpu], ['host recording', recording]] as const) {
  const [on, off] = [median(t.on), median(t.off)];
  // each pair ran back to back, so its ratio cancels slow drifts in load; the median of the ratios is the figure
  const ratios = t.on.map((x, i) => x / t.off[i]).sort((a, b) => a - b);
  const q = (f: number) => ratios[Math.min(ratios.length - 1, Math.floor(f * ratios.length))].toFixed(3);
  const label = what === 'moments' ? 'moments in the conv epilogue' : what === 'bn-sums' ? "batchNorm's backward sums from the conv dx" : what === 'bn-prologue' ? 'batchNorm as the tiled conv prologue' : what === 'textures' ? 'conv operands in textures' : what === 'idle-wait' ? 'waiting for the GPU asleep' : what.startsWith('submit:') ? `a submit every ${what.slice(7)} dispatches` : what === 'bind-groups' ? 'bind groups reused' : what;
  console.log(`${label}, ${kind} ms per step (medians): on ${on.toFixed(0)}, off ${off.toFixed(0)}; on/off per pair: median ${median(ratios).toFixed(3)} (quartiles ${q(0.25)}-${q(0.75)})`);
  console.log(`  samples on:  ${t.on.map((x) => x.toFixed(0)).join(' ')}`);
  console.log(`  samples off: ${t.off.map((x) => x.toFixed(0)).join(' ')}`);
}
console.log(`load average after: ${loadAverage()}`);
releaseDevice();
