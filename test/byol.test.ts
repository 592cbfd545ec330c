// BYOL invariants on a tiny model: the target gets no gradient and moves only by the EMA toward the updated online
// weights (xi' = tau*xi + (1-tau)*theta'), the loss is the symmetric 2-2cos sum, and a step leaks nothing.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { liveTensors, sync, tapeLength, tidy, noGrad, backward, type Tensor } from '../nn/index.ts';
import { add } from '../kernels/elementwise.ts';
import { cosineLoss } from '../kernels/cosine.ts';
import { emaUpdate } from '../nn/ema.ts';
import { flush } from '../engine/recorder.ts';
import { BYOL } from '../byol/model.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import { syntheticShapes } from '../byol/data/synthetic.ts';
import { channelStats } from '../byol/data/image-dataset.ts';
import { augmentViews } from '../byol/augment.ts';
import { byolAugmentConfig } from '../byol/augment-params.ts';
import { Rng } from '../byol/rng.ts';

const t = suite('byol');

function tiny(optimizer: 'lars' | 'adam' | 'sgd' = 'lars') {
  return new BYOL({
    encoder: { arch: 'resnet-small', width: 4, stem: 'small', inChannels: 1 },
    projHidden: 16, projDim: 8, predHidden: 16, optimizer, baseLr: 1.0, batchSize: 8, totalSteps: 10, tauBase: 0.9, seed: 3,
  });
}

t('the target gets no gradient and moves only by the EMA toward the updated online weights', async () => {
  await sync();
  const before = liveTensors();
  const ds = syntheticShapes(16, 12, 5);
  const data = new GpuDataset(ds);
  const model = tiny();
  const x = data.gather(Int32Array.from({ length: 8 }, (_, i) => i));
  const [v1, v2] = augmentViews(x, new Rng(1), byolAugmentConfig({ imageSize: 12, normalize: channelStats(ds) }));
  for (let k = 0; k < 2; k++) {
    const target0 = await model.target.arena!.read();
    const online0 = await model.online.arena!.read();
    const tau = model.tauAt(model.step);
    const lr = model.lrAt(model.step); // 0 at step 0: the warm-up starts from zero
    const { loss } = model.trainStep(v1, v2);
    const l = await loss.item();
    loss.dispose();
    assert.ok(l >= 0 && l <= 8, `symmetric loss in [0, 8], got ${l}`);
    for (const p of model.target.parameters()) assert.is(p.grad, null, 'target parameters get no gradient');
    assert.is(tapeLength(), 0);
    const online1 = await model.online.arena!.read();
    const target1 = await model.target.arena!.read();
    let moved = 0;
    let worst = 0;
    for (let i = 0; i < target1.length; i++) {
      if (online1[i] !== online0[i]) moved++;
      const want = tau * target0[i] + (1 - tau) * online1[i];
      worst = Math.max(worst, Math.abs(target1[i] - want) / Math.max(1e-3, Math.abs(want)));
    }
    if (lr > 0) assert.ok(moved > target1.length / 2, `the optimizer moved the online weights (lr ${lr})`);
    else assert.is(moved, 0, 'lr 0 leaves the online weights as they were');
    assert.ok(worst < 1e-5, `target = tau*target + (1-tau)*online_after_step, worst relative error ${worst}`);
  }
  [x, v1, v2].forEach((v) => v.dispose());
  model.dispose();
  data.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('identical views of a collapsed-free start give a loss near 4 (random projections), and it falls with training', async () => {
  const ds = syntheticShapes(64, 12, 6);
  const data = new GpuDataset(ds);
  const model = tiny('adam');
  const cfg = byolAugmentConfig({ imageSize: 12, normalize: channelStats(ds) });
  const rng = new Rng(2);
  const losses: number[] = [];
  for (let k = 0; k < 10; k++) {
    const x = data.gather(Int32Array.from({ length: 8 }, () => rng.int(64)));
    const [v1, v2] = augmentViews(x, rng, cfg);
    const { loss } = model.trainStep(v1, v2);
    losses.push(await loss.item());
    [x, v1, v2, loss].forEach((v) => v.dispose());
  }
  assert.ok(Math.abs(losses[0] - 4) < 1, `first loss near 4, got ${losses[0]}`);
  assert.ok(losses[9] < losses[0], `loss falls: ${losses[0]} -> ${losses[9]}`);
  model.dispose();
  data.dispose();
});

// The step before both views ran as one batch: four passes, BN statistics per pass, gradients accumulated.
function perViewStep(m: BYOL, v1: Tensor, v2: Tensor): Tensor {
  const lr = m.lrAt(m.step);
  const tau = m.tauAt(m.step);
  m.online.train();
  m.target.train();
  const loss = tidy(() => {
    const [t1, t2] = noGrad(() => [m.target.forward(v1), m.target.forward(v2)]);
    const l = add(cosineLoss(m.online.forward(v1), t2), cosineLoss(m.online.forward(v2), t1));
    backward(l);
    return l;
  });
  m.optimizer.step(lr);
  emaUpdate(m.target.arena!, m.online.arena!, tau);
  m.step++;
  flush();
  return loss;
}

function normErr(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let scale = 1e-6;
  for (let i = 0; i < a.length; i++) (diff = Math.max(diff, Math.abs(a[i] - b[i]))), (scale = Math.max(scale, Math.abs(b[i])));
  return diff / scale;
}

t('both views as one batch with per-view BN statistics = four separate passes (loss, gradients, weights, BN statistics)', async () => {
  await sync();
  const before = liveTensors();
  const ds = syntheticShapes(16, 12, 5);
  const data = new GpuDataset(ds);
  const batched = tiny('sgd');
  const separate = tiny('sgd');
  const x = data.gather(Int32Array.from({ length: 8 }, (_, i) => i));
  const [v1, v2] = augmentViews(x, new Rng(4), byolAugmentConfig({ imageSize: 12, normalize: channelStats(ds) }));
  for (let k = 0; k < 3; k++) {
    const a = batched.trainStep(v1, v2).loss;
    const b = perViewStep(separate, v1, v2);
    const [la, lb] = [await a.item(), await b.item()];
    assert.ok(Math.abs(la - lb) <= 1e-5 * Math.abs(lb), `step ${k}: loss ${la} vs ${lb}`);
    [a, b].forEach((l) => l.dispose());
    const ga = await batched.online.arena!.readGrads();
    assert.ok(ga.some((v) => v !== 0), 'the step left its gradients in the arena');
    const gradErr = normErr(ga, await separate.online.arena!.readGrads());
    assert.ok(gradErr < 1e-4, `step ${k}: online gradients differ by ${gradErr} (normalized)`);
    for (const [what, ma, mb] of [['online', batched.online, separate.online], ['target', batched.target, separate.target]] as const) {
      const sa = await ma.stateDict();
      const sb = await mb.stateDict();
      for (const [name, e] of sa) {
        const err = normErr(e.data as Float32Array, sb.get(name)!.data as Float32Array);
        assert.ok(err < 1e-4, `step ${k}: ${what}.${name} differs by ${err} (normalized)`);
      }
    }
  }
  const tracked = (m: BYOL) => [...m.online.namedModules()].map(([, l]) => (l as { numBatchesTracked?: number }).numBatchesTracked).filter((n) => n !== undefined);
  assert.equal(tracked(batched), tracked(separate), 'num_batches_tracked counts each view');
  assert.ok(tracked(batched).every((n) => n === 6), 'two views a step for three steps');
  [x, v1, v2].forEach((v) => v.dispose());
  batched.dispose();
  separate.dispose();
  data.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t.run();
