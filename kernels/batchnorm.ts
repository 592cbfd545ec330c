// Batch normalization over the last (channel) axis, BatchNorm1d on [N, C] and BatchNorm2d on NHWC [N, H, W, C]:
// x is viewed as [R, C]. Training statistics come from a two-level reduction: workgroups sum shifted values
// d = x - x[0, c] and d² over chunks of rows, a second dispatch adds the chunks up; shifting by a sample of the
// channel keeps E[d²] - E[d]² free of the cancellation that ruins it when |mean| >> std. The finishing dispatch
// writes the per-channel constants that the normalize pass and the backward read, and updates the running
// statistics in place. The mean is kept as shift + dmean (both f32) and x - mean evaluated as (x - shift) - dmean:
// x - shift is exact for nearby values, so xhat stays accurate even where one f32 ulp of the mean is a sizable
// fraction of the std. Forward: 2-3 dispatches; backward: 2-3.

import { kernel, defineKernel, type Kernel, type BindingDecl } from '../engine/kernel.ts';
import { isLavapipe } from '../engine/device.ts';
import { tuningFor } from '../engine/tuning.ts';
import { flatTexture, flatTextureWidth } from '../engine/textures.ts';
import { Tensor, empty, zeros, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { reduceTuning, type ReduceTuning } from './reduce.ts';
import { reluBackward } from './elementwise.ts';
import type { Arr } from '../engine/ref.ts';

export interface BatchNormStats {
  runningMean: Tensor;
  runningVar: Tensor;
}

export interface BatchNormOptions {
  training: boolean;
  /** Weight of the batch statistic in the running average (PyTorch convention). Default 0.1. */
  momentum?: number;
  eps?: number;
  /** Fuse a ReLU after the affine transform; its backward masks by the output. */
  relu?: boolean;
  /**
   * Statistics per group of the batch ("ghost batches"): x's leading axis splits into this many equal parts, each
   * normalized with its own statistics, as that many separate calls would (running statistics move once per group,
   * in order). A BYOL step runs its two views as one batch this way. Default 1. Training mode only.
   */
  groups?: number;
  /**
   * A tensor of x's shape added after the affine transform, before the ReLU: relu(bn(x) + residual), the end of a
   * residual block in one pass (the normalized value is never written). Differentiable in it too.
   */
  residual?: Tensor;
  /**
   * Overrides of the device's 'reduce' record (kernels/reduce.ts) for the statistics and the backward's sums:
   * workgroupSize, and tree 'shared' (a barrier per level) or 'subgroup' (one barrier, then each channel's
   * partials summed in order by one invocation: a channel-segmented tree cannot be split by subgroups without a
   * guaranteed subgroup layout, so this needs no subgroup operation at all).
   */
  tuning?: Partial<ReduceTuning>;
  /**
   * Read x, the residual and (backward) dy through flat operand textures (engine/textures.ts) where channels are a
   * multiple of 4. Default: the device's 'batchNorm' record (batchNormTuning()).
   */
  textures?: boolean;
}

/** batchNorm's per-device record (engine/tuning.ts, family 'batchNorm'). */
export interface BatchNormTuning {
  /** see BatchNormOptions.textures; default on lavapipe, which fetches texels with vector loads, else off */
  textures: boolean;
  /**
   * The statistics' and the backward's sums: overrides of the device's 'reduce' record for batchNorm alone (a
   * call's `tuning` goes over them). Unset by default: on lavapipe, 64 invocations with the subgroup tree ran
   * batchNorm alone in 0.71-0.81x the time but added 17 finishing dispatches, and the whole step did not move
   * (bench/results/step-ab-session7.md).
   */
  reduce?: Partial<ReduceTuning>;
}

/** This device's batchNorm record, with a call's overrides. */
export function batchNormTuning(over?: Partial<BatchNormTuning>): BatchNormTuning {
  return tuningFor<BatchNormTuning>('batchNorm', defaultBatchNormTuning, over);
}

function defaultBatchNormTuning(): BatchNormTuning {
  return { textures: isLavapipe('batchNorm') };
}

const WG = 256; // the elementwise passes; the reductions take the 'reduce' record's size
/** Cap of the operand-texture cache (engine/textures.ts) when batchNorm adds a texture; as matmul's default. */
const BN_TEXTURE_CACHE_BYTES = 256 * 2 ** 20;
const ROWS_PER_THREAD = 16; // per chunk: enough work per invocation to pay for its share of the tree
const MAX_CHUNKS = 512;

/** How a [G * Rg, C] problem maps onto reduce workgroups: TCW channel lanes by TR row lanes, chunks per group. */
interface Layout {
  R: number;
  C: number;
  G: number; // groups with their own statistics
  Rg: number; // rows per group
  vec: boolean; // C % 4 == 0: one lane handles 4 channels as a vec4
  Cv: number; // channel lanes in use (C or C / 4)
  TCW: number;
  TR: number;
  blocks: number; // workgroups along channels
  chunks: number; // workgroups along the rows of one group
  rowsPerChunk: number;
  rowBlocks: number; // elementwise passes: blocks of ROWS_PER_INVOCATION rows per group
  tuning: ReduceTuning;
  tw: number; // x-sized operands from flat textures of tw texels per row (0: the buffers)
}

function layoutOf(R: number, C: number, G: number, tuning: ReduceTuning, tw = 0): Layout {
  const vec = C % 4 === 0;
  const Cv = vec ? C / 4 : C;
  const Rg = R / G;
  const wg = tuning.workgroupSize;
  let TCW = 1;
  while (TCW < Cv && TCW < 64 && TCW < wg) TCW *= 2;
  const TR = wg / TCW;
  const chunks = Math.max(1, Math.min(Math.ceil(MAX_CHUNKS / G), Math.ceil(Rg / (TR * ROWS_PER_THREAD))));
  const rowsPerChunk = Math.max(1, Math.ceil(Rg / chunks));
  return {
    R, C, G, Rg, vec, Cv, TCW, TR, blocks: Math.ceil(Cv / TCW), chunks: Math.max(1, Math.ceil(Rg / rowsPerChunk)), rowsPerChunk,
    rowBlocks: Math.ceil(Rg / ROWS_PER_INVOCATION), tuning, tw,
  };
}

// ---- WGSL -----------------------------------------------------------------------------------------------

/**
 * Loaders `fn ld<name>(e) -> T` for element e of the tensors of x's size a kernel reads: from the storage buffer,
 * or (tw > 0, vec4 layouts) from a flat operand texture of tw texels per row (engine/textures.ts), which lavapipe
 * fetches for all lanes with vector loads.
 */
function loaders(names: Record<string, string>, T: string, tw: number): string {
  return Object.entries(names)
    .map(([fn, buf]) => `fn ${fn}(e: u32) -> ${T} { return ${tw ? `textureLoad(${buf}, vec2<u32>(e % ${tw}u, e / ${tw}u))` : `${buf}[e]`}; }`)
    .join('\n');
}
const asTexture = (b: Record<string, BindingDecl>, names: string[], tw: number) => {
  if (tw) for (const n of names) if (n in b) b[n] = 'texture';
  return b;
};

const REDUCE_UNIFORMS = {
  G: 'u32', Rg: 'u32', Cv: 'u32', rowsPerChunk: 'u32', chunks: 'u32', momentum: 'f32', eps: 'f32', unbias: 'f32', training: 'f32', TCW: 'u32', TR: 'u32',
  invBlock: 'f32',
} as const;

interface ReduceVariant {
  pass: 'forward' | 'backward';
  /** Sum the chunk partials of a previous dispatch instead of the data. */
  fromPartials: boolean;
  /**
   * forward: the rows are ChannelMoments blocks (mean, squared deviations; `mom`, [G * Rg, 2, C]) written by the
   * producer of x, not x itself. Shifted by the group's first block mean, the sums become those of x's rows.
   */
  moments: boolean;
  /** Write the per-channel results (else chunk partials). */
  final: boolean;
  vec: boolean;
  relu: boolean; // backward: mask dy where the forward's output was 0 (recomputed from x: one tensor less to read)
  running: boolean; // forward final: update the running statistics
  wg: number;
  tree: ReduceTuning['tree'];
  /** x and dy from flat textures of this many texels per row; 0: the buffers */
  tw: number;
}

function reduceKernel(v: ReduceVariant): Kernel {
  return kernel(`batchNorm|reduce|${JSON.stringify(v)}`, () => {
    const WG = v.wg;
    const T = v.vec ? 'vec4<f32>' : 'f32';
    const read = `read ${T}` as const;
    const rw = `rw ${T}` as const;
    const b: Record<string, BindingDecl> = {};
    const fwd = v.pass === 'forward';
    if (fwd) b[v.moments ? 'mom' : 'x'] = read; // the shift is read by both levels
    else {
      if (!v.fromPartials) {
        b.x = read;
        b.dy = read;
        if (v.relu) b.beta = read;
      }
      b.stats = read;
    }
    if (v.fromPartials) b.part = read;
    if (!v.final) b.part = rw;
    else if (fwd) {
      b.gamma = read;
      b.stats = rw;
      if (v.running) (b.runningMean = rw), (b.runningVar = rw);
    } else (b.dgamma = rw), (b.dbeta = rw), (b.coef = rw);

    // accumulation of a (first sum) and b (second sum) for one lane over its rows
    // group g's stats are rows 4g..4g+3 of stats ([G, 4, Cv]); chunk partials are [G * chunks, 2, Cv]
    let source: string;
    if (v.fromPartials) {
      source = `for (var k = rl; k < p.chunks; k += p.TR) { let q = g * p.chunks + k; a += part[2u * q * p.Cv + c]; b += part[(2u * q + 1u) * p.Cv + c]; }`;
    } else {
      // a block of n rows with mean m and squared deviations M2 adds n (m - shift) and M2 + n (m - shift)²:
      // per block, divided by n (so the epilogue divides by the number of blocks)
      const term = (r: string, k: number) => fwd
        ? v.moments
          ? `let d${k} = mom[2u * (${r}) * p.Cv + c] - shift; a += d${k}; b += fma(d${k}, d${k}, mom[(2u * (${r}) + 1u) * p.Cv + c] * p.invBlock);`
          : `let d${k} = ldx((${r}) * p.Cv + c) - shift; a += d${k}; b += d${k} * d${k};`
        : `let xm${k} = (ldx((${r}) * p.Cv + c) - shift) - dmean; let g${k} = ${v.relu ? `select(${T}(0.0), ldy((${r}) * p.Cv + c), xm${k} * scale + bb > ${T}(0.0))` : `ldy((${r}) * p.Cv + c)`}; a += g${k}; b += g${k} * xm${k};`;
      source = `let base = g * p.Rg;
    ${fwd ? `let shift = ${v.moments ? 'mom[2u * base * p.Cv + c]' : 'ldx(base * p.Cv + c)'};` : 'let shift = stats[4u * g * p.Cv + c]; let dmean = stats[(4u * g + 1u) * p.Cv + c];'}
    ${!fwd && v.relu ? 'let scale = stats[(4u * g + 3u) * p.Cv + c]; let bb = beta[c];' : ''}
    let r1 = min(base + (chunk + 1u) * p.rowsPerChunk, base + p.Rg);
    var r = base + chunk * p.rowsPerChunk + rl;
    for (; r + 3u * p.TR < r1; r += 4u * p.TR) {
      ${[0, 1, 2, 3].map((k) => term(k ? `r + ${k}u * p.TR` : 'r', k)).join('\n      ')}
    }
    for (; r < r1; r += p.TR) { ${term('r', 0)} }`;
    }
    let epilogue: string;
    if (!v.final) epilogue = 'part[2u * wid.y * p.Cv + c] = A; part[(2u * wid.y + 1u) * p.Cv + c] = B;';
    else if (fwd) {
      // groups run in order in one invocation, so the running statistics move once per group as separate calls would
      epilogue = `let n = f32(p.Rg);
    let dm = A / n;
    let variance = max(B / n - dm * dm, ${T}(0.0));
    let invstd = inverseSqrt(variance + p.eps);
    let shift = ${v.moments ? 'mom[2u * g * p.Rg * p.Cv + c]' : 'ldx(g * p.Rg * p.Cv + c)'};
    let s0 = 4u * g * p.Cv;
    stats[s0 + c] = shift;
    stats[s0 + p.Cv + c] = dm;
    stats[s0 + 2u * p.Cv + c] = invstd;
    stats[s0 + 3u * p.Cv + c] = gamma[c] * invstd;
    ${v.running ? `runningMean[c] = (1.0 - p.momentum) * runningMean[c] + p.momentum * (shift + dm);
    runningVar[c] = (1.0 - p.momentum) * runningVar[c] + p.momentum * p.unbias * variance;` : ''}`;
    } else {
      // dgamma = sum(dy * xhat), dbeta = sum(dy), summed over the groups; coef (per group) feeds
      // dx = scale * (dy - coef0 - xhat * coef1)
      epilogue = `let n = f32(p.Rg);
    let sdyx = B * stats[(4u * g + 2u) * p.Cv + c];
    if (g == 0u) { dgamma[c] = sdyx; dbeta[c] = A; } else { dgamma[c] += sdyx; dbeta[c] += A; }
    coef[2u * g * p.Cv + c] = A * (p.training / n);
    coef[(2u * g + 1u) * p.Cv + c] = sdyx * (p.training / n);`;
    }
    const what = v.final ? (v.fromPartials ? 'finish' : 'reduce+finish') : 'reduce';
    return {
      name: `batchNorm.${v.pass === 'forward' ? 'stats' : 'backward'}.${what}`,
      uniforms: REDUCE_UNIFORMS,
      bindings: asTexture(b, ['x', 'dy'], v.tw),
      workgroupSize: WG,
      header: `var<workgroup> sa: array<${T}, ${WG}>;
var<workgroup> sb: array<${T}, ${WG}>;
${loaders({ ...('x' in b ? { ldx: 'x' } : {}), ...('dy' in b ? { ldy: 'dy' } : {}) }, T, v.tw)}`,
      body: `
  let t = li;
  let lane = t % p.TCW;
  let rl = t / p.TCW;
  let c = wid.x * p.TCW + lane;
  ${v.final ? `for (var g = 0u; g < p.G; g++) {
  let chunk = 0u;
  workgroupBarrier();` : `let g = wid.y / p.chunks;
  let chunk = wid.y % p.chunks;
  {`}
  var a = ${T}(0.0);
  var b = ${T}(0.0);
  if (c < p.Cv) {
    ${source}
  }
  sa[t] = a;
  sb[t] = b;
  workgroupBarrier();
  ${v.tree === 'shared' ? `// a loop, not unrolled: it runs once per workgroup, and every barrier costs llvmpipe compile time
  for (var s = p.TR / 2u; s > 0u; s >>= 1u) {
    if (rl < s) { sa[t] += sa[t + s * p.TCW]; sb[t] += sb[t + s * p.TCW]; }
    workgroupBarrier();
  }
  if (rl == 0u && c < p.Cv) {
    let A = sa[t];
    let B = sb[t];
    ${epilogue}
  }` : `// one barrier: the channel's first invocation adds its TR partials in order
  if (rl == 0u && c < p.Cv) {
    var A = ${T}(0.0);
    var B = ${T}(0.0);
    for (var k = 0u; k < p.TR; k++) { A += sa[k * p.TCW + lane]; B += sb[k * p.TCW + lane]; }
    ${epilogue}
  }`}
  }`,
    };
  });
}

// Elementwise passes: an invocation takes one channel quad (or channel) in ROWS_PER_INVOCATION rows, so its
// per-channel values are loaded once, not once per element (on lavapipe every dynamic load is a per-lane loop,
// and 4-6 of them per element made these passes ~5x slower per element than the EMA's).
const ROWS_PER_INVOCATION = 8;
const rowLoop = (body: string) =>
  [...Array(ROWS_PER_INVOCATION).keys()].map((k) => `  { let r = r0 + ${k}u; if (r < rEnd) { let e = r * p.Cv + c;\n    ${body}\n  } }`).join('\n');

// this invocation's channel c, group g and first row r0 (its rows never cross into the next group, so the
// group's per-channel values load once), and the channel's mean as shift + dmean
const ROWS_PROLOGUE = `
  let c = i % p.Cv;
  let q = i / p.Cv;
  let g = q / p.rowBlocks;
  let rEnd = (g + 1u) * p.Rg;
  let r0 = g * p.Rg + (q % p.rowBlocks) * ${ROWS_PER_INVOCATION}u;
  let s0 = 4u * g * p.Cv;
  let shift = stats[s0 + c];
  let dmean = stats[s0 + p.Cv + c];`;
const ROWS_UNIFORMS = { n: 'u32', Cv: 'u32', Rg: 'u32', rowBlocks: 'u32' } as const;

function normalizeKernel(vec: boolean, relu: boolean, residual: boolean, tw: number): Kernel {
  const T = vec ? 'vec4<f32>' : 'f32';
  return kernel(`batchNorm|normalize|${vec}|${relu}|${residual}|${tw}`, () => ({
    name: 'batchNorm.normalize',
    uniforms: ROWS_UNIFORMS,
    bindings: asTexture({ x: `read ${T}`, stats: `read ${T}`, beta: `read ${T}`, ...(residual ? { residual: `read ${T}` } : {}), y: `rw ${T}` }, ['x', 'residual'], tw),
    header: loaders({ ldx: 'x', ...(residual ? { ldr: 'residual' } : {}) }, T, tw),
    workgroupSize: WG,
    flat: { limit: 'p.n' },
    // (x - mean) * scale, not x * scale + (beta - mean * scale): that cancels catastrophically when |mean| >> std
    body: `${ROWS_PROLOGUE}
  let scale = stats[s0 + 3u * p.Cv + c];
  let b = beta[c];
${rowLoop(`let v = ((ldx(e) - shift) - dmean) * scale + b${residual ? ' + ldr(e)' : ''}; y[e] = ${relu ? `max(v, ${T}(0.0))` : 'v'};`)}`,
  }));
}

function applyGradKernel(vec: boolean, relu: boolean, tw: number): Kernel {
  const T = vec ? 'vec4<f32>' : 'f32';
  const b: Record<string, BindingDecl> = { x: `read ${T}`, dy: `read ${T}` };
  if (relu) b.beta = `read ${T}`;
  Object.assign(b, { stats: `read ${T}`, coef: `read ${T}`, dx: `rw ${T}` });
  return kernel(`batchNorm|applyGrad|${vec}|${relu}|${tw}`, () => ({
    name: 'batchNorm.backward.dx',
    uniforms: ROWS_UNIFORMS,
    bindings: asTexture(b, ['x', 'dy'], tw),
    header: loaders({ ldx: 'x', ldy: 'dy' }, T, tw),
    workgroupSize: WG,
    flat: { limit: 'p.n' },
    body: `${ROWS_PROLOGUE}
  let invstd = stats[s0 + 2u * p.Cv + c];
  let scale = stats[s0 + 3u * p.Cv + c];
  let c0 = coef[2u * g * p.Cv + c];
  let c1 = coef[(2u * g + 1u) * p.Cv + c];
  ${relu ? 'let bb = beta[c];' : ''}
${rowLoop(`let xm = (ldx(e) - shift) - dmean;
    let g = ${relu ? `select(${T}(0.0), ldy(e), xm * scale + bb > ${T}(0.0))` : 'ldy(e)'};
    let xhat = xm * invstd;
    dx[e] = scale * (g - c0 - xhat * c1);`)}`,
  }));
}

const evalStatsKernel = defineKernel({
  name: 'batchNorm.evalStats',
  uniforms: { C: 'u32', eps: 'f32' },
  bindings: { runningMean: 'read f32', runningVar: 'read f32', gamma: 'read f32', stats: 'rw f32' },
  workgroupSize: 64,
  body: `
  let c = gid.x;
  if (c >= p.C) { return; }
  let invstd = inverseSqrt(runningVar[c] + p.eps);
  stats[c] = runningMean[c];
  stats[p.C + c] = 0.0;
  stats[2u * p.C + c] = invstd;
  stats[3u * p.C + c] = gamma[c] * invstd;`,
});

// ---- launches ---------------------------------------------------------------------------------------------

interface ReduceArgs {
  pass: 'forward' | 'backward';
  /** forward: data.mom holds ChannelMoments blocks instead of data.x */
  moments?: boolean;
  relu: boolean;
  running: boolean;
  uniforms: Record<string, number>;
  /** bindings for the data level and for the finishing level (x and dy as textures where L.tw says so) */
  data: Record<string, Tensor | GPUTextureView>;
  finish: Record<string, Tensor>;
}

/** One dispatch when a single chunk covers all rows, else chunk partials and a finishing dispatch. */
function reduceLaunch(L: Layout, a: ReduceArgs): void {
  const base = { pass: a.pass, moments: !!a.moments, vec: L.vec, relu: a.relu, running: a.running, wg: L.tuning.workgroupSize, tree: L.tuning.tree, tw: a.moments ? 0 : L.tw };
  const op = `batchNorm${a.pass === 'backward' ? '.backward' : ''}`;
  if (L.chunks === 1) {
    reduceKernel({ ...base, fromPartials: false, final: true }).launch({ ...a.uniforms, ...a.data, ...a.finish }, [L.blocks, 1]);
    return;
  }
  const part = empty([L.G * L.chunks, 2, L.C], 'f32', op);
  reduceKernel({ ...base, fromPartials: false, final: false }).launch({ ...a.uniforms, ...a.data, part }, [L.blocks, L.G * L.chunks]);
  reduceKernel({ ...base, fromPartials: true, final: true }).launch({ ...a.uniforms, ...a.data, ...a.finish, part }, [L.blocks, 1]);
  part.dispose();
}

/** rowsPerEntry: x's rows behind each row of the reduction (a ChannelMoments block), else 1. */
function reduceUniforms(L: Layout, momentum: number, eps: number, training: boolean, rowsPerEntry = 1): Record<string, number> {
  const n = L.Rg * rowsPerEntry;
  return {
    G: L.G, Rg: L.Rg, Cv: L.Cv, rowsPerChunk: L.rowsPerChunk, chunks: L.chunks, momentum, eps, unbias: n / (n - 1), training: training ? 1 : 0, TCW: L.TCW, TR: L.TR,
    invBlock: 1 / rowsPerEntry,
  };
}

function validate(x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, opts: BatchNormOptions): number {
  const op = 'batchNorm';
  const all = [x, gamma, beta, ...(stats ? [stats.runningMean, stats.runningVar] : [])];
  for (const t of all) {
    t.assertLive(op);
    if (t.dtype !== 'f32') throw new Error(`${op}: expected f32 tensors, got ${t.dtype} tensor ${fmtShape(t.shape)}`);
  }
  if (x.rank < 2) throw new Error(`${op}: x must have rank >= 2 ([N, C] or [N, H, W, C], channels last), got ${fmtShape(x.shape)}`);
  const C = x.shape[x.rank - 1];
  if (C === 0) throw new Error(`${op}: x ${fmtShape(x.shape)} has no channels`);
  const perChannel: [string, Tensor][] = [['gamma', gamma], ['beta', beta]];
  if (stats) perChannel.push(['runningMean', stats.runningMean], ['runningVar', stats.runningVar]);
  for (const [name, t] of perChannel) {
    if (t.rank !== 1 || t.shape[0] !== C) throw new Error(`${op}: ${name} has shape ${fmtShape(t.shape)}, expected [${C}] for x ${fmtShape(x.shape)}`);
  }
  const R = x.size / C;
  const G = opts.groups ?? 1;
  if (!Number.isInteger(G) || G < 1 || x.shape[0] % G !== 0) {
    throw new Error(`${op}: groups must be a positive integer that divides x's leading axis, got groups ${G} for x ${fmtShape(x.shape)}`);
  }
  if (opts.training && R / G < 2) {
    throw new Error(`${op}: expected more than 1 value per channel when training, got x ${fmtShape(x.shape)} (${R / G} per channel${G > 1 ? ` in each of ${G} groups` : ''})`);
  }
  if (!opts.training && !stats) throw new Error(`${op}: eval mode (training: false) needs running statistics, got null for x ${fmtShape(x.shape)}`);
  if (opts.residual) {
    const r = opts.residual;
    r.assertLive(op);
    if (r.dtype !== 'f32' || r.rank !== x.rank || r.shape.some((d, i) => d !== x.shape[i])) {
      throw new Error(`${op}: residual must be an f32 tensor of x's shape ${fmtShape(x.shape)}, got ${r.dtype} ${fmtShape(r.shape)}`);
    }
  }
  if (stats && stats.runningMean.storage === stats.runningVar.storage) {
    throw new Error(`${op}: runningMean and runningVar must be separate tensors (they are updated in place)`);
  }
  const momentum = opts.momentum ?? 0.1;
  const eps = opts.eps ?? 1e-5;
  if (!(momentum >= 0 && momentum <= 1)) throw new Error(`${op}: momentum must be in [0, 1], got ${momentum}`);
  if (!(eps >= 0)) throw new Error(`${op}: eps must be >= 0, got ${eps}`);
  return C;
}

/**
 * y = gamma * (x - mean) / sqrt(var + eps) + beta over the last axis (channels), optionally followed by ReLU.
 * Training: batch statistics (biased variance), and the running statistics, when given, move towards the batch
 * ones in place (unbiased variance, as PyTorch). Eval: the running statistics. Differentiable in x, gamma, beta.
 */
export function batchNorm(x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, opts: BatchNormOptions): Tensor {
  const op = 'batchNorm';
  const relu = !!opts.relu;
  const { y, st, L } = batchNormForward(x, gamma, beta, stats, opts);
  const training = opts.training;
  const res = opts.residual;
  if (res && needsGrad(x, gamma, beta, res)) {
    // the mask needs the residual too, so it comes from y; dy through the mask is the residual's gradient and the
    // plain batchNorm's dy
    record(op, [x, gamma, beta, res], y, (dy, [sx, sst, sy], [nx, ng, nb, nr]) => {
      const g = relu ? reluBackward(`${op}.residual.backward`, dy, sy) : dy.share();
      const grads = nx || ng || nb ? batchNormBackward(L, g, sx, sst, null, training, [nx, ng, nb]) : [null, null, null];
      if (nr) return [...grads, g];
      g.dispose();
      return [...grads, null];
    }, [x, st, y]);
  } else if (needsGrad(x, gamma, beta)) {
    // the ReLU's mask is recomputed from x, the statistics and beta, as the normalize pass computed it, instead of
    // read from y: the backward passes read two full tensors instead of three
    record(op, [x, gamma, beta], y, (dy, [sx, sst, sbeta]) => batchNormBackward(L, dy, sx, sst, relu ? sbeta : null, training, [x.requiresGrad, gamma.requiresGrad, beta.requiresGrad]), relu ? [x, st, beta] : [x, st]);
  }
  st.dispose();
  return y;
}

/** How a batchNorm call laid out its sums, for a backward run by a fused op (batchNormBackwardFromSums). */
export type BatchNormLayout = Layout;

/**
 * batchNorm's forward without recording anything: the output, the statistics its backward reads ([G * 4, C]: per
 * group shift, dmean, invstd, gamma * invstd) and the layout of its sums. The caller disposes st. For ops that
 * fuse batchNorm with the op after it (kernels/batchnorm-conv.ts).
 */
export function batchNormForward(x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, opts: BatchNormOptions): { y: Tensor; st: Tensor; L: BatchNormLayout } {
  const { st, L, xTex: made } = statistics(x, gamma, beta, stats, opts);
  const xTex = made ?? (L.tw ? flatTexture('batchNorm x', x, L.tw, BN_TEXTURE_CACHE_BYTES) : x);
  const relu = !!opts.relu;
  const y = empty(x.shape, 'f32', 'batchNorm');
  const n = L.G * L.rowBlocks * L.Cv;
  const res = opts.residual;
  const resArg = res && L.tw ? flatTexture('batchNorm residual', res, L.tw, BN_TEXTURE_CACHE_BYTES) : res;
  normalizeKernel(L.vec, relu, !!res, L.tw).launch({ n, Cv: L.Cv, Rg: L.Rg, rowBlocks: L.rowBlocks, x: xTex, stats: st, beta, ...(resArg ? { residual: resArg } : {}), y }, { threads: n });
  return { y, st, L };
}

/**
 * batchNorm's statistics alone, for an op that applies them itself as it reads x (conv2d's batchNorm prologue,
 * kernels/batchnorm-conv.ts): st [G * 4, C] (per group shift, dmean, invstd, gamma * invstd) and the layout of its
 * sums; training also moves the running statistics, as batchNorm does. The caller disposes st.
 */
export function batchNormStatistics(x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, opts: BatchNormOptions): { st: Tensor; L: BatchNormLayout } {
  const { st, L } = statistics(x, gamma, beta, stats, opts);
  return { st, L };
}

/** xTex: x's operand texture where the statistics pass made one (else null: moments or eval mode needed none). */
function statistics(x: Tensor, gamma: Tensor, beta: Tensor, stats: BatchNormStats | null, opts: BatchNormOptions): { st: Tensor; L: Layout; xTex: GPUTextureView | null } {
  const C = validate(x, gamma, beta, stats, opts);
  const op = 'batchNorm';
  const momentum = opts.momentum ?? 0.1;
  const eps = opts.eps ?? 1e-5;
  // eval mode normalizes every row with the running statistics: groups change nothing there
  const vec = C % 4 === 0;
  const bnRecord = batchNormTuning({ textures: opts.textures });
  const tw = vec && bnRecord.textures ? flatTextureWidth(x) : 0;
  const L = layoutOf(x.size / C, C, opts.training ? opts.groups ?? 1 : 1, reduceTuning({ ...bnRecord.reduce, ...opts.tuning }, op), tw);
  let xTex: GPUTextureView | null = null;
  const st = empty([L.G * 4, C], 'f32', op); // per group: shift, dmean (mean = shift + dmean), invstd, gamma * invstd
  if (opts.training) {
    const running = !!stats;
    const finish = { gamma, stats: st, ...(running ? { runningMean: stats!.runningMean, runningVar: stats!.runningVar } : {}) };
    // moments that x's producer wrote (conv2d's epilogue) stand in for x when their blocks do not straddle groups
    const m = x.hasMoments ? x.takeMoments()! : null;
    if (m && L.Rg % m.rowsPerPartial === 0) {
      const Lm = layoutOf(m.partials.shape[0], C, L.G, L.tuning);
      reduceLaunch(Lm, { pass: 'forward', moments: true, relu: false, running, uniforms: reduceUniforms(Lm, momentum, eps, true, m.rowsPerPartial), data: { mom: m.partials }, finish });
    } else {
      if (tw) xTex = flatTexture('batchNorm x', x, tw, BN_TEXTURE_CACHE_BYTES);
      reduceLaunch(L, { pass: 'forward', relu: false, running, uniforms: reduceUniforms(L, momentum, eps, true), data: { x: xTex ?? x }, finish });
    }
    m?.partials.dispose();
  } else {
    evalStatsKernel.launch({ C, eps, runningMean: stats!.runningMean, runningVar: stats!.runningVar, gamma, stats: st }, [Math.ceil(C / 64)]);
  }
  return { st, L, xTex };
}

/**
 * The sums of batchNorm's training backward, already made by the op that produced dy (conv2d's dx epilogue,
 * kernels/batchnorm-conv.ts): partial rows [G * tilesPerGroup, 2, C] of sum(g) and sum(g * (x - mean)), with g
 * dy masked by the ReLU.
 */
export interface BatchNormSums {
  part: Tensor;
  tilesPerGroup: number;
}

/**
 * batchNorm's training backward (x, gamma, beta; null for an unwanted one) for a fused op that recorded the
 * forward itself (batchNormForward): with `sums` only their finishing dispatch, not the pass over x and dy.
 * reluBeta: beta where the forward had the ReLU.
 */
export function batchNormBackwardFromSums(L: BatchNormLayout, dy: Tensor, x: Tensor, st: Tensor, reluBeta: Tensor | null, wants: boolean[], sums: BatchNormSums): (Tensor | null)[] {
  if (!L.vec || sums.part.rank !== 3 || sums.part.shape[0] !== L.G * sums.tilesPerGroup || sums.part.shape[1] !== 2 || sums.part.shape[2] !== L.C) {
    throw new Error(`batchNorm.backward: sums ${fmtShape(sums.part.shape)} do not match ${L.G} groups of ${sums.tilesPerGroup} partial rows of ${L.C} channels (channels in quads)`);
  }
  return batchNormBackward(L, dy, x, st, reluBeta, true, wants, sums);
}

/** reluBeta: beta when the forward had the fused ReLU (its mask is recomputed), else null. */
function batchNormBackward(L: Layout, dy: Tensor, x: Tensor, st: Tensor, reluBeta: Tensor | null, training: boolean, wants: boolean[], sums: BatchNormSums | null = null): (Tensor | null)[] {
  const op = 'batchNorm.backward';
  const [wantX, wantGamma, wantBeta] = wants;
  let dgamma: Tensor | null = null;
  let dbeta: Tensor | null = null;
  let coef: Tensor;
  const relu = !!reluBeta;
  // both passes read x and dy: one copy of each into a texture serves both (with sums, only dx's pass reads them)
  const [xArg, dyArg] = L.tw && (!sums || wantX) ? [flatTexture('batchNorm x', x, L.tw, BN_TEXTURE_CACHE_BYTES), flatTexture('batchNorm dy', dy, L.tw, BN_TEXTURE_CACHE_BYTES)] : [x, dy];
  const data: Record<string, Tensor | GPUTextureView> = { x: xArg, dy: dyArg, stats: st, ...(reluBeta ? { beta: reluBeta } : {}) };
  if ((training && wantX) || wantGamma || wantBeta) {
    dgamma = empty([L.C], 'f32', op);
    dbeta = empty([L.C], 'f32', op);
    coef = empty([L.G * 2, L.C], 'f32', op);
    if (sums) {
      // the partials' rows stand for the chunks of the finishing dispatch
      const Ls = { ...L, chunks: sums.tilesPerGroup };
      reduceKernel({ pass: 'backward', fromPartials: true, moments: false, final: true, vec: L.vec, relu: false, running: false, wg: L.tuning.workgroupSize, tree: L.tuning.tree, tw: 0 })
        .launch({ ...reduceUniforms(Ls, 0, 0, training), stats: st, part: sums.part, dgamma, dbeta, coef }, [L.blocks, 1]);
    } else {
      reduceLaunch(L, {
        pass: 'backward', relu, running: false,
        uniforms: reduceUniforms(L, 0, 0, training),
        data,
        finish: { dgamma, dbeta, coef },
      });
    }
  } else coef = zeros([L.G * 2, L.C]); // eval mode: dx = scale * dy
  let dx: Tensor | null = null;
  if (wantX) {
    dx = empty(x.shape, 'f32', op);
    const n = L.G * L.rowBlocks * L.Cv;
    applyGradKernel(L.vec, relu, L.tw).launch({ n, Cv: L.Cv, Rg: L.Rg, rowBlocks: L.rowBlocks, ...data, coef, dx }, { threads: n });
  }
  coef.dispose();
  return [dx, wantGamma ? dgamma : null, wantBeta ? dbeta : null];
}

// ---- float64 reference -----------------------------------------------------------------------------------

export interface RefBatchNormOptions {
  training: boolean;
  eps?: number;
  relu?: boolean;
  /** eval mode reads these */
  runningMean?: Arr;
  runningVar?: Arr;
  /** training: statistics per this many equal parts of the leading axis (see BatchNormOptions.groups) */
  groups?: number;
}

/** The leading-axis parts of x, each an Arr of its own. */
function refGroups(x: Arr, G: number): Arr[] {
  const n = x.data.length / G;
  return [...Array(G).keys()].map((g) => ({ data: x.data.slice(g * n, (g + 1) * n), shape: [x.shape[0] / G, ...x.shape.slice(1)] }));
}

function refJoin(parts: Arr[], shape: number[]): Arr {
  const data = new Float64Array(parts.reduce((n, p) => n + p.data.length, 0));
  let at = 0;
  for (const p of parts) (data.set(p.data, at), (at += p.data.length));
  return { data, shape: [...shape] };
}

// groups > 1 is, by definition, the ungrouped op on each part: outputs joined, parameter gradients summed
const grouped = (o: RefBatchNormOptions) => o.training && (o.groups ?? 1) > 1;

function refChannelStats(x: Arr, o: RefBatchNormOptions): { C: number; R: number; mean: Float64Array; invstd: Float64Array } {
  const C = x.shape[x.shape.length - 1];
  const R = x.data.length / C;
  const eps = o.eps ?? 1e-5;
  const mean = new Float64Array(C);
  const variance = new Float64Array(C);
  if (o.training) {
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) mean[c] += x.data[r * C + c] / R;
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) variance[c] += (x.data[r * C + c] - mean[c]) ** 2 / R;
  } else {
    mean.set(o.runningMean!.data);
    variance.set(o.runningVar!.data);
  }
  return { C, R, mean, invstd: variance.map((v) => 1 / Math.sqrt(v + eps)) };
}

export const ref = {
  batchNorm(x: Arr, gamma: Arr, beta: Arr, o: RefBatchNormOptions): Arr {
    if (grouped(o)) return refJoin(refGroups(x, o.groups!).map((xg) => ref.batchNorm(xg, gamma, beta, { ...o, groups: 1 })), x.shape);
    const { C, R, mean, invstd } = refChannelStats(x, o);
    const y = new Float64Array(x.data.length);
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) {
      const v = gamma.data[c] * (x.data[r * C + c] - mean[c]) * invstd[c] + beta.data[c];
      y[r * C + c] = o.relu ? Math.max(v, 0) : v;
    }
    return { data: y, shape: [...x.shape] };
  },
  /** [dx, dgamma, dbeta] */
  batchNormBackward(x: Arr, gamma: Arr, beta: Arr, dy: Arr, o: RefBatchNormOptions): [Arr, Arr, Arr] {
    if (grouped(o)) {
      const dys = refGroups(dy, o.groups!);
      const parts = refGroups(x, o.groups!).map((xg, g) => ref.batchNormBackward(xg, gamma, beta, dys[g], { ...o, groups: 1 }));
      const sum = (k: 1 | 2) => ({ data: parts.map((p) => p[k].data).reduce((a, b) => a.map((v, i) => v + b[i])), shape: [...gamma.shape] });
      return [refJoin(parts.map((p) => p[0]), x.shape), sum(1), sum(2)];
    }
    const { C, R, mean, invstd } = refChannelStats(x, o);
    const y = ref.batchNorm(x, gamma, beta, o).data;
    const g = dy.data.map((v, i) => (o.relu && !(y[i] > 0) ? 0 : v));
    const xhat = x.data.map((v, i) => (v - mean[i % C]) * invstd[i % C]);
    const dgamma = new Float64Array(C);
    const dbeta = new Float64Array(C);
    for (let i = 0; i < g.length; i++) {
      dgamma[i % C] += g[i] * xhat[i];
      dbeta[i % C] += g[i];
    }
    const dx = new Float64Array(x.data.length);
    for (let i = 0; i < dx.length; i++) {
      const c = i % C;
      dx[i] = o.training
        ? (gamma.data[c] * invstd[c] / R) * (R * g[i] - dbeta[c] - xhat[i] * dgamma[c])
        : gamma.data[c] * invstd[c] * g[i];
    }
    return [{ data: dx, shape: [...x.shape] }, { data: dgamma, shape: [C] }, { data: dbeta, shape: [C] }];
  },
  /** The running statistics after one training step on x (unbiased variance, PyTorch's convention); per group in order. */
  updateRunning(runningMean: Arr, runningVar: Arr, x: Arr, momentum = 0.1, groups = 1): [Arr, Arr] {
    if (groups > 1) {
      let rs: [Arr, Arr] = [runningMean, runningVar];
      for (const xg of refGroups(x, groups)) rs = ref.updateRunning(rs[0], rs[1], xg, momentum);
      return rs;
    }
    const C = x.shape[x.shape.length - 1];
    const R = x.data.length / C;
    const mean = new Float64Array(C);
    const m2 = new Float64Array(C);
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) mean[c] += x.data[r * C + c] / R;
    for (let r = 0; r < R; r++) for (let c = 0; c < C; c++) m2[c] += (x.data[r * C + c] - mean[c]) ** 2;
    const rm = runningMean.data.map((v, c) => (1 - momentum) * v + momentum * mean[c]);
    const rv = runningVar.data.map((v, c) => (1 - momentum) * v + momentum * (m2[c] / (R - 1)));
    return [{ data: rm, shape: [C] }, { data: rv, shape: [C] }];
  },
};
