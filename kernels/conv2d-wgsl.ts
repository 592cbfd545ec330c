// The parts of conv2d's GEMM template that its lane and tiled kernels share: the lanes a kernel computes with,
// uniforms, bindings, quad loads and stores, and the tap loops (kernels/conv2d.ts describes the template).

import type { BindingDecl } from '../engine/kernel.ts';
import { gpu } from '../engine/device.ts';
import { convSubgroupWidth, type ConvTuning } from './conv2d-tuning.ts';

// ---- lanes: real subgroups of a fixed width, or emulated ones ---------------------------------------------

export interface Lanes {
  /** lanes that share loaded rows */
  SG: number;
  /** true: share through subgroupBroadcast; false: every lane loads the shared rows itself */
  subgroups: boolean;
  /** lane groups per workgroup (only without subgroups, where groups are independent) */
  G: number;
}

export function lanesFor(t: ConvTuning): Lanes {
  if (t.variant === 'portable') return { SG: 8, subgroups: false, G: 8 };
  const width = convSubgroupWidth();
  if (!width) {
    const info: any = (gpu('conv2d').adapter as any).info ?? {};
    throw new Error(`conv2d: the 'subgroups' variant needs subgroups of width 4, 8 or 16 (adapter: ${info.subgroupMinSize}..${info.subgroupMaxSize}); use 'portable' or 'tiled'`);
  }
  return { SG: width, subgroups: true, G: 1 };
}

export const range = (n: number) => [...Array(n).keys()];
export const nextPow2 = (n: number) => 2 ** Math.ceil(Math.log2(Math.max(1, n)));
export const XYZW = 'xyzw';
/** Lines of generated WGSL, indented. */
export const lines = (indent: number, ls: (string | false)[]) => ls.filter((l): l is string => l !== false).map((l) => ' '.repeat(indent) + l).join('\n');

// ---- the template: uniforms, bindings and the parts every variant shares ----------------------------------

/**
 * fwd and dx: rows decode as (n, r, q) over [dh, dw]; the source image (x, or dy for dx) is [sh, sw] with ck
 * channels (kq quads), the output has cn channels (nq quads); dx's output image is [th, tw].
 */
export const GEMM_UNIFORMS = {
  rows: 'u32', tiles: 'u32', rowTiles: 'u32', colTiles: 'u32',
  dh: 'u32', dw: 'u32', sh: 'i32', sw: 'i32',
  th: 'i32', tw: 'i32', ck: 'u32', cn: 'u32',
  kq: 'u32', nq: 'u32', kh: 'i32', kw: 'i32',
  s: 'i32', pad: 'i32', hasBias: 'u32',
} as const;

/** dW: rows (kh, kw, ci) in rqt quads, columns cout in nq quads; the pixels of each chunk are summed. */
export const DW_UNIFORMS = {
  tiles: 'u32', rowTiles: 'u32', colTiles: 'u32', perChunk: 'u32',
  total: 'u32', H: 'i32', W: 'i32', OH: 'u32',
  OW: 'u32', cin: 'u32', cout: 'u32', cq: 'u32',
  nq: 'u32', rqt: 'u32', kw: 'i32', s: 'i32',
  pad: 'i32', wsize: 'u32',
} as const;

export function gemmBindings(aligned: boolean, addend: boolean, moments = false): Record<string, BindingDecl> {
  const T = aligned ? 'vec4<f32>' : 'f32';
  // bias is bound to the weight again when there is none (hasBias = 0)
  const b: Record<string, BindingDecl> = { a: `read ${T}`, b: `read ${T}`, bias: `read ${T}` };
  if (addend) b.addend = `read ${T}`;
  b.y = `rw ${T}`;
  if (moments) b.mom = `rw ${T}`;
  return b;
}

export function dwBindings(aligned: boolean) {
  const T = aligned ? 'vec4<f32>' : 'f32';
  return { x: `read ${T}`, dy: `read ${T}`, out: `rw ${T}` } as const;
}

/**
 * Quad loads and stores along channels: one vec4 where the channel count is a multiple of 4, else four scalar
 * loads with checks (channels past the end read 0 and are not stored). Callers guard the pixel and the quad.
 */
export function quadHelpers(aligned: boolean, fns: { name: string; buf: string; quads: string; count: string }[], store: { name: string; buf: string; quads: string; count: string }): string {
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

/**
 * The batchNorm prologue of a launch whose A operand (fwd: the image; dW: x) is a batchNorm's input, so that the
 * normalized activation is never written: `bnIn(v, q, img)` is batchNorm's normalize pass (and its ReLU) applied to
 * the quad v of channel quad q of image img as it is read, with the statistics of img's group (`pst` [G * 4, C]
 * as vec4: shift, dmean, invstd, gamma * invstd; `pbeta`; p.pimg images per group), in the normalize pass's order
 * of operations. `quads` is the uniform holding x's channel quads. Callers zero the padding after it.
 */
export function bnPrologueFn(relu: boolean, quads: string): string {
  return `fn bnIn(v: vec4<f32>, q: u32, img: u32) -> vec4<f32> {
  let s0 = 4u * (img / p.pimg) * ${quads};
  let y = ((v - pst[s0 + q]) - pst[s0 + ${quads} + q]) * pst[s0 + 3u * ${quads} + q] + pbeta[q];
  return ${relu ? 'max(y, vec4<f32>(0.0))' : 'y'};
}`;
}
export const BN_PROLOGUE_BINDINGS = { pst: 'read vec4<f32>', pbeta: 'read vec4<f32>' } as const;

/** A tile index's column tile, and its row tile within one chunk or parity class (rt / rowTiles). */
export const TILE_DECODE = `let colTile = tile % p.colTiles;
  let rt = tile / p.colTiles;
  let rowTile = rt % p.rowTiles;`;

/** dx runs one set of row tiles per parity class (ih % s, iw % s): only taps kh = ih + pad (mod s) reach it. */
export const PARITY_CLASS = `let cls = i32(rt / p.rowTiles);
  let ph = cls / p.s;
  let pw = cls % p.s;
  let kh0 = (ph + p.pad) % p.s;
  let kw0 = (pw + p.pad) % p.s;`;

/** The taps a row's sum runs over: all of them, or dx's parity class (kh0, kh0 + s, ...). */
export const tapLoops = (mode: 'fwd' | 'dx') =>
  mode === 'fwd' ? 'for (var kh = 0; kh < p.kh; kh++) {\n  for (var kw = 0; kw < p.kw; kw++) {' : 'for (var kh = kh0; kh < p.kh; kh += p.s) {\n  for (var kw = kw0; kw < p.kw; kw += p.s) {';
