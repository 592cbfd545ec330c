// The elementwise generator: an expression over up to three inputs (a, b, c) and three scalars (s0, s1, s2),
// contiguous when every input has the output's shape, strided (broadcast) otherwise. It sits in the engine core
// because the tape needs it (gradient accumulation, the ones seed); kernels/elementwise.ts builds the
// differentiable ops on it.

import { kernel, type Kernel, type KernelArg, type UniformType, type BindingDecl } from './kernel.ts';
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

/** The declared kernel for one expression over `nIn` inputs of one rank, contiguous or strided. */
function ewKernel(name: string, expr: string, nIn: number, rank: number, contiguous: boolean): Kernel {
  return kernel(`ew|${name}|${expr}|${nIn}|${contiguous ? 'flat' : `rank ${rank}`}`, () => {
    const names = ['a', 'b', 'c'].slice(0, nIn);
    const uniforms: Record<string, UniformType> = { n: 'u32', s0: 'f32', s1: 'f32', s2: 'f32' };
    const bindings: Record<string, BindingDecl> = {};
    names.forEach((_, k) => (bindings[`in${k}`] = 'read f32'));
    bindings.out = 'rw f32';
    let index = '';
    if (contiguous) names.forEach((n, k) => (index += `  let ${n} = in${k}[i];\n`));
    else {
      uniforms.shape = 'array<vec4<u32>, 2>';
      names.forEach((_, k) => (uniforms[`st${k}`] = 'array<vec4<u32>, 2>'));
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
    return {
      name,
      uniforms,
      bindings,
      workgroupSize: WG,
      flat: { limit: 'p.n' },
      body: `  let s0 = p.s0; let s1 = p.s1; let s2 = p.s2;\n${index}  out[i] = ${expr};`,
    };
  });
}

/**
 * Runs `expr` elementwise over inputs broadcast to `outShape`. The building block of every elementwise op
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
  const k = ewKernel(name, expr, inputs.length, outShape.length, contiguous);
  const args: Record<string, KernelArg> = { n, s0: scalars[0] ?? 0, s1: scalars[1] ?? 0, s2: scalars[2] ?? 0, out };
  inputs.forEach((t, j) => (args[`in${j}`] = t));
  if (!contiguous) {
    args.shape = outShape;
    inputs.forEach((t, j) => (args[`st${j}`] = stridesFor(t.shape, outShape)));
  }
  k.launch(args, { threads: n });
  return out;
}

/** A tensor filled with `value`. */
export function full(shape: Shape, value: number): Tensor {
  const out = empty(shape, 'f32', 'full');
  if (out.size === 0) return out;
  ewKernel('full', 's0', 0, shape.length, true).launch({ n: out.size, s0: value, s1: 0, s2: 0, out }, { threads: out.size });
  return out;
}

export function onesLike(t: Tensor): Tensor {
  return full(t.shape, 1);
}

