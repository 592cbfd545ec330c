// `import { train, loadDataset, ... } from 'byol-webgpu/node'`: the Node-only part (files, PNGs, checkpoints).
/// <reference types="@webgpu/types" preserve="true" />

export { train, TRAIN_DEFAULTS, DEFAULT_BASE_LR, type TrainOptions, type FinalReport } from './train.ts';
export { loadDataset, DEFAULT_PATHS, type DatasetSpec, type DatasetKind } from './data/dataset.ts';
export { writeAugmentationPreview, augmentationPreviewPng } from './preview.ts';
export { lossCurvePng } from './loss-curve.ts';
export { saveSafetensors, loadSafetensors, readSafetensors } from '../nn/safetensors-node.ts';
export { saveCheckpoint, loadLatestCheckpoint, listCheckpoints } from '../nn/checkpoint-node.ts';
