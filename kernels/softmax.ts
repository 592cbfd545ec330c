// Softmax cross-entropy over the last axis, mean over rows (for the linear probe and the online classifier),
// with backward (softmax - onehot) / N, plus forward-only softmax and argmax. One workgroup per row computes the
// max, the log-sum-exp and the row's loss; a second small dispatch takes the mean.

import { launch, u32s, grid1d, type KernelSpec } from '../engine/recorder.ts';
import { Tensor, empty, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { mean } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

const WG = 64;

const rowHead = `
struct P { N: u32, K: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
var<workgroup> red: array<f32, ${WG}>;
fn reduceMax(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) { if (t < s) { red[t] = max(red[t], red[t + s]); } workgroupBarrier(); }
  let r = red[0];
  workgroupBarrier();
  return r;
}
fn reduceSum(t: u32, v: f32) -> f32 {
  red[t] = v;
  workgroupBarrier();
  for (var s = ${WG / 2}u; s > 0u; s >>= 1u) { if (t < s) { red[t] = red[t] + red[t + s]; } workgroupBarrier(); }
  let r = red[0];
  workgroupBarrier();
  return r;
}`;

function rowKernel(name: string, bindings: KernelSpec['bindings'], decls: string, body: string): KernelSpec {
  return {
    name,
    bindings,
    code: `${rowHead}
${decls}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) t: u32) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.N) { return; }
  let base = row * p.K;
  var m = -3.402823e38;
  for (var k = t; k < p.K; k += ${WG}u) { m = max(m, x[base + k]); }
  m = reduceMax(t, m);
  var s = 0.0;
  for (var k = t; k < p.K; k += ${WG}u) { s += exp(x[base + k] - m); }
  s = reduceSum(t, s);
${body}
}`,
  };
}

// per-row loss: log-sum-exp - x[label]; also writes softmax probabilities for the backward
const ceSpec = rowKernel('softmaxCrossEntropy', ['uniform', 'read', 'read', 'rw', 'rw'], `
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read_write> loss: array<f32>;
@group(0) @binding(4) var<storage, read_write> prob: array<f32>;`, `
  for (var k = t; k < p.K; k += ${WG}u) { prob[base + k] = exp(x[base + k] - m) / s; }
  if (t == 0u) {
    let y = labels[row];
    // an out-of-range label gives NaN, never a silently wrong loss (p.p0 = 0 keeps the NaN a runtime value)
    loss[row] = select(bitcast<f32>(0x7fc00000u + p.p0), log(s) + m - x[base + u32(y)], y >= 0 && u32(y) < p.K);
  }`);

const softmaxSpec = rowKernel('softmax', ['uniform', 'read', 'rw'], `
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;`, `
  for (var k = t; k < p.K; k += ${WG}u) { y[base + k] = exp(x[base + k] - m) / s; }`);

const ceBackwardSpec: KernelSpec = {
  name: 'softmaxCrossEntropy.backward',
  bindings: ['uniform', 'read', 'read', 'read', 'rw'],
  code: `
struct P { N: u32, K: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> prob: array<f32>;
@group(0) @binding(2) var<storage, read> labels: array<i32>;
@group(0) @binding(3) var<storage, read> dloss: array<f32>;
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * 256u);
  if (i >= p.N * p.K) { return; }
  let row = i / p.K;
  let onehot = select(0.0, 1.0, labels[row] == i32(i % p.K));
  dx[i] = (prob[i] - onehot) * dloss[row];
}`,
};

const argmaxSpec: KernelSpec = {
  name: 'argmax',
  bindings: ['uniform', 'read', 'rw'],
  code: `
struct P { N: u32, K: u32, p0: u32, p1: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<i32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let row = gid.x + gid.y * (nwg.x * 256u);
  if (row >= p.N) { return; }
  var best = x[row * p.K];
  var bi = 0u;
  for (var k = 1u; k < p.K; k++) { let v = x[row * p.K + k]; if (v > best) { best = v; bi = k; } }
  y[row] = i32(bi);
}`,
};

function rows(n: number): [number, number] {
  return n <= 65535 ? [n, 1] : [Math.ceil(n / Math.ceil(n / 65535)), Math.ceil(n / 65535)];
}

function check2d(op: string, x: Tensor): [number, number] {
  x.assertLive(op);
  if (x.rank !== 2 || x.dtype !== 'f32') throw new Error(`${op}: expected f32 logits [N, K], got ${x.dtype} ${fmtShape(x.shape)}`);
  if (x.shape[1] < 1) throw new Error(`${op}: logits ${fmtShape(x.shape)} need at least one class`);
  return [x.shape[0], x.shape[1]];
}

/**
 * Mean over rows of -log softmax(logits)[label]. Labels: i32 [N] in [0, K); an out-of-range label (which lives
 * on the GPU, so it is not checked on the CPU) makes the loss NaN rather than silently wrong.
 */
export function softmaxCrossEntropy(logits: Tensor, labels: Tensor): Tensor {
  const op = 'softmaxCrossEntropy';
  const [N, K] = check2d(op, logits);
  labels.assertLive(op);
  if (labels.dtype !== 'i32' || labels.rank !== 1 || labels.shape[0] !== N) {
    throw new Error(`${op}: labels must be i32 [${N}] for logits ${fmtShape(logits.shape)}, got ${labels.dtype} ${fmtShape(labels.shape)}`);
  }
  const rowLoss = empty([N], 'f32', op);
  const prob = empty([N, K], 'f32', op);
  launch(ceSpec, [u32s(N, K), logits.binding(op), labels.binding(op), rowLoss.binding(op), prob.binding(op)], rows(N));
  const loss = mean(rowLoss); // not recorded: rowLoss does not require grad
  rowLoss.dispose();
  if (needsGrad(logits)) {
    record(op, [logits], loss, (dy, [pr, lab]) => {
      const dx = empty([N, K], 'f32', `${op}.backward`);
      const scale = empty([N], 'f32', `${op}.backward`);
      // d mean / d rowLoss = dy / N, broadcast to every row
      launch(scaleSpec, [u32s(N), dy.binding(op), scale.binding(op)], [Math.ceil(N / 256)]);
      launch(ceBackwardSpec, [u32s(N, K), pr.binding(op), lab.binding(op), scale.binding(op), dx.binding(op)], grid1d(N * K, 256));
      return [dx];
    }, [prob, labels]);
  }
  prob.dispose();
  return loss;
}

const scaleSpec: KernelSpec = {
  name: 'softmaxCrossEntropy.scale',
  bindings: ['uniform', 'read', 'rw'],
  code: `
struct P { N: u32, p0: u32, p1: u32, p2: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> dy: array<f32>;
@group(0) @binding(2) var<storage, read_write> out: array<f32>;
@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {
  if (gid.x >= p.N) { return; }
  out[gid.x] = dy[0] / f32(p.N);
}`,
};

/** Softmax over the last axis (forward only). */
export function softmax(logits: Tensor): Tensor {
  const [N, K] = check2d('softmax', logits);
  const y = empty([N, K], 'f32', 'softmax');
  launch(softmaxSpec, [u32s(N, K), logits.binding('softmax'), y.binding('softmax')], rows(N));
  return y;
}

/** Index of the largest value of each row (first on ties), as i32 [N]. */
export function argmax(x: Tensor): Tensor {
  const [N, K] = check2d('argmax', x);
  const y = empty([N], 'i32', 'argmax');
  launch(argmaxSpec, [u32s(N, K), x.binding('argmax'), y.binding('argmax')], [Math.ceil(N / 256)]);
  return y;
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  softmaxCrossEntropy(x: Arr, labels: ArrayLike<number>): Arr {
    const [N, K] = x.shape;
    let total = 0;
    for (let n = 0; n < N; n++) {
      let m = -Infinity;
      for (let k = 0; k < K; k++) m = Math.max(m, x.data[n * K + k]);
      let s = 0;
      for (let k = 0; k < K; k++) s += Math.exp(x.data[n * K + k] - m);
      total += Math.log(s) + m - x.data[n * K + labels[n]];
    }
    return { data: Float64Array.of(total / N), shape: [] };
  },
  softmaxCrossEntropyBackward(x: Arr, labels: ArrayLike<number>, dy: Arr): Arr {
    const [N, K] = x.shape;
    const dx = new Float64Array(N * K);
    for (let n = 0; n < N; n++) {
      let m = -Infinity;
      for (let k = 0; k < K; k++) m = Math.max(m, x.data[n * K + k]);
      let s = 0;
      for (let k = 0; k < K; k++) s += Math.exp(x.data[n * K + k] - m);
      for (let k = 0; k < K; k++) dx[n * K + k] = ((Math.exp(x.data[n * K + k] - m) / s - (labels[n] === k ? 1 : 0)) * dy.data[0]) / N;
    }
    return { data: dx, shape: [N, K] };
  },
};
