// Reductions over axes (sum, mean, max) with backward and float64 reference. Any set of axes is reduced as
// runs of adjacent axes, each run as a [outer, R, inner] problem: rows (inner = 1) by one workgroup each with
// a tree in workgroup memory; otherwise one thread per output, with R split into chunks first when there are
// few outputs and many terms (two levels: more parallel, and shorter sums in f32).

import { kernel, type Kernel } from '../engine/kernel.ts';
import { Tensor, empty, fmtShape, shapeSize, type Shape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { size, stridesOf, type Arr } from '../engine/ref.ts';

type ReduceOp = 'sum' | 'max';
const ROW_WG = 256;
const COL_WG = 256;

function combine(op: ReduceOp, a: string, b: string): string {
  return op === 'sum' ? `${a} + ${b}` : `max(${a}, ${b})`;
}
const INIT = { sum: '0.0', max: '-3.402823e38' };

/** rows: one workgroup per row reduces it by a tree; cols: one thread per output sums `chunk` terms of R. */
function reduceKernel(kind: 'row' | 'col', op: ReduceOp): Kernel {
  return kernel(`reduce|${kind}|${op}`, () => ({
    name: `${op}.reduce.${kind}`,
    uniforms: { outer: 'u32', r: 'u32', inner: 'u32', chunk: 'u32' },
    bindings: { x: 'read f32', y: 'rw f32' },
    workgroupSize: kind === 'row' ? ROW_WG : COL_WG,
    ...(kind === 'row'
      ? {
          header: `var<workgroup> part: array<f32, ${ROW_WG}>;`,
          body: `
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.outer) { return; } // uniform per workgroup, so the barriers below stay uniform
  let base = row * p.r;
  var acc = ${INIT[op]};
  for (var k = li; k < p.r; k += ${ROW_WG}u) { acc = ${combine(op, 'acc', 'x[base + k]')}; }
  part[li] = acc;
  workgroupBarrier();
  for (var s = ${ROW_WG / 2}u; s > 0u; s >>= 1u) {
    if (li < s) { part[li] = ${combine(op, 'part[li]', 'part[li + s]')}; }
    workgroupBarrier();
  }
  if (li == 0u) { y[row] = part[0]; }`,
        }
      : {
          // output [outer, chunks, inner]
          flat: { limit: 'p.outer * ((p.r + p.chunk - 1u) / p.chunk) * p.inner' },
          body: `
  let chunks = (p.r + p.chunk - 1u) / p.chunk;
  let j = i % p.inner;
  let oc = i / p.inner;
  let c = oc % chunks;
  let o = oc / chunks;
  let k0 = c * p.chunk;
  let k1 = min(k0 + p.chunk, p.r);
  var acc = ${INIT[op]};
  var idx = (o * p.r + k0) * p.inner + j;
  for (var k = k0; k < k1; k++) { acc = ${combine(op, 'acc', 'x[idx]')}; idx += p.inner; }
  y[i] = acc;`,
        }),
  }));
}

/** Reduces x viewed as [outer, r, inner] over r. Returns a new tensor of shape [outer, inner]. */
function reduce3(op: ReduceOp, x: Tensor, outer: number, r: number, inner: number): Tensor {
  const name = `${op}`;
  if (r === 1) return x.share([outer, inner]); // nothing to reduce: a view
  if (inner === 1 && r >= 64) {
    const y = empty([outer, 1], 'f32', name);
    const max = 65535;
    const grid: [number, number] = outer <= max ? [outer, 1] : [Math.ceil(outer / Math.ceil(outer / max)), Math.ceil(outer / max)];
    reduceKernel('row', op).launch({ outer, r, inner: 1, chunk: r, x, y }, grid);
    return y;
  }
  const outputs = outer * inner;
  let chunk = r;
  if (outputs < 8192 && r >= 256) {
    const chunks = Math.min(Math.ceil(r / 32), Math.ceil(16384 / outputs));
    chunk = Math.ceil(r / chunks);
  }
  const chunks = Math.ceil(r / chunk);
  const y = empty([outer, chunks, inner], 'f32', name);
  reduceKernel('col', op).launch({ outer, r, inner, chunk, x, y }, { threads: y.size });
  if (chunks === 1) return y;
  const z = reduce3(op, y, outer, chunks, inner);
  y.dispose();
  return z;
}

/** Normalizes axes (negative allowed; undefined = all) and rejects duplicates and out-of-range axes. */
export function normAxes(op: string, shape: Shape, axes?: number | readonly number[]): number[] {
  const r = shape.length;
  const list = axes === undefined ? [...Array(r).keys()] : typeof axes === 'number' ? [axes] : [...axes];
  const out = list.map((a) => {
    if (!Number.isInteger(a) || a < -r || a >= r) throw new Error(`${op}: axis ${a} is out of range for shape ${fmtShape(shape)}`);
    return a < 0 ? a + r : a;
  });
  if (new Set(out).size !== out.length) throw new Error(`${op}: repeated axis in [${list.join(', ')}]`);
  return out.sort((a, b) => a - b);
}

function keptShape(shape: Shape, axes: number[]): number[] {
  return shape.map((d, i) => (axes.includes(i) ? 1 : d));
}

/** Raw reduction (no tape): result has the kept shape (reduced axes of size 1). `name` is the public op's. */
function reduceRaw(op: ReduceOp, x: Tensor, axes: number[], name: string = op): Tensor {
  x.assertLive(name);
  if (x.dtype !== 'f32') throw new Error(`${name}: expected an f32 tensor, got ${x.dtype} ${fmtShape(x.shape)}`);
  const kshape = keptShape(x.shape, axes);
  if (op === 'max' && axes.some((a) => x.shape[a] === 0)) throw new Error(`max: cannot reduce an empty axis of ${fmtShape(x.shape)}`);
  if (axes.length === 0 || x.size === 0) {
    if (x.size === 0) return ew('sum.empty', '0.0', [], kshape);
    return ew(`${op}.copy`, 'a', [x], kshape);
  }
  // group adjacent axes into runs; reduce the last run first so earlier indices stay valid
  const runs: [number, number][] = [];
  for (const a of axes) {
    const last = runs[runs.length - 1];
    if (last && last[1] === a) last[1] = a + 1;
    else runs.push([a, a + 1]);
  }
  let cur = x;
  let shape = [...x.shape];
  for (let k = runs.length - 1; k >= 0; k--) {
    const [s, e] = runs[k];
    const outer = shapeSize(shape.slice(0, s));
    const r = shapeSize(shape.slice(s, e));
    const inner = shapeSize(shape.slice(e));
    const next = reduce3(op, cur, outer, r, inner);
    if (cur !== x) cur.dispose();
    shape = [...shape.slice(0, s), ...new Array(e - s).fill(1), ...shape.slice(e)];
    cur = next;
  }
  const out = cur.share(kshape);
  cur.dispose();
  return out;
}

function finish(y: Tensor, shape: Shape, axes: number[], keepDims: boolean): Tensor {
  if (keepDims) return y;
  const s = shape.filter((_, i) => !axes.includes(i));
  const v = y.share(s);
  y.dispose();
  return v;
}

export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes('sum', x.shape, axes);
  const yk = reduceRaw('sum', x, ax);
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) record('sum', [x], y, (dy) => [ew('sum.backward', 'a', [dy.share(kshape)], x.shape)]);
  return y;
}

export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes('mean', x.shape, axes);
  const n = shapeSize(ax.map((a) => x.shape[a]));
  const s = reduceRaw('sum', x, ax, 'mean');
  const yk = ew('mean', 'a * s0', [s], s.shape, [1 / n]);
  s.dispose();
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) record('mean', [x], y, (dy) => [ew('mean.backward', 'a * s0', [dy.share(kshape)], x.shape, [1 / n])]);
  return y;
}

/** Max over axes; the gradient is shared equally among tied maxima (as torch.amax). */
export function max(x: Tensor, axes?: number | readonly number[], keepDims = false): Tensor {
  const ax = normAxes('max', x.shape, axes);
  const yk = reduceRaw('max', x, ax);
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) {
    record('max', [x], y, (dy, [sx, sy]) => {
      const ymax = sy.share(kshape);
      const mask = ew('max.mask', 'select(0.0, 1.0, a == b)', [sx, ymax], x.shape);
      const count = reduceRaw('sum', mask, ax);
      return [ew('max.backward', 'a * b / c', [mask, dy.share(kshape), count], x.shape)];
    }, [x, y]);
  }
  return y;
}

/** Sums a (broadcast) gradient down to `shape`: the backward of broadcasting. */
export function sumToShape(g: Tensor, shape: Shape): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g.share();
  const off = g.shape.length - shape.length;
  const axes: number[] = [];
  g.shape.forEach((d, i) => {
    if (i < off || (shape[i - off] === 1 && d !== 1)) axes.push(i);
  });
  const r = reduceRaw('sum', g, axes);
  const out = r.share(shape);
  r.dispose();
  return out;
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  reduce(op: 'sum' | 'mean' | 'max', x: Arr, axes: number[], keepDims = false): Arr {
    const ax = normAxes(op, x.shape, axes);
    const kshape = keptShape(x.shape, ax);
    const out = new Float64Array(size(kshape)).fill(op === 'max' ? -Infinity : 0);
    const ks = stridesOf(kshape);
    const xs = stridesOf(x.shape);
    for (let i = 0; i < x.data.length; i++) {
      let o = 0;
      for (let d = 0; d < x.shape.length; d++) if (!ax.includes(d)) o += Math.floor(i / xs[d]) % x.shape[d] * ks[d];
      out[o] = op === 'max' ? Math.max(out[o], x.data[i]) : out[o] + x.data[i];
    }
    if (op === 'mean') {
      const n = size(ax.map((a) => x.shape[a]));
      for (let i = 0; i < out.length; i++) out[i] /= n;
    }
    return { data: out, shape: keepDims ? kshape : x.shape.filter((_, i) => !ax.includes(i)) };
  },
  reduceBackward(op: 'sum' | 'mean' | 'max', x: Arr, axes: number[], dy: Arr): Arr {
    const ax = normAxes(op, x.shape, axes);
    const kshape = keptShape(x.shape, ax);
    const ks = stridesOf(kshape);
    const xs = stridesOf(x.shape);
    const n = size(ax.map((a) => x.shape[a]));
    const y = op === 'max' ? ref.reduce('max', x, axes, true).data : null;
    const count = new Float64Array(size(kshape));
    const outIdx = (i: number) => {
      let o = 0;
      for (let d = 0; d < x.shape.length; d++) if (!ax.includes(d)) o += Math.floor(i / xs[d]) % x.shape[d] * ks[d];
      return o;
    };
    if (y) for (let i = 0; i < x.data.length; i++) if (x.data[i] === y[outIdx(i)]) count[outIdx(i)]++;
    const dx = new Float64Array(x.data.length);
    for (let i = 0; i < dx.length; i++) {
      const o = outIdx(i);
      if (op === 'sum') dx[i] = dy.data[o];
      else if (op === 'mean') dx[i] = dy.data[o] / n;
      else dx[i] = x.data[i] === y![o] ? dy.data[o] / count[o] : 0;
    }
    return { data: dx, shape: [...x.shape] };
  },
};
