// One GPUDevice per process (or page). Node gets Dawn through the `webgpu` package (engine/node-gpu.ts, which the
// "browser" condition of package.json "imports" swaps for a stub, so browser bundles never see it); browsers get
// navigator.gpu.

import { nodeGpu } from '#node-gpu';
import { isNode } from './node-module.ts';
import { setIdleWait, idleWhile, endIdleWaits } from './idle-wait.ts';

export interface DeviceInfo {
  vendor: string;
  architecture: string;
  description: string;
  isFallback: boolean;
  features: string[];
  limits: Record<string, number>;
}

export interface GpuContext {
  device: GPUDevice;
  adapter: GPUAdapter;
  info: DeviceInfo;
  hasF16: boolean;
  hasSubgroups: boolean;
  hasTimestamps: boolean;
}

const OPTIONAL_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query'] as GPUFeatureName[];

// Limits worth asking for: the defaults a device gets are lower than what lavapipe and real GPUs offer
// (16 KiB of workgroup memory, 256 invocations, 8 storage buffers, 256 MiB buffers).
const WANTED_LIMITS = [
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxComputeWorkgroupSizeY',
  'maxComputeWorkgroupSizeZ',
  'maxComputeWorkgroupsPerDimension',
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxStorageBuffersPerShaderStage',
  'maxUniformBufferBindingSize',
] as const;

let current: GpuContext | null = null;
let pending: Promise<GpuContext> | null = null;
let gpuHandle: GPU | null = null;
let lostReason: string | null = null;
const lostListeners: ((reason: string) => void)[] = [];
// Bumped for every new device: GPU objects made under an older generation died with their device.
let generation = 0;
const RELEASED = 'released by releaseDevice()';
// Resolves (never rejects) with the reason when the current device is lost, real or simulated; waits on the GPU
// race it so that nothing pending hangs on a device that will never answer.
let lostSignal: Promise<string> = new Promise(() => {});
let signalLost: (reason: string) => void = () => {};

function armLostSignal(): void {
  lostSignal = new Promise((resolve) => (signalLost = resolve));
}

// Waits in progress (readbacks, syncs) that device loss must end. A set, not reactions on lostSignal: those
// would pile up on a promise that never settles while the device is fine, one per readback, forever.
const lossWaiters = new Set<(reason: string) => void>();

function wakeWaiters(reason: string): void {
  const ws = [...lossWaiters];
  lossWaiters.clear();
  for (const w of ws) w(reason);
}

function markLost(reason: string): void {
  if (lostReason) return;
  lostReason = reason;
  signalLost(reason);
  wakeWaiters(reason);
  endIdleWaits();
  for (const l of lostListeners) l(reason);
}

/** Returns the shared device, creating it on first use with the adapter's limits and optional features. */
export async function getDevice(): Promise<GpuContext> {
  if (current) return current;
  if (pending) return pending;
  pending = (async () => {
    const gpu: GPU | undefined = isNode ? await nodeGpu() : (globalThis as any).navigator?.gpu;
    if (!gpu) throw new Error('getDevice: WebGPU is not available (navigator.gpu is undefined). In Chromium pass --enable-unsafe-webgpu; in Node run `npx byol setup`.');
    gpuHandle = gpu;
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('getDevice: no WebGPU adapter found. On Linux without a GPU run `npx byol setup` as root to install Mesa lavapipe.');
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
    const requiredLimits: Record<string, number> = {};
    for (const name of WANTED_LIMITS) {
      const v = (adapter.limits as any)[name];
      if (typeof v === 'number') requiredLimits[name] = v;
    }
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    lostReason = null;
    generation++;
    armLostSignal();
    device.lost.then((info) => {
      if (current?.device !== device) return; // destroyed on purpose by releaseDevice()
      markLost(`${info.reason}: ${info.message || 'no message'}`);
    });
    const ai: any = (adapter as any).info ?? {};
    const limits: Record<string, number> = {};
    for (const k in device.limits) limits[k] = (device.limits as any)[k];
    const info: DeviceInfo = {
      vendor: ai.vendor ?? '',
      architecture: ai.architecture ?? '',
      description: ai.description || ai.device || '',
      isFallback: !!(ai.isFallbackAdapter ?? (adapter as any).isFallbackAdapter),
      features: [...device.features],
      limits,
    };
    current = {
      device,
      adapter,
      info,
      hasF16: device.features.has('shader-f16'),
      hasSubgroups: device.features.has('subgroups' as GPUFeatureName),
      hasTimestamps: device.features.has('timestamp-query'),
    };
    // a CPU adapter's shader threads share the cores with this one: wait for them asleep (engine/idle-wait.ts)
    setIdleWait(isCpuAdapter(info));
    return current;
  })();
  try {
    return await pending;
  } finally {
    pending = null;
  }
}

/** What every use of a lost device throws: recover with releaseDevice() + getDevice() and reloading state. */
export class DeviceLostError extends Error {
  constructor(message: string, readonly reason: string) {
    super(message);
    this.name = 'DeviceLostError';
  }
}

/** The error every use of a lost device throws; `op` names what was attempted. */
export function deviceLostError(op: string, reason = lostReason ?? RELEASED): DeviceLostError {
  return new DeviceLostError(`WebGPU device lost (${reason}) during ${op}; call releaseDevice() and then getDevice() to continue on a new device (tensors of the lost device are gone: reload them, e.g. from a checkpoint)`, reason);
}

/**
 * The device if getDevice() has resolved; throws otherwise (ops are synchronous and need it ready), and after
 * device loss, naming `op`.
 */
export function gpu(op = 'a GPU operation'): GpuContext {
  if (lostReason) throw deviceLostError(op);
  if (!current) throw new Error(`${op}: no WebGPU device yet: \`await getDevice()\` before running ops`);
  return current;
}

/** An adapter that runs shaders on the CPU: lavapipe (llvmpipe), SwiftShader, or one that says it is a fallback. */
export function isCpuAdapter(info: Pick<DeviceInfo, 'vendor' | 'architecture' | 'description' | 'isFallback'>): boolean {
  return info.isFallback || /llvmpipe|lavapipe|swiftshader/i.test(`${info.description} ${info.architecture} ${info.vendor}`);
}

/** Whether the device is Mesa's lavapipe (llvmpipe), the CPU adapter several kernels' defaults were measured on. */
export function isLavapipe(op = 'isLavapipe'): boolean {
  const { info } = gpu(op);
  return /llvmpipe|lavapipe/i.test(`${info.description} ${info.architecture} ${info.vendor}`);
}

export function deviceLostReason(): string | null {
  return lostReason;
}

/** Which device GPU objects belong to; changes whenever getDevice() creates a new one. */
export function deviceGeneration(): number {
  return generation;
}

/**
 * Resolves with the loss reason when the current device is lost (never rejects; stays pending while it is
 * fine). For one-off waits: every .then() on it is kept until the device is lost; per-call waits use
 * unlessDeviceLost().
 */
export function whenDeviceLost(): Promise<string> {
  return lostSignal;
}

/**
 * Settles as `p` does, unless the device is lost (or released) first: then rejects with the device-lost error
 * naming `op`, so that nothing waits forever on a device that will never answer. Holds nothing once settled.
 */
export function unlessDeviceLost<T>(p: Promise<T>, op: string): Promise<T> {
  p.catch(() => {}); // if loss wins, Dawn may still reject p later (pending maps are aborted): not an error
  if (lostReason) return Promise.reject(deviceLostError(op));
  // the idle wait ends with this promise, which loss and releaseDevice() settle even where Dawn never settles p
  return idleWhile(new Promise<T>((resolve, reject) => {
    const onLost = (reason: string) => reject(deviceLostError(op, reason));
    lossWaiters.add(onLost);
    p.then(
      (v) => (lossWaiters.delete(onLost), resolve(v)),
      (e) => (lossWaiters.delete(onLost), reject(e)),
    );
  }));
}

/** True for the error of work cut off by releaseDevice() (not by a real device loss). */
export function isReleaseError(e: unknown): boolean {
  return e instanceof DeviceLostError && e.reason === RELEASED;
}

/**
 * `p`, except that a rejection caused by releaseDevice() is not reported as unhandled when nobody awaits it
 * (e.g. `loss.item()` started and never awaited, then releaseDevice() at the end of a script): ending the device
 * on purpose must not crash the process. Whoever awaits the result still gets the DeviceLostError. Rejections
 * for other reasons (a real device loss, a GPU error) stay as loud as before.
 */
export function quietOnRelease<T>(p: Promise<T>): Promise<T> {
  const out: Promise<T> = p.then(undefined, (e) => {
    if (isReleaseError(e)) out.catch(() => {}); // attached before `out` rejects: marks it handled
    throw e;
  });
  return out;
}

export function onDeviceLost(fn: (reason: string) => void): void {
  lostListeners.push(fn);
}

const releaseHooks: (() => void)[] = [];
/** Engine parts with device-bound caches register here so that releaseDevice() clears them. */
export function onRelease(fn: () => void): void {
  releaseHooks.push(fn);
}

/**
 * Destroys the device and drops the Dawn instance, so a Node process can exit. Also the way back after device
 * loss: release, then getDevice() makes a new device (a new generation; tensors of the old one are dead).
 */
export function releaseDevice(): void {
  for (const h of releaseHooks) h();
  const c = current;
  current = null;
  lostReason = null;
  generation++; // even without a new device, what was made on the old one must not be used or pooled again
  signalLost(RELEASED); // anything still waiting on the old device stops waiting
  wakeWaiters(RELEASED);
  endIdleWaits();
  armLostSignal();
  c?.device.destroy();
  gpuHandle = null;
}

/** Test hook: simulate device loss as the browser or driver would report it (the device itself keeps working). */
export function simulateDeviceLoss(message = 'simulated'): void {
  markLost(`unknown: ${message}`);
}

export { gpuHandle as _gpuHandle };
