// 2-D convolution on NHWC activations and HWIO weights, with backward to input, weight and bias, and the float64
// reference. Three kernels, all GEMMs whose operands are gathered on the fly (no im2col buffer):
//   forward   y[m, co]  = sum_k xpatch[m, k] · w[k, co]     m = (n, oh, ow), k = (kh, kw, ci)
//   dx        dx[m, ci] = sum_k dypatch[m, k] · wT[k, ci]   m = (n, ih, iw), k = (kh, kw, co), wT = w with ci/co swapped
//   dW        dW[r, co] = sum_m xpatch[m, r] · dy[m, co]    r = (kh, kw, ci), split over chunks of m and summed
//
// Why the kernels look the way they do (measured on lavapipe, Mesa 25.0, see bench/conv-quick.ts): llvmpipe turns
// every buffer load whose address is not a compile-time constant into a per-lane loop of scalar loads, each with a
// bounds-check branch, so loads dominate (a vec4 costs ~1.6x one float, i.e. 2.5x less per value), while ALU work
// and subgroup shuffles are cheap. So operands are loaded as vec4 along channels (contiguous in NHWC/HWIO), each
// lane of a subgroup loads a different row and the lanes share them by subgroupBroadcast, and every lane keeps a
// register block of rows x 4 columns (spilling some of it is cheaper than loading more). Workgroup-memory loads are
// only ~1.5-2x cheaper there and would need staging and barriers, so no tiles are staged: a workgroup is one
// subgroup. Without subgroups of width 4 or 8 (browsers may have none) the same kernels run with every lane loading
// the shared rows itself. Channel counts that are not multiples of 4 (the RGB stem) take scalar loads with checks.
// Measured forward on the bench layer: ~25-30 GFLOPS per 2 CPU-seconds vs ~4.5 for matmulRaw's tiled kernel.

import { launch, u32s, grid1d, type KernelSpec } from '../engine/recorder.ts';
import { gpu } from '../engine/device.ts';
import { Tensor, empty, zeros, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { sum } from './reduce.ts';
import type { Arr } from '../engine/ref.ts';

export interface Conv2dOptions {
  stride?: number;
  padding?: number;
}

export interface ConvGeom {
  N: number;
  H: number;
  W: number;
  Cin: number;
  KH: number;
  KW: number;
  Cout: number;
  stride: number;
  pad: number;
  OH: number;
  OW: number;
}

/** Register-block shapes. fwd/dx: a subgroup computes SG*RB rows x SG*4*CB columns. */
export interface ConvTiles {
  RB: number;
  CB: number;
  /** dW: row quads per step (SG / RQ pixels per step), column quads per lane, pixel steps unrolled */
  RQ: number;
  dwCB: number;
  U: number;
  /** fwd/dx on narrow layers: rows a lane accumulates (RB = narrowRows / GQ blocks) */
  narrowRows: number;
}

/** For subgroups of 4 or 8 lanes (and the portable kernels, which cap the blocks themselves). */
export const DEFAULT_CONV_TILES: ConvTiles = { RB: 4, CB: 1, RQ: 8, dwCB: 2, U: 1, narrowRows: 16 };
/**
 * For 16 lanes (lavapipe with LP_NATIVE_VECTOR_WIDTH=512): a lane holds SG * RB accumulator rows, so RB halves to
 * keep the same register footprint; dW keeps 8 row quads (2 pixels per step) with one column quad, unrolled twice.
 * Measured on bench/conv-quick.ts: fwd 30, dx 31, dW 26 GFLOPS (RB 4 / dwCB 2 here: 26, 32, 10).
 */
export const DEFAULT_CONV_TILES_16: ConvTiles = { RB: 2, CB: 1, RQ: 8, dwCB: 1, U: 2, narrowRows: 16 };
let userTiles: ConvTiles | null = null;
/** For the tuner and benchmarks; null goes back to the per-width defaults. */
export function setConvTiles(t: Partial<ConvTiles> | null): void {
  userTiles = t ? { ...DEFAULT_CONV_TILES, ...t } : null;
}
/** The register blocks in use for these lanes. */
export function convTilesFor(SG: number): ConvTiles {
  return userTiles ?? (SG >= 16 ? DEFAULT_CONV_TILES_16 : DEFAULT_CONV_TILES);
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

let laneMode: 'auto' | 'subgroups' | 'portable' = 'auto';
/** Test hook: force the portable (no subgroup) kernels, or back to 'auto'. */
export function setConvLaneMode(mode: 'auto' | 'subgroups' | 'portable'): void {
  laneMode = mode;
}

function lanes(): Lanes {
  const c = gpu('conv2d');
  const info: any = (c.adapter as any).info ?? {};
  const width = info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : 0;
  // subgroups wider than 16 would need SG*RB rows of registers per lane even at RB = 1: they take the portable kernels
  const ok = c.hasSubgroups && (width === 4 || width === 8 || width === 16);
  if (laneMode === 'subgroups' && !ok) throw new Error(`conv2d: subgroup kernels need subgroups of width 4, 8 or 16 (adapter: ${info.subgroupMinSize}..${info.subgroupMaxSize})`);
  if (ok && laneMode !== 'portable') return { SG: width, subgroups: true, G: 1 };
  return { SG: 8, subgroups: false, G: 8 };
}

const range = (n: number) => [...Array(n).keys()];
const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
const XYZW = 'xyzw';

// ---- forward and dx: gathered GEMM -----------------------------------------------------------------------
// Shapes, kernel size, stride, padding and bias are uniforms: one pipeline per (alignment, tiles) serves every layer
// of a network, which matters because each pipeline costs seconds of LLVM time on lavapipe.

interface GatherVariant {
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
}

const specs = new Map<string, KernelSpec>();

function cached(key: string, make: () => KernelSpec): KernelSpec {
  let s = specs.get(key);
  if (!s) specs.set(key, (s = make()));
  return s;
}

function header(l: Lanes): string {
  return l.subgroups ? 'enable subgroups;\n' : '';
}

function entry(l: Lanes): string {
  const sub = l.subgroups ? ', @builtin(subgroup_invocation_id) sl: u32' : '';
  // with subgroups the tile must be uniform (subgroupBroadcast needs uniform control flow): one group per workgroup
  return `@compute @workgroup_size(${l.SG * l.G})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>, @builtin(local_invocation_index) lidx: u32${sub}) {
  let tile = ${l.G === 1 ? 'wid.x + wid.y * nwg.x' : `(wid.x + wid.y * nwg.x) * ${l.G}u + lidx / ${l.SG}u`};
  if (tile >= p.tiles) { return; }
  let l = ${l.subgroups ? 'sl' : `lidx % ${l.SG}u`};`;
}

/**
 * Per-lane values: with subgroups a lane owns one row per block (suffix _rb) and reads the others' by broadcast;
 * without, a lane computes every row of the block itself (suffix _rb_r).
 */
function rowsOf(l: Lanes, rb: number): { suffix: string; lane: string }[] {
  return l.subgroups ? [{ suffix: `${rb}`, lane: 'l' }] : range(l.SG).map((r) => ({ suffix: `${rb}_${r}`, lane: `${r}u` }));
}

function shared(l: Lanes, name: string, rb: number, r: number): string {
  return l.subgroups ? `subgroupBroadcast(${name}${rb}, ${r}u)` : `${name}${rb}_${r}`;
}

const GATHER_UNIFORMS = `struct P {
  rows: u32, tiles: u32, rowTiles: u32, colTiles: u32,
  dh: u32, dw: u32, sh: i32, sw: i32,
  th: i32, tw: i32, ck: u32, cn: u32,
  kq: u32, nq: u32, kh: i32, kw: i32,
  s: i32, pad: i32, hasBias: u32, p1: u32,
}`;

function gatherSpec(v: GatherVariant): KernelSpec {
  return cached(JSON.stringify(v), () => {
    const { mode, aligned, RB, CB, GQ, lanes: L } = v;
    const SG = L.SG;
    // rows a lane accumulates per block: every row (wide) or those of its lane group (narrow: r = j * RG + g)
    const RG = GQ ? SG / GQ : 1;
    const laneRowsPerBlock = GQ ? GQ : SG;
    const src = (rb: number, j: number, name: string) => (GQ ? `subgroupShuffle(${name}${rb}, ${j * RG}u + g)` : shared(L, name, rb, j));
    const T = aligned ? 'vec4<f32>' : 'f32';
    let c = header(L);
    c += `${GATHER_UNIFORMS}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> a: array<${T}>;
@group(0) @binding(2) var<storage, read> b: array<${T}>;
@group(0) @binding(3) var<storage, read> bias: array<${T}>; // the weight again when there is no bias
@group(0) @binding(4) var<storage, read_write> y: array<${T}>;
${entry(L)}
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
`;
    if (mode === 'dx') {
      // parity class (ih % s, iw % s): only taps kh = ih + pad (mod s) reach it, so the others are skipped, not masked
      c += `  let cls = i32(rt / p.rowTiles);\n  let ph = cls / p.s;\n  let pw = cls % p.s;\n  let kh0 = (ph + p.pad) % p.s;\n  let kw0 = (pw + p.pad) % p.s;\n`;
    }
    // rows: decoded once; (y0, x0) is the patch origin in the source image, o the output row (-1: none)
    for (let rb = 0; rb < RB; rb++) {
      for (const { suffix: s, lane } of rowsOf(L, rb)) {
        c += `  let mr${s} = rowTile * ${SG * RB}u + ${rb * SG}u + ${lane};
  let m${s} = min(mr${s}, p.rows - 1u);
  let n${s} = i32(m${s} / (p.dh * p.dw));
  let r${s} = i32((m${s} / p.dw) % p.dh);
  let q${s} = i32(m${s} % p.dw);
`;
        if (mode === 'fwd') {
          c += `  let y0${s} = r${s} * p.s - p.pad;\n  let x0${s} = q${s} * p.s - p.pad;\n`;
          c += `  let o${s} = select(-1, i32(mr${s}), mr${s} < p.rows);\n`;
        } else {
          // source rows of dy for the first tap of the class; each further tap (kh += s) is one row up
          c += `  let ih${s} = r${s} * p.s + ph;\n  let iw${s} = q${s} * p.s + pw;\n`;
          c += `  let y0${s} = (ih${s} + p.pad - kh0) / p.s;\n  let x0${s} = (iw${s} + p.pad - kw0) / p.s;\n`;
          c += `  let o${s} = select(-1, (n${s} * p.th + ih${s}) * p.tw + iw${s}, mr${s} < p.rows && ih${s} < p.th && iw${s} < p.tw);\n`;
        }
        c += `  let nb${s} = n${s} * p.sh;\n`;
      }
    }
    if (GQ) c += `  let cq0 = l % ${GQ}u;\n  let cl0 = min(cq0, p.nq - 1u);\n  let g = l / ${GQ}u;\n`;
    else for (let cb = 0; cb < CB; cb++) c += `  let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;\n  let cl${cb} = min(cq${cb}, p.nq - 1u);\n`;
    const acc = (rb: number, r: number, cb: number) => `a_${(rb * laneRowsPerBlock + r) * CB + cb}`;
    c += `  ${range(RB * laneRowsPerBlock * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}\n`;
    if (mode === 'fwd') c += '  for (var kh = 0; kh < p.kh; kh++) {\n  for (var kw = 0; kw < p.kw; kw++) {\n';
    else c += '  for (var kh = kh0; kh < p.kh; kh += p.s) {\n  for (var kw = kw0; kw < p.kw; kw += p.s) {\n';
    for (let rb = 0; rb < RB; rb++) {
      for (const { suffix: s } of rowsOf(L, rb)) {
        const [yy, xx] = mode === 'fwd' ? [`y0${s} + kh`, `x0${s} + kw`] : [`y0${s} - (kh - kh0) / p.s`, `x0${s} - (kw - kw0) / p.s`];
        c += `    let yy${s} = ${yy}; let xx${s} = ${xx};
    let ab${s} = select(-1, (nb${s} + yy${s}) * p.sw + xx${s}, yy${s} >= 0 && yy${s} < p.sh && xx${s} >= 0 && xx${s} < p.sw);
    let ai${s} = u32(max(ab${s}, 0)) * ${aligned ? 'p.kq' : 'p.ck'};
`;
      }
    }
    c += '    let kb = u32(kh * p.kw + kw) * p.ck;\n    for (var q = 0u; q < p.kq; q++) {\n';
    for (let rb = 0; rb < RB; rb++) {
      for (const { suffix: s } of rowsOf(L, rb)) {
        if (aligned) c += `      let av${s} = select(vec4<f32>(0.0), a[ai${s} + q], ab${s} >= 0);\n`;
        else {
          const ld = (j: number) => `select(0.0, a[ai${s} + min(q * 4u + ${j}u, p.ck - 1u)], ab${s} >= 0 && q * 4u + ${j}u < p.ck)`;
          c += `      let av${s} = vec4<f32>(${range(4).map(ld).join(', ')});\n`;
        }
      }
    }
    for (let kk = 0; kk < 4; kk++) {
      // rows past the last channel multiply zeros; clamping keeps their (finite) weight reads in bounds
      const krow = aligned ? `kb + q * 4u + ${kk}u` : `kb + min(q * 4u + ${kk}u, p.ck - 1u)`;
      for (let cb = 0; cb < CB; cb++) {
        if (aligned) c += `      let b${kk}_${cb} = b[(${krow}) * p.nq + cl${cb}];\n`;
        else c += `      let b${kk}_${cb} = vec4<f32>(${range(4).map((j) => `b[(${krow}) * p.cn + min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')});\n`;
      }
    }
    for (let rb = 0; rb < RB; rb++) {
      for (let r = 0; r < laneRowsPerBlock; r++) {
        c += `      { let v = ${src(rb, r, 'av')};\n`;
        for (let kk = 0; kk < 4; kk++) {
          for (let cb = 0; cb < CB; cb++) c += `        ${acc(rb, r, cb)} = fma(vec4<f32>(v.${XYZW[kk]}), b${kk}_${cb}, ${acc(rb, r, cb)});\n`;
        }
        c += '      }\n';
      }
    }
    c += '    }\n  }\n  }\n';
    // epilogue: a lane keeps its column quads; row r's output index comes from the lane that decoded it
    for (let cb = 0; cb < CB; cb++) {
      if (aligned) c += `  let bias${cb} = select(vec4<f32>(0.0), bias[cl${cb}], p.hasBias != 0u);\n`;
      else c += `  let bias${cb} = select(vec4<f32>(0.0), vec4<f32>(${range(4).map((j) => `bias[min(cl${cb} * 4u + ${j}u, p.cn - 1u)]`).join(', ')}), p.hasBias != 0u);\n`;
    }
    for (let rb = 0; rb < RB; rb++) {
      for (let r = 0; r < laneRowsPerBlock; r++) {
        c += `  { let o = ${src(rb, r, 'o')}; if (o >= 0) {\n`;
        for (let cb = 0; cb < CB; cb++) {
          const a = acc(rb, r, cb);
          if (aligned) c += `    if (cq${cb} < p.nq) { y[u32(o) * p.nq + cq${cb}] = ${a} + bias${cb}; }\n`;
          else {
            for (let j = 0; j < 4; j++) {
              const col = `cq${cb} * 4u + ${j}u`;
              c += `    if (${col} < p.cn) { y[u32(o) * p.cn + ${col}] = ${a}.${XYZW[j]} + bias${cb}.${XYZW[j]}; }\n`;
            }
          }
        }
        c += '  } }\n';
      }
    }
    c += '}\n';
    return { name: `conv2d.${mode}`, code: c, bindings: ['uniform', 'read', 'read', 'read', 'rw'] };
  });
}

/** Launches a forward or dx GEMM (dx: one set of row tiles per parity class of the stride). */
function runGather(mode: 'fwd' | 'dx', g: ConvGeom, a: Tensor, b: Tensor, bias: Tensor | null, out: Tensor): void {
  const L = lanes();
  const t = convTilesFor(L.SG);
  const CK = mode === 'fwd' ? g.Cin : g.Cout;
  const CN = mode === 'fwd' ? g.Cout : g.Cin;
  const S = g.stride;
  // odd channel counts (the RGB stem) take the scalar kernel with the smallest block: it compiles fast. Without
  // subgroups a lane keeps all of its group's rows, so the block stays small there too (GPU registers).
  const aligned = CK % 4 === 0 && CN % 4 === 0;
  const big = aligned && L.subgroups;
  const KQ = Math.ceil(CK / 4);
  const NQ = Math.ceil(CN / 4);
  // narrow layers (few output channels) split the lanes between columns and rows instead of idling most of them
  // (not at 16 lanes: there the shuffles and the per-lane loads cost twice as much and it gained nothing)
  const GQ = L.subgroups && L.SG <= 8 && t.narrowRows > 0 && NQ <= L.SG / 2 ? nextPow2(NQ) : 0;
  const RB = GQ ? Math.max(1, Math.floor(t.narrowRows / GQ)) : big ? t.RB : 1;
  const CB = big && !GQ ? t.CB : 1;
  const spec = gatherSpec({ mode, aligned, RB, CB, GQ, lanes: L });
  // fwd rows decode as (n, oh, ow); dx rows as (n, ih / s, iw / s) within one parity class (ih % s, iw % s)
  const dh = mode === 'fwd' ? g.OH : Math.ceil(g.H / S);
  const dw = mode === 'fwd' ? g.OW : Math.ceil(g.W / S);
  const classes = mode === 'fwd' ? 1 : S * S;
  const rows = g.N * dh * dw;
  const rowTiles = Math.ceil(rows / (L.SG * RB));
  const colTiles = GQ ? 1 : Math.ceil(NQ / (L.SG * CB));
  const ntiles = classes * rowTiles * colTiles;
  const [sh, sw] = mode === 'fwd' ? [g.H, g.W] : [g.OH, g.OW];
  const u = u32s(rows, ntiles, rowTiles, colTiles, dh, dw, sh, sw, g.H, g.W, CK, CN, KQ, NQ, g.KH, g.KW, S, g.pad, bias ? 1 : 0);
  const name = spec.name;
  launch(spec, [u, a.binding(name), b.binding(name), (bias ?? b).binding(name), out.binding(name)], grid1d(Math.ceil(ntiles / L.G), 1));
}

// ---- dW: outer products over output pixels, split into chunks -----------------------------------------------

interface WeightGradVariant {
  /** Cin and Cout both % 4 == 0: vec4 loads and stores; else scalar loads with checks */
  aligned: boolean;
  RQ: number;
  CB: number;
  U: number;
  lanes: Lanes;
}

const DW_UNIFORMS = `struct P {
  tiles: u32, rowTiles: u32, colTiles: u32, linesPerChunk: u32,
  lines: u32, H: i32, W: i32, OH: u32,
  OW: u32, cin: u32, cout: u32, cq: u32,
  nq: u32, rqt: u32, kw: i32, s: i32,
  pad: i32, wsize: u32, p0: u32, p1: u32,
}`;

function weightGradSpec(v: WeightGradVariant): KernelSpec {
  return cached(JSON.stringify(v), () => {
    const { aligned, RQ, CB, U, lanes: L } = v;
    const SG = L.SG;
    const PP = SG / RQ; // pixels per step
    const T = aligned ? 'vec4<f32>' : 'f32';
    let c = header(L);
    c += `${DW_UNIFORMS}
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<${T}>;
@group(0) @binding(2) var<storage, read> dy: array<${T}>;
@group(0) @binding(3) var<storage, read_write> out: array<${T}>;
${entry(L)}
  let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;
  let chunk = rt / p.rowTiles;
`;
    // the (row quad, pixel offset) pairs a lane loads: its own with subgroups, all of its group's without
    const laneRows = L.subgroups ? [{ s: '', lane: 'l' }] : range(SG).map((r) => ({ s: `_${r}`, lane: `${r}u` }));
    for (const { s, lane } of laneRows) {
      c += `  let rq${s} = min(rowTile * ${RQ}u + ${lane} % ${RQ}u, p.rqt - 1u);
  let pp${s} = i32(${lane} / ${RQ}u);
  let tap${s} = i32(rq${s} / p.cq);
  let ciq${s} = rq${s} % p.cq;
  let ky${s} = tap${s} / p.kw - p.pad;
  let kx${s} = tap${s} % p.kw - p.pad;
`;
    }
    for (let cb = 0; cb < CB; cb++) c += `  let cq${cb} = colTile * ${SG * CB}u + ${cb * SG}u + l;\n  let cl${cb} = min(cq${cb}, p.nq - 1u);\n`;
    const acc = (rr: number, j: number, cb: number) => `a_${(rr * 4 + j) * CB + cb}`;
    c += `  ${range(RQ * 4 * CB).map((i) => `var a_${i} = vec4<f32>(0.0);`).join(' ')}
  let L0 = chunk * p.linesPerChunk;
  let L1 = min(L0 + p.linesPerChunk, p.lines);
  for (var line = L0; line < L1; line++) {
    let n = i32(line / p.OH);
    let oh = i32(line % p.OH);
    let dyrow = line * p.OW;
`;
    for (const { s } of laneRows) {
      c += `    let yy${s} = oh * p.s + ky${s};\n    let rowOk${s} = yy${s} >= 0 && yy${s} < p.H;\n    let xrow${s} = (n * p.H + yy${s}) * p.W;\n`;
    }
    c += `    for (var ow0 = 0u; ow0 < p.OW; ow0 += ${PP * U}u) {\n`;
    for (let u = 0; u < U; u++) {
      c += '    {\n';
      for (const { s } of laneRows) {
        c += `      let ow${s} = i32(ow0) + ${u * PP} + pp${s};
      let xx${s} = ow${s} * p.s + kx${s};
      let ok${s} = rowOk${s} && ow${s} < i32(p.OW) && xx${s} >= 0 && xx${s} < p.W;
      let xi${s} = u32(max(xrow${s} + xx${s}, 0));
`;
        if (aligned) c += `      let av${s} = select(vec4<f32>(0.0), x[xi${s} * p.cq + ciq${s}], ok${s});\n`;
        else {
          const ld = (j: number) => `select(0.0, x[xi${s} * p.cin + min(ciq${s} * 4u + ${j}u, p.cin - 1u)], ok${s} && ciq${s} * 4u + ${j}u < p.cin)`;
          c += `      let av${s} = vec4<f32>(${range(4).map(ld).join(', ')});\n`;
        }
      }
      for (let q = 0; q < PP; q++) {
        // a pixel past the row end has x = 0 in every lane that pairs with it; clamping keeps dy reads in bounds
        c += `      let pix${q} = dyrow + min(ow0 + ${u * PP + q}u, p.OW - 1u);\n`;
        for (let cb = 0; cb < CB; cb++) {
          if (aligned) c += `      let b${q}_${cb} = dy[pix${q} * p.nq + cl${cb}];\n`;
          else c += `      let b${q}_${cb} = vec4<f32>(${range(4).map((j) => `dy[pix${q} * p.cout + min(cl${cb} * 4u + ${j}u, p.cout - 1u)]`).join(', ')});\n`;
        }
      }
      for (let r = 0; r < SG; r++) {
        const q = Math.floor(r / RQ);
        const rr = r % RQ;
        c += `      { let v = ${L.subgroups ? `subgroupBroadcast(av, ${r}u)` : `av_${r}`};\n`;
        for (let j = 0; j < 4; j++) {
          for (let cb = 0; cb < CB; cb++) c += `        ${acc(rr, j, cb)} = fma(vec4<f32>(v.${XYZW[j]}), b${q}_${cb}, ${acc(rr, j, cb)});\n`;
        }
        c += '      }\n';
      }
      c += '    }\n';
    }
    c += '    }\n  }\n';
    // partial sums of this chunk: out[chunk][(kh, kw, ci)][co]
    for (let rr = 0; rr < RQ; rr++) {
      c += `  { let rq = rowTile * ${RQ}u + ${rr}u; if (rq < p.rqt) {
    let base = chunk * (p.wsize / p.cout) + (rq / p.cq) * p.cin;
    let ci0 = (rq % p.cq) * 4u;
`;
      for (let j = 0; j < 4; j++) {
        c += `    if (ci0 + ${j}u < p.cin) {\n      let row = base + ci0 + ${j}u;\n`;
        for (let cb = 0; cb < CB; cb++) {
          const a = acc(rr, j, cb);
          if (aligned) c += `      if (cq${cb} < p.nq) { out[row * p.nq + cq${cb}] = ${a}; }\n`;
          else for (let k = 0; k < 4; k++) c += `      if (cq${cb} * 4u + ${k}u < p.cout) { out[row * p.cout + cq${cb} * 4u + ${k}u] = ${a}.${XYZW[k]}; }\n`;
        }
        c += '    }\n';
      }
      c += '  } }\n';
    }
    c += '}\n';
    return { name: 'conv2d.dW', code: c, bindings: ['uniform', 'read', 'read', 'rw'] };
  });
}

// enough workgroups to keep every core (or SM) busy; more chunks only cost partial-sum traffic
const DW_TARGET_WORKGROUPS = 256;
const DW_MIN_PIXELS_PER_CHUNK = 64;

function weightGrad(g: ConvGeom, x: Tensor, dy: Tensor): Tensor {
  const L = lanes();
  const t = convTilesFor(L.SG);
  const RQ = L.subgroups ? Math.min(t.RQ, L.SG) : 2;
  const aligned = g.Cin % 4 === 0 && g.Cout % 4 === 0;
  // a second column quad per lane only pays where there are columns for it (narrow layers would idle them)
  const CB = aligned && L.subgroups && Math.ceil(g.Cout / 4) > L.SG ? t.dwCB : 1;
  const spec = weightGradSpec({ aligned, RQ, CB, U: t.U, lanes: L });
  const CQ = Math.ceil(g.Cin / 4);
  const NQ = Math.ceil(g.Cout / 4);
  const RQT = g.KH * g.KW * CQ;
  const rowTiles = Math.ceil(RQT / RQ);
  const colTiles = Math.ceil(NQ / (L.SG * CB));
  const lines = g.N * g.OH;
  const wshape = [g.KH, g.KW, g.Cin, g.Cout];
  if (lines === 0) return zeros(wshape); // an empty batch
  const byWork = Math.ceil((DW_TARGET_WORKGROUPS * L.G) / (rowTiles * colTiles));
  const byMinSize = Math.max(1, Math.floor((lines * g.OW) / DW_MIN_PIXELS_PER_CHUNK));
  let chunks = Math.max(1, Math.min(byWork, byMinSize, lines));
  const linesPerChunk = Math.ceil(lines / chunks);
  chunks = Math.ceil(lines / linesPerChunk);
  const ntiles = chunks * rowTiles * colTiles;
  const wsize = g.KH * g.KW * g.Cin * g.Cout;
  const partial = empty([chunks, wsize], 'f32', 'conv2d.dW');
  const u = u32s(ntiles, rowTiles, colTiles, linesPerChunk, lines, g.H, g.W, g.OH, g.OW, g.Cin, g.Cout, CQ, NQ, RQT, g.KW, g.stride, g.pad, wsize);
  launch(spec, [u, x.binding('conv2d.dW'), dy.binding('conv2d.dW'), partial.binding('conv2d.dW')], grid1d(Math.ceil(ntiles / L.G), 1));
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

const TRANSPOSE_WG = 256;
const transposeSpec: KernelSpec = {
  name: 'conv2d.wT',
  bindings: ['uniform', 'read', 'rw'],
  code: `
struct P { n: u32, cin: u32, cout: u32, pad0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> wt: array<f32>;
@compute @workgroup_size(${TRANSPOSE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${TRANSPOSE_WG}u);
  if (i >= p.n) { return; }
  let co = i % p.cout;
  let ci = (i / p.cout) % p.cin;
  let tap = i / (p.cout * p.cin);
  wt[(tap * p.cout + co) * p.cin + ci] = w[i];
}`,
};

function transposeWeight(w: Tensor, g: ConvGeom): Tensor {
  const wt = empty([g.KH, g.KW, g.Cout, g.Cin], 'f32', 'conv2d.wT');
  launch(transposeSpec, [u32s(w.size, g.Cin, g.Cout), w.binding('conv2d.wT'), wt.binding('conv2d.wT')], grid1d(w.size, TRANSPOSE_WG));
  return wt;
}

// ---- shapes and the differentiable op ------------------------------------------------------------------

/** Output size of a convolution (or pooling) along one axis. */
export function convOutSize(size: number, kernel: number, stride: number, pad: number): number {
  return Math.floor((size + 2 * pad - kernel) / stride) + 1;
}

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

const RESIZE_WG = 256;
const resizeRowsSpec: KernelSpec = {
  name: 'conv2d.resizeRows',
  bindings: ['uniform', 'read', 'rw'],
  code: `
struct P { n: u32, inW: u32, outW: u32, pad0: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@compute @workgroup_size(${RESIZE_WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${RESIZE_WG}u);
  if (i >= p.n) { return; }
  let r = i / p.outW;
  let j = i % p.outW;
  y[i] = select(0.0, x[r * p.inW + min(j, p.inW - 1u)], j < p.inW);
}`,
};

/** [rows, inW] -> [rows, outW]: the first min(inW, outW) values of each row, then zeros. */
function resizeRows(x: Tensor, rows: number, inW: number, outW: number, shape: number[]): Tensor {
  const y = empty(shape, 'f32', 'conv2d.resizeRows');
  const n = rows * outW;
  if (n > 0) launch(resizeRowsSpec, [u32s(n, inW, outW), x.binding('conv2d.resizeRows'), y.binding('conv2d.resizeRows')], grid1d(n, RESIZE_WG));
  return y;
}

/** The geometry with Cin padded to a multiple of 4, or null where the layer runs as it is. */
function paddedGeom(g: ConvGeom): ConvGeom | null {
  return g.Cin % 4 !== 0 && g.Cout % 4 === 0 ? { ...g, Cin: Math.ceil(g.Cin / 4) * 4 } : null;
}
const padInput = (x: Tensor, g: ConvGeom, p: ConvGeom) => resizeRows(x, g.N * g.H * g.W, g.Cin, p.Cin, [g.N, g.H, g.W, p.Cin]);
// HWIO: each tap's [Cin, Cout] block is Cin·Cout contiguous floats, and the padded rows follow the real ones
const padWeight = (w: Tensor, g: ConvGeom, p: ConvGeom) => resizeRows(w, g.KH * g.KW, g.Cin * g.Cout, p.Cin * g.Cout, [g.KH, g.KW, p.Cin, g.Cout]);

/** The forward launch (no tape). */
export function conv2dRaw(x: Tensor, w: Tensor, bias: Tensor | null, opts: Conv2dOptions = {}): Tensor {
  const g = geometry(x, w, bias, opts);
  const y = empty([g.N, g.OH, g.OW, g.Cout], 'f32', 'conv2d');
  if (y.size === 0) return y;
  const p = paddedGeom(g);
  if (p) {
    const x4 = padInput(x, g, p);
    const w4 = padWeight(w, g, p);
    runGather('fwd', p, x4, w4, bias, y);
    x4.dispose();
    w4.dispose();
  } else runGather('fwd', g, x, w, bias, y);
  return y;
}

/** Gradient of the input: a transposed gathered GEMM over dy. */
export function conv2dBackwardInput(dy: Tensor, w: Tensor, g: ConvGeom): Tensor {
  if (g.N * g.H * g.W === 0) return empty([g.N, g.H, g.W, g.Cin], 'f32', 'conv2d.dx');
  const p = paddedGeom(g);
  const dx = empty([g.N, g.H, g.W, p ? p.Cin : g.Cin], 'f32', 'conv2d.dx');
  const w4 = p ? padWeight(w, g, p) : w;
  const wt = transposeWeight(w4, p ?? g);
  runGather('dx', p ?? g, dy, wt, null, dx);
  wt.dispose();
  if (!p) return dx;
  w4.dispose();
  const cut = resizeRows(dx, g.N * g.H * g.W, p.Cin, g.Cin, [g.N, g.H, g.W, g.Cin]);
  dx.dispose();
  return cut;
}

/** Gradient of the weight. */
export function conv2dBackwardWeight(x: Tensor, dy: Tensor, g: ConvGeom): Tensor {
  const p = paddedGeom(g);
  if (!p) return weightGrad(g, x, dy);
  const x4 = padInput(x, g, p);
  const dw4 = weightGrad(p, x4, dy);
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
  if (needsGrad(x, w, bias)) {
    const g = geometry(x, w, bias, opts);
    const inputs = bias ? [x, w, bias] : [x, w];
    record('conv2d', inputs, y, (dy, [sx, sw]) => [
      x.requiresGrad ? conv2dBackwardInput(dy, sw, g) : null,
      w.requiresGrad ? conv2dBackwardWeight(sx, dy, g) : null,
      bias?.requiresGrad ? sum(dy, [0, 1, 2]) : null,
    ], [x, w]);
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
