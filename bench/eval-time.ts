// Where the evaluation's time goes, for the default encoder (resnet-small width 16 on Fashion-MNIST, untrained):
// feature extraction with the plain eval-mode forward vs the BN-folded one (nn/fold.ts) at several batch sizes,
// on the first --images train images; with --full, the whole evaluation as train.ts runs it (evaluateEncoder).
// Usage: tsx bench/eval-time.ts [--images 4096] [--batches 256,512,1024] [--profile] [--full] [--probe lbfgs|adam]
//        tsx bench/eval-time.ts [--encoder FILE] --probe-cache DIR [--gtol X] [--grid 1e-4,1e-3] [--no-precondition]   (the probe alone
//        on cached features; --no-precondition: L-BFGS in the standardized coordinates, not whitened ones)
// Set LP_NATIVE_VECTOR_WIDTH=512 in the environment to measure lavapipe at 16 lanes.

import { parseArgs } from 'node:util';
import os from 'node:os';
import { getDevice, releaseDevice } from '../engine/device.ts';
import { materialize } from '../nn/module.ts';
import { foldBatchNorm } from '../nn/fold.ts';
import { ResNet } from '../byol/resnet.ts';
import { loadDataset, channelStats } from '../byol/data/dataset.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import { extractFeatures, convergedLinearProbe } from '../byol/eval/index.ts';
import { evaluateEncoder } from '../byol/evaluate.ts';
import { importTorchStateDict } from '../byol/export.ts';
import { parseSafetensors } from '../engine/safetensors.ts';
import { ew } from '../kernels/elementwise.ts';
import { tensor, tidy } from '../engine/tensor.ts';
import { noGrad } from '../engine/tape.ts';
import { sync } from '../engine/recorder.ts';
import { Conv2d } from '../nn/layers.ts';
import { conv2d } from '../kernels/conv2d.ts';

const { values } = parseArgs({
  options: {
    images: { type: 'string', default: '4096' },
    batches: { type: 'string', default: '256,512,1024' },
    width: { type: 'string', default: '16' },
    full: { type: 'boolean', default: false },
    probe: { type: 'string', default: 'lbfgs' },
    'skip-plain': { type: 'boolean', default: false },
    profile: { type: 'boolean', default: false },
    // the converged probe alone on cached features (extracted once into this folder): its time per setting
    'probe-cache': { type: 'string' },
    'no-precondition': { type: 'boolean' },
    gtol: { type: 'string' },
    grid: { type: 'string' },
    // a trained encoder (the encoder.safetensors that `byol train` writes) instead of the seed-0 random init
    encoder: { type: 'string' },
  },
});

const ctx = await getDevice();
const trainSet = loadDataset({ kind: 'fashion-mnist', split: 'train' });
const testSet = loadDataset({ kind: 'fashion-mnist', split: 'test' });
const stats = channelStats(trainSet);
const train = new GpuDataset(trainSet);
const test = new GpuDataset(testSet);
const model = materialize(new ResNet({ arch: 'resnet-small', width: Number(values.width), stem: 'small', inChannels: 1 }), { seed: 0 }).eval();
if (values.encoder) {
  const { readFileSync } = await import('node:fs');
  importTorchStateDict(model, parseSafetensors(new Uint8Array(readFileSync(values.encoder)), values.encoder));
}
console.log(`device: ${ctx.info.description}; LP_NATIVE_VECTOR_WIDTH=${process.env.LP_NATIVE_VECTOR_WIDTH ?? '(default)'}; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

const n = Number(values.images);
const indices = Int32Array.from({ length: n }, (_, i) => i);
// CPU seconds of this process (lavapipe's threads included) as well as wall time: on a machine that others load,
// CPU time per image moves far less than wall time, and CPU time / cores is what an idle machine would take
const cpuSeconds = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const time = async (label: string, f: (x: any) => any, batchSize: number) => {
  const t0 = performance.now();
  const c0 = cpuSeconds();
  const feats = await extractFeatures(f, train, { normalize: stats, indices, batchSize });
  const s = (performance.now() - t0) / 1000;
  const c = cpuSeconds() - c0;
  feats.dispose();
  console.log(`${label.padEnd(8)} batch ${String(batchSize).padStart(4)}: ${(n / s).toFixed(0).padStart(5)} images/s wall, ${((1000 * c) / n).toFixed(2)} CPU-ms/image ` +
    `(140k images: ${((140000 * s) / n).toFixed(0)} s wall, ${((140000 * c) / n / os.cpus().length).toFixed(0)} s at ${os.cpus().length} idle cores)`);
};

const sampleRaw = train.gather(indices.subarray(0, 8));
const mean = tensor(stats.mean, [1]);
const std = tensor(stats.std, [1]);
const sample = ew('sample.normalize', '(a - b) / c', [sampleRaw, mean, std], sampleRaw.shape);
const net = await foldBatchNorm(model, sample);
console.log(`folded ${net.folded.length} BatchNorms, unfolded ${net.unfolded.length}, sample error ${net.sampleError.toExponential(2)}`);
for (const b of values.batches!.split(',').map(Number)) {
  if (!values['skip-plain']) await time('plain', (x) => model.forward(x), b);
  await time('folded', (x) => net.forward(x), b);
}
net.dispose();

if (values.profile) {
  // each conv of the folded forward alone at the first batch size (its input shape from one traced forward), with
  // the elementwise pass that follows it, in CPU-ms per image
  const b = Number(values.batches!.split(',')[0]);
  const layers: { name: string; shape: number[]; conv: Conv2d }[] = [];
  for (const [name, m] of model.namedModules()) {
    if (!(m instanceof Conv2d)) continue;
    const f = m.forward.bind(m);
    Object.defineProperty(m, 'forward', { configurable: true, writable: true, value: (x: any) => (layers.push({ name, shape: [...x.shape], conv: m }), f(x)) });
  }
  noGrad(() => tidy(() => model.forward(sample)));
  for (const l of layers) delete (l.conv as any).forward;
  let total = 0;
  for (const l of layers) {
    const xin = tensor(new Float32Array(b * l.shape.slice(1).reduce((p, q) => p * q)).fill(0.5), [b, ...l.shape.slice(1)]);
    const bias = tensor(new Float32Array(l.conv.outChannels), [l.conv.outChannels]);
    // the ReLU in the conv's epilogue, as the folded forward runs it (a residual add there is not timed)
    const once = () => noGrad(() => tidy(() => { conv2d(xin, l.conv.weight.value, bias, { stride: l.conv.stride, padding: l.conv.padding, epilogue: { relu: true } }); return null; }));
    once();
    await sync();
    const reps = 4;
    const c0 = cpuSeconds();
    for (let r = 0; r < reps; r++) once();
    await sync();
    const ms = ((cpuSeconds() - c0) * 1000) / (reps * b);
    total += ms;
    const [, H, W, Cin] = l.shape;
    console.log(`  ${l.name.padEnd(22)} ${H}x${W}x${Cin} -> ${l.conv.outChannels} k${l.conv.kernelSize} s${l.conv.stride}: ${ms.toFixed(3)} CPU-ms/image (ReLU in the epilogue)`);
    xin.dispose();
    bias.dispose();
  }
  console.log(`  sum of the convs: ${total.toFixed(2)} CPU-ms/image`);
}

if (values['probe-cache']) {
  const dir = values['probe-cache'];
  const { existsSync, mkdirSync, readFileSync, writeFileSync } = await import('node:fs');
  mkdirSync(dir, { recursive: true });
  const feats = async (name: string, ds: GpuDataset) => {
    const file = `${dir}/${name}.f32`;
    if (!existsSync(file)) {
      const fnet = await foldBatchNorm(model, sample);
      const f = await extractFeatures((x) => fnet.forward(x), ds, { normalize: stats, batchSize: 256 });
      writeFileSync(file, new Uint8Array(((await f.toArray()) as Float32Array).buffer));
      f.dispose();
      fnet.dispose();
    }
    const data = new Float32Array(new Uint8Array(readFileSync(file)).buffer);
    return tensor(data, [ds.n, data.length / ds.n]);
  };
  const tr = await feats('train', train);
  const te = await feats('test', test);
  const t0 = performance.now();
  const c0 = cpuSeconds();
  const r = await convergedLinearProbe(tr, train.labels!, te, test.labels!, {
    numClasses: 10, gtol: values.gtol ? Number(values.gtol) : undefined, l2Grid: values.grid ? values.grid.split(',').map(Number) : undefined, log: console.log,
    precondition: !values['no-precondition'],
  });
  console.log(`probe: ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${(cpuSeconds() - c0).toFixed(1)} CPU-s; top-1 ${r.top1}`, JSON.stringify(r.probe));
}

if (values.full) {
  const t0 = performance.now();
  const c0 = cpuSeconds();
  const r = await evaluateEncoder(model, train, test, { normalize: stats, probeEpochs: 20, seed: 0, knn: true, log: console.log, probe: values.probe as 'lbfgs' | 'adam', batchSize: Number(values.batches!.split(',')[0]) });
  console.log(`full evaluation: ${((performance.now() - t0) / 1000).toFixed(1)} s wall, ${(cpuSeconds() - c0).toFixed(1)} CPU-s`, JSON.stringify(r, null, 1));
}
console.log(`load after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
releaseDevice();
process.exit(0);
