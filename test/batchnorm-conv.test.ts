// batchNormConv2d (kernels/batchnorm-conv.ts): conv(batchNorm(x)) as one op whose backward takes batchNorm's
// sums from the conv's dx epilogue. Checked here: forward and every gradient against the float64 composition on
// the lane kernels' wide, narrow and portable layouts and the tiled kernel, with 1 and 2 groups, with and without the ReLU; the shapes
// where it falls back to the two ops; that the fused backward really skips batchNorm's pass over x and dy; that
// the tiled kernels run the batchNorm as the prologue of the forward and dW (no normalize pass); and that a ResNet
// block takes it.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkOp, checkTests } from './helpers/gradcheck.ts';
import { tensor, tidy, sync, getDevice, backward, liveTensors, clearTape } from '../nn/index.ts';
import { materialize } from '../nn/module.ts';
import { convSubgroupWidth, convTuning, type ConvTuningOverrides } from '../kernels/conv2d.ts';
import { setDeviceTuning } from '../engine/tuning.ts';
import { batchNormConv2d, batchNormConvFuses, batchNormConvPrologue } from '../kernels/batchnorm-conv.ts';
import { ref as convRef } from '../kernels/conv2d.ts';
import { ref as bnRef } from '../kernels/batchnorm.ts';
import { relErr } from './helpers/gradcheck.ts';
import { BN_CONV_SHAPES, BN_CONV_FALLBACK_SHAPES, batchNormConvCase, batchNormConvCases, type BnConvShape } from '../nn/checks/batchnorm-conv.ts';
import { recordDispatches } from '../engine/recorder.ts';
import { BasicBlock } from '../byol/resnet.ts';
import { withBatchNormGroups } from '../nn/layers.ts';
import { rng, randArr, opChecks } from '../nn/check.ts';

const t = suite('batchNorm -> conv2d fused');

const ctx = await getDevice();
const sg = convSubgroupWidth();
const workgroupBytes = ctx.info.limits.maxComputeWorkgroupStorageSize ?? 16384;
const variants: [string, ConvTuningOverrides][] = [
  ...(sg
    ? ([
        ['subgroups, narrow split', { variant: 'subgroups', tiles: { narrowRows: 16 } }],
        ['subgroups, wide', { variant: 'subgroups', tiles: { narrowRows: 0 } }],
        ['subgroups, buffer operands', { variant: 'subgroups', textures: false }],
      ] as [string, ConvTuningOverrides][])
    : []),
  ['portable', { variant: 'portable' }],
  ['tiled', { variant: 'tiled', bnPrologue: false }],
  // the tiled kernels with the batchNorm as the prologue of the forward and dW (asserted below; the default on
  // GPUs); the small tile has 8 row groups of invocations and several column tiles
  ['tiled, batchNorm prologue', { variant: 'tiled', bnPrologue: true }],
  ['tiled 32x16x8, batchNorm prologue', { variant: 'tiled', bnPrologue: true, tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } }],
];

for (const [vname, tuning] of variants) {
  for (const shape of BN_CONV_SHAPES) {
    for (const groups of [1, 2]) {
      for (const relu of [true, false]) {
        const c = batchNormConvCase(shape, { training: true, relu, groups }, tuning, true);
        t(`[${vname}] ${c.name}: forward and every gradient against float64`, () => checkOp(c));
      }
    }
  }
}

// where dx's row tiles straddle a group or the layer is not one dx can take, the two ops run
for (const [tuning, shape] of [
  [{}, BN_CONV_FALLBACK_SHAPES[0]],
  [{}, BN_CONV_FALLBACK_SHAPES[1]],
  [{ variant: 'tiled' }, BN_CONV_FALLBACK_SHAPES[0]],
  // a tile whose operands fit in the device's workgroup memory, but not with its row groups' sums beside them
  [{ variant: 'tiled', tiled: { TM: 64, TN: 128, TK: workgroupBytes >= 32768 ? 32 : 16, RM: 4, CQ: 2 } }, BN_CONV_SHAPES[1]],
] as [ConvTuningOverrides, BnConvShape][]) {
  const c = batchNormConvCase(shape, { training: true, relu: true, groups: 2 }, tuning, false);
  t(`falls back to batchNorm then conv2d${tuning.variant ? ` (${tuning.variant} kernels${tuning.tiled ? ` ${JSON.stringify(tuning.tiled)}` : ''})` : ''}: ${c.name}`, () => checkOp(c));
}

checkTests(opChecks(batchNormConvCases).map((c) => ({ ...c, name: `the page's case ${c.name}` })), t);

t('the fused backward runs no batchNorm pass over x and dy: the sums come from the conv dx', async () => {
  if (!sg) return; // the portable kernels fuse too, but the default tuning here is the subgroup one
  const r = rng(7);
  const [x, gamma, beta, w] = [randArr([2, 8, 8, 16], r), randArr([16], r, 0.5, 1.5), randArr([16], r), randArr([3, 3, 16, 16], r)]
    .map((a) => tensor(Float32Array.from(a.data), a.shape, { requiresGrad: true }));
  const o = { training: true, relu: true, groups: 2 };
  assert.ok(batchNormConvFuses(x, w, null, o, { padding: 1 }));
  const y = tidy(() => batchNormConv2d(x, gamma, beta, null, o, w, null, { padding: 1 }));
  const dy = tensor(Float32Array.from(randArr(y.shape, r).data), y.shape);
  recordDispatches(true);
  backward(y, dy);
  const names = recordDispatches(false).map((d) => d.name);
  dy.dispose();
  assert.ok(names.includes('batchNorm.backward.finish'), `the sums are finished: ${names.join(', ')}`);
  assert.not.ok(names.some((n) => n.startsWith('batchNorm.backward.reduce')), `no reduce pass: ${names.join(', ')}`);
  assert.ok(names.includes('batchNorm.backward.dx'));
  for (const v of [x, gamma, beta, w, y]) v.dispose();
  await sync();
});

for (const record of ['default', 'tiled'] as const) t(`a ResNet basic block in training takes the fused op (the device's ${record === 'tiled' ? 'tiled record with the prologue' : 'default record'}); turned off, the same output and gradients`, async () => {
  const saved = convTuning();
  if (record === 'tiled') setDeviceTuning('conv2d', convTuning({ variant: 'tiled', bnPrologue: true }));
  try {
    await blockFusedVsPlain(record === 'tiled');
  } finally {
    setDeviceTuning('conv2d', saved);
  }
});

async function blockFusedVsPlain(tiled: boolean): Promise<void> {
  const r = rng(11);
  const xa = randArr([4, 8, 8, 8], r, -1, 1);
  const dya = randArr([4, 8, 8, 8], r, -1, 1);
  const run = async (fuse: boolean) => {
    const block = materialize(new BasicBlock(8, 8, 1), { seed: 5 });
    block.train();
    block.bn1.fuseConv = fuse;
    const x = tensor(Float32Array.from(xa.data), xa.shape, { requiresGrad: true });
    recordDispatches(true);
    const y = tidy(() => withBatchNormGroups(block, 2, () => block.forward(x)));
    const dy = tensor(Float32Array.from(dya.data), dya.shape);
    backward(y, dy);
    dy.dispose();
    const names = recordDispatches(false).map((d) => d.name);
    const grads = [await x.grad!.toArray()];
    for (const [, p] of block.namedParameters()) grads.push(await p.grad!.toArray());
    const out = await y.toArray();
    y.dispose();
    x.dispose();
    block.dispose();
    return { names, grads, out };
  };
  const before = liveTensors();
  const fused = await run(true);
  const plain = await run(false);
  await sync();
  assert.is(liveTensors(), before, 'both runs released everything');
  const count = (names: string[], name: string) => names.filter((n) => n.startsWith(name)).length;
  assert.is(count(fused.names, 'batchNorm.backward.reduce'), count(plain.names, 'batchNorm.backward.reduce') - 1, 'one batchNorm reduce pass fewer (bn1)');
  if (tiled) {
    // bn1's normalize runs in conv2's prologue: its output differs from the composition's only by the order of
    // float32 operations inside the conv
    assert.is(count(fused.names, 'batchNorm.normalize'), count(plain.names, 'batchNorm.normalize') - 1, 'one normalize pass fewer (bn1)');
    assert.ok(relErr(fused.out, plain.out) <= 1e-6, `the same forward: ${relErr(fused.out, plain.out)}`);
  } else assert.equal(Array.from(fused.out), Array.from(plain.out), 'the same forward');
  assert.is(fused.grads.length, plain.grads.length);
  fused.grads.forEach((a, k) => {
    const b = plain.grads[k];
    let worst = 0;
    let scale = 0;
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs(a[i] - b[i]));
      scale = Math.max(scale, Math.abs(b[i]));
    }
    // the sums differ only in their float32 order
    assert.ok(worst <= 1e-4 * scale, `gradient ${k}: fused and plain differ by ${worst} (largest ${scale})`);
  });
}

t('tiled kernels: the batchNorm runs as the prologue of the forward and dW, so no normalize pass runs, with or without gradients', async () => {
  const r = rng(9);
  const tuning: ConvTuningOverrides = { variant: 'tiled', bnPrologue: true };
  const xa = randArr([4, 8, 8, 8], r, 0.5, 2);
  const [ga, ba, wa] = [randArr([8], r, 0.5, 1.5), randArr([8], r, -0.5, 0.5), randArr([3, 3, 8, 12], r, -0.3, 0.6)];
  const o = { training: true, relu: true, groups: 2 };
  const want = convRef.conv2d(bnRef.batchNorm(xa, ga, ba, o), wa, null, 1, 1);
  const before = liveTensors();
  for (const grad of [true, false]) {
    const [x, gamma, beta, w] = [xa, ga, ba, wa].map((a) => tensor(Float32Array.from(a.data), a.shape, { requiresGrad: grad }));
    if (grad) assert.ok(batchNormConvPrologue(x, w, null, o, { padding: 1, tuning }), 'the prologue path');
    recordDispatches(true);
    const y = tidy(() => batchNormConv2d(x, gamma, beta, null, o, w, null, { padding: 1, tuning }));
    let names = recordDispatches(false).map((d) => d.name);
    assert.not.ok(names.includes('batchNorm.normalize'), `${grad ? 'with' : 'without'} gradients, no normalize pass: ${names.join(', ')}`);
    assert.ok(names.includes('conv2d.fwd.tiled'), names.join(', '));
    assert.ok(relErr(await y.toArray(), want.data) <= 1e-5, `${grad ? 'with' : 'without'} gradients: forward vs float64`);
    if (grad) {
      const dy = tensor(new Float32Array(y.size).fill(0.1), y.shape);
      recordDispatches(true);
      backward(y, dy);
      names = recordDispatches(false).map((d) => d.name);
      dy.dispose();
      assert.ok(names.includes('conv2d.dW.tiled') && names.includes('conv2d.dx.tiled'), names.join(', '));
      assert.not.ok(names.some((n) => n.startsWith('batchNorm.backward.reduce') || n === 'batchNorm.normalize'), names.join(', '));
    }
    for (const v of [x, gamma, beta, w, y]) {
      v.grad?.dispose();
      v.dispose();
    }
  }
  await sync();
  assert.is(liveTensors(), before, 'nothing left behind');
});

t("the record's bnPrologue switches the prologue (off: a normalize pass runs), with the same result", async () => {
  const r = rng(10);
  const arrs = [randArr([4, 8, 8, 8], r, 0.5, 2), randArr([8], r, 0.5, 1.5), randArr([8], r, -0.5, 0.5), randArr([3, 3, 8, 8], r, -0.3, 0.6)];
  const o = { training: true, relu: true, groups: 2 };
  const outs: Float32Array[] = [];
  for (const bnPrologue of [true, false]) {
    const tuning: ConvTuningOverrides = { variant: 'tiled', bnPrologue };
    const [x, gamma, beta, w] = arrs.map((a) => tensor(Float32Array.from(a.data), a.shape, { requiresGrad: true }));
    assert.is(batchNormConvPrologue(x, w, null, o, { padding: 1, tuning }), bnPrologue);
    recordDispatches(true);
    const y = tidy(() => batchNormConv2d(x, gamma, beta, null, o, w, null, { padding: 1, tuning }));
    const names = recordDispatches(false).map((d) => d.name);
    assert.is(names.includes('batchNorm.normalize'), !bnPrologue, names.join(', '));
    outs.push(await y.toArray() as Float32Array);
    for (const v of [x, gamma, beta, w, y]) v.dispose();
    clearTape();
  }
  assert.ok(relErr(outs[0], outs[1]) <= 1e-6, `prologue on and off: ${relErr(outs[0], outs[1])}`);
});

t('where the prologue cannot run (channels not in quads), the composition does', () => {
  const x = tensor(new Float32Array(2 * 4 * 4 * 6), [2, 4, 4, 6]);
  const w = tensor(new Float32Array(9 * 6 * 8), [3, 3, 6, 8]);
  const gamma = tensor(new Float32Array(6).fill(1));
  const beta = tensor(new Float32Array(6));
  // channels not in quads: the composition runs (and the op still gives a result)
  assert.not.ok(batchNormConvPrologue(x, w, null, { training: true, groups: 2 }, { padding: 1, tuning: { variant: 'tiled' } }));
  const y = tidy(() => batchNormConv2d(x, gamma, beta, null, { training: true, groups: 2 }, w, null, { padding: 1, tuning: { variant: 'tiled' } }));
  assert.equal(y.shape, [2, 4, 4, 8]);
  for (const v of [x, w, gamma, beta, y]) v.dispose();
});

t.run();
