// Does a uniform buffer serve the narrow forward conv's weights better than the flat operand texture on lavapipe?
// llvmpipe loads a uniform at a per-lane address as a branchless gather inline (one scalar load per lane, no
// bounds-check branches, no call), where a texel fetch is an out-of-line call. This takes the engine's own forward
// kernel for one layer (3x3, stride 1, N x H x H x C -> C, C <= 64 so the weights fit 64 KiB), runs it as generated
// and with its weight texture swapped for a `var<uniform>` array of the same vec4s, both as raw pipelines over the
// same operands, checks both against conv2dRaw, and times them alternately (medians of 7 rounds of 4 dispatches).
// Usage: npx tsx bench/weights-ubo-probe.ts [N] [C] [H]   (default 64 16 28)

import { getDevice, releaseDevice, tensor } from '../nn/index.ts';
import { conv2dRaw } from '../kernels/conv2d.ts';
import { declaredKernels } from '../engine/kernel.ts';
import { gpu } from '../engine/device.ts';
import { readRange } from '../engine/recorder.ts';
import { median } from './harness.ts';

const [N, C, H] = [Number(process.argv[2] ?? 64), Number(process.argv[3] ?? 16), Number(process.argv[4] ?? 28)];
if (!(C % 4 === 0 && 9 * C * C * 4 <= 65536)) throw new Error(`weights-ubo-probe: C must be a multiple of 4 with 9*C*C floats in 64 KiB, got ${C}`);
const W = H;
await getDevice();
const dev = gpu('weights-ubo-probe').device;
const rnd = (n: number) => Float32Array.from({ length: n }, () => Math.fround(Math.random() - 0.5));
const xData = rnd(N * H * W * C);
const wData = rnd(9 * C * C);
const ref = conv2dRaw(tensor(xData, [N, H, W, C]), tensor(wData, [3, 3, C, C]), null, { padding: 1 });
const want = (await ref.toArray()) as Float32Array;
ref.dispose();
const found = [...declaredKernels()].find(([key]) => key.startsWith('conv2d|') && key.includes('"mode":"fwd"'));
if (!found) throw new Error('weights-ubo-probe: no lane forward kernel was declared (this probe needs the lane kernels, as on lavapipe)');
const [key, k] = found;
const v = JSON.parse(key.slice('conv2d|'.length));
if (!v.texB || !v.texA) throw new Error(`weights-ubo-probe: the forward kernel reads its operands from buffers (${key}); run with textures on (lavapipe's default)`);
const SG = v.lanes.SG;
const rows = N * H * W;
const rowTiles = Math.ceil(rows / (SG * v.RB));
const Q = C / 4;
const uniforms = { rows, tiles: rowTiles, rowTiles, colTiles: 1, dh: H, dw: W, sh: H, sw: W, th: H, tw: W, ck: C, cn: C, kq: Q, nq: Q, kh: 3, kw: 3, s: 1, pad: 1, hasBias: 0 };
const packed = (k as unknown as { packUniforms(a: object): ArrayBuffer }).packUniforms(uniforms);
const pBuf = dev.createBuffer({ size: Math.ceil(packed.byteLength / 16) * 16, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(pBuf, 0, packed);
const texture = (texels: number, texRows: number, data: Float32Array) => {
  const t = dev.createTexture({ size: [texels, texRows], format: 'rgba32float', usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST });
  const padded = new Float32Array(texels * texRows * 4);
  padded.set(data);
  dev.queue.writeTexture({ texture: t }, padded, { bytesPerRow: texels * 16, rowsPerImage: texRows }, [texels, texRows]);
  return t.createView();
};
const aView = texture(W * Q, N * H, xData);
const bView = texture(v.texB, Math.ceil(wData.length / 4 / v.texB), wData);
const wBuf = dev.createBuffer({ size: wData.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(wBuf, 0, wData);
const yBuf = dev.createBuffer({ size: rows * C * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const uboCode = k.wgsl
  .replace('var b: texture_storage_2d<rgba32float, read>;', `var<uniform> b: array<vec4<f32>, ${wData.length / 4}>;`)
  .replace(/textureLoad\(b, vec2<u32>\((bi\w+) % \d+u, bi\w+ \/ \d+u\)\)/g, 'b[$1]');
if (!uboCode.includes('var<uniform> b:') || uboCode.includes('textureLoad(b,')) throw new Error('weights-ubo-probe: the kernel no longer reads its weight as this probe expects');

function variant(code: string, weights: GPUBindingResource) {
  const pipeline = dev.createComputePipeline({ layout: 'auto', compute: { module: dev.createShaderModule({ code }), entryPoint: 'main' } });
  const entries = [{ buffer: pBuf }, aView, weights, { buffer: wBuf } /* bias: the weight again, hasBias 0 */, { buffer: yBuf }];
  const bindGroup = dev.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: entries.map((resource, binding) => ({ binding, resource })) });
  return async (reps: number) => {
    const enc = dev.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (let i = 0; i < reps; i++) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(Math.min(rowTiles, 65535), Math.ceil(rowTiles / 65535));
    }
    pass.end();
    dev.queue.submit([enc.finish()]);
    await dev.queue.onSubmittedWorkDone();
  };
}
async function maxDiff(): Promise<number> {
  const got = new Float32Array(await readRange({ buffer: yBuf, offset: 0, size: yBuf.size }, 'weights-ubo-probe'));
  let d = 0;
  for (let i = 0; i < got.length; i++) d = Math.max(d, Math.abs(got[i] - want[i]));
  return d;
}

const runs = { texture: variant(k.wgsl, bView), uniform: variant(uboCode, { buffer: wBuf }) };
console.log(`${gpu('weights-ubo-probe').info.description}; ${N}x${H}x${W}x${C} -> ${C}, 3x3, forward; kernel ${key}`);
for (const [name, run] of Object.entries(runs)) {
  await run(1);
  console.log(`${name}: max |difference| from conv2dRaw ${(await maxDiff()).toExponential(2)}`);
}
const ms: Record<string, number[]> = { texture: [], uniform: [] };
for (let round = 0; round < 7; round++) {
  for (const [name, run] of Object.entries(runs)) {
    const t0 = performance.now();
    await run(4);
    ms[name].push((performance.now() - t0) / 4);
  }
}
const gflops = (t: number) => ((2 * rows * 9 * C * C) / t / 1e6).toFixed(1);
for (const [name, t] of Object.entries(ms)) console.log(`${name}: ${median(t).toFixed(2)} ms (${gflops(median(t))} GFLOPS), rounds ${t.map((x) => x.toFixed(1)).join(' ')}`);
console.log(`uniform / texture: ${(median(ms.uniform) / median(ms.texture)).toFixed(3)} (medians of 7 alternating rounds)`);
releaseDevice();
