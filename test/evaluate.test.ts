// byol/evaluate.ts end to end on a tiny labelled image set: the folded encoder's features, kNN and the converged
// probe (with its protocol reported), the Adam probe behind its flag, the encoder's mode restored, no leaks.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { liveTensors } from '../nn/index.ts';
import { materialize } from '../nn/module.ts';
import { ResNet } from '../byol/resnet.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import { channelStats, type ImageDataset } from '../byol/data/dataset.ts';
import { evaluateEncoder } from '../byol/evaluate.ts';
import { Rng } from '../engine/random.ts';

const t = suite('evaluate');

/** Class k: a bright square in quadrant k on noise, so a small random ResNet's features separate it. */
function quadrants(n: number, seed: number): ImageDataset {
  const r = new Rng(seed);
  const [h, w] = [12, 12];
  const images = new Uint8Array(n * h * w);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const k = (labels[i] = r.int(4));
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      const inside = (y < 6) === (k < 2) && (x < 6) === (k % 2 === 0);
      images[i * h * w + y * w + x] = Math.min(255, Math.floor((inside ? 150 : 20) + 60 * r.next()));
    }
  }
  return { name: 'quadrants', images, labels, n, height: h, width: w, channels: 1, classes: ['a', 'b', 'c', 'd'] };
}

t('evaluateEncoder: folded features, kNN and the converged probe; Adam behind the flag; no leaks', async () => {
  const trainSet = quadrants(240, 1);
  const train = new GpuDataset(trainSet);
  const test = new GpuDataset(quadrants(80, 2));
  const encoder = materialize(new ResNet({ arch: 'resnet-small', width: 4, stem: 'small', inChannels: 1 }), { seed: 3 });
  const before = liveTensors();
  const lines: string[] = [];
  const opts = { normalize: channelStats(trainSet), probeEpochs: 5, seed: 0, knn: true, batchSize: 64, log: (s: string) => lines.push(s) };
  try {
    const r = await evaluateEncoder(encoder, train, test, opts);
    assert.ok(encoder.training, 'the encoder is back in training mode');
    assert.ok(r.linearTop1 > 0.8, `linear ${r.linearTop1}`);
    assert.ok(r.knnTop1! > 0.5, `kNN ${r.knnTop1}`);
    assert.ok(r.probe, 'the converged probe is the default');
    assert.is(r.probe!.method, 'lbfgs');
    assert.is(r.probe!.held_out, 40);
    assert.ok(r.probe!.converged, lines.join('\n'));
    assert.ok(r.probe!.l2_grid.includes(r.probe!.chosen_l2));
    assert.ok(r.featureSeconds <= r.seconds);
    assert.match(lines.join('\n'), /L-BFGS/);
    const adam = await evaluateEncoder(encoder, train, test, { ...opts, probe: 'adam', probeEpochs: 60, knn: false });
    assert.is(adam.probe, null);
    assert.is(adam.knnTop1, null);
    assert.ok(adam.linearTop1 > 0.5, `adam probe ${adam.linearTop1}`);
    assert.is(liveTensors(), before, 'no tensors leak');
  } finally {
    encoder.dispose();
    train.dispose();
    test.dispose();
  }
});

t.run();
