// The elementwise generator: an expression over up to three inputs (a, b, c) and three scalars (s0, s1, s2),
// contiguous when every input has the output's shape, strided (broadcast) otherwise. It sits in the engine core
// because the tape needs it (gradient accumulation, the ones seed); kernels/elementwise.ts builds the
// differentiable ops on it.

import { launch, grid1d, type KernelSpec } from './recorder.ts';
import { Tensor, empty, fmtShape, type Shape } from './tensor.ts';

const WG = 256;
const MAX_RANK = 8;

function stridesFor(inShape: Shape, outShape: Shape): number[] {
  // element strides of `inShape` laid over `outShape`, 0 along broadcast dimensions
  const r = outShape.length;
  const off = r - inShape.length;
  const st = new Array(r).fill(0);
  let mul = 1;
  for (let d = r - 1; d >= off; d--) {
    const n = inShape[d - off];
    st[d] = n === 1 ? 0 : mul;
    mul *= n;
  }
  return st;
}

const specCache = new Map<string, KernelSpec>();

function ewSpec(name: string, expr: string, nIn: number, rank: number, contiguous: boolean, outType: string): KernelSpec {
  const key = `${name}|${expr}|${nIn}|${rank}|${contiguous}|${outType}`;
  let spec = specCache.get(key);
  if (spec) return spec;
  const names = ['a', 'b', 'c'].slice(0, nIn);
  const vec = (n: string) => `${n}: array<vec4<u32>, 2>,`;
  const structFields = ['n: u32, s0: f32, s1: f32, s2: f32,'];
  if (!contiguous) {
    structFields.push(vec('shape'));
    names.forEach((_, k) => structFields.push(vec(`st${k}`)));
  }
  let index = '';
  if (contiguous) names.forEach((n, k) => (index += `  let ${n} = in${k}[i];\n`));
  else {
    index += '  var r = i;\n';
    names.forEach((_, k) => (index += `  var o${k} = 0u;\n`));
    for (let d = rank - 1; d >= 0; d--) {
      const at = (f: string) => `p.${f}[${d >> 2}][${d & 3}]`;
      index += `  { let c = r % ${at('shape')}; r = r / ${at('shape')};`;
      names.forEach((_, k) => (index += ` o${k} += c * ${at(`st${k}`)};`));
      index += ' }\n';
    }
    names.forEach((n, k) => (index += `  let ${n} = in${k}[o${k}];\n`));
  }
  const code = `
struct P { ${structFields.join(' ')} }
@group(0) @binding(0) var<uniform> p: P;
${names.map((_, k) => `@group(0) @binding(${k + 1}) var<storage, read> in${k}: array<f32>;`).join('\n')}
@group(0) @binding(${nIn + 1}) var<storage, read_write> out: array<${outType}>;
@compute @workgroup_size(${WG})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * (nwg.x * ${WG}u);
  if (i >= p.n) { return; }
  let s0 = p.s0; let s1 = p.s1; let s2 = p.s2;
${index}  out[i] = ${expr};
}`;
  spec = { name, code, bindings: ['uniform', ...names.map(() => 'read' as const), 'rw'] };
  specCache.set(key, spec);
  return spec;
}

/**
 * Runs `expr` elementwise over inputs broadcast to `outShape`. The building block of every op in this file
 * (and of fused updates elsewhere). Not differentiable by itself.
 */
export function ew(name: string, expr: string, inputs: Tensor[], outShape: Shape, scalars: number[] = []): Tensor {
  for (const t of inputs) {
    t.assertLive(name);
    if (t.dtype !== 'f32') throw new Error(`${name}: expected f32 inputs, got ${t.dtype} tensor ${fmtShape(t.shape)}`);
  }
  if (outShape.length > MAX_RANK) throw new Error(`${name}: rank ${outShape.length} exceeds the supported ${MAX_RANK}`);
  const out = empty(outShape, 'f32', name);
  const n = out.size;
  if (n === 0) return out;
  const contiguous = inputs.every((t) => t.size === n && t.shape.length === outShape.length);
  const spec = ewSpec(name, expr, inputs.length, outShape.length, contiguous, 'f32');
  const u = new ArrayBuffer(contiguous ? 16 : 16 + 32 * (1 + inputs.length));
  const u32 = new Uint32Array(u);
  const f32 = new Float32Array(u);
  u32[0] = n;
  scalars.forEach((s, k) => (f32[1 + k] = s));
  if (!contiguous) {
    outShape.forEach((d, k) => (u32[4 + k] = d));
    inputs.forEach((t, j) => stridesFor(t.shape, outShape).forEach((s, k) => (u32[12 + 8 * j + k] = s)));
  }
  launch(spec, [u, ...inputs.map((t) => t.binding(name)), out.binding(name)], grid1d(n, WG));
  return out;
}

/** A tensor filled with `value`. */
export function full(shape: Shape, value: number): Tensor {
  const out = empty(shape, 'f32', 'full');
  if (out.size === 0) return out;
  const u = new ArrayBuffer(16);
  new Uint32Array(u)[0] = out.size;
  new Float32Array(u)[1] = value;
  launch(ewSpec('full', 's0', 0, shape.length, true, 'f32'), [u, out.binding('full')], grid1d(out.size, WG));
  return out;
}

export function onesLike(t: Tensor): Tensor {
  return full(t.shape, 1);
}

