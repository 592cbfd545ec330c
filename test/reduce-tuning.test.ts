// The 'reduce' record (kernels/reduce.ts): every workgroup size and both trees forced through the per-call options
// of each family that reduces (sum/mean/max, softmax and softmaxCrossEntropy, cosineLoss, the optimizers' norms),
// forward and every gradient against the float64 references on awkward shapes: 1 element, sizes below, just above
// and far above the workgroup, rows that are not multiples of it, and more rows than a grid dimension holds.
// The 'subgroup' tree runs here at lavapipe's 8 lanes (16 with LP_NATIVE_VECTOR_WIDTH=512): narrower than the
// GPUs it is the default for, which makes more subgroup partials per workgroup for the pass over them.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkOp, rng, randArr, assertClose, type OpCase } from './helpers/gradcheck.ts';
import { getDevice, gpu } from '../engine/device.ts';
import { setDeviceTuning, deviceTuning } from '../engine/tuning.ts';
import { declaredKernels } from '../engine/kernel.ts';
import { tensor, tidy, sync, liveTensors, backward } from '../nn/index.ts';
import { sum, mean, max, ref as reduceRef, reduceTuning, defaultReduceTuning, defaultReduceTuningFor, REDUCE_TUNING, workgroupTree, type ReduceTuning } from '../kernels/reduce.ts';
import { softmax, softmaxCrossEntropy, ref as softmaxRef } from '../kernels/softmax.ts';
import { cosineLoss, ref as cosineRef } from '../kernels/cosine.ts';
import { segmentStats, ref as optimRef } from '../kernels/optim.ts';
import { LARS } from '../nn/optim.ts';
import { optimSetup, setGrads, assertSegments } from '../nn/checks/optim.ts';
import { labelsFor } from '../nn/checks/softmax.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('reduce tuning');

await getDevice();
const hasSubgroups = gpu().hasSubgroups;
const trees = hasSubgroups ? (['shared', 'subgroup'] as const) : (['shared'] as const);
const PATHS: ReduceTuning[] = [];
for (const tree of trees) for (const workgroupSize of [32, 64, 128, 256]) PATHS.push({ workgroupSize, tree, longRow: 1 });
const label = (p: ReduceTuning) => `[${p.tree} ${p.workgroupSize}]`;

t('defaults: the workgroup-memory tree on CPU adapters (this one), the subgroup tree where subgroups reach 32 lanes', () => {
  const here = defaultReduceTuning();
  const info: any = (gpu().adapter as any).info ?? {};
  if (!hasSubgroups || (info.subgroupMaxSize ?? 0) < 32) assert.equal(here, { workgroupSize: 256, tree: 'shared', longRow: 0 });
  assert.equal(defaultReduceTuningFor(0), { workgroupSize: 256, tree: 'shared', longRow: 0 });
  assert.equal(defaultReduceTuningFor(16), { workgroupSize: 256, tree: 'shared', longRow: 0 });
  assert.equal(defaultReduceTuningFor(32), { workgroupSize: 256, tree: 'subgroup', longRow: 128 });
  assert.equal(defaultReduceTuningFor(64), { workgroupSize: 256, tree: 'subgroup', longRow: 128 });
});

t('the generated trees: a barrier per level in workgroup memory, or one barrier after the subgroup sums', () => {
  const shared = workgroupTree({ workgroupSize: 128, tree: 'shared', longRow: 0 }, { name: 'q', type: 'f32', op: 'sum', who: 'first' });
  assert.equal(shared.enable, []);
  assert.match(shared.header, 'var<workgroup> q: array<f32, 128>;');
  assert.not.match(shared.code('v'), 'subgroup');
  const sg = workgroupTree({ workgroupSize: 128, tree: 'subgroup', longRow: 0 }, { name: 'q', type: 'vec2<f32>', op: 'max', who: 'all' });
  assert.equal(sg.enable, ['subgroups']);
  assert.match(sg.header, 'var<workgroup> q_mask: array<atomic<u32>, 4>;');
  const code = sg.code('v');
  assert.match(code, 'subgroupMax(v)');
  assert.match(code, 'subgroupElect()');
  assert.is(code.split('workgroupBarrier()').length - 1, 1, 'one barrier');
  assert.not.match(code, 'sgsize', 'nothing assumes a subgroup size');
});

// ---- sum, mean, max -------------------------------------------------------------------------------------------

const reduceShapes: [number[], number[] | undefined][] = [
  [[1], undefined], // one element: a view, no kernel
  [[5, 64], [1]], // rows of 64: the row kernel with fewer terms than most workgroups
  [[3, 257], [1]], // rows just past 256
  [[300, 70], [1]], // many workgroups, rows not a multiple of any workgroup size
  [[9, 1000], [0]], // columns
  [[4099, 3], [0]], // few outputs, long columns: two levels
  [[100003], undefined], // one long row
];
const reduceFns = { sum, mean, max };
for (const path of PATHS) {
  for (const op of ['sum', 'mean', 'max'] as const) {
    for (const [shape, axes] of reduceShapes) {
      const all = shape.map((_, i) => i);
      t(`${op} ${label(path)} ${JSON.stringify(shape)} axes=${JSON.stringify(axes)}`, () =>
        checkOp({
          shapes: [shape],
          ref: ([x]) => reduceRef.reduce(op, x, axes ?? all),
          refGrad: ([x], dy) => [reduceRef.reduceBackward(op, x, axes ?? all, dy)],
          gpu: ([x]) => reduceFns[op](x, axes, false, { tuning: path }),
          tol: 1e-5,
        }));
    }
  }
}

// max's gradient is shared among ties: integer inputs make many (the count of ties is itself a tree reduction)
for (const path of PATHS) {
  t(`max ${label(path)} with ties splits the gradient`, async () => {
    const before = liveTensors();
    const r = rng(7);
    const xa = { data: Float64Array.from({ length: 6 * 300 }, () => Math.floor(r() * 3)), shape: [6, 300] };
    const dya = randArr([6], r);
    const x = tensor(Float32Array.from(xa.data), xa.shape, { requiresGrad: true });
    const y = tidy(() => max(x, 1, false, { tuning: path }));
    assertClose(await y.toArray(), reduceRef.reduce('max', xa, [1]).data, 1e-6, 'max');
    const dy = tensor(Float32Array.from(dya.data), [6]);
    backward(y, dy);
    assertClose(await x.grad!.toArray(), reduceRef.reduceBackward('max', xa, [1], dya).data, 1e-6, 'gradient');
    for (const v of [x, y, dy]) v.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });
}

// ---- softmax and softmaxCrossEntropy: a workgroup per row (longRow 1 sends every row there) --------------------

const softmaxShapes: [number[], number][] = [[[1, 1], 1], [[3, 7], 3], [[70, 33], 4], [[4, 300], 60], [[2, 1000], 3]];
const xentShapes: [number, number, number][] = [[1, 1, 3], [33, 7, 5], [5, 1000, 3], [6, 9, 80], [300, 10, 3]];
const softmaxPaths = [...PATHS, { ...PATHS[PATHS.length - 1], longRow: 100 }]; // mixed: short rows per invocation
for (const path of softmaxPaths) {
  const name = path.longRow === 1 ? label(path) : `[${path.tree} ${path.workgroupSize}, rows from ${path.longRow}]`;
  for (const [shape, range] of softmaxShapes) {
    t(`softmax ${name} ${JSON.stringify(shape)}`, () =>
      checkOp({
        shapes: [shape],
        range: [-range, range],
        ref: ([x]) => softmaxRef.softmax(x),
        refGrad: ([x], dy) => [softmaxRef.softmaxBackward(x, dy)],
        gpu: ([x]) => softmax(x, { tuning: path }),
        tol: 1e-5,
      }));
  }
  for (const [N, K, range] of xentShapes) {
    const labels = labelsFor(N, K, N * 31 + K);
    t(`softmaxCrossEntropy ${name} [${N}, ${K}] logits in ±${range}`, () =>
      checkOp({
        shapes: [[N, K]],
        range: [-range, range],
        ref: ([x]) => softmaxRef.softmaxCrossEntropy(x, labels),
        refGrad: ([x], dy) => [softmaxRef.softmaxCrossEntropyBackward(x, labels, dy)],
        gpu: ([x]) => softmaxCrossEntropy(x, tensor(labels, [N], { dtype: 'i32' }), { tuning: path }),
        tol: 1e-5,
      }));
  }
}

t('a label out of range still gives NaN on the long-row kernel', async () => {
  const x = tensor(new Float32Array(2 * 300).map((_, i) => i % 7), [2, 300]);
  const labels = tensor([0, 300], [2], { dtype: 'i32' });
  const loss = softmaxCrossEntropy(x, labels, { tuning: PATHS[PATHS.length - 1] });
  assert.ok(Number.isNaN(await loss.item()));
  for (const v of [x, labels, loss]) v.dispose();
});

// ---- cosineLoss ------------------------------------------------------------------------------------------------

const cosineShapes = [[1, 3], [5, 256], [33, 129], [256, 64], [3, 4099], [70000, 4]];
for (const path of PATHS) {
  for (const shape of cosineShapes) {
    t(`cosineLoss ${label(path)} ${JSON.stringify(shape)}`, () =>
      checkOp({
        shapes: [shape, shape],
        noGrad: [1],
        ref: ([p, z]) => cosineRef.cosineLoss(p, z),
        refGrad: ([p, z], dy) => cosineRef.cosineLossBackward(p, z, dy),
        gpu: ([p, z]) => cosineLoss(p, z, { tuning: path }),
        tol: 1e-5,
      }));
  }
}

// ---- the optimizers' segmented norms ----------------------------------------------------------------------------

for (const path of PATHS) {
  t(`segment norms ${label(path)}: every segment (1 to 9797 floats, several chunks) against float64`, async () => {
    const before = liveTensors();
    const S = optimSetup(40);
    setGrads(S, 0, rng(41));
    S.arena.gatherGrads();
    const stats = segmentStats(S.arena, S.arena.data, S.arena.grad, 0.05, 1e-3, { tuning: path });
    const v = await stats.toArray();
    stats.dispose();
    S.segs.forEach((s, k) => {
      const u = s.g.map((g, i) => g + (s.kind === 'weight' ? 0.05 * s.w[i] : 0));
      assertClose([v[4 * k + 1]], [optimRef.norm(s.w)], 1e-5, `${S.arena.segments[k].name}: ||w||`);
      assertClose([v[4 * k + 2]], [optimRef.norm(u)], 1e-5, `${S.arena.segments[k].name}: ||g + wd·w||`);
    });
    S.arena.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });

  t(`LARS ${label(path)} matches BYOL's optax chain over 3 steps`, async () => {
    const before = liveTensors();
    const S = optimSetup(50);
    const r = rng(51);
    const c = { momentum: 0.9, weightDecay: 0.05, eta: 1e-3 };
    const opt = new LARS(S.arena, { lr: 0.2, ...c, tuning: path });
    const mu = S.segs.map((s) => new Float64Array(s.w.length));
    for (let step = 0; step < 3; step++) {
      setGrads(S, step, r);
      opt.step(0.5 + step);
      optimRef.lars(S.segs, mu, { ...c, lr: 0.5 + step });
      assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 2e-6, `weights after step ${step + 1}`);
    }
    opt.dispose();
    S.arena.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });
}

// ---- the record: the device's choice without options, and the errors --------------------------------------------

t('the device record decides when a call passes no tuning', async () => {
  const saved = deviceTuning(REDUCE_TUNING, defaultReduceTuning);
  const path: ReduceTuning = { workgroupSize: 64, tree: trees[trees.length - 1], longRow: 0 };
  setDeviceTuning(REDUCE_TUNING, path);
  try {
    const xa = randArr([3, 500], rng(8));
    const x = tensor(Float32Array.from(xa.data), xa.shape);
    const y = sum(x, 1);
    assertClose(await y.toArray(), reduceRef.reduce('sum', xa, [1]).data, 1e-5, 'sum');
    assert.ok(declaredKernels().has(`reduce|row|sum|64|${path.tree}`), 'the row kernel of the record was declared');
    for (const v of [x, y]) v.dispose();
  } finally {
    setDeviceTuning(REDUCE_TUNING, saved);
  }
});

t('a bad record names the op, the field and what is allowed', () => {
  const x = tensor([1, 2, 3], [3]);
  const p = tensor([1, 2, 3], [1, 3]);
  throwsWith(() => sum(x, 0, false, { tuning: { workgroupSize: 100 } }), 'sum', 'workgroupSize', 'power of two', '100');
  throwsWith(() => mean(x, 0, false, { tuning: { workgroupSize: 16 } }), 'mean', 'workgroupSize', '16');
  throwsWith(() => max(x, 0, false, { tuning: { workgroupSize: 4096 } }), 'max', 'workgroupSize', '4096');
  throwsWith(() => sum(x, 0, false, { tuning: { tree: 'butterfly' as any } }), 'sum', 'tree', 'butterfly');
  throwsWith(() => softmax(p, { tuning: { longRow: -1 } }), 'softmax', 'longRow', '-1');
  throwsWith(() => cosineLoss(p, p, { tuning: { workgroupSize: 48 } }), 'cosineLoss', 'workgroupSize', '48');
  assert.equal(reduceTuning({ workgroupSize: undefined }), reduceTuning(), 'an option left undefined keeps the record');
  x.dispose();
  p.dispose();
});

t.run();
