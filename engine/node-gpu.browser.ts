// What '#node-gpu' is under the "browser" condition (package.json "imports"): no Dawn. engine/device.ts takes
// navigator.gpu in a browser and calls this only if a browser build runs where `process` says Node.

export async function nodeGpu(): Promise<GPU> {
  throw new Error("getDevice: this is the browser build of byol-webgpu, which has no Node WebGPU (Dawn); in Node, import it without the 'browser' condition");
}

/** No Dawn instance to keep in a browser. */
export function retainDawnInstance(_on: boolean): void {}
