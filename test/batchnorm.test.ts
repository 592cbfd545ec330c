import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, tidy, backward, liveTensors, sync, recorderStats, tapeLength, getDevice, noGrad, materialize, Sequential, BatchNorm, withBatchNormGroups, type Tensor } from '../nn/index.ts';
import { batchNorm, batchNormTuning, ref } from '../kernels/batchnorm.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { opTest, rng, randArr, assertClose } from './helpers/gradcheck.ts';
import type { Arr } from '../engine/ref.ts';
import { throwsWith } from './helpers/errors.ts';
import { batchNormCases } from '../nn/checks/batchnorm.ts';

const t = suite('batchnorm');

const up = (a: Arr, requiresGrad = false) => tensor(Float32Array.from(a.data), a.shape, { requiresGrad });
const channels = (shape: number[]) => shape[shape.length - 1];

// the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of batchNormCases) opTest(name, c, t);

// the same cases with x, the residual and dy read from the buffers and from operand textures, both forced through
// the device's record (the default above is the adapter's)
for (const textures of [false, true]) {
  for (const { name, ...c } of batchNormCases) {
    opTest(`${name} [${textures ? 'textures' : 'buffers'}]`, {
      ...c,
      setup: () => {
        const prev = batchNormTuning();
        setDeviceTuning('batchNorm', { ...prev, textures });
        return () => setDeviceTuning('batchNorm', prev);
      },
    }, t);
  }
}

// every reduction path forced through the 'reduce' record (workgroup size x tree), forward and every gradient,
// with the running statistics, on shapes with one and many row chunks, several channel blocks, groups and the ReLU
const hasSubgroups = (await getDevice()).hasSubgroups;
for (const workgroupSize of [32, 64, 128, 256]) {
  for (const tree of hasSubgroups ? (['shared', 'subgroup'] as const) : (['shared'] as const)) {
    for (const [shape, groups, relu] of [[[37, 258], 1, false], [[4, 16, 16, 33], 2, true], [[6, 9, 11, 64], 3, true], [[3, 7], 1, true]] as [number[], number, boolean][]) {
      const C = channels(shape);
      const o = { training: true, relu, groups };
      opTest(`batchNorm [${tree} tree, ${workgroupSize} invocations] ${JSON.stringify(shape)} groups=${groups} relu=${relu}`, {
        shapes: [shape, [C], [C]],
        range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5]],
        ref: ([x, g, b]) => ref.batchNorm(x, g, b, o),
        refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, o),
        gpu: ([x, g, b]) => batchNorm(x, g, b, null, { ...o, tuning: { workgroupSize, tree } }),
        tol: 2e-5,
      }, t);
    }
  }
}

// the batchNorm record's own reduce overrides reach its sums (and a call's tuning goes over them)
for (const reduce of hasSubgroups ? [{ workgroupSize: 32, tree: 'subgroup' as const }, { workgroupSize: 64, tree: 'shared' as const }] : [{ workgroupSize: 64, tree: 'shared' as const }]) {
  const o = { training: true, relu: true, groups: 2 };
  opTest(`batchNorm [record reduce ${JSON.stringify(reduce)}] [4,16,16,33] groups=2 relu`, {
    shapes: [[4, 16, 16, 33], [33], [33]],
    range: [[-1, 1], [0.5, 1.5], [-0.5, 0.5]],
    ref: ([x, g, b]) => ref.batchNorm(x, g, b, o),
    refGrad: ([x, g, b], dy) => ref.batchNormBackward(x, g, b, dy, o),
    gpu: ([x, g, b]) => batchNorm(x, g, b, null, o),
    tol: 2e-5,
    setup: () => {
      const prev = batchNormTuning();
      setDeviceTuning('batchNorm', { ...prev, reduce });
      return () => setDeviceTuning('batchNorm', prev);
    },
  }, t);
}

t('the batchNorm record\'s reduce overrides are checked like a call\'s, and a call\'s tuning goes over them', () => {
  const prev = batchNormTuning();
  const x = up(randArr([4, 8], rng(9)));
  const g = up(randArr([8], rng(10), 0.5, 1.5));
  const b = up(randArr([8], rng(11)));
  try {
    setDeviceTuning('batchNorm', { ...prev, reduce: { workgroupSize: 48 } });
    throwsWith(() => batchNorm(x, g, b, null, { training: true }), 'batchNorm', 'workgroupSize must be a power of two', 'got 48');
    assert.not.throws(() => tidy(() => void batchNorm(x, g, b, null, { training: true, tuning: { workgroupSize: 64 } })));
  } finally {
    setDeviceTuning('batchNorm', prev);
    for (const v of [x, g, b]) v.dispose();
  }
});

t('withBatchNormGroups: per-group running statistics in order, num_batches_tracked per group, restored after a throw', async () => {
  const before = liveTensors();
  const net = materialize(new Sequential(new BatchNorm(6), new Sequential(new BatchNorm(6, { relu: true }))), { seed: 2 });
  const bns = [...net.namedModules()].map(([, m]) => m).filter((m): m is BatchNorm => m instanceof BatchNorm);
  const x = randArr([8, 6], rng(4), -2, 3);
  const xt = up(x);
  noGrad(() => tidy(() => void withBatchNormGroups(net, 2, () => net.forward(xt))));
  const zeros6 = { data: new Float64Array(6), shape: [6] };
  const ones6 = { data: new Float64Array(6).fill(1), shape: [6] };
  const [wantMean, wantVar] = ref.updateRunning(zeros6, ones6, x, 0.1, 2);
  assertClose(await bns[0].runningMean.value.toArray(), wantMean.data, 1e-6, 'running mean: group 1 then group 2');
  assertClose(await bns[0].runningVar.value.toArray(), wantVar.data, 1e-5, 'running variance: group 1 then group 2');
  assert.equal(bns.map((b) => b.numBatchesTracked), [2, 2], 'num_batches_tracked counts both groups');
  assert.equal(bns.map((b) => b.groups), [1, 1], 'the setting ends with the call');
  assert.throws(() => withBatchNormGroups(net, 3, () => {
    assert.equal(bns.map((b) => b.groups), [3, 3]);
    throw new Error('inside');
  }), /inside/);
  assert.equal(bns.map((b) => b.groups), [1, 1], 'restored after a throw');
  throwsWith(() => withBatchNormGroups(net, 1.5, () => 0), 'withBatchNormGroups', 'positive integer', '1.5');
  throwsWith(() => noGrad(() => tidy(() => withBatchNormGroups(net, 3, () => net.forward(xt)))), 'batchNorm', 'groups', 'divides', '[8, 6]');
  xt.dispose();
  net.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('running statistics after two training steps match the reference', async () => {
  const before = liveTensors();
  for (const shape of [[5, 7], [2, 6, 5, 12], [4, 16, 16, 33]]) {
    const C = channels(shape);
    const r = rng(11);
    const gamma = randArr([C], r, 0.5, 1.5);
    const beta = randArr([C], r);
    let rm = randArr([C], r, -1, 1);
    let rv = randArr([C], r, 0.5, 2);
    const runningMean = up(rm);
    const runningVar = up(rv);
    const [g, b] = [up(gamma), up(beta)];
    for (let step = 0; step < 2; step++) {
      const x = randArr(shape, r, -2 + step, 3 + step);
      const xt = up(x);
      tidy(() => {
        const y = batchNorm(xt, g, b, { runningMean, runningVar }, { training: true, momentum: 0.3 });
        assert.is(runningMean.requiresGrad || runningVar.requiresGrad, false, 'running statistics are not on the tape');
        return y;
      }).dispose();
      [rm, rv] = ref.updateRunning(rm, rv, x, 0.3);
      xt.dispose();
    }
    assertClose(await runningMean.toArray(), rm.data, 1e-6, `running mean ${JSON.stringify(shape)}`);
    assertClose(await runningVar.toArray(), rv.data, 1e-6, `running var ${JSON.stringify(shape)}`);
    // eval mode and training without statistics leave them alone
    const x = up(randArr(shape, r));
    tidy(() => {
      batchNorm(x, g, b, { runningMean, runningVar }, { training: false });
      batchNorm(x, g, b, null, { training: true });
    });
    assertClose(await runningMean.toArray(), rm.data, 1e-6, 'running mean unchanged by eval');
    assertClose(await runningVar.toArray(), rv.data, 1e-6, 'running var unchanged by eval');
    for (const z of [x, g, b, runningMean, runningVar]) z.dispose();
  }
  await sync();
  assert.is(tapeLength(), 0);
  assert.is(liveTensors(), before);
});

t('numerical stability: x = 1000 + small noise', async () => {
  // the std (~0.006) is ~100 f32 ulps of the mean; E[x²] - E[x]² in f32 would be off by about 0.06 / 3e-5
  const before = liveTensors();
  for (const shape of [[3000, 4], [4, 16, 16, 33]]) {
    const C = channels(shape);
    const r = rng(3);
    const x = randArr(shape, r, 1000 - 0.01, 1000 + 0.01);
    const gamma = randArr([C], r, 0.5, 1.5);
    const beta = randArr([C], r);
    const dy = randArr(shape, r);
    const rm = tensor(new Float32Array(C), [C]);
    const rv = tensor(new Float32Array(C), [C]);
    const [xt, g, b] = [up(x, true), up(gamma, true), up(beta, true)];
    // momentum 1: the running variance is the batch's unbiased variance itself
    const y = tidy(() => batchNorm(xt, g, b, { runningMean: rm, runningVar: rv }, { training: true, momentum: 1 }));
    const [wantMean, wantVar] = ref.updateRunning({ data: new Float64Array(C), shape: [C] }, { data: new Float64Array(C), shape: [C] }, x, 1);
    assertClose(await rv.toArray(), wantVar.data, 1e-4, 'batch variance');
    assertClose(await rm.toArray(), wantMean.data, 1e-7, 'batch mean');
    assertClose(await y.toArray(), ref.batchNorm(x, gamma, beta, { training: true }).data, 1e-5, 'y');
    const dyt = up(dy);
    backward(y, dyt);
    const [dx, dgamma, dbeta] = ref.batchNormBackward(x, gamma, beta, dy, { training: true });
    assertClose(await xt.grad!.toArray(), dx.data, 1e-4, 'dx');
    assertClose(await g.grad!.toArray(), dgamma.data, 1e-5, 'dgamma');
    assertClose(await b.grad!.toArray(), dbeta.data, 1e-5, 'dbeta');
    for (const z of [y, dyt, xt, g, b, rm, rv]) z.dispose();
  }
  await sync();
  assert.is(liveTensors(), before);
});

t('dispatch count: at most 3 forward and 3 backward', async () => {
  const r = rng(1);
  for (const shape of [[8, 16], [32, 8, 8, 64]]) {
    const C = channels(shape);
    const [x, g, b] = [up(randArr(shape, r), true), up(randArr([C], r), true), up(randArr([C], r), true)];
    const rm = tensor(new Float32Array(C), [C]);
    const rv = tensor(new Float32Array(C).fill(1), [C]);
    const dy = up(randArr(shape, r));
    const d0 = recorderStats().dispatches;
    const y = tidy(() => batchNorm(x, g, b, { runningMean: rm, runningVar: rv }, { training: true, relu: true }));
    const d1 = recorderStats().dispatches;
    backward(y, dy);
    const d2 = recorderStats().dispatches;
    assert.ok(d1 - d0 <= 3, `forward took ${d1 - d0} dispatches for ${JSON.stringify(shape)}`);
    assert.ok(d2 - d1 <= 3, `backward took ${d2 - d1} dispatches for ${JSON.stringify(shape)}`);
    for (const z of [x, g, b, rm, rv, dy, y]) z.dispose();
  }
  await sync();
});

t('errors name the op and the shapes', async () => {
  const before = liveTensors();
  const made: Tensor[] = [];
  const z = (shape: number[]) => {
    const v = tensor(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    made.push(v);
    return v;
  };
  const x = z([4, 3]);
  const g = z([3]);
  const b = z([3]);
  throwsWith(() => batchNorm(x, z([4]), b, null, { training: true }), 'batchNorm', 'gamma', '[4]', '[3]');
  throwsWith(() => batchNorm(x, g, z([3, 1]), null, { training: true }), 'batchNorm', 'beta', '[3, 1]');
  throwsWith(() => batchNorm(x, g, b, { runningMean: z([2]), runningVar: z([3]) }, { training: true }), 'batchNorm', 'runningMean', '[2]');
  throwsWith(() => batchNorm(x, g, b, { runningMean: z([3]), runningVar: z([3, 3]) }, { training: true }), 'batchNorm', 'runningVar', '[3, 3]');
  throwsWith(() => batchNorm(z([3]), g, b, null, { training: true }), 'batchNorm', 'rank', '[3]');
  throwsWith(() => batchNorm(z([1, 3]), g, b, null, { training: true }), 'batchNorm', 'more than 1 value per channel', '[1, 3]');
  throwsWith(() => batchNorm(z([1, 1, 1, 3]), g, b, null, { training: true }), 'batchNorm', 'more than 1 value per channel');
  throwsWith(() => batchNorm(x, g, b, null, { training: false }), 'batchNorm', 'eval', 'running statistics');
  const shared = z([3]);
  throwsWith(() => batchNorm(x, g, b, { runningMean: shared, runningVar: shared }, { training: true }), 'batchNorm', 'separate');
  const xi = tensor([1, 2, 3, 4, 5, 6], [2, 3], { dtype: 'i32' });
  made.push(xi);
  throwsWith(() => batchNorm(xi, g, b, null, { training: true }), 'batchNorm', 'f32', 'i32');
  // batch 1 is fine in eval mode
  const y = batchNorm(z([1, 3]), g, b, { runningMean: z([3]), runningVar: z([3]) }, { training: false });
  assert.equal(y.shape, [1, 3]);
  y.dispose();
  made.forEach((v) => v.dispose());
  await sync();
  assert.is(liveTensors(), before);
});

t.run();
