import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { opTest, checkOp } from './helpers/gradcheck.ts';
import { tensor, variable, backward, tidy, liveTensors, sync, getDevice, add, mul, mulScalar, sum } from '../nn/index.ts';
import { conv2d, convSubgroupWidth, ref, DEFAULT_TILED_TILES, type ConvTuningOverrides } from '../kernels/conv2d.ts';
import { conv2dCases, conv2dCase, conv2dEpilogueCase, CONV_SHAPES, EPILOGUE_SHAPES, type ConvCase } from '../nn/checks/conv2d.ts';
import { directSuits, DIRECT_MAX_CIN } from '../kernels/conv2d-direct.ts';
import { throwsWith } from './helpers/errors.ts';
import { recordDispatches } from '../engine/recorder.ts';

const t = suite('conv2d');

// the adapter's own variant: the cases live in nn/checks/ so that the browser page runs the same checks
for (const { name, ...c } of conv2dCases) opTest(name, c, t);

// Every variant forced through the options, forward and every gradient, on every shape above: the subgroup
// kernels at the adapter's width (wide, and the narrow split that narrow layers take), the portable kernels
// (adapters without fixed-width subgroups: browsers), and the workgroup-tiled implicit GEMM (GPUs).
const hasSubgroupKernels = await (async () => {
  await getDevice();
  return convSubgroupWidth() > 0;
})();
// The lane kernels read their operands from storage buffers or from operand textures (`textures`), both forced.
const variants: [string, ConvTuningOverrides][] = [
  ...(hasSubgroupKernels
    ? ([
        ['subgroups, wide kernels only', { variant: 'subgroups', fewChannels: 'gemm', textures: false, tiles: { narrowRows: 0 } }],
        ['subgroups with the narrow variant', { variant: 'subgroups', fewChannels: 'gemm', textures: false, tiles: { narrowRows: 16 } }],
        ['subgroups, wide kernels only, textures', { variant: 'subgroups', fewChannels: 'gemm', textures: true, tiles: { narrowRows: 0 } }],
        ['subgroups with the narrow variant, textures', { variant: 'subgroups', fewChannels: 'gemm', textures: true, tiles: { narrowRows: 16 } }],
      ] as [string, ConvTuningOverrides][])
    : []),
  // fewChannels 'gemm': the stems (1-3 input channels) take the variant's GEMM too, padded to 4 channels
  ['portable', { variant: 'portable', fewChannels: 'gemm', textures: false }],
  ['portable, textures', { variant: 'portable', fewChannels: 'gemm', textures: true }],
  ['tiled', { variant: 'tiled', fewChannels: 'gemm', tiled: DEFAULT_TILED_TILES }],
  // small tiles: several row and column tiles per layer, a K step (8 channels) shorter than most layers' channels
  ['tiled 32x16x8', { variant: 'tiled', fewChannels: 'gemm', tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } }],
];
// operand textures need the source image's rows in whole 256-byte multiples (W * C % 64 == 0): these take them in
// the forward and in dx (dy's rows: 8 x 32 and 16 x 32 floats), with stride 2 (dx's parity classes) and stride 1
const TEXTURE_SHAPES: ConvCase[] = [
  ['3x3 pad 1 stride 2, 16->32, texture-sized rows', 2, 16, 16, 16, 3, 32, 2, 1, true],
  ['3x3 pad 1, 16->32, texture-sized rows, 3 images', 3, 8, 8, 32, 3, 32, 1, 1, false],
];
// layers with 16 or more output quads take two column quads per lane (tiles.CB 2) in the lane kernels: in the
// forward (68 outputs: a partial second column tile) and in dx (64 inputs), with stride 2; and 128 outputs from
// texture-sized rows
const WIDE_SHAPES: ConvCase[] = [
  ['3x3 pad 1 stride 2, 64->68 (two column quads per lane)', 2, 7, 6, 64, 3, 68, 2, 1, true],
  ['3x3 pad 1, 32->128, texture-sized rows (two column quads per lane)', 2, 8, 8, 32, 3, 128, 1, 1, false],
];
for (const [vname, tuning] of variants) {
  for (const c of [...CONV_SHAPES, ...TEXTURE_SHAPES, ...WIDE_SHAPES]) {
    const { name, ...oc } = conv2dCase(`conv2d [${vname}] ${c[0]}`, c, tuning);
    t(name, () => checkOp(oc));
  }
}

// the epilogue (add, relu) on every variant, and on the direct stem kernel
for (const [vname, tuning] of [...variants, ['direct', { fewChannels: 'direct' }] as [string, ConvTuningOverrides]]) {
  for (const [c, ep] of EPILOGUE_SHAPES) {
    if (vname === 'direct' && c[4] > DIRECT_MAX_CIN) continue;
    const { name, ...oc } = conv2dEpilogueCase(`conv2d [${vname}] ${c[0]}`, c, ep, tuning);
    t(name, () => checkOp(oc));
  }
}

// the direct kernels of layers with 1-3 input channels (kernels/conv2d-direct.ts), on the stems above (where
// they apply) and on their own awkward ones, each asserted to take them: 50 output channels (not a multiple of 4)
// with a bias, dW split into tap groups (3 -> 8) and column groups (1 -> 32), more pixels than dW's invocations
// (1728 rows), a 5x5 kernel with stride 2 and an even width
const DIRECT_SHAPES: ConvCase[] = [
  ['direct: 1->50 channels, bias', 2, 6, 5, 1, 3, 50, 1, 1, true],
  ['direct: 3->8, dW in tap groups', 2, 7, 9, 3, 3, 8, 1, 1, false],
  ['direct: 1->32, dW in column groups, 1728 rows', 3, 24, 24, 1, 3, 32, 1, 1, false],
  ['direct: 2->8, stride 2, 5x5 pad 2, dW in 3 tap groups', 2, 10, 8, 2, 5, 8, 2, 2, true],
];
const geomOf = ([, N, H, W, Cin, K, Cout, s, p]: ConvCase) => {
  const O = (n: number) => Math.floor((n + 2 * p - K) / s) + 1;
  return { N, H, W, Cin, KH: K, KW: K, Cout, stride: s, pad: p, OH: O(H), OW: O(W) };
};
for (const c of DIRECT_SHAPES) assert.ok(directSuits(geomOf(c), 'fwd') && directSuits(geomOf(c), 'dW'), `${c[0]} takes the direct kernels`);
for (const c of [...CONV_SHAPES.filter((s) => s[4] <= DIRECT_MAX_CIN), ...DIRECT_SHAPES]) {
  const { name, ...oc } = conv2dCase(`conv2d [direct] ${c[0]}`, c, { fewChannels: 'direct' });
  t(name, () => checkOp(oc));
}

// dx's epilogue adds the gradient x accumulated from ops later in the forward (the tape's take()): x = 1.5 * x0
// (not a leaf) feeds the conv and is added to its output, so conv's backward finds dy pending for x and adds it.
// Every GEMM variant, aligned (8 channels) and scalar (5), and the padded stem (2 -> 4 channels), where the
// addend takes a separate sum after the resize.
const addendVariants: [string, ConvTuningOverrides][] = [
  ...(hasSubgroupKernels ? ([['subgroups', { variant: 'subgroups', textures: false }], ['subgroups, textures', { variant: 'subgroups', textures: true }]] as [string, ConvTuningOverrides][]) : []),
  ['portable', { variant: 'portable', textures: false }],
  ['portable, textures', { variant: 'portable', textures: true }],
  ['tiled 32x16x8', { variant: 'tiled', tiled: { TM: 32, TN: 16, TK: 8, RM: 4, CQ: 1 } }],
];
for (const [vname, tuning] of addendVariants) {
  for (const C of [8, 5]) {
    t(`conv2d [${vname}] dx adds x's pending gradient in its epilogue, ${C} channels`, () =>
      checkOp({
        shapes: [[2, 6, 7, C], [3, 3, C, C]],
        ref: ([x0, w]) => {
          const x = { data: x0.data.map((v) => 1.5 * v), shape: x0.shape };
          const y = ref.conv2d(x, w, null, 1, 1);
          return { data: y.data.map((v, i) => v + x.data[i]), shape: y.shape };
        },
        refGrad: ([x0, w], dy) => {
          const x = { data: x0.data.map((v) => 1.5 * v), shape: x0.shape };
          const [dx, dw] = ref.conv2dBackward(x, w, dy, 1, 1);
          return [{ data: dx.data.map((v, i) => 1.5 * (v + dy.data[i])), shape: x0.shape }, dw];
        },
        gpu: ([x0, w]) => {
          const x = mulScalar(x0, 1.5);
          return add(conv2d(x, w, null, { padding: 1, tuning }), x);
        },
        tol: 1e-4,
      }));
  }
}
t('the accumulation is fused: backward through conv(x) + x launches no grad.accumulate and no extra add', async () => {
  const before = liveTensors();
  const x0 = variable(new Float32Array(2 * 5 * 5 * 8).map((_, i) => Math.sin(i)), [2, 5, 5, 8]);
  const w = variable(new Float32Array(3 * 3 * 8 * 8).map((_, i) => Math.cos(i) / 8), [3, 3, 8, 8]);
  const y = tidy(() => {
    const x = mulScalar(x0, 1.5);
    return sum(add(conv2d(x, w, null, { padding: 1 }), x));
  });
  recordDispatches(true);
  backward(y);
  const names = recordDispatches(false).map((d) => d.name);
  assert.ok(names.some((n) => n === 'conv2d.dx'), `backward ran conv2d's dx (${names.join(', ')})`);
  assert.ok(!names.some((n) => /accumulate/.test(n)), `no separate accumulation pass: ${names.join(', ')}`);
  for (const v of [x0, w, y, x0.grad!, w.grad!]) v.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('conv2d dx of a padded stem (2 -> 4 channels) adds x\'s pending gradient after the resize', () =>
  checkOp({
    shapes: [[2, 5, 6, 2], [3, 3, 2, 4]],
    ref: ([x0, w]) => {
      const x = x0.data.map((v) => 1.5 * v);
      const y = ref.conv2d({ data: x, shape: x0.shape }, w, null, 1, 1);
      return { data: Float64Array.of(y.data.reduce((a, v) => a + v, 0) + x.reduce((a, v) => a + v * v, 0)), shape: [] };
    },
    refGrad: ([x0, w], dy) => {
      const x = { data: x0.data.map((v) => 1.5 * v), shape: x0.shape };
      const ones = { data: new Float64Array(x0.shape[0] * x0.shape[1] * x0.shape[2] * 4).fill(dy.data[0]), shape: [x0.shape[0], x0.shape[1], x0.shape[2], 4] };
      const [dx, dw] = ref.conv2dBackward(x, w, ones, 1, 1);
      return [{ data: dx.data.map((v, i) => 1.5 * (v + 2 * x.data[i] * dy.data[0])), shape: x0.shape }, dw];
    },
    gpu: ([x0, w]) => {
      const x = mulScalar(x0, 1.5);
      return add(sum(conv2d(x, w, null, { padding: 1, tuning: { fewChannels: 'gemm' } })), sum(mul(x, x)));
    },
    tol: 1e-4,
  }));

// other register blocks (the tuner's knobs): 2 column quads per lane; dW with 4 pixels per step, 2 steps unrolled
t('conv2d with other tile shapes', () =>
  checkOp({
    shapes: [[2, 7, 6, 8], [3, 3, 8, 72], [72]],
    ref: ([x, w, b]) => ref.conv2d(x, w, b, 2, 1),
    refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, 2, 1),
    gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 2, padding: 1, tuning: { tiles: { RB: 1, CB: 2, RQ: 2, dwCB: 1, U: 2 } } }),
    tol: 1e-4,
  }),
);

// tiled: 256 invocations (SwiftShader's limit) and 16 KiB of workgroup memory (WebGPU's default limit), 18 column
// quads over two column tiles, a 1x1 stride-2 layer
t('conv2d tiled at the workgroup limits', () =>
  checkOp({
    shapes: [[2, 9, 7, 24], [1, 1, 24, 72], [72]],
    ref: ([x, w, b]) => ref.conv2d(x, w, b, 2, 0),
    refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, 2, 0),
    gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 2, padding: 0, tuning: { variant: 'tiled', tiled: { TM: 64, TN: 64, TK: 32, RM: 4, CQ: 1 } } }),
    tol: 1e-4,
  }),
);

// tfjs's conv2d_mm tile (a tuner candidate), a K step of 32 over odd channel counts and a stride of 2
t('conv2d tiled with a 32-deep step on odd channels', () =>
  checkOp({
    shapes: [[2, 9, 8, 5], [3, 3, 5, 17], [17]],
    ref: ([x, w, b]) => ref.conv2d(x, w, b, 2, 1),
    refGrad: ([x, w, b], dy) => ref.conv2dBackward(x, w, dy, 2, 1),
    gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 2, padding: 1, tuning: { variant: 'tiled', tiled: { TM: 32, TN: 32, TK: 32, RM: 4, CQ: 1 } } }),
    tol: 1e-4,
  }),
);

t('conv2d tiles that do not fit are refused with the limits named', () => {
  const x = tensor(new Float32Array(2 * 5 * 5 * 4), [2, 5, 5, 4]);
  const w = tensor(new Float32Array(3 * 3 * 4 * 8), [3, 3, 4, 8]);
  throwsWith(() => conv2d(x, w, null, { tuning: { variant: 'tiled', tiled: { TM: 256, TN: 256, TK: 64, RM: 1, CQ: 1 } } }), 'conv2d', 'tiled tiles', 'invocations', 'workgroup memory');
  x.dispose();
  w.dispose();
});

t('conv2d of an empty batch', async () => {
  const before = liveTensors();
  const x = variable(new Float32Array(0), [0, 5, 5, 4]);
  const w = variable(new Float32Array(3 * 3 * 4 * 8).fill(1), [3, 3, 4, 8]);
  const b = variable(new Float32Array(8).fill(1), [8]);
  const y = tidy(() => conv2d(x, w, b, { padding: 1 }));
  assert.equal(y.shape, [0, 5, 5, 8]);
  const dy = tensor(new Float32Array(0), [0, 5, 5, 8]);
  backward(y, dy);
  assert.equal(x.grad!.shape, [0, 5, 5, 4]);
  assert.ok((await w.grad!.toArray()).every((v) => v === 0));
  assert.ok((await b.grad!.toArray()).every((v) => v === 0));
  for (const t of [x, w, b, y, dy]) t.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t('conv2d errors name the op and the shapes', () => {
  const x = tensor(new Float32Array(2 * 5 * 5 * 3), [2, 5, 5, 3]);
  const w = tensor(new Float32Array(3 * 3 * 1 * 16), [3, 3, 1, 16]);
  const w3 = tensor(new Float32Array(3 * 3 * 3 * 16), [3, 3, 3, 16]);
  const w7 = tensor(new Float32Array(7 * 7 * 3 * 4), [7, 7, 3, 4]);
  const x3 = tensor(new Float32Array(75), [5, 5, 3]);
  const w2 = tensor(new Float32Array(9), [3, 3]);
  const b8 = tensor(new Float32Array(8), [8]);
  const b116 = tensor(new Float32Array(16), [1, 16]);
  const xi = tensor(new Int32Array(150), [2, 5, 5, 3], { dtype: 'i32' });
  throwsWith(() => conv2d(x, w), 'conv2d: input has 3 channels but weight [3, 3, 1, 16] expects 1');
  throwsWith(() => conv2d(x3, w3), 'conv2d', 'input must be 4-D', '[5, 5, 3]');
  throwsWith(() => conv2d(x, w2), 'conv2d', 'weight must be 4-D', '[3, 3]');
  throwsWith(() => conv2d(x, w7), 'conv2d', '[2, 5, 5, 3]', 'too small', '7x7', 'output would be -1x-1');
  throwsWith(() => conv2d(x, w3, null, { stride: 0 }), 'conv2d', 'stride', 'positive integer', '0');
  throwsWith(() => conv2d(x, w3, null, { stride: 1.5 }), 'conv2d', 'stride', '1.5');
  throwsWith(() => conv2d(x, w3, null, { padding: -1 }), 'conv2d', 'padding', '-1');
  throwsWith(() => conv2d(x, w3, b8), 'conv2d', 'bias', '[16]', '[8]');
  throwsWith(() => conv2d(x, w3, b116), 'conv2d', 'bias', '[1, 16]');
  throwsWith(() => conv2d(xi, w3), 'conv2d', 'f32', 'i32');
  // the epilogue's addend must have the output's shape ([2, 3, 3, 16] here); moments describe the plain output
  const r = tensor(new Float32Array(2 * 3 * 3 * 16), [2, 3, 3, 16]);
  const rBad = tensor(new Float32Array(2 * 5 * 5 * 16), [2, 5, 5, 16]);
  throwsWith(() => conv2d(x, w3, null, { epilogue: { add: rBad } }), 'conv2d', 'epilogue.add', '[2, 3, 3, 16]', '[2, 5, 5, 16]');
  throwsWith(() => conv2d(x, w3, null, { epilogue: { add: r, relu: true }, moments: true }), 'conv2d', 'moments', 'epilogue');
  throwsWith(() => conv2d(x, w3, null, { epilogue: { relu: 1 as unknown as boolean } }), 'conv2d', 'epilogue.relu', 'boolean');
  r.dispose();
  rBad.dispose();
  // padding makes a 7x7 kernel fit a 5x5 image: 5 + 2 - 7 + 1 = 1
  const y = conv2d(x, w7, null, { padding: 1 });
  assert.equal(y.shape, [2, 1, 1, 4]);
  for (const t of [x, w, w3, w7, x3, w2, b8, b116, xi, y]) t.dispose();
});

t.run();
