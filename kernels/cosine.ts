// The BYOL regression loss, fused: mean_i (2 - 2 n(p_i) · n(z_i)) with n(x) = x * rsqrt(max(|x|², 1e-12)) as in
// the reference code (byol/utils/helpers.py). One kernel reduces p·z, |p|², |z|² per row and writes them with
// the row's loss; a one-workgroup kernel takes the batch mean. Both reduce as the device's 'reduce' record says
// (kernels/reduce.ts): with the 'shared' tree, 32 lanes per row and a workgroup-memory tree per row group (rows
// of a workgroup share its barriers); with the 'subgroup' tree, one row per workgroup (subgroups need not map
// onto rows, so a row owns its workgroup's subgroups). z is the target branch: a constant, so the backward (one
// elementwise kernel) gives a gradient for p only. Also the collapse monitor normalizedStd (forward only, from
// existing ops).

import { kernel, type Kernel } from '../engine/kernel.ts';
import { Tensor, empty, tidy, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record, noGrad } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { sum, mean, reduceTuning, reduceKey, workgroupTree, type ReduceTuning, type ReduceOptions } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

const LANES = 32; // invocations per row with the 'shared' tree
const FLAT_WG = 256; // the elementwise backward
const CLAMP = 1e-12;

/** Rows per workgroup of the rows kernel. */
function rowsPerGroup(t: ReduceTuning): number {
  return t.tree === 'shared' ? t.workgroupSize / LANES : 1;
}

/** Per row: p·z, |p|², |z|² and the row's loss. */
function rowsKernel(vec: boolean, t: ReduceTuning): Kernel {
  const dot = (a: string, b: string) => (vec ? `dot(${a}, ${b})` : `${a} * ${b}`);
  const WG = t.workgroupSize;
  const shared = t.tree === 'shared';
  const lanes = shared ? LANES : WG;
  const accumulate = (row: string) => `
    let base = ${row} * p.Dv;
    for (var j = lane; j < p.Dv; j += ${lanes}u) {
      let a = P_[base + j];
      let b = Z[base + j];
      acc += vec3<f32>(${dot('a', 'b')}, ${dot('a', 'a')}, ${dot('b', 'b')});
    }`;
  const write = (v: string) => `
    let cosine = ${v}.x * inverseSqrt(max(${v}.y, ${CLAMP})) * inverseSqrt(max(${v}.z, ${CLAMP}));
    rows[row] = vec4<f32>(${v}, 2.0 - 2.0 * cosine);`;
  const decl = {
    name: 'cosineLoss.rows',
    uniforms: { B: 'u32', Dv: 'u32' } as const,
    bindings: { P_: `read ${vec ? 'vec4<f32>' : 'f32'}`, Z: `read ${vec ? 'vec4<f32>' : 'f32'}`, rows: 'rw vec4<f32>' } as const, // rows: p·z, |p|², |z|², loss
    workgroupSize: WG,
  };
  return kernel(`cosine|rows|${vec}|${reduceKey(t)}`, () => {
    if (shared) {
      return {
        ...decl,
        header: `var<workgroup> part: array<vec3<f32>, ${WG}>;`,
        body: `
  let lane = li % ${LANES}u;
  let row = (wid.x + wid.y * nwg.x) * ${WG / LANES}u + li / ${LANES}u;
  var acc = vec3<f32>(0.0);
  if (row < p.B) {${accumulate('row')}
  }
  part[li] = acc;
  workgroupBarrier();
  for (var s = ${LANES / 2}u; s > 0u; s >>= 1u) {
    if (lane < s) { part[li] += part[li + s]; }
    workgroupBarrier();
  }
  if (lane == 0u && row < p.B) {
    let v = part[li];${write('v')}
  }`,
      };
    }
    const tree = workgroupTree(t, { name: 'part', type: 'vec3<f32>', op: 'sum', who: 'first' });
    return {
      ...decl,
      perWorkgroup: { index: 'row', limit: 'p.B' },
      enable: tree.enable,
      header: tree.header,
      body: `
  let lane = li;
  var acc = vec3<f32>(0.0);
  {${accumulate('row')}
  }
${tree.code('acc')}
  if (li == 0u) {${write('part_total')}
  }`,
    };
  });
}

function meanKernel(t: ReduceTuning): Kernel {
  const WG = t.workgroupSize;
  const tree = workgroupTree(t, { name: 'part', type: 'f32', op: 'sum', who: 'first' });
  return kernel(`cosine|mean|${reduceKey(t)}`, () => ({
    name: 'cosineLoss.mean',
    uniforms: { B: 'u32', invB: 'f32' },
    bindings: { rows: 'read vec4<f32>', out: 'rw f32' },
    workgroupSize: WG,
    enable: tree.enable,
    header: tree.header,
    body: `
  var acc = 0.0;
  for (var i = li; i < p.B; i += ${WG}u) { acc += rows[i].w; }
${tree.code('acc')}
  if (li == 0u) { out[0] = part_total * p.invB; }`,
  }));
}

// dp = -2g/B · rp·rz · (z - (p·z)·rp²·p), rp = rsqrt(max(|p|², 1e-12)); where the clamp holds, n(p) = p / 1e-6
// is linear in p and the second term vanishes
function backwardKernel(vec: boolean): Kernel {
  const T = vec ? 'vec4<f32>' : 'f32';
  return kernel(`cosine|backward|${vec}`, () => ({
    name: 'cosineLoss.backward',
    uniforms: { n: 'u32', Dv: 'u32', invB: 'f32' },
    bindings: { P_: `read ${T}`, Z: `read ${T}`, rows: 'read vec4<f32>', dy: 'read f32', dp: `rw ${T}` },
    workgroupSize: FLAT_WG,
    flat: { limit: 'p.n' },
    body: `
  let v = rows[i / p.Dv];
  let rp = inverseSqrt(max(v.y, ${CLAMP}));
  let rz = inverseSqrt(max(v.z, ${CLAMP}));
  let k = -2.0 * dy[0] * p.invB * rp * rz;
  let q = select(0.0, v.x * rp * rp, v.y > ${CLAMP});
  dp[i] = k * (Z[i] - q * P_[i]);`,
  }));
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
export function cosineLoss(p: Tensor, z: Tensor, opts: ReduceOptions = {}): Tensor {
  const op = 'cosineLoss';
  const [B, D] = checkPair(op, p, z);
  const t = reduceTuning(opts.tuning, op);
  const vec = D % 4 === 0;
  const Dv = vec ? D / 4 : D;
  const rows = empty([B, 4], 'f32', op);
  rowsKernel(vec, t).launch({ B, Dv, P_: p, Z: z, rows }, { workgroups: Math.ceil(B / rowsPerGroup(t)) });
  const loss = empty([], 'f32', op);
  meanKernel(t).launch({ B, invB: 1 / B, rows, out: loss }, [1]);
  if (needsGrad(p)) {
    record(op, [p], loss, (dy, [sp, sz, srows]) => {
      const dp = empty([B, D], 'f32', `${op}.backward`);
      const n = B * Dv;
      backwardKernel(vec).launch({ n, Dv, invB: 1 / B, P_: sp, Z: sz, rows: srows, dy, dp }, { threads: n });
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
export function normalizedStd(z: Tensor, opts: ReduceOptions = {}): Tensor {
  const op = 'normalizedStd';
  z.assertLive(op);
  if (z.dtype !== 'f32') throw new Error(`${op}: expected an f32 tensor, got ${z.dtype} ${fmtShape(z.shape)}`);
  if (z.rank !== 2 || z.shape[0] < 2 || z.shape[1] < 1) throw new Error(`${op}: expected z of shape [B, D] with B >= 2, got ${fmtShape(z.shape)}`);
  const [B, D] = z.shape;
  return noGrad(() => tidy(() => {
    const sq = sum(ew(`${op}.square`, 'a * a', [z], z.shape), 1, true, opts);
    const n = ew(`${op}.normalize`, `a * inverseSqrt(max(b, ${CLAMP}))`, [z, sq], z.shape);
    const dev = ew(`${op}.deviation`, '(a - b) * (a - b)', [n, mean(n, 0, true, opts)], z.shape);
    const std = ew(`${op}.std`, 'sqrt(a * s0)', [sum(dev, 0, false, opts)], [D], [1 / (B - 1)]);
    return mean(std, undefined, false, opts);
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
