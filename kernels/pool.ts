// Pooling on NHWC: max-pool (k x k window, stride, zero-free padding: padded cells never win) and global average
// pool, with backward and float64 reference. Max-pool's backward sends each output's gradient to the first
// maximum of its window in row-major window order (PyTorch's choice); the forward saves that argmax as i32 so the
// backward is a gather: each input cell sums the gradients of the windows that chose it, without atomics.

import { launch, grid1d, u32s, type KernelSpec } from '../engine/recorder.ts';
import { Tensor, empty, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { mean } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

const WG = 256;

export interface MaxPoolOptions {
  kernel?: number;
  stride?: number;
  padding?: number;
}

const HEAD = `
struct P { N: u32, H: u32, W: u32, C: u32, OH: u32, OW: u32, k: u32, s: u32, pad: u32, total: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<uniform> p: P;`;

const forwardSpec: KernelSpec = {
  name: 'maxPool2d',
  bindings: ['uniform', 'read', 'rw', 'rw'],
  code: `${HEAD}
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> arg: array<i32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${WG}u);
  if (i >= p.total) { return; }
  let c = i % p.C;
  let ow = (i / p.C) % p.OW;
  let oh = (i / (p.C * p.OW)) % p.OH;
  let n = i / (p.C * p.OW * p.OH);
  var best = -3.402823e38;
  var bi = -1;
  for (var ky = 0u; ky < p.k; ky++) {
    let iy = i32(oh * p.s + ky) - i32(p.pad);
    if (iy < 0 || iy >= i32(p.H)) { continue; }
    for (var kx = 0u; kx < p.k; kx++) {
      let ix = i32(ow * p.s + kx) - i32(p.pad);
      if (ix < 0 || ix >= i32(p.W)) { continue; }
      let idx = ((n * p.H + u32(iy)) * p.W + u32(ix)) * p.C + c;
      let v = x[idx];
      if (v > best || bi < 0) { best = v; bi = i32(idx); }
    }
  }
  y[i] = best;
  arg[i] = bi;
}`,
};

// dx[n, iy, ix, c] = sum of dy over the windows containing (iy, ix) whose argmax is this cell
const backwardSpec: KernelSpec = {
  name: 'maxPool2d.backward',
  bindings: ['uniform', 'read', 'read', 'rw'],
  code: `${HEAD}
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read> arg: array<i32>;
@group(0) @binding(3) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${WG}u);
  if (i >= p.total) { return; }
  let c = i % p.C;
  let ix = (i / p.C) % p.W;
  let iy = (i / (p.C * p.W)) % p.H;
  let n = i / (p.C * p.W * p.H);
  // output rows oh whose window [oh*s - pad, oh*s - pad + k) contains iy
  let lo_y = max(i32(iy) + i32(p.pad) - i32(p.k) + 1, 0);
  let hi_y = min(i32(iy) + i32(p.pad), i32(p.OH - 1) * i32(p.s));
  let lo_x = max(i32(ix) + i32(p.pad) - i32(p.k) + 1, 0);
  let hi_x = min(i32(ix) + i32(p.pad), i32(p.OW - 1) * i32(p.s));
  var acc = 0.0;
  for (var oy = (lo_y + i32(p.s) - 1) / i32(p.s); oy * i32(p.s) <= hi_y; oy++) {
    for (var ox = (lo_x + i32(p.s) - 1) / i32(p.s); ox * i32(p.s) <= hi_x; ox++) {
      let o = ((n * p.OH + u32(oy)) * p.OW + u32(ox)) * p.C + c;
      if (arg[o] == i32(i)) { acc += dy[o]; }
    }
  }
  dx[i] = acc;
}`,
};

function geometry(x: Tensor, k: number, s: number, pad: number) {
  x.assertLive('maxPool2d');
  if (x.rank !== 4 || x.dtype !== 'f32') throw new Error(`maxPool2d: expected an f32 NHWC tensor [N, H, W, C], got ${x.dtype} ${fmtShape(x.shape)}`);
  for (const [name, v, min] of [['kernel', k, 1], ['stride', s, 1], ['padding', pad, 0]] as const) {
    if (!Number.isInteger(v) || v < min) throw new Error(`maxPool2d: ${name} must be an integer >= ${min}, got ${v}`);
  }
  if (2 * pad > k) throw new Error(`maxPool2d: padding ${pad} must be at most half the kernel ${k}`);
  const [N, H, W, C] = x.shape;
  // with padding, an empty image would still get windows, made only of padding: no value to take the max of
  if (H === 0 || W === 0) throw new Error(`maxPool2d: input ${fmtShape(x.shape)} has an empty spatial dimension`);
  const OH = Math.floor((H + 2 * pad - k) / s) + 1;
  const OW = Math.floor((W + 2 * pad - k) / s) + 1;
  if (OH < 1 || OW < 1) throw new Error(`maxPool2d: input ${fmtShape(x.shape)} is smaller than the ${k}x${k} window (padding ${pad})`);
  return { N, H, W, C, OH, OW };
}

export function maxPool2d(x: Tensor, opts: MaxPoolOptions = {}): Tensor {
  const k = opts.kernel ?? 3, s = opts.stride ?? 2, pad = opts.padding ?? 1;
  const { N, H, W, C, OH, OW } = geometry(x, k, s, pad);
  const y = empty([N, OH, OW, C], 'f32', 'maxPool2d');
  const arg = empty([N, OH, OW, C], 'i32', 'maxPool2d');
  const u = (total: number) => u32s(N, H, W, C, OH, OW, k, s, pad, total);
  launch(forwardSpec, [u(y.size), x.binding('maxPool2d'), y.binding('maxPool2d'), arg.binding('maxPool2d')], grid1d(y.size, WG));
  if (needsGrad(x)) {
    record('maxPool2d', [x], y, (dy, [a]) => {
      const dx = empty(x.shape, 'f32', 'maxPool2d.backward');
      launch(backwardSpec, [u(dx.size), dy.binding('maxPool2d.backward'), a.binding('maxPool2d.backward'), dx.binding('maxPool2d.backward')], grid1d(dx.size, WG));
      return [dx];
    }, [arg]);
  }
  arg.dispose(); // the tape holds its own share
  return y;
}

/** [N, H, W, C] -> [N, C], the mean over H and W. */
export function globalAvgPool(x: Tensor): Tensor {
  x.assertLive('globalAvgPool');
  if (x.rank !== 4) throw new Error(`globalAvgPool: expected an NHWC tensor [N, H, W, C], got ${fmtShape(x.shape)}`);
  return mean(x, [1, 2]);
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  maxPool2d(x: Arr, k = 3, s = 2, pad = 1): { y: Arr; arg: Int32Array } {
    const [N, H, W, C] = x.shape;
    const OH = Math.floor((H + 2 * pad - k) / s) + 1, OW = Math.floor((W + 2 * pad - k) / s) + 1;
    const y = new Float64Array(N * OH * OW * C);
    const arg = new Int32Array(y.length);
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++)
          for (let c = 0; c < C; c++) {
            let best = -Infinity, bi = -1;
            for (let ky = 0; ky < k; ky++)
              for (let kx = 0; kx < k; kx++) {
                const iy = oh * s + ky - pad, ix = ow * s + kx - pad;
                if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                const idx = ((n * H + iy) * W + ix) * C + c;
                if (x.data[idx] > best || bi < 0) (best = x.data[idx]), (bi = idx);
              }
            const o = ((n * OH + oh) * OW + ow) * C + c;
            y[o] = best;
            arg[o] = bi;
          }
    return { y: { data: y, shape: [N, OH, OW, C] }, arg };
  },
  maxPool2dBackward(x: Arr, dy: Arr, k = 3, s = 2, pad = 1): Arr {
    const { arg } = ref.maxPool2d(x, k, s, pad);
    const dx = new Float64Array(x.data.length);
    for (let o = 0; o < arg.length; o++) dx[arg[o]] += dy.data[o];
    return { data: dx, shape: [...x.shape] };
  },
  globalAvgPool(x: Arr): Arr {
    const [N, H, W, C] = x.shape;
    const y = new Float64Array(N * C);
    for (let i = 0; i < x.data.length; i++) {
      const c = i % C, n = Math.floor(i / (H * W * C));
      y[n * C + c] += x.data[i] / (H * W);
    }
    return { data: y, shape: [N, C] };
  },
  globalAvgPoolBackward(x: Arr, dy: Arr): Arr {
    const [, H, W, C] = x.shape;
    const dx = new Float64Array(x.data.length);
    for (let i = 0; i < dx.length; i++) dx[i] = dy.data[Math.floor(i / (H * W * C)) * C + (i % C)] / (H * W);
    return { data: dx, shape: [...x.shape] };
  },
};


