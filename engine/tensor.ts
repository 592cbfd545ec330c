// Tensor: a shape and dtype over a range of a pooled GPU buffer. Several tensors may share one Storage
// (reshape views, parameter arenas, tensors saved for backward); the buffer goes back to the pool when the
// last of them is disposed.

import { gpu, deviceGeneration, quietOnRelease } from './device.ts';
import { pool, releasePooled, readRange, writeRange, clearRange, type BufferRange } from './recorder.ts';

/** One recorded op of the autograd tape (engine/tape.ts); a tensor computed by it points at it. */
export interface TapeNode {
  op: string;
  inputs: Tensor[];
  output: Tensor;
  /**
   * Returns one gradient per input (null where the input needs none); dy is the output's gradient. take(k) hands
   * over the gradient input k has accumulated so far from ops later in the forward (null if none), for a backward
   * that adds it in its own last pass: the gradient it returns for input k then includes it.
   */
  backward: (dy: Tensor, take: (k: number) => Tensor | null) => (Tensor | null)[];
  /** Tensors the backward reads, held alive past any dispose() of the user's handles. */
  saved: Tensor[];
}

export type DType = 'f32' | 'i32' | 'u32';
export type TypedArray = Float32Array | Int32Array | Uint32Array;
/** The typed array a tensor of dtype D reads back as (the union for a tensor of unknown dtype). */
export type ArrayOf<D extends DType> = D extends 'f32' ? Float32Array : D extends 'i32' ? Int32Array : D extends 'u32' ? Uint32Array : never;
/** The dtype `tensor()` infers from its data: i32 from an Int32Array, u32 from a Uint32Array, else f32. */
export type DTypeOf<A> = A extends Int32Array ? 'i32' : A extends Uint32Array ? 'u32' : 'f32';
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

/** How many leading values toString() and util.inspect show once a tensor was read back. */
const PREVIEW = 6;
// util.inspect's hook, by its registered symbol: importing node:util would tie the core to Node
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

/**
 * D is the dtype when it is known statically (`tensor(new Int32Array(...))` is a Tensor<'i32'>, so toArray()
 * gives an Int32Array); ops return Tensor, whose toArray() gives the TypedArray union.
 */
/**
 * Per-channel moments of a tensor viewed as [R, C] (C its last axis), in blocks of consecutive rows: for block i,
 * partials[i, 0, c] is the mean of its rowsPerPartial values of channel c and partials[i, 1, c] the sum of their
 * squared deviations from that mean. Merging blocks (Chan et al.) gives the mean and variance of any run of whole
 * blocks without the cancellation of raw sums of squares.
 */
export interface ChannelMoments {
  partials: Tensor;
  rowsPerPartial: number;
}

export class Tensor<D extends DType = DType> {
  readonly id = nextId++;
  readonly shape: number[];
  readonly size: number;
  requiresGrad = false;
  grad: Tensor | null = null;
  /** The tape record that produced this tensor, while its graph is alive. */
  _node: TapeNode | null = null;
  /** Set when backward() or clearTape() dropped the graph that computed this tensor (for a clear error). */
  _graphFreed: 'backward' | 'clearTape' | null = null;
  /** The leading values of the last read-back, for toString(). */
  private _preview: number[] | null = null;
  private _disposed = false;
  private _moments: ChannelMoments | null = null;

  constructor(
    shape: Shape,
    readonly dtype: D,
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

  /** Reads the values back (row-major) as the typed array of the dtype: Float32Array, Int32Array or Uint32Array. */
  toArray(): Promise<ArrayOf<D>> {
    return quietOnRelease(this.readBack());
  }

  private async readBack(): Promise<ArrayOf<D>> {
    this.assertLive('toArray');
    const bytes = await readRange({ buffer: this.storage.buffer, offset: this.byteOffset, size: Math.max(4, this.byteLength) }, `toArray of tensor ${fmtShape(this.shape)}`);
    const n = this.size;
    const out: TypedArray = this.dtype === 'f32' ? new Float32Array(bytes, 0, n) : this.dtype === 'i32' ? new Int32Array(bytes, 0, n) : new Uint32Array(bytes, 0, n);
    this._preview = Array.from(out.subarray(0, PREVIEW));
    return out as ArrayOf<D>;
  }

  /**
   * Reads the tensor back and prints it (console.log) with its dtype and shape, as PyTorch's print(t); long
   * dimensions are elided. Returns the printed text.
   */
  print(): Promise<string> {
    return quietOnRelease(this.printNow());
  }

  private async printNow(): Promise<string> {
    const values = await this.toArray();
    const text = `tensor(${formatValues(values, this.shape)}, dtype=${this.dtype}, shape=${fmtShape(this.shape)}${this.requiresGrad ? ', requiresGrad' : ''})`;
    console.log(text);
    return text;
  }

  /** Reads a one-element tensor. */
  item(): Promise<number> {
    if (this.size !== 1) return Promise.reject(new Error(`item: tensor has shape ${fmtShape(this.shape)}, expected exactly one element`));
    return quietOnRelease(this.toArray().then((a) => a[0]));
  }

  /**
   * Attaches per-channel moments of this tensor's values, written by the op that produced it (conv2d's statistics
   * epilogue), for a consumer that would otherwise read the whole tensor to get them (batchNorm). This tensor
   * owns them: they leave every tidy() scope and are disposed with it, or earlier by takeMoments().
   */
  attachMoments(m: ChannelMoments): void {
    this.assertLive('attachMoments');
    if (this.rank < 1 || m.partials.rank !== 3 || m.partials.shape[1] !== 2 || m.partials.shape[2] !== this.shape[this.rank - 1] ||
      m.partials.shape[0] * m.rowsPerPartial * m.partials.shape[2] !== this.size) {
      throw new Error(`attachMoments: partials ${fmtShape(m.partials.shape)} of ${m.rowsPerPartial} rows each do not cover tensor ${fmtShape(this.shape)}`);
    }
    this._moments?.partials.dispose();
    untrack(m.partials);
    this._moments = m;
  }

  /** The attached moments, handed over to the caller (who disposes them), or null. */
  takeMoments(): ChannelMoments | null {
    const m = this._moments;
    this._moments = null;
    return m;
  }

  /** Whether moments are attached (see attachMoments). */
  get hasMoments(): boolean {
    return this._moments !== null;
  }

  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    untrack(this);
    this._moments?.partials.dispose();
    this._moments = null;
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

  /**
   * Dtype, shape and, once the tensor was read back (toArray, item, print), the leading values of that read;
   * reading needs the GPU (async), so this shows only values it already has.
   */
  toString(): string {
    const flags = [this.requiresGrad ? 'requiresGrad' : '', this._disposed ? 'disposed' : ''].filter(Boolean);
    let values = '';
    if (this._preview && !this._disposed) {
      const shown = this._preview.map(fmtValue).join(', ');
      // "last read": in-place updates (optimizer steps, running statistics) since then are not seen here
      values = ` last read [${shown}${this.size > this._preview.length ? ', ...' : ''}]`;
    }
    return `Tensor#${this.id}(${this.dtype} ${fmtShape(this.shape)}${flags.length ? ', ' + flags.join(', ') : ''})${values}`;
  }

  /** console.log(t) and util.inspect show toString() instead of the internals. */
  [INSPECT](): string {
    return this.toString();
  }
}

function fmtValue(v: number): string {
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-4 || a >= 1e6) ? v.toExponential(4) : String(Number(v.toPrecision(6)));
}

/** Nested brackets as PyTorch prints, with at most `edge` leading and trailing entries per dimension. */
function formatValues(values: ArrayLike<number>, shape: Shape, edge = 3): string {
  if (shape.length === 0) return fmtValue(values[0]);
  const strides: number[] = [];
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) (strides[i] = s), (s *= shape[i]);
  const rec = (dim: number, off: number): string => {
    const n = shape[dim];
    const idx = n > 2 * edge + 1 ? [...Array(edge).keys(), -1, ...Array.from({ length: edge }, (_, k) => n - edge + k)] : [...Array(n).keys()];
    const parts = idx.map((i) => (i < 0 ? '...' : dim === shape.length - 1 ? fmtValue(values[off + i]) : rec(dim + 1, off + i * strides[dim])));
    const sep = dim === shape.length - 1 ? ', ' : ',\n' + ' '.repeat(8 + dim);
    return `[${parts.join(sep)}]`;
  };
  return rec(0, 0);
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
export function empty<D extends DType = 'f32'>(shape: Shape, dtype: D = 'f32' as D, what = 'empty'): Tensor<D> {
  checkShape(shape, what);
  gpu(what);
  const bytes = Math.max(4, shapeSize(shape) * 4);
  return new Tensor(shape, dtype, new Storage(pool().acquire(bytes), bytes));
}

export function zeros<D extends DType = 'f32'>(shape: Shape, dtype: D = 'f32' as D): Tensor<D> {
  const t = empty(shape, dtype, 'zeros');
  clearRange(t.binding());
  return t;
}

function toTyped(data: ArrayLike<number>, dtype: DType): TypedArray {
  if (dtype === 'f32') return data instanceof Float32Array ? data : Float32Array.from(data);
  if (dtype === 'i32') return data instanceof Int32Array ? data : Int32Array.from(data);
  return data instanceof Uint32Array ? data : Uint32Array.from(data);
}

export interface TensorOptions<D extends DType = DType> {
  /** Default: inferred from the data (i32 for an Int32Array, u32 for a Uint32Array, else f32). */
  dtype?: D;
  requiresGrad?: boolean;
}

const DTYPES: readonly DType[] = ['f32', 'i32', 'u32'];

/** The dtype of data that `tensor()` keeps when no dtype is given. */
export function inferDType(data: ArrayLike<number>): DType {
  return data instanceof Int32Array ? 'i32' : data instanceof Uint32Array ? 'u32' : 'f32';
}

/**
 * Uploads data (row-major) as a tensor of the given shape (default: 1-D). The dtype comes from opts.dtype, else
 * from the data: an Int32Array makes an i32 tensor, a Uint32Array a u32 one, anything else f32.
 */
export function tensor<A extends ArrayLike<number>, D extends DType = DTypeOf<A>>(data: A, shape?: Shape, opts: TensorOptions<D> = {}): Tensor<D> {
  if (opts.dtype !== undefined && !DTYPES.includes(opts.dtype)) throw new Error(`tensor: unknown dtype '${opts.dtype}' (expected f32, i32 or u32)`);
  const dtype = (opts.dtype ?? inferDType(data)) as D;
  const s = shape ?? [data.length];
  checkShape(s, 'tensor');
  if (shapeSize(s) !== data.length) {
    throw new Error(`tensor: ${data.length} values do not fill shape ${fmtShape(s)} (${shapeSize(s)} elements)`);
  }
  if (opts.requiresGrad && dtype !== 'f32') {
    const hint = opts.dtype ? '' : ` (inferred from the ${data.constructor.name}; pass dtype: 'f32' to convert)`;
    throw new Error(`tensor: only f32 tensors can require grad (got ${dtype}${hint})`);
  }
  const t = empty(s, dtype, 'tensor');
  if (data.length) writeRange(t.binding(), toTyped(data, dtype));
  t.requiresGrad = !!opts.requiresGrad;
  return t;
}

/** A leaf parameter-like tensor that requires grad. */
export function variable(data: ArrayLike<number>, shape?: Shape): Tensor<'f32'> {
  return tensor(data, shape, { dtype: 'f32', requiresGrad: true });
}
