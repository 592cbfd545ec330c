// Where the host's time goes while it records a BYOL training step (the part a GPU waits on when it runs the step
// faster than the host records it). V8's sampling profiler runs only around `trainStep` calls of a warmed-up
// model (bench/cases/byol-step.ts's shape), never over compilation; samples outside trainStep (the wait for the
// device) are left out. Native frames (Dawn's binding: setPipeline, dispatch, submit, texture copies, getters)
// have no name in V8's profile, so they are charged to the JS function that called them, marked "(native, from)".
// Prints self time per function as a share of trainStep's samples, and the host's recording time per step.
// Usage: npx tsx bench/host-profile.ts [steps] [--top N]   (default 30 steps, top 25)

import { Session } from 'node:inspector/promises';
import { getDevice, releaseDevice, sync } from '../nn/index.ts';
import { TRAIN_STEP_SHAPE, byolForStep, stepViews } from './cases/byol-step.ts';
import { median } from './harness.ts';

const argv = process.argv.slice(2);
const steps = Number(argv.find((a) => /^\d+$/.test(a)) ?? 30);
const top = argv.includes('--top') ? Number(argv[argv.indexOf('--top') + 1]) : 25;
const s = TRAIN_STEP_SHAPE;
const ctx = await getDevice();
const [v1, v2] = stepViews(s);
const model = byolForStep(s);
for (let i = 0; i < 3; i++) {
  model.trainStep(v1, v2).loss.dispose(); // compiles, fills the pools and the bind-group cache
  await sync();
}

interface ProfileNode { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }
const session = new Session();
session.connect();
await session.post('Profiler.enable');
await session.post('Profiler.setSamplingInterval', { interval: 100 }); // µs
const recordMs: number[] = [];
await session.post('Profiler.start');
for (let i = 0; i < steps; i++) {
  const t0 = performance.now();
  model.trainStep(v1, v2).loss.dispose();
  recordMs.push(performance.now() - t0);
  await sync();
}
const { profile } = (await session.post('Profiler.stop')) as unknown as { profile: { nodes: ProfileNode[]; samples: number[] } };
session.disconnect();

const nodes = new Map(profile.nodes.map((x) => [x.id, x]));
const parent = new Map<number, number>();
for (const x of profile.nodes) for (const c of x.children ?? []) parent.set(c, x.id);
const label = (x: ProfileNode) => `${x.callFrame.functionName || '(anonymous)'} ${x.callFrame.url.split('/').pop()}:${x.callFrame.lineNumber + 1}`;
const isNative = (x: ProfileNode) => x.callFrame.url === '' && x.callFrame.functionName === '';
const self = new Map<string, number>();
let inStep = 0;
for (const id of profile.samples) {
  let chain = nodes.get(id)!;
  let underStep = false;
  for (let x: ProfileNode | undefined = chain; x; x = nodes.get(parent.get(x.id) ?? -1)) {
    if (x.callFrame.functionName === 'trainStep') underStep = true;
  }
  if (!underStep) continue;
  inStep++;
  let name = label(chain);
  if (isNative(chain)) {
    const caller = nodes.get(parent.get(chain.id) ?? -1);
    chain = caller ?? chain;
    name = `(native, from) ${label(chain)}`;
  }
  self.set(name, (self.get(name) ?? 0) + 1);
}
const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, top);
console.log(`${ctx.info.description}; resnet-small w${s.width}, batch ${s.batch}; ${steps} steps profiled`);
console.log(`host recording per step (until trainStep returns): median ${median(recordMs).toFixed(1)} ms; ${inStep} samples in trainStep`);
for (const [name, k] of rows) console.log(`${((100 * k) / Math.max(inStep, 1)).toFixed(1).padStart(5)}%  ${name}`);
const native = [...self.entries()].filter(([k]) => k.startsWith('(native')).reduce((a, [, k]) => a + k, 0);
console.log(`native calls (Dawn's binding and Node built-ins) in all: ${((100 * native) / Math.max(inStep, 1)).toFixed(1)}% of trainStep's samples`);
releaseDevice();
