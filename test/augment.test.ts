// Augmentation kernels against the float64 reference given the same drawn parameters (each op alone, then
// the whole pipeline), the parameter sampler's statistics over 10^4 draws, per-image independence,
// determinism for a seed, the dispatch count, errors, no leaks, and the preview PNG.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PNG } from 'pngjs';
import { tensor, recorderStats, type Tensor } from '../nn/index.ts';
import { Rng } from '../byol/rng.ts';
import { augmentWithParams, augmentView, augmentViews, normalizeBatch } from '../byol/augment.ts';
import { drawParams, byolAugmentConfig, blurRadius, BYOL_VIEW1, BYOL_VIEW2, type ImageParams } from '../byol/augment-params.ts';
import { augmentationPreviewPng } from '../byol/preview.ts';
import { assertClose, checkTests } from './helpers/gradcheck.ts';
import { augmentChecks, NOTHING, identityParams, images } from '../byol/augment-checks.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('augment');
// the checks against the float64 reference live in byol/augment-checks.ts so that the browser page runs them too
checkTests(augmentChecks, t);

// ---- dispatches, errors, sampler statistics, preview -----------------------------------------------------------

t('dispatches: 2 per view without blur (crop+flip, colour+solarize+normalize), 4 with blur', () => {
  const xt = tensor(new Float32Array(4 * 28 * 28), [4, 28, 28, 1]);
  const count = (fn: () => Tensor[]) => {
    const d0 = recorderStats().dispatches;
    fn().forEach((v) => v.dispose());
    return recorderStats().dispatches - d0;
  };
  assert.is(count(() => augmentViews(xt, new Rng(1), byolAugmentConfig({ imageSize: 28 }))), 4);
  assert.is(count(() => [augmentView(xt, new Rng(1), { ...BYOL_VIEW1, blurProb: 1 })]), 4);
  assert.is(count(() => [augmentView(xt, new Rng(1), { ...BYOL_VIEW1, blurProb: 0 })]), 2);
  xt.dispose();
});

t('normalizeBatch equals (x - mean) / std per channel', async () => {
  const x = images([2, 3, 4, 3], 80);
  const xt = tensor(Float32Array.from(x.data), x.shape);
  const y = normalizeBatch(xt, { mean: [0.1, 0.2, 0.3], std: [0.5, 2, 4] });
  const want = x.data.map((v, i) => (v - [0.1, 0.2, 0.3][i % 3]) / [0.5, 2, 4][i % 3]);
  assertClose(await y.toArray(), want, 1e-6, 'normalize');
  throwsWith(() => normalizeBatch(xt, { mean: [0], std: [1] }), 'normalizeBatch', '1 means', '3 channels');
  y.dispose();
  xt.dispose();
});

t('errors: channels, rank, parameter count, crop window, config values', () => {
  const x2 = tensor(new Float32Array(2 * 4 * 4 * 2), [2, 4, 4, 2]);
  throwsWith(() => augmentView(x2, new Rng(1), BYOL_VIEW1), 'augmentView', '1 or 3 channels', '[2, 4, 4, 2]');
  x2.dispose();
  const x = tensor(new Float32Array(2 * 4 * 4), [2, 4, 4, 1]);
  const flat = tensor(new Float32Array(16), [4, 4]);
  throwsWith(() => augmentView(flat, new Rng(1), BYOL_VIEW1), 'expected an f32 batch [B, H, W, C]', '[4, 4]');
  flat.dispose();
  throwsWith(() => augmentWithParams(x, identityParams(3, 4, 4), NOTHING), '3 parameter sets for a batch of 2');
  const bad = identityParams(2, 4, 4);
  bad[1].crop = { x: 2, y: 0, w: 3, h: 4, area: 1, ratio: 1 };
  throwsWith(() => augmentWithParams(x, bad, NOTHING), 'crop window', 'image 1', 'not inside the 4x4 image');
  throwsWith(() => augmentView(x, new Rng(1), { ...BYOL_VIEW1, flipProb: 1.5 }), 'flipProb must be a probability');
  throwsWith(() => augmentView(x, new Rng(1), { ...BYOL_VIEW1, cropScale: [0.5, 0.2] }), 'cropScale');
  throwsWith(() => augmentView(x, new Rng(1), { ...BYOL_VIEW1, normalize: { mean: [0, 0, 0], std: [1, 1, 1] } }), 'normalize needs 1 means');
  throwsWith(() => augmentView(x, new Rng(1), { ...BYOL_VIEW1, normalize: { mean: [0], std: [0] } }), 'std must be > 0');
  throwsWith(() => augmentView(x, new Rng(1), { ...BYOL_VIEW1, outHeight: 0 }), 'outHeight must be a positive integer');
  throwsWith(() => augmentViews(x, new Rng(1), { view1: BYOL_VIEW1, view2: { ...BYOL_VIEW2, hue: 0.7 } }), 'view2', 'hue must be in [0, 0.5]');
  x.dispose();
});

// ---- parameter statistics (CPU) -------------------------------------------------------------------------------

const mean = (a: number[]) => a.reduce((s, v) => s + v, 0) / a.length;
const near = (got: number, want: number, tol: number, what: string) => assert.ok(Math.abs(got - want) <= tol, `${what}: ${got} vs ${want} ± ${tol}`);

t('10^4 draws: probabilities of flip, jitter, grayscale, blur, solarize for T and T\'', () => {
  const N = 10000;
  // binomial std at p = 0.5 over 10^4 draws is 0.005: 0.02 is 4 standard deviations
  for (const [cfg, blur, sol] of [[BYOL_VIEW1, 1, 0], [BYOL_VIEW2, 0.1, 0.2]] as const) {
    const ps = drawParams(new Rng(blur * 10 + 1), N, 224, 224, cfg);
    near(mean(ps.map((p) => +p.flip)), 0.5, 0.02, 'flip rate');
    near(mean(ps.map((p) => +p.jitter)), 0.8, 0.02, 'jitter rate');
    near(mean(ps.map((p) => +p.gray)), 0.2, 0.02, 'grayscale rate');
    near(mean(ps.map((p) => +(p.blurSigma > 0))), blur, 0.02, 'blur rate');
    near(mean(ps.map((p) => +p.solarize)), sol, 0.02, 'solarize rate');
    // gray is drawn independently of jitter
    const grayIfJitter = mean(ps.filter((p) => p.jitter).map((p) => +p.gray));
    const grayIfNot = mean(ps.filter((p) => !p.jitter).map((p) => +p.gray));
    near(grayIfJitter - grayIfNot, 0, 0.04, 'gray independent of jitter');
  }
});

t('10^4 draws: crop area fraction, aspect ratio, window inside the image with uniform offsets', () => {
  const N = 10000;
  const H = 224;
  const W = 160;
  const ps = drawParams(new Rng(5), N, H, W, BYOL_VIEW1);
  const area = ps.map((p) => p.crop.area);
  const logRatio = ps.map((p) => Math.log(p.crop.ratio));
  assert.ok(Math.min(...area) >= 0.08 && Math.max(...area) <= 1, 'area fraction within [0.08, 1]');
  assert.ok(Math.min(...area) < 0.085 && Math.max(...area) > 0.995, 'the whole range is reached');
  near(mean(area), 0.54, 0.01, 'mean area fraction'); // U[0.08, 1]: std 0.266 / sqrt(10^4) = 0.0027
  assert.ok(Math.min(...logRatio) >= Math.log(3 / 4) - 1e-12 && Math.max(...logRatio) <= Math.log(4 / 3) + 1e-12, 'ratio within [3/4, 4/3]');
  near(mean(logRatio), 0, 0.005, 'log ratio centred');
  let offsets: number[] = [];
  for (const { crop: c } of ps) {
    assert.ok(c.x >= 0 && c.y >= 0 && c.x + c.w <= W && c.y + c.h <= H && c.w >= 1 && c.h >= 1, `window ${JSON.stringify(c)}`);
    assert.is(c.w, Math.min(W, Math.round(Math.sqrt(c.area * H * W * c.ratio))), 'w = round(sqrt(area * ratio)) clamped');
    assert.is(c.h, Math.min(H, Math.round(Math.sqrt(c.area * H * W / c.ratio))), 'h = round(sqrt(area / ratio)) clamped');
    if (c.w < W) offsets.push(c.x / (W - c.w));
  }
  near(mean(offsets), 0.5, 0.02, 'x offset uniform');
  offsets = ps.filter((p) => p.crop.h < H).map((p) => p.crop.y / (H - p.crop.h));
  near(mean(offsets), 0.5, 0.02, 'y offset uniform');
  const frac = ps.map((p) => (p.crop.w * p.crop.h) / (H * W));
  assert.ok(Math.max(...frac) <= 1 && Math.min(...frac) > 0.06, 'actual window fraction');
});

t('10^4 draws: jitter amounts in range, op order a uniform permutation', () => {
  const ps = drawParams(new Rng(9), 10000, 32, 32, BYOL_VIEW2);
  for (const [k, lo, hi, mid] of [['brightness', -0.4, 0.4, 0], ['contrast', 0.6, 1.4, 1], ['saturation', 0.8, 1.2, 1], ['hue', -0.1, 0.1, 0]] as const) {
    const v = ps.map((p) => p[k]);
    assert.ok(Math.min(...v) >= lo && Math.max(...v) < hi, `${k} in [${lo}, ${hi})`);
    assert.ok(Math.min(...v) < lo + 0.01 * (hi - lo) && Math.max(...v) > hi - 0.01 * (hi - lo), `${k} covers its range`);
    near(mean(v), mid, 0.01 * (hi - lo) + 0.002, `${k} mean`);
  }
  for (const p of ps) assert.equal([...p.order].sort(), [0, 1, 2, 3]);
  for (let op = 0; op < 4; op++) for (let pos = 0; pos < 4; pos++) near(mean(ps.map((p) => +(p.order[pos] === op))), 0.25, 0.02, `op ${op} at position ${pos}`);
  const s = drawParams(new Rng(9), 10000, 224, 224, BYOL_VIEW1).map((p) => p.blurSigma);
  assert.ok(Math.min(...s) >= 0.1 && Math.max(...s) < 2, 'sigma in [0.1, 2)');
  near(mean(s), 1.05, 0.02, 'sigma mean');
});

t('per-image independence: images of a batch get different parameters, uncorrelated with their neighbours', () => {
  const ps = drawParams(new Rng(3), 64, 32, 32, BYOL_VIEW1);
  assert.is(new Set(ps.map((p) => JSON.stringify(p.crop))).size, 64, 'every image has its own crop');
  assert.is(new Set(ps.map((p) => p.brightness)).size, 64, 'every image has its own brightness');
  const flips = ps.filter((p) => p.flip).length;
  assert.ok(flips > 10 && flips < 54, `flips in a batch of 64: ${flips}`);
  const big = drawParams(new Rng(4), 10000, 32, 32, BYOL_VIEW1);
  const corr = (f: (p: ImageParams) => number) => {
    const a = big.slice(0, -1).map(f);
    const b = big.slice(1).map(f);
    const ma = mean(a);
    const mb = mean(b);
    let cov = 0, va = 0, vb = 0;
    for (let i = 0; i < a.length; i++) (cov += (a[i] - ma) * (b[i] - mb)), (va += (a[i] - ma) ** 2), (vb += (b[i] - mb) ** 2);
    return cov / Math.sqrt(va * vb);
  };
  for (const [what, f] of [['area', (p: ImageParams) => p.crop.area], ['flip', (p: ImageParams) => +p.flip], ['hue', (p: ImageParams) => p.hue]] as const) {
    assert.ok(Math.abs(corr(f)) < 0.04, `${what}: correlation of neighbours ${corr(f)}`);
  }
});

t('configs: T / T\' asymmetry; blur off by default at <= 32 px; Rng is deterministic and restartable', () => {
  const big = byolAugmentConfig({ imageSize: 96 });
  assert.equal([big.view1.blurProb, big.view2.blurProb, big.view1.solarizeProb, big.view2.solarizeProb], [1, 0.1, 0, 0.2]);
  const small = byolAugmentConfig({ imageSize: 28, cropScale: [0.2, 1] });
  assert.equal([small.view1.blurProb, small.view2.blurProb, small.view2.solarizeProb], [0, 0, 0.2]);
  assert.equal(small.view1.cropScale, [0.2, 1]);
  assert.is(byolAugmentConfig({ imageSize: 28, blur: true }).view1.blurProb, 1);
  const noSol = byolAugmentConfig({ imageSize: 28, solarizeProb: 0 });
  assert.equal([noSol.view1.solarizeProb, noSol.view2.solarizeProb, noSol.view2.blurProb], [0, 0, 0], 'solarizeProb sets view 2 only');
  assert.is(byolAugmentConfig({ imageSize: 28, solarizeProb: 0.5 }).view1.solarizeProb, 0);
  assert.equal([blurRadius(224, 10), blurRadius(96, 10), blurRadius(32, 10), blurRadius(28, 10), blurRadius(19, 10)], [11, 4, 1, 1, 0]);
  const a = new Rng(42);
  const b = new Rng(42);
  assert.equal(Array.from({ length: 5 }, () => a.next()), Array.from({ length: 5 }, () => b.next()));
  const s = a.state;
  const x = a.next();
  a.state = s;
  assert.is(a.next(), x, 'state restores the stream');
  const f1 = new Rng(1).fork();
  const f2 = new Rng(1).fork();
  assert.is(f1.next(), f2.next(), 'fork is deterministic');
  assert.ok(new Rng(1).next() !== new Rng(2).next());
  assert.ok(Array.from({ length: 1000 }, () => a.chance(0)).every((v) => !v) && Array.from({ length: 1000 }, () => a.chance(1)).every(Boolean));
});

t('augmentation preview PNG: original / view1 / view2 rows', () => {
  const n = 4;
  const x = images([n, 6, 5, 3], 90);
  const cfg = byolAugmentConfig({ imageSize: 6, normalize: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] } });
  const v = new Float32Array(n * 8 * 8 * 3).fill(1); // normalized 1 = 1.0 * 0.5 + 0.5 -> clipped to white
  const png = PNG.sync.read(augmentationPreviewPng(Float32Array.from(x.data), v, v, { n, height: 6, width: 5, channels: 3, outHeight: 8, outWidth: 8 }, cfg, { scale: 2, gap: 1 }));
  assert.equal([png.width, png.height], [4 * (16 + 1) + 1, 3 * (16 + 1) + 1]);
  const px = (y: number, xx: number) => [...png.data.subarray((y * png.width + xx) * 4, (y * png.width + xx) * 4 + 3)];
  assert.equal(px(1, 1), [0, 1, 2].map((c) => Math.round(255 * x.data[c])), 'first pixel of the first original');
  assert.equal(px(1 + 17, 1), [255, 255, 255], 'view1 row, denormalized and clipped');
});

t.run();
