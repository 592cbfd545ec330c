// BYOL's augmentations as GPU kernels over a batch [B, H, W, C] f32 in [0, 1] (C = 1 or 3), with per-image
// parameters drawn on the CPU (augment-params.ts) and uploaded as one small buffer per batch. Per view:
//   1. crop: random resized crop + horizontal flip, one thread per output pixel. Bilinear resize with half-pixel
//      centres (the paper resizes bicubically; bilinear never overshoots [0, 1] and is cheaper).
//   2. colour: jitter (brightness, contrast, saturation, hue in a per-image random order, each clipped), then
//      grayscale; one workgroup per image, because contrast needs the image's per-channel mean at its turn in
//      the order (a reduction in workgroup memory); in place.
//   3-4. blur: separable Gaussian with zero padding ('SAME', as the official code), horizontal then vertical;
//      only when some image of the batch is blurred.
// Solarize, the final clip and the normalization run at the end of the last kernel of the view. Semantics
// follow deepmind-research byol/utils/augmentations.py (RGB<->HSV as TF's kernels). Not differentiable.

import { kernel, type Kernel } from '../engine/kernel.ts';
import { Tensor, tensor, empty, fmtShape } from '../engine/tensor.ts';
import { ew } from '../kernels/elementwise.ts';
import type { Arr } from '../engine/ref.ts';
import type { Rng } from './rng.ts';
import {
  drawParams, packParams, checkViewConfig, blurRadius, PARAM_FLOATS,
  type ViewConfig, type AugmentConfig, type ImageParams, type Normalization,
} from './augment-params.ts';

const WG = 256;
const LUMA = [0.2989, 0.587, 0.114];

// ---- WGSL ------------------------------------------------------------------------------------------------

/** Pixel value type and load/store for C channels: vec3 for RGB, f32 for grey. */
function pixelCode(c: 1 | 3, buf: string, rw: boolean): string {
  return c === 3
    ? `alias V = vec3<f32>;
fn load(j: u32) -> V { return V(${buf}[3u * j], ${buf}[3u * j + 1u], ${buf}[3u * j + 2u]); }
${rw ? `fn store(j: u32, v: V) { ${buf}[3u * j] = v.x; ${buf}[3u * j + 1u] = v.y; ${buf}[3u * j + 2u] = v.z; }` : ''}`
    : `alias V = f32;
fn load(j: u32) -> V { return ${buf}[j]; }
${rw ? `fn store(j: u32, v: V) { ${buf}[j] = v; }` : ''}`;
}

/** Solarize (per image flag), clip, normalize: the last step of a view. p.mean and p.istd are vec4 uniforms. */
const FINALIZE = (c: 1 | 3) => `
fn finalize(v: V, solarize: bool) -> V {
  var x = v;
  if (solarize) { x = select(V(1.0) - x, x, x < V(p.threshold)); }
  x = clamp(x, V(0.0), V(1.0));
  return (x - p.mean.${c === 3 ? 'xyz' : 'x'}) * p.istd.${c === 3 ? 'xyz' : 'x'};
}`;

const VIEW_UNIFORMS = { finalize: 'u32', threshold: 'f32', mean: 'vec4<f32>', istd: 'vec4<f32>' } as const;

function cropKernel(c: 1 | 3): Kernel {
  return kernel(`augment.crop|${c}`, () => ({
    name: 'augment.crop',
    uniforms: { n: 'u32', H: 'u32', W: 'u32', OH: 'u32', OW: 'u32', pbase: 'u32' },
    bindings: { src: 'read f32', prm: 'read vec4<f32>', dst: 'rw f32' },
    workgroupSize: WG,
    flat: { limit: 'p.n' },
    header: pixelCode(c, 'src', false),
    body: `
  let ox = i % p.OW;
  let oy = (i / p.OW) % p.OH;
  let b = i / (p.OW * p.OH);
  let box = prm[(p.pbase + b) * 4u]; // x, y, w, h of the crop window
  let flip = prm[(p.pbase + b) * 4u + 1u].x > 0.5;
  let fx = select(ox, p.OW - 1u - ox, flip);
  // source coordinate of the output pixel's centre (half-pixel centres, as tf.image.resize), clamped to the window
  let sx = clamp((f32(fx) + 0.5) * box.z / f32(p.OW) - 0.5, 0.0, box.z - 1.0);
  let sy = clamp((f32(oy) + 0.5) * box.w / f32(p.OH) - 0.5, 0.0, box.w - 1.0);
  let x0 = u32(sx);
  let y0 = u32(sy);
  let x1 = min(x0 + 1u, u32(box.z) - 1u);
  let y1 = min(y0 + 1u, u32(box.w) - 1u);
  let ax = sx - f32(x0);
  let ay = sy - f32(y0);
  let row0 = b * p.H * p.W + (u32(box.y) + y0) * p.W + u32(box.x);
  let row1 = b * p.H * p.W + (u32(box.y) + y1) * p.W + u32(box.x);
  let v = mix(mix(load(row0 + x0), load(row0 + x1), ax), mix(load(row1 + x0), load(row1 + x1), ax), ay);
  let o = clamp(v, V(0.0), V(1.0));
${c === 3 ? '  dst[3u * i] = o.x; dst[3u * i + 1u] = o.y; dst[3u * i + 2u] = o.z;' : '  dst[i] = o;'}`,
  }));
}

/** RGB<->HSV exactly as byol/utils/augmentations.py (TF's adjust_saturation kernel), H in [0, 1). */
const HSV = `
fn rgbToHsv(c: vec3<f32>) -> vec3<f32> {
  let v = max(max(c.x, c.y), c.z);
  let range = v - min(min(c.x, c.y), c.z);
  let s = select(0.0, range / v, v > 0.0);
  let norm = select(1e9, 1.0 / (6.0 * range), range != 0.0);
  var h = select(select(norm * (c.x - c.y) + 4.0 / 6.0, norm * (c.z - c.x) + 2.0 / 6.0, c.y == v), norm * (c.y - c.z), c.x == v);
  h = select(0.0, h, range > 0.0);
  h = select(h, h + 1.0, h < 0.0);
  return vec3<f32>(h, s, v);
}

fn hsvToRgb(hsv: vec3<f32>) -> vec3<f32> {
  let c = hsv.y * hsv.z;
  let m = hsv.z - c;
  var dh = (hsv.x - floor(hsv.x)) * 6.0;
  if (dh >= 6.0) { dh = 0.0; } // h just below 0 wraps to 1.0 in f32
  let fmodu = dh - 2.0 * floor(dh / 2.0);
  let x = c * (1.0 - abs(fmodu - 1.0));
  let k = u32(dh);
  let r = select(select(0.0, x, k == 1u || k == 4u), c, k == 0u || k == 5u);
  let g = select(select(0.0, x, k == 0u || k == 3u), c, k == 1u || k == 2u);
  let b = select(select(0.0, x, k == 2u || k == 5u), c, k == 3u || k == 4u);
  return vec3<f32>(r, g, b) + m;
}`;

function colorKernel(c: 1 | 3): Kernel {
  const rgb = c === 3;
  return kernel(`augment.color|${c}`, () => ({
    name: 'augment.color',
    uniforms: { B: 'u32', HW: 'u32', pbase: 'u32', ...VIEW_UNIFORMS },
    bindings: { prm: 'read vec4<f32>', img: 'rw f32' },
    workgroupSize: WG,
    header: `var<workgroup> part: array<vec4<f32>, ${WG}>;
${pixelCode(c, 'img', true)}
${FINALIZE(c)}
${rgb ? HSV : ''}

// one jitter op (1 brightness, 2 contrast, 3 saturation, 4 hue, else none); amt = [delta, factor, factor, delta]
fn jitter(op: u32, x: V, amt: vec4<f32>, mean: V) -> V {
  if (op == 1u) { return clamp(x + amt.x, V(0.0), V(1.0)); }
  if (op == 2u) { return clamp(amt.y * (x - mean) + mean, V(0.0), V(1.0)); }${rgb ? `
  if (op == 3u) { var hsv = rgbToHsv(x); hsv.y = clamp(hsv.y * amt.z, 0.0, 1.0); return clamp(hsvToRgb(hsv), V(0.0), V(1.0)); }
  if (op == 4u) { var hsv = rgbToHsv(x); hsv.x = hsv.x + amt.w; hsv.x = hsv.x - floor(hsv.x); return clamp(hsvToRgb(hsv), V(0.0), V(1.0)); }` : ''}
  return x;
}`,
    body: `
  let t = li;
  let b = wid.x;
  let q = (p.pbase + b) * 4u;
  let flags = prm[q + 1u];
  let amt = prm[q + 2u];
  let ops = vec4<u32>(prm[q + 3u]);
  // contrast uses the mean of the image as it is when contrast comes up in the order: reduce that first
  let cpos = select(select(select(select(4u, 3u, ops.w == 2u), 2u, ops.z == 2u), 1u, ops.y == 2u), 0u, ops.x == 2u);
  let base = b * p.HW;
  var acc = V(0.0);
  if (cpos < 4u) {
    for (var i = t; i < p.HW; i += ${WG}u) {
      var x = load(base + i);
      if (cpos > 0u) { x = jitter(ops.x, x, amt, x); }
      if (cpos > 1u) { x = jitter(ops.y, x, amt, x); }
      if (cpos > 2u) { x = jitter(ops.z, x, amt, x); }
      acc += x;
    }
  }
  part[t] = ${rgb ? 'vec4<f32>(acc, 0.0)' : 'vec4<f32>(acc, 0.0, 0.0, 0.0)'};
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { part[t] += part[t + s]; }
    workgroupBarrier();
  }
  let mean = part[0].${rgb ? 'xyz' : 'x'} / f32(p.HW);
  for (var i = t; i < p.HW; i += ${WG}u) {
    var x = load(base + i);
    x = jitter(ops.x, x, amt, mean);
    x = jitter(ops.y, x, amt, mean);
    x = jitter(ops.z, x, amt, mean);
    x = jitter(ops.w, x, amt, mean);${rgb ? `
    if (flags.y > 0.5) { x = V(clamp(dot(x, vec3<f32>(${LUMA.join(', ')})), 0.0, 1.0)); }` : ''}
    if (p.finalize == 1u) { x = finalize(x, flags.z > 0.5); }
    store(base + i, x);
  }`,
  }));
}

/** One blur pass along x (dir 'h') or y ('v') with `radius` taps each side, unrolled; 'v' also finalizes. */
function blurKernel(c: 1 | 3, dir: 'h' | 'v', radius: number): Kernel {
  return kernel(`augment.blur|${c}|${dir}|${radius}`, () => {
    const pos = dir === 'h' ? 'x' : 'y';
    const len = dir === 'h' ? 'p.W' : 'p.H';
    const step = dir === 'h' ? '1u' : 'p.W';
    let taps = '';
    for (let d = 1; d <= radius; d++) {
      taps += `    { let w = exp(${d * d}.0 * k2); wsum += 2.0 * w;
      if (${pos} >= ${d}u) { acc += w * load(i - ${d}u * ${step}); }
      if (${pos} + ${d}u < ${len}) { acc += w * load(i + ${d}u * ${step}); } }\n`;
    }
    return {
      name: `augment.blur.${dir}`,
      uniforms: { n: 'u32', H: 'u32', W: 'u32', pbase: 'u32', ...VIEW_UNIFORMS },
      bindings: { src: 'read f32', prm: 'read vec4<f32>', dst: 'rw f32' },
      workgroupSize: WG,
      flat: { limit: 'p.n' },
      header: `${pixelCode(c, 'src', false)}
${FINALIZE(c)}`,
      body: `
  let x = i % p.W;
  let y = (i / p.W) % p.H;
  let b = i / (p.W * p.H);
  let flags = prm[(p.pbase + b) * 4u + 1u];
  let sigma = flags.w;
  var v = load(i);
  if (sigma > 0.0) {
    // weights exp(-d^2 / (2 sigma^2)) normalized over the whole kernel; taps outside the image read 0
    let k2 = -0.5 / (sigma * sigma);
    var acc = v;
    var wsum = 1.0;
${taps}    v = acc / wsum;
  }
  if (p.finalize == 1u) { v = finalize(v, flags.z > 0.5); }
${c === 3 ? '  dst[3u * i] = v.x; dst[3u * i + 1u] = v.y; dst[3u * i + 2u] = v.z;' : '  dst[i] = v;'}`,
    };
  });
}

// ---- launch ----------------------------------------------------------------------------------------------

function checkBatch(op: string, batch: Tensor): { B: number; H: number; W: number; C: 1 | 3 } {
  batch.assertLive(op);
  if (batch.dtype !== 'f32' || batch.rank !== 4) throw new Error(`${op}: expected an f32 batch [B, H, W, C], got ${batch.dtype} ${fmtShape(batch.shape)}`);
  const [B, H, W, C] = batch.shape;
  if (C !== 1 && C !== 3) throw new Error(`${op}: images must have 1 or 3 channels, got ${fmtShape(batch.shape)}`);
  if (B === 0 || H === 0 || W === 0) throw new Error(`${op}: empty batch ${fmtShape(batch.shape)}`);
  if (B > 65535) throw new Error(`${op}: batch of ${B} images exceeds 65535 (one workgroup per image)`);
  return { B, H, W, C };
}

/** The uniforms that end a view (VIEW_UNIFORMS): whether this kernel finalizes, the threshold, mean and 1/std. */
function finalizeUniforms(finalize: boolean, cfg: ViewConfig, C: number) {
  const mean = [0, 1, 2, 3].map((ch) => (cfg.normalize && ch < C ? cfg.normalize.mean[ch] : 0));
  const istd = [0, 1, 2, 3].map((ch) => (cfg.normalize && ch < C ? 1 / cfg.normalize.std[ch] : 1));
  return { finalize: finalize ? 1 : 0, threshold: cfg.solarizeThreshold, mean, istd };
}

/** Records one view's kernels; `prm` holds the packed parameters, this view's at image offset `pbase`. */
function runView(batch: Tensor, prm: Tensor, pbase: number, params: ImageParams[], cfg: ViewConfig): Tensor {
  const { B, H, W, C } = checkBatch('augment', batch);
  const OH = cfg.outHeight ?? H;
  const OW = cfg.outWidth ?? W;
  const radius = blurRadius(OH, cfg.blurDivider);
  const blur = radius > 0 && params.some((q) => q.blurSigma > 0);
  const out = empty([B, OH, OW, C], 'f32', 'augment');
  const n = B * OH * OW;
  cropKernel(C).launch({ n, H, W, OH, OW, pbase, src: batch, prm, dst: out }, { threads: n });
  colorKernel(C).launch({ B, HW: OH * OW, pbase, ...finalizeUniforms(!blur, cfg, C), prm, img: out }, [B]);
  if (!blur) return out;
  const tmp = empty([B, OH, OW, C], 'f32', 'augment.blur');
  const geometry = { n, H: OH, W: OW, pbase };
  blurKernel(C, 'h', radius).launch({ ...geometry, ...finalizeUniforms(false, cfg, C), src: out, prm, dst: tmp }, { threads: n });
  blurKernel(C, 'v', radius).launch({ ...geometry, ...finalizeUniforms(true, cfg, C), src: tmp, prm, dst: out }, { threads: n });
  tmp.dispose();
  return out;
}

/** Augments a batch with given per-image parameters (one per image): for tests, previews and replays. */
export function augmentWithParams(batch: Tensor, params: ImageParams[], cfg: ViewConfig): Tensor {
  const { B, C } = checkBatch('augment', batch);
  checkViewConfig(cfg, C);
  if (params.length !== B) throw new Error(`augment: ${params.length} parameter sets for a batch of ${B} images ${fmtShape(batch.shape)}`);
  checkCrops(params, batch.shape[1], batch.shape[2]);
  const prm = tensor(packParams(params), [B * PARAM_FLOATS]);
  const out = runView(batch, prm, 0, params, cfg);
  prm.dispose();
  return out;
}

function checkCrops(params: ImageParams[], H: number, W: number): void {
  params.forEach(({ crop: c }, i) => {
    const ok = [c.x, c.y, c.w, c.h].every(Number.isInteger) && c.w >= 1 && c.h >= 1 && c.x >= 0 && c.y >= 0 && c.x + c.w <= W && c.y + c.h <= H;
    if (!ok) throw new Error(`augment: crop window {x ${c.x}, y ${c.y}, w ${c.w}, h ${c.h}} of image ${i} is not inside the ${H}x${W} image`);
  });
}

/** One augmented view of a batch; parameters are drawn per image from `rng`. */
export function augmentView(batch: Tensor, rng: Rng, cfg: ViewConfig): Tensor {
  const { B, H, W, C } = checkBatch('augmentView', batch);
  checkViewConfig(cfg, C, 'augmentView');
  return augmentWithParams(batch, drawParams(rng, B, H, W, cfg), cfg);
}

/** BYOL's two views of a batch: view1 ~ T, view2 ~ T', independent per-image parameters, one upload. */
export function augmentViews(batch: Tensor, rng: Rng, cfg: AugmentConfig): [Tensor, Tensor] {
  const { B, H, W, C } = checkBatch('augmentViews', batch);
  checkViewConfig(cfg.view1, C, 'augmentViews (view1)');
  checkViewConfig(cfg.view2, C, 'augmentViews (view2)');
  const p1 = drawParams(rng, B, H, W, cfg.view1);
  const p2 = drawParams(rng, B, H, W, cfg.view2);
  const packed = new Float32Array(2 * B * PARAM_FLOATS);
  packParams(p1, packed, 0);
  packParams(p2, packed, B);
  const prm = tensor(packed, [packed.length]);
  const v1 = runView(batch, prm, 0, p1, cfg.view1);
  const v2 = runView(batch, prm, B, p2, cfg.view2);
  prm.dispose();
  return [v1, v2];
}

/** Per-channel (x - mean) / std of a [.., C] batch, e.g. for evaluation without augmentation. */
export function normalizeBatch(batch: Tensor, norm: Normalization): Tensor {
  const C = batch.shape[batch.rank - 1];
  batch.assertLive('normalizeBatch');
  if (norm.mean.length !== C || norm.std.length !== C) throw new Error(`normalizeBatch: ${norm.mean.length} means and ${norm.std.length} stds for ${C} channels, batch ${fmtShape(batch.shape)}`);
  const mean = tensor(norm.mean, [C]);
  const istd = tensor(norm.std.map((s) => 1 / s), [C]);
  const out = ew('augment.normalize', '(a - b) * c', [batch, mean, istd], batch.shape);
  mean.dispose();
  istd.dispose();
  return out;
}

// ---- float64 reference -----------------------------------------------------------------------------------

type Vec = number[];

function rgbToHsv([r, g, b]: Vec): Vec {
  const v = Math.max(r, g, b);
  const range = v - Math.min(r, g, b);
  const s = v > 0 ? range / v : 0;
  const norm = range !== 0 ? 1 / (6 * range) : 1e9;
  let h = r === v ? norm * (g - b) : g === v ? norm * (b - r) + 2 / 6 : norm * (r - g) + 4 / 6;
  if (!(range > 0)) h = 0;
  if (h < 0) h += 1;
  return [h, s, v];
}

function hsvToRgb([h, s, v]: Vec): Vec {
  const c = s * v;
  const m = v - c;
  let dh = (h - Math.floor(h)) * 6;
  if (dh >= 6) dh = 0;
  const fmodu = dh - 2 * Math.floor(dh / 2);
  const x = c * (1 - Math.abs(fmodu - 1));
  const k = Math.floor(dh);
  const r = k === 0 || k === 5 ? c : k === 1 || k === 4 ? x : 0;
  const g = k === 1 || k === 2 ? c : k === 0 || k === 3 ? x : 0;
  const b = k === 3 || k === 4 ? c : k === 2 || k === 5 ? x : 0;
  return [r + m, g + m, b + m];
}

const clip = (v: number) => Math.min(1, Math.max(0, v));

export const ref = {
  rgbToHsv,
  hsvToRgb,
  /** One view in float64 plain loops: x is [B, H, W, C]; returns [B, OH, OW, C]. */
  augment(x: Arr, params: ImageParams[], cfg: ViewConfig): Arr {
    const [B, H, W, C] = x.shape;
    const OH = cfg.outHeight ?? H;
    const OW = cfg.outWidth ?? W;
    const P = OH * OW;
    const out = new Float64Array(B * P * C);
    for (let b = 0; b < B; b++) {
      const q = params[b];
      // crop + flip: bilinear with half-pixel centres, clamped to the window
      const img: Vec[] = [];
      const at = (yy: number, xx: number) => ((b * H + q.crop.y + yy) * W + q.crop.x + xx) * C;
      for (let oy = 0; oy < OH; oy++) {
        for (let ox = 0; ox < OW; ox++) {
          const fx = q.flip ? OW - 1 - ox : ox;
          const sx = Math.min(Math.max((fx + 0.5) * q.crop.w / OW - 0.5, 0), q.crop.w - 1);
          const sy = Math.min(Math.max((oy + 0.5) * q.crop.h / OH - 0.5, 0), q.crop.h - 1);
          const x0 = Math.floor(sx);
          const y0 = Math.floor(sy);
          const x1 = Math.min(x0 + 1, q.crop.w - 1);
          const y1 = Math.min(y0 + 1, q.crop.h - 1);
          const ax = sx - x0;
          const ay = sy - y0;
          const px: Vec = [];
          for (let c = 0; c < C; c++) {
            const top = x.data[at(y0, x0) + c] * (1 - ax) + x.data[at(y0, x1) + c] * ax;
            const bot = x.data[at(y1, x0) + c] * (1 - ax) + x.data[at(y1, x1) + c] * ax;
            px.push(clip(top * (1 - ay) + bot * ay));
          }
          img.push(px);
        }
      }
      // colour jitter in the drawn order, each op clipped; contrast about the current per-channel mean
      if (q.jitter) {
        for (const op of q.order) {
          if (op === 0) for (const px of img) for (let c = 0; c < C; c++) px[c] = clip(px[c] + q.brightness);
          if (op === 1) {
            const mean = new Array(C).fill(0);
            for (const px of img) for (let c = 0; c < C; c++) mean[c] += px[c] / P;
            for (const px of img) for (let c = 0; c < C; c++) px[c] = clip(q.contrast * (px[c] - mean[c]) + mean[c]);
          }
          if ((op === 2 || op === 3) && C === 3) {
            for (let p = 0; p < P; p++) {
              const hsv = rgbToHsv(img[p]);
              if (op === 2) hsv[1] = clip(hsv[1] * q.saturation);
              else hsv[0] = (hsv[0] + q.hue) - Math.floor(hsv[0] + q.hue);
              img[p] = hsvToRgb(hsv).map(clip);
            }
          }
        }
      }
      if (q.gray && C === 3) {
        for (let p = 0; p < P; p++) img[p] = new Array(3).fill(clip(LUMA[0] * img[p][0] + LUMA[1] * img[p][1] + LUMA[2] * img[p][2]));
      }
      // separable Gaussian blur with zero padding: rows, then columns
      const radius = blurRadius(OH, cfg.blurDivider);
      if (q.blurSigma > 0 && radius > 0) {
        const w: number[] = [];
        for (let d = -radius; d <= radius; d++) w.push(Math.exp(-(d * d) / (2 * q.blurSigma ** 2)));
        const wsum = w.reduce((a, v) => a + v, 0);
        for (const [dx, dy] of [[1, 0], [0, 1]]) {
          const src = img.map((px) => [...px]);
          for (let y = 0; y < OH; y++) {
            for (let xx = 0; xx < OW; xx++) {
              for (let c = 0; c < C; c++) {
                let acc = 0;
                for (let d = -radius; d <= radius; d++) {
                  const sx = xx + d * dx;
                  const sy = y + d * dy;
                  if (sx >= 0 && sx < OW && sy >= 0 && sy < OH) acc += (w[d + radius] / wsum) * src[sy * OW + sx][c];
                }
                img[y * OW + xx][c] = acc;
              }
            }
          }
        }
      }
      for (let p = 0; p < P; p++) {
        for (let c = 0; c < C; c++) {
          let v = img[p][c];
          if (q.solarize) v = v < cfg.solarizeThreshold ? v : 1 - v;
          v = clip(v);
          if (cfg.normalize) v = (v - cfg.normalize.mean[c]) / cfg.normalize.std[c];
          out[(b * P + p) * C + c] = v;
        }
      }
    }
    return { data: out, shape: [B, OH, OW, C] };
  },
};
