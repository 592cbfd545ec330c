// One GPUDevice per process (or page). Node gets Dawn through the `webgpu` package, imported lazily so that
// browser bundles never see it; browsers get navigator.gpu.

import { configureLavapipe } from './lavapipe.ts';

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

const isNode = typeof process !== 'undefined' && !!process.versions?.node && typeof (globalThis as any).window === 'undefined';

async function nodeGpu(): Promise<GPU> {
  // Dawn keeps the Node process alive while the object returned by create() is referenced; releaseDevice()
  // drops our only reference so that a script exits when its work is done.
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
  await configureLavapipe(); // before Dawn loads the driver (engine/lavapipe.ts)
  const mod: any = await import('webgpu');
  Object.assign(globalThis, mod.globals);
  return mod.create([]) as GPU;
}

/** Returns the shared device, creating it on first use with the adapter's limits and optional features. */
export async function getDevice(): Promise<GpuContext> {
  if (current) return current;
  if (pending) return pending;
  pending = (async () => {
    const gpu: GPU | undefined = isNode ? await nodeGpu() : (globalThis as any).navigator?.gpu;
    if (!gpu) throw new Error('getDevice: WebGPU is not available (navigator.gpu is undefined). In Chromium pass --enable-unsafe-webgpu; in Node run `bash engine/setup.sh`.');
    gpuHandle = gpu;
    const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!adapter) throw new Error('getDevice: no WebGPU adapter found. On Linux without a GPU run `bash engine/setup.sh` as root to install Mesa lavapipe.');
    const requiredFeatures = OPTIONAL_FEATURES.filter((f) => adapter.features.has(f));
    const requiredLimits: Record<string, number> = {};
    for (const name of WANTED_LIMITS) {
      const v = (adapter.limits as any)[name];
      if (typeof v === 'number') requiredLimits[name] = v;
    }
    const device = await adapter.requestDevice({ requiredFeatures, requiredLimits });
    lostReason = null;
    device.lost.then((info) => {
      if (current?.device !== device) return; // destroyed on purpose by releaseDevice()
      lostReason = `${info.reason}: ${info.message}`;
      for (const l of lostListeners) l(lostReason);
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
    return current;
  })();
  try {
    return await pending;
  } finally {
    pending = null;
  }
}

/** The device if getDevice() has resolved; throws otherwise (ops are synchronous and need it ready). */
export function gpu(): GpuContext {
  if (lostReason) throw new Error(`WebGPU device lost (${lostReason}); call getDevice() again after releaseDevice()`);
  if (!current) throw new Error('no WebGPU device yet: `await getDevice()` before running ops');
  return current;
}

export function deviceLostReason(): string | null {
  return lostReason;
}

export function onDeviceLost(fn: (reason: string) => void): void {
  lostListeners.push(fn);
}

const releaseHooks: (() => void)[] = [];
/** Engine parts with device-bound caches register here so that releaseDevice() clears them. */
export function onRelease(fn: () => void): void {
  releaseHooks.push(fn);
}

/** Destroys the device and drops the Dawn instance, so a Node process can exit. */
export function releaseDevice(): void {
  for (const h of releaseHooks) h();
  const c = current;
  current = null;
  lostReason = null;
  c?.device.destroy();
  gpuHandle = null;
}

/** Test hook: simulate device loss as the browser or driver would report it. */
export function simulateDeviceLoss(message = 'simulated'): void {
  lostReason = `unknown: ${message}`;
  for (const l of lostListeners) l(lostReason);
}

export { gpuHandle as _gpuHandle };
