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
  rsubScalar: { fwd: 's0 - a', bwd: '-a', saves: 'none', ref: (x, s) => s - x, refGrad: () => -1 },
  rdivScalar: { fwd: 's0 / a', bwd: '-a * s0 / (b * b)', saves: 'x', ref: (x, s) => s / x, refGrad: (x, _y, s) => -s / (x * x) },
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

interface BinaryDef {
  /** in terms of a and b */
  fwd: string;
  /** gradients wrt a and b before summing over broadcast axes, in terms of a (dy), b (saved a), c (saved b) */
  da: string;
  db: string;
  /** the gradients read the inputs (else only dy) */
  saves: boolean;
  ref: (x: number, y: number) => number;
  refDa: (x: number, y: number) => number;
  refDb: (x: number, y: number) => number;
  /** the op with a number as its second or first operand */
  scalar: (x: Tensor, s: number) => Tensor;
  scalarFirst: (s: number, x: Tensor) => Tensor;
}

type BinaryOp = 'add' | 'sub' | 'mul' | 'div';

const BINARY: Record<BinaryOp, BinaryDef> = {
  add: {
    fwd: 'a + b', da: 'a', db: 'a', saves: false,
    ref: (x, y) => x + y, refDa: () => 1, refDb: () => 1,
    scalar: (x, s) => addScalar(x, s), scalarFirst: (s, x) => addScalar(x, s),
  },
  sub: {
    fwd: 'a - b', da: 'a', db: '-a', saves: false,
    ref: (x, y) => x - y, refDa: () => 1, refDb: () => -1,
    scalar: (x, s) => subScalar(x, s), scalarFirst: (s, x) => unary('rsubScalar', x, s),
  },
  mul: {
    fwd: 'a * b', da: 'a * c', db: 'a * b', saves: true,
    ref: (x, y) => x * y, refDa: (_x, y) => y, refDb: (x) => x,
    scalar: (x, s) => mulScalar(x, s), scalarFirst: (s, x) => mulScalar(x, s),
  },
  div: {
    fwd: 'a / b', da: 'a / c', db: '-a * b / (c * c)', saves: true,
    ref: (x, y) => x / y, refDa: (_x, y) => 1 / y, refDb: (x, y) => -x / (y * y),
    scalar: (x, s) => divScalar(x, s), scalarFirst: (s, x) => unary('rdivScalar', x, s),
  },
};

function outShapeOf(op: string, a: Tensor, b: Tensor): number[] {
  a.assertLive(op);
  b.assertLive(op);
  try {
    return broadcastShapes(a.shape, b.shape);
  } catch {
    throw new Error(`${op}: shapes ${fmtShape(a.shape)} and ${fmtShape(b.shape)} cannot be broadcast together (trailing dimensions must match or be 1)`);
  }
}

function operand(op: string, side: string, v: unknown): void {
  if (typeof v === 'number' || v instanceof Tensor) return;
  throw new Error(`${op}: ${side} operand must be a Tensor or a number, got ${v === null ? 'null' : typeof v}`);
}

/** A broadcasting binary op; a number on either side runs the scalar op instead. */
function binary(op: BinaryOp, a: Tensor | number, b: Tensor | number): Tensor {
  operand(op, 'first', a);
  operand(op, 'second', b);
  const def = BINARY[op];
  if (typeof a === 'number' && typeof b === 'number') throw new Error(`${op}: at least one operand must be a Tensor, got two numbers`);
  if (typeof b === 'number') return def.scalar(a as Tensor, b);
  if (typeof a === 'number') return def.scalarFirst(a, b);
  const shape = outShapeOf(op, a, b);
  const y = ew(op, def.fwd, [a, b], shape);
  if (needsGrad(a, b)) {
    // a gradient of the plain dy ('a') is dy itself: no kernel unless it must be summed over broadcast axes
    const grad = (expr: string, dy: Tensor, saved: Tensor[], to: Shape, name: string) =>
      sumToShape(expr === 'a' ? dy : ew(name, expr, [dy, ...saved], shape), to);
    record(op, [a, b], y, (dy, saved, [needA, needB]) => [
      needA ? grad(def.da, dy, saved, a.shape, `${op}.backward.a`) : null,
      needB ? grad(def.db, dy, saved, b.shape, `${op}.backward.b`) : null,
    ], def.saves ? [a, b] : []);
  }
  return y;
}

/** a + b with NumPy broadcasting; either side may be a number. */
export const add = (a: Tensor | number, b: Tensor | number) => binary('add', a, b);
/** a - b with NumPy broadcasting; either side may be a number. */
export const sub = (a: Tensor | number, b: Tensor | number) => binary('sub', a, b);
/** a * b with NumPy broadcasting; either side may be a number. */
export const mul = (a: Tensor | number, b: Tensor | number) => binary('mul', a, b);
/** a / b with NumPy broadcasting; either side may be a number. */
export const div = (a: Tensor | number, b: Tensor | number) => binary('div', a, b);

/**
 * relu(a + b) for tensors of one shape in one pass: the end of a residual block. Its backward masks dy by the
 * saved output once and hands the same tensor to both inputs, where separate add and relu would write the sum,
 * read it back for the ReLU, and keep it for the ReLU's backward.
 */
export function addRelu(a: Tensor, b: Tensor): Tensor {
  const shape = outShapeOf('addRelu', a, b);
  if (shape.length !== a.shape.length || shape.length !== b.shape.length || a.size !== b.size) {
    throw new Error(`addRelu: expected two tensors of one shape, got ${fmtShape(a.shape)} and ${fmtShape(b.shape)}`);
  }
  const y = ew('addRelu', 'max(a + b, 0.0)', [a, b], shape);
  if (needsGrad(a, b)) {
    record('addRelu', [a, b], y, (dy, [sy], [needA, needB]) => {
      const g = reluBackward('addRelu.backward', dy, sy);
      return [needA ? g : null, needB ? (needA ? g.share() : g) : null];
    }, [y]);
  }
  return y;
}

/** dy where the ReLU's saved output y is > 0, else 0: the backward of an op that ends in a ReLU. */
export function reluBackward(name: string, dy: Tensor, y: Tensor): Tensor {
  return ew(name, 'select(0.0, a, b > 0.0)', [dy, y], dy.shape);
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
  binary(op: BinaryOp, a: Arr, b: Arr): Arr {
    const shape = broadcastShapes(a.shape, b.shape);
    const out = new Float64Array(size(shape));
    for (let i = 0; i < out.length; i++) out[i] = BINARY[op].ref(a.data[broadcastIndex(i, shape, a.shape)], b.data[broadcastIndex(i, shape, b.shape)]);
    return { data: out, shape };
  },
  binaryBackward(op: BinaryOp, a: Arr, b: Arr, dy: Arr): [Arr, Arr] {
    const shape = dy.shape;
    const da = new Float64Array(dy.data.length);
    const db = new Float64Array(dy.data.length);
    for (let i = 0; i < da.length; i++) {
      const x = a.data[broadcastIndex(i, shape, a.shape)];
      const y = b.data[broadcastIndex(i, shape, b.shape)];
      da[i] = dy.data[i] * BINARY[op].refDa(x, y);
      db[i] = dy.data[i] * BINARY[op].refDb(x, y);
    }
    return [refSumTo({ data: da, shape }, a.shape), refSumTo({ data: db, shape }, b.shape)];
  },
};
