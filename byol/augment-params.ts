// BYOL's augmentation settings (paper App. B, Table 6; deepmind-research byol/utils/augmentations.py) and the
// per-image random parameters drawn from them on the CPU. Every draw is per image, and an image always takes
// the same number of draws whether or not an op fires, so one seed gives one stream of parameters.

import type { Rng } from './rng.ts';

export interface Normalization {
  mean: number[];
  std: number[];
}

/** One view's pipeline: crop+flip -> colour jitter (random order) -> grayscale -> blur -> solarize -> normalize. */
export interface ViewConfig {
  /** Output size; default the input size (the crop is resized back to it). */
  outHeight?: number;
  outWidth?: number;
  /** Random resized crop on (true), or the whole image resized (false, e.g. for evaluation). */
  crop: boolean;
  /** Area fraction ~ U[scale0, scale1]. */
  cropScale: [number, number];
  /** Aspect ratio w/h, log-uniform in this range. */
  cropRatio: [number, number];
  flipProb: number;
  /** Probability that colour jitter runs at all; then all four ops run in a random order. */
  jitterProb: number;
  /** Additive delta ~ U[-b, b]. */
  brightness: number;
  /** Factor ~ U[1-c, 1+c] about the per-image per-channel mean. */
  contrast: number;
  /** Factor ~ U[1-s, 1+s] on S in HSV. */
  saturation: number;
  /** Delta ~ U[-h, h] on H in HSV (H in [0, 1)). */
  hue: number;
  grayProb: number;
  blurProb: number;
  /** sigma ~ U[lo, hi] in pixels. */
  blurSigma: [number, number];
  /** Kernel size = outHeight / blurDivider; taps = 2 * floor(size / 2) + 1 (3 at 28-39 px, 23 at 224). */
  blurDivider: number;
  solarizeProb: number;
  solarizeThreshold: number;
  /** Per-channel (x - mean) / std as the last step, or null. */
  normalize: Normalization | null;
}

export interface AugmentConfig {
  view1: ViewConfig;
  view2: ViewConfig;
}

/** The per-image parameters of one view. */
export interface ImageParams {
  /** Crop window in source pixels; `area` (fraction) and `ratio` are the raw draws it came from. */
  crop: { x: number; y: number; w: number; h: number; area: number; ratio: number };
  flip: boolean;
  /** Whether colour jitter runs; `order` is the permutation of 0 brightness, 1 contrast, 2 saturation, 3 hue. */
  jitter: boolean;
  order: number[];
  brightness: number;
  contrast: number;
  saturation: number;
  hue: number;
  gray: boolean;
  /** 0 when no blur. */
  blurSigma: number;
  solarize: boolean;
}

/** The paper's T (view1) settings. */
export const BYOL_VIEW1: ViewConfig = {
  crop: true,
  cropScale: [0.08, 1],
  cropRatio: [3 / 4, 4 / 3],
  flipProb: 0.5,
  jitterProb: 0.8,
  brightness: 0.4,
  contrast: 0.4,
  saturation: 0.2,
  hue: 0.1,
  grayProb: 0.2,
  blurProb: 1.0,
  blurSigma: [0.1, 2.0],
  blurDivider: 10,
  solarizeProb: 0,
  solarizeThreshold: 0.5,
  normalize: null,
};

/** The paper's T' (view2): rarely blurred, sometimes solarized. */
export const BYOL_VIEW2: ViewConfig = { ...BYOL_VIEW1, blurProb: 0.1, solarizeProb: 0.2 };

export interface ByolAugmentOptions {
  /** Side of the (square-ish) images: blur is off by default at <= 32 px, as in the CIFAR recipes. */
  imageSize: number;
  blur?: boolean;
  normalize?: Normalization | null;
  cropScale?: [number, number];
  /** Probability of solarizing view 2 (the paper's 0.2 by default; view 1 is never solarized). */
  solarizeProb?: number;
  outHeight?: number;
  outWidth?: number;
}

/** BYOL's asymmetric T / T' pair, adapted to small images (blur off at <= 32 px unless `blur` is set). */
export function byolAugmentConfig(opts: ByolAugmentOptions): AugmentConfig {
  const blur = opts.blur ?? opts.imageSize > 32;
  const common: Partial<ViewConfig> = { normalize: opts.normalize ?? null, outHeight: opts.outHeight, outWidth: opts.outWidth };
  if (opts.cropScale) common.cropScale = [...opts.cropScale];
  const view = (base: ViewConfig): ViewConfig => ({ ...base, ...common, blurProb: blur ? base.blurProb : 0 });
  const view2 = opts.solarizeProb === undefined ? BYOL_VIEW2 : { ...BYOL_VIEW2, solarizeProb: opts.solarizeProb };
  return { view1: view(BYOL_VIEW1), view2: view(view2) };
}

/** Checks a view config against the image it will run on; throws naming the bad field. */
export function checkViewConfig(cfg: ViewConfig, channels: number, what = 'augment'): void {
  const prob = (k: keyof ViewConfig) => {
    const v = cfg[k] as number;
    if (!(v >= 0 && v <= 1)) throw new Error(`${what}: ${k} must be a probability in [0, 1], got ${v}`);
  };
  (['flipProb', 'jitterProb', 'grayProb', 'blurProb', 'solarizeProb'] as const).forEach(prob);
  const [s0, s1] = cfg.cropScale;
  if (!(s0 > 0 && s0 <= s1 && s1 <= 1)) throw new Error(`${what}: cropScale must satisfy 0 < lo <= hi <= 1, got [${cfg.cropScale}]`);
  const [r0, r1] = cfg.cropRatio;
  if (!(r0 > 0 && r0 <= r1)) throw new Error(`${what}: cropRatio must satisfy 0 < lo <= hi, got [${cfg.cropRatio}]`);
  for (const k of ['brightness', 'contrast', 'saturation', 'hue'] as const) {
    if (!(cfg[k] >= 0 && cfg[k] <= (k === 'hue' ? 0.5 : 1))) throw new Error(`${what}: ${k} must be in [0, ${k === 'hue' ? 0.5 : 1}], got ${cfg[k]}`);
  }
  const [g0, g1] = cfg.blurSigma;
  if (!(g0 > 0 && g0 <= g1)) throw new Error(`${what}: blurSigma must satisfy 0 < lo <= hi, got [${cfg.blurSigma}]`);
  if (!(cfg.blurDivider > 0)) throw new Error(`${what}: blurDivider must be > 0, got ${cfg.blurDivider}`);
  for (const k of ['outHeight', 'outWidth'] as const) {
    const v = cfg[k];
    if (v !== undefined && !(Number.isInteger(v) && v > 0)) throw new Error(`${what}: ${k} must be a positive integer, got ${v}`);
  }
  if (cfg.normalize) {
    const { mean, std } = cfg.normalize;
    if (mean.length !== channels || std.length !== channels) {
      throw new Error(`${what}: normalize needs ${channels} means and stds for ${channels}-channel images, got ${mean.length} and ${std.length}`);
    }
    if (std.some((s) => !(s > 0))) throw new Error(`${what}: normalize std must be > 0, got [${std}]`);
  }
}

/** Blur radius in taps for an output height: int(H / divider / 2), as the official code (1 at 28 px). */
export function blurRadius(outHeight: number, divider: number): number {
  return Math.floor(outHeight / divider / 2);
}

/** Draws one view's parameters for `n` images of height x width (the source size: crops are taken there). */
export function drawParams(rng: Rng, n: number, height: number, width: number, cfg: ViewConfig): ImageParams[] {
  const out: ImageParams[] = [];
  const logR0 = Math.log(cfg.cropRatio[0]);
  const logR1 = Math.log(cfg.cropRatio[1]);
  for (let i = 0; i < n; i++) {
    // crop as byol/utils/dataset.py _decode_and_random_crop: no rejection loop, sides clamped to the image
    const area = rng.uniform(cfg.cropScale[0], cfg.cropScale[1]);
    const ratio = Math.exp(rng.uniform(logR0, logR1));
    const ux = rng.next();
    const uy = rng.next();
    let w = width;
    let h = height;
    if (cfg.crop) {
      w = Math.min(width, Math.max(1, Math.round(Math.sqrt(area * height * width * ratio))));
      h = Math.min(height, Math.max(1, Math.round(Math.sqrt((area * height * width) / ratio))));
    }
    const x = Math.floor(ux * (width - w + 1));
    const y = Math.floor(uy * (height - h + 1));
    const flip = rng.chance(cfg.flipProb);
    const jitter = rng.chance(cfg.jitterProb);
    const order = rng.permutation(4);
    const brightness = rng.uniform(-cfg.brightness, cfg.brightness);
    const contrast = rng.uniform(1 - cfg.contrast, 1 + cfg.contrast);
    const saturation = rng.uniform(1 - cfg.saturation, 1 + cfg.saturation);
    const hue = rng.uniform(-cfg.hue, cfg.hue);
    const gray = rng.chance(cfg.grayProb);
    const blur = rng.chance(cfg.blurProb);
    const sigma = rng.uniform(cfg.blurSigma[0], cfg.blurSigma[1]);
    const solarize = rng.chance(cfg.solarizeProb);
    out.push({ crop: { x, y, w, h, area, ratio }, flip, jitter, order, brightness, contrast, saturation, hue, gray, blurSigma: blur ? sigma : 0, solarize });
  }
  return out;
}

/** Floats per image in the packed parameter buffer (4 vec4s). */
export const PARAM_FLOATS = 16;

/**
 * Packs parameters for the kernels, per image 4 vec4s: [x, y, w, h], [flip, gray, solarize, blurSigma],
 * [brightness, contrast, saturation, hue], [op at position 0..3] with op codes 1 brightness, 2 contrast,
 * 3 saturation, 4 hue, 0 none (all 0 when jitter is off).
 */
export function packParams(params: ImageParams[], out = new Float32Array(params.length * PARAM_FLOATS), at = 0): Float32Array {
  params.forEach((p, i) => {
    const o = (at + i) * PARAM_FLOATS;
    out.set([p.crop.x, p.crop.y, p.crop.w, p.crop.h, +p.flip, +p.gray, +p.solarize, p.blurSigma, p.brightness, p.contrast, p.saturation, p.hue], o);
    out.set(p.jitter ? p.order.map((k) => k + 1) : [0, 0, 0, 0], o + 12);
  });
  return out;
}
