// GPU failures surface as thrown Errors that name the op: invalid WGSL, invalid bindings, buffers destroyed
// under recorded work, device loss (simulated and a real device.destroy() mid-work), and recovery on a new
// device after releaseDevice() + getDevice(). Nothing may hang: every wait is raced against a timeout here.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  getDevice, releaseDevice, gpu, deviceLostReason, tensor, empty, zeros, add, exp, matmul, sum, relu, mulScalar,
  reshape, variable, backward, tidy, sync, flush, liveTensors, tapeLength, memoryStats, type Tensor,
} from '../nn/index.ts';
import { simulateDeviceLoss, whenDeviceLost, DeviceLostError } from '../engine/device.ts';
import { launch, u32s } from '../engine/recorder.ts';
import { defineKernel } from '../engine/kernel.ts';
import { Linear, Sequential, ReLU, materialize } from '../nn/module.ts';
import { Adam } from '../nn/optim.ts';
import { NonFiniteMonitor } from '../engine/health.ts';

const t = suite('gpu errors');

/** Rejects if `p` has not settled after `ms`: a hang fails the test instead of stalling the run. */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms (hang)`)), ms)));
  return Promise.race([p, timeout]).finally(() => clearTimeout(timer));
}

async function rejectsWith(p: Promise<unknown>, what: string, ...parts: (string | RegExp)[]): Promise<Error> {
  try {
    await within(p, 20_000, what);
  } catch (e) {
    const m = (e as Error).message;
    assert.instance(e, Error);
    for (const part of parts) assert.ok(typeof part === 'string' ? m.includes(part) : part.test(m), `${what}: message lacks ${part}: ${m}`);
    return e as Error;
  }
  assert.unreachable(`${what} resolved; expected an error`);
  throw new Error('unreachable');
}

function throwsWith(fn: () => unknown, what: string, ...parts: (string | RegExp)[]): void {
  try {
    fn();
  } catch (e) {
    const m = (e as Error).message;
    for (const part of parts) assert.ok(typeof part === 'string' ? m.includes(part) : part.test(m), `${what}: message lacks ${part}: ${m}`);
    return;
  }
  assert.unreachable(`${what} did not throw`);
}

/** A kernel that writes one float, declared under `name`. */
const writeOne = (name: string) => defineKernel({ name, bindings: { o: 'rw f32' }, workgroupSize: 1, body: '  o[0] = 1.0;' });

/** The engine still computes correctly: the acceptance check after every failure. */
async function stillWorks(): Promise<void> {
  const x = tensor([1, 2, 3]);
  const y = mulScalar(x, 2);
  assert.equal([...(await y.toArray())], [2, 4, 6]);
  x.dispose();
  y.dispose();
}

t('a kernel with invalid WGSL makes the next sync() and toArray() throw, naming the kernel', async () => {
  const bad = defineKernel({ name: 'brokenKernel', uniforms: { n: 'u32' }, bindings: { out: 'rw f32' }, workgroupSize: 1, body: '  this is not wgsl {' });
  const out = empty([4]);
  bad.launch({ n: 4, out }, [1]);
  await rejectsWith(sync(), 'sync', "kernel 'brokenKernel' failed to compile", 'error');
  // the failure is remembered: launching the same kernel again throws at once, still naming it
  throwsWith(() => bad.launch({ n: 4, out }, [1]), 'relaunch', "kernel 'brokenKernel' failed to compile");
  // a second broken kernel surfaces through toArray()
  const bad2 = defineKernel({ name: 'brokenToo', bindings: {}, workgroupSize: 1, body: '  let x: f32 = undefinedThing;' });
  bad2.launch({}, [1]);
  await rejectsWith(out.toArray(), 'toArray', "kernel 'brokenToo' failed to compile", 'undefinedThing');
  out.dispose();
  await stillWorks();
});

t('a binding range larger than its buffer throws at launch, naming the op and the sizes', async () => {
  const x = empty([4]);
  const k = writeOne('writeOne');
  throwsWith(() => k.launch({ o: { buffer: x.storage.buffer, offset: 0, size: 1 << 20 } }, [1]), 'oversized range', 'writeOne', 'binding 0', '1048576', 'exceeds');
  throwsWith(() => k.launch({ o: { buffer: x.storage.buffer, offset: 4, size: 16 } }, [1]), 'misaligned', 'writeOne', 'offset', 'multiple');
  throwsWith(() => k.launch({ o: u32s(1) as any }, [1]), 'uniform for storage', 'writeOne', 'binding 0');
  throwsWith(() => k.launch({}, [1]), 'missing binding', 'writeOne', "no argument for binding 'o'");
  throwsWith(() => k.launch({ o: 3 }, [1]), 'numbers for a binding', 'writeOne', "binding 'o' needs a tensor");
  x.dispose();
  await stillWorks();
});

t('a bind-group error reported by WebGPU (buffer without STORAGE usage) names the op', async () => {
  const { device } = gpu();
  const mappable = device.createBuffer({ size: 256, usage: 0x01 | 0x08 }); // MAP_READ | COPY_DST: not bindable
  writeOne('writeToMappable').launch({ o: { buffer: mappable, offset: 0, size: 256 } }, [1]);
  await rejectsWith(sync(), 'sync', 'writeToMappable: invalid bindings');
  mappable.destroy();
  await stillWorks();
});

t('a buffer destroyed before its recorded work is submitted: the submit error lists the ops', async () => {
  const { device } = gpu();
  const buf = device.createBuffer({ size: 256, usage: 0x80 | 0x04 | 0x08 });
  writeOne('writeDestroyed').launch({ o: { buffer: buf, offset: 0, size: 256 } }, [1]);
  buf.destroy();
  await rejectsWith(sync(), 'sync', 'submit of [', 'writeDestroyed');
  await stillWorks();
});

t('launch refuses a kernel that was not declared, naming it', () => {
  const raw = { name: 'handWritten', code: '@compute @workgroup_size(1) fn main() {}', bindings: [] };
  throwsWith(() => launch(raw, [], [1]), 'undeclared', 'handWritten', 'not a declared kernel');
});

t('errors are reported once: the sync after a failure is clean', async () => {
  defineKernel({ name: 'brokenOnce', bindings: {}, workgroupSize: 1, body: '  nonsense' }).launch({}, [1]);
  await rejectsWith(sync(), 'sync', 'brokenOnce');
  await within(sync(), 20_000, 'clean sync');
});

t('simulated device loss: every op, upload and readback throws naming what it was doing; a pending readback rejects', async () => {
  const ctx = await getDevice();
  const x = tensor([1, -2, 3, -4], [2, 2]);
  const y = relu(x);
  const pending = y.toArray(); // submitted, not yet read when the loss arrives
  simulateDeviceLoss('test');
  assert.ok(deviceLostReason()?.includes('test'));
  const e = await rejectsWith(pending, 'pending toArray', 'WebGPU device lost', 'test');
  assert.instance(e, DeviceLostError, 'a DeviceLostError, so a training loop can tell it from other failures');
  await rejectsWith(x.toArray(), 'toArray', 'WebGPU device lost', 'during toArray of tensor [2, 2]');
  await rejectsWith(sync(), 'sync', 'WebGPU device lost', 'during sync');
  throwsWith(() => add(x, x), 'add', 'WebGPU device lost', 'during add');
  throwsWith(() => exp(x), 'exp', 'WebGPU device lost', 'during exp');
  throwsWith(() => matmul(x, x), 'matmul', 'WebGPU device lost', 'during matmul');
  throwsWith(() => sum(x, 0), 'sum', 'WebGPU device lost', 'during sum');
  throwsWith(() => tensor([1, 2]), 'tensor', 'WebGPU device lost', 'during tensor');
  throwsWith(() => zeros([3]), 'zeros', 'WebGPU device lost', 'during zeros');
  throwsWith(() => gpu('myOp'), 'gpu()', 'during myOp', 'releaseDevice()');
  // a view needs no GPU work, so it still works; cleanup never throws
  reshape(x, [4]).dispose();
  x.dispose();
  y.dispose();
  flush();
  // recovery: release, new device, everything works
  releaseDevice();
  const ctx2 = await getDevice();
  assert.is.not(ctx2.device, ctx.device);
  assert.is(deviceLostReason(), null);
  await stillWorks();
  assert.is(liveTensors(), 0);
});

t('tensors, models and the tape of a lost device: disposable without errors, unusable with a clear message', async () => {
  const x = variable([1, 2, 3]);
  const model = materialize(new Sequential(new Linear(3, 4), new ReLU(), new Linear(4, 2)), { seed: 1 });
  const input = tensor(new Float32Array(6).fill(0.5), [2, 3]);
  const out = model.forward(input); // recorded, never differentiated
  assert.ok(tapeLength() > 0);
  simulateDeviceLoss('mid-step');
  throwsWith(() => backward(sum(out)), 'backward', 'WebGPU device lost');
  releaseDevice();
  assert.is(tapeLength(), 0, 'the tape of the old device is dropped');
  await getDevice();
  throwsWith(() => add(x, x), 'stale add', 'add', 'belongs to a WebGPU device that was lost or released');
  await rejectsWith(x.toArray(), 'stale toArray', 'toArray', 'lost or released');
  // disposing everything of the old device is a no-op, not an error, and does not disturb the new pool
  x.dispose();
  input.dispose();
  out.dispose();
  model.dispose();
  assert.is(liveTensors(), 0);
  // the same model declaration materializes again on the new device and trains
  materialize(model, { seed: 1 });
  const inp = tensor(new Float32Array(6).fill(0.5), [2, 3]);
  tidy(() => backward(sum(model.forward(inp))));
  for (const p of model.parameters()) p.grad?.dispose(), (p.grad = null);
  inp.dispose();
  model.dispose();
  await sync();
  assert.is(liveTensors(), 0);
  assert.is(memoryStats().tapeNodes, 0);
});

t('everything can be disposed while the device is lost, before releaseDevice(): cleanup never throws', async () => {
  const model = materialize(new Sequential(new Linear(3, 4), new ReLU()), { seed: 1 });
  const opt = new Adam(model, { lr: 0.1 });
  const monitor = new NonFiniteMonitor();
  const x = tensor([1, 2, 3]);
  const y = tidy(() => mulScalar(relu(x), 2));
  simulateDeviceLoss('during cleanup');
  throwsWith(() => opt.step(), 'opt.step', 'WebGPU device lost');
  x.dispose();
  y.dispose();
  monitor.dispose();
  opt.dispose();
  model.dispose();
  releaseDevice();
  await getDevice();
  assert.is(liveTensors(), 0);
  await stillWorks();
});

t('a real device.destroy() in the middle of work: the pending readback and later ops throw, then recovery', async () => {
  const ctx = await getDevice();
  const a = tensor(new Float32Array(256 * 256).fill(1 / 256), [256, 256]);
  let c: Tensor = a;
  for (let i = 0; i < 6; i++) {
    const next = matmul(c, a);
    if (c !== a) c.dispose();
    c = next;
  }
  const pending = c.toArray();
  const lost = whenDeviceLost();
  ctx.device.destroy();
  await rejectsWith(pending, 'pending toArray after destroy', 'WebGPU device lost', 'destroyed');
  assert.match(await within(lost, 20_000, 'device.lost'), /destroyed/);
  throwsWith(() => matmul(a, a), 'matmul after destroy', 'WebGPU device lost', 'during matmul');
  await rejectsWith(sync(), 'sync after destroy', 'WebGPU device lost');
  c.dispose();
  a.dispose();
  releaseDevice();
  await getDevice();
  await stillWorks();
  assert.is(liveTensors(), 0);
});

t('releaseDevice() wakes anything still waiting on the old device', async () => {
  const x = tensor(new Float32Array(1024).fill(2));
  const y = exp(x);
  const pending = y.toArray();
  releaseDevice();
  await rejectsWith(pending, 'toArray across releaseDevice', /WebGPU device lost|reading back/);
  await getDevice();
  await stillWorks();
});

t.run();
