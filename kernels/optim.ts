// Kernels over whole parameter arenas (engine/arena.ts): per-segment norms by a two-level segmented
// reduction, the optimizer updates (SGD, momentum, Adam/AdamW, LARS) and the EMA of a target network, each
// one dispatch over every parameter. Each thread finds its segment through the table's per-block index
// (segments are 64-float aligned, so a 64-float block never straddles two). Float64 references at the bottom.

import { kernel, defineKernel, type Kernel, type BindingDecl } from '../engine/kernel.ts';
import { Tensor, empty } from '../engine/tensor.ts';
import { ARENA_ALIGN, NORM_CHUNK, type Arena, type ArenaBuffer, type SegmentKind } from '../engine/arena.ts';
import { reduceTuning, reduceKey, workgroupTree, type ReduceTuning, type ReduceOptions } from './reduce.ts';

const WG = 256; // the updates and the EMA: one vec4 per invocation, no tree

// ---- segmented reduction --------------------------------------------------------------------------------

/**
 * Per chunk: (sum a², sum (b + wd·a)²) with wd applied in 'weight' segments only. One workgroup per chunk of
 * NORM_CHUNK floats, workgroup size and tree from the device's 'reduce' record (kernels/reduce.ts).
 */
function partialKernel(t: ReduceTuning): Kernel {
  const G = t.workgroupSize;
  const perThread = NORM_CHUNK / G;
  return kernel(`optim|partialNorms|${reduceKey(t)}`, () => {
    let loads = '';
    // vec4 loads (chunks start at multiples of ARENA_ALIGN floats); lanes past the segment's end count zero
    for (let k = 0; k < perThread / 4; k++) {
      loads += `  { let i = start + 4u * (li + ${k * G}u); if (i < end) {
    let live = vec4<u32>(i) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(end);
    let x = select(vec4<f32>(0.0), a[i / 4u], live); let u = select(vec4<f32>(0.0), b[i / 4u], live) + decay * x;
    sa += dot(x, x); su += dot(u, u); } }\n`;
    }
    const tree = workgroupTree(t, { name: 'part', type: 'vec2<f32>', op: 'sum', who: 'first' });
    return {
      name: 'arena.partialNorms',
      uniforms: { nChunks: 'u32', chunkBase: 'u32', segBase: 'u32', wd: 'f32' },
      bindings: { a: 'read vec4<f32>', b: 'read vec4<f32>', table: 'read u32', partial: 'rw vec2<f32>' },
      workgroupSize: G,
      perWorkgroup: { index: 'c', limit: 'p.nChunks' },
      enable: tree.enable,
      header: tree.header,
      body: `
  let e = p.chunkBase + c * 4u;
  let start = table[e + 1u];
  let end = table[e + 2u];
  let decay = select(0.0, p.wd, table[p.segBase + table[e] * 4u + 2u] == 0u);
  var sa = 0.0;
  var su = 0.0;
${loads}${tree.code('vec2<f32>(sa, su)')}
  if (li == 0u) { partial[c] = part_total; }`,
    };
  });
}

/** Per segment: (LARS trust ratio, ||a||, ||b + wd·a||, 0) from the chunk partials. */
const statsKernel = defineKernel({
  name: 'arena.segmentStats',
  uniforms: { nSeg: 'u32', segBase: 'u32', eta: 'f32' },
  bindings: { table: 'read u32', partial: 'read vec2<f32>', stats: 'rw vec4<f32>' },
  workgroupSize: 64,
  body: `
  let s = gid.x;
  if (s >= p.nSeg) { return; }
  let e = p.segBase + s * 4u;
  var sa = 0.0;
  var su = 0.0;
  for (var c = table[e + 3u]; c < table[e + 7u]; c++) { let v = partial[c]; sa += v.x; su += v.y; }
  let wn = sqrt(sa);
  let un = sqrt(su);
  // LARS adapts weights only, and only when both norms are positive (optax scale_by_lars)
  let adapt = table[e + 2u] == 0u && wn > 0.0 && un > 0.0;
  stats[s] = vec4<f32>(select(1.0, p.eta * wn / un, adapt), wn, un, 0.0);`,
});

/**
 * Per-segment statistics of two arena-layout buffers `a` (parameters) and `b` (gradients): a [S, 4] tensor of
 * (trust ratio eta·||a||/||u||, ||a||, ||u||, 0) with u = b + wd·a in weight segments and u = b elsewhere;
 * the ratio is 1 for bias/norm segments and where a norm is 0. Two dispatches.
 */
export function segmentStats(arena: Arena, a: ArenaBuffer, b: ArenaBuffer, wd: number, eta: number, opts: ReduceOptions = {}): Tensor {
  arena.assertLive('segmentStats');
  const t = reduceTuning(opts.tuning, 'segmentStats');
  const L = arena.layout;
  const bases = L.tableBases;
  const partial = empty([L.nChunks, 2], 'f32', 'arena.partialNorms');
  partialKernel(t).launch({ nChunks: L.nChunks, chunkBase: bases.chunk, segBase: bases.seg, wd, a: a.flat, b: b.flat, table: arena.table, partial }, { workgroups: L.nChunks });
  const S = L.segments.length;
  const stats = empty([S, 4], 'f32', 'arena.segmentStats');
  statsKernel.launch({ nSeg: S, segBase: bases.seg, eta, table: arena.table, partial, stats }, [Math.ceil(S / 64)]);
  partial.dispose();
  return stats;
}

// ---- updates --------------------------------------------------------------------------------------------

export type UpdateRule = 'sgd' | 'momentum' | 'adam' | 'adamw' | 'lars';

const RULES: Record<UpdateRule, { state: string[]; stats: boolean; body: string }> = {
  sgd: { state: [], stats: false, body: 'w[i] = x - p.lr * (gi + decay * x);' },
  momentum: { state: ['mu'], stats: false, body: 'let m = p.momentum * mu[i] + gi + decay * x; mu[i] = m; w[i] = x - p.lr * m;' },
  adam: {
    state: ['m1', 'm2'],
    stats: false,
    body: `let gg = gi + decay * x;
  let m = p.b1 * m1[i] + p.c1 * gg; let v = p.b2 * m2[i] + p.c2 * gg * gg;
  m1[i] = m; m2[i] = v;
  w[i] = x - p.lr * (m / p.bc1) / (sqrt(v / p.bc2) + p.eps);`,
  },
  // AdamW: decoupled decay (PyTorch: w *= 1 - lr·wd, then the Adam step on the raw gradient)
  adamw: {
    state: ['m1', 'm2'],
    stats: false,
    body: `let m = p.b1 * m1[i] + p.c1 * gi; let v = p.b2 * m2[i] + p.c2 * gi * gi;
  m1[i] = m; m2[i] = v;
  w[i] = x * (1.0 - p.lr * decay) - p.lr * (m / p.bc1) / (sqrt(v / p.bc2) + p.eps);`,
  },
  // LARS (BYOL's optax chain): u = (g + wd·w)·trust in weight segments, u = g elsewhere; then momentum
  lars: { state: ['mu'], stats: true, body: 'let m = p.momentum * mu[i] + (gi + decay * x) * stats[seg].x; mu[i] = m; w[i] = x - p.lr * m;' },
};

function updateKernel(rule: UpdateRule): Kernel {
  return kernel(`optim|${rule}`, () => {
    const r = RULES[rule];
    const bindings: Record<string, BindingDecl> = { w: 'rw vec4<f32>', g: 'read vec4<f32>', table: 'read u32' };
    for (const n of r.state) bindings[n] = 'rw vec4<f32>';
    if (r.stats) bindings.stats = 'read vec4<f32>';
    return {
      name: `optim.${rule}`,
      uniforms: {
        n: 'u32', segBase: 'u32', blockBase: 'u32', exclude: 'u32', lr: 'f32', wd: 'f32', momentum: 'f32', eps: 'f32',
        b1: 'f32', b2: 'f32', c1: 'f32', c2: 'f32', bc1: 'f32', bc2: 'f32',
      },
      bindings,
      workgroupSize: WG,
      // one vec4 per invocation: segments start at multiples of ARENA_ALIGN floats, so a quad never spans two
      flat: { limit: 'p.n' },
      body: `
  let seg = table[p.blockBase + (i * 4u) / ${ARENA_ALIGN}u];
  let e = p.segBase + seg * 4u;
  let inSeg = i * 4u - table[e];
  let size = table[e + 1u];
  if (inSeg >= size) { return; } // padding after the segment stays zero
  // the segment's last quad may end in padding: keep those lanes as they are (zero)
  let live = vec4<u32>(inSeg) + vec4<u32>(0u, 1u, 2u, 3u) < vec4<u32>(size);
  let decay = select(p.wd, 0.0, p.exclude != 0u && table[e + 2u] != 0u);
  let x = w[i];
  let gi = select(vec4<f32>(0.0), g[i], live);
  ${r.body}`,
    };
  });
}

export interface UpdateScalars {
  lr: number;
  weightDecay: number;
  /** Skip weight decay in bias and norm segments. */
  exclude: boolean;
  momentum?: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  /** Adam bias corrections 1 - beta^t. */
  bc1?: number;
  bc2?: number;
}

/** One dispatch: updates arena.data in place from arena.grad and the rule's state buffers (and LARS stats). */
export function arenaUpdate(arena: Arena, rule: UpdateRule, state: ArenaBuffer[], stats: Tensor | null, s: UpdateScalars): void {
  arena.assertLive(`optim.${rule}`);
  const r = RULES[rule];
  if (state.length !== r.state.length) throw new Error(`optim.${rule}: expects ${r.state.length} state buffers, got ${state.length}`);
  if (r.stats !== !!stats) throw new Error(`optim.${rule}: ${r.stats ? 'needs' : 'takes no'} segment stats`);
  const L = arena.layout;
  const b = L.tableBases;
  const b1 = s.beta1 ?? 0;
  const b2 = s.beta2 ?? 0;
  const args: Record<string, number | Tensor> = {
    n: L.length / 4, segBase: b.seg, blockBase: b.block, exclude: s.exclude ? 1 : 0, lr: s.lr, wd: s.weightDecay,
    momentum: s.momentum ?? 0, eps: s.eps ?? 0, b1, b2, c1: 1 - b1, c2: 1 - b2, bc1: s.bc1 ?? 1, bc2: s.bc2 ?? 1,
    w: arena.data.flat, g: arena.grad.flat, table: arena.table,
  };
  r.state.forEach((n, k) => (args[n] = state[k].flat));
  if (stats) args.stats = stats;
  updateKernel(rule).launch(args, { threads: L.length / 4 });
}

// ---- EMA ------------------------------------------------------------------------------------------------

const emaUpdateKernel = defineKernel({
  name: 'ema',
  uniforms: { n: 'u32', a: 'f32' },
  bindings: { t: 'rw vec4<f32>', o: 'read vec4<f32>' },
  workgroupSize: WG,
  flat: { limit: 'p.n' },
  body: `
  let x = t[i];
  t[i] = x + p.a * (o[i] - x);`,
});

/** t ← t + a·(o − t) over the first `t.layout.length` floats (a = 1 − tau, computed in float64 by the caller). */
export function emaKernel(target: ArenaBuffer, online: ArenaBuffer, a: number): void {
  // arena lengths are multiples of ARENA_ALIGN floats, so whole vec4s (a vec4 load costs ~1.6 float loads on lavapipe)
  const n4 = target.layout.length / 4;
  emaUpdateKernel.launch({ n: n4, a, t: target.flat, o: online.flat }, { threads: n4 });
}

// ---- float64 reference ----------------------------------------------------------------------------------
// Per-segment arrays, updated in place, exactly as the formulas in PyTorch (SGD, Adam, AdamW) and BYOL's
// optax LARS (byol/utils/optimizers.py).

export interface RefSeg {
  kind: SegmentKind;
  w: Float64Array;
  g: Float64Array;
}

function norm(x: Float64Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s);
}

export const ref = {
  norm,
  sgd(segs: RefSeg[], mu: Float64Array[] | null, o: { lr: number; momentum: number; weightDecay: number; exclude: boolean }): void {
    segs.forEach((s, k) => {
      const wd = o.exclude && s.kind !== 'weight' ? 0 : o.weightDecay;
      for (let i = 0; i < s.w.length; i++) {
        const u = s.g[i] + wd * s.w[i];
        if (mu) {
          mu[k][i] = o.momentum * mu[k][i] + u;
          s.w[i] -= o.lr * mu[k][i];
        } else s.w[i] -= o.lr * u;
      }
    });
  },
  adam(segs: RefSeg[], m: Float64Array[], v: Float64Array[], t: number,
    o: { lr: number; beta1: number; beta2: number; eps: number; weightDecay: number; decoupled: boolean; exclude: boolean }): void {
    const bc1 = 1 - o.beta1 ** t;
    const bc2 = 1 - o.beta2 ** t;
    segs.forEach((s, k) => {
      const wd = o.exclude && s.kind !== 'weight' ? 0 : o.weightDecay;
      for (let i = 0; i < s.w.length; i++) {
        const g = o.decoupled ? s.g[i] : s.g[i] + wd * s.w[i];
        m[k][i] = o.beta1 * m[k][i] + (1 - o.beta1) * g;
        v[k][i] = o.beta2 * v[k][i] + (1 - o.beta2) * g * g;
        const w = o.decoupled ? s.w[i] * (1 - o.lr * wd) : s.w[i];
        s.w[i] = w - (o.lr * (m[k][i] / bc1)) / (Math.sqrt(v[k][i] / bc2) + o.eps);
      }
    });
  },
  /** Returns the trust ratio used for each segment. */
  lars(segs: RefSeg[], mu: Float64Array[], o: { lr: number; momentum: number; weightDecay: number; eta: number }): number[] {
    return segs.map((s, k) => {
      const adapt = s.kind === 'weight';
      const u = new Float64Array(s.w.length);
      for (let i = 0; i < u.length; i++) u[i] = adapt ? s.g[i] + o.weightDecay * s.w[i] : s.g[i];
      const wn = norm(s.w);
      const un = norm(u);
      const trust = adapt && wn > 0 && un > 0 ? (o.eta * wn) / un : 1;
      for (let i = 0; i < u.length; i++) {
        mu[k][i] = o.momentum * mu[k][i] + u[i] * trust;
        s.w[i] -= o.lr * mu[k][i];
      }
      return trust;
    });
  },
  ema(target: Float64Array, online: Float64Array, tau: number): void {
    for (let i = 0; i < target.length; i++) target[i] = tau * target[i] + (1 - tau) * online[i];
  },
};
