// Augmentation checks: the GPU kernels against the float64 reference (byol/augment.ts `ref`) given the same drawn
// parameters, each op alone and then the whole BYOL pipeline, and the two seeded views. Framework-free (plain
// Errors, nn/check.ts), so that the Node tests (test/augment.test.ts) and the browser page run the same checks.

import { tensor, type Tensor } from '../nn/index.ts';
import { rng, randArr, assertClose, ensure, ensureEqual, leakFree, type Check } from '../nn/check.ts';
import type { Arr } from '../engine/ref.ts';
import { Rng } from './rng.ts';
import { augmentWithParams, augmentViews, ref } from './augment.ts';
import { drawParams, byolAugmentConfig, blurRadius, BYOL_VIEW1, BYOL_VIEW2, type ImageParams, type ViewConfig } from './augment-params.ts';

const TOL = 2e-5;

/** A view config in which nothing fires unless a check turns it on. */
export const NOTHING: ViewConfig = { ...BYOL_VIEW1, crop: false, flipProb: 0, jitterProb: 0, grayProb: 0, blurProb: 0, solarizeProb: 0 };

export function identityParams(n: number, h: number, w: number): ImageParams[] {
  return Array.from({ length: n }, () => ({
    crop: { x: 0, y: 0, w, h, area: 1, ratio: 1 },
    flip: false, jitter: false, order: [0, 1, 2, 3], brightness: 0, contrast: 1, saturation: 1, hue: 0, gray: false, blurSigma: 0, solarize: false,
  }));
}

/** Images in [0, 1]: random, with a few saturated pixels and grey pixels so clipping and HSV edge cases occur. */
export function images(shape: number[], seed: number): Arr {
  const x = randArr(shape, rng(seed), 0, 1);
  const C = shape[3];
  for (let i = 0; i < x.data.length; i += 7 * C) x.data[i] = i % 2 ? 1 : 0;
  if (C === 3) for (let p = 5; p < x.data.length / 3; p += 11) x.data[3 * p + 1] = x.data[3 * p + 2] = x.data[3 * p];
  return x;
}

export async function gpuView(x: Arr, params: ImageParams[], cfg: ViewConfig): Promise<Float32Array> {
  const xt = tensor(Float32Array.from(x.data), x.shape);
  let y: Tensor | null = null;
  try {
    y = augmentWithParams(xt, params, cfg);
    return (await y.toArray()) as Float32Array;
  } finally {
    xt.dispose();
    y?.dispose();
  }
}

async function checkAgainstRef(name: string, x: Arr, params: ImageParams[], cfg: ViewConfig, tol = TOL) {
  const want = ref.augment(x, params, cfg);
  const got = await gpuView(x, params, cfg);
  assertClose(got, want.data, tol, name);
  return { got, want };
}

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

const checks: [string, () => Promise<void>][] = [
  ['no op firing is the identity, exactly', async () => {
    for (const C of [1, 3]) {
      const x = images([3, 7, 5, C], 1);
      ensureEqual(await gpuView(x, identityParams(3, 7, 5), NOTHING), Float32Array.from(x.data), `C=${C}`);
    }
  }],

  ['random resized crop + flip (bilinear) vs reference, 1 and 3 channels, other output sizes', async () => {
    const cfg: ViewConfig = { ...NOTHING, crop: true, flipProb: 0.5 };
    for (const [C, H, W, OH, OW] of [[1, 13, 11, 13, 11], [3, 13, 11, 9, 12], [3, 28, 28, 32, 32], [1, 5, 40, 6, 3]]) {
      const x = images([6, H, W, C], 2 + C);
      const params = drawParams(new Rng(C * 100 + H), 6, H, W, cfg);
      ensure(params.some((p) => p.flip) && params.some((p) => !p.flip), 'both flipped and unflipped images');
      await checkAgainstRef(`crop C=${C} ${H}x${W}->${OH}x${OW}`, x, params, { ...cfg, outHeight: OH, outWidth: OW });
    }
  }],

  ['horizontal flip alone mirrors each row', async () => {
    const x = images([2, 4, 6, 3], 3);
    const params = identityParams(2, 4, 6);
    params[1].flip = true;
    const got = await gpuView(x, params, NOTHING);
    for (let y = 0; y < 4; y++) for (let xx = 0; xx < 6; xx++) for (let c = 0; c < 3; c++) {
      const flipped = got[((24 + y * 6 + xx) * 3) + c];
      const kept = got[((y * 6 + xx) * 3) + c];
      ensure(flipped === Math.fround(x.data[((24 + y * 6 + 5 - xx) * 3) + c]), `flipped image at row ${y}, column ${xx}, channel ${c}: ${flipped}`);
      ensure(kept === Math.fround(x.data[((y * 6 + xx) * 3) + c]), `unflipped image at row ${y}, column ${xx}, channel ${c}: ${kept}`);
    }
  }],

  ...(['brightness', 'contrast', 'saturation', 'hue'] as const).map((op): [string, () => Promise<void>] => [`colour jitter: ${op} alone vs reference`, async () => {
    for (const [C, H, W] of [[3, 9, 7], [3, 23, 19], [1, 17, 16]]) {
      const x = images([5, H, W, C], 10 + H);
      const params = onlyOp(5, H, W, op, new Rng(H * 7 + C));
      const { got } = await checkAgainstRef(`${op} C=${C} ${H}x${W}`, x, params, NOTHING);
      // ops at their identity values may round (contrast 1 computes (x - m) + m), so "unchanged" is within 1e-6
      const change = got.reduce((m, v, i) => Math.max(m, Math.abs(v - x.data[i])), 0);
      const noop = C === 1 && (op === 'saturation' || op === 'hue');
      ensure(noop ? change < 1e-6 : change > 1e-2, `${op} on C=${C} changes pixels by up to ${change}`);
    }
  }]),

  ['colour jitter: all four ops in every order (contrast at each position: the mean is taken mid-pipeline)', async () => {
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
    for (let pos = 0; pos < 4; pos++) ensure(params.some((p) => p.order[pos] === 1), `contrast at position ${pos}`);
    await checkAgainstRef('jitter, all orders', x, params, NOTHING);
    await checkAgainstRef('jitter, 1 channel', images([24, H, W, 1], 22), params, NOTHING);
  }],

  ['grayscale (luma 0.2989, 0.587, 0.114, replicated) vs reference; a no-op on 1 channel', async () => {
    const x = images([3, 6, 5, 3], 30);
    const params = identityParams(3, 6, 5);
    params[0].gray = params[2].gray = true;
    const { got } = await checkAgainstRef('gray', x, params, NOTHING);
    for (let p = 0; p < 30; p++) {
      ensure(got[3 * p] === got[3 * p + 1] && got[3 * p] === got[3 * p + 2], `pixel ${p} is grey`);
      ensure(Math.abs(got[3 * p] - (0.2989 * x.data[3 * p] + 0.587 * x.data[3 * p + 1] + 0.114 * x.data[3 * p + 2])) < 1e-6, `pixel ${p} is the luma`);
    }
    const x1 = images([3, 6, 5, 1], 31);
    ensureEqual(await gpuView(x1, params, NOTHING), Float32Array.from(x1.data), 'grayscale of 1 channel');
  }],

  ['gaussian blur (separable, zero padding) vs reference: radius 1 at 28 px, larger radii, per-image sigma or none', async () => {
    const cfg: ViewConfig = { ...NOTHING, blurProb: 0.7 };
    for (const [C, H, W, divider] of [[1, 28, 28, 10], [3, 32, 27, 10], [3, 24, 13, 4], [1, 20, 9, 2.2]]) {
      const c = { ...cfg, blurDivider: divider };
      ensure(blurRadius(H, divider) >= 1, `blur radius at ${H} px, divider ${divider}`);
      const x = images([6, H, W, C], 40 + H);
      const params = drawParams(new Rng(41 + H), 6, H, W, c);
      ensure(params.some((p) => p.blurSigma > 0) && params.some((p) => p.blurSigma === 0), 'blurred and unblurred images');
      const { got } = await checkAgainstRef(`blur C=${C} ${H}x${W} radius ${blurRadius(H, divider)}`, x, params, c);
      params.forEach((p, b) => {
        if (p.blurSigma > 0) return;
        const per = H * W * C;
        for (let i = 0; i < per; i++) ensure(got[b * per + i] === Math.fround(x.data[b * per + i]), `unblurred image ${b} unchanged at ${i}`);
      });
    }
    // borders darken: a constant image blurred with zero padding is lower at the edge than inside
    const ones: Arr = { data: new Float64Array(30 * 30).fill(1), shape: [1, 30, 30, 1] };
    const p = identityParams(1, 30, 30);
    p[0].blurSigma = 1.5;
    const got = await gpuView(ones, p, cfg);
    ensure(got[0] < got[15] && got[15] < 1 && Math.abs(got[15 * 30 + 15] - 1) < 1e-6, `corner ${got[0]}, edge ${got[15]}, centre ${got[465]}`);
  }],

  ['solarize, final clip and normalization vs reference (with and without blur)', async () => {
    const norm = { mean: [0.3, 0.5, 0.7], std: [0.2, 0.25, 0.5] };
    for (const blurProb of [0, 1]) {
      const cfg: ViewConfig = { ...NOTHING, solarizeProb: 0.5, blurProb, normalize: norm };
      const x = images([8, 21, 21, 3], 50);
      const params = drawParams(new Rng(51), 8, 21, 21, cfg);
      ensure(params.some((p) => p.solarize) && params.some((p) => !p.solarize), 'solarized and plain images');
      await checkAgainstRef(`solarize + normalize, blurProb ${blurProb}`, x, params, cfg, 1e-4);
    }
  }],

  ['the whole BYOL pipeline (T and T\', RGB and grey, blur on at 40 px) vs reference', async () => {
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
  }],

  ['augmentViews: view1 ~ T and view2 ~ T\' from one seeded stream, equal to the reference; deterministic', async () => {
    const x = images([10, 24, 24, 3], 70);
    const cfg = byolAugmentConfig({ imageSize: 24, blur: true, normalize: { mean: [0.5, 0.5, 0.5], std: [0.25, 0.25, 0.25] } });
    const xt = tensor(Float32Array.from(x.data), x.shape);
    const views: Tensor[] = [];
    try {
      views.push(...augmentViews(xt, new Rng(7), cfg), ...augmentViews(xt, new Rng(7), cfg), ...augmentViews(xt, new Rng(8), cfg));
      const got = await Promise.all(views.slice(0, 5).map(async (v) => (await v.toArray()) as Float32Array));
      const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((v, i) => v === b[i]);
      ensure(same(got[0], got[2]), 'same seed, same view1');
      ensure(same(got[1], got[3]), 'same seed, same view2');
      ensure(!same(got[0], got[4]), 'another seed, another view1');
      ensure(!same(got[0], got[1]), 'the views differ');
      // the same draws, replayed: view1's parameters for all images, then view2's
      const r = new Rng(7);
      const p1 = drawParams(r, 10, 24, 24, cfg.view1);
      const p2 = drawParams(r, 10, 24, 24, cfg.view2);
      assertClose(got[0], ref.augment(x, p1, cfg.view1).data, 1e-4, 'view1 vs reference');
      assertClose(got[1], ref.augment(x, p2, cfg.view2).data, 1e-4, 'view2 vs reference');
    } finally {
      for (const v of views) v.dispose();
      xt.dispose();
    }
  }],
];

export const augmentChecks: Check[] = checks.map(([name, fn]) => ({ name, run: () => leakFree(fn) }));
