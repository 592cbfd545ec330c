// 2-D convolution on NHWC activations and HWIO weights, with backward to input, weight and bias, and the float64
// reference. Every kernel is a GEMM whose operands are gathered on the fly (no im2col buffer):
//   forward   y[m, co]  = sum_k xpatch[m, k] · w[k, co]     m = (n, oh, ow), k = (kh, kw, ci)
//   dx        dx[m, ci] = sum_k dypatch[m, k] · wT[k, ci]   m = (n, ih, iw), k = (kh, kw, co), wT = w with ci/co swapped
//   dW        dW[r, co] = sum_m xpatch[m, r] · dy[m, co]    r = (kh, kw, ci), split over chunks of m and summed
//
// One template, three variants of the inner loop (ConvTuning.variant), chosen per adapter (tuneConv() in
// kernels/conv2d-tune.ts measures them) or per call (Conv2dOptions.tuning):
// - 'subgroups': lanes of a subgroup each load a different row, as vec4 along channels (contiguous in NHWC/HWIO),
//   and share them by subgroupBroadcast; every lane keeps a register block of rows x 4 columns. Nothing is staged
//   in workgroup memory. Shaped for lavapipe, where every buffer load whose address is not a compile-time constant
//   becomes a per-lane loop of scalar loads, ALU work and shuffles are cheap, and workgroup memory is barely
//   cheaper than a buffer. Narrow layers (few output channels) split the lanes between rows and columns.
//   With ConvTuning.textures the source image and the weight (dW: x and dy) are read through operand textures
//   (engine/textures.ts), which lavapipe fetches for all lanes with vector loads.
//   Needs subgroups of width 4, 8 or 16 (wider ones would need SG x RB accumulator rows per lane).
// - 'portable': the same kernels with every lane loading the shared rows itself (no subgroups needed).
// - 'tiled': the GPU peers' implicit GEMM (tfjs conv2d_mm, ORT conv2d_mm, Burn): a workgroup stages a tile of
//   each operand in workgroup memory (vec4 loads along channels), then every invocation accumulates a register
//   block from it. Any subgroup width or none.
// Channel counts that are not multiples of 4 take scalar loads with bounds checks; the RGB stem (Cin % 4 != 0,
// Cout % 4 == 0) is padded to 4 channels instead. Shapes, kernel size, stride, padding and bias are uniforms: one
// pipeline per (variant, alignment, block) serves every layer of a network, which matters on lavapipe where each
// pipeline costs seconds of LLVM time.

import { kernel, type KernelDecl, type BindingDecl } from '../engine/kernel.ts';
import { grid1d } from '../engine/recorder.ts';
import { operandTexture, flatTexture, fitsOperandTexture, flatTextureWidth } from '../engine/textures.ts';
import { gpu, isLavapipe } from '../engine/device.ts';
import { tuningFor } from '../engine/tuning.ts';
import { Tensor, empty, zeros, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { sum } from './reduce.ts';
import { reluBackward } from './elementwise.ts';
import { directSuits, directForward, directWeightGrad } from './conv2d-direct.ts';
import { convOutSize, type ConvGeom } from './conv2d-geom.ts';

export { convOutSize, type ConvGeom };
import type { Arr } from '../engine/ref.ts';

// ---- tuning: which kernels and which blocks ---------------------------------------------------------------

/** Register blocks of the 'subgroups' and 'portable' kernels. fwd/dx: a lane group computes SG*RB rows x SG*4*CB columns. */
export interface ConvTiles {
  RB: number;
  CB: number;
  /** dW: row quads per step (SG / RQ pixels per step), column quads per lane, pixel steps per iteration (fetched before their products) */
  RQ: number;
  dwCB: number;
  U: number;
  /** fwd/dx on narrow layers: rows a lane accumulates (RB = narrowRows / GQ blocks); 0 turns the narrow variant off */
  narrowRows: number;
}

/**
 * Tiles of the 'tiled' kernels. fwd/dx: a workgroup computes TM rows x TN columns, stepping TK channels of one tap
 * at a time; dW: TM rows (kh, kw, ci) x TN columns, stepping TK output pixels. Each invocation keeps RM rows x CQ
 * column quads, so a workgroup has (TM / RM) * (TN / 4 / CQ) invocations.
 */
export interface TiledTiles {
  TM: number;
  TN: number;
  TK: number;
  RM: number;
  CQ: number;
}

export type ConvVariant = 'subgroups' | 'portable' | 'tiled';

/** conv2d's per-device tuning record (engine/tuning.ts, family 'conv2d'). */
export interface ConvTuning {
  variant: ConvVariant;
  /**
   * Layers with 1-3 input channels (stems): 'direct' (kernels/conv2d-direct.ts) or 'gemm' (the variant's GEMM,
   * channels padded to 4). Unset in a record: fewChannelsDefault() (convTuning() fills it in). dx always takes the GEMM: a stem's input needs no gradient.
   */
  fewChannels?: 'direct' | 'gemm';
  /**
   * 'subgroups' / 'portable' kernels: read the source image and the weight of aligned layers through operand
   * textures (engine/textures.ts) instead of storage buffers. Unset in a record: texturesDefault().
   */
  textures?: boolean;
  /** blocks of the 'subgroups' / 'portable' kernels */
  tiles: ConvTiles;
  /** blocks of the 'tiled' kernels */
  tiled: TiledTiles;
}

/** A call's overrides: any field, and any part of the block records. */
export interface ConvTuningOverrides {
  variant?: ConvVariant;
  fewChannels?: 'direct' | 'gemm';
  textures?: boolean;
  tiles?: Partial<ConvTiles>;
  tiled?: Partial<TiledTiles>;
}

/**
 * Ops run on the GEMM's result before it is stored, declared with the launch: y = conv(x, w) + bias + add, then
 * max(y, 0) with relu. Each kernel applies them in its epilogue, so the sum and the ReLU cost no pass over y
 * (an inference forward with BatchNorm folded into the convs is conv -> [+ residual] -> ReLU throughout).
 * Differentiable: the backward masks dy by y > 0 and hands the masked gradient to `add` as well.
 */
export interface ConvEpilogue {
  /** a tensor of the output's shape [N, OH, OW, Cout] (f32), added after the bias (a residual connection) */
  add?: Tensor;
  /** max(value, 0) after the bias and the addition */
  relu?: boolean;
}

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
  /** ops applied in the kernel's epilogue (ConvEpilogue); none by default */
  epilogue?: ConvEpilogue;
  /** kernel choice for this call (and its backward), over the device's record; for tests, benchmarks and tuners */
  tuning?: ConvTuningOverrides;
  /**
   * Also write the output's per-channel moments in the GEMM's epilogue and attach them to it (Tensor.attachMoments),
   * so that a batchNorm reading this output takes its statistics from them instead of a pass over the output.
   * Where the kernel cannot (the tiled and direct kernels, a partial last row tile), nothing is attached and
   * batchNorm computes the statistics itself.
   */
  moments?: boolean;
}

/**
 * For subgroups of 4 or 8 lanes (and the portable kernels, which cap the blocks themselves). CB 2 applies where a
 * layer has at least SG * 2 output quads (64 channels at 8 lanes); dW fetches U = 2 pixel steps per iteration.
 */
export const DEFAULT_CONV_TILES: ConvTiles = { RB: 4, CB: 2, RQ: 8, dwCB: 2, U: 2, narrowRows: 16 };
/**
 * For 16 lanes (lavapipe with LP_NATIVE_VECTOR_WIDTH=512): a lane holds SG * RB accumulator rows, so RB halves to
 * keep the same register footprint; dW keeps 8 row quads (2 pixels per step) with one column quad, unrolled twice.
 */
export const DEFAULT_CONV_TILES_16: ConvTiles = { RB: 2, CB: 1, RQ: 8, dwCB: 1, U: 2, narrowRows: 16 };
/** 128 invocations, 8 KiB of workgroup memory: inside every limit of WebGPU's defaults and SwiftShader's. */
export const DEFAULT_TILED_TILES: TiledTiles = { TM: 64, TN: 64, TK: 16, RM: 4, CQ: 2 };

/** The adapter's subgroup width where the subgroup kernels can use it (4, 8 or 16), else 0. */
export function convSubgroupWidth(): number {
  const c = gpu('conv2d');
  const info: any = (c.adapter as any).info ?? {};
  const width = info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : 0;
  return c.hasSubgroups && (width === 4 || width === 8 || width === 16) ? width : 0;
}

/**
 * The record an adapter starts with: the subgroup kernels on lavapipe, where they were measured to win; the tiled
 * kernel everywhere else (GPUs with 32 or 64 lanes or none, and SwiftShader, whose shader compiler does not finish
 * the narrow subgroup and portable kernels in minutes). tuneConv() may pick otherwise by measurement.
 */
export function defaultConvTuning(): ConvTuning {
  const sg = convSubgroupWidth();
  return {
    variant: sg && isLavapipe() ? 'subgroups' : 'tiled',
    fewChannels: fewChannelsDefault(),
    textures: texturesDefault(),
    tiles: sg >= 16 ? DEFAULT_CONV_TILES_16 : DEFAULT_CONV_TILES,
    tiled: DEFAULT_TILED_TILES,
  };
}

/**
 * The direct stem kernels where they were measured to win (lavapipe: forward 2x, dW 3x on the 1 -> 16 stem); the
 * GEMM elsewhere, where they have not been measured (SwiftShader did not finish compiling the page's 3 -> 5
 * channel check in 180 s with them).
 */
export function fewChannelsDefault(): 'direct' | 'gemm' {
  return isLavapipe() ? 'direct' : 'gemm';
}

/**
 * Operand textures for the lane kernels where they were measured to win (lavapipe, which fetches a texel for all
 * lanes with vector loads: `npx tsx bench/step-fusion-ab.ts 12 --what textures`, `bench/conv-ab.ts`); storage
 * buffers elsewhere until measured (tuneConv() times both).
 */
export function texturesDefault(): boolean {
  return isLavapipe();
}

/** The tuning one call uses: the device's record with the call's overrides. */
export function convTuning(over?: ConvTuningOverrides): ConvTuning {
  const base = tuningFor<ConvTuning>('conv2d', defaultConvTuning);
  // a record written before fewChannels or textures existed (a tune cache) takes the adapter's default for them
  const fewChannels = over?.fewChannels ?? base.fewChannels ?? fewChannelsDefault();
  const textures = over?.textures ?? base.textures ?? texturesDefault();
  if (!over) return base.fewChannels && base.textures !== undefined ? base : { ...base, fewChannels, textures };
  return {
    variant: over.variant ?? base.variant,
    fewChannels,
    textures,
    tiles: { ...base.tiles, ...over.tiles },
    tiled: { ...base.tiled, ...over.tiled },
  };
}

/** convTuning(), checked against this device before an op allocates anything (so that a refusal leaks nothing). */
function usableTuning(over?: ConvTuningOverrides): ConvTuning {
  const t = convTuning(over);
  if (t.variant === 'tiled') {
    tiledShape(t.tiled, false);
    tiledShape(t.tiled, true);
  } else if (t.variant === 'subgroups') lanesFor(t);
  else if (t.variant !== 'portable') throw new Error(`conv2d: unknown variant '${t.variant}' (expected 'subgroups', 'portable' or 'tiled')`);
  if (t.fewChannels !== undefined && t.fewChannels !== 'direct' && t.fewChannels !== 'gemm') {
    throw new Error(`conv2d: unknown fewChannels '${t.fewChannels}' (expected 'direct' or 'gemm')`);
  }
  if (typeof t.textures !== 'boolean') throw new Error(`conv2d: textures must be true or false, got ${String(t.textures)}`);
  return t;
}

// ---- lanes: real subgroups of a fixed width, or emulated ones ---------------------------------------------

interface Lanes {
  /** lanes that share loaded rows */
  SG: number;
  /** true: share through subgroupBroadcast; false: every lane loads the shared rows itself */
  subgroups: boolean;
  /** lane groups per workgroup (only without subgroups, where groups are independent) */
  G: number;
}

function lanesFor(t: ConvTuning): Lanes {
  if (t.variant === 'portable') return { SG: 8, subgroups: false, G: 8 };
  const width = convSubgroupWidth();
  if (!width) {
    const info: any = (gpu('conv2d').adapter as any).info ?? {};
    throw new Error(`conv2d: the 'subgroups' variant needs subgroups of width 4, 8 or 16 (adapter: ${info.subgroupMinSize}..${info.subgroupMaxSize}); use 'portable' or 'tiled'`);
  }
  return { SG: width, subgroups: true, G: 1 };
}

const range = (n: number) => [...Array(n).keys()];
const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const XYZW = 'xyzw';
/** Lines of generated WGSL, indented. */
const lines = (indent: number, ls: (string | false)[]) => ls.filter((l): l is string => l !== false).map((l) => ' '.repeat(indent) + l).join('\n');

// ---- the template: uniforms, bindings and the parts every variant shares ----------------------------------

/**
 * fwd and dx: rows decode as (n, r, q) over [dh, dw]; the source image (x, or dy for dx) is [sh, sw] with ck
 * channels (kq quads), the output has cn channels (nq quads); dx's output image is [th, tw].
 */
const GEMM_UNIFORMS = {
  rows: 'u32', tiles: 'u32', rowTiles: 'u32', colTiles: 'u32',
  dh: 'u32', dw: 'u32', sh: 'i32', sw: 'i32',
  th: 'i32', tw: 'i32', ck: 'u32', cn: 'u32',
  kq: 'u32', nq: 'u32', kh: 'i32', kw: 'i32',
  s: 'i32', pad: 'i32', hasBias: 'u32',
} as const;

/** dW: rows (kh, kw, ci) in rqt quads, columns cout in nq quads; the pixels of each chunk are summed. */
const DW_UNIFORMS = {
  tiles: 'u32', rowTiles: 'u32', colTiles: 'u32', perChunk: 'u32',
  total: 'u32', H: 'i32', W: 'i32', OH: 'u32',
  OW: 'u32', cin: 'u32', cout: 'u32', cq: 'u32',
  nq: 'u32', rqt: 'u32', kw: 'i32', s: 'i32',
  pad: 'i32', wsize: 'u32',
} as const;

function gemmBindings(aligned: boolean, addend: boolean, moments = false): Record<string, BindingDecl> {
  const T = aligned ? 'vec4<f32>' : 'f32';
  // bias is bound to the weight again when there is none (hasBias = 0)
  const b: Record<string, BindingDecl> = { a: `read ${T}`, b: `read ${T}`, bias: `read ${T}` };
  if (addend) b.addend = `read ${T}`;
  b.y = `rw ${T}`;
  if (moments) b.mom = `rw ${T}`;
  return b;
}

function dwBindings(aligned: boolean) {
  const T = aligned ? 'vec4<f32>' : 'f32';
  return { x: `read ${T}`, dy: `read ${T}`, out: `rw ${T}` } as const;
}

/**
 * Quad loads and stores along channels: one vec4 where the channel count is a multiple of 4, else four scalar
 * loads with checks (channels past the end read 0 and are not stored). Callers guard the pixel and the quad.
 */
function quadHelpers(aligned: boolean, fns: { name: string; buf: string; quads: string; count: string }[], store: { name: string; buf: string; quads: string; count: string }): string {
  const out: string[] = [];
  for (const f of fns) {
    if (aligned) out.push(`fn ${f.name}(row: u32, q: u32) -> vec4<f32> { return ${f.buf}[row * ${f.quads} + q]; }`);
    else
      out.push(`fn ${f.name}(row: u32, q: u32) -> vec4<f32> {
  var v = vec4<f32>(0.0);
  for (var j = 0u; j < 4u; j++) { let c = q * 4u + j; if (c < ${f.count}) { v[j] = ${f.buf}[row * ${f.count} + c]; } }
  return v;
}`);
  }
  if (aligned) out.push(`fn ${store.name}(row: u32, q: u32, v: vec4<f32>) { ${store.buf}[row * ${store.quads} + q] = v; }`);
  else
    out.push(`fn ${store.name}(row: u32, q: u32, v: vec4<f32>) {
  for (var j = 0u; j < 4u; j++) { let c = q * 4u + j; if (c < ${store.count}) { ${store.buf}[row * ${store.count} + c] = v[j]; } }
}`);
  return out.join('\n');
}

/** dx runs one set of row tiles per parity class (ih % s, iw % s): only taps kh = ih + pad (mod s) reach it. */
const PARITY_CLASS = `let cls = i32(rt / p.rowTiles);
  let ph = cls / p.s;
  let pw = cls % p.s;
  let kh0 = (ph + p.pad) % p.s;
  let kw0 = (pw + p.pad) % p.s;`;

/** The taps a row's sum runs over: all of them, or dx's parity class (kh0, kh0 + s, ...). */
const tapLoops = (mode: 'fwd' | 'dx') =>
  mode === 'fwd' ? 'for (var kh = 0; kh < p.kh; kh++) {\n  for (var kw = 0; kw < p.kw; kw++) {' : 'for (var kh = kh0; kh < p.kh; kh += p.s) {\n  for (var kw = kw0; kw < p.kw; kw += p.s) {';

// ---- 'subgroups' / 'portable': forward and dx -------------------------------------------------------------

interface LanesGemm {
  variant: 'lanes';
  mode: 'fwd' | 'dx';
  /** channels along k and output channels both % 4 == 0: vec4 loads and stores; else scalar loads with checks */
  aligned: boolean;
  RB: number;
  CB: number;
  /**
   * Narrow outputs (subgroups only): with fewer column quads than lanes, GQ lanes (a power of two >= the quads)
   * split the columns and the SG / GQ lane groups split the rows, reading them by subgroupShuffle. 0: one
   * column quad per lane and every row in every lane (wide layers).
   */
  GQ: number;
  lanes: Lanes;
  /** epilogue: add the matching element of `addend` (a gradient accumulated so far, or a residual) to every stored value */
  addend: boolean;
  /** epilogue, last: max(value, 0) */
  relu: boolean;
  /**
   * fwd epilogue: also write the per-channel moments (ChannelMoments) of each row tile, one block per tile. The
   * launch asks for it only where every row of every tile is a real output row.
   */
  moments: boolean;
  /** aligned: read the source image (x, or dy for dx) through an operand texture [N * sh rows, sw * ck / 4 texels] */
  texA: boolean;
  /** aligned: read the weight's vec4s through a flat texture of this many texels per row (engine/textures.ts); 0: the buffer */
  texB: number;
}

/** With subgroups the tile must be uniform (subgroupBroadcast needs uniform control flow): one group per workgroup. */
function laneTile(l: Lanes): string {
  return `let tile = ${l.G === 1 ? 'wid.x + wid.y * nwg.x' : `(wid.x + wid.y * nwg.x) * ${l.G}u + li / ${l.SG}u`};
  if (tile >= p.tiles) { return; }
  let l = ${l.subgroups ? 'sgid' : `li % ${l.SG}u`};`;
}

/**
 * Per-lane values: with subgroups a lane owns one row per block (suffix _rb) and reads the others' by broadcast;
 * without, a lane computes every row of the block itself (suffix _rb_r).
 */
function rowsOf(l: Lanes, rb: number): { s: string; lane: string }[] {
  return l.subgroups ? [{ s: `${rb}`, lane: 'l' }] : range(l.SG).map((r) => ({ s: `${rb}_${r}`, lane: `${r}u` }));
}

function lanesGemmDecl(v: LanesGemm): KernelDecl {
  const { mode, aligned, RB, CB, GQ, lanes: L, addend, relu, moments } = v;
  const act = (e: string, zero: string) => (relu ? `max(${e}, ${zero})` : e);
  const SG = L.SG;
  // rows a lane accumulates per block: every row (wide) or those of its lane group (narrow: r = j * RG + g)
  const RG = GQ ? SG / GQ : 1;
  const laneRows = GQ ? GQ : SG;
  const shared = (rb: number, r: number, name: string) =>
    GQ ? `subgroupShuffle(${name}${rb}, ${r * RG}u + g)` : L.subgroups ? `subgroupBroadcast(${name}${rb}, ${r}u)` : `${name}${rb}_${r}`;
  const acc = (rb: number, r: number, cb: number) => `a_${(rb * laneRows + r) * CB + cb}`;
  const allRows = range(RB).flatMap((rb) => rowsOf(L, rb).map((x) => ({ ...x, rb })));
  const cbs = range(CB);

  // (y0, x0): the patch origin in the source image at the first tap; o: the output row (-1: none)
  const decode = allRows.map(({ s, rb, lane }) =>
    lines(2, [
      `let mr${s} = rowTile * ${SG * RB}u + ${rb * SG}u + ${lane};`,
      `let m${s} = min(mr${s}, p.rows - 1u);`,
      `let n${s} = i32(m${s} / (p.dh * p.dw));`,
      `let r${s} = i32((m${s} / p.dw) % p.dh);`,
      `let q${s} = i32(m${s} % p.dw);`,
      ...(mode === 'fwd'
        ? [`let y0${s} = r${s} * p.s - p.pad;`, `let x0${s} = q${s} * p.s - p.pad;`, `let o${s} = select(-1, i32(mr${s}), mr${s} < p.rows);`]
        : [
            // dy rows of the class's first tap; each further tap (kh += s) is one row up
            `let ih${s} = r${s} * p.s + ph;`,
            `let iw${s} = q${s} * p.s + pw;`,
            `let y0${s} = (ih${s} + p.pad - kh0) / p.s;`,
            `let x0${s} = (iw${s} + p.pad - kw0) / p.s;`,
            `let o${s} = select(-1, (n${s} * p.th + ih${s}) * p.tw + iw${s}, mr${s} < p.rows && ih${s} < p.th && iw${s} < p.tw);`,
          ]),
      `let nb${s} = n${s} * p.sh;`,
    ]),
  );
  const columns = GQ
    ? lines(2, [`let cq0 = l % ${GQ}u;`, `let cl0 = min(cq0, p.nq - 1u);`, `let g = l / ${GQ}u;`])
    : lines(2, cbs.flatMap((cb) => [`let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;`, `let cl${cb} = min(cq${cb}, p.nq - 1u);`]));
  const tapAddress = allRows.map(({ s }) => {
    const [yy, xx] = mode === 'fwd' ? [`y0${s} + kh`, `x0${s} + kw`] : [`y0${s} - (kh - kh0) / p.s`, `x0${s} - (kw - kw0) / p.s`];
    if (v.texA) return lines(4, [
      `let yy${s} = ${yy}; let xx${s} = ${xx};`,
      `let in${s} = yy${s} >= 0 && yy${s} < p.sh && xx${s} >= 0 && xx${s} < p.sw;`,
      `let ty${s} = u32(select(0, nb${s} + yy${s}, in${s})); let tx${s} = u32(select(0, xx${s}, in${s})) * p.kq;`,
    ]);
    return lines(4, [
      `let yy${s} = ${yy}; let xx${s} = ${xx};`,
      `let ab${s} = select(-1, (nb${s} + yy${s}) * p.sw + xx${s}, yy${s} >= 0 && yy${s} < p.sh && xx${s} >= 0 && xx${s} < p.sw);`,
      `let ai${s} = u32(max(ab${s}, 0)) * ${aligned ? 'p.kq' : 'p.ck'};`,
    ]);
  });
  const loadRows = allRows.map(({ s }) => {
    if (v.texA) return `      let av${s} = select(vec4<f32>(0.0), textureLoad(a, vec2<u32>(tx${s} + q, ty${s})), in${s});`;
    if (aligned) return `      let av${s} = select(vec4<f32>(0.0), a[ai${s} + q], ab${s} >= 0);`;
    const ld = (j: number) => `select(0.0, a[ai${s} + min(q * 4u + ${j}u, p.ck - 1u)], ab${s} >= 0 && q * 4u + ${j}u < p.ck)`;
    return `      let av${s} = vec4<f32>(${range(4).map(ld).join(', ')});`;
  });
  // rows past the last channel multiply zeros; clamping keeps their (finite) weight reads in bounds
  const loadCols = range(4).flatMap((kk) => {
    const krow = aligned ? `kb + q * 4u + ${kk}u` : `kb + min(q * 4u + ${kk}u, p.ck - 1u)`;
    return cbs.map((cb) =>
      v.texB
        ? `      let bi${kk}_${cb} = (${krow}) * p.nq + cl${cb}; let b${kk}_${cb} = textureLoad(b, vec2<u32>(bi${kk}_${cb} % ${v.texB}u, bi${kk}_${cb} / ${v.texB}u));`
        : aligned
        ? `      let b${kk}_${cb} = b[(${krow}) * p.nq + cl${cb}];`
        : `      let b${kk}_${cb} = vec4<f32>(${range(4).map((j) => `b[(${krow}) * p.cn + min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')});`,
    );
  });
  const fmas = range(RB).flatMap((rb) =>
    range(laneRows).map((r) =>
      [
        `      { let v = ${shared(rb, r, 'av')};`,
        ...range(4).flatMap((kk) => cbs.map((cb) => `        ${acc(rb, r, cb)} = fma(vec4<f32>(v.${XYZW[kk]}), b${kk}_${cb}, ${acc(rb, r, cb)});`)),
        '      }',
      ].join('\n'),
    ),
  );
  // a lane keeps its column quads; row r's output index comes from the lane that decoded it
  const biases = cbs.map((cb) =>
    aligned
      ? `  let bias${cb} = select(vec4<f32>(0.0), bias[cl${cb}], p.hasBias != 0u);`
      : `  let bias${cb} = select(vec4<f32>(0.0), vec4<f32>(${range(4).map((j) => `bias[min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')}), p.hasBias != 0u);`,
  );
  const stores = range(RB).flatMap((rb) =>
    range(laneRows).map((r) => {
      const body = cbs.flatMap((cb) => {
        const a = acc(rb, r, cb);
        if (aligned) return [`    if (cq${cb} < p.nq) { let e = u32(o) * p.nq + cq${cb}; y[e] = ${act(`${a} + bias${cb}${addend ? ' + addend[e]' : ''}`, 'vec4<f32>(0.0)')}; }`];
        return range(4).map((j) => `    if (cq${cb} * 4u + ${j}u < p.cn) { let e = u32(o) * p.cn + cq${cb} * 4u + ${j}u; y[e] = ${act(`${a}.${XYZW[j]} + bias${cb}.${XYZW[j]}${addend ? ' + addend[e]' : ''}`, '0.0')}; }`);
      });
      return [`  { let o = ${shared(rb, r, 'o')}; if (o >= 0) {`, ...body, '  } }'].join('\n');
    }),
  );
  // a lane holds RB * laneRows rows of its column quads: their mean, then the squared deviations from it (two
  // passes over registers, no cancellation). Narrow layers split a tile's rows between the RG lane groups: they
  // merge pairwise by subgroupShuffleXor (Chan et al., equal counts), so every block is one row tile.
  const laneBlock = RB * laneRows;
  const merges: string[] = [];
  for (let step = GQ, n = laneBlock; GQ && step < SG; step *= 2, n *= 2) {
    merges.push(`    { let om = subgroupShuffleXor(mean, ${step}u); let d = om - mean; m2 = fma(d * d, vec4<f32>(${n / 2}.0), m2 + subgroupShuffleXor(m2, ${step}u)); mean = (mean + om) * 0.5; }`);
  }
  const momentStores = !moments ? [] : cbs.map((cb) => {
    const vals = range(RB).flatMap((rb) => range(laneRows).map((r) => `(${acc(rb, r, cb)} + bias${cb})`));
    const guard = GQ ? 'g == 0u && ' : '';
    const store = aligned
      ? `    if (${guard}cq${cb} < p.nq) { mom[2u * rowTile * p.nq + cq${cb}] = mean; mom[(2u * rowTile + 1u) * p.nq + cq${cb}] = m2; }`
      : range(4).map((j) => `    if (${guard}cq${cb} * 4u + ${j}u < p.cn) { mom[2u * rowTile * p.cn + cq${cb} * 4u + ${j}u] = mean.${XYZW[j]}; mom[(2u * rowTile + 1u) * p.cn + cq${cb} * 4u + ${j}u] = m2.${XYZW[j]}; }`).join('\n');
    return [
      '  {',
      `    var mean = (${vals.join(' + ')}) / ${laneBlock}.0;`,
      '    var m2 = vec4<f32>(0.0);',
      ...vals.map((x) => `    { let d = ${x} - mean; m2 = fma(d, d, m2); }`),
      ...merges,
      store,
      '  }',
    ].join('\n');
  });

  return {
    name: `conv2d.${mode}`,
    uniforms: GEMM_UNIFORMS,
    bindings: { ...gemmBindings(aligned, addend, moments), ...(v.texA ? { a: 'texture' } : {}), ...(v.texB ? { b: 'texture' } : {}) },
    workgroupSize: SG * L.G,
    enable: L.subgroups ? ['subgroups'] : [],
    body: `
  ${laneTile(L)}
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
  ${mode === 'dx' ? PARITY_CLASS : ''}
${decode.join('\n')}
${columns}
  ${range(RB * laneRows * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}
  ${tapLoops(mode)}
${tapAddress.join('\n')}
    let kb = u32(kh * p.kw + kw) * p.ck;
    for (var q = 0u; q < p.kq; q++) {
${loadRows.join('\n')}
${loadCols.join('\n')}
${fmas.join('\n')}
    }
  }
  }
${biases.join('\n')}
${stores.join('\n')}
${momentStores.join('\n')}`,
  };
}

// ---- 'subgroups' / 'portable': dW, outer products over output pixels ----------------------------------------

interface LanesDw {
  variant: 'lanes';
  /** Cin and Cout both % 4 == 0: vec4 loads and stores; else scalar loads with checks */
  aligned: boolean;
  RQ: number;
  CB: number;
  U: number;
  lanes: Lanes;
  /**
   * Narrow layers (subgroups only): GQ lanes (a power of two >= the column quads) split the columns and the
   * SG / GQ lane groups split each step's pixels, reading x by subgroupShuffle; the groups' sums are added by
   * subgroupShuffleXor at the end. 0: every lane a column quad, all pixels (wide layers).
   */
  GQ: number;
  /** aligned: read x through an operand texture [N * H rows, W * Cin / 4 texels] */
  texX: boolean;
  /** aligned: read dy through an operand texture [N * OH rows, OW * Cout / 4 texels] */
  texDy: boolean;
}

function lanesDwDecl(v: LanesDw): KernelDecl {
  const { aligned, RQ, CB, U, lanes: L, GQ } = v;
  const SG = L.SG;
  const PP = SG / RQ; // pixels per step
  const G = GQ ? SG / GQ : 1; // lane groups, each taking every G-th pixel of a step
  if (PP % G) throw new Error(`conv2d: dW's narrow split needs whole pixels per lane group (SG ${SG}, RQ ${RQ}, GQ ${GQ})`);
  const cbs = range(CB);
  // the (row quad, pixel offset) pairs a lane loads: its own with subgroups, all of its group's without
  const laneRows = L.subgroups ? [{ s: '', lane: 'l' }] : range(SG).map((r) => ({ s: `_${r}`, lane: `${r}u` }));
  const acc = (rr: number, j: number, cb: number) => `a_${(rr * 4 + j) * CB + cb}`;
  const decode = laneRows.map(({ s, lane }) =>
    lines(2, [
      `let rq${s} = min(rowTile * ${RQ}u + ${lane} % ${RQ}u, p.rqt - 1u);`,
      `let pp${s} = i32(${lane} / ${RQ}u);`,
      `let tap${s} = i32(rq${s} / p.cq);`,
      `let ciq${s} = rq${s} % p.cq;`,
      `let ky${s} = tap${s} / p.kw - p.pad;`,
      `let kx${s} = tap${s} % p.kw - p.pad;`,
    ]),
  );
  const lineRows = laneRows.map(({ s }) => lines(4, [
    `let yy${s} = oh * p.s + ky${s};`,
    `let rowOk${s} = yy${s} >= 0 && yy${s} < p.H;`,
    v.texX ? `let trow${s} = u32(select(0, n * p.H + yy${s}, rowOk${s}));` : `let xrow${s} = (n * p.H + yy${s}) * p.W;`,
  ]));
  // One iteration covers U pixel steps. Every operand of the U steps is fetched first, then each accumulator takes
  // its U * (pixels per lane group) products in a row: on lavapipe a texel fetch is a call, which spills every live
  // register, and an accumulator updated in a loop is loaded, masked and stored once per iteration, so the products
  // per accumulator between fetches are what amortizes both.
  const loadsOf = (u: number) => {
    const loads = laneRows.map(({ s }) =>
      lines(4, [
        `let ow${s}_${u} = i32(ow0) + ${u * PP} + pp${s};`,
        `let xx${s}_${u} = ow${s}_${u} * p.s + kx${s};`,
        `let ok${s}_${u} = rowOk${s} && ow${s}_${u} < i32(p.OW) && xx${s}_${u} >= 0 && xx${s}_${u} < p.W;`,
        ...(v.texX
          ? [`let av${s}_${u} = select(vec4<f32>(0.0), textureLoad(x, vec2<u32>(u32(select(0, xx${s}_${u}, ok${s}_${u})) * p.cq + ciq${s}, trow${s})), ok${s}_${u});`]
          : [`let xi${s}_${u} = u32(max(xrow${s} + xx${s}_${u}, 0));`]),
        v.texX ? false : aligned
          ? `let av${s}_${u} = select(vec4<f32>(0.0), x[xi${s}_${u} * p.cq + ciq${s}], ok${s}_${u});`
          : `let av${s}_${u} = vec4<f32>(${range(4).map((j) => `select(0.0, x[xi${s}_${u} * p.cin + min(ciq${s} * 4u + ${j}u, p.cin - 1u)], ok${s}_${u} && ciq${s} * 4u + ${j}u < p.cin)`).join(', ')});`,
      ]),
    );
    // a pixel past the row end has x = 0 in every lane that pairs with it; clamping keeps dy reads in bounds
    // the pixels of this lane's group: q-th of the step is pixel q * G + grp
    const pixel = (q: number) => (G > 1 ? `ow0 + ${u * PP}u + ${q * G}u + grp` : `ow0 + ${u * PP + q}u`);
    const dys = range(PP / G).map((q) =>
      lines(4, [
        v.texDy ? `let px${q}_${u} = min(${pixel(q)}, p.OW - 1u) * p.nq;` : `let pix${q}_${u} = dyrow + min(${pixel(q)}, p.OW - 1u);`,
        ...cbs.map((cb) =>
          v.texDy
            ? `let b${q}_${cb}_${u} = textureLoad(dy, vec2<u32>(px${q}_${u} + cl${cb}, line));`
            : aligned
            ? `let b${q}_${cb}_${u} = dy[pix${q}_${u} * p.nq + cl${cb}];`
            : `let b${q}_${cb}_${u} = vec4<f32>(${range(4).map((j) => `dy[pix${q}_${u} * p.cout + min(cl${cb} * 4u + ${j}u, p.cout - 1u)]`).join(', ')});`,
        ),
      ]),
    );
    // row r of the step: pixel q = r / RQ, row quad rr = r % RQ, read from the lane that loaded it
    const rows = range(SG / G).map((r) => {
      const q = Math.floor(r / RQ);
      const rr = r % RQ;
      const src = G > 1 ? `subgroupShuffle(av_${u}, (${q * G}u + grp) * ${RQ}u + ${rr}u)` : L.subgroups ? `subgroupBroadcast(av_${u}, ${r}u)` : `av_${r}_${u}`;
      return `    let v${r}_${u} = ${src};`;
    });
    return [...loads, ...dys, ...rows];
  };
  const products = range(RQ).flatMap((rr) =>
    range(4).flatMap((j) =>
      cbs.map((cb) => {
        const terms = range(U).flatMap((u) => range(SG / G / RQ).map((q) => `fma(vec4<f32>(v${q * RQ + rr}_${u}.${XYZW[j]}), b${q}_${cb}_${u}, `)).reverse();
        return `    ${acc(rr, j, cb)} = ${terms.join('')}${acc(rr, j, cb)}${')'.repeat(terms.length)};`;
      }),
    ),
  );
  const iteration = [...range(U).flatMap(loadsOf), ...products].join('\n');
  // the lane groups' sums of the same column quad, added pairwise
  const merge: string[] = [];
  for (let step = GQ; G > 1 && step < SG; step *= 2) {
    for (let i = 0; i < RQ * 4 * CB; i++) merge.push(`  a_${i} += subgroupShuffleXor(a_${i}, ${step}u);`);
  }
  // partial sums of this chunk: out[chunk][(kh, kw, ci)][co]
  const stores = range(RQ).map((rr) =>
    [
      `  { let rq = rowTile * ${RQ}u + ${rr}u; if (${G > 1 ? 'grp == 0u && ' : ''}rq < p.rqt) {`,
      `    let base = chunk * (p.wsize / p.cout) + (rq / p.cq) * p.cin;`,
      `    let ci0 = (rq % p.cq) * 4u;`,
      ...range(4).flatMap((j) => [
        `    if (ci0 + ${j}u < p.cin) {`,
        `      let row = base + ci0 + ${j}u;`,
        ...cbs.flatMap((cb) => {
          const a = acc(rr, j, cb);
          if (aligned) return [`      if (cq${cb} < p.nq) { out[row * p.nq + cq${cb}] = ${a}; }`];
          return range(4).map((k) => `      if (cq${cb} * 4u + ${k}u < p.cout) { out[row * p.cout + cq${cb} * 4u + ${k}u] = ${a}.${XYZW[k]}; }`);
        }),
        '    }',
      ]),
      '  } }',
    ].join('\n'),
  );
  return {
    name: 'conv2d.dW',
    uniforms: DW_UNIFORMS,
    bindings: { ...dwBindings(aligned), ...(v.texX ? { x: 'texture' } : {}), ...(v.texDy ? { dy: 'texture' } : {}) },
    workgroupSize: SG * L.G,
    enable: L.subgroups ? ['subgroups'] : [],
    body: `
  ${laneTile(L)}
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
  let chunk = rt / p.rowTiles;
${decode.join('\n')}
${G > 1
    ? lines(2, ['let cq0 = l % ' + GQ + 'u;', 'let cl0 = min(cq0, p.nq - 1u);', 'let grp = l / ' + GQ + 'u;'])
    : lines(2, cbs.flatMap((cb) => [`let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;`, `let cl${cb} = min(cq${cb}, p.nq - 1u);`]))}
  ${range(RQ * 4 * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}
  // this chunk's output lines (n, oh); perChunk counts lines here
  let L0 = chunk * p.perChunk;
  let L1 = min(L0 + p.perChunk, p.total);
  for (var line = L0; line < L1; line++) {
    let n = i32(line / p.OH);
    let oh = i32(line % p.OH);
    let dyrow = line * p.OW;
${lineRows.join('\n')}
    for (var ow0 = 0u; ow0 < p.OW; ow0 += ${PP * U}u) {
${iteration}
    }
  }
${merge.join('\n')}
${stores.join('\n')}`,
  };
}

// ---- 'tiled': forward and dx, staged in workgroup memory ---------------------------------------------------
// A workgroup owns TM rows x TN columns of the output. For each tap and each step of TK channels it stages
//   As[TM][TK / 4]  the rows' source pixels at that tap (vec4 along channels; zero outside the image)
//   Bs[TK][TN / 4]  the weights of that tap (vec4 along output channels)
// then each invocation accumulates its RM rows x CQ column quads from them. A loading invocation keeps one
// channel quad and a few fixed rows, so the rows are decoded once, before the loops.

interface TiledGemm extends TiledTiles {
  variant: 'tiled';
  mode: 'fwd' | 'dx';
  aligned: boolean;
  /** epilogue: add the matching element of `addend` to every stored value */
  addend: boolean;
  /** epilogue, last: max(value, 0) */
  relu: boolean;
}

/** Workgroup shape and per-invocation load counts of a tile; throws on a tile the device cannot run. */
function tiledShape(t: TiledTiles, dW: boolean) {
  const { TM, TN, TK, RM, CQ } = t;
  const WX = TN / (4 * CQ);
  const WY = TM / RM;
  const WG = WX * WY;
  const A = dW ? { quads: TM / 4, rows: TK } : { quads: TK / 4, rows: TM }; // the x / a tile: per row, quads
  const B = { quads: TN / 4, rows: TK };
  const bytes = 4 * (TM * TK + TK * TN);
  const lim = gpu('conv2d').info.limits;
  const maxWg = Math.min(lim.maxComputeInvocationsPerWorkgroup ?? 256, lim.maxComputeWorkgroupSizeX ?? 256);
  const maxBytes = lim.maxComputeWorkgroupStorageSize ?? 16384;
  const ints = [TM, TN, TK, RM, CQ].every((n) => Number.isInteger(n) && n > 0);
  if (!ints || TN % (4 * CQ) || TM % RM || TK % 4 || TM % 4 || (dW && RM % 4) || WG % A.quads || WG % B.quads || WG > maxWg || bytes > maxBytes) {
    throw new Error(
      `conv2d: tiled tiles ${JSON.stringify(t)} do not fit: need TN % (4*CQ) = 0, TM % RM = 0, TK and TM multiples of 4${dW ? ', RM a multiple of 4' : ''}, ` +
        `the workgroup (${WG} invocations, at most ${maxWg}) a multiple of ${A.quads} and ${B.quads}, and ${bytes} bytes of workgroup memory (at most ${maxBytes})`,
    );
  }
  return { WX, WY, WG, A, B, bytes, loadsA: Math.ceil(A.rows / (WG / A.quads)), loadsB: Math.ceil(B.rows / (WG / B.quads)) };
}

function tiledGemmDecl(v: TiledGemm): KernelDecl {
  const { mode, aligned, TM, TN, TK, RM, CQ } = v;
  const { WX, WY, WG, A, B, loadsA, loadsB } = tiledShape(v, false);
  const KQ = TK / 4;
  const NQ = TN / 4;
  const ja = range(loadsA);
  const ra = range(RM);
  const cq = range(CQ);
  const acc = (i: number, c: number) => `acc${i}_${c}`;
  const rowsOf = (j: number) => `li / ${A.quads}u + ${j * (WG / A.quads)}u`;
  // the rows this invocation loads: origin of the patch at the first tap (dx: of its parity class), in bounds?
  const decode = ja.map((j) =>
    lines(2, [
      `let ar${j} = ${rowsOf(j)};`,
      `let m${j} = min(rowTile * ${TM}u + ar${j}, p.rows - 1u);`,
      `let n${j} = i32(m${j} / (p.dh * p.dw));`,
      `let r${j} = i32((m${j} / p.dw) % p.dh);`,
      `let q${j} = i32(m${j} % p.dw);`,
      mode === 'fwd' ? `let y0${j} = r${j} * p.s - p.pad;` : `let y0${j} = (r${j} * p.s + ph + p.pad - kh0) / p.s;`,
      mode === 'fwd' ? `let x0${j} = q${j} * p.s - p.pad;` : `let x0${j} = (q${j} * p.s + pw + p.pad - kw0) / p.s;`,
      `let live${j} = ar${j} < ${TM}u && rowTile * ${TM}u + ar${j} < p.rows;`,
    ]),
  );
  const tapAddress = ja.map((j) => {
    const [yy, xx] = mode === 'fwd' ? [`y0${j} + kh`, `x0${j} + kw`] : [`y0${j} - (kh - kh0) / p.s`, `x0${j} - (kw - kw0) / p.s`];
    return lines(4, [
      `let yy${j} = ${yy}; let xx${j} = ${xx};`,
      `let ok${j} = live${j} && yy${j} >= 0 && yy${j} < p.sh && xx${j} >= 0 && xx${j} < p.sw;`,
      `let pix${j} = u32(max((n${j} * p.sh + yy${j}) * p.sw + xx${j}, 0));`,
    ]);
  });
  const stageA = ja.map((j) => `      if (ar${j} < ${TM}u) { As[ar${j} * ${KQ}u + aq] = select(vec4<f32>(0.0), loadA(pix${j}, min(c0 / 4u + aq, p.kq - 1u)), ok${j} && c0 + aq * 4u < p.ck); }`);
  const stageB = range(loadsB).map((j) =>
    lines(6, [
      `{ let k = li / ${NQ}u + ${j * (WG / NQ)}u;`,
      `  if (k < ${TK}u) { Bs[k * ${NQ}u + bq] = select(vec4<f32>(0.0), loadB(kb + min(c0 + k, p.ck - 1u), min(bcol, p.nq - 1u)), c0 + k < p.ck && bcol < p.nq); } }`,
    ]),
  );
  const fmas = [
    ...ra.map((i) => `      let a${i} = As[(ty * ${RM}u + ${i}u) * ${KQ}u + kq];`),
    ...range(4).flatMap((kk) => [
      ...cq.map((c) => `      let b${kk}_${c} = Bs[(kq * 4u + ${kk}u) * ${NQ}u + tx + ${c * WX}u];`),
      ...ra.flatMap((i) => cq.map((c) => `      ${acc(i, c)} = fma(vec4<f32>(a${i}.${XYZW[kk]}), b${kk}_${c}, ${acc(i, c)});`)),
    ]),
  ];
  const outRow = (i: number) =>
    mode === 'fwd'
      ? [`let mr = rowTile * ${TM}u + ty * ${RM}u + ${i}u;`, `let o = select(-1, i32(mr), mr < p.rows);`]
      : [
          `let mr = rowTile * ${TM}u + ty * ${RM}u + ${i}u;`,
          `let m = min(mr, p.rows - 1u);`,
          `let ih = i32((m / p.dw) % p.dh) * p.s + ph;`,
          `let iw = i32(m % p.dw) * p.s + pw;`,
          `let o = select(-1, (i32(m / (p.dh * p.dw)) * p.th + ih) * p.tw + iw, mr < p.rows && ih < p.th && iw < p.tw);`,
        ];
  const stores = ra.map((i) =>
    [
      '  {',
      lines(4, outRow(i)),
      `    if (o >= 0) {`,
      ...cq.map((c) => {
        const value = `${acc(i, c)} + bias${c}${v.addend ? ` + loadAddend(u32(o), col${c})` : ''}`;
        return `      if (col${c} < p.nq) { storeY(u32(o), col${c}, ${v.relu ? `max(${value}, vec4<f32>(0.0))` : value}); }`;
      }),
      '    }',
      '  }',
    ].join('\n'),
  );
  return {
    name: `conv2d.${mode}.tiled`,
    uniforms: GEMM_UNIFORMS,
    bindings: gemmBindings(aligned, v.addend),
    workgroupSize: WG,
    header: `
var<workgroup> As: array<vec4<f32>, ${TM * KQ}>;
var<workgroup> Bs: array<vec4<f32>, ${TK * NQ}>;
${quadHelpers(aligned, [{ name: 'loadA', buf: 'a', quads: 'p.kq', count: 'p.ck' }, { name: 'loadB', buf: 'b', quads: 'p.nq', count: 'p.cn' }, { name: 'loadBias', buf: 'bias', quads: 'p.nq', count: 'p.cn' }, ...(v.addend ? [{ name: 'loadAddend', buf: 'addend', quads: 'p.nq', count: 'p.cn' }] : [])], { name: 'storeY', buf: 'y', quads: 'p.nq', count: 'p.cn' })}`,
    body: `
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
  ${mode === 'dx' ? PARITY_CLASS : ''}
  // loading: channel quad aq of ${loadsA} row(s); output-channel quad bq of ${loadsB} weight row(s)
  let aq = li % ${KQ}u;
  let bq = li % ${NQ}u;
  let bcol = colTile * ${NQ}u + bq;
${decode.join('\n')}
  // computing: rows ty * ${RM} .. + ${RM - 1}, column quads tx + ${WX} * c (of ${WX} x ${WY} invocations)
  let tx = li % ${WX}u;
  let ty = li / ${WX}u;
  ${ra.flatMap((i) => cq.map((c) => `var ${acc(i, c)} = vec4<f32>(0.0);`)).join(' ')}
  ${tapLoops(mode)}
${tapAddress.join('\n')}
    let kb = u32(kh * p.kw + kw) * p.ck;
    for (var c0 = 0u; c0 < p.ck; c0 += ${TK}u) {
      workgroupBarrier();
${stageA.join('\n')}
${stageB.join('\n')}
      workgroupBarrier();
      for (var kq = 0u; kq < ${KQ}u; kq++) {
${fmas.map((l) => '  ' + l).join('\n')}
      }
    }
  }
  }
${lines(2, cq.flatMap((c) => [`let col${c} = colTile * ${NQ}u + tx + ${c * WX}u;`, `let bias${c} = select(vec4<f32>(0.0), loadBias(0u, min(col${c}, p.nq - 1u)), p.hasBias != 0u);`]))}
${stores.join('\n')}`,
  };
}

// ---- 'tiled': dW ------------------------------------------------------------------------------------------
// A workgroup owns TM rows (kh, kw, ci) x TN columns (co) of one chunk's partial sum. For each step of TK output
// pixels it stages
//   Xs[TK][TM / 4]  each pixel's input at the rows' taps (vec4 of 4 consecutive ci; zero outside the image)
//   Ds[TK][TN / 4]  dy of the same pixels
// then each invocation accumulates RM rows (RM / 4 quads) x CQ column quads.

interface TiledDw extends TiledTiles {
  variant: 'tiled';
  aligned: boolean;
}

function tiledDwDecl(v: TiledDw): KernelDecl {
  const { aligned, TM, TN, TK, RM, CQ } = v;
  const { WX, WY, WG, A, B, loadsA, loadsB } = tiledShape(v, true);
  const MQ = TM / 4;
  const NQ = TN / 4;
  const RQ = RM / 4;
  const cq = range(CQ);
  const acc = (i: number, c: number) => `acc${i}_${c}`;
  const stageX = range(loadsA).map((j) =>
    lines(4, [
      `{ let k = li / ${MQ}u + ${j * (WG / MQ)}u;`,
      `  let px = px0 + k;`,
      `  let n = i32(px / (p.OH * p.OW)); let oh = i32((px / p.OW) % p.OH); let ow = i32(px % p.OW);`,
      `  let yy = oh * p.s + ky; let xx = ow * p.s + kx;`,
      `  let ok = rowOk && px < end && yy >= 0 && yy < p.H && xx >= 0 && xx < p.W;`,
      `  if (k < ${TK}u) { Xs[k * ${MQ}u + xq] = select(vec4<f32>(0.0), loadX(u32(max((n * p.H + yy) * p.W + xx, 0)), ciq), ok); } }`,
    ]),
  );
  const stageD = range(loadsB).map((j) =>
    lines(4, [
      `{ let k = li / ${NQ}u + ${j * (WG / NQ)}u;`,
      `  let px = px0 + k;`,
      `  if (k < ${TK}u) { Ds[k * ${NQ}u + dq] = select(vec4<f32>(0.0), loadDy(min(px, p.total - 1u), min(dcol, p.nq - 1u)), px < end && dcol < p.nq); } }`,
    ]),
  );
  const fmas = [
    ...range(RQ).map((i) => `      let x${i} = Xs[k * ${MQ}u + ty * ${RQ}u + ${i}u];`),
    ...cq.map((c) => `      let d${c} = Ds[k * ${NQ}u + tx + ${c * WX}u];`),
    ...range(RQ).flatMap((i) => range(4).flatMap((j) => cq.map((c) => `      ${acc(4 * i + j, c)} = fma(vec4<f32>(x${i}.${XYZW[j]}), d${c}, ${acc(4 * i + j, c)});`))),
  ];
  // partial sums of this chunk: out[chunk][(kh, kw, ci)][co]
  const stores = range(RQ).map((i) =>
    [
      `  { let rq = rowTile * ${MQ}u + ty * ${RQ}u + ${i}u; if (rq < p.rqt) {`,
      `    let base = chunk * (p.wsize / p.cout) + (rq / p.cq) * p.cin;`,
      `    let ci0 = (rq % p.cq) * 4u;`,
      ...range(4).map((j) => `    if (ci0 + ${j}u < p.cin) {${cq.map((c) => ` if (col${c} < p.nq) { storeOut(base + ci0 + ${j}u, col${c}, ${acc(4 * i + j, c)}); }`).join('')} }`),
      '  } }',
    ].join('\n'),
  );
  return {
    name: 'conv2d.dW.tiled',
    uniforms: DW_UNIFORMS,
    bindings: dwBindings(aligned),
    workgroupSize: WG,
    header: `
var<workgroup> Xs: array<vec4<f32>, ${TK * MQ}>;
var<workgroup> Ds: array<vec4<f32>, ${TK * NQ}>;
${quadHelpers(aligned, [{ name: 'loadX', buf: 'x', quads: 'p.cq', count: 'p.cin' }, { name: 'loadDy', buf: 'dy', quads: 'p.nq', count: 'p.cout' }], { name: 'storeOut', buf: 'out', quads: 'p.nq', count: 'p.cout' })}`,
    body: `
  let tile = wid.x + wid.y * nwg.x;
  if (tile >= p.tiles) { return; }
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
  let chunk = rt / p.rowTiles;
  // loading: row quad xq (one tap, one ci quad) of ${loadsA} pixel(s); dy column quad dq of ${loadsB} pixel(s)
  let xq = li % ${MQ}u;
  let rqx = rowTile * ${MQ}u + xq;
  let rowOk = rqx < p.rqt;
  let tap = i32(min(rqx, p.rqt - 1u) / p.cq);
  let ciq = min(rqx, p.rqt - 1u) % p.cq;
  let ky = tap / p.kw - p.pad;
  let kx = tap % p.kw - p.pad;
  let dq = li % ${NQ}u;
  let dcol = colTile * ${NQ}u + dq;
  // computing: row quads ty * ${RQ} .. + ${RQ - 1}, column quads tx + ${WX} * c (of ${WX} x ${WY} invocations)
  let tx = li % ${WX}u;
  let ty = li / ${WX}u;
  ${range(RM).flatMap((i) => cq.map((c) => `var ${acc(i, c)} = vec4<f32>(0.0);`)).join(' ')}
  // this chunk's output pixels (perChunk counts pixels here)
  let start = chunk * p.perChunk;
  let end = min(start + p.perChunk, p.total);
  for (var px0 = start; px0 < end; px0 += ${TK}u) {
    workgroupBarrier();
${stageX.join('\n')}
${stageD.join('\n')}
    workgroupBarrier();
    for (var k = 0u; k < ${TK}u; k++) {
${fmas.join('\n')}
    }
  }
${lines(2, cq.map((c) => `let col${c} = colTile * ${NQ}u + tx + ${c * WX}u;`))}
${stores.join('\n')}`,
  };
}

// ---- launches ---------------------------------------------------------------------------------------------

/** The 'subgroups' / 'portable' GEMM blocks for a layer: lanes, narrow column quads GQ (0: wide), rows RB, column blocks CB. */
function lanesBlocks(t: ConvTuning, aligned: boolean, NQ: number): { L: Lanes; GQ: number; RB: number; CB: number } {
  const L = lanesFor(t);
  const tl = t.tiles;
  // odd channel counts (the RGB stem) take the scalar kernel with the smallest block: it compiles fast. Without
  // subgroups a lane keeps all of its group's rows, so the block stays small there too (GPU registers).
  const big = aligned && L.subgroups;
  // narrow layers (few output channels) split the lanes between columns and rows instead of idling most of them
  // (not at 16 lanes: there the shuffles and the per-lane loads cost twice as much and it gained nothing)
  const GQ = L.subgroups && L.SG <= 8 && tl.narrowRows > 0 && NQ <= L.SG / 2 ? nextPow2(NQ) : 0;
  const RB = GQ ? Math.max(1, Math.floor(tl.narrowRows / GQ)) : big ? tl.RB : 1;
  // a second column quad per lane only where the layer fills it: with fewer quads than SG * CB it would idle
  const CB = big && !GQ ? Math.max(1, Math.min(tl.CB, Math.floor(NQ / L.SG))) : 1;
  return { L, GQ, RB, CB };
}

/**
 * Rows per ChannelMoments block (a row tile) of the forward GEMM for this layer, or 0 where its kernel writes
 * none: the tiled kernels, and shapes whose last row tile is partial (every block must hold real rows only).
 */
function forwardMomentRows(g: ConvGeom, t: ConvTuning): number {
  if (t.variant === 'tiled') return 0;
  const { L, RB } = lanesBlocks(t, g.Cin % 4 === 0 && g.Cout % 4 === 0, Math.ceil(g.Cout / 4));
  const rows = g.N * g.OH * g.OW;
  return rows > 0 && rows % (L.SG * RB) === 0 ? L.SG * RB : 0;
}

/** Launches a forward or dx GEMM (dx: one set of row tiles per parity class of the stride). */
function runGather(mode: 'fwd' | 'dx', g: ConvGeom, a: Tensor, b: Tensor, bias: Tensor | null, out: Tensor, t: ConvTuning, addend: Tensor | null = null, moments: Tensor | null = null, relu = false): void {
  const CK = mode === 'fwd' ? g.Cin : g.Cout;
  const CN = mode === 'fwd' ? g.Cout : g.Cin;
  const S = g.stride;
  const aligned = CK % 4 === 0 && CN % 4 === 0;
  const KQ = Math.ceil(CK / 4);
  const NQ = Math.ceil(CN / 4);
  // fwd rows decode as (n, oh, ow); dx rows as (n, ih / s, iw / s) within one parity class (ih % s, iw % s)
  const dh = mode === 'fwd' ? g.OH : Math.ceil(g.H / S);
  const dw = mode === 'fwd' ? g.OW : Math.ceil(g.W / S);
  const classes = mode === 'fwd' ? 1 : S * S;
  const rows = g.N * dh * dw;
  let k;
  let rowsPerTile: number;
  let colsPerTile: number; // column quads
  let groupsPerWorkgroup = 1;
  const [sh, sw] = mode === 'fwd' ? [g.H, g.W] : [g.OH, g.OW];
  let aTex: GPUTextureView | null = null;
  let bTex: GPUTextureView | null = null;
  if (t.variant === 'tiled') {
    if (moments) throw new Error('conv2d: the tiled kernels write no moments'); // forwardMomentRows says 0 there
    k = kernel(`conv2d|${mode}|tiled|${aligned}|${!!addend}|${relu}|${JSON.stringify(t.tiled)}`, () => tiledGemmDecl({ variant: 'tiled', mode, aligned, addend: !!addend, relu, ...t.tiled }));
    rowsPerTile = t.tiled.TM;
    colsPerTile = t.tiled.TN / 4;
  } else {
    const { L, GQ, RB, CB } = lanesBlocks(t, aligned, NQ);
    // the source image as [N * sh rows, sw * CK floats]; the weight as flat vec4s
    const texA = !!t.textures && aligned && fitsOperandTexture(g.N * sh, sw * CK);
    const texB = t.textures && aligned ? flatTextureWidth(b) : 0;
    const v: LanesGemm = { variant: 'lanes', mode, aligned, RB, CB, GQ, lanes: L, addend: !!addend, relu, moments: !!moments, texA, texB };
    if (texA) aTex = operandTexture('conv2d A', a, g.N * sh, sw * CK, CONV_TEXTURE_CACHE_BYTES);
    if (texB) bTex = flatTexture('conv2d B', b, texB, CONV_TEXTURE_CACHE_BYTES);
    k = kernel(`conv2d|${JSON.stringify(v)}`, () => lanesGemmDecl(v));
    rowsPerTile = L.SG * RB;
    colsPerTile = GQ ? Infinity : L.SG * CB;
    groupsPerWorkgroup = L.G;
  }
  const rowTiles = Math.ceil(rows / rowsPerTile);
  const colTiles = Number.isFinite(colsPerTile) ? Math.ceil(NQ / colsPerTile) : 1;
  const tiles = classes * rowTiles * colTiles;
  k.launch(
    {
      rows, tiles, rowTiles, colTiles, dh, dw, sh, sw, th: g.H, tw: g.W, ck: CK, cn: CN, kq: KQ, nq: NQ, kh: g.KH, kw: g.KW, s: S, pad: g.pad,
      hasBias: bias ? 1 : 0, a: aTex ?? a, b: bTex ?? b, bias: bias ?? b, ...(addend ? { addend } : {}), y: out, ...(moments ? { mom: moments } : {}),
    },
    grid1d(Math.ceil(tiles / groupsPerWorkgroup), 1),
  );
}

// enough workgroups to keep every core (or SM) busy; more chunks only cost partial-sum traffic
const DW_TARGET_WORKGROUPS = 256;
/** Cap of the operand-texture cache (engine/textures.ts) when a conv adds a texture; as matmul's default. */
const CONV_TEXTURE_CACHE_BYTES = 256 * 2 ** 20;
const DW_MIN_PIXELS_PER_CHUNK = 64;

function weightGrad(g: ConvGeom, x: Tensor, dy: Tensor, t: ConvTuning): Tensor {
  const aligned = g.Cin % 4 === 0 && g.Cout % 4 === 0;
  const CQ = Math.ceil(g.Cin / 4);
  const NQ = Math.ceil(g.Cout / 4);
  const RQT = g.KH * g.KW * CQ;
  const wshape = [g.KH, g.KW, g.Cin, g.Cout];
  const outLines = g.N * g.OH;
  if (outLines === 0) return zeros(wshape); // an empty batch
  const pixels = outLines * g.OW;
  let k;
  let rowTiles: number;
  let colTiles: number;
  let groups = 1;
  // the lanes kernels chunk by output lines, the tiled one by pixels (it steps over pixels, not lines)
  let units: number;
  let xArg: Tensor | GPUTextureView = x;
  let dyArg: Tensor | GPUTextureView = dy;
  if (t.variant === 'tiled') {
    k = kernel(`conv2d|dW|tiled|${aligned}|${JSON.stringify(t.tiled)}`, () => tiledDwDecl({ variant: 'tiled', aligned, ...t.tiled }));
    rowTiles = Math.ceil(RQT / (t.tiled.TM / 4));
    colTiles = Math.ceil(NQ / (t.tiled.TN / 4));
    units = pixels;
  } else {
    const L = lanesFor(t);
    // narrow layers (as for fwd/dx, and as there not at 16 lanes, where it measured slower): GQ lanes per column
    // set, the other lane groups on other pixels
    const GQ = L.subgroups && L.SG <= 8 && t.tiles.narrowRows > 0 && NQ <= L.SG / 2 ? nextPow2(NQ) : 0;
    const RQ = L.subgroups ? Math.min(t.tiles.RQ, L.SG, GQ ? GQ : L.SG) : 2;
    // a second column quad per lane only pays where there are columns for it (narrow layers would idle them)
    const CB = aligned && L.subgroups && NQ > L.SG ? t.tiles.dwCB : 1;
    const texX = !!t.textures && aligned && fitsOperandTexture(g.N * g.H, g.W * g.Cin);
    const texDy = !!t.textures && aligned && fitsOperandTexture(outLines, g.OW * g.Cout);
    const v: LanesDw = { variant: 'lanes', aligned, RQ, CB, U: t.tiles.U, lanes: L, GQ, texX, texDy };
    k = kernel(`conv2d|dW|${JSON.stringify(v)}`, () => lanesDwDecl(v));
    if (texX) xArg = operandTexture('conv2d A', x, g.N * g.H, g.W * g.Cin, CONV_TEXTURE_CACHE_BYTES);
    if (texDy) dyArg = operandTexture('conv2d dy', dy, outLines, g.OW * g.Cout, CONV_TEXTURE_CACHE_BYTES);
    rowTiles = Math.ceil(RQT / RQ);
    colTiles = Math.ceil(NQ / (L.SG * CB));
    groups = L.G;
    units = outLines;
  }
  const byWork = Math.ceil((DW_TARGET_WORKGROUPS * groups) / (rowTiles * colTiles));
  const byMinSize = Math.max(1, Math.floor(pixels / DW_MIN_PIXELS_PER_CHUNK));
  let chunks = Math.max(1, Math.min(byWork, byMinSize, units));
  let perChunk = Math.ceil(units / chunks);
  if (t.variant === 'tiled') perChunk = Math.ceil(perChunk / t.tiled.TK) * t.tiled.TK; // whole steps
  chunks = Math.ceil(units / perChunk);
  const tiles = chunks * rowTiles * colTiles;
  const wsize = g.KH * g.KW * g.Cin * g.Cout;
  const partial = empty([chunks, wsize], 'f32', 'conv2d.dW');
  k.launch(
    {
      tiles, rowTiles, colTiles, perChunk, total: units, H: g.H, W: g.W, OH: g.OH, OW: g.OW, cin: g.Cin, cout: g.Cout, cq: CQ, nq: NQ, rqt: RQT,
      kw: g.KW, s: g.stride, pad: g.pad, wsize, x: xArg, dy: dyArg, out: partial,
    },
    grid1d(Math.ceil(tiles / groups), 1),
  );
  if (chunks === 1) {
    const dw = partial.share(wshape);
    partial.dispose();
    return dw;
  }
  const total = sum(partial, 0);
  partial.dispose();
  const dw = total.share(wshape);
  total.dispose();
  return dw;
}

// ---- weight transpose for dx: [KH, KW, Cin, Cout] -> [KH, KW, Cout, Cin] ---------------------------------------

const transposeKernel = () =>
  kernel('conv2d|wT', () => ({
    name: 'conv2d.wT',
    uniforms: { n: 'u32', cin: 'u32', cout: 'u32' },
    bindings: { w: 'read f32', wt: 'rw f32' },
    workgroupSize: 256,
    flat: { limit: 'p.n' },
    body: `
  let co = i % p.cout;
  let ci = (i / p.cout) % p.cin;
  let tap = i / (p.cout * p.cin);
  wt[(tap * p.cout + co) * p.cin + ci] = w[i];`,
  }));

function transposeWeight(w: Tensor, g: ConvGeom): Tensor {
  const wt = empty([g.KH, g.KW, g.Cout, g.Cin], 'f32', 'conv2d.wT');
  transposeKernel().launch({ n: w.size, cin: g.Cin, cout: g.Cout, w, wt }, { threads: w.size });
  return wt;
}

// ---- shapes and the differentiable op ------------------------------------------------------------------


function geometry(x: Tensor, w: Tensor, bias: Tensor | null, opts: Conv2dOptions): ConvGeom {
  const op = 'conv2d';
  x.assertLive(op);
  w.assertLive(op);
  bias?.assertLive(op);
  const stride = opts.stride ?? 1;
  const pad = opts.padding ?? 0;
  if (x.dtype !== 'f32' || w.dtype !== 'f32' || (bias && bias.dtype !== 'f32')) {
    throw new Error(`${op}: expected f32 tensors, got input ${x.dtype}, weight ${w.dtype}${bias ? `, bias ${bias.dtype}` : ''}`);
  }
  if (x.rank !== 4) throw new Error(`${op}: input must be 4-D [N, H, W, Cin] (NHWC), got ${fmtShape(x.shape)}`);
  if (w.rank !== 4) throw new Error(`${op}: weight must be 4-D [KH, KW, Cin, Cout] (HWIO), got ${fmtShape(w.shape)}`);
  if (!Number.isInteger(stride) || stride < 1) throw new Error(`${op}: stride must be a positive integer, got ${stride}`);
  if (!Number.isInteger(pad) || pad < 0) throw new Error(`${op}: padding must be an integer >= 0, got ${pad}`);
  const [N, H, W, Cin] = x.shape;
  const [KH, KW, wCin, Cout] = w.shape;
  if (Cin !== wCin) throw new Error(`${op}: input has ${Cin} channels but weight ${fmtShape(w.shape)} expects ${wCin} (input ${fmtShape(x.shape)} is NHWC, weight is HWIO)`);
  if (bias && (bias.rank !== 1 || bias.shape[0] !== Cout)) throw new Error(`${op}: bias must have shape [${Cout}] (the weight's Cout), got ${fmtShape(bias.shape)}`);
  const OH = convOutSize(H, KH, stride, pad);
  const OW = convOutSize(W, KW, stride, pad);
  if (KH < 1 || KW < 1 || Cout < 1 || OH < 1 || OW < 1) {
    throw new Error(`${op}: input ${fmtShape(x.shape)} is too small for kernel ${KH}x${KW} with stride ${stride} and padding ${pad}: the output would be ${OH}x${OW}`);
  }
  return { N, H, W, Cin, KH, KW, Cout, stride, pad, OH, OW };
}

// ---- few input channels (a grayscale or RGB stem): padded to a multiple of 4 -------------------------------
// The scalar (unaligned) kernels load 4 guarded floats per channel quad and run at a tenth of the vec4 ones, so a
// 1-channel stem cost as much as a 16x larger layer. Zero channels change no sum: x and w are padded to the next
// multiple of 4 channels for the vec4 kernels, and dW / dx are cut back to the real channels.

const resizeRowsKernel = () =>
  kernel('conv2d|resizeRows', () => ({
    name: 'conv2d.resizeRows',
    uniforms: { n: 'u32', inW: 'u32', outW: 'u32' },
    bindings: { x: 'read f32', y: 'rw f32' },
    workgroupSize: 256,
    flat: { limit: 'p.n' },
    body: `
  let r = i / p.outW;
  let j = i % p.outW;
  y[i] = select(0.0, x[r * p.inW + min(j, p.inW - 1u)], j < p.inW);`,
  }));

/** [rows, inW] -> [rows, outW]: the first min(inW, outW) values of each row, then zeros. */
function resizeRows(x: Tensor, rows: number, inW: number, outW: number, shape: number[]): Tensor {
  const y = empty(shape, 'f32', 'conv2d.resizeRows');
  const n = rows * outW;
  if (n > 0) resizeRowsKernel().launch({ n, inW, outW, x, y }, { threads: n });
  return y;
}

/** The geometry with Cin padded to a multiple of 4, or null where the layer runs as it is. */
function paddedGeom(g: ConvGeom): ConvGeom | null {
  return g.Cin % 4 !== 0 && g.Cout % 4 === 0 ? { ...g, Cin: Math.ceil(g.Cin / 4) * 4 } : null;
}
const padInput = (x: Tensor, g: ConvGeom, p: ConvGeom) => resizeRows(x, g.N * g.H * g.W, g.Cin, p.Cin, [g.N, g.H, g.W, p.Cin]);
// HWIO: each tap's [Cin, Cout] block is Cin·Cout contiguous floats, and the padded rows follow the real ones
const padWeight = (w: Tensor, g: ConvGeom, p: ConvGeom) => resizeRows(w, g.KH * g.KW, g.Cin * g.Cout, p.Cin * g.Cout, [g.KH, g.KW, p.Cin, g.Cout]);

/** The epilogue's addend (checked against the output's shape) and ReLU flag. */
function epilogueOf(g: ConvGeom, opts: Conv2dOptions): { add: Tensor | null; relu: boolean } {
  const e = opts.epilogue;
  if (!e) return { add: null, relu: false };
  const op = 'conv2d';
  if (opts.moments) throw new Error(`${op}: moments describe the convolution's own output and cannot be combined with an epilogue (add / relu)`);
  if (e.relu !== undefined && typeof e.relu !== 'boolean') throw new Error(`${op}: epilogue.relu must be a boolean, got ${String(e.relu)}`);
  const add = e.add ?? null;
  if (add) {
    add.assertLive(`${op} epilogue.add`);
    const want = [g.N, g.OH, g.OW, g.Cout];
    if (add.dtype !== 'f32' || add.rank !== 4 || add.shape.some((d, i) => d !== want[i])) {
      throw new Error(`${op}: epilogue.add must be f32 ${fmtShape(want)} (the output's shape), got ${add.dtype} ${fmtShape(add.shape)}`);
    }
  }
  return { add, relu: !!e.relu };
}

/** The forward launch (no tape). */
export function conv2dRaw(x: Tensor, w: Tensor, bias: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const g = geometry(x, w, bias, opts);
  const t = usableTuning(opts.tuning);
  const ep = epilogueOf(g, opts);
  const y = empty([g.N, g.OH, g.OW, g.Cout], 'f32', 'conv2d');
  if (y.size === 0) return y;
  if (t.fewChannels === 'direct' && directSuits(g, 'fwd')) {
    directForward(g, x, w, bias, y, ep.add, ep.relu);
    return y;
  }
  const p = paddedGeom(g);
  const momentRows = opts.moments ? forwardMomentRows(p ?? g, t) : 0;
  const moments = momentRows ? empty([y.size / g.Cout / momentRows, 2, g.Cout], 'f32', 'conv2d') : null;
  if (p) {
    const x4 = padInput(x, g, p);
    const w4 = padWeight(w, g, p);
    runGather('fwd', p, x4, w4, bias, y, t, ep.add, moments, ep.relu);
    x4.dispose();
    w4.dispose();
  } else runGather('fwd', g, x, w, bias, y, t, ep.add, moments, ep.relu);
  if (moments) y.attachMoments({ partials: moments, rowsPerPartial: momentRows });
  return y;
}

/**
 * Gradient of the input: a transposed gathered GEMM over dy. `opts.tuning` as for conv2d. With `addend` (a
 * gradient of x accumulated so far, [N, H, W, Cin]) the GEMM's epilogue adds it: the sum is written once, with no
 * separate accumulation pass.
 */
export function conv2dBackwardInput(dy: Tensor, w: Tensor, g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'> = {}, addend: Tensor | null = null): Tensor {
  const t = usableTuning(opts.tuning);
  if (g.N * g.H * g.W === 0) return empty([g.N, g.H, g.W, g.Cin], 'f32', 'conv2d.dx');
  const p = paddedGeom(g);
  const dx = empty([g.N, g.H, g.W, p ? p.Cin : g.Cin], 'f32', 'conv2d.dx');
  const w4 = p ? padWeight(w, g, p) : w;
  const wt = transposeWeight(w4, p ?? g);
  runGather('dx', p ?? g, dy, wt, null, dx, t, p ? null : addend);
  wt.dispose();
  if (!p) return dx;
  w4.dispose();
  const cut = resizeRows(dx, g.N * g.H * g.W, p.Cin, g.Cin, [g.N, g.H, g.W, g.Cin]);
  dx.dispose();
  if (!addend) return cut;
  // the padded stem's dx goes through a resize: its addend takes the plain sum
  const total = ew('conv2d.dx.accumulate', 'a + b', [cut, addend], cut.shape);
  cut.dispose();
  return total;
}

/** Gradient of the weight. `opts.tuning` as for conv2d. */
export function conv2dBackwardWeight(x: Tensor, dy: Tensor, g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'> = {}): Tensor {
  const t = usableTuning(opts.tuning);
  if (t.fewChannels === 'direct' && g.N * g.OH * g.OW > 0 && directSuits(g, 'dW')) return directWeightGrad(g, x, dy);
  const p = paddedGeom(g);
  if (!p) return weightGrad(g, x, dy, t);
  const x4 = padInput(x, g, p);
  const dw4 = weightGrad(p, x4, dy, t);
  x4.dispose();
  const dw = resizeRows(dw4, g.KH * g.KW, p.Cin * g.Cout, g.Cin * g.Cout, [g.KH, g.KW, g.Cin, g.Cout]);
  dw4.dispose();
  return dw;
}

/**
 * 2-D convolution of NHWC `x` [N, H, W, Cin] with HWIO `w` [KH, KW, Cin, Cout] and optional `bias` [Cout];
 * returns [N, OH, OW, Cout] with OH = floor((H + 2·padding − KH) / stride) + 1. Zero padding, dilation 1.
 */
export function conv2d(x: Tensor, w: Tensor, bias: Tensor | null = null, opts: Conv2dOptions = {}): Tensor {
  const y = conv2dRaw(x, w, bias, opts);
  const add = opts.epilogue?.add ?? null;
  const relu = !!opts.epilogue?.relu;
  if (needsGrad(x, w, bias, add)) {
    const g = geometry(x, w, bias, opts);
    const inputs = [x, w, ...(bias ? [bias] : []), ...(add ? [add] : [])];
    // dx takes over x's gradient accumulated so far (e.g. from a residual connection) and adds it in its epilogue
    record('conv2d', inputs, y, (dy, [sx, sw, sy], needs, take) => {
      // through the epilogue: the ReLU passes dy where y > 0; the addition passes it on unchanged
      const gy = relu ? reluBackward('conv2d.relu.backward', dy, sy) : dy;
      let dx: Tensor | null = null;
      if (needs[0]) {
        const prior = take(0);
        dx = conv2dBackwardInput(gy, sw, g, opts, prior);
        prior?.dispose();
      }
      const grads = [dx, needs[1] ? conv2dBackwardWeight(sx, gy, g, opts) : null];
      if (bias) grads.push(needs[2] ? sum(gy, [0, 1, 2]) : null);
      if (add) grads.push(needs[inputs.length - 1] ? gy.share() : null);
      if (relu) gy.dispose();
      return grads;
    }, relu ? [x, w, y] : [x, w]);
  }
  return y;
}

// ---- float64 reference --------------------------------------------------------------------------------

function refGeom(x: Arr, w: Arr, stride: number, pad: number): ConvGeom {
  const [N, H, W, Cin] = x.shape;
  const [KH, KW, , Cout] = w.shape;
  return { N, H, W, Cin, KH, KW, Cout, stride, pad, OH: convOutSize(H, KH, stride, pad), OW: convOutSize(W, KW, stride, pad) };
}

export const ref = {
  conv2d(x: Arr, w: Arr, bias: Arr | null, stride = 1, pad = 0): Arr {
    const g = refGeom(x, w, stride, pad);
    const { N, H, W, Cin, KH, KW, Cout, OH, OW } = g;
    const y = new Float64Array(N * OH * OW * Cout);
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++)
          for (let co = 0; co < Cout; co++) {
            let s = bias ? bias.data[co] : 0;
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * stride - pad + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * stride - pad + kw;
                if (iw < 0 || iw >= W) continue;
                for (let ci = 0; ci < Cin; ci++) s += x.data[((n * H + ih) * W + iw) * Cin + ci] * w.data[((kh * KW + kw) * Cin + ci) * Cout + co];
              }
            }
            y[((n * OH + oh) * OW + ow) * Cout + co] = s;
          }
    return { data: y, shape: [N, OH, OW, Cout] };
  },
  /** Gradients [dx, dw, dbias] for output gradient dy. */
  conv2dBackward(x: Arr, w: Arr, dy: Arr, stride = 1, pad = 0): [Arr, Arr, Arr] {
    const g = refGeom(x, w, stride, pad);
    const { N, H, W, Cin, KH, KW, Cout, OH, OW } = g;
    const dx = new Float64Array(x.data.length);
    const dw = new Float64Array(w.data.length);
    const db = new Float64Array(Cout);
    for (let n = 0; n < N; n++)
      for (let oh = 0; oh < OH; oh++)
        for (let ow = 0; ow < OW; ow++)
          for (let co = 0; co < Cout; co++) {
            const gy = dy.data[((n * OH + oh) * OW + ow) * Cout + co];
            db[co] += gy;
            for (let kh = 0; kh < KH; kh++) {
              const ih = oh * stride - pad + kh;
              if (ih < 0 || ih >= H) continue;
              for (let kw = 0; kw < KW; kw++) {
                const iw = ow * stride - pad + kw;
                if (iw < 0 || iw >= W) continue;
                for (let ci = 0; ci < Cin; ci++) {
                  const xi = ((n * H + ih) * W + iw) * Cin + ci;
                  const wi = ((kh * KW + kw) * Cin + ci) * Cout + co;
                  dx[xi] += gy * w.data[wi];
                  dw[wi] += gy * x.data[xi];
                }
              }
            }
          }
    return [{ data: dx, shape: [...x.shape] }, { data: dw, shape: [...w.shape] }, { data: db, shape: [Cout] }];
  },
};
