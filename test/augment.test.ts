// Augmentation kernels against the float64 reference given the same drawn parameters (each op alone, then
// the whole pipeline), the parameter sampler's statistics over 10^4 draws, per-image independence,
// determinism for a seed, the dispatch count, errors, no leaks, and the preview PNG.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { PNG } from 'pngjs';
import { tensor, liveTensors, sync, recorderStats, type Tensor } from '../nn/index.ts';
import { Rng } from '../byol/rng.ts';
import { augmentWithParams, augmentView, augmentViews, normalizeBatch, ref } from '../byol/augment.ts';
import { drawParams, byolAugmentConfig, blurRadius, BYOL_VIEW1, BYOL_VIEW2, type ImageParams, type ViewConfig } from '../byol/augment-params.ts';
import { augmentationPreviewPng } from '../byol/preview.ts';
import type { Arr } from '../engine/ref.ts';
import { assertClose, randArr, rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('augment');
const TOL = 2e-5;

/** A view config in which nothing fires unless a test turns it on. */
const NOTHING: ViewConfig = { ...BYOL_VIEW1, crop: false, flipProb: 0, jitterProb: 0, grayProb: 0, blurProb: 0, solarizeProb: 0 };

function identityParams(n: number, h: number, w: number): ImageParams[] {
  return Array.from({ length: n }, () => ({
    crop: { x: 0, y: 0, w, h, area: 1, ratio: 1 },
    flip: false, jitter: false, order: [0, 1, 2, 3], brightness: 0, contrast: 1, saturation: 1, hue: 0, gray: false, blurSigma: 0, solarize: false,
  }));
}

/** Images in [0, 1]: random, with a few saturated pixels and grey pixels so clipping and HSV edge cases occur. */
function images(shape: number[], seed: number): Arr {
  const x = randArr(shape, rng(seed), 0, 1);
  const C = shape[3];
  for (let i = 0; i < x.data.length; i += 7 * C) x.data[i] = i % 2 ? 1 : 0;
  if (C === 3) for (let p = 5; p < x.data.length / 3; p += 11) x.data[3 * p + 1] = x.data[3 * p + 2] = x.data[3 * p];
  return x;
}

async function gpuView(x: Arr, params: ImageParams[], cfg: ViewConfig): Promise<Float32Array> {
  const xt = tensor(Float32Array.from(x.data), x.shape);
  const y = augmentWithParams(xt, params, cfg);
  const out = (await y.toArray()) as Float32Array;
  xt.dispose();
  y.dispose();
  return out;
}

async function checkAgainstRef(name: string, x: Arr, params: ImageParams[], cfg: ViewConfig, tol = TOL) {
  const want = ref.augment(x, params, cfg);
  const got = await gpuView(x, params, cfg);
  assertClose(got, want.data, tol, name);
  return { got, want };
}

// ---- kernels vs reference ----------------------------------------------------------------------------------

t('no op firing is the identity, exactly', async () => {
  for (const C of [1, 3]) {
    const x = images([3, 7, 5, C], 1);
    const got = await gpuView(x, identityParams(3, 7, 5), NOTHING);
    assert.equal([...got], [...Float32Array.from(x.data)], `C=${C}`);
  }
});

t('random resized crop + flip (bilinear) vs reference, 1 and 3 channels, other output sizes', async () => {
  const cfg: ViewConfig = { ...NOTHING, crop: true, flipProb: 0.5 };
  for (const [C, H, W, OH, OW] of [[1, 13, 11, 13, 11], [3, 13, 11, 9, 12], [3, 28, 28, 32, 32], [1, 5, 40, 6, 3]]) {
    const x = images([6, H, W, C], 2 + C);
    const params = drawParams(new Rng(C * 100 + H), 6, H, W, cfg);
    assert.ok(params.some((p) => p.flip) && params.some((p) => !p.flip), 'both flipped and unflipped images');
    await checkAgainstRef(`crop C=${C} ${H}x${W}->${OH}x${OW}`, x, params, { ...cfg, outHeight: OH, outWidth: OW });
  }
});

t('horizontal flip alone mirrors each row', async () => {
  const x = images([2, 4, 6, 3], 3);
  const params = identityParams(2, 4, 6);
  params[1].flip = true;
  const got = await gpuView(x, params, NOTHING);
  for (let y = 0; y < 4; y++) for (let xx = 0; xx < 6; xx++) for (let c = 0; c < 3; c++) {
    assert.is(got[((24 + y * 6 + xx) * 3) + c], Math.fround(x.data[((24 + y * 6 + 5 - xx) * 3) + c]));
    assert.is(got[((y * 6 + xx) * 3) + c], Math.fround(x.data[((y * 6 + xx) * 3) + c]));
  }
});

/** Params with jitter on and only `op` changing the image (others at their identity values). */
function onlyOp(n: number, h: number, w: number, op: 'brightness' | 'contrast' | 'saturation' | 'hue', r: Rng): ImageParams[] {
  return identityParams(n, h, w).map((p) => {
    p.jitter = true;
    p.order = r.permutation(4);
    if (op === 'brightness') p.brightness = r.uniform(-0.4, 0.4);
    if (op === 'contrast') p.contrast = r.uniform(0.6, 1.4);
    if (op === 'saturation') p.saturation = r.uniform(0.8, 1.2) * (r.chance(0.5) ? 1 : 3); // also push S past 1
    if (op === 'hue') p.hue = r.uniform(-0.5, 0.5);
    return p;
  });
}

for (const op of ['brightness', 'contrast', 'saturation', 'hue'] as const) {
  t(`colour jitter: ${op} alone vs reference`, async () => {
    for (const [C, H, W] of [[3, 9, 7], [3, 23, 19], [1, 17, 16]]) {
      const x = images([5, H, W, C], 10 + H);
      const params = onlyOp(5, H, W, op, new Rng(H * 7 + C));
      const { got } = await checkAgainstRef(`${op} C=${C} ${H}x${W}`, x, params, NOTHING);
      // ops at their identity values may round (contrast 1 computes (x - m) + m), so "unchanged" is within 1e-6
      const change = got.reduce((m, v, i) => Math.max(m, Math.abs(v - x.data[i])), 0);
      const noop = C === 1 && (op === 'saturation' || op === 'hue');
      assert.ok(noop ? change < 1e-6 : change > 1e-2, `${op} on C=${C} changes pixels by up to ${change}`);
    }
  });
}

t('colour jitter: all four ops in every order (contrast at each position: the mean is taken mid-pipeline)', async () => {
  const H = 18;
  const W = 17; // 306 pixels: more than one per thread of the 256-thread workgroup
  const x = images([24, H, W, 3], 20);
  const r = new Rng(21);
  const orders = [...Array(24).keys()].map((k) => {
    const rest = [0, 2, 3];
    const perm = [rest[k % 3], rest[(k + 1 + (k >> 3) % 2) % 3]];
    perm.push(rest.find((v) => !perm.includes(v))!);
    perm.splice(k % 4, 0, 1);
    return perm;
  });
  const params = identityParams(24, H, W).map((p, i) => ({
    ...p, jitter: true, order: orders[i], brightness: r.uniform(-0.4, 0.4), contrast: r.uniform(0.6, 1.4), saturation: r.uniform(0.8, 1.2), hue: r.uniform(-0.1, 0.1),
  }));
  for (let pos = 0; pos < 4; pos++) assert.ok(params.some((p) => p.order[pos] === 1), `contrast at position ${pos}`);
  await checkAgainstRef('jitter, all orders', x, params, NOTHING);
  await checkAgainstRef('jitter, 1 channel', images([24, H, W, 1], 22), params, NOTHING);
});

t('grayscale (luma 0.2989, 0.587, 0.114, replicated) vs reference; a no-op on 1 channel', async () => {
  const x = images([3, 6, 5, 3], 30);
  const params = identityParams(3, 6, 5);
  params[0].gray = params[2].gray = true;
  const { got } = await checkAgainstRef('gray', x, params, NOTHING);
  for (let p = 0; p < 30; p++) {
    assert.ok(got[3 * p] === got[3 * p + 1] && got[3 * p] === got[3 * p + 2], 'grey pixel');
    assert.ok(Math.abs(got[3 * p] - (0.2989 * x.data[3 * p] + 0.587 * x.data[3 * p + 1] + 0.114 * x.data[3 * p + 2])) < 1e-6);
  }
  const x1 = images([3, 6, 5, 1], 31);
  assert.equal([...(await gpuView(x1, params, NOTHING))], [...Float32Array.from(x1.data)]);
});

t('gaussian blur (separable, zero padding) vs reference: radius 1 at 28 px, larger radii, per-image sigma or none', async () => {
  const cfg: ViewConfig = { ...NOTHING, blurProb: 0.7 };
  for (const [C, H, W, divider] of [[1, 28, 28, 10], [3, 32, 27, 10], [3, 24, 13, 4], [1, 20, 9, 2.2]]) {
    const c = { ...cfg, blurDivider: divider };
    assert.ok(blurRadius(H, divider) >= 1);
    const x = images([6, H, W, C], 40 + H);
    const params = drawParams(new Rng(41 + H), 6, H, W, c);
    assert.ok(params.some((p) => p.blurSigma > 0) && params.some((p) => p.blurSigma === 0), 'blurred and unblurred images');
    const { got } = await checkAgainstRef(`blur C=${C} ${H}x${W} radius ${blurRadius(H, divider)}`, x, params, c);
    params.forEach((p, b) => {
      if (p.blurSigma > 0) return;
      const per = H * W * C;
      for (let i = 0; i < per; i++) assert.is(got[b * per + i], Math.fround(x.data[b * per + i]), 'unblurred image unchanged');
    });
  }
  // borders darken: a constant image blurred with zero padding is lower at the edge than inside
  const ones: Arr = { data: new Float64Array(30 * 30).fill(1), shape: [1, 30, 30, 1] };
  const p = identityParams(1, 30, 30);
  p[0].blurSigma = 1.5;
  const got = await gpuView(ones, p, cfg);
  assert.ok(got[0] < got[15] && got[15] < 1 && Math.abs(got[15 * 30 + 15] - 1) < 1e-6, `corner ${got[0]}, edge ${got[15]}, centre ${got[465]}`);
});

t('solarize, final clip and normalization vs reference (with and without blur)', async () => {
  const norm = { mean: [0.3, 0.5, 0.7], std: [0.2, 0.25, 0.5] };
  for (const blurProb of [0, 1]) {
    const cfg: ViewConfig = { ...NOTHING, solarizeProb: 0.5, blurProb, normalize: norm };
    const x = images([8, 21, 21, 3], 50);
    const params = drawParams(new Rng(51), 8, 21, 21, cfg);
    assert.ok(params.some((p) => p.solarize) && params.some((p) => !p.solarize));
    await checkAgainstRef(`solarize + normalize, blurProb ${blurProb}`, x, params, cfg, 1e-4);
  }
});

t('the whole BYOL pipeline (T and T\', RGB and grey, blur on at 40 px) vs reference', async () => {
  const n = 12;
  for (const [C, H, W] of [[3, 40, 36], [1, 40, 40], [3, 16, 16]]) {
    const norm = C === 3 ? { mean: [0.49, 0.48, 0.45], std: [0.25, 0.24, 0.26] } : { mean: [0.286], std: [0.353] };
    const x = images([n, H, W, C], 60 + H + C);
    for (const base of [BYOL_VIEW1, BYOL_VIEW2]) {
      const cfg: ViewConfig = { ...base, normalize: norm, outHeight: H === 16 ? 20 : undefined };
      const params = drawParams(new Rng(61 + C), n, H, W, cfg);
      await checkAgainstRef(`pipeline C=${C} ${H}x${W} blur ${base.blurProb}`, x, params, cfg, 1e-4);
    }
  }
});

// ---- views, determinism, dispatches, memory -----------------------------------------------------------------

t('augmentViews: view1 ~ T and view2 ~ T\' from one seeded stream, equal to the reference; deterministic', async () => {
  const x = images([10, 24, 24, 3], 70);
  const cfg = byolAugmentConfig({ imageSize: 24, blur: true, normalize: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } });
  const xt = tensor(Float32Array.from(x.data), x.shape);
  const before = liveTensors();
  const [a1, a2] = augmentViews(xt, new Rng(7), cfg);
  const [b1, b2] = augmentViews(xt, new Rng(7), cfg);
  const [c1, c2] = augmentViews(xt, new Rng(8), cfg);
  const got = await Promise.all([a1, a2, b1, b2, c1].map(async (v) => [...(await v.toArray())]));
  assert.equal(got[0], got[2], 'same seed, same view1');
  assert.equal(got[1], got[3], 'same seed, same view2');
  assert.not.equal(got[0], got[4], 'another seed, another view1');
  assert.not.equal(got[0], got[1], 'the views differ');
  // the same draws, replayed: view1's parameters for all images, then view2's
  const r = new Rng(7);
  const p1 = drawParams(r, 10, 24, 24, cfg.view1);
  const p2 = drawParams(r, 10, 24, 24, cfg.view2);
  assertClose(got[0], ref.augment(x, p1, cfg.view1).data, 1e-4, 'view1 vs reference');
  assertClose(got[1], ref.augment(x, p2, cfg.view2).data, 1e-4, 'view2 vs reference');
  for (const v of [a1, a2, b1, b2, c1, c2]) v.dispose();
  await sync();
  assert.is(liveTensors(), before, 'no buffers leaked');
  xt.dispose();
});

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
