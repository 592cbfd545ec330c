// Softmax over the last axis, softmax cross-entropy with integer labels (mean over the batch), and argmax, with
// their float64 reference. Rows are usually short (classes), so each row is one thread making one pass with an
// online max and sum (log-sum-exp never overflows) and, where outputs are per element, one more pass to write
// them. Rows of at least `longRow` classes (the device's 'reduce' record, kernels/reduce.ts; 0 on CPU adapters)
// get a workgroup each instead: the max by one workgroup tree, the sum of exp(x - max) by another.
// Labels live on the GPU, so a label outside [0, K) cannot be checked without a readback: its row's loss is NaN,
// which makes the mean NaN, instead of reading another row's logits.

import { defineKernel, kernel, type Kernel, type BindingDecl } from '../engine/kernel.ts';
import { Tensor, empty, fmtShape, shapeSize } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { mean, sum, normAxes, reduceTuning, reduceKey, workgroupTree, type ReduceTuning, type ReduceOptions } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

const WG = 64;
const ROW_UNIFORMS = { rows: 'u32', k: 'u32', inner: 'u32', p0: 'u32' } as const;
/** WGSL: the running max m and sum s of exp(v - m) over k < p.k, where `value` is the k-th logit. */
const onlineMaxSum = (value: string) => `
  var m = -3.402823e38;
  var s = 0.0;
  for (var k = 0u; k < p.k; k++) {
    let v = ${value};
    let up = v > m;
    s = select(s + exp(v - m), s * exp(m - v) + 1.0, up);
    m = select(m, v, up);
  }`;
// over row r of contiguous rows
const ONLINE = `
  let r = i;
  let base = r * p.k;${onlineMaxSum('x[base + k]')}`;

const kernels = {
  // one thread per row
  softmax: defineKernel({
    name: 'softmax',
    uniforms: ROW_UNIFORMS,
    bindings: { x: 'read f32', y: 'rw f32' },
    workgroupSize: WG,
    flat: { limit: 'p.rows' },
    body: `${ONLINE}
  let inv = 1.0 / s;
  for (var k = 0u; k < p.k; k++) { y[base + k] = exp(x[base + k] - m) * inv; }`,
  }),
  // per row: loss = logsumexp(x) - x[label] (NaN for a label out of range), and the logsumexp for backward
  xent: defineKernel({
    name: 'softmaxCrossEntropy',
    uniforms: ROW_UNIFORMS,
    bindings: { x: 'read f32', labels: 'read i32', loss: 'rw f32', lse: 'rw f32' },
    workgroupSize: WG,
    flat: { limit: 'p.rows' },
    body: `${ONLINE}
  let l = labels[r];
  let ok = l >= 0 && u32(l) < p.k;
  let z = m + log(s);
  lse[r] = z;
  // a runtime NaN (a constant NaN is a shader-creation error); p.p0 is 0
  loss[r] = select(bitcast<f32>(0x7fc00000u + p.p0), z - x[base + u32(select(0, l, ok))], ok);`,
  }),
  // one thread per logit: (softmax - onehot) * dy / N
  xentBackward: defineKernel({
    name: 'softmaxCrossEntropy.backward',
    uniforms: ROW_UNIFORMS,
    bindings: { x: 'read f32', labels: 'read i32', lse: 'read f32', dy: 'read f32', dx: 'rw f32' },
    workgroupSize: WG,
    flat: { limit: 'p.rows * p.k' },
    body: `
  let r = i / p.k;
  let k = i % p.k;
  let hot = select(0.0, 1.0, labels[r] == i32(k));
  dx[i] = (exp(x[i] - lse[r]) - hot) * dy[0] / f32(p.rows);`,
  }),
  // per row of [outer, k, inner] (classes strided by inner), with bias[k] added to each logit where hasBias:
  // loss = logsumexp - logit[label], grad = softmax - onehot; label -1 (padding): 0 and 0; another bad label: NaN
  xentRows: defineKernel({
    name: 'crossEntropyRows',
    uniforms: { ...ROW_UNIFORMS, hasBias: 'u32' },
    bindings: { x: 'read f32', labels: 'read i32', bias: 'read f32', loss: 'rw f32', grad: 'rw f32' },
    workgroupSize: WG,
    flat: { limit: 'p.rows * p.inner' },
    body: `
  let base = (i / p.inner) * p.k * p.inner + i % p.inner;
  let useBias = p.hasBias != 0u;${onlineMaxSum('x[base + k * p.inner] + select(0.0, bias[k], useBias)')}
  let l = labels[i];
  let pad = l == -1;
  let ok = l >= 0 && u32(l) < p.k;
  let lk = u32(select(0, l, ok));
  let z = m + log(s);
  let nan = bitcast<f32>(0x7fc00000u + p.p0);
  loss[i] = select(select(nan, z - x[base + lk * p.inner] - select(0.0, bias[lk], useBias), ok), 0.0, pad);
  for (var k = 0u; k < p.k; k++) {
    let e = base + k * p.inner;
    let g = exp(x[e] + select(0.0, bias[k], useBias) - z) - select(0.0, 1.0, k == lk);
    grad[e] = select(select(nan, g, ok), 0.0, pad);
  }`,
  }),
  // [outer, r, inner] viewed input; first maximum wins ties
  argmax: defineKernel({
    name: 'argmax',
    uniforms: ROW_UNIFORMS,
    bindings: { x: 'read f32', y: 'rw i32' },
    workgroupSize: WG,
    flat: { limit: 'p.rows * p.inner' },
    body: `
  let j = i % p.inner;
  let base = (i / p.inner) * p.k * p.inner + j;
  var best = x[base];
  var at = 0u;
  for (var k = 1u; k < p.k; k++) {
    let v = x[base + k * p.inner];
    let up = v > best;
    best = select(best, v, up);
    at = select(at, k, up);
  }
  y[i] = i32(at);`,
  }),
};

/** One workgroup per row: max and sum of exp(x - max) by two workgroup trees, every invocation gets both. */
function longRowKernel(kind: 'softmax' | 'xent', t: ReduceTuning): Kernel {
  const WG = t.workgroupSize;
  const tm = workgroupTree(t, { name: 'rmax', type: 'f32', op: 'max', who: 'all' });
  const ts = workgroupTree(t, { name: 'rsum', type: 'f32', op: 'sum', who: 'all' });
  const bindings: Record<string, BindingDecl> = kind === 'softmax' ? { x: 'read f32', y: 'rw f32' } : { x: 'read f32', labels: 'read i32', loss: 'rw f32', lse: 'rw f32' };
  return kernel(`softmax|long|${kind}|${reduceKey(t)}`, () => ({
    name: kind === 'softmax' ? 'softmax.long' : 'softmaxCrossEntropy.long',
    uniforms: ROW_UNIFORMS,
    bindings,
    workgroupSize: WG,
    perWorkgroup: { index: 'r', limit: 'p.rows' },
    enable: tm.enable,
    header: `${tm.header}\n${ts.header}`,
    body: `
  let base = r * p.k;
  var m = -3.402823e38;
  for (var k = li; k < p.k; k += ${WG}u) { m = max(m, x[base + k]); }
${tm.code('m')}
  var s = 0.0;
  for (var k = li; k < p.k; k += ${WG}u) { s += exp(x[base + k] - rmax_total); }
${ts.code('s')}
${kind === 'softmax' ? `  let inv = 1.0 / rsum_total;
  for (var k = li; k < p.k; k += ${WG}u) { y[base + k] = exp(x[base + k] - rmax_total) * inv; }` : `  if (li == 0u) {
    let l = labels[r];
    let ok = l >= 0 && u32(l) < p.k;
    let z = rmax_total + log(rsum_total);
    lse[r] = z;
    loss[r] = select(bitcast<f32>(0x7fc00000u + p.p0), z - x[base + u32(select(0, l, ok))], ok);
  }`}`,
  }));
}

/** Launches one row kernel: a workgroup per row for long rows, else one invocation per row. */
function launchRows(kind: 'softmax' | 'xent', t: ReduceTuning, rows: number, K: number, args: Record<string, Tensor>): void {
  const u = { rows, k: K, inner: 1, p0: 0, ...args };
  if (t.longRow > 0 && K >= t.longRow) longRowKernel(kind, t).launch(u, { workgroups: rows });
  else kernels[kind].launch(u, { threads: rows });
}

function checkLogits(op: string, x: Tensor): void {
  x.assertLive(op);
  if (x.dtype !== 'f32') throw new Error(`${op}: expected f32 logits, got ${x.dtype} ${fmtShape(x.shape)}`);
  if (x.rank < 1 || x.shape[x.rank - 1] === 0) throw new Error(`${op}: expected logits with a non-empty last axis, got ${fmtShape(x.shape)}`);
}

/** Softmax over the last axis. */
export function softmax(x: Tensor, opts: ReduceOptions = {}): Tensor {
  checkLogits('softmax', x);
  const t = reduceTuning(opts.tuning, 'softmax');
  const K = x.shape[x.rank - 1];
  const rows = x.size / K;
  const y = empty(x.shape, 'f32', 'softmax');
  if (rows > 0) launchRows('softmax', t, rows, K, { x, y });
  if (needsGrad(x)) {
    // dx = y * (dy - sum(dy * y) over the row)
    record('softmax', [x], y, (dy, [sy]) => {
      const dot = sum(ew('softmax.backward', 'a * b', [dy, sy], x.shape), -1, true, opts);
      return [ew('softmax.backward', 'b * (a - c)', [dy, sy, dot], x.shape)];
    }, [y]);
  }
  return y;
}

/**
 * Mean over the batch of -log softmax(logits)[label]: logits [N, K] f32, labels [N] i32 in [0, K). Returns a
 * scalar (shape []). Differentiable in the logits. A label outside [0, K) makes the loss NaN.
 */
export function softmaxCrossEntropy(logits: Tensor, labels: Tensor, opts: ReduceOptions = {}): Tensor {
  const op = 'softmaxCrossEntropy';
  checkLogits(op, logits);
  const t = reduceTuning(opts.tuning, op);
  labels.assertLive(op);
  if (logits.rank !== 2) throw new Error(`${op}: logits must be 2-D [N, K], got ${fmtShape(logits.shape)}`);
  if (labels.dtype !== 'i32') throw new Error(`${op}: labels must be an i32 tensor of class indices, got ${labels.dtype} ${fmtShape(labels.shape)}`);
  const [N, K] = logits.shape;
  if (labels.rank !== 1 || labels.shape[0] !== N) throw new Error(`${op}: labels must have shape [${N}] (one per row of logits ${fmtShape(logits.shape)}), got ${fmtShape(labels.shape)}`);
  if (N === 0) throw new Error(`${op}: logits ${fmtShape(logits.shape)} have no rows to average over`);
  const rowLoss = empty([N], 'f32', op);
  const lse = empty([N], 'f32', op);
  launchRows('xent', t, N, K, { x: logits, labels, loss: rowLoss, lse });
  const loss = mean(rowLoss, 0, false, opts);
  rowLoss.dispose();
  if (needsGrad(logits)) {
    record(op, [logits], loss, (dy, [sx, sl, slse]) => {
      const dx = empty(logits.shape, 'f32', `${op}.backward`);
      kernels.xentBackward.launch({ rows: N, k: K, inner: 1, p0: 0, x: sx, labels: sl, lse: slse, dy, dx }, { threads: N * K });
      return [dx];
    }, [logits, labels, lse]);
  }
  lse.dispose();
  return loss;
}

/**
 * Softmax cross-entropy per row and its gradient in one pass, for code that drives its own optimizer (the
 * logistic-regression probe, byol/eval/logreg.ts): `x` holds the logits with the classes along `axis` (any
 * position: a class-major [C, n] block needs no transpose), `labels` (i32) has x's shape without that axis, and
 * `bias` [K] is added to every row's logits first (optional). Returns `loss` (labels' shape): logsumexp − the
 * label's logit, and `grad` (x's shape): softmax − onehot, the loss's gradient in the logits. A row labelled −1 is
 * padding: loss 0, grad 0; any other label outside [0, K) makes its row NaN. Not on the tape.
 */
export function crossEntropyRows(x: Tensor, labels: Tensor, opts: { axis?: number; bias?: Tensor } = {}): { loss: Tensor; grad: Tensor } {
  const op = 'crossEntropyRows';
  checkLogits(op, x);
  labels.assertLive(op);
  const [a] = normAxes(op, x.shape, opts.axis ?? -1);
  const K = x.shape[a];
  if (K === 0) throw new Error(`${op}: the class axis ${a} of ${fmtShape(x.shape)} is empty`);
  const rowShape = x.shape.filter((_, i) => i !== a);
  if (labels.dtype !== 'i32' || labels.rank !== rowShape.length || labels.shape.some((d, i) => d !== rowShape[i])) {
    throw new Error(`${op}: labels must be i32 ${fmtShape(rowShape)} (logits ${fmtShape(x.shape)} without the class axis ${a}), got ${labels.dtype} ${fmtShape(labels.shape)}`);
  }
  const bias = opts.bias ?? null;
  if (bias) {
    bias.assertLive(op);
    if (bias.dtype !== 'f32' || bias.rank !== 1 || bias.shape[0] !== K) throw new Error(`${op}: bias must be f32 [${K}] (one per class), got ${bias.dtype} ${fmtShape(bias.shape)}`);
  }
  const loss = empty(rowShape, 'f32', op);
  const grad = empty(x.shape, 'f32', op);
  const outer = shapeSize(x.shape.slice(0, a));
  const inner = shapeSize(x.shape.slice(a + 1));
  if (loss.size > 0) {
    kernels.xentRows.launch({ rows: outer, k: K, inner, p0: 0, hasBias: bias ? 1 : 0, x, labels, bias: bias ?? x, loss, grad }, { threads: loss.size });
  }
  return { loss, grad };
}

/** Index of the (first) maximum along `axis` as an i32 tensor without that axis. Not differentiable. */
export function argmax(x: Tensor, axis = -1): Tensor {
  x.assertLive('argmax');
  if (x.dtype !== 'f32') throw new Error(`argmax: expected an f32 tensor, got ${x.dtype} ${fmtShape(x.shape)}`);
  const [a] = normAxes('argmax', x.shape, axis);
  const K = x.shape[a];
  if (K === 0) throw new Error(`argmax: axis ${axis} of ${fmtShape(x.shape)} is empty`);
  const outer = shapeSize(x.shape.slice(0, a));
  const inner = shapeSize(x.shape.slice(a + 1));
  const y = empty(x.shape.filter((_, i) => i !== a), 'i32', 'argmax');
  if (y.size > 0) kernels.argmax.launch({ rows: outer, k: K, inner, p0: 0, x, y }, { threads: y.size });
  return y;
}

// ---- float64 reference --------------------------------------------------------------------------------

function refSoftmaxRows(x: Arr): Float64Array {
  const K = x.shape[x.shape.length - 1];
  const y = new Float64Array(x.data.length);
  for (let b = 0; b < x.data.length; b += K) {
    let m = -Infinity;
    for (let k = 0; k < K; k++) m = Math.max(m, x.data[b + k]);
    let s = 0;
    for (let k = 0; k < K; k++) s += Math.exp(x.data[b + k] - m);
    for (let k = 0; k < K; k++) y[b + k] = Math.exp(x.data[b + k] - m) / s;
  }
  return y;
}

export const ref = {
  softmax(x: Arr): Arr {
    return { data: refSoftmaxRows(x), shape: [...x.shape] };
  },
  softmaxBackward(x: Arr, dy: Arr): Arr {
    const K = x.shape[x.shape.length - 1];
    const y = refSoftmaxRows(x);
    const dx = new Float64Array(y.length);
    for (let b = 0; b < y.length; b += K) {
      let dot = 0;
      for (let k = 0; k < K; k++) dot += dy.data[b + k] * y[b + k];
      for (let k = 0; k < K; k++) dx[b + k] = y[b + k] * (dy.data[b + k] - dot);
    }
    return { data: dx, shape: [...x.shape] };
  },
  softmaxCrossEntropy(logits: Arr, labels: ArrayLike<number>): Arr {
    const [N, K] = logits.shape;
    const p = refSoftmaxRows(logits);
    let loss = 0;
    for (let n = 0; n < N; n++) loss -= Math.log(p[n * K + labels[n]]) / N;
    return { data: Float64Array.of(loss), shape: [] };
  },
  softmaxCrossEntropyBackward(logits: Arr, labels: ArrayLike<number>, dy: Arr): Arr {
    const [N, K] = logits.shape;
    const dx = refSoftmaxRows(logits);
    for (let n = 0; n < N; n++) {
      dx[n * K + labels[n]] -= 1;
      for (let k = 0; k < K; k++) dx[n * K + k] *= dy.data[0] / N;
    }
    return { data: dx, shape: [...logits.shape] };
  },
  /** crossEntropyRows in float64: labels per row (−1: padding), bias per class or null. */
  crossEntropyRows(x: Arr, labels: ArrayLike<number>, axis: number, bias: ArrayLike<number> | null): { loss: Arr; grad: Arr } {
    const a = axis < 0 ? axis + x.shape.length : axis;
    const K = x.shape[a];
    const inner = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
    const outer = x.data.length / (K * inner);
    const loss = new Float64Array(outer * inner);
    const grad = new Float64Array(x.data.length);
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < inner; j++) {
        const r = o * inner + j;
        const at = (k: number) => (o * K + k) * inner + j;
        if (labels[r] === -1) continue;
        const v = Array.from({ length: K }, (_, k) => x.data[at(k)] + (bias ? bias[k] : 0));
        const m = Math.max(...v);
        const z = m + Math.log(v.reduce((t, u) => t + Math.exp(u - m), 0));
        loss[r] = z - v[labels[r]];
        for (let k = 0; k < K; k++) grad[at(k)] = Math.exp(v[k] - z) - (k === labels[r] ? 1 : 0);
      }
    return { loss: { data: loss, shape: x.shape.filter((_, i) => i !== a) }, grad: { data: grad, shape: [...x.shape] } };
  },
  argmax(x: Arr, axis = -1): Arr {
    const a = axis < 0 ? axis + x.shape.length : axis;
    const K = x.shape[a];
    const inner = x.shape.slice(a + 1).reduce((p, d) => p * d, 1);
    const outer = x.data.length / (K * inner);
    const y = new Float64Array(outer * inner);
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < inner; j++) {
        let at = 0;
        for (let k = 1; k < K; k++) if (x.data[(o * K + k) * inner + j] > x.data[(o * K + at) * inner + j]) at = k;
        y[o * inner + j] = at;
      }
    return { data: y, shape: x.shape.filter((_, i) => i !== a) };
  },
};
