// The recorder reuses a launch's bind group where the same pipeline binds the same resources (engine/recorder.ts,
// bindGroupFor), and the buffer pool hands out its oldest free buffer of a size first (engine/pool.ts), so a loop
// that allocates the same way every step binds the same buffers every step. Checked: the pool's order; that a
// training loop reuses nearly every bind group after its first steps and trains to the same bits with reuse off;
// and that a bind group of a destroyed buffer is never reused.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, mean, mul, sub, backward, tidy, sync, flush, liveTensors, recorderStats, setBindGroupReuse, pool, gpu } from '../nn/index.ts';
import { BufferPool } from '../engine/pool.ts';
import { defineKernel } from '../engine/kernel.ts';
import { Linear, ReLU, Sequential, materialize } from '../nn/module.ts';
import { Adam } from '../nn/optim.ts';
import { Rng } from '../engine/random.ts';

const t = suite('bind-groups');
t.after(() => {
  setBindGroupReuse(true);
});

t('the pool hands out the oldest free buffer of a size first, whatever order they were released in', () => {
  const p = new BufferPool(gpu().device, 1 << 30);
  const [a, b, c] = [p.acquire(1024), p.acquire(1024), p.acquire(1024)];
  for (const x of [c, a, b]) p.release(x);
  p.afterSubmit();
  assert.ok(p.acquire(1000) === a && p.acquire(1024) === b && p.acquire(900) === c, 'a, b, c: creation order');
  p.destroyAll();
});

/** 12 Adam steps of a small MLP on fixed batches; returns the final weights and the bind-group counters over steps 4-12. */
async function train(reuse: boolean): Promise<{ weights: Float32Array; hits: number; misses: number; dispatches: number }> {
  setBindGroupReuse(reuse);
  const net = materialize(new Sequential(new Linear(12, 32), new ReLU(), new Linear(32, 8)), { seed: 3, label: `bind-groups ${reuse}` });
  const opt = new Adam(net, { lr: 0.01 });
  const rng = new Rng(5);
  let from = recorderStats();
  for (let step = 0; step < 12; step++) {
    if (step === 4) from = recorderStats();
    const x = tensor(Float32Array.from({ length: 16 * 12 }, () => rng.normal()), [16, 12]);
    const y = tensor(Float32Array.from({ length: 16 * 8 }, () => rng.normal()), [16, 8]);
    const loss = tidy(() => {
      const d = sub(net.forward(x), y);
      return mean(mul(d, d));
    });
    backward(loss);
    opt.step(0.01);
    flush();
    for (const v of [x, y, loss]) v.dispose();
  }
  const to = recorderStats();
  const weights = (await net.arena!.data.flat.toArray()) as Float32Array;
  opt.dispose();
  net.dispose();
  await sync();
  return { weights, hits: to.bindGroupHits - from.bindGroupHits, misses: to.bindGroupMisses - from.bindGroupMisses, dispatches: to.dispatches - from.dispatches };
}

t('a training loop reuses its bind groups from step to step, and trains to the same bits without reuse', async () => {
  const before = liveTensors();
  const on = await train(true);
  const off = await train(false);
  assert.is(on.hits + on.misses, on.dispatches, 'every launch counted');
  // what changes every step: the uniforms of Adam's step count and learning-rate terms
  assert.ok(on.hits >= 0.8 * on.dispatches, `${on.hits} of ${on.dispatches} launches reused a bind group (${on.misses} created)`);
  assert.is(off.hits, 0, 'reuse off: none reused');
  assert.equal(Array.from(on.weights), Array.from(off.weights), 'the same weights, bit for bit');
  assert.is(liveTensors(), before, 'nothing left behind');
});

t('a bind group of a destroyed buffer is never reused: the same launch on a new buffer of that size runs', async () => {
  const k = defineKernel({ name: 'bindGroupFill', uniforms: { v: 'f32' }, bindings: { o: 'rw f32' }, workgroupSize: 1, body: '  o[0] = p.v;' });
  const a = tensor(new Float32Array(64));
  k.launch({ v: 1, o: a }, [1]);
  await sync();
  a.dispose();
  flush();
  pool().trim(); // destroys every pooled buffer, a's among them
  const b = tensor(new Float32Array(64));
  k.launch({ v: 2, o: b }, [1]);
  assert.is((await b.toArray())[0], 2, 'the launch wrote the new buffer (no error from a stale bind group)');
  b.dispose();
});

t.run();
