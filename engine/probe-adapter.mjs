// Prints the WebGPU adapter Dawn finds, or exits 1 when there is none. Used by engine/setup.sh.
import { create, globals } from 'webgpu';
Object.assign(globalThis, globals);
const gpu = create([]);
const adapter = await gpu.requestAdapter();
if (!adapter) { console.error('no WebGPU adapter'); process.exit(1); }
const info = adapter.info ?? {};
console.log(JSON.stringify({ vendor: info.vendor, architecture: info.architecture, device: info.device, description: info.description }));
process.exit(0);
