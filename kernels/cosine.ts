// The BYOL regression loss, fused: mean_i (2 - 2 n(p_i) · n(z_i)) with n(x) = x * rsqrt(max(|x|², 1e-12)) as in
// the reference code (byol/utils/helpers.py). One kernel reduces p·z, |p|², |z|² per row (8 rows per workgroup,
// 32 lanes each) and writes them with the row's loss; a one-workgroup kernel takes the batch mean. z is the
// target branch: a constant, so the backward (one elementwise kernel) gives a gradient for p only. Also the
// collapse monitor normalizedStd (forward only, from existing ops).

import { launch, grid1d, params, type KernelSpec } from '../engine/recorder.ts';
import { Tensor, empty, tidy, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record, noGrad } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { sum, mean } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

const ROWS = 8; // rows per workgroup in the row kernel
const LANES = 32; // invocations per row
const WG = 256;
const CLAMP = 1e-12;

const specs = new Map<string, KernelSpec>();

function rowsSpec(vec: boolean): KernelSpec {
  const key = `rows|${vec}`;
  let s = specs.get(key);
  if (s) return s;
  const T = vec ? 'vec4<f32>' : 'f32';
  const dot = (a: string, b: string) => (vec ? `dot(${a}, ${b})` : `${a} * ${b}`);
  const code = `
struct P { B: u32, Dv: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> P_: array<${T}>;
@group(0) @binding(2) var<storage, read> Z: array<${T}>;
@group(0) @binding(3) var<storage, read_write> rows: array<vec4<f32>>; // p·z, |p|², |z|², loss
var<workgroup> part: array<vec3<f32>, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let lane = t % ${LANES}u;
  let row = (wid.x + wid.y * nwg.x) * ${ROWS}u + t / ${LANES}u;
  var acc = vec3<f32>(0.0);
  if (row < p.B) {
    let base = row * p.Dv;
    for (var j = lane; j < p.Dv; j += ${LANES}u) {
      let a = P_[base + j];
      let b = Z[base + j];
      acc += vec3<f32>(${dot('a', 'b')}, ${dot('a', 'a')}, ${dot('b', 'b')});
    }
  }
  part[t] = acc;
  workgroupBarrier();
  for (var s = ${LANES / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { part[t] += part[t + s]; }
    workgroupBarrier();
  }
  if (lane == 0u && row < p.B) {
    let v = part[t];
    let cosine = v.x * inverseSqrt(max(v.y, ${CLAMP})) * inverseSqrt(max(v.z, ${CLAMP}));
    rows[row] = vec4<f32>(v, 2.0 - 2.0 * cosine);
  }
}`;
  s = { name: 'cosineLoss.rows', code, bindings: ['uniform', 'read', 'read', 'rw'] };
  specs.set(key, s);
  return s;
}

function meanSpec(): KernelSpec {
  let s = specs.get('mean');
  if (s) return s;
  const code = `
struct P { B: u32, invB: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
var<workgroup> part: array<f32, ${WG}>;
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) t: u32) {
  var acc = 0.0;
  for (var i = t; i < p.B; i += ${WG}u) { acc += rows[i].w; }
  part[t] = acc;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) {
    if (t < s) { part[t] += part[t + s]; }
    workgroupBarrier();
  }
  if (t == 0u) { out[0] = part[0] * p.invB; }
}`;
  s = { name: 'cosineLoss.mean', code, bindings: ['uniform', 'read', 'rw'] };
  specs.set('mean', s);
  return s;
}

function backwardSpec(vec: boolean): KernelSpec {
  const key = `backward|${vec}`;
  let s = specs.get(key);
  if (s) return s;
  const T = vec ? 'vec4<f32>' : 'f32';
  // dp = -2g/B · rp·rz · (z - (p·z)·rp²·p), rp = rsqrt(max(|p|², 1e-12)); where the clamp holds, n(p) = p / 1e-6
  // is linear in p and the second term vanishes
  const code = `
struct P { n: u32, Dv: u32, invB: f32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> P_: array<${T}>;
@group(0) @binding(2) var<storage, read> Z: array<${T}>;
@group(0) @binding(3) var<storage, read> rows: array<vec4<f32>>;
@group(0) @binding(4) var<storage, read> dy: array<f32>;
@group(0) @binding(5) var<storage, read_write> dp: array<${T}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${WG}u);
  if (i >= p.n) { return; }
  let v = rows[i / p.Dv];
  let rp = inverseSqrt(max(v.y, ${CLAMP}));
  let rz = inverseSqrt(max(v.z, ${CLAMP}));
  let k = -2.0 * dy[0] * p.invB * rp * rz;
  let q = select(0.0, v.x * rp * rp, v.y > ${CLAMP});
  dp[i] = k * (Z[i] - q * P_[i]);
}`;
  s = { name: 'cosineLoss.backward', code, bindings: ['uniform', 'read', 'read', 'read', 'read', 'rw'] };
  specs.set(key, s);
  return s;
}

function checkPair(op: string, p: Tensor, z: Tensor): [number, number] {
  p.assertLive(op);
  z.assertLive(op);
  if (p.dtype !== 'f32' || z.dtype !== 'f32') throw new Error(`${op}: expected f32 tensors, got ${p.dtype} ${fmtShape(p.shape)} and ${z.dtype} ${fmtShape(z.shape)}`);
  if (p.rank !== 2 || z.rank !== 2 || p.shape[0] !== z.shape[0] || p.shape[1] !== z.shape[1]) {
    throw new Error(`${op}: p and z must both be [B, D], got p ${fmtShape(p.shape)} and z ${fmtShape(z.shape)}`);
  }
  const [B, D] = p.shape;
  if (B === 0 || D === 0) throw new Error(`${op}: empty batch or feature axis, got p ${fmtShape(p.shape)}`);
  return [B, D];
}

/**
 * BYOL's regression loss, a scalar: mean over rows of 2 - 2 cos(p_i, z_i) (each in [0, 4]), with BYOL's
 * clamped l2 normalization. z is treated as a constant (stop-gradient): only p gets a gradient.
 */
export function cosineLoss(p: Tensor, z: Tensor): Tensor {
  const op = 'cosineLoss';
  const [B, D] = checkPair(op, p, z);
  const vec = D % 4 === 0;
  const Dv = vec ? D / 4 : D;
  const rows = empty([B, 4], 'f32', op);
  launch(rowsSpec(vec), [params({ u: B }, { u: Dv }), p.binding(op), z.binding(op), rows.binding(op)], grid1d(B, ROWS));
  const loss = empty([], 'f32', op);
  launch(meanSpec(), [params({ u: B }, 1 / B), rows.binding(op), loss.binding(op)], [1]);
  if (needsGrad(p)) {
    record(op, [p], loss, (dy, [sp, sz, srows]) => {
      const dp = empty([B, D], 'f32', `${op}.backward`);
      const n = B * Dv;
      launch(backwardSpec(vec), [params({ u: n }, { u: Dv }, 1 / B), sp.binding(op), sz.binding(op), srows.binding(op), dy.binding(op), dp.binding(op)], grid1d(n, WG));
      return [dp];
    }, [p, z, rows]);
  }
  rows.dispose();
  return loss;
}

/**
 * The collapse monitor of SimSiam §4.1 (logged as `z_std` by solo-learn): the per-channel standard deviation over
 * the batch of z / |z| (unbiased, as torch.std), averaged over channels. About 1/sqrt(D) for well-spread
 * outputs, 0 for collapsed ones. A scalar; never recorded on the tape.
 */
export function normalizedStd(z: Tensor): Tensor {
  const op = 'normalizedStd';
  z.assertLive(op);
  if (z.dtype !== 'f32') throw new Error(`${op}: expected an f32 tensor, got ${z.dtype} ${fmtShape(z.shape)}`);
  if (z.rank !== 2 || z.shape[0] < 2 || z.shape[1] < 1) throw new Error(`${op}: expected z of shape [B, D] with B >= 2, got ${fmtShape(z.shape)}`);
  const [B, D] = z.shape;
  return noGrad(() => tidy(() => {
    const sq = sum(ew(`${op}.square`, 'a * a', [z], z.shape), 1, true);
    const n = ew(`${op}.normalize`, `a * inverseSqrt(max(b, ${CLAMP}))`, [z, sq], z.shape);
    const dev = ew(`${op}.deviation`, '(a - b) * (a - b)', [n, mean(n, 0, true)], z.shape);
    const std = ew(`${op}.std`, 'sqrt(a * s0)', [sum(dev, 0)], [D], [1 / (B - 1)]);
    return mean(std);
  }));
}

// ---- float64 reference -----------------------------------------------------------------------------------

function refRows(p: Arr, z: Arr): { B: number; D: number; dot: Float64Array; rp: Float64Array; rz: Float64Array; pp: Float64Array } {
  const [B, D] = p.shape;
  const dot = new Float64Array(B);
  const pp = new Float64Array(B);
  const zz = new Float64Array(B);
  for (let i = 0; i < B; i++) for (let j = 0; j < D; j++) {
    const a = p.data[i * D + j];
    const b = z.data[i * D + j];
    dot[i] += a * b;
    pp[i] += a * a;
    zz[i] += b * b;
  }
  const rsq = (v: number) => 1 / Math.sqrt(Math.max(v, CLAMP));
  return { B, D, dot, pp, rp: pp.map(rsq), rz: zz.map(rsq) };
}

export const ref = {
  cosineLoss(p: Arr, z: Arr): Arr {
    const { B, dot, rp, rz } = refRows(p, z);
    let s = 0;
    for (let i = 0; i < B; i++) s += 2 - 2 * dot[i] * rp[i] * rz[i];
    return { data: Float64Array.of(s / B), shape: [] };
  },
  /** [dp, dz]; dz is zero: z is a constant (stop-gradient). */
  cosineLossBackward(p: Arr, z: Arr, dy: Arr): [Arr, Arr] {
    const { B, D, dot, pp, rp, rz } = refRows(p, z);
    const dp = new Float64Array(B * D);
    for (let i = 0; i < B; i++) {
      const k = (-2 * dy.data[0] / B) * rp[i] * rz[i];
      const q = pp[i] > CLAMP ? dot[i] * rp[i] * rp[i] : 0;
      for (let j = 0; j < D; j++) dp[i * D + j] = k * (z.data[i * D + j] - q * p.data[i * D + j]);
    }
    return [{ data: dp, shape: [B, D] }, { data: new Float64Array(B * D), shape: [B, D] }];
  },
  normalizedStd(z: Arr): Arr {
    const [B, D] = z.shape;
    const n = new Float64Array(B * D);
    for (let i = 0; i < B; i++) {
      let s = 0;
      for (let j = 0; j < D; j++) s += z.data[i * D + j] ** 2;
      for (let j = 0; j < D; j++) n[i * D + j] = z.data[i * D + j] / Math.sqrt(Math.max(s, CLAMP));
    }
    let total = 0;
    for (let j = 0; j < D; j++) {
      let m = 0;
      for (let i = 0; i < B; i++) m += n[i * D + j] / B;
      let v = 0;
      for (let i = 0; i < B; i++) v += (n[i * D + j] - m) ** 2;
      total += Math.sqrt(v / (B - 1));
    }
    return { data: Float64Array.of(total / D), shape: [] };
  },
};
