// How Node gets WebGPU: Dawn, through the `webgpu` package. engine/device.ts reaches this module as '#node-gpu'
// (package.json "imports"), which the "browser" condition maps to node-gpu.browser.ts, so browser bundles never
// contain Dawn or a node: module.

import { configureLavapipe } from './lavapipe.ts';

// Dawn keeps the Node process alive while the object returned by create() is referenced, so releaseDevice() drops
// our reference and a script exits when its work is done. But two Dawn instances alive at once (the released one
// waiting for the garbage collector, and a new one) have crashed lavapipe's threads (a pthread mutex
// assertion). So a new device reuses the released instance while it is still alive (a weak
// reference keeps no process alive), and a process that makes many devices can hold one instance for good.
let retained: GPU | null = null;
let retain = false;
let last: WeakRef<GPU> | null = null;

/** Keep one Dawn instance for every device of this process (true), or let it go with the device (false). */
export function retainDawnInstance(on: boolean): void {
  retain = on;
  if (!on) retained = null;
}

export async function nodeGpu(): Promise<GPU> {
  const alive = retained ?? last?.deref();
  if (alive) {
    if (retain) retained = alive;
    return alive;
  }
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
  await configureLavapipe(); // before Dawn loads the driver (engine/lavapipe.ts)
  const mod: any = await import('webgpu');
  Object.assign(globalThis, mod.globals);
  const gpu = mod.create([]) as GPU;
  if (retain) retained = gpu;
  last = new WeakRef(gpu);
  return gpu;
}
