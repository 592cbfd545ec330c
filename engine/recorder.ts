// Command recording: every kernel launch goes into one open compute pass of one command encoder; flush()
// submits it. A training step therefore costs one submit, and reading a tensor back is the only other sync.
// Pipelines are cached by WGSL source, uniform buffers by their bytes (shapes repeat every step), and bind groups by
// pipeline and bound resources (the pool hands a step the same buffers every step).

import { gpu, onRelease, unlessDeviceLost as unlessLost, quietOnRelease, DeviceLostError } from './device.ts';
import { idleWhile } from './idle-wait.ts';
import { BufferPool, sizeClass } from './pool.ts';

/** 'texture': a read-only rgba32float 2-D storage texture (WGSL texture_storage_2d<rgba32float, read>). */
export type BindingKind = 'uniform' | 'read' | 'rw' | 'texture';

export interface KernelSpec {
  /** Op name, used as the pipeline label and in every error about this kernel. */
  name: string;
  /** Complete WGSL module. Bindings are @group(0) @binding(i) in the order of `bindings`. */
  code: string;
  bindings: BindingKind[];
  entry?: string;
}

/** A storage binding: a buffer range. Tensor.binding() returns one. */
export interface BufferRange {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

interface CachedPipeline {
  pipeline: GPUComputePipeline;
  layout: GPUBindGroupLayout;
  spec: KernelSpec;
}

interface EngineState {
  pool: BufferPool;
  pipelines: Map<string, CachedPipeline>;
  /** The same pipelines by the spec object they were made for (pipelineFor's shortcut). */
  pipelineBySpec: WeakMap<KernelSpec, CachedPipeline>;
  uniforms: Map<string, GPUBuffer>;
  retiredUniforms: GPUBuffer[];
  encoder: GPUCommandEncoder | null;
  pass: GPUComputePassEncoder | null;
  opsSinceSubmit: string[];
  /** Error scopes not yet answered; each removes itself when it settles, so this stays small. */
  pendingErrors: Set<Promise<void>>;
  /** GPU errors reported since the last checkErrors(), at most MAX_ERRORS kept (errorCount counts all). */
  errors: string[];
  errorCount: number;
  /** Pipelines whose WGSL failed to compile, by cache key: later launches throw at once. */
  failed: Map<string, string>;
  dispatches: number;
  dispatchesSinceSubmit: number;
  submits: number;
  readbacks: number;
  /** Idle MAP_READ buffers by size class: a readback reuses one instead of creating and destroying it. */
  staging: Map<number, GPUBuffer[]>;
  stagingBytes: number;
  /** Bind groups by pipeline and bound resources (bindGroupFor), least recently used first. */
  bindGroups: Map<string, GPUBindGroup>;
  bindGroupHits: number;
  bindGroupMisses: number;
}

/**
 * A loop that records many steps without submitting (no flush(), no readback) would hold every buffer it
 * released (reusable only after a submit) and an ever longer command buffer: launch() submits by itself past
 * these limits. One submit per step, as a training loop does, stays far below them.
 */
export interface AutoFlushLimits {
  /** Bytes released since the last submit. */
  releasedBytes: number;
  /** Dispatches recorded since the last submit. */
  dispatches: number;
}
const autoFlush: AutoFlushLimits = { releasedBytes: 256 * 2 ** 20, dispatches: 8192 };

/** Sets the auto-flush limits (see AutoFlushLimits); returns the previous ones. */
export function setAutoFlush(limits: Partial<AutoFlushLimits>): AutoFlushLimits {
  const prev = { ...autoFlush };
  for (const [k, v] of Object.entries(limits)) {
    if (!(typeof v === 'number' && v >= 1)) throw new Error(`setAutoFlush: ${k} must be a number >= 1, got ${v}`);
    autoFlush[k as keyof AutoFlushLimits] = v;
  }
  return prev;
}

const MAX_STAGING_PER_SIZE = 4;
const MAX_STAGING_BYTES = 64 * 2 ** 20;
const MAX_UNIFORMS = 4096;
/** Bind groups kept (bindGroupFor): a BYOL training step launches about 200 kernels, an evaluation a few dozen. */
const MAX_BIND_GROUPS = 4096;
const MAX_ERRORS = 16;
let state: EngineState | null = null;

onRelease(() => {
  if (!state) return;
  state.pool.destroyAll();
  for (const b of state.uniforms.values()) b.destroy();
  for (const list of state.staging.values()) for (const b of list) b.destroy();
  state = null;
});

function engine(op?: string): EngineState {
  const { device } = gpu(op);
  if (!state) {
    state = {
      pool: new BufferPool(device, device.limits.maxBufferSize),
      pipelines: new Map(),
      pipelineBySpec: new WeakMap(),
      uniforms: new Map(),
      retiredUniforms: [],
      encoder: null,
      pass: null,
      opsSinceSubmit: [],
      pendingErrors: new Set(),
      errors: [],
      errorCount: 0,
      failed: new Map(),
      dispatches: 0,
      dispatchesSinceSubmit: 0,
      submits: 0,
      readbacks: 0,
      staging: new Map(),
      stagingBytes: 0,
      bindGroups: new Map(),
      bindGroupHits: 0,
      bindGroupMisses: 0,
    };
  }
  return state;
}

export function pool(): BufferPool {
  return engine().pool;
}

/**
 * Returns a pooled buffer. Does not need a working device: after device loss the buffer is simply dropped
 * (releaseDevice() destroys everything), so that cleanup code never throws.
 */
export function releasePooled(buffer: GPUBuffer): void {
  state?.pool.release(buffer);
}

function reportError(s: EngineState, message: string): void {
  s.errorCount++;
  if (s.errors.length < MAX_ERRORS) s.errors.push(message);
}

/** Pops the error scope pushed before the work named by `what`; a reported error is kept for checkErrors(). */
function watchErrors(device: GPUDevice, what: string, onError?: (message: string) => void): void {
  const s = engine();
  const p: Promise<void> = idleWhile(device.popErrorScope()).then(
    (e) => {
      if (!e) return;
      reportError(s, `${what}: ${e.message}`);
      onError?.(e.message);
    },
    (e) => reportError(s, `${what}: could not read the GPU error scope (${(e as Error)?.message ?? e})`),
  ).finally(() => s.pendingErrors.delete(p));
  s.pendingErrors.add(p);
}

function pipelineFor(spec: KernelSpec): CachedPipeline {
  const s = engine(spec.name);
  // a declared kernel launches with the same spec object every time: found without building the key from its WGSL
  let p = s.pipelineBySpec.get(spec);
  if (p) return p;
  const key = spec.bindings.join(',') + '|' + (spec.entry ?? 'main') + '|' + spec.code;
  const failed = s.failed.get(key);
  if (failed) throw new Error(failed);
  p = s.pipelines.get(key);
  if (p) {
    s.pipelineBySpec.set(spec, p);
    return p;
  }
  const { device } = gpu(spec.name);
  device.pushErrorScope('validation');
  const entries: GPUBindGroupLayoutEntry[] = spec.bindings.map((kind, binding) =>
    kind === 'texture'
      ? { binding, visibility: 4, storageTexture: { access: 'read-only', format: 'rgba32float', viewDimension: '2d' } }
      : {
          binding,
          visibility: 4, // GPUShaderStage.COMPUTE
          buffer: { type: kind === 'uniform' ? 'uniform' : kind === 'read' ? 'read-only-storage' : 'storage' },
        },
  );
  const layout = device.createBindGroupLayout({ label: spec.name, entries });
  const module = device.createShaderModule({ label: spec.name, code: spec.code });
  const pipeline = device.createComputePipeline({
    label: spec.name,
    layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
    compute: { module, entryPoint: spec.entry ?? 'main' },
  });
  watchErrors(device, `kernel '${spec.name}' failed to compile`, (message) => {
    // keep the message, drop the invalid pipeline: every later launch of this kernel throws it synchronously
    s.failed.set(key, `kernel '${spec.name}' failed to compile: ${message}`);
    s.pipelines.delete(key);
    s.pipelineBySpec = new WeakMap(); // forget every spec's shortcut to the invalid pipeline
  });
  p = { pipeline, layout, spec };
  s.pipelines.set(key, p);
  s.pipelineBySpec.set(spec, p);
  return p;
}

function uniformFor(bytes: ArrayBuffer): GPUBuffer {
  const s = engine();
  const u32 = new Uint32Array(bytes);
  let key = '';
  for (let i = 0; i < u32.length; i++) key += u32[i].toString(36) + ',';
  let buf = s.uniforms.get(key);
  if (buf) {
    // refresh LRU position
    s.uniforms.delete(key);
    s.uniforms.set(key, buf);
    return buf;
  }
  const { device } = gpu('uniform upload');
  buf = device.createBuffer({ size: Math.max(16, Math.ceil(bytes.byteLength / 16) * 16), usage: 0x40 | 0x08 }); // UNIFORM | COPY_DST
  device.queue.writeBuffer(buf, 0, bytes);
  s.uniforms.set(key, buf);
  if (s.uniforms.size > MAX_UNIFORMS) {
    const oldest = s.uniforms.keys().next().value as string;
    // may still be bound by recorded commands: destroy after the next submit
    s.retiredUniforms.push(s.uniforms.get(oldest)!);
    s.uniforms.delete(oldest);
  }
  return buf;
}

function openPass(): GPUComputePassEncoder {
  const s = engine();
  if (!s.encoder) s.encoder = gpu('command recording').device.createCommandEncoder();
  if (!s.pass) s.pass = s.encoder.beginComputePass();
  return s.pass;
}

/** The encoder with no compute pass open, for copies and clears recorded in order with the dispatches. */
export function encoderForCopy(op = 'a buffer copy'): GPUCommandEncoder {
  const s = engine(op);
  if (s.pass) {
    s.pass.end();
    s.pass = null;
  }
  if (!s.encoder) s.encoder = gpu(op).device.createCommandEncoder();
  return s.encoder;
}

export type LaunchArg = BufferRange | ArrayBuffer | GPUTextureView;

// Specs made by the kernel declaration (engine/kernel.ts). launch() takes no other, so every pipeline the engine
// creates was generated, and so can be dumped and counted.
const declared = new WeakSet<KernelSpec>();
/** Marks a spec as generated by engine/kernel.ts; for that file only. */
export function markDeclared(spec: KernelSpec): KernelSpec {
  declared.add(spec);
  return spec;
}

/**
 * Records one dispatch. `args` follow spec.bindings: an ArrayBuffer for a uniform, a BufferRange for storage,
 * a GPUTextureView for a 'texture'.
 * Workgroup counts above the device limit are a caller bug; use grid1d() for large 1-D launches.
 */
export function launch(spec: KernelSpec, args: LaunchArg[], workgroups: [number, number?, number?]): void {
  if (!declared.has(spec)) throw new Error(`${spec.name}: not a declared kernel (declare it with defineKernel or kernel() of engine/kernel.ts)`);
  const s = engine(spec.name);
  const { device, info: { limits } } = gpu(spec.name); // a plain copy: device.limits is a native object per read
  if (args.length !== spec.bindings.length) {
    throw new Error(`${spec.name}: kernel expects ${spec.bindings.length} bindings, got ${args.length}`);
  }
  args.forEach((a, i) => {
    if (a instanceof ArrayBuffer) {
      if (spec.bindings[i] !== 'uniform') throw new Error(`${spec.name}: binding ${i} is '${spec.bindings[i]}' storage but got an ArrayBuffer (uniform data)`);
      return;
    }
    if (spec.bindings[i] === 'uniform') throw new Error(`${spec.name}: binding ${i} is a uniform but got a buffer range`);
    const isRange = 'buffer' in a;
    if ((spec.bindings[i] === 'texture') !== !isRange) {
      throw new Error(`${spec.name}: binding ${i} is '${spec.bindings[i]}' but got ${isRange ? 'a buffer range' : 'a texture view'}`);
    }
    if (isRange) checkRange(spec.name, i, a, limits.minStorageBufferOffsetAlignment);
  });
  const maxWg = limits.maxComputeWorkgroupsPerDimension;
  const [x, y = 1, z = 1] = workgroups;
  if (x > maxWg || y > maxWg || z > maxWg) {
    throw new Error(`${spec.name}: dispatch [${x}, ${y}, ${z}] exceeds maxComputeWorkgroupsPerDimension ${maxWg}`);
  }
  if (x === 0 || y === 0 || z === 0) return;
  const { pipeline, layout } = pipelineFor(spec);
  const bindGroup = bindGroupFor(spec, pipeline, layout, args, device);
  const pass = openPass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(x, y, z);
  profileLog?.push({ name: spec.name, pipeline, bindGroup, workgroups: [x, y, z] });
  s.dispatches++;
  if (s.opsSinceSubmit.length < 64) s.opsSinceSubmit.push(spec.name);
  if (++s.dispatchesSinceSubmit >= autoFlush.dispatches || s.pool.releasedBytes >= autoFlush.releasedBytes) flush();
}

// Objects (pipelines, buffers, texture views) by a number that is never reused: a key that names a destroyed buffer
// can never match again, since the pool never hands out a destroyed buffer's object.
const objectIds = new WeakMap<object, number>();
let nextObjectId = 1;
function objectId(o: object): number {
  let id = objectIds.get(o);
  if (id === undefined) objectIds.set(o, (id = nextObjectId++));
  return id;
}

let reuseBindGroups = true;
/** Turns the reuse of bind groups (bindGroupFor) on or off, for A/B measurements and tests; returns the previous setting. */
export function setBindGroupReuse(on: boolean): boolean {
  const prev = reuseBindGroups;
  reuseBindGroups = on;
  return prev;
}

/**
 * The bind group of one launch, reused where the same pipeline binds the same resources (same buffers, ranges,
 * uniform contents, texture views): a training step launches the same kernels on the same pooled buffers every
 * step, and creating a bind group is two thirds of a launch's host time in Dawn (bench/launch-cost.ts). A new one
 * is created under an error scope, so that an invalid binding names the op.
 */
function bindGroupFor(spec: KernelSpec, pipeline: GPUComputePipeline, layout: GPUBindGroupLayout, args: LaunchArg[], device: GPUDevice): GPUBindGroup {
  const s = engine();
  const entries: GPUBindGroupEntry[] = args.map((a, binding) => {
    if (a instanceof ArrayBuffer) return { binding, resource: { buffer: uniformFor(a) } };
    if (!('buffer' in a)) return { binding, resource: a };
    return { binding, resource: { buffer: a.buffer, offset: a.offset, size: a.size } };
  });
  let key = String(objectId(pipeline));
  for (const e of entries) {
    const r = e.resource as GPUBufferBinding | GPUTextureView;
    key += 'buffer' in r ? `|${objectId(r.buffer)}:${r.offset ?? 0}:${r.size ?? ''}` : `|t${objectId(r)}`;
  }
  let bindGroup = reuseBindGroups ? s.bindGroups.get(key) : undefined;
  if (bindGroup) {
    s.bindGroupHits++;
    s.bindGroups.delete(key); // refresh its place in the LRU order
    s.bindGroups.set(key, bindGroup);
    return bindGroup;
  }
  s.bindGroupMisses++;
  device.pushErrorScope('validation');
  bindGroup = device.createBindGroup({ label: spec.name, layout, entries });
  watchErrors(device, `${spec.name}: invalid bindings`, () => s.bindGroups.delete(key));
  if (!reuseBindGroups) return bindGroup;
  s.bindGroups.set(key, bindGroup);
  if (s.bindGroups.size > MAX_BIND_GROUPS) s.bindGroups.delete(s.bindGroups.keys().next().value as string);
  return bindGroup;
}

/**
 * Checked here, synchronously, so the error names the op: WebGPU would only report it later, from an error
 * scope, and an out-of-range binding is always a caller bug.
 */
function checkRange(op: string, i: number, r: BufferRange, alignment: number): void {
  const where = () => `${op}: binding ${i} (offset ${r.offset}, size ${r.size})`; // built only for an error
  if (!Number.isInteger(r.offset) || !Number.isInteger(r.size) || r.offset < 0 || r.size <= 0) throw new Error(`${where()} is not a valid buffer range`);
  if (r.offset + r.size > r.buffer.size) throw new Error(`${where()} exceeds its buffer of ${r.buffer.size} bytes`);
  if (r.offset % alignment !== 0) throw new Error(`${where()}: offset is not a multiple of minStorageBufferOffsetAlignment ${alignment}`);
  if (r.size % 4 !== 0) throw new Error(`${where()}: size is not a multiple of 4 bytes`);
}

/** One recorded dispatch, to be replayed on its own by a profiler (bench/step-profile.ts). */
export interface RecordedDispatch {
  name: string;
  pipeline: GPUComputePipeline;
  bindGroup: GPUBindGroup;
  workgroups: [number, number, number];
}
let profileLog: RecordedDispatch[] | null = null;
/**
 * Starts (or with false, stops and returns) a log of every dispatch. The bind groups keep pooled buffers
 * referenced, which may hold other data by the time they are replayed: for timing only.
 */
export function recordDispatches(on: boolean): RecordedDispatch[] {
  const log = profileLog ?? [];
  profileLog = on ? [] : null;
  return log;
}

/** Submits everything recorded so far. */
export function flush(): void {
  const s = state;
  if (!s || !s.encoder) return;
  const { device } = gpu(`submit of [${s.opsSinceSubmit.join(', ')}]`);
  if (s.pass) {
    s.pass.end();
    s.pass = null;
  }
  const ops = s.opsSinceSubmit.join(', ');
  device.pushErrorScope('validation');
  device.queue.submit([s.encoder.finish()]);
  watchErrors(device, `submit of [${ops}]`);
  s.encoder = null;
  s.opsSinceSubmit = [];
  s.dispatchesSinceSubmit = 0;
  s.submits++;
  s.pool.afterSubmit();
  for (const b of s.retiredUniforms) b.destroy();
  s.retiredUniforms.length = 0;
}

/** Throws the first GPU validation error recorded since the last check, naming the op it came from. */
export async function checkErrors(op = 'checkErrors'): Promise<void> {
  const s = state;
  if (!s) return;
  while (s.pendingErrors.size) await unlessLost(Promise.all([...s.pendingErrors]), op);
  if (s.errorCount === 0) return;
  const [first] = s.errors;
  const more = s.errorCount - 1;
  s.errors = [];
  s.errorCount = 0;
  throw new Error(first + (more ? ` (and ${more} more GPU error${more > 1 ? 's' : ''})` : ''));
}

/** Submits and waits until the GPU is done; surfaces GPU errors and device loss as thrown errors. */
export function sync(): Promise<void> {
  return quietOnRelease(syncNow());
}

async function syncNow(): Promise<void> {
  flush();
  const { device } = gpu('sync');
  await unlessLost(device.queue.onSubmittedWorkDone(), 'sync');
  await checkErrors('sync');
  gpu('sync');
}

/**
 * Copies a buffer range to the CPU. Flushes pending work first. releaseDevice() while it waits rejects it with a
 * DeviceLostError (never an unhandled rejection: see quietOnRelease).
 */
export function readRange(range: BufferRange, what: string): Promise<ArrayBuffer> {
  try {
    return quietOnRelease(readRangeNow(range, what));
  } catch (e) {
    return Promise.reject(e);
  }
}

async function readRangeNow(range: BufferRange, what: string): Promise<ArrayBuffer> {
  const { device } = gpu(what);
  const s = engine(what);
  const size = Math.ceil(range.size / 4) * 4;
  if (range.offset + size > range.buffer.size) throw new Error(`${what}: range (offset ${range.offset}, size ${range.size}) exceeds its buffer of ${range.buffer.size} bytes`);
  const cls = sizeClass(size);
  let staging = s.staging.get(cls)?.pop();
  if (staging) s.stagingBytes -= cls;
  else staging = device.createBuffer({ size: cls, usage: 0x01 | 0x08 }); // MAP_READ | COPY_DST
  s.readbacks++;
  encoderForCopy(what).copyBufferToBuffer(range.buffer, range.offset, staging, 0, size);
  flush();
  try {
    await unlessLost(staging.mapAsync(1, 0, size), what); // GPUMapMode.READ
  } catch (e) {
    staging.destroy();
    if (e instanceof DeviceLostError) throw e;
    gpu(what); // device loss first: it explains everything else
    await checkErrors(what);
    throw new Error(`${what}: reading back from the GPU failed: ${(e as Error).message}`);
  }
  const out = staging.getMappedRange(0, size).slice(0);
  staging.unmap();
  const list = s.staging.get(cls) ?? [];
  if (state === s && list.length < MAX_STAGING_PER_SIZE && s.stagingBytes + cls <= MAX_STAGING_BYTES) {
    list.push(staging);
    s.staging.set(cls, list);
    s.stagingBytes += cls;
  } else staging.destroy();
  await checkErrors(what);
  return out;
}

/** Uploads bytes into a buffer range, ordered before any commands recorded but not yet submitted. */
export function writeRange(range: BufferRange, data: ArrayBufferView): void {
  gpu('a buffer upload').device.queue.writeBuffer(range.buffer, range.offset, data.buffer, data.byteOffset, data.byteLength);
}

/** Zero-fills a buffer range in order with recorded dispatches. */
export function clearRange(range: BufferRange): void {
  encoderForCopy('a buffer clear').clearBuffer(range.buffer, range.offset, Math.ceil(range.size / 4) * 4);
}

/** Copies between buffer ranges in order with recorded dispatches. */
export function copyRange(src: BufferRange, dst: BufferRange, bytes: number): void {
  encoderForCopy('a buffer copy').copyBufferToBuffer(src.buffer, src.offset, dst.buffer, dst.offset, Math.ceil(bytes / 4) * 4);
}

export interface RecorderStats {
  dispatches: number;
  submits: number;
  /** readRange() calls: toArray(), item(), arena reads, health polls. */
  readbacks: number;
  pipelines: number;
  uniforms: number;
  /** bind groups kept, and launches that reused one or created one (bindGroupFor) */
  bindGroups: number;
  bindGroupHits: number;
  bindGroupMisses: number;
}

/** The kernel specs behind every pipeline of this device, in creation order (tests check where they came from). */
export function pipelineSpecs(): KernelSpec[] {
  return state ? [...state.pipelines.values()].map((p) => p.spec) : [];
}

export function recorderStats(): RecorderStats {
  const s = engine();
  return {
    dispatches: s.dispatches, submits: s.submits, readbacks: s.readbacks, pipelines: s.pipelines.size, uniforms: s.uniforms.size,
    bindGroups: s.bindGroups.size, bindGroupHits: s.bindGroupHits, bindGroupMisses: s.bindGroupMisses,
  };
}

/** Packs uniform parameters: u32 for integers given as {u: n}, i32 as {i: n}, f32 for plain numbers. */
export function params(...values: (number | { u: number } | { i: number })[]): ArrayBuffer {
  const n = Math.max(4, Math.ceil(values.length / 4) * 4);
  const buf = new ArrayBuffer(n * 4);
  const f = new Float32Array(buf);
  const u = new Uint32Array(buf);
  const i32 = new Int32Array(buf);
  values.forEach((v, k) => {
    if (typeof v === 'number') f[k] = v;
    else if ('u' in v) u[k] = v.u;
    else i32[k] = v.i;
  });
  return buf;
}

/** Packs a list of u32 values (the common case: sizes and strides). */
export function u32s(...values: number[]): ArrayBuffer {
  const n = Math.max(4, Math.ceil(values.length / 4) * 4);
  const u = new Uint32Array(n);
  u.set(values);
  return u.buffer;
}

/**
 * Splits a 1-D launch of `n` invocations into a 2-D grid that respects the per-dimension limit. Kernels
 * recover the flat index with `gid.x + gid.y * (nwg.x * WG)` (see WGSL_INDEX1D).
 */
export function grid1d(n: number, wg: number): [number, number] {
  return groupGrid(Math.ceil(n / wg));
}

/**
 * Folds `groups` workgroups into a 2-D grid that respects the per-dimension limit. Kernels recover the
 * workgroup's flat index with `wid.x + wid.y * nwg.x`; the grid may hold a few more than `groups`, which must
 * return at once.
 */
export function groupGrid(groups: number): [number, number] {
  const max = gpu('groupGrid').device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** WGSL for the flat index of a grid1d() launch, given builtins `gid` and `nwg` and workgroup size WG. */
export const WGSL_INDEX1D = (wg: number) => `gid.x + gid.y * (nwg.x * ${wg}u)`;
