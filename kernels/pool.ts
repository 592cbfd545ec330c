// Pooling on NHWC activations: max pooling (with the argmax kept for backward) and global average pooling, with
// their float64 reference. Max pooling reads 4 channels per thread as vec4 when C % 4 == 0 (loads dominate the
// cost on lavapipe). Its backward gathers instead of scattering: each input element sums dy over the windows
// that chose it, so overlapping windows need no atomics.

import { kernel, type Kernel, type BindingDecl } from '../engine/kernel.ts';
import { Tensor, empty, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { mean } from './reduce.ts';
import { convOutSize } from './conv2d.ts';
import type { Arr } from '../engine/ref.ts';

export interface MaxPoolOptions {
  kernel?: number;
  stride?: number;
  padding?: number;
}

interface PoolGeom {
  N: number;
  H: number;
  W: number;
  C: number;
  K: number;
  S: number;
  P: number;
  OH: number;
  OW: number;
}

const WG = 64;
const UNIFORMS = {
  n: 'u32', h: 'i32', w: 'i32', cq: 'u32', oh: 'i32', ow: 'i32', k: 'i32', s: 'i32', pad: 'i32',
} as const;

function poolKernel(kind: 'fwd' | 'bwd', vec: boolean): Kernel {
  const F = vec ? 'vec4<f32>' : 'f32';
  const I = vec ? 'vec4<i32>' : 'i32';
  return kernel(`maxPool2d|${kind}|${vec}`, () => ({
    name: `maxPool2d.${kind}`,
    uniforms: UNIFORMS,
    bindings: (kind === 'fwd'
      ? { x: `read ${F}`, y: `rw ${F}`, arg: `rw ${I}` }
      : { dy: `read ${F}`, arg: `read ${I}`, dx: `rw ${F}` }) as Record<string, BindingDecl>,
    workgroupSize: WG,
    flat: { limit: 'p.n' },
    body: kind === 'fwd'
      ? // one thread per output (pixel, channel quad); arg holds the chosen input pixel (ih * W + iw)
        `
  let cq = i % p.cq;
  let pix = i / p.cq;
  let ow = i32(pix % u32(p.ow));
  let oh = i32((pix / u32(p.ow)) % u32(p.oh));
  let n = i32(pix / u32(p.ow * p.oh));
  var best = ${F}(-3.402823e38);
  var at = ${I}(-1);
  for (var kh = 0; kh < p.k; kh++) {
    let ih = oh * p.s - p.pad + kh;
    if (ih < 0 || ih >= p.h) { continue; }
    for (var kw = 0; kw < p.k; kw++) {
      let iw = ow * p.s - p.pad + kw;
      if (iw < 0 || iw >= p.w) { continue; }
      let v = x[u32((n * p.h + ih) * p.w + iw) * p.cq + cq];
      // strictly greater: ties keep the first maximum in window order (as PyTorch)
      let better = (v > best) | (at < ${I}(0));
      best = select(best, v, better);
      at = select(at, ${I}(ih * p.w + iw), better);
    }
  }
  y[i] = best;
  arg[i] = at;`
      : // one thread per input (pixel, channel quad): sum dy over the windows whose argmax is this pixel
        `
  let cq = i % p.cq;
  let pix = i / p.cq;
  let iw = i32(pix % u32(p.w));
  let ih = i32((pix / u32(p.w)) % u32(p.h));
  let n = i32(pix / u32(p.w * p.h));
  let me = ${I}(ih * p.w + iw);
  // windows oh with oh * s - pad <= ih < oh * s - pad + k
  let oh0 = max(0, (ih + p.pad - p.k + p.s) / p.s);
  let oh1 = min(p.oh - 1, (ih + p.pad) / p.s);
  let ow0 = max(0, (iw + p.pad - p.k + p.s) / p.s);
  let ow1 = min(p.ow - 1, (iw + p.pad) / p.s);
  var acc = ${F}(0.0);
  for (var oh = oh0; oh <= oh1; oh++) {
    for (var ow = ow0; ow <= ow1; ow++) {
      let o = u32((n * p.oh + oh) * p.ow + ow) * p.cq + cq;
      acc += select(${F}(0.0), dy[o], arg[o] == me);
    }
  }
  dx[i] = acc;`,
  }));
}

function uniforms(g: PoolGeom, threads: number, vec: boolean) {
  return { n: threads, h: g.H, w: g.W, cq: vec ? g.C / 4 : g.C, oh: g.OH, ow: g.OW, k: g.K, s: g.S, pad: g.P };
}

function poolGeometry(x: Tensor, opts: MaxPoolOptions): PoolGeom {
  const op = 'maxPool2d';
  x.assertLive(op);
  const K = opts.kernel ?? 3;
  const S = opts.stride ?? 2;
  const P = opts.padding ?? 1;
  if (x.dtype !== 'f32') throw new Error(`${op}: expected an f32 tensor, got ${x.dtype} ${fmtShape(x.shape)}`);
  if (x.rank !== 4) throw new Error(`${op}: input must be 4-D [N, H, W, C] (NHWC), got ${fmtShape(x.shape)}`);
  if (!Number.isInteger(K) || K < 1) throw new Error(`${op}: kernel must be a positive integer, got ${K}`);
  if (!Number.isInteger(S) || S < 1) throw new Error(`${op}: stride must be a positive integer, got ${S}`);
  // as PyTorch: then every window holds at least one real pixel
  if (!Number.isInteger(P) || P < 0 || 2 * P > K) throw new Error(`${op}: padding must be an integer in [0, kernel / 2], got ${P} for kernel ${K}`);
  const [N, H, W, C] = x.shape;
  // with padding, an empty image would still get windows, made only of padding: no value to take the max of
  if (H === 0 || W === 0) throw new Error(`${op}: input ${fmtShape(x.shape)} has an empty spatial dimension`);
  const OH = convOutSize(H, K, S, P);
  const OW = convOutSize(W, K, S, P);
  if (OH < 1 || OW < 1) throw new Error(`${op}: input ${fmtShape(x.shape)} is too small for kernel ${K} with stride ${S} and padding ${P}: the output would be ${OH}x${OW}`);
  return { N, H, W, C, K, S, P, OH, OW };
}

/**
 * Max pooling over K x K windows of NHWC `x` (zero-size padding counts as -infinity). The gradient goes to the
 * first maximum of each window in row-major window order, as in PyTorch.
 */
export function maxPool2d(x: Tensor, opts: MaxPoolOptions = {}): Tensor {
  const g = poolGeometry(x, opts);
  const vec = g.C % 4 === 0;
  const y = empty([g.N, g.OH, g.OW, g.C], 'f32', 'maxPool2d');
  const arg = empty([g.N, g.OH, g.OW, g.C], 'i32', 'maxPool2d');
  const threads = y.size / (vec ? 4 : 1);
  if (threads > 0) poolKernel('fwd', vec).launch({ ...uniforms(g, threads, vec), x, y, arg }, { threads });
  if (needsGrad(x)) {
    record('maxPool2d', [x], y, (dy, [sarg]) => {
      const dx = empty(x.shape, 'f32', 'maxPool2d.backward');
      const n = dx.size / (vec ? 4 : 1);
      if (n > 0) poolKernel('bwd', vec).launch({ ...uniforms(g, n, vec), dy, arg: sarg, dx }, { threads: n });
      return [dx];
    }, [arg]);
  }
  arg.dispose();
  return y;
}

/** Mean over the spatial axes of NHWC `x`: [N, H, W, C] -> [N, C]. */
export function globalAvgPool(x: Tensor): Tensor {
  x.assertLive('globalAvgPool');
  if (x.rank !== 4) throw new Error(`globalAvgPool: input must be 4-D [N, H, W, C] (NHWC), got ${fmtShape(x.shape)}`);
  if (x.dtype !== 'f32') throw new Error(`globalAvgPool: expected an f32 tensor, got ${x.dtype} ${fmtShape(x.shape)}`);
  if (x.shape[1] * x.shape[2] === 0) throw new Error(`globalAvgPool: input ${fmtShape(x.shape)} has no pixels to average`);
  // the reduction kernels and mean's backward (a broadcast of dy / (H * W)) do exactly this
  return mean(x, [1, 2]);
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  maxPool2d(x: Arr, kernel = 3, stride = 2, pad = 1): Arr {
    return refMaxPool(x, kernel, stride, pad).y;
  },
  maxPool2dBackward(x: Arr, dy: Arr, kernel = 3, stride = 2, pad = 1): Arr {
    const { arg } = refMaxPool(x, kernel, stride, pad);
    const dx = new Float64Array(x.data.length);
    for (let o = 0; o < arg.length; o++) dx[arg[o]] += dy.data[o];
    return { data: dx, shape: [...x.shape] };
  },
  globalAvgPool(x: Arr): Arr {
    const [N, H, W, C] = x.shape;
    const y = new Float64Array(N * C);
    for (let n = 0; n < N; n++)
      for (let i = 0; i < H * W; i++)
        for (let c = 0; c < C; c++) y[n * C + c] += x.data[(n * H * W + i) * C + c] / (H * W);
    return { data: y, shape: [N, C] };
  },
  globalAvgPoolBackward(x: Arr, dy: Arr): Arr {
    const [N, H, W, C] = x.shape;
    const dx = new Float64Array(x.data.length);
    for (let n = 0; n < N; n++)
      for (let i = 0; i < H * W; i++)
        for (let c = 0; c < C; c++) dx[(n * H * W + i) * C + c] = dy.data[n * C + c] / (H * W);
    return { data: dx, shape: [...x.shape] };
  },
};

/** Forward with the flat input index of each output's (first) maximum. */
function refMaxPool(x: Arr, K: number, S: number, P: number): { y: Arr; arg: number[] } {
  const [N, H, W, C] = x.shape;
  const OH = convOutSize(H, K, S, P);
  const OW = convOutSize(W, K, S, P);
  const y = new Float64Array(N * OH * OW * C);
  const arg: number[] = [];
  for (let n = 0; n < N; n++)
    for (let oh = 0; oh < OH; oh++)
      for (let ow = 0; ow < OW; ow++)
        for (let c = 0; c < C; c++) {
          let best = -Infinity;
          let at = -1;
          for (let kh = 0; kh < K; kh++)
            for (let kw = 0; kw < K; kw++) {
              const ih = oh * S - P + kh;
              const iw = ow * S - P + kw;
              if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
              const i = ((n * H + ih) * W + iw) * C + c;
              if (x.data[i] > best) {
                best = x.data[i];
                at = i;
              }
            }
          const o = ((n * OH + oh) * OW + ow) * C + c;
          y[o] = best;
          arg[o] = at;
        }
  return { y: { data: y, shape: [N, OH, OW, C] }, arg };
}
