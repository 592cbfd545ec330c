// Command recording: every kernel launch goes into one open compute pass of one command encoder; flush()
// submits it. A training step therefore costs one submit, and reading a tensor back is the only other sync.
// Pipelines are cached by WGSL source, uniform buffers by their bytes (shapes repeat every step).

import { gpu, onRelease } from './device.ts';
import { BufferPool } from './pool.ts';

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
}

interface EngineState {
  pool: BufferPool;
  pipelines: Map<string, CachedPipeline>;
  uniforms: Map<string, GPUBuffer>;
  retiredUniforms: GPUBuffer[];
  encoder: GPUCommandEncoder | null;
  pass: GPUComputePassEncoder | null;
  opsSinceSubmit: string[];
  errors: Promise<string | null>[];
  dispatches: number;
  submits: number;
}

const MAX_UNIFORMS = 4096;
let state: EngineState | null = null;

onRelease(() => {
  if (!state) return;
  state.pool.destroyAll();
  for (const b of state.uniforms.values()) b.destroy();
  state = null;
});

function engine(): EngineState {
  const { device } = gpu();
  if (!state) {
    state = {
      pool: new BufferPool(device, device.limits.maxBufferSize),
      pipelines: new Map(),
      uniforms: new Map(),
      retiredUniforms: [],
      encoder: null,
      pass: null,
      opsSinceSubmit: [],
      errors: [],
      dispatches: 0,
      submits: 0,
    };
  }
  return state;
}

export function pool(): BufferPool {
  return engine().pool;
}

function watchErrors(device: GPUDevice, what: string): void {
  const s = engine();
  s.errors.push(
    device.popErrorScope().then((e) => (e ? `${what}: ${e.message}` : null)),
  );
}

function pipelineFor(spec: KernelSpec): CachedPipeline {
  const s = engine();
  const key = spec.bindings.join(',') + '|' + (spec.entry ?? 'main') + '|' + spec.code;
  let p = s.pipelines.get(key);
  if (p) return p;
  const { device } = gpu();
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
  watchErrors(device, `kernel '${spec.name}' failed to compile`);
  p = { pipeline, layout };
  s.pipelines.set(key, p);
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
  const { device } = gpu();
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
  if (!s.encoder) s.encoder = gpu().device.createCommandEncoder();
  if (!s.pass) s.pass = s.encoder.beginComputePass();
  return s.pass;
}

/** The encoder with no compute pass open, for copies and clears recorded in order with the dispatches. */
export function encoderForCopy(): GPUCommandEncoder {
  const s = engine();
  if (s.pass) {
    s.pass.end();
    s.pass = null;
  }
  if (!s.encoder) s.encoder = gpu().device.createCommandEncoder();
  return s.encoder;
}

export type LaunchArg = BufferRange | ArrayBuffer | GPUTextureView;

/**
 * Records one dispatch. `args` follow spec.bindings: an ArrayBuffer for a uniform, a BufferRange for storage,
 * a GPUTextureView for a 'texture'.
 * Workgroup counts above the device limit are a caller bug; use grid1d() for large 1-D launches.
 */
export function launch(spec: KernelSpec, args: LaunchArg[], workgroups: [number, number?, number?]): void {
  const s = engine();
  const { device } = gpu();
  if (args.length !== spec.bindings.length) {
    throw new Error(`${spec.name}: kernel expects ${spec.bindings.length} bindings, got ${args.length}`);
  }
  const maxWg = device.limits.maxComputeWorkgroupsPerDimension;
  const [x, y = 1, z = 1] = workgroups;
  if (x > maxWg || y > maxWg || z > maxWg) {
    throw new Error(`${spec.name}: dispatch [${x}, ${y}, ${z}] exceeds maxComputeWorkgroupsPerDimension ${maxWg}`);
  }
  if (x === 0 || y === 0 || z === 0) return;
  const { pipeline, layout } = pipelineFor(spec);
  const entries: GPUBindGroupEntry[] = args.map((a, binding) => {
    if (a instanceof ArrayBuffer) return { binding, resource: { buffer: uniformFor(a) } };
    if (!('buffer' in a)) return { binding, resource: a };
    return { binding, resource: { buffer: a.buffer, offset: a.offset, size: a.size } };
  });
  device.pushErrorScope('validation');
  const bindGroup = device.createBindGroup({ layout, entries });
  watchErrors(device, `${spec.name}: invalid bindings`);
  const pass = openPass();
  pass.setPipeline(pipeline);
  pass.setBindGroup(0, bindGroup);
  pass.dispatchWorkgroups(x, y, z);
  s.dispatches++;
  if (s.opsSinceSubmit.length < 64) s.opsSinceSubmit.push(spec.name);
}

/** Submits everything recorded so far. */
export function flush(): void {
  const s = state;
  if (!s || !s.encoder) return;
  const { device } = gpu();
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
  s.submits++;
  s.pool.afterSubmit();
  for (const b of s.retiredUniforms) b.destroy();
  s.retiredUniforms.length = 0;
}

/** Throws the first GPU validation error recorded since the last check, naming the op it came from. */
export async function checkErrors(): Promise<void> {
  const s = state;
  if (!s || s.errors.length === 0) return;
  const errs = s.errors;
  s.errors = [];
  const msgs = (await Promise.all(errs)).filter((m): m is string => m !== null);
  if (msgs.length) throw new Error(msgs[0] + (msgs.length > 1 ? ` (and ${msgs.length - 1} more GPU errors)` : ''));
}

/** Submits and waits until the GPU is done; surfaces GPU errors and device loss as thrown errors. */
export async function sync(): Promise<void> {
  flush();
  const { device } = gpu();
  await device.queue.onSubmittedWorkDone();
  await checkErrors();
  gpu();
}

/** Copies a buffer range to the CPU. Flushes pending work first. */
export async function readRange(range: BufferRange, what: string): Promise<ArrayBuffer> {
  const { device } = gpu();
  const size = Math.ceil(range.size / 4) * 4;
  const staging = device.createBuffer({ size, usage: 0x01 | 0x08 }); // MAP_READ | COPY_DST
  encoderForCopy().copyBufferToBuffer(range.buffer, range.offset, staging, 0, size);
  flush();
  try {
    await staging.mapAsync(1); // GPUMapMode.READ
  } catch (e) {
    staging.destroy();
    await checkErrors();
    gpu();
    throw new Error(`${what}: reading back from the GPU failed: ${(e as Error).message}`);
  }
  const out = staging.getMappedRange().slice(0);
  staging.unmap();
  staging.destroy();
  await checkErrors();
  return out;
}

/** Uploads bytes into a buffer range, ordered before any commands recorded but not yet submitted. */
export function writeRange(range: BufferRange, data: ArrayBufferView): void {
  gpu().device.queue.writeBuffer(range.buffer, range.offset, data.buffer, data.byteOffset, data.byteLength);
}

/** Zero-fills a buffer range in order with recorded dispatches. */
export function clearRange(range: BufferRange): void {
  encoderForCopy().clearBuffer(range.buffer, range.offset, Math.ceil(range.size / 4) * 4);
}

/** Copies between buffer ranges in order with recorded dispatches. */
export function copyRange(src: BufferRange, dst: BufferRange, bytes: number): void {
  encoderForCopy().copyBufferToBuffer(src.buffer, src.offset, dst.buffer, dst.offset, Math.ceil(bytes / 4) * 4);
}

export interface RecorderStats {
  dispatches: number;
  submits: number;
  pipelines: number;
  uniforms: number;
}

export function recorderStats(): RecorderStats {
  const s = engine();
  return { dispatches: s.dispatches, submits: s.submits, pipelines: s.pipelines.size, uniforms: s.uniforms.size };
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
  const groups = Math.ceil(n / wg);
  const max = gpu().device.limits.maxComputeWorkgroupsPerDimension;
  if (groups <= max) return [groups, 1];
  const y = Math.ceil(groups / max);
  return [Math.ceil(groups / y), y];
}

/** WGSL for the flat index of a grid1d() launch, given builtins `gid` and `nwg` and workgroup size WG. */
export const WGSL_INDEX1D = (wg: number) => `gid.x + gid.y * (nwg.x * ${wg}u)`;
