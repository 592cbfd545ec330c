// Tensor methods as PyTorch and tfjs users write them (x.add(y), x.matmul(w), loss.backward(), ...). They are the
// free functions of kernels/ and engine/tape.ts, installed on Tensor.prototype here and declared on the Tensor type
// by declaration merging: engine/tensor.ts (the core) cannot import the kernels or the tape, which import it.
// nn/index.ts (the public barrel) imports this module for its side effect, so every user of the package has them.

import { Tensor, type DType, type Shape } from '../engine/tensor.ts';
import { backward, detach } from '../engine/tape.ts';
import { add, sub, mul, div, relu, exp, log, sqrt, neg, addScalar, subScalar, mulScalar, divScalar, powScalar, reshape } from './elementwise.ts';
import { sum, mean, max } from './reduce.ts';
import { matmul } from './matmul.ts';
import { softmax, argmax } from './softmax.ts';

type Axes = number | readonly number[];

declare module '../engine/tensor.ts' {
  interface Tensor<D extends DType = DType> {
    /** this + other, broadcasting (NumPy rules); a number adds a scalar. */
    add(other: Tensor | number): Tensor<'f32'>;
    /** this - other, broadcasting; a number subtracts a scalar. */
    sub(other: Tensor | number): Tensor<'f32'>;
    /** this * other, broadcasting; a number scales. */
    mul(other: Tensor | number): Tensor<'f32'>;
    /** this / other, broadcasting; a number divides every element. */
    div(other: Tensor | number): Tensor<'f32'>;
    /** this ** exponent (JavaScript's Math.pow semantics). */
    pow(exponent: number): Tensor<'f32'>;
    /** Matrix product (batched or broadcast over leading dimensions); transposes are flags, never copies. */
    matmul(other: Tensor, transA?: boolean, transB?: boolean): Tensor<'f32'>;
    relu(): Tensor<'f32'>;
    exp(): Tensor<'f32'>;
    log(): Tensor<'f32'>;
    sqrt(): Tensor<'f32'>;
    neg(): Tensor<'f32'>;
    /** Sum over `axes` (default: all, giving a scalar []). */
    sum(axes?: Axes, keepDims?: boolean): Tensor<'f32'>;
    /** Mean over `axes` (default: all). */
    mean(axes?: Axes, keepDims?: boolean): Tensor<'f32'>;
    /** Maximum over `axes` (default: all). */
    max(axes?: Axes, keepDims?: boolean): Tensor<'f32'>;
    /** A view with a new shape, as `x.reshape(2, -1)` or `x.reshape([2, -1])` (one -1 is inferred). */
    reshape(...shape: number[] | [Shape]): Tensor<D>;
    /** A view of dimensions startDim.. merged into one (default: all, 1-D), as torch.flatten. */
    flatten(startDim?: number): Tensor<D>;
    /** Softmax over the last dimension. */
    softmax(): Tensor<'f32'>;
    /** Indices (i32) of the maxima along `axis` (default: the last). */
    argmax(axis?: number): Tensor<'i32'>;
    /** The same data without gradient history. */
    detach(): Tensor<D>;
    /**
     * Gradients of this tensor (a scalar, or give `grad` of its shape) with respect to every tensor that requires
     * grad, accumulated into their `.grad`; frees the graph (one backward per forward, as PyTorch).
     */
    backward(grad?: Tensor): void;
  }
}

const binary = (op: (a: Tensor, b: Tensor) => Tensor, scalar: (a: Tensor, s: number) => Tensor, name: string) =>
  function (this: Tensor, other: Tensor | number): Tensor {
    if (typeof other === 'number') return scalar(this, other);
    if (!(other instanceof Tensor)) throw new Error(`${name}: expected a Tensor or a number, got ${describe(other)}`);
    return op(this, other);
  };

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array (make a tensor of it with tensor())';
  return typeof v === 'object' ? (v.constructor?.name ?? 'an object') : typeof v;
}

function shapeArgs(name: string, args: readonly unknown[]): number[] {
  const shape = args.length === 1 && Array.isArray(args[0]) ? (args[0] as number[]) : (args as number[]);
  if (shape.some((d) => typeof d !== 'number')) throw new Error(`${name}: expected numbers or one array of numbers, got (${args.map(describe).join(', ')})`);
  return [...shape];
}

const methods: Record<string, (this: Tensor, ...args: any[]) => unknown> = {
  add: binary(add, addScalar, 'add'),
  sub: binary(sub, subScalar, 'sub'),
  mul: binary(mul, mulScalar, 'mul'),
  div: binary(div, divScalar, 'div'),
  pow(this: Tensor, e: number) {
    if (typeof e !== 'number') throw new Error(`pow: the exponent must be a number, got ${describe(e)}`);
    return powScalar(this, e);
  },
  matmul(this: Tensor, other: Tensor, transA = false, transB = false) {
    return matmul(this, other, transA, transB);
  },
  relu(this: Tensor) {
    return relu(this);
  },
  exp(this: Tensor) {
    return exp(this);
  },
  log(this: Tensor) {
    return log(this);
  },
  sqrt(this: Tensor) {
    return sqrt(this);
  },
  neg(this: Tensor) {
    return neg(this);
  },
  sum(this: Tensor, axes?: Axes, keepDims = false) {
    return sum(this, axes, keepDims);
  },
  mean(this: Tensor, axes?: Axes, keepDims = false) {
    return mean(this, axes, keepDims);
  },
  max(this: Tensor, axes?: Axes, keepDims = false) {
    return max(this, axes, keepDims);
  },
  reshape(this: Tensor, ...shape: unknown[]) {
    return reshape(this, shapeArgs('reshape', shape));
  },
  flatten(this: Tensor, startDim = 0) {
    const r = this.rank;
    const s = startDim < 0 ? startDim + r : startDim;
    if (!Number.isInteger(s) || s < 0 || s > Math.max(0, r - 1)) throw new Error(`flatten: startDim ${startDim} is out of range for a tensor of rank ${r}`);
    return reshape(this, [...this.shape.slice(0, s), -1]);
  },
  softmax(this: Tensor) {
    return softmax(this);
  },
  argmax(this: Tensor, axis = -1) {
    return argmax(this, axis);
  },
  detach(this: Tensor) {
    return detach(this);
  },
  backward(this: Tensor, grad?: Tensor) {
    backward(this, grad);
  },
};

for (const [name, fn] of Object.entries(methods)) {
  // non-enumerable, as class methods: Object.keys(t) and spreads stay the tensor's own fields
  Object.defineProperty(Tensor.prototype, name, { value: fn, writable: true, configurable: true, enumerable: false });
}
