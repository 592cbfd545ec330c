// Where the evaluation's time goes, for the default encoder (resnet-small width 16 on Fashion-MNIST, untrained):
// feature extraction with the plain eval-mode forward vs the BN-folded one (nn/fold.ts) at several batch sizes,
// on the first --images train images; with --full, the whole evaluation as train.ts runs it (evaluateEncoder).
// Usage: tsx bench/eval-time.ts [--images 4096] [--batches 256,512,1024] [--full] [--probe lbfgs|adam]
// Set LP_NATIVE_VECTOR_WIDTH=512 in the environment to measure lavapipe at 16 lanes.

import { parseArgs } from 'node:util';
import os from 'node:os';
import { getDevice, releaseDevice } from '../engine/device.ts';
import { materialize } from '../nn/module.ts';
import { foldBatchNorm } from '../nn/fold.ts';
import { ResNet } from '../byol/resnet.ts';
import { loadDataset, channelStats } from '../byol/data/dataset.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import { extractFeatures } from '../byol/eval/index.ts';
import { evaluateEncoder } from '../byol/evaluate.ts';
import { ew } from '../kernels/elementwise.ts';
import { tensor } from '../engine/tensor.ts';

const { values } = parseArgs({
  options: {
    images: { type: 'string', default: '4096' },
    batches: { type: 'string', default: '256,512,1024' },
    width: { type: 'string', default: '16' },
    full: { type: 'boolean', default: false },
    probe: { type: 'string', default: 'lbfgs' },
    'skip-plain': { type: 'boolean', default: false },
  },
});

const ctx = await getDevice();
const trainSet = loadDataset({ kind: 'fashion-mnist', split: 'train' });
const testSet = loadDataset({ kind: 'fashion-mnist', split: 'test' });
const stats = channelStats(trainSet);
const train = new GpuDataset(trainSet);
const test = new GpuDataset(testSet);
const model = materialize(new ResNet({ arch: 'resnet-small', width: Number(values.width), stem: 'small', inChannels: 1 }), { seed: 0 }).eval();
console.log(`device: ${ctx.info.description}; LP_NATIVE_VECTOR_WIDTH=${process.env.LP_NATIVE_VECTOR_WIDTH ?? '(default)'}; load ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);

const n = Number(values.images);
const indices = Int32Array.from({ length: n }, (_, i) => i);
const time = async (label: string, f: (x: any) => any, batchSize: number) => {
  const t0 = performance.now();
  const feats = await extractFeatures(f, train, { normalize: stats, indices, batchSize });
  const s = (performance.now() - t0) / 1000;
  feats.dispose();
  console.log(`${label.padEnd(8)} batch ${String(batchSize).padStart(4)}: ${(n / s).toFixed(0).padStart(5)} images/s (${s.toFixed(2)} s for ${n}; 140k images: ${((140000 * s) / n).toFixed(0)} s)`);
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

if (values.full) {
  const t0 = performance.now();
  const r = await evaluateEncoder(model, train, test, { normalize: stats, probeEpochs: 20, seed: 0, knn: true, log: console.log, probe: values.probe as 'lbfgs' | 'adam', batchSize: Number(values.batches!.split(',')[0]) });
  console.log(`full evaluation: ${((performance.now() - t0) / 1000).toFixed(1)} s`, JSON.stringify(r, null, 1));
}
console.log(`load after: ${os.loadavg().map((l) => l.toFixed(2)).join(' ')}`);
releaseDevice();
process.exit(0);
