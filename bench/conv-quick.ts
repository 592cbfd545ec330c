// Quick conv2d timing: forward, dx and dW of a ResNet-like layer, x [32,32,32,64], w [3,3,64,64], stride 1,
// padding 1 (2.416 GFLOP each), after warm-up. Not a test. The machine is shared, so it also prints GFLOPS per
// two CPU-seconds of this process (lavapipe runs on 2 threads): a rough estimate of what an idle machine gives.
// Usage: tsx bench/conv-quick.ts [repeats] [RB,CB,RQ,dwCB,U,narrowRows ...] [--variant subgroups|portable|tiled]
//        [--tiled TM,TN,TK,RM,CQ ...] [--layer N,H,Cin,Cout] [--few direct|gemm] [--textures on|off]
// Each comma list is one configuration (register blocks of the lane kernels, or tiles of the tiled kernel),
// passed to the ops as Conv2dOptions.tuning; without any, the device's default record.

import { getDevice, releaseDevice } from '../engine/device.ts';
import { tensor } from '../engine/tensor.ts';
import { sync } from '../engine/recorder.ts';
import { conv2dRaw, conv2dBackwardInput, conv2dBackwardWeight, convTuning, type ConvGeom, type ConvTuningOverrides, type ConvVariant } from '../kernels/conv2d.ts';

const args = process.argv.slice(2);
const repeats = Number(args.find((a) => /^\d+$/.test(a)) ?? 5);
const layerAt = args.indexOf('--layer');
const layer = layerAt >= 0 ? args.splice(layerAt, 2)[1].split(',').map(Number) : [32, 32, 64, 64];
const variantAt = args.indexOf('--variant');
const variant = variantAt >= 0 ? (args.splice(variantAt, 2)[1] as ConvVariant) : undefined;
const fewAt = args.indexOf('--few');
const fewChannels = fewAt >= 0 ? (args.splice(fewAt, 2)[1] as 'direct' | 'gemm') : undefined;
const texAt = args.indexOf('--textures');
const textures = texAt >= 0 ? args.splice(texAt, 2)[1] === 'on' : undefined;
const configs: ConvTuningOverrides[] = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--tiled') {
    const [TM, TN, TK, RM, CQ] = args[++i].split(',').map(Number);
    configs.push({ variant: 'tiled', fewChannels, tiled: { TM, TN, TK, RM, CQ } });
  } else if (args[i].includes(',')) configs.push({ variant, fewChannels, textures, tiles: tilesOf(args[i]) });
}

const ctx = await getDevice();
console.log(`device: ${ctx.info.description}`);
const [N, H, C, CO] = layer;
const [W, K] = [H, 3];
const g: ConvGeom = { N, H, W, Cin: C, KH: K, KW: K, Cout: CO, stride: 1, pad: 1, OH: H, OW: W };
const flop = 2 * N * H * W * C * CO * K * K;
const rand = (n: number) => Float32Array.from({ length: n }, () => Math.random() - 0.5);
const x = tensor(rand(N * H * W * C), [N, H, W, C]);
const w = tensor(rand(K * K * C * CO), [K, K, C, CO]);
const dy = tensor(rand(N * H * W * CO), [N, H, W, CO]);

for (const tuning of configs.length ? configs : [{ variant, fewChannels, textures }]) {
  const ops: [string, () => { dispose(): void }][] = [
    ['forward', () => conv2dRaw(x, w, null, { stride: 1, padding: 1, tuning })],
    ['dx', () => conv2dBackwardInput(dy, w, g, { tuning })],
    ['dW', () => conv2dBackwardWeight(x, dy, g, { tuning })],
  ];
  const t = convTuning(tuning);
  console.log(`${t.variant}${t.variant !== 'tiled' && t.textures ? ' +textures' : ''} ${JSON.stringify(t.variant === 'tiled' ? t.tiled : t.tiles)}`);
  for (const [name, run] of ops) {
    let t0 = performance.now();
    run().dispose();
    await sync();
    const first = performance.now() - t0;
    run().dispose();
    await sync();
    t0 = performance.now();
    const c0 = process.cpuUsage();
    for (let i = 0; i < repeats; i++) run().dispose();
    await sync();
    const ms = (performance.now() - t0) / repeats;
    const cu = process.cpuUsage(c0);
    const cpuMs = (cu.user + cu.system) / 1000 / repeats;
    const gf = (t: number) => (flop / t / 1e6).toFixed(1);
    console.log(`  ${name.padEnd(8)} ${ms.toFixed(1).padStart(8)} ms  ${gf(ms).padStart(6)} GFLOPS   (${gf(cpuMs / 2).padStart(6)} per 2 CPU-s; first call incl. compile ${first.toFixed(0)} ms)`);
  }
}

function tilesOf(cfg: string) {
  const [RB, CB, RQ, dwCB, U, narrowRows = 32] = cfg.split(',').map(Number);
  return { RB, CB, RQ, dwCB, U, narrowRows };
}

x.dispose();
w.dispose();
dy.dispose();
releaseDevice();
