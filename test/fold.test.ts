// BatchNorm folding (nn/fold.ts): the folded inference forward matches the eval-mode forward of the same model to
// float32 rounding on ResNets with random weights and non-trivial running statistics, records nothing on the
// tape, leaves the model as it was, and refuses what it cannot fold correctly.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, tidy, noGrad, liveTensors, tapeLength, Tensor } from '../nn/index.ts';
import { Module, Sequential, Linear, materialize } from '../nn/module.ts';
import { Conv2d, BatchNorm } from '../nn/layers.ts';
import { add } from '../kernels/elementwise.ts';
import { foldBatchNorm } from '../nn/fold.ts';
import { recordDispatches } from '../engine/recorder.ts';
import { ResNet, type ResNetConfig } from '../byol/resnet.ts';
import { Rng } from '../engine/random.ts';

const t = suite('fold');

/** Random BN affine parameters and running statistics far from the identity (0, 1) they start at. */
async function perturbBatchNorms(model: Module, seed: number): Promise<void> {
  const r = new Rng(seed);
  const sd = await model.stateDict();
  const bns = model.namedModules().filter(([, m]) => m instanceof BatchNorm).map(([n]) => (n ? `${n}.` : ''));
  for (const p of bns) {
    const fill = (k: string, f: () => number) => sd.get(p + k)!.data.forEach((_, i, a) => (a[i] = f()));
    fill('weight', () => r.uniform(0.5, 1.5));
    fill('bias', () => 0.3 * r.normal());
    fill('running_mean', () => 0.5 * r.normal());
    fill('running_var', () => r.uniform(0.3, 3));
  }
  model.loadStateDict(sd);
}

function randomInput(shape: number[], seed: number): Tensor {
  const r = new Rng(seed);
  return tensor(Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => r.normal()), shape);
}

/** max |a - b| / max |b|. */
async function relDiff(a: Tensor, b: Tensor): Promise<number> {
  const [x, y] = [await a.toArray(), await b.toArray()];
  let d = 0;
  let m = 0;
  for (let i = 0; i < y.length; i++) (d = Math.max(d, Math.abs(x[i] - y[i]))), (m = Math.max(m, Math.abs(y[i])));
  return d / m;
}

async function checkResNet(config: ResNetConfig, inShape: number[], tol: number): Promise<void> {
  const before = liveTensors();
  const model = materialize(new ResNet(config), { seed: 3 });
  await perturbBatchNorms(model, 11);
  model.eval();
  const x = randomInput(inShape, 7);
  const sample = randomInput([2, ...inShape.slice(1)], 8);
  const net = await foldBatchNorm(model, sample);
  const numBn = model.namedModules().filter(([, m]) => m instanceof BatchNorm).length;
  assert.is(net.folded.length, numBn, 'every BN folded');
  assert.equal(net.unfolded, []);
  // torchvision's names pair each BN with its conv: bn1 with conv1, bn_head with conv_head, downsample.1 with .0
  for (const p of net.folded) assert.is(p.layer, p.bn.replace(/bn(\w*)$/, 'conv$1').replace(/downsample\.1$/, 'downsample.0'));

  const tape0 = tapeLength();
  recordDispatches(true);
  const yf = net.forward(x);
  const kernels = recordDispatches(false).map((d) => d.name);
  assert.is(tapeLength(), tape0, 'the folded forward records nothing');
  // the residual additions and ReLUs run in the convs' epilogues: no elementwise pass over an activation
  assert.ok(!kernels.some((n) => /relu|^add/i.test(n)), `no separate add / ReLU pass: ${kernels.join(', ')}`);
  assert.ok(kernels.filter((n) => n.startsWith('conv2d.')).length >= model.namedModules().filter(([, m]) => m instanceof Conv2d).length, `one launch per conv: ${kernels.join(', ')}`);
  const yr = noGrad(() => tidy(() => model.forward(x)));
  const err = await relDiff(yf, yr);
  assert.ok(err < tol, `folded vs eval-mode forward: relative max error ${err.toExponential(2)} >= ${tol}`);
  // the model itself is untouched: its forward still is the unfolded one
  const yr2 = noGrad(() => tidy(() => model.forward(x)));
  assert.is(await relDiff(yr2, yr), 0);
  // the comparison can fail: training-mode BN (batch statistics) is a different function (last: it moves the
  // running statistics)
  model.train();
  const yt = noGrad(() => tidy(() => model.forward(x)));
  assert.ok((await relDiff(yt, yr)) > 100 * tol, 'the test distinguishes different networks');
  for (const tt of [x, sample, yf, yr, yt, yr2]) tt.dispose();
  net.dispose();
  model.dispose();
  assert.is(liveTensors(), before, 'no tensors leak');
}

t('resnet-small (small stem, head conv): folded forward matches the eval-mode forward', async () => {
  await checkResNet({ arch: 'resnet-small', width: 8, stem: 'small', inChannels: 1, headChannels: 24 }, [5, 13, 11, 1], 5e-6);
});

t('resnet18 width 8 (imagenet stem): folded forward matches the eval-mode forward', async () => {
  await checkResNet({ arch: 'resnet18', width: 8, stem: 'imagenet', inChannels: 3 }, [3, 40, 36, 3], 5e-6);
});

t('Linear + BatchNorm1d and a conv with a bias fold; a training-mode model is refused', async () => {
  const model = materialize(new Sequential(new Conv2d(3, 8, 3, { padding: 1, bias: true }), new BatchNorm(8, { relu: true })), { seed: 1 });
  await perturbBatchNorms(model, 2);
  const mlp = materialize(new Sequential(new Linear(6, 10), new BatchNorm(10, { relu: true }), new Linear(10, 4)), { seed: 2 });
  await perturbBatchNorms(mlp, 3);
  const x = randomInput([2, 5, 5, 3], 1);
  const v = randomInput([7, 6], 2);
  try {
    await foldBatchNorm(model, x).then(() => assert.unreachable('training mode must be refused'), (e) => assert.match(e.message, /eval mode/));
    model.eval();
    mlp.eval();
    for (const [m, input] of [[model, x], [mlp, v]] as const) {
      const net = await foldBatchNorm(m, input);
      assert.is(net.folded.length, 1);
      const yf = net.forward(input);
      const yr = noGrad(() => tidy(() => m.forward(input)));
      assert.ok((await relDiff(yf, yr)) < 1e-5);
      yf.dispose();
      yr.dispose();
      net.dispose();
    }
  } finally {
    x.dispose();
    v.dispose();
    model.dispose();
    mlp.dispose();
  }
});

/** conv -> BN, but the conv's output is also added to the result outside any module: not foldable. */
class Leaky extends Module {
  readonly conv = this.child('conv', new Conv2d(4, 4, 3, { padding: 1 }));
  readonly bn = this.child('bn', new BatchNorm(4));
  forward(x: Tensor): Tensor {
    const h = this.conv.forward(x);
    return add(this.bn.forward(h), h);
  }
}

t('a folded layer whose output an op outside the modules also reads is caught by the sample check', async () => {
  const model = materialize(new Leaky(), { seed: 4 });
  await perturbBatchNorms(model, 5);
  model.eval();
  const x = randomInput([2, 6, 6, 4], 3);
  try {
    await foldBatchNorm(model, x).then(() => assert.unreachable('must throw'), (e) => assert.match(e.message, /differs from the eval-mode forward/));
  } finally {
    x.dispose();
    model.dispose();
  }
});

t.run();
