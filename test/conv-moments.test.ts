// BatchNorm statistics in the conv epilogue: conv2d({ moments: true }) attaches per-channel moments of its output
// (kernels/conv2d.ts), and batchNorm takes its training statistics from them instead of a pass over that output
// (kernels/batchnorm.ts). Checked here: the moments against float64 block by block; conv -> batchNorm with them
// against the float64 composition, forward and every gradient, with 1 and 2 groups; the cases where no moments
// are written or they cannot be used (then batchNorm computes its own); and that batchNorm really reads them.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { checkOp } from './helpers/gradcheck.ts';
import { tensor, tidy, liveTensors, sync, getDevice, gpu } from '../nn/index.ts';
import { conv2d, convSubgroupWidth, ref as convRef, type ConvTuningOverrides } from '../kernels/conv2d.ts';
import { batchNorm, ref as bnRef } from '../kernels/batchnorm.ts';
import { rng, randArr } from '../nn/check.ts';
import type { Arr } from '../engine/ref.ts';

const t = suite('conv moments');

await getDevice();
const sg = convSubgroupWidth();
const workgroupBytes = gpu('test').info.limits.maxComputeWorkgroupStorageSize ?? 16384;
// every GEMM kernel writes moments: the lane kernels' wide and narrow subgroup layouts at the adapter's width and
// the portable one; the tiled kernel with its default tile and with a small one (8 row groups of invocations to
// merge, several column tiles)
const variants: [string, ConvTuningOverrides][] = [
  ...(sg
    ? ([
        ['subgroups, wide', { variant: 'subgroups', fewChannels: 'gemm', tiles: { narrowRows: 0 } }],
        ['subgroups, narrow split', { variant: 'subgroups', fewChannels: 'gemm', tiles: { narrowRows: 16 } }],
      ] as [string, ConvTuningOverrides][])
    : []),
  ['portable', { variant: 'portable', fewChannels: 'gemm' }],
  ['tiled', { variant: 'tiled', fewChannels: 'gemm' }],
  ['tiled 32x16x8', { variant: 'tiled', fewChannels: 'gemm', tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } }],
];

// [name, N, H, Cin, K, Cout, stride, pad, bias]: every one has 128 * k output rows, so whole row tiles of every
// variant above (up to 128 rows at 8 lanes with one narrow column quad)
type Shape = [string, number, number, number, number, number, number, number, boolean];
const SHAPES: Shape[] = [
  ['3x3 8->16, bias', 4, 8, 8, 3, 16, 1, 1, true],
  ['3x3 8->4 (one column quad)', 2, 8, 8, 3, 4, 1, 1, false],
  ['3x3 8->6 (channels not a multiple of 4)', 2, 8, 8, 3, 6, 1, 1, true],
  ['3x3 stride 2, 4->128 (several column tiles, two column quads per lane)', 8, 8, 4, 3, 128, 2, 1, false],
  ['3x3 3->16 (the padded RGB stem)', 2, 8, 3, 3, 16, 1, 1, false],
  ['1x1 12->8', 2, 8, 12, 1, 8, 1, 0, false],
];

function blockMoments(y: Arr, rowsPerBlock: number): { mean: Float64Array; m2: Float64Array } {
  const C = y.shape[y.shape.length - 1];
  const blocks = y.data.length / C / rowsPerBlock;
  const mean = new Float64Array(blocks * C);
  const m2 = new Float64Array(blocks * C);
  for (let b = 0; b < blocks; b++) for (let c = 0; c < C; c++) {
    let s = 0;
    for (let r = 0; r < rowsPerBlock; r++) s += y.data[(b * rowsPerBlock + r) * C + c];
    const m = s / rowsPerBlock;
    let d2 = 0;
    for (let r = 0; r < rowsPerBlock; r++) d2 += (y.data[(b * rowsPerBlock + r) * C + c] - m) ** 2;
    mean[b * C + c] = m;
    m2[b * C + c] = d2;
  }
  return { mean, m2 };
}

const inputs = ([, N, H, Cin, K, Cout, , , bias]: Shape, seed: number): Arr[] => {
  const r = rng(seed);
  // a mean well away from 0 (|mean| >> std in some channels) is where raw sums of squares would cancel
  return [randArr([N, H, H, Cin], r, 0.5, 2), randArr([K, K, Cin, Cout], r, -0.3, 0.6), ...(bias ? [randArr([Cout], r, 3, 5)] : [])];
};

for (const [vname, tuning] of variants) {
  for (const shape of SHAPES) {
    const [name, , , , , Cout, s, p] = shape;
    t(`conv2d [${vname}] ${name}: the attached moments match float64 block by block`, async () => {
      const [x, w, b] = inputs(shape, 1);
      const yRef = convRef.conv2d(x, w, b ?? null, s, p);
      const before = liveTensors();
      const xt = tensor(Float32Array.from(x.data), x.shape);
      const wt = tensor(Float32Array.from(w.data), w.shape);
      const bt = b ? tensor(Float32Array.from(b.data), b.shape) : null;
      const y = conv2d(xt, wt, bt, { stride: s, padding: p, moments: true, tuning });
      const m = y.takeMoments();
      assert.ok(m, 'moments attached');
      const rows = yRef.data.length / Cout;
      assert.is(m!.partials.shape[0] * m!.rowsPerPartial, rows, 'the blocks cover every row once');
      const got = await m!.partials.toArray();
      const want = blockMoments(yRef, m!.rowsPerPartial);
      for (let i = 0; i < want.mean.length; i++) {
        const [blk, c] = [Math.floor(i / Cout), i % Cout];
        const gm = got[2 * blk * Cout + c];
        const g2 = got[(2 * blk + 1) * Cout + c];
        // f32 conv outputs: the mean to their rounding; M2 to rounding relative to the block's spread
        assert.ok(Math.abs(gm - want.mean[i]) <= 1e-5 * (1 + Math.abs(want.mean[i])), `block ${blk} channel ${c}: mean ${gm} vs ${want.mean[i]}`);
        assert.ok(Math.abs(g2 - want.m2[i]) <= 1e-4 * (1e-3 + want.m2[i]) + 1e-5 * want.mean[i] ** 2, `block ${blk} channel ${c}: M2 ${g2} vs ${want.m2[i]}`);
      }
      for (const v of [xt, wt, bt, y, m!.partials]) v?.dispose();
      await sync();
      assert.is(liveTensors(), before, 'nothing left behind');
    });

    for (const groups of [1, 2]) {
      // without the conv bias: through a batchNorm its gradient is exactly 0, and the GPU's is rounding
      t(`conv2d [${vname}] ${name} -> batchNorm (groups ${groups}, ReLU) from the moments: forward and every gradient`, () => {
        const o = { training: true, relu: true, groups };
        const [x, w] = inputs(shape, 2);
        return checkOp({
          shapes: [x.shape, w.shape, [Cout], [Cout]],
          range: [[0.5, 2], [-0.3, 0.6], [0.5, 1.5], [-0.5, 0.5]],
          ref: ([x, w, gamma, beta]) => bnRef.batchNorm(convRef.conv2d(x, w, null, s, p), gamma, beta, o),
          refGrad: ([x, w, gamma, beta], dy) => {
            const [dyc, dg, db] = bnRef.batchNormBackward(convRef.conv2d(x, w, null, s, p), gamma, beta, dy, o);
            return [...convRef.conv2dBackward(x, w, dyc, s, p).slice(0, 2), dg, db];
          },
          gpu: ([x, w, gamma, beta]) => {
            const y = conv2d(x, w, null, { stride: s, padding: p, moments: true, tuning });
            if (!y.hasMoments) throw new Error('conv2d attached no moments');
            const out = batchNorm(y, gamma, beta, null, o);
            if (y.hasMoments) throw new Error('batchNorm did not take the moments');
            return out;
          },
          tol: 1e-4,
        });
      });
    }
  }
}

t('batchNorm takes its statistics from attached moments (made-up ones give their normalization) and moves the running statistics by them', async () => {
  const C = 4;
  const rows = 8;
  const x = tensor(Float32Array.from({ length: rows * C }, (_, i) => i % 7), [rows, C]);
  // two blocks of 4 rows: channel c has block means c and c + 2, squared deviations 3 each, so over all 8 rows
  // mean c + 1, variance (3 + 3 + 4 * 1 + 4 * 1) / 8 = 1.75
  const partials = tensor(Float32Array.from([0, 1, 2, 3, 3, 3, 3, 3, 2, 3, 4, 5, 3, 3, 3, 3]), [2, 2, C]);
  x.attachMoments({ partials, rowsPerPartial: 4 });
  const gamma = tensor(new Float32Array(C).fill(1));
  const beta = tensor(new Float32Array(C));
  const runningMean = tensor(new Float32Array(C));
  const runningVar = tensor(new Float32Array(C).fill(1));
  const y = batchNorm(x, gamma, beta, { runningMean, runningVar }, { training: true, eps: 0, momentum: 0.5 });
  const [xv, yv, rm, rv] = await Promise.all([x.toArray(), y.toArray(), runningMean.toArray(), runningVar.toArray()]);
  for (let i = 0; i < xv.length; i++) {
    const c = i % C;
    assert.ok(Math.abs(yv[i] - (xv[i] - (c + 1)) / Math.sqrt(1.75)) < 1e-5, `y[${i}] = ${yv[i]} normalized by the moments' statistics`);
  }
  for (let c = 0; c < C; c++) {
    assert.ok(Math.abs(rm[c] - 0.5 * (c + 1)) < 1e-6, `running mean ${rm[c]}`);
    assert.ok(Math.abs(rv[c] - (0.5 + 0.5 * 1.75 * (8 / 7))) < 1e-6, `running variance ${rv[c]} (unbiased over the 8 rows)`);
  }
  assert.ok(!x.hasMoments && partials.disposed, 'batchNorm took the moments and freed them');
  for (const v of [x, y, gamma, beta, runningMean, runningVar]) v.dispose();
});

t('no moments where the kernel cannot write them: a tiled tile without room for them, a partial last row tile; batchNorm then computes its own', async () => {
  const before = liveTensors();
  tidy(() => {
    const w = tensor(new Float32Array(9 * 8 * 16).fill(0.01), [3, 3, 8, 16]);
    // operands that fit in the device's workgroup memory, but not with the row groups' moments beside them
    const big = { TM: 64, TN: 128, TK: workgroupBytes >= 32768 ? 32 : 16, RM: 4, CQ: 2 };
    const tiled = conv2d(tensor(new Float32Array(4 * 8 * 8 * 8).fill(1), [4, 8, 8, 8]), w, null, { padding: 1, moments: true, tuning: { variant: 'tiled', tiled: big } });
    assert.not.ok(tiled.hasMoments, `tiled ${JSON.stringify(big)}: none`);
    const fits = conv2d(tensor(new Float32Array(4 * 8 * 8 * 8).fill(1), [4, 8, 8, 8]), w, null, { padding: 1, moments: true, tuning: { variant: 'tiled' } });
    assert.ok(fits.hasMoments, 'the default tile: attached');
    fits.takeMoments()!.partials.dispose();
    const partial = conv2d(tensor(new Float32Array(3 * 7 * 7 * 8).fill(1), [3, 7, 7, 8]), w, null, { padding: 1, moments: true, tuning: { variant: 'portable' } });
    assert.not.ok(partial.hasMoments, '147 rows: none');
  });
  await sync();
  assert.is(liveTensors(), before);
});

// groups whose rows are not whole blocks: 256 rows in 4 groups of 64, blocks of 128 rows (one narrow column quad
// at 8 lanes) or the adapter's own; batchNorm must fall back wherever a block straddles two groups
for (const [vname, tuning] of variants) {
  t(`conv2d [${vname}] -> batchNorm with 4 groups of 64 rows: correct whether or not the blocks fit the groups`, () => {
    const o = { training: true, groups: 4 };
    return checkOp({
      shapes: [[4, 8, 8, 8], [3, 3, 8, 4], [4], [4]],
      range: [[0.5, 2], [-0.3, 0.6], [0.5, 1.5], [-0.5, 0.5]],
      ref: ([x, w, gamma, beta]) => bnRef.batchNorm(convRef.conv2d(x, w, null, 1, 1), gamma, beta, o),
      refGrad: ([x, w, gamma, beta], dy) => {
        const [dyc, dg, db] = bnRef.batchNormBackward(convRef.conv2d(x, w, null, 1, 1), gamma, beta, dy, o);
        return [...convRef.conv2dBackward(x, w, dyc, 1, 1).slice(0, 2), dg, db];
      },
      gpu: ([x, w, gamma, beta]) => batchNorm(conv2d(x, w, null, { padding: 1, moments: true, tuning }), gamma, beta, null, o),
      tol: 1e-4,
    });
  });
}

t.run();
