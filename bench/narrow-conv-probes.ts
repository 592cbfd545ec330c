// Three kernel shapes for the narrow forward conv (3x3, stride 1, Cin = Cout = C) that give every lane the same
// weights, timed against the engine's conv2d forward on one layer. They answer "why not broadcast the weights?"
// on lavapipe, where the engine's narrow kernel spends its time fetching a per-lane weight texel (an out-of-line
// call) and shuffling rows between lanes. Each probe gives a lane one output pixel and all C output channels:
//   constants         the weights compiled into the shader as literals (an inference-only kernel);
//   uniform-loop      the engine's loop nest, weights read from a storage buffer at addresses that are the same in
//                     every lane but come from loop counters;
//   uniform-unrolled  taps and channel quads written out, so each weight's address is a compile-time constant.
// Each probe's output is compared with the engine's (max |difference|), then the two are timed alternately.
// Not a test; lavapipe's answers are in bench/results/lavapipe-codegen.md.
// Usage: npx tsx bench/narrow-conv-probes.ts constants|uniform-loop|uniform-unrolled [N] [C]   (28x28 images)

import { getDevice, releaseDevice, sync, tensor } from '../nn/index.ts';
import { conv2dRaw } from '../kernels/conv2d.ts';
import { gpu } from '../engine/device.ts';
import { readRange } from '../engine/recorder.ts';
import { median } from './harness.ts';

const PROBES = ['constants', 'uniform-loop', 'uniform-unrolled'] as const;
type Probe = (typeof PROBES)[number];
const probe = (process.argv[2] ?? 'uniform-loop') as Probe;
if (!PROBES.includes(probe)) throw new Error(`narrow-conv-probes: probe must be one of ${PROBES.join(', ')}, got '${probe}'`);
const N = Number(process.argv[3] ?? 256);
const C = Number(process.argv[4] ?? 16);
if (!(C % 4 === 0 && C <= 32)) throw new Error(`narrow-conv-probes: C must be a multiple of 4 up to 32 (the probes unroll over it), got ${C}`);
const H = 28, W = 28, KQ = C / 4, rows = N * H * W;

await getDevice();
const dev = gpu('narrow-conv-probes').device;
const random = (n: number) => Float32Array.from({ length: n }, () => Math.fround(Math.random() - 0.5));
const xData = random(rows * C);
const wData = random(9 * C * C);
const x = tensor(xData, [N, H, W, C]);
const w = tensor(wData, [3, 3, C, C]);

const quads = (f: (o: number) => string) => Array.from({ length: KQ }, (_, o) => f(o)).join(' ');
const literal = (v: number) => (v === 0 ? '0.0' : v.toPrecision(9));
const weightVec = (k: number, o: number) => `vec4<f32>(${[0, 1, 2, 3].map((j) => literal(wData[k * C + o * 4 + j])).join(', ')})`;
// tap (kh, kw)'s source texel column and row for this lane's pixel, zero outside the image
const tapOrigin = (kh: string, kw: string) => `let yy = r + ${kh} - 1; let xx = c + ${kw} - 1;
    let ok = yy >= 0 && yy < ${H} && xx >= 0 && xx < ${W};
    let ty = u32(select(0, n * ${H} + yy, ok)); let tx = u32(select(0, xx, ok)) * ${KQ}u;`;
const fetch = (q: string) => `select(vec4<f32>(0.0), textureLoad(xt, vec2<u32>(tx + ${q}, ty)), ok)`;

function body(): string {
  if (probe === 'uniform-loop') {
    return `for (var kh = 0; kh < 3; kh++) {
  for (var kw = 0; kw < 3; kw++) {
    ${tapOrigin('kh', 'kw')}
    let kb = u32(kh * 3 + kw) * ${C}u;
    for (var q = 0u; q < ${KQ}u; q++) {
      let v = ${fetch('q')};
      ${[0, 1, 2, 3].map((kk) => `{ let wi = (kb + q * 4u + ${kk}u) * ${KQ}u; ${quads((o) => `a${o} = fma(vec4<f32>(v.${'xyzw'[kk]}), wb[wi + ${o}u], a${o});`)} }`).join('\n      ')}
    }
  }
  }`;
  }
  const out: string[] = [];
  for (let t = 0; t < 9; t++) {
    out.push(`{ ${tapOrigin(String(Math.floor(t / 3)), String(t % 3))}`);
    for (let q = 0; q < KQ; q++) {
      out.push(`  { let v = ${fetch(`${q}u`)};`);
      for (let kk = 0; kk < 4; kk++) {
        const k = t * C + q * 4 + kk;
        out.push(`    ${quads((o) => `a${o} = fma(vec4<f32>(v.${'xyzw'[kk]}), ${probe === 'constants' ? weightVec(k, o) : `wb[${k * KQ + o}]`}, a${o});`)}`);
      }
      out.push('  }');
    }
    out.push('}');
  }
  return out.join('\n  ');
}

const code = `
@group(0) @binding(0) var xt: texture_storage_2d<rgba32float, read>;
@group(0) @binding(1) var<storage, read_write> y: array<vec4<f32>>;
${probe === 'constants' ? '' : `@group(0) @binding(2) var<storage, read> wb: array<vec4<f32>, ${9 * C * KQ}>;`}
@compute @workgroup_size(8)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
  let i = gid.x + gid.y * nwg.x * 8u;
  let m = min(i, ${rows - 1}u);
  let n = i32(m / ${H * W}u); let r = i32((m / ${W}u) % ${H}u); let c = i32(m % ${W}u);
  ${quads((o) => `var a${o} = vec4<f32>(0.0);`)}
  ${body()}
  if (i < ${rows}u) { ${quads((o) => `y[m * ${KQ}u + ${o}u] = a${o};`)} }
}`;

const pipeline = dev.createComputePipeline({ layout: 'auto', compute: { module: dev.createShaderModule({ code }), entryPoint: 'main' } });
const texture = dev.createTexture({ size: [W * KQ, N * H], format: 'rgba32float', usage: GPUTextureUsage.STORAGE_BINDING | GPUTextureUsage.COPY_DST });
dev.queue.writeTexture({ texture }, xData, { bytesPerRow: W * C * 4, rowsPerImage: N * H }, [W * KQ, N * H]);
const yBuf = dev.createBuffer({ size: rows * C * 4, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC });
const wBuf = dev.createBuffer({ size: wData.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
dev.queue.writeBuffer(wBuf, 0, wData);
const bindGroup = dev.createBindGroup({
  layout: pipeline.getBindGroupLayout(0),
  entries: [
    { binding: 0, resource: texture.createView() },
    { binding: 1, resource: { buffer: yBuf } },
    ...(probe === 'constants' ? [] : [{ binding: 2, resource: { buffer: wBuf } }]),
  ],
});
const groups = Math.ceil(rows / 8);
const gx = Math.min(groups, 65535);
const runProbe = async (k: number) => {
  const enc = dev.createCommandEncoder();
  for (let i = 0; i < k; i++) {
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(gx, Math.ceil(groups / gx));
    pass.end();
  }
  dev.queue.submit([enc.finish()]);
  await dev.queue.onSubmittedWorkDone();
};
const runEngine = async (k: number) => {
  for (let i = 0; i < k; i++) conv2dRaw(x, w, null, { padding: 1 }).dispose();
  await sync();
};

const expected = conv2dRaw(x, w, null, { padding: 1 });
const want = (await expected.toArray()) as Float32Array;
expected.dispose();
await runProbe(1);
const got = new Float32Array(await readRange({ buffer: yBuf, offset: 0, size: yBuf.size }, 'narrow-conv-probes'));
let maxDiff = 0;
let maxAbs = 0;
for (let i = 0; i < got.length; i++) {
  maxDiff = Math.max(maxDiff, Math.abs(got[i] - want[i]));
  maxAbs = Math.max(maxAbs, Math.abs(want[i]));
}

await runEngine(1);
const ratios: number[] = [];
const probeMs: number[] = [];
const engineMs: number[] = [];
for (let round = 0; round < 6; round++) {
  let t0 = performance.now();
  await runProbe(3);
  probeMs.push((performance.now() - t0) / 3);
  t0 = performance.now();
  await runEngine(3);
  engineMs.push((performance.now() - t0) / 3);
  ratios.push(probeMs[round] / engineMs[round]);
}
const gflops = (ms: number) => ((2 * rows * 9 * C * C) / ms / 1e6).toFixed(1);
console.log(`${gpu('narrow-conv-probes').info.description}; ${N}x${H}x${W}x${C} -> ${C}, 3x3, forward; probe '${probe}' (WGSL ${code.length} characters)`);
console.log(`max |probe - engine| ${maxDiff.toExponential(2)} (outputs up to ${maxAbs.toFixed(2)} in magnitude)`);
console.log(`probe ${median(probeMs).toFixed(1)} ms (${gflops(median(probeMs))} GFLOPS), engine ${median(engineMs).toFixed(1)} ms (${gflops(median(engineMs))} GFLOPS): probe/engine ${median(ratios).toFixed(2)} (median of 6 alternating rounds)`);
releaseDevice();
