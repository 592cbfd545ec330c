// Direct convolution for layers with few input channels (a grayscale or RGB stem): forward and weight gradient.
// The GEMM kernels of conv2d.ts pay a fixed cost per row and tap (decode, bounds, one operand load per lane) that
// a 16-channel layer spreads over 4 channel quads and a 1-channel stem spends on one value, padded to a quad of
// which 3 are zeros: on lavapipe the 1 -> 16 stem at 28x28 took as long as a 16 -> 16 layer, for a sixteenth of
// its multiply-adds. Here an invocation owns one output pixel (forward) or a slice of pixels (dW). The forward
// unrolls the taps, input channels and output quads, with the kernel size and channel counts compiled in, so every
// weight address is a compile-time constant: a SIMD driver loads it once for all lanes (on lavapipe a load whose
// address is not a compile-time constant becomes a per-lane loop, and with uniform but run-time addresses the
// weight loads made this kernel no faster than the padded GEMM). dW sums per-pixel outer products of the tap's
// inputs and dy's quads. Needs no subgroups and no workgroup memory: the same kernels serve every adapter.

import { kernel } from '../engine/kernel.ts';
import { Tensor, empty } from '../engine/tensor.ts';
import { sum } from './reduce.ts';
import type { ConvGeom } from './conv2d-geom.ts';

const WG = 64;
/** Forward: the unrolled multiply-adds per pixel (taps x Cin x output quads, vec4) a layer may have. */
const FWD_MAX_FMAS = 144;
/** dW accumulators (vec4) per invocation: taps x Cin x output quads of one workgroup's share (LLVM compile time grows fast beyond). */
const DW_ACCUMULATORS = 36;
const DW_QUADS = 4;
/** dW: invocations along the pixels, each summing its slice; their partial sums are added by one reduction. */
const DW_ROW_WORKGROUPS = 16;
/** Beyond this many (tap group x column group) workgroup rows, dW would re-read dy that often: the GEMM wins. */
const DW_MAX_GROUPS = 8;

/** Input channels the direct kernels take: the ones the GEMM pads (4 and more run there as they are). */
export const DIRECT_MAX_CIN = 3;

const range = (n: number) => [...Array(n).keys()];

function dwShape(g: ConvGeom): { CQ: number; T: number; colGroups: number; tapGroups: number } {
  const nq = Math.ceil(g.Cout / 4);
  const CQ = Math.min(nq, DW_QUADS);
  const taps = g.KH * g.KW;
  const T = Math.max(1, Math.min(taps, Math.floor(DW_ACCUMULATORS / (g.Cin * CQ))));
  return { CQ, T, colGroups: Math.ceil(nq / CQ), tapGroups: Math.ceil(taps / T) };
}

/** Whether the direct kernels suit this layer: few input channels, and (dW) few enough workgroup rows. */
export function directSuits(g: ConvGeom, pass: 'fwd' | 'dW'): boolean {
  if (g.Cin > DIRECT_MAX_CIN) return false;
  if (pass === 'fwd') return g.KH * g.KW * g.Cin * Math.ceil(g.Cout / 4) <= FWD_MAX_FMAS;
  const s = dwShape(g);
  return s.colGroups * s.tapGroups <= DW_MAX_GROUPS;
}

const GEOM_UNIFORMS = {
  rows: 'u32', H: 'i32', W: 'i32', OH: 'u32', OW: 'u32', cout: 'u32', nq: 'u32', kh: 'i32', kw: 'i32', s: 'i32', pad: 'i32',
} as const;

/** WGSL: the pixel of invocation m (clamped to the last one; `valid` says whether it is real). */
const PIXEL = `let valid = m < p.rows;
    let mm = min(m, p.rows - 1u);
    let ow = i32(mm % p.OW);
    let oh = i32((mm / p.OW) % p.OH);
    let n = i32(mm / (p.OW * p.OH));`;

/** WGSL: this tap's input values v0..v{cin-1} (0 outside the image), with no branch. */
const tapInputs = (cin: number, extra = '') => `let ih = oh * p.s - p.pad + kh;
      let iw = ow * p.s - p.pad + kw;
      let inside = ${extra}ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
      let xb = u32(select(0, ((n * p.H + ih) * p.W + iw) * ${cin}, inside));
      ${range(cin).map((c) => `let v${c} = select(0.0, x[xb + ${c}u], inside);`).join(' ')}`;

interface ForwardShape {
  cin: number;
  KH: number;
  KW: number;
  cout: number;
  /** epilogue: add the matching element of a tensor of y's shape, then (relu) max(value, 0) */
  addend: boolean;
  relu: boolean;
}

function forwardKernel(f: ForwardShape) {
  return kernel(`conv2d|direct|fwd|${JSON.stringify(f)}`, () => {
    const { cin, KH, KW, cout, addend, relu } = f;
    const aligned = cout % 4 === 0;
    const nq = Math.ceil(cout / 4);
    const T = aligned ? 'vec4<f32>' : 'f32';
    // weight row r (= tap * cin + c), output quad q: constant addresses (clamped; quads past the end are not stored)
    const wq = (r: number, q: number) => aligned ? `w[${r * nq + q}]`
      : `vec4<f32>(${range(4).map((j) => `w[${r * cout + Math.min(q * 4 + j, cout - 1)}]`).join(', ')})`;
    const taps = range(KH).flatMap((kh) => range(KW).map((kw) => `{
      let ih = oh * p.s - p.pad + ${kh};
      let iw = ow * p.s - p.pad + ${kw};
      let inside = ih >= 0 && ih < p.H && iw >= 0 && iw < p.W;
      let xb = u32(select(0, ((n * p.H + ih) * p.W + iw) * ${cin}, inside));
      ${range(cin).map((c) => `let v${c} = select(0.0, x[xb + ${c}u], inside);`).join(' ')}
      ${range(cin).flatMap((c) => range(nq).map((q) => `a${q} = fma(vec4<f32>(v${c}), ${wq((kh * KW + kw) * cin + c, q)}, a${q});`)).join('\n      ')}
    }`));
    const act = (e: string, zero: string) => (relu ? `max(${e}, ${zero})` : e);
    const stores = range(nq).map((q) => {
      if (aligned) {
        const e = `mm * ${nq}u + ${q}u`;
        return `y[${e}] = ${act(`a${q} + select(vec4<f32>(0.0), bias[${q}], p.hasBias != 0u)${addend ? ` + addend[${e}]` : ''}`, 'vec4<f32>(0.0)')};`;
      }
      return range(4).filter((j) => q * 4 + j < cout).map((j) => {
        const e = `mm * ${cout}u + ${q * 4 + j}u`;
        return `y[${e}] = ${act(`a${q}.${'xyzw'[j]} + select(0.0, bias[${q * 4 + j}], p.hasBias != 0u)${addend ? ` + addend[${e}]` : ''}`, '0.0')};`;
      }).join(' ');
    });
    return {
      name: 'conv2d.fwd.direct',
      uniforms: { rows: 'u32', H: 'i32', W: 'i32', OH: 'u32', OW: 'u32', s: 'i32', pad: 'i32', hasBias: 'u32' },
      // bias is bound to the weight again when there is none (hasBias = 0)
      bindings: { x: 'read f32', w: `read ${T}`, bias: `read ${T}`, ...(addend ? { addend: `read ${T}` } : {}), y: `rw ${T}` },
      workgroupSize: WG,
      body: `
  // pixels in workgroup-sized steps, so every loop bound stays uniform
  for (var base = wid.x * ${WG}u; base < p.rows; base += nwg.x * ${WG}u) {
    let m = base + li;
    ${PIXEL}
    ${range(nq).map((q) => `var a${q} = vec4<f32>(0.0);`).join(' ')}
    ${taps.join('\n    ')}
    if (valid) {
    ${stores.join('\n    ')}
    }
  }`,
    };
  });
}

/**
 * y = conv(x, w) + bias (+ addend, then max(., 0) with relu: conv2d's epilogue) for layers where directSuits(g,
 * 'fwd'), written into y ([N, OH, OW, Cout]).
 */
export function directForward(g: ConvGeom, x: Tensor, w: Tensor, bias: Tensor | null, y: Tensor, addend: Tensor | null = null, relu = false): void {
  const rows = g.N * g.OH * g.OW;
  const xGroups = Math.min(Math.ceil(rows / WG), 65535);
  forwardKernel({ cin: g.Cin, KH: g.KH, KW: g.KW, cout: g.Cout, addend: !!addend, relu }).launch(
    { rows, H: g.H, W: g.W, OH: g.OH, OW: g.OW, s: g.stride, pad: g.pad, hasBias: bias ? 1 : 0, x, w, bias: bias ?? w, ...(addend ? { addend } : {}), y },
    [xGroups, 1],
  );
}

function weightGradKernel(cin: number, CQ: number, T: number, aligned: boolean) {
  return kernel(`conv2d|direct|dW|${cin}|${CQ}|${T}|${aligned}`, () => {
    const dyQuad = (q: number) => aligned
      ? `select(vec4<f32>(0.0), dy[mm * p.nq + min(c0 + ${q}u, p.nq - 1u)], valid && c0 + ${q}u < p.nq)`
      : `vec4<f32>(${range(4).map((j) => `select(0.0, dy[mm * p.cout + min((c0 + ${q}u) * 4u + ${j}u, p.cout - 1u)], valid && (c0 + ${q}u) * 4u + ${j}u < p.cout)`).join(', ')})`;
    const acc = (t: number, c: number, q: number) => `a${t}_${c}_${q}`;
    const taps = range(T).map((t) => `{
      let tap = t0 + ${t}u;
      let kh = i32(tap / u32(p.kw));
      let kw = i32(tap % u32(p.kw));
      ${tapInputs(cin, `tap < p.taps && `)}
      ${range(cin).flatMap((c) => range(CQ).map((q) => `${acc(t, c, q)} = fma(vec4<f32>(v${c}), d${q}, ${acc(t, c, q)});`)).join(' ')}
    }`);
    // partial[inv, (tap * cin + c) * cout + co]: each element written by exactly one workgroup row
    const stores = range(T).flatMap((t) => range(cin).flatMap((c) => range(CQ).flatMap((q) => range(4).map((j) =>
      `if (t0 + ${t}u < p.taps && (c0 + ${q}u) * 4u + ${j}u < p.cout) { out[inv * p.wsize + ((t0 + ${t}u) * ${cin}u + ${c}u) * p.cout + (c0 + ${q}u) * 4u + ${j}u] = ${acc(t, c, q)}.${'xyzw'[j]}; }`))));
    return {
      name: 'conv2d.dW.direct',
      uniforms: { ...GEOM_UNIFORMS, taps: 'u32', colGroups: 'u32', wsize: 'u32' },
      bindings: { x: 'read f32', dy: `read ${aligned ? 'vec4<f32>' : 'f32'}`, out: 'rw f32' },
      workgroupSize: WG,
      body: `
  let c0 = (wid.y % p.colGroups) * ${CQ}u;
  let t0 = (wid.y / p.colGroups) * ${T}u;
  let inv = wid.x * ${WG}u + li;
  ${range(T).flatMap((t) => range(cin).flatMap((c) => range(CQ).map((q) => `var ${acc(t, c, q)} = vec4<f32>(0.0);`))).join(' ')}
  for (var base = wid.x * ${WG}u; base < p.rows; base += nwg.x * ${WG}u) {
    let m = base + li;
    ${PIXEL}
    ${range(CQ).map((q) => `let d${q} = ${dyQuad(q)};`).join('\n    ')}
    ${taps.join('\n    ')}
  }
  ${stores.join('\n  ')}`,
    };
  });
}

/** dW [KH, KW, Cin, Cout] for Cin <= DIRECT_MAX_CIN: per-invocation partial sums, then one reduction. */
export function directWeightGrad(g: ConvGeom, x: Tensor, dy: Tensor): Tensor {
  const { CQ, T, colGroups, tapGroups } = dwShape(g);
  const aligned = g.Cout % 4 === 0;
  const rows = g.N * g.OH * g.OW;
  const xGroups = Math.max(1, Math.min(DW_ROW_WORKGROUPS, Math.ceil(rows / WG)));
  const wsize = g.KH * g.KW * g.Cin * g.Cout;
  const partial = empty([xGroups * WG, wsize], 'f32', 'conv2d.dW');
  weightGradKernel(g.Cin, CQ, T, aligned).launch(
    { rows, H: g.H, W: g.W, OH: g.OH, OW: g.OW, cout: g.Cout, nq: Math.ceil(g.Cout / 4), kh: g.KH, kw: g.KW, s: g.stride, pad: g.pad, taps: g.KH * g.KW, colGroups, wsize, x, dy, out: partial },
    [xGroups, colGroups * tapGroups],
  );
  const total = sum(partial, 0);
  partial.dispose();
  const dw = total.share([g.KH, g.KW, g.Cin, g.Cout]);
  total.dispose();
  return dw;
}
