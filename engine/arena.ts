// Parameter arenas: all parameters of a model in one GPU buffer, each a Tensor view at a 256-byte aligned
// offset, with a parallel gradient buffer of the same layout. Optimizers, EMA and weight decay then run as a
// few dispatches over the whole buffer instead of one per parameter; a segment table on the GPU tells those
// kernels where each parameter starts and what kind it is (per-tensor norms for LARS, bias/norm exclusions).

import { gpu, onRelease, deviceLostReason, quietOnRelease } from './device.ts';
import { Tensor, Storage, keep, tensor, fmtShape, shapeSize, type Shape } from './tensor.ts';
import { copyRange, clearRange, readRange, writeRange, flush } from './recorder.ts';

export type SegmentKind = 'weight' | 'bias' | 'norm';

export interface SegmentSpec {
  name: string;
  shape: Shape;
  /** 'norm' = BatchNorm gamma/beta. LARS adapts only 'weight' segments. */
  kind: SegmentKind;
}

export interface Segment {
  readonly name: string;
  readonly shape: readonly number[];
  readonly kind: SegmentKind;
  readonly index: number;
  /** Offset in floats from the start of the buffer; a multiple of ARENA_ALIGN. */
  readonly offset: number;
  /** Number of elements (the padding after it is not counted). */
  readonly size: number;
  /** Offset in floats in the packed form (segments back to back, as read() returns them). */
  readonly packedOffset: number;
  /** First chunk of the segmented reduction that covers this segment, and how many chunks. */
  readonly firstChunk: number;
  readonly chunks: number;
}

/** Segment alignment in floats: 256 bytes, the minStorageBufferOffsetAlignment, so every view can be bound. */
export const ARENA_ALIGN = 64;
/** Elements per workgroup of the segmented reduction (kernels/optim.ts unrolls 16 per thread over 256). */
export const NORM_CHUNK = 4096;

export const KIND_CODE: Record<SegmentKind, number> = { weight: 0, bias: 1, norm: 2 };
const USAGE_STORAGE = 0x80 | 0x04 | 0x08; // STORAGE | COPY_SRC | COPY_DST

/** Where the parts of the u32 segment table start (in u32 elements). */
export interface TableBases {
  /** 4 u32 per segment: offset, size, kind code, first chunk; then a sentinel with offset = length. */
  seg: number;
  /** One u32 per ARENA_ALIGN-float block: the index of the segment the block belongs to. */
  block: number;
  /** 4 u32 per chunk: segment index, start, end (absolute float offsets), unused. */
  chunk: number;
}

/** The placement of segments in a buffer; pure data, no GPU objects. */
export class ArenaLayout {
  readonly segments: readonly Segment[];
  /** Floats in the buffer, padding included (a multiple of ARENA_ALIGN). */
  readonly length: number;
  /** Number of parameters (elements of all segments, padding excluded). */
  readonly numel: number;
  readonly nChunks: number;
  private readonly byName = new Map<string, Segment>();

  constructor(specs: readonly SegmentSpec[], what = 'Arena') {
    if (specs.length === 0) throw new Error(`${what}: needs at least one segment`);
    const segments: Segment[] = [];
    let offset = 0;
    let numel = 0;
    let chunk = 0;
    specs.forEach((s, index) => {
      if (typeof s.name !== 'string' || s.name === '') throw new Error(`${what}: segment ${index} has no name`);
      if (this.byName.has(s.name)) throw new Error(`${what}: duplicate segment name '${s.name}'`);
      if (!(s.kind in KIND_CODE)) throw new Error(`${what}: segment '${s.name}' has kind '${s.kind}', expected weight, bias or norm`);
      if (!Array.isArray(s.shape) || s.shape.some((d) => !Number.isInteger(d) || d < 0)) {
        throw new Error(`${what}: segment '${s.name}' has invalid shape ${fmtShape(s.shape ?? [])}`);
      }
      const size = shapeSize(s.shape);
      if (size === 0) throw new Error(`${what}: segment '${s.name}' has shape ${fmtShape(s.shape)} with no elements`);
      const chunks = Math.ceil(size / NORM_CHUNK);
      const seg: Segment = { name: s.name, shape: [...s.shape], kind: s.kind, index, offset, size, packedOffset: numel, firstChunk: chunk, chunks };
      segments.push(seg);
      this.byName.set(s.name, seg);
      offset += Math.ceil(size / ARENA_ALIGN) * ARENA_ALIGN;
      numel += size;
      chunk += chunks;
    });
    this.segments = segments;
    this.length = offset;
    this.numel = numel;
    this.nChunks = chunk;
  }

  segment(name: string): Segment | undefined {
    return this.byName.get(name);
  }

  get tableBases(): TableBases {
    const seg = 0;
    const block = 4 * (this.segments.length + 1);
    return { seg, block, chunk: block + this.length / ARENA_ALIGN };
  }

  /** The u32 segment table that the arena kernels read (layout: see TableBases). */
  tableData(): Uint32Array {
    const b = this.tableBases;
    const t = new Uint32Array(b.chunk + 4 * this.nChunks);
    for (const s of this.segments) {
      t.set([s.offset, s.size, KIND_CODE[s.kind], s.firstChunk], b.seg + 4 * s.index);
      const blocks = Math.ceil(s.size / ARENA_ALIGN);
      t.fill(s.index, b.block + s.offset / ARENA_ALIGN, b.block + s.offset / ARENA_ALIGN + blocks);
      for (let c = 0; c < s.chunks; c++) {
        const start = s.offset + c * NORM_CHUNK;
        t.set([s.index, start, Math.min(start + NORM_CHUNK, s.offset + s.size), 0], b.chunk + 4 * (s.firstChunk + c));
      }
    }
    t.set([this.length, 0, 0, this.nChunks], b.seg + 4 * this.segments.length);
    return t;
  }

  /** Drops the padding: segments back to back, `numel` floats. */
  pack(padded: Float32Array): Float32Array {
    const out = new Float32Array(this.numel);
    for (const s of this.segments) out.set(padded.subarray(s.offset, s.offset + s.size), s.packedOffset);
    return out;
  }

  /** Inverse of pack(): places back-to-back segment data at the segments' offsets, zero padding. */
  unpack(packed: Float32Array, what = 'Arena.write'): Float32Array {
    if (packed.length !== this.numel) throw new Error(`${what}: got ${packed.length} values, the arena holds ${this.numel} parameters`);
    const out = new Float32Array(this.length);
    for (const s of this.segments) out.set(packed.subarray(s.packedOffset, s.packedOffset + s.size), s.offset);
    return out;
  }

  /** Null if `this` equals `other` (or, with prefix, is its first segments); otherwise what differs. */
  mismatch(other: ArenaLayout, prefix = false): string | null {
    if (!prefix && other.segments.length !== this.segments.length) {
      return `${this.segments.length} segments vs ${other.segments.length}`;
    }
    if (other.segments.length < this.segments.length) return `${this.segments.length} segments vs only ${other.segments.length}`;
    for (const s of this.segments) {
      const o = other.segments[s.index];
      if (o.name !== s.name || o.kind !== s.kind || fmtShape(o.shape) !== fmtShape(s.shape)) {
        return `segment ${s.index} is '${s.name}' ${fmtShape(s.shape)} ${s.kind} vs '${o.name}' ${fmtShape(o.shape)} ${o.kind}`;
      }
    }
    return null;
  }
}

const liveBuffers = new Set<ArenaBuffer>();
onRelease(() => liveBuffers.clear());

/** Buffers owned by arenas and optimizer state (outside the pool, so not counted by liveTensors()). */
export function arenaStats(): { buffers: number; bytes: number } {
  let bytes = 0;
  for (const b of liveBuffers) bytes += b.buffer.size;
  return { buffers: liveBuffers.size, bytes };
}

/** One zero-initialized GPU buffer with an arena layout: parameters, gradients or optimizer state. */
export class ArenaBuffer {
  readonly buffer: GPUBuffer;
  readonly storage: Storage;
  /** The whole buffer as a 1-D tensor of `layout.length` floats (padding included, kept at zero). */
  readonly flat: Tensor;
  private destroyed = false;

  constructor(readonly layout: ArenaLayout, readonly label: string) {
    const { device } = gpu();
    const bytes = layout.length * 4;
    const max = Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
    if (bytes > max) {
      const mib = (b: number) => `${(b / 2 ** 20).toFixed(1)} MiB`;
      throw new Error(`${label}: ${layout.numel} parameters (${mib(bytes)}) exceed the device's storage binding limit of ${mib(max)}`);
    }
    this.buffer = device.createBuffer({ size: bytes, usage: USAGE_STORAGE, label });
    this.storage = new Storage(this.buffer, bytes, false);
    this.flat = keep(new Tensor([layout.length], 'f32', this.storage.retain(), 0));
    liveBuffers.add(this);
  }

  /** A tensor view of one segment. */
  view(seg: Segment): Tensor {
    this.assertLive('view');
    return keep(new Tensor(seg.shape, 'f32', this.storage.retain(), seg.offset * 4));
  }

  assertLive(op: string): void {
    if (this.destroyed) throw new Error(`${this.label}.${op}: the arena was disposed`);
  }

  /** Packed contents (segments back to back, no padding). */
  read(): Promise<Float32Array> {
    this.assertLive('read');
    const read = readRange({ buffer: this.buffer, offset: 0, size: this.layout.length * 4 }, `${this.label}.read`);
    return quietOnRelease(read.then((bytes) => this.layout.pack(new Float32Array(bytes))));
  }

  /** Replaces the contents with packed data, after everything recorded so far. */
  write(packed: Float32Array): void {
    this.assertLive('write');
    const padded = this.layout.unpack(packed, `${this.label}.write`);
    flush(); // queue writes run before unsubmitted commands; submit those first so the order is what was asked
    writeRange({ buffer: this.buffer, offset: 0, size: padded.byteLength }, padded);
  }

  /** Replaces one segment's contents, after everything recorded so far. */
  writeSegment(seg: Segment, data: Float32Array): void {
    this.assertLive('writeSegment');
    if (data.length !== seg.size) {
      throw new Error(`${this.label}.writeSegment: '${seg.name}' ${fmtShape(seg.shape)} has ${seg.size} elements, got ${data.length} values`);
    }
    flush();
    writeRange({ buffer: this.buffer, offset: seg.offset * 4, size: data.byteLength }, data);
  }

  zero(): void {
    this.assertLive('zero');
    clearRange({ buffer: this.buffer, offset: 0, size: this.layout.length * 4 });
  }

  /** Copies `this.layout.length` floats from another buffer whose layout starts with this one. */
  copyFrom(src: ArenaBuffer): void {
    this.assertLive('copyFrom');
    src.assertLive('copyFrom (source)');
    const why = this.layout.mismatch(src.layout, true);
    if (why) throw new Error(`${this.label}.copyFrom: layouts differ (${why})`);
    const size = this.layout.length * 4;
    copyRange({ buffer: src.buffer, offset: 0, size }, { buffer: this.buffer, offset: 0, size }, size);
  }

  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    this.flat.dispose();
    if (liveBuffers.delete(this)) {
      // commands already recorded may still use the buffer: submit them before destroying it (unless the device
      // is lost: then nothing will run, and cleanup must not throw)
      if (!deviceLostReason()) flush();
      this.buffer.destroy();
    }
  }
}

/**
 * The parameters of a model in one buffer. `params[k]` is a Tensor view (requiresGrad) of segment k;
 * backward() leaves gradients in each param's `.grad`, gatherGrads() moves them into the gradient buffer,
 * where the optimizers read them.
 */
// which arena a parameter view belongs to, so optimizers can take model.parameters() as PyTorch's do
const owners = new WeakMap<Tensor, Arena>();

export class Arena {
  /** The arena whose parameter view `t` is (one of `arena.params`), or null. */
  static owning(t: Tensor): Arena | null {
    return owners.get(t) ?? null;
  }

  readonly layout: ArenaLayout;
  readonly data: ArenaBuffer;
  readonly grad: ArenaBuffer;
  readonly params: readonly Tensor[];
  /** Views of the gradient buffer, one per segment (no requiresGrad). */
  readonly grads: readonly Tensor[];
  /** The u32 segment table (see TableBases), for the arena kernels. */
  readonly table: Tensor;
  private _disposed = false;

  constructor(specs: readonly SegmentSpec[], readonly label = 'Arena') {
    this.layout = new ArenaLayout(specs, label);
    this.data = new ArenaBuffer(this.layout, label);
    this.grad = new ArenaBuffer(this.layout, `${label}.grad`);
    this.params = this.layout.segments.map((s) => {
      const t = this.data.view(s);
      t.requiresGrad = true;
      owners.set(t, this);
      return t;
    });
    this.grads = this.layout.segments.map((s) => this.grad.view(s));
    this.table = keep(tensor(this.layout.tableData(), undefined, { dtype: 'u32' }));
  }

  get segments(): readonly Segment[] {
    return this.layout.segments;
  }

  /** Number of parameters (padding excluded). */
  get numel(): number {
    return this.layout.numel;
  }

  /** Floats in the buffer, padding included. */
  get length(): number {
    return this.layout.length;
  }

  get disposed(): boolean {
    return this._disposed;
  }

  assertLive(op: string): void {
    if (this._disposed) throw new Error(`${this.label}.${op}: the arena was disposed`);
  }

  param(name: string): Tensor {
    const s = this.layout.segment(name);
    if (!s) throw new Error(`${this.label}: no parameter named '${name}'`);
    return this.params[s.index];
  }

  /**
   * Copies every parameter's `.grad` into the gradient buffer and disposes it (`.grad` becomes null); a
   * parameter without a gradient gets zeros. Copies, not dispatches, recorded in order with other work.
   */
  gatherGrads(): void {
    this.assertLive('gatherGrads');
    if (this.params.every((p) => !p.grad)) {
      this.grad.zero();
      return;
    }
    this.params.forEach((p, k) => {
      const seg = this.layout.segments[k];
      const dst = this.grads[k].binding('gatherGrads');
      const g = p.grad;
      if (!g) {
        clearRange(dst);
        return;
      }
      if (g.size !== seg.size || g.dtype !== 'f32') {
        throw new Error(`${this.label}.gatherGrads: gradient of '${seg.name}' is ${g.dtype} ${fmtShape(g.shape)}, expected f32 ${fmtShape(seg.shape)}`);
      }
      copyRange(g.binding('gatherGrads'), dst, seg.size * 4);
      p.grad = null;
      g.dispose();
    });
  }

  /** Disposes every parameter's `.grad` and zeroes the gradient buffer. */
  zeroGrads(): void {
    this.assertLive('zeroGrads');
    for (const p of this.params) {
      p.grad?.dispose();
      p.grad = null;
    }
    this.grad.zero();
  }

  /** All parameters, packed in segment order (`numel` floats). */
  read(): Promise<Float32Array> {
    this.assertLive('read');
    return this.data.read();
  }

  /** Replaces all parameters from packed data (`numel` floats in segment order). */
  write(packed: Float32Array): void {
    this.assertLive('write');
    this.data.write(packed);
  }

  /** Gradient buffer contents, packed (after gatherGrads()). */
  readGrads(): Promise<Float32Array> {
    this.assertLive('readGrads');
    return this.grad.read();
  }

  /**
   * Copies another arena's parameters in one copy. Its layout must equal this one or start with it (a target
   * network without the online network's predictor, declared last).
   */
  copyFrom(other: Arena): void {
    this.assertLive('copyFrom');
    other.assertLive('copyFrom (source)');
    this.data.copyFrom(other.data);
  }

  /** A zeroed buffer with this layout, owned by the caller (optimizer state). */
  createState(label: string): ArenaBuffer {
    this.assertLive('createState');
    return new ArenaBuffer(this.layout, `${this.label}.${label}`);
  }

  dispose(): void {
    if (this._disposed) return;
    this._disposed = true;
    for (const t of this.params) t.dispose(); // also disposes any pending .grad
    for (const t of this.grads) t.dispose();
    this.table.dispose();
    this.data.destroy();
    this.grad.destroy();
  }
}
