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
//
// Files: conv2d-tuning.ts (the per-device record and its defaults), conv2d-wgsl.ts (the template's shared parts),
// conv2d-lanes.ts ('subgroups' / 'portable'), conv2d-tiled.ts ('tiled'), conv2d-direct.ts (stems with 1-3 input
// channels); this file launches them and defines the differentiable op and its float64 reference.

import { kernel } from '../engine/kernel.ts';
import { grid1d } from '../engine/recorder.ts';
import { operandTexture, flatTexture, fitsOperandTexture, flatTextureWidth } from '../engine/textures.ts';
import { Tensor, empty, zeros, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { ew } from '../engine/ew.ts';
import { sum } from './reduce.ts';
import { reluBackward } from './elementwise.ts';
import { directSuits, directForward, directWeightGrad } from './conv2d-direct.ts';
import { convOutSize, type ConvGeom } from './conv2d-geom.ts';

import { convTuning, bnPrologueDefault, type ConvTuning, type ConvTuningOverrides, type TiledTiles } from './conv2d-tuning.ts';
import { type Lanes, lanesFor, nextPow2 } from './conv2d-wgsl.ts';
import { type LanesGemm, lanesGemmDecl, type LanesDw, lanesDwDecl } from './conv2d-lanes.ts';
import { tiledShape, tiledGemmDecl, tiledDwDecl, tiledEpilogueBytes } from './conv2d-tiled.ts';
import { gpu } from '../engine/device.ts';
import type { Arr } from '../engine/ref.ts';

export { convOutSize, type ConvGeom };
export {
  type ConvTiles, type TiledTiles, type ConvVariant, type ConvTuning, type ConvTuningOverrides,
  DEFAULT_CONV_TILES, DEFAULT_CONV_TILES_16, DEFAULT_TILED_TILES,
  convSubgroupWidth, defaultConvTuning, fewChannelsDefault, texturesDefault, convTuning, bnPrologueDefault,
} from './conv2d-tuning.ts';

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
 * none: shapes whose last row tile is partial (every block must hold real rows only), and tiled tiles whose
 * moments do not fit beside them in workgroup memory.
 */
function forwardMomentRows(g: ConvGeom, t: ConvTuning): number {
  const rows = g.N * g.OH * g.OW;
  let rowsPerTile: number;
  if (t.variant === 'tiled') {
    if (!tiledEpilogueFits(t.tiled)) return 0;
    rowsPerTile = t.tiled.TM;
  } else {
    const { L, RB } = lanesBlocks(t, g.Cin % 4 === 0 && g.Cout % 4 === 0, Math.ceil(g.Cout / 4));
    rowsPerTile = L.SG * RB;
  }
  return rows > 0 && rows % rowsPerTile === 0 ? rowsPerTile : 0;
}

/**
 * The forward's moments output for y where `want` and the layer's row tiles allow (forwardMomentRows), else null;
 * y.attachMoments(...) after the launch hands them to the batchNorm that reads y.
 */
function forwardMoments(g: ConvGeom, t: ConvTuning, y: Tensor, want: boolean | undefined): { partials: Tensor; rowsPerPartial: number } | null {
  const rows = want ? forwardMomentRows(g, t) : 0;
  return rows ? { partials: empty([y.size / g.Cout / rows, 2, g.Cout], 'f32', 'conv2d'), rowsPerPartial: rows } : null;
}

/** Whether a tile's epilogue reduction (tiledEpilogueBytes) fits beside the tile in the device's workgroup memory. */
export function tiledEpilogueFits(t: TiledTiles): boolean {
  const maxBytes = gpu('conv2d').info.limits.maxComputeWorkgroupStorageSize ?? 16384;
  return tiledShape(t, false).bytes + tiledEpilogueBytes(t) <= maxBytes;
}

/**
 * What a dx GEMM needs to write a batchNorm's backward sums in its epilogue (LanesGemm.bnSums): the batchNorm's
 * input x (dx's shape), its statistics [G * 4, C] and beta where it had a ReLU, and the partials to write.
 */
interface BnSumsArgs {
  x: Tensor;
  stats: Tensor;
  beta: Tensor | null;
  /** [row tiles, 2, C] */
  part: Tensor;
  /** rows per batchNorm group, a multiple of the row tile */
  grpRows: number;
}

/** The optional operands of a forward or dx GEMM launch: the bias, the epilogue's and the prologue's. */
interface GatherExtras {
  bias?: Tensor | null;
  /** epilogue: added to every stored value (a gradient accumulated so far, or a residual) */
  addend?: Tensor | null;
  /** fwd epilogue: the per-tile ChannelMoments to write (forwardMoments) */
  moments?: Tensor | null;
  /** epilogue, last: max(value, 0) */
  relu?: boolean;
  /** dx epilogue: a batchNorm's backward sums */
  bn?: BnSumsArgs | null;
  /** fwd prologue: a batchNorm over the image (tiled kernels) */
  pro?: BnPrologueArgs | null;
}

/** Launches a forward or dx GEMM (dx: one set of row tiles per parity class of the stride). */
function runGather(mode: 'fwd' | 'dx', g: ConvGeom, a: Tensor, b: Tensor, out: Tensor, t: ConvTuning, extras: GatherExtras = {}): void {
  const { bias = null, addend = null, moments = null, relu = false, bn = null, pro = null } = extras;
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
    const bnFlags = { ...(bn ? { bnSums: true, bnRelu: !!bn.beta } : moments ? { moments: true } : {}), ...(pro ? { bnPrologue: { relu: pro.relu } } : {}) };
    k = kernel(`conv2d|${mode}|tiled|${aligned}|${!!addend}|${relu}|${JSON.stringify({ ...t.tiled, ...bnFlags })}`, () => tiledGemmDecl({ variant: 'tiled', mode, aligned, addend: !!addend, relu, ...t.tiled, ...bnFlags }));
    rowsPerTile = t.tiled.TM;
    colsPerTile = t.tiled.TN / 4;
  } else {
    if (pro) throw new Error('conv2d: the batchNorm prologue runs in the tiled kernels only (check bnPrologueSuits first)');
    const { L, GQ, RB, CB } = lanesBlocks(t, aligned, NQ);
    // the source image as [N * sh rows, sw * CK floats]; the weight as flat vec4s
    const texA = !!t.textures && aligned && fitsOperandTexture(g.N * sh, sw * CK);
    const texB = t.textures && aligned ? flatTextureWidth(b) : 0;
    const v: LanesGemm = { variant: 'lanes', mode, aligned, RB, CB, GQ, lanes: L, addend: !!addend, relu, moments: !!moments, ...(bn ? { bnSums: true, bnRelu: !!bn.beta } : {}), texA, texB };
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
      ...(bn ? { bx: bn.x, bst: bn.stats, ...(bn.beta ? { bbeta: bn.beta } : {}), part: bn.part, grp: bn.grpRows } : {}),
      ...(pro ? { pst: pro.stats, pbeta: pro.beta, pimg: g.N / pro.groups } : {}),
    },
    grid1d(Math.ceil(tiles / groupsPerWorkgroup), 1),
  );
}

// enough workgroups to keep every core (or SM) busy; more chunks only cost partial-sum traffic
const DW_TARGET_WORKGROUPS = 256;
/** Cap of the operand-texture cache (engine/textures.ts) when a conv adds a texture; as matmul's default. */
const CONV_TEXTURE_CACHE_BYTES = 256 * 2 ** 20;
const DW_MIN_PIXELS_PER_CHUNK = 64;

function weightGrad(g: ConvGeom, x: Tensor, dy: Tensor, t: ConvTuning, pro: BnPrologueArgs | null = null): Tensor {
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
    const proFlags = pro ? { bnPrologue: { relu: pro.relu } } : {};
    k = kernel(`conv2d|dW|tiled|${aligned}|${JSON.stringify({ ...t.tiled, ...proFlags })}`, () => tiledDwDecl({ variant: 'tiled', aligned, ...t.tiled, ...proFlags }));
    rowTiles = Math.ceil(RQT / (t.tiled.TM / 4));
    colTiles = Math.ceil(NQ / (t.tiled.TN / 4));
    units = pixels;
  } else {
    if (pro) throw new Error('conv2d: the batchNorm prologue runs in the tiled kernels only (check bnPrologueSuits first)');
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
      ...(pro ? { pst: pro.stats, pbeta: pro.beta, pimg: g.N / pro.groups } : {}),
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

/** The layer's geometry, with the inputs checked (errors name the shapes and what was expected). */
export function conv2dGeometry(x: Tensor, w: Tensor, bias: Tensor | null, opts: Conv2dOptions): ConvGeom {
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
  const g = conv2dGeometry(x, w, bias, opts);
  const t = usableTuning(opts.tuning);
  const ep = epilogueOf(g, opts);
  const y = empty([g.N, g.OH, g.OW, g.Cout], 'f32', 'conv2d');
  if (y.size === 0) return y;
  if (t.fewChannels === 'direct' && directSuits(g, 'fwd')) {
    directForward(g, x, w, bias, y, ep.add, ep.relu);
    return y;
  }
  const p = paddedGeom(g);
  const m = forwardMoments(p ?? g, t, y, opts.moments);
  const extras = { bias, addend: ep.add, moments: m?.partials, relu: ep.relu };
  if (p) {
    const x4 = padInput(x, g, p);
    const w4 = padWeight(w, g, p);
    runGather('fwd', p, x4, w4, y, t, extras);
    x4.dispose();
    w4.dispose();
  } else runGather('fwd', g, x, w, y, t, extras);
  if (m) y.attachMoments(m);
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
  runGather('dx', p ?? g, dy, wt, dx, t, { addend: p ? null : addend });
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

/**
 * Rows per dx row tile where dx's epilogue can also write the backward sums of a batchNorm over its input
 * (conv2dBackwardInputWithBnSums), or 0. It needs stride 1, channels in quads (so no padded stem), row tiles that
 * never straddle two of the batchNorm's `groups` (equal parts of the batch), and for the tiled kernels a tile whose
 * sums fit beside it in workgroup memory.
 */
export function dxBnSumRows(g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'>, groups: number): number {
  const t = usableTuning(opts.tuning);
  if (g.stride !== 1 || g.Cin % 4 !== 0 || g.Cout % 4 !== 0 || g.N % groups !== 0) return 0;
  let rowsPerTile: number;
  if (t.variant === 'tiled') {
    // the tile's row groups add their sums in workgroup memory: it must fit beside the tile
    if (!tiledEpilogueFits(t.tiled)) return 0;
    rowsPerTile = t.tiled.TM;
  } else {
    const { L, RB } = lanesBlocks(t, true, g.Cin / 4);
    rowsPerTile = L.SG * RB;
  }
  const grpRows = (g.N / groups) * g.H * g.W;
  return grpRows > 0 && grpRows % rowsPerTile === 0 ? rowsPerTile : 0;
}

/**
 * conv2dBackwardInput, whose epilogue also writes the per-channel sums that the backward of a batchNorm over the
 * conv's input needs (sum of dx masked by that batchNorm's ReLU, and of it times the centered input), one pair of
 * rows per row tile: `part` [row tiles, 2, Cin], `tilesPerGroup` of them per group. Only where dxBnSumRows > 0.
 */
export function conv2dBackwardInputWithBnSums(
  dy: Tensor, w: Tensor, g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'>,
  bn: { x: Tensor; stats: Tensor; beta: Tensor | null; groups: number },
): { dx: Tensor; part: Tensor; tilesPerGroup: number } {
  const t = usableTuning(opts.tuning);
  const rowsPerTile = dxBnSumRows(g, opts, bn.groups);
  if (!rowsPerTile) throw new Error(`conv2d: dx cannot write batchNorm sums for ${g.N}x${g.H}x${g.W}x${g.Cin} (stride ${g.stride}, ${bn.groups} groups, variant ${t.variant}); check dxBnSumRows first`);
  const rows = g.N * g.H * g.W;
  const dx = empty([g.N, g.H, g.W, g.Cin], 'f32', 'conv2d.dx');
  const part = empty([rows / rowsPerTile, 2, g.Cin], 'f32', 'conv2d.dx');
  const wt = transposeWeight(w, g);
  runGather('dx', g, dy, wt, dx, t, { bn: { ...bn, part, grpRows: rows / bn.groups } });
  wt.dispose();
  return { dx, part, tilesPerGroup: rows / bn.groups / rowsPerTile };
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
 * A batchNorm over the conv's input, run as the prologue of its forward and dW launches (TiledGemm.bnPrologue):
 * the batchNorm's statistics [G * 4, Cin] (shift, dmean, invstd, gamma * invstd per group), beta, whether it had a
 * ReLU, and its groups (equal parts of the batch).
 */
export interface BnPrologueArgs {
  stats: Tensor;
  beta: Tensor;
  relu: boolean;
  groups: number;
}

/**
 * Whether this layer's forward and dW can take a batchNorm over their input as a prologue (conv2dWithBnPrologue):
 * the tiled kernels with the record's `bnPrologue` on (by default on GPUs, bnPrologueDefault), channels in quads,
 * whole images per group.
 */
export function bnPrologueSuits(g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'>, groups: number): boolean {
  const t = usableTuning(opts.tuning);
  return t.variant === 'tiled' && (t.bnPrologue ?? bnPrologueDefault()) && g.Cin % 4 === 0 && g.Cout % 4 === 0 && Number.isInteger(groups) && groups > 0 && g.N % groups === 0;
}

function assertPrologue(op: string, g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'>, pro: BnPrologueArgs): void {
  if (!bnPrologueSuits(g, opts, pro.groups)) {
    throw new Error(`${op}: a batchNorm prologue needs the tiled kernels, channels in quads and whole images per group; got ${g.N}x${g.H}x${g.W}x${g.Cin} -> ${g.Cout}, ${pro.groups} groups, variant ${usableTuning(opts.tuning).variant} (check bnPrologueSuits first)`);
  }
}

/**
 * conv2dRaw(batchNorm(x), w, bias, opts) where bnPrologueSuits: the forward normalizes x as it stages it, so the
 * normalized activation is never written. `opts.moments` as for conv2d; no epilogue. Records nothing.
 */
export function conv2dWithBnPrologue(x: Tensor, w: Tensor, bias: Tensor | null, g: ConvGeom, opts: Conv2dOptions, pro: BnPrologueArgs): Tensor {
  assertPrologue('conv2d', g, opts, pro);
  if (opts.epilogue) throw new Error('conv2d: a batchNorm prologue does not combine with an epilogue here');
  const t = usableTuning(opts.tuning);
  const y = empty([g.N, g.OH, g.OW, g.Cout], 'f32', 'conv2d');
  if (y.size === 0) return y;
  const m = forwardMoments(g, t, y, opts.moments);
  runGather('fwd', g, x, w, y, t, { bias, moments: m?.partials, pro });
  if (m) y.attachMoments(m);
  return y;
}

/** conv2dBackwardWeight(batchNorm(x), dy, g, opts) where bnPrologueSuits: dW normalizes x as it stages it. */
export function conv2dBackwardWeightWithBnPrologue(x: Tensor, dy: Tensor, g: ConvGeom, opts: Pick<Conv2dOptions, 'tuning'>, pro: BnPrologueArgs): Tensor {
  assertPrologue('conv2d.dW', g, opts, pro);
  return weightGrad(g, x, dy, usableTuning(opts.tuning), pro);
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
    const g = conv2dGeometry(x, w, bias, opts);
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
