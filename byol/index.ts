// `import { BYOL, ResNet, ... } from 'byol-webgpu/byol'`: the browser-safe part of byol/ (no file system).
// Node-only pieces (data-set files, PNG previews, the training script, checkpoint folders) are in byol/node.ts.
/// <reference types="@webgpu/types" preserve="true" />

export { BYOL, BYOL_DEFAULTS, type BYOLConfig, type StepResult } from './model.ts';
export { ResNet, BasicBlock, Bottleneck, type ResNetConfig, type ResNetArch } from './resnet.ts';
export { mlpHead } from './heads.ts';
export { exportTorchStateDict, importTorchStateDict } from './export.ts';
export { GpuDataset } from './data/gpu-dataset.ts';
export { channelStats, type ImageDataset } from './data/image-dataset.ts';
export { syntheticShapes, SHAPE_CLASSES } from './data/synthetic.ts';
export { augmentViews, augmentView, augmentWithParams, normalizeBatch } from './augment.ts';
export { byolAugmentConfig, BYOL_VIEW1, BYOL_VIEW2, drawParams, type AugmentConfig, type ViewConfig } from './augment-params.ts';
export { Rng } from './rng.ts';
export { extractFeatures, knnAccuracy, linearProbe } from './eval/index.ts';
