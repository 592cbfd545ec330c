// BYOL trained live in the page on the built-in shapes set (or on images the user dropped): the same model,
// augmentations and step as the Node training script, sized for a browser's software adapter (small ResNet,
// small heads, batch 32). Reports the loss each step, the augmented views, kNN accuracy at the end, and offers
// the online encoder as a safetensors checkpoint with torchvision names.

import { serializeSafetensors } from '../../engine/safetensors.ts';
import { syntheticShapes } from '../data/synthetic.ts';
import { channelStats, type ImageDataset } from '../data/image-dataset.ts';
import { GpuDataset } from '../data/gpu-dataset.ts';
import { augmentViews } from '../augment.ts';
import { byolAugmentConfig } from '../augment-params.ts';
import { Rng } from '../rng.ts';
import { BYOL } from '../model.ts';
import { exportTorchStateDict } from '../export.ts';
import { extractFeatures, knnAccuracy } from '../eval/index.ts';
import type { Trainer, TrainReporter, TrainOptions, TrainResult } from './trainer.ts';

export const WEB_BATCH = 32;
const PREVIEW = 8;

/** Images the user dropped on the page, if any; otherwise the built-in shapes. */
let userImages: ImageDataset | null = null;
export function setUserImages(ds: ImageDataset | null): void {
  userImages = ds;
}

export const byolTrainer: Trainer = {
  name: 'BYOL on the built-in shapes',
  description: 'A small ResNet trained with BYOL on 640 generated 24×24 images of ten shapes (or on images you drop on the page); kNN accuracy on 200 held-out images when done.',
  unit: 'images',
  defaultSteps: 60,
  async train(reporter: TrainReporter, opts: TrainOptions): Promise<TrainResult> {
    const trainSet = userImages ?? syntheticShapes(640, 24, 1);
    const testSet = userImages ? null : syntheticShapes(200, 24, 2, 'shapes-test');
    const stats = channelStats(trainSet);
    const train = new GpuDataset(trainSet);
    const test = testSet ? new GpuDataset(testSet) : null;
    const cfg = byolAugmentConfig({ imageSize: trainSet.height, normalize: stats });
    const model = new BYOL({
      encoder: { arch: 'resnet-small', width: 8, stem: 'small', inChannels: trainSet.channels },
      projHidden: 128,
      projDim: 64,
      predHidden: 128,
      optimizer: 'adam',
      baseLr: 3e-3,
      weightDecay: 1e-6,
      tauBase: 0.99,
      batchSize: WEB_BATCH,
      totalSteps: opts.steps,
      seed: 0,
    });
    const rng = new Rng(7);
    reporter.status(`${trainSet.name}: ${trainSet.n} images ${trainSet.height}×${trainSet.width}×${trainSet.channels}; ResNet (small, width 8)`);
    {
      const x = train.gather(Int32Array.from({ length: PREVIEW }, (_, i) => i));
      const [v1, v2] = augmentViews(x, new Rng(1), byolAugmentConfig({ imageSize: trainSet.height }));
      const rows = new Float32Array(3 * x.size);
      rows.set(await x.toArray(), 0);
      rows.set(await v1.toArray(), x.size);
      rows.set(await v2.toArray(), 2 * x.size);
      reporter.preview({ data: rows, n: 3 * PREVIEW, h: trainSet.height, w: trainSet.width, c: trainSet.channels }, { cols: PREVIEW, range: [0, 1], caption: 'rows: originals, view T, view T′' });
      [x, v1, v2].forEach((t) => t.dispose());
    }
    for (let k = 0; k < opts.steps && !reporter.stopped; k++) {
      const idx = Int32Array.from({ length: WEB_BATCH }, () => rng.int(trainSet.n));
      const x = train.gather(idx);
      const [v1, v2] = augmentViews(x, rng, cfg);
      const { loss } = model.trainStep(v1, v2);
      [x, v1, v2].forEach((t) => t.dispose());
      const value = await loss.item();
      loss.dispose();
      reporter.step(value, WEB_BATCH);
    }
    if (test && trainSet.labels) {
      reporter.status('computing kNN accuracy of the learned encoder…');
      model.encoder.eval();
      const run = (x: Parameters<typeof model.encoder.forward>[0]) => model.encoder.forward(x);
      const trainFeats = await extractFeatures(run, train, { normalize: stats });
      const testFeats = await extractFeatures(run, test, { normalize: stats });
      const { top1 } = await knnAccuracy(trainFeats, trainSet.labels, testFeats, testSet!.labels!, { numClasses: trainSet.classes.length, k: 20 });
      trainFeats.dispose();
      testFeats.dispose();
      reporter.knn(top1);
      reporter.status(`done: kNN top-1 ${(100 * top1).toFixed(1)}% (k = 20, cosine, T = 0.1)`);
    }
    return {
      checkpoint: async () => ({
        bytes: serializeSafetensors(await exportTorchStateDict(model.encoder), { format: 'pt', arch: 'resnet-small', width: '8' }),
        filename: 'byol-encoder.safetensors',
      }),
      dispose: () => {
        model.dispose();
        train.dispose();
        test?.dispose();
      },
    };
  },
};
