// Tensor: a shape and dtype over a range of a pooled GPU buffer. Several tensors may share one Storage
// (reshape views, parameter arenas, tensors saved for backward); the buffer goes back to the pool when the
// last of them is disposed.

import { gpu, deviceGeneration } from './device.ts';
import { pool, releasePooled, readRange, writeRange, clearRange, type BufferRange } from './recorder.ts';

/** One recorded op of the autograd tape (engine/tape.ts); a tensor computed by it points at it. */
export interface TapeNode {
  op: string;
  inputs: Tensor[];
  output: Tensor;
  /** Returns one gradient per input (null where the input needs none); dy is the output's gradient. */
  backward: (dy: Tensor) => (Tensor | null)[];
  /** Tensors the backward reads, held alive past any dispose() of the user's handles. */
  saved: Tensor[];
}

export type DType = 'f32' | 'i32' | 'u32';
export type TypedArray = Float32Array | Int32Array | Uint32Array;
export type Shape = readonly number[];

export class Storage {
  refs = 1;
  /** The device this buffer was made on (deviceGeneration()); a buffer of a lost or released device is dead. */
  readonly generation = deviceGeneration();
  constructor(
    readonly buffer: GPUBuffer,
    readonly bytes: number,
    /** false for buffers the pool does not own (an arena's own buffer is released by the arena). */
    readonly pooled = true,
  ) {}
  retain(): this {
    this.refs++;
    return this;
  }
  /** False once its device was lost and released (its buffer is destroyed). */
  get alive(): boolean {
    return this.generation === deviceGeneration();
  }
  release(): void {
    // a dead buffer went with its device and pool; dropping the handle is all there is to do
    if (--this.refs === 0 && this.pooled && this.alive) releasePooled(this.buffer);
  }
}

let nextId = 1;
const scopes: Set<Tensor>[] = [];

export function shapeSize(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function fmtShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

function checkShape(shape: Shape, what: string): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${what}: invalid shape ${fmtShape(shape)} (dimensions must be integers >= 0)`);
  }
}

export class Tensor {
  readonly id = nextId++;
  readonly shape: number[];
  readonly size: number;
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The tape record that produced this tensor, while its graph is alive. */
  _node: TapeNode | null = null;
  private _disposed = false;

  constructor(
    shape: Shape,
    readonly dtype: DType,
    readonly storage: Storage,
    /** Byte offset into storage.buffer; a multiple of 256 so it can be bound directly. */
    readonly byteOffset = 0,
  ) {
    this.shape = [...shape];
    this.size = shapeSize(shape);
    track(this);
  }

  get rank(): number {
    return this.shape.length;
  }

  get byteLength(): number {
    return this.size * 4;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  /** Throws if this tensor was disposed; `op` names the operation that wanted it. */
  assertLive(op: string): void {
    if (this._disposed) throw new Error(`${op}: tensor #${this.id} ${fmtShape(this.shape)} was used after dispose()`);
    if (!this.storage.alive) {
      throw new Error(`${op}: tensor #${this.id} ${fmtShape(this.shape)} belongs to a WebGPU device that was lost or released; make it again on the new device (e.g. reload a checkpoint)`);
    }
  }

  /**
   * The buffer range to bind in a kernel. An empty tensor still gets 16 bytes (its buffer has at least 256):
   * zero-size bindings are invalid, and a kernel that reads vec4s needs 16 (e.g. conv2d with Cin = 0).
   */
  binding(op = 'op'): BufferRange {
    this.assertLive(op);
    const size = this.byteLength || Math.min(16, this.storage.buffer.size - this.byteOffset);
    return { buffer: this.storage.buffer, offset: this.byteOffset, size };
  }

  async toArray(): Promise<TypedArray> {
    this.assertLive('toArray');
    const bytes = await readRange({ buffer: this.storage.buffer, offset: this.byteOffset, size: Math.max(4, this.byteLength) }, `toArray of tensor ${fmtShape(this.shape)}`);
    const n = this.size;
    if (this.dtype === 'f32') return new Float32Array(bytes, 0, n);
    if (this.dtype === 'i32') return new Int32Array(bytes, 0, n);
    return new Uint32Array(bytes, 0, n);
  }

  /** Reads a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item: tensor has shape ${fmtShape(this.shape)}, expected exactly one element`);
    return (await this.toArray())[0];
  }

  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    untrack(this);
    this.storage.release();
    if (this.grad) {
      this.grad.dispose();
      this.grad = null;
    }
  }

  /** A new handle over the same storage (kept alive independently); used for views and saved tensors. */
  share(shape: Shape = this.shape): Tensor {
    this.assertLive('share');
    if (shapeSize(shape) !== this.size) throw new Error(`share: cannot view ${fmtShape(this.shape)} as ${fmtShape(shape)}`);
    return new Tensor(shape, this.dtype, this.storage.retain(), this.byteOffset);
  }

  toString(): string {
    return `Tensor#${this.id}(${fmtShape(this.shape)}, ${this.dtype}${this.requiresGrad ? ', requiresGrad' : ''})`;
  }
}

// ---- scopes -------------------------------------------------------------------------------------------

function track(t: Tensor): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

function untrack(t: Tensor): void {
  for (let i = scopes.length - 1; i >= 0; i--) if (scopes[i].delete(t)) return;
}

/** Removes a tensor from every open tidy() scope, so it outlives them. */
export function keep<T extends Tensor | null | undefined>(t: T): T {
  if (t) for (const s of scopes) s.delete(t);
  return t;
}

function collectTensors(v: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || v == null) return;
  if (v instanceof Tensor) out.add(v);
  else if (Array.isArray(v)) for (const x of v) collectTensors(x, out, depth + 1);
  else if (typeof v === 'object' && Object.getPrototypeOf(v) === Object.prototype) {
    for (const x of Object.values(v as object)) collectTensors(x, out, depth + 1);
  }
}

function disposeAll(scope: Set<Tensor>): void {
  for (const t of [...scope]) {
    try {
      t.dispose();
    } catch {
      /* keep freeing the rest; the original error is the one to report */
    }
  }
  scope.clear();
}

/**
 * Runs fn and disposes every tensor it created (also when fn throws), except those it returns (a tensor, or arrays/plain objects
 * of tensors), which move to the enclosing scope.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    // an op that throws halfway leaves its temporaries here: free them, or every failed step would leak
    disposeAll(scope);
    throw e;
  } finally {
    scopes.pop();
  }
  if (result instanceof Promise) throw new Error('tidy: fn returned a Promise; use tidyAsync for async work');
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  for (const t of scope) if (!kept.has(t)) t.dispose();
  for (const t of kept) if (scope.has(t)) track(t);
  return result;
}

/** tidy() for async functions. Other async work must not create tensors concurrently. */
export async function tidyAsync<T>(fn: () => Promise<T>): Promise<T> {
  const scope = new Set<Tensor>();
  scopes.push(scope);
  let result: T;
  try {
    result = await fn();
  } catch (e) {
    disposeAll(scope);
    throw e;
  } finally {
    const i = scopes.lastIndexOf(scope);
    if (i >= 0) scopes.splice(i, 1);
  }
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  for (const t of scope) if (!kept.has(t)) t.dispose();
  for (const t of kept) if (scope.has(t)) track(t);
  return result;
}

// ---- creation -----------------------------------------------------------------------------------------

/** An uninitialized tensor backed by a fresh pooled buffer (kernels write all of it). */
export function empty(shape: Shape, dtype: DType = 'f32', what = 'empty'): Tensor {
  checkShape(shape, what);
  gpu(what);
  const bytes = Math.max(4, shapeSize(shape) * 4);
  return new Tensor(shape, dtype, new Storage(pool().acquire(bytes), bytes));
}

export function zeros(shape: Shape, dtype: DType = 'f32'): Tensor {
  const t = empty(shape, dtype, 'zeros');
  clearRange(t.binding());
  return t;
}

function toTyped(data: ArrayLike<number>, dtype: DType): TypedArray {
  if (dtype === 'f32') return data instanceof Float32Array ? data : Float32Array.from(data);
  if (dtype === 'i32') return data instanceof Int32Array ? data : Int32Array.from(data);
  return data instanceof Uint32Array ? data : Uint32Array.from(data);
}

export interface TensorOptions {
  dtype?: DType;
  requiresGrad?: boolean;
}

/** Uploads data (row-major) as a tensor of the given shape. */
export function tensor(data: ArrayLike<number>, shape?: Shape, opts: TensorOptions = {}): Tensor {
  const dtype = opts.dtype ?? 'f32';
  const s = shape ?? [data.length];
  checkShape(s, 'tensor');
  if (shapeSize(s) !== data.length) {
    throw new Error(`tensor: ${data.length} values do not fill shape ${fmtShape(s)} (${shapeSize(s)} elements)`);
  }
  if (opts.requiresGrad && dtype !== 'f32') throw new Error(`tensor: only f32 tensors can require grad (got ${dtype})`);
  const t = empty(s, dtype, 'tensor');
  if (data.length) writeRange(t.binding(), toTyped(data, dtype));
  t.requiresGrad = !!opts.requiresGrad;
  return t;
}

/** A leaf parameter-like tensor that requires grad. */
export function variable(data: ArrayLike<number>, shape?: Shape): Tensor {
  return tensor(data, shape, { requiresGrad: true });
}
