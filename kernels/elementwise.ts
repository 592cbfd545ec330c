// Elementwise ops: unary maps, scalar ops and broadcasting binary ops, with their backward and float64
// reference. One WGSL generator (engine/ew.ts) serves all of them.

import { ew } from '../engine/ew.ts';
import { Tensor, fmtShape, shapeSize, type Shape } from '../engine/tensor.ts';
export { ew, full, onesLike } from '../engine/ew.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { broadcastShapes, broadcastIndex, map as refMap, sumTo as refSumTo, size, type Arr } from '../engine/ref.ts';
import { sumToShape } from './reduce.ts';

// ---- unary ops ----------------------------------------------------------------------------------------

interface UnaryDef {
  /** in terms of a (the input) and s0 (the scalar); a function of the scalar where it picks the expression */
  fwd: string | ((s: number) => string);
  /** gradient wrt the input in terms of a (dy), b (the saved input x) or b (the saved output y), s0, s1 = s0 - 1 */
  bwd: string | ((s: number) => string);
  saves: 'x' | 'y' | 'none';
  ref: (x: number, s: number) => number;
  refGrad: (x: number, y: number, s: number) => number;
}

const UNARY: Record<string, UnaryDef> = {
  relu: { fwd: 'max(a, 0.0)', bwd: 'select(0.0, a, b > 0.0)', saves: 'x', ref: (x) => Math.max(x, 0), refGrad: (x) => (x > 0 ? 1 : 0) },
  exp: { fwd: 'exp(a)', bwd: 'a * b', saves: 'y', ref: Math.exp, refGrad: (_x, y) => y },
  log: { fwd: 'log(a)', bwd: 'a / b', saves: 'x', ref: Math.log, refGrad: (x) => 1 / x },
  sqrt: { fwd: 'sqrt(a)', bwd: 'a * 0.5 / b', saves: 'y', ref: Math.sqrt, refGrad: (_x, y) => 0.5 / y },
  neg: { fwd: '-a', bwd: '-a', saves: 'none', ref: (x) => -x, refGrad: () => -1 },
  addScalar: { fwd: 'a + s0', bwd: 'a', saves: 'none', ref: (x, s) => x + s, refGrad: () => 1 },
  mulScalar: { fwd: 'a * s0', bwd: 'a * s0', saves: 'none', ref: (x, s) => x * s, refGrad: (_x, _y, s) => s },
  powScalar: {
    fwd: (s) => powExpr('a', s, 's0'),
    bwd: (s) => `a * s0 * ${powExpr('b', s - 1, 's1')}`,
    saves: 'x',
    ref: (x, s) => Math.pow(x, s),
    refGrad: (x, _y, s) => s * Math.pow(x, s - 1),
  },
};

/**
 * WGSL for x^e with JavaScript's (and PyTorch's) semantics. WGSL's pow(x, e) is exp2(e·log2(x)): NaN for every
 * negative x and for 0^0, 0 (not Inf) for 0^-e on some drivers, and inexact for small integer powers. So: exact
 * products for small exponents, a reciprocal for negative exponents, and for other integer exponents
 * pow(|x|, e) with the sign of x when e is odd; non-integer e keeps pow (NaN for negative x, as Math.pow).
 * `u` is the WGSL expression of e (a uniform).
 */
function powExpr(x: string, e: number, u: string): string {
  if (e === 0) return '1.0';
  if (e < 0) return `(1.0 / ${powExpr(x, -e, `(-${u})`)})`;
  if (e === 1) return x;
  if (e === 2) return `(${x} * ${x})`;
  if (e === 3) return `(${x} * ${x} * ${x})`;
  if (!Number.isInteger(e)) return `pow(${x}, ${u})`;
  const p = `pow(abs(${x}), ${u})`;
  if (e % 2 === 0) return p;
  return `bitcast<f32>(bitcast<u32>(${p}) | (bitcast<u32>(${x}) & 0x80000000u))`; // |x|^e with x's sign
}

function unary(op: keyof typeof UNARY, x: Tensor, s = 0, name: string = op): Tensor {
  const def = UNARY[op];
  const fwd = typeof def.fwd === 'function' ? def.fwd(s) : def.fwd;
  const y = ew(name, fwd, [x], x.shape, [s]);
  if (needsGrad(x)) {
    const saved = def.saves === 'x' ? [x] : def.saves === 'y' ? [y] : [];
    const bwd = typeof def.bwd === 'function' ? def.bwd(s) : def.bwd;
    record(name, [x], y, (dy, [v]) => [ew(`${name}.backward`, bwd, v ? [dy, v] : [dy], x.shape, [s, s - 1])], saved);
  }
  return y;
}

export const relu = (x: Tensor) => unary('relu', x);
export const exp = (x: Tensor) => unary('exp', x);
export const log = (x: Tensor) => unary('log', x);
export const sqrt = (x: Tensor) => unary('sqrt', x);
export const neg = (x: Tensor) => unary('neg', x);
export const addScalar = (x: Tensor, s: number) => unary('addScalar', x, s);
export const mulScalar = (x: Tensor, s: number) => unary('mulScalar', x, s);
export const powScalar = (x: Tensor, s: number) => unary('powScalar', x, s);
export const subScalar = (x: Tensor, s: number) => unary('addScalar', x, -s, 'subScalar');
export const divScalar = (x: Tensor, s: number) => unary('mulScalar', x, 1 / s, 'divScalar');

// ---- binary ops with broadcasting ---------------------------------------------------------------------

function outShapeOf(op: string, a: Tensor, b: Tensor): number[] {
  a.assertLive(op);
  b.assertLive(op);
  try {
    return broadcastShapes(a.shape, b.shape);
  } catch {
    throw new Error(`${op}: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} cannot be broadcast together (trailing dimensions must match or be 1)`);
  }
}

export function add(a: Tensor, b: Tensor): Tensor {
  const shape = outShapeOf('add', a, b);
  const y = ew('add', 'a + b', [a, b], shape);
  if (needsGrad(a, b)) record('add', [a, b], y, (dy) => [sumToShape(dy, a.shape), sumToShape(dy, b.shape)]);
  return y;
}

export function sub(a: Tensor, b: Tensor): Tensor {
  const shape = outShapeOf('sub', a, b);
  const y = ew('sub', 'a - b', [a, b], shape);
  if (needsGrad(a, b)) {
    record('sub', [a, b], y, (dy) => [sumToShape(dy, a.shape), b.requiresGrad ? sumToShape(ew('neg', '-a', [dy], dy.shape), b.shape) : null]);
  }
  return y;
}

export function mul(a: Tensor, b: Tensor): Tensor {
  const shape = outShapeOf('mul', a, b);
  const y = ew('mul', 'a * b', [a, b], shape);
  if (needsGrad(a, b)) {
    record('mul', [a, b], y, (dy, [sa, sb]) => [
      a.requiresGrad ? sumToShape(ew('mul', 'a * b', [dy, sb], shape), a.shape) : null,
      b.requiresGrad ? sumToShape(ew('mul', 'a * b', [dy, sa], shape), b.shape) : null,
    ], [a, b]);
  }
  return y;
}

export function div(a: Tensor, b: Tensor): Tensor {
  const shape = outShapeOf('div', a, b);
  const y = ew('div', 'a / b', [a, b], shape);
  if (needsGrad(a, b)) {
    record('div', [a, b], y, (dy, [sa, sb]) => [
      a.requiresGrad ? sumToShape(ew('div', 'a / b', [dy, sb], shape), a.shape) : null,
      b.requiresGrad ? sumToShape(ew('div.backward', '-a * b / (c * c)', [dy, sa, sb], shape), b.shape) : null,
    ], [a, b]);
  }
  return y;
}

/** A view with a new shape of the same size (no copy). */
export function reshape(x: Tensor, shape: Shape): Tensor {
  x.assertLive('reshape');
  const s = [...shape];
  const hole = s.indexOf(-1);
  if (hole >= 0) {
    const rest = shapeSize(s.filter((_, i) => i !== hole));
    s[hole] = rest === 0 ? 0 : x.size / rest;
  }
  if (shapeSize(s) !== x.size || s.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`reshape: cannot reshape ${fmtShape(x.shape)} (${x.size} elements) to ${fmtShape(shape)}`);
  }
  const y = x.share(s);
  if (needsGrad(x)) record('reshape', [x], y, (dy) => [dy.share(x.shape)]);
  return y;
}

// ---- float64 reference --------------------------------------------------------------------------------

export const ref = {
  unary(op: keyof typeof UNARY, x: Arr, s = 0): Arr {
    return refMap(x, (v) => UNARY[op].ref(v, s));
  },
  unaryBackward(op: keyof typeof UNARY, x: Arr, dy: Arr, s = 0): Arr {
    const def = UNARY[op];
    return refMap(x, (v, i) => dy.data[i] * def.refGrad(v, def.ref(v, s), s));
  },
  binary(op: 'add' | 'sub' | 'mul' | 'div', a: Arr, b: Arr): Arr {
    const shape = broadcastShapes(a.shape, b.shape);
    const out = new Float64Array(size(shape));
    for (let i = 0; i < out.length; i++) {
      const x = a.data[broadcastIndex(i, shape, a.shape)];
      const y = b.data[broadcastIndex(i, shape, b.shape)];
      out[i] = op === 'add' ? x + y : op === 'sub' ? x - y : op === 'mul' ? x * y : x / y;
    }
    return { data: out, shape };
  },
  binaryBackward(op: 'add' | 'sub' | 'mul' | 'div', a: Arr, b: Arr, dy: Arr): [Arr, Arr] {
    const shape = dy.shape;
    const da = new Float64Array(dy.data.length);
    const db = new Float64Array(dy.data.length);
    for (let i = 0; i < da.length; i++) {
      const x = a.data[broadcastIndex(i, shape, a.shape)];
      const y = b.data[broadcastIndex(i, shape, b.shape)];
      const g = dy.data[i];
      if (op === 'add') (da[i] = g), (db[i] = g);
      else if (op === 'sub') (da[i] = g), (db[i] = -g);
      else if (op === 'mul') (da[i] = g * y), (db[i] = g * x);
      else (da[i] = g / y), (db[i] = (-g * x) / (y * y));
    }
    return [refSumTo({ data: da, shape }, a.shape), refSumTo({ data: db, shape }, b.shape)];
  },
};
