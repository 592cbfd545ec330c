// Reductions over axes (sum, mean, max) with backward and float64 reference. Any set of axes is reduced as
// runs of adjacent axes, each run as a [outer, R, inner] problem: rows (inner = 1) by one workgroup each with
// a workgroup tree; otherwise one thread per output, with R split into chunks first when there are few outputs
// and many terms (two levels: more parallel, and shorter sums in f32).
//
// The workgroup trees of this file, the optimizers' norms and the cosine loss come from one generator
// (workgroupTree) under one per-device record (ReduceTuning, family 'reduce' in engine/tuning.ts): the
// workgroup size and the tree. 'shared' halves a workgroup-memory array with a barrier per level: what lavapipe
// and SwiftShader run well (their subgroups are 4-16 lanes, and a barrier there is a loop boundary, not a
// stall). 'subgroup' reduces within each subgroup (subgroupAdd/subgroupMax) and then makes one pass over the
// subgroup partials behind a single barrier: what GPUs with 32- or 64-lane subgroups want, where each barrier
// level stalls the whole workgroup. It assumes nothing about the subgroup size (WGSL knows it only at run time,
// 4 to 128) nor about how subgroups map onto local_invocation_index (not guaranteed to be linear): each
// subgroup's elected invocation stores its partial at its own index and sets that index's bit in a mask, and
// the pass walks the mask in index order, so sums come out in the same order on every run.

import { kernel, type Kernel } from '../engine/kernel.ts';
import { gpu } from '../engine/device.ts';
import { tuningFor } from '../engine/tuning.ts';
import { Tensor, empty, fmtShape, shapeSize, type Shape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { size, stridesOf, type Arr } from '../engine/ref.ts';

// ---- tuning: workgroup size and reduction tree, per device ------------------------------------------------

export type ReduceTree = 'shared' | 'subgroup';

/** The 'reduce' record (engine/tuning.ts): how the reduction kernels of reduce, optim, softmax and cosine run. */
export interface ReduceTuning {
  /** invocations per workgroup: a power of two from 32 to 512 (its trees of vec3 then fit 8 KiB), within the device's limits */
  workgroupSize: number;
  /** 'shared': workgroup-memory tree, one barrier per level; 'subgroup': subgroup sums, then one pass */
  tree: ReduceTree;
  /**
   * softmax and softmaxCrossEntropy: rows of at least this many classes get a workgroup each (max and sum by the
   * tree); shorter rows, and every row with 0, one invocation each (an online max and sum in one pass). sum, mean
   * and max over a last axis of at least max(64, longRow) likewise; with 0, one invocation per output (long rows
   * in chunks, then a second level), which on lavapipe was faster at every row length bench/reduce-quick.ts tries.
   */
  longRow: number;
}

/** Options of the ops that reduce (sum, mean, max, softmax, softmaxCrossEntropy, cosineLoss, the optimizers). */
export interface ReduceOptions {
  /** overrides of this device's 'reduce' record for this call and its backward; for tests, benchmarks and tuners */
  tuning?: Partial<ReduceTuning> | undefined;
}

/** The family name of the record in engine/tuning.ts. */
export const REDUCE_TUNING = 'reduce';

/** The adapter's subgroup sizes as it reports them (0 where it reports none). */
function subgroupSizes(): { min: number; max: number } {
  const c = gpu('reduce');
  const info: any = (c.adapter as any).info ?? {};
  return c.hasSubgroups ? { min: info.subgroupMinSize ?? 0, max: info.subgroupMaxSize ?? 0 } : { min: 0, max: 0 };
}

/**
 * The record an adapter starts with. Where the adapter has subgroups that may be 32 lanes or wider (NVIDIA, AMD,
 * Apple, Intel, Qualcomm): 256 invocations, the subgroup tree, and a workgroup per softmax row from 128 classes
 * (one invocation looping over a long row leaves a GPU idle). Elsewhere, the kernels these adapters were
 * measured with: 256 invocations, the workgroup-memory tree, one invocation per softmax row: lavapipe (8 or 16
 * lanes), SwiftShader (4 lanes), adapters without subgroups. No GPU has measured the first record yet.
 */
export function defaultReduceTuning(): ReduceTuning {
  return defaultReduceTuningFor(subgroupSizes().max);
}

/** defaultReduceTuning() for an adapter whose widest subgroups have `maxSubgroupSize` lanes (0: no subgroups). */
export function defaultReduceTuningFor(maxSubgroupSize: number): ReduceTuning {
  return maxSubgroupSize >= 32 ? { workgroupSize: 256, tree: 'subgroup', longRow: 128 } : { workgroupSize: 256, tree: 'shared', longRow: 0 };
}

/** The record one call uses (this device's, with `over` applied), checked against the device; errors name `op`. */
export function reduceTuning(over?: Partial<ReduceTuning>, op = 'reduce'): ReduceTuning {
  const c = gpu(op); // first: on a lost device the error names the caller's op, not the defaults' probe
  const t = tuningFor<ReduceTuning>(REDUCE_TUNING, defaultReduceTuning, over);
  const wg = t.workgroupSize;
  const limit = Math.min(512, c.info.limits.maxComputeInvocationsPerWorkgroup ?? 256, c.info.limits.maxComputeWorkgroupSizeX ?? 256);
  if (!Number.isInteger(wg) || wg < 32 || wg > limit || (wg & (wg - 1)) !== 0) {
    throw new Error(`${op}: tuning.workgroupSize must be a power of two from 32 to ${limit} on this device, got ${wg}`);
  }
  if (t.tree !== 'shared' && t.tree !== 'subgroup') throw new Error(`${op}: tuning.tree must be 'shared' or 'subgroup', got '${t.tree}'`);
  if (t.tree === 'subgroup' && !c.hasSubgroups) throw new Error(`${op}: tuning.tree 'subgroup' needs the 'subgroups' feature, which this device lacks; use 'shared'`);
  if (!Number.isInteger(t.longRow) || t.longRow < 0) throw new Error(`${op}: tuning.longRow must be an integer >= 0 (0: one invocation per row), got ${t.longRow}`);
  return t;
}

/** The part of a kernel-cache key that a ReduceTuning decides. */
export function reduceKey(t: ReduceTuning): string {
  return `${t.workgroupSize}|${t.tree}`;
}

/** A workgroup-wide reduction in WGSL: what to add to a kernel declaration, and the statements. */
export interface WorkgroupTree {
  /** for the declaration's `enable` */
  enable: ('subgroups')[];
  /** module-scope declarations (workgroup arrays) for the declaration's `header` */
  header: string;
  /**
   * Statements that combine `value` (an expression of `type`, one per invocation) over the workgroup and end
   * with `let <name>_total` holding the result: in invocation 0 only with who 'first', in every invocation with
   * 'all'. Every invocation of the workgroup must reach them, in uniform control flow, once per dispatch.
   */
  code(value: string): string;
}

/**
 * The tree `t` asks for, as WGSL. `name` prefixes its workgroup variables (two trees in one kernel need two
 * names); `type` is f32 or a vector of f32; `op` sum or max.
 */
export function workgroupTree(t: ReduceTuning, o: { name: string; type: 'f32' | 'vec2<f32>' | 'vec3<f32>' | 'vec4<f32>'; op: 'sum' | 'max'; who: 'first' | 'all' }): WorkgroupTree {
  const { name, type, op, who } = o;
  const WG = t.workgroupSize;
  const comb = (a: string, b: string) => (op === 'sum' ? `${a} + ${b}` : `max(${a}, ${b})`);
  const identity = `${type}(${op === 'sum' ? '0.0' : '-3.402823e38'})`;
  if (t.tree === 'shared') {
    return {
      enable: [],
      header: `var<workgroup> ${name}: array<${type}, ${WG}>;`,
      code: (value) => `
  ${name}[li] = ${value};
  workgroupBarrier();
  for (var ${name}_s = ${WG / 2}u; ${name}_s > 0u; ${name}_s >>= 1u) {
    if (li < ${name}_s) { ${name}[li] = ${comb(`${name}[li]`, `${name}[li + ${name}_s]`)}; }
    workgroupBarrier();
  }
  let ${name}_total = ${name}[0];`,
    };
  }
  // at most WG subgroups (each holds at least one invocation): one slot per invocation, one mask bit per slot
  const words = WG / 32;
  // the walk in index order fixes the order of the sum: the same bits on every run
  const walk = `
    for (var w = 0u; w < ${words}u; w++) {
      var bits = atomicLoad(&${name}_mask[w]);
      loop {
        if (bits == 0u) { break; }
        ${name}_acc = ${comb(`${name}_acc`, `${name}[w * 32u + countTrailingZeros(bits)]`)};
        bits &= bits - 1u;
      }
    }`;
  return {
    enable: ['subgroups'],
    header: `var<workgroup> ${name}: array<${type}, ${WG}>;
var<workgroup> ${name}_mask: array<atomic<u32>, ${words}>;`,
    code: (value) => `
  let ${name}_sg = ${op === 'sum' ? 'subgroupAdd' : 'subgroupMax'}(${value});
  if (subgroupElect()) {
    ${name}[li] = ${name}_sg;
    atomicOr(&${name}_mask[li / 32u], 1u << (li % 32u));
  }
  workgroupBarrier();
  var ${name}_acc = ${identity};
  ${who === 'first' ? 'if (li == 0u) ' : ''}{${walk}
  }
  let ${name}_total = ${name}_acc;`,
  };
}

// ---- the reduction kernels ----------------------------------------------------------------------------------

type ReduceOp = 'sum' | 'max';

function combine(op: ReduceOp, a: string, b: string): string {
  return op === 'sum' ? `${a} + ${b}` : `max(${a}, ${b})`;
}
const INIT = { sum: '0.0', max: '-3.402823e38' };

/** rows: one workgroup per row reduces it by a tree; cols: one thread per output sums `chunk` terms of R. */
function reduceKernel(kind: 'row' | 'col', op: ReduceOp, t: ReduceTuning): Kernel {
  const WG = t.workgroupSize;
  return kernel(`reduce|${kind}|${op}|${reduceKey(t)}`, () => {
    if (kind === 'col') {
      return {
        name: `${op}.reduce.col`,
        uniforms: { outer: 'u32', r: 'u32', inner: 'u32', chunk: 'u32' },
        bindings: { x: 'read f32', y: 'rw f32' },
        workgroupSize: WG,
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
      };
    }
    const tree = workgroupTree(t, { name: 'part', type: 'f32', op, who: 'first' });
    return {
      name: `${op}.reduce.row`,
      uniforms: { outer: 'u32', r: 'u32', inner: 'u32', chunk: 'u32' },
      bindings: { x: 'read f32', y: 'rw f32' },
      workgroupSize: WG,
      perWorkgroup: { index: 'row', limit: 'p.outer' },
      enable: tree.enable,
      header: tree.header,
      body: `
  let base = row * p.r;
  var acc = ${INIT[op]};
  for (var k = li; k < p.r; k += ${WG}u) { acc = ${combine(op, 'acc', 'x[base + k]')}; }
${tree.code('acc')}
  if (li == 0u) { y[row] = part_total; }`,
    };
  });
}

/** Reduces x viewed as [outer, r, inner] over r. Returns a new tensor of shape [outer, inner]. */
function reduce3(op: ReduceOp, x: Tensor, outer: number, r: number, inner: number, t: ReduceTuning): Tensor {
  const name = `${op}`;
  if (r === 1) return x.share([outer, inner]); // nothing to reduce: a view
  if (inner === 1 && t.longRow > 0 && r >= Math.max(64, t.longRow)) {
    const y = empty([outer, 1], 'f32', name);
    reduceKernel('row', op, t).launch({ outer, r, inner: 1, chunk: r, x, y }, { workgroups: outer });
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
  reduceKernel('col', op, t).launch({ outer, r, inner, chunk, x, y }, { threads: y.size });
  if (chunks === 1) return y;
  const z = reduce3(op, y, outer, chunks, inner, t);
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
function reduceRaw(op: ReduceOp, x: Tensor, axes: number[], t: ReduceTuning, name: string = op): Tensor {
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
    const next = reduce3(op, cur, outer, r, inner, t);
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

export function sum(x: Tensor, axes?: number | readonly number[], keepDims = false, opts: ReduceOptions = {}): Tensor {
  const ax = normAxes('sum', x.shape, axes);
  const yk = reduceRaw('sum', x, ax, reduceTuning(opts.tuning, 'sum'));
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) record('sum', [x], y, (dy) => [ew('sum.backward', 'a', [dy.share(kshape)], x.shape)]);
  return y;
}

export function mean(x: Tensor, axes?: number | readonly number[], keepDims = false, opts: ReduceOptions = {}): Tensor {
  const ax = normAxes('mean', x.shape, axes);
  const n = shapeSize(ax.map((a) => x.shape[a]));
  const s = reduceRaw('sum', x, ax, reduceTuning(opts.tuning, 'mean'), 'mean');
  const yk = ew('mean', 'a * s0', [s], s.shape, [1 / n]);
  s.dispose();
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) record('mean', [x], y, (dy) => [ew('mean.backward', 'a * s0', [dy.share(kshape)], x.shape, [1 / n])]);
  return y;
}

/** Max over axes; the gradient is shared equally among tied maxima (as torch.amax). */
export function max(x: Tensor, axes?: number | readonly number[], keepDims = false, opts: ReduceOptions = {}): Tensor {
  const ax = normAxes('max', x.shape, axes);
  const t = reduceTuning(opts.tuning, 'max');
  const yk = reduceRaw('max', x, ax, t);
  const kshape = yk.shape;
  const y = finish(yk, x.shape, ax, keepDims);
  if (needsGrad(x)) {
    record('max', [x], y, (dy, [sx, sy]) => {
      const ymax = sy.share(kshape);
      const mask = ew('max.mask', 'select(0.0, 1.0, a == b)', [sx, ymax], x.shape);
      const count = reduceRaw('sum', mask, ax, t);
      return [ew('max.backward', 'a * b / c', [mask, dy.share(kshape), count], x.shape)];
    }, [x, y]);
  }
  return y;
}

/** Sums a (broadcast) gradient down to `shape`: the backward of broadcasting. */
export function sumToShape(g: Tensor, shape: Shape, opts: ReduceOptions = {}): Tensor {
  if (g.shape.length === shape.length && g.shape.every((d, i) => d === shape[i])) return g.share();
  const off = g.shape.length - shape.length;
  const axes: number[] = [];
  g.shape.forEach((d, i) => {
    if (i < off || (shape[i - off] === 1 && d !== 1)) axes.push(i);
  });
  const r = reduceRaw('sum', g, axes, reduceTuning(opts.tuning, 'sum'));
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
