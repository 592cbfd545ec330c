// How Node gets WebGPU: Dawn, through the `webgpu` package. engine/device.ts reaches this module as '#node-gpu'
// (package.json "imports"), which the "browser" condition maps to node-gpu.browser.ts, so browser bundles never
// contain Dawn or a node: module.

import { configureLavapipe } from './lavapipe.ts';

export async function nodeGpu(): Promise<GPU> {
  // Dawn keeps the Node process alive while the object returned by create() is referenced; releaseDevice()
  // drops our only reference so that a script exits when its work is done.
  if (!process.env.XDG_RUNTIME_DIR) process.env.XDG_RUNTIME_DIR = '/tmp';
  await configureLavapipe(); // before Dawn loads the driver (engine/lavapipe.ts)
  const mod: any = await import('webgpu');
  Object.assign(globalThis, mod.globals);
  return mod.create([]) as GPU;
}
