// The in-memory data set every loader returns (NHWC uint8 pixels + optional labels), and loadDataset(), which
// knows the formats' default places. Node only (reads files); the GPU side is gpu-dataset.ts.

import { existsSync, statSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { readIdxPair } from './idx.ts';
import { loadCifar10 } from './cifar.ts';
import { loadImageFolder } from './folder.ts';
import type { ImageDataset } from './image-dataset.ts';

export { channelStats, type ImageDataset } from './image-dataset.ts';

export type DatasetKind = 'fashion-mnist' | 'cifar10' | 'folder';
export type Split = 'train' | 'test';

export interface DatasetSpec {
  kind: DatasetKind;
  /** Folder holding the files; defaults in DEFAULT_PATHS (required for 'folder'). */
  path?: string;
  split: Split;
  /** Only for 'folder': force 1 or 3 channels. */
  channels?: 1 | 3;
}

export const FASHION_MNIST_CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];

/** Where each kind is looked for when no path is given (environment variables override). */
export const DEFAULT_PATHS = {
  // Debian's dataset-fashion-mnist package (`npx byol setup --data` installs it)
  'fashion-mnist': process.env.BYOL_FASHION_MNIST ?? '/usr/share/datasets/fashion-mnist',
  // the extracted cifar-10-binary.tar.gz
  cifar10: process.env.BYOL_CIFAR10 ?? 'data/cifar-10-batches-bin',
};

/** Loads a data set and checks it is consistent (sizes, labels in range). */
export function loadDataset(spec: DatasetSpec): ImageDataset {
  if (spec.split !== 'train' && spec.split !== 'test') throw new Error(`loadDataset: split must be 'train' or 'test', got '${spec.split}'`);
  if (spec.channels !== undefined && spec.kind !== 'folder') throw new Error(`loadDataset: the channels option is only for kind 'folder' (${spec.kind} has fixed channels)`);
  let ds: ImageDataset;
  if (spec.kind === 'fashion-mnist') ds = loadFashionMnist(spec.path ?? DEFAULT_PATHS['fashion-mnist'], spec.split);
  else if (spec.kind === 'cifar10') {
    const dir = spec.path ?? DEFAULT_PATHS.cifar10;
    if (!existsSync(dir)) throw new Error(`cifar10: folder ${dir} not found; download and extract cifar-10-binary.tar.gz there, or pass path`);
    ds = loadCifar10(dir, spec.split);
  } else if (spec.kind === 'folder') {
    if (!spec.path) throw new Error(`loadDataset: kind 'folder' needs a path`);
    const dir = folderForSplit(spec.path, spec.split);
    // named after the folder the user gave (not 'train'), with the split when the folder has train/ and test/
    const base = basename(resolve(spec.path));
    ds = loadImageFolder(dir, { channels: spec.channels, name: dir === spec.path ? base : `${base}-${spec.split}` });
  } else throw new Error(`loadDataset: unknown kind '${(spec as DatasetSpec).kind}' (expected fashion-mnist, cifar10 or folder)`);
  validateDataset(ds);
  return ds;
}

/** True when a folder data set has a test split (a test/ subfolder). */
export function folderHasTestSplit(path: string): boolean {
  return isDir(join(path, 'test'));
}

/** A folder with train/ and test/ subfolders is split by them; otherwise the folder itself is the train split. */
function folderForSplit(path: string, split: Split): string {
  const sub = join(path, split);
  const hasTrain = isDir(join(path, 'train'));
  const hasTest = isDir(join(path, 'test'));
  if (hasTrain || hasTest) {
    if (!isDir(sub)) throw new Error(`${path}: has no '${split}' subfolder (found ${hasTrain ? 'train' : 'test'}/)`);
    return sub;
  }
  if (split === 'test') throw new Error(`${path}: no 'test' subfolder, so there is no test split (a folder without train/ and test/ is used as the train split)`);
  return path;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function loadFashionMnist(dir: string, split: Split): ImageDataset {
  const prefix = split === 'train' ? 'train' : 't10k';
  const find = (stem: string) => {
    for (const name of [`${stem}.gz`, stem]) if (existsSync(join(dir, name))) return join(dir, name);
    throw new Error(`fashion-mnist: ${join(dir, stem)}.gz not found; install Debian's dataset-fashion-mnist (npx byol setup --data) or pass the folder as path`);
  };
  const imagesPath = find(`${prefix}-images-idx3-ubyte`);
  const labelsPath = find(`${prefix}-labels-idx1-ubyte`);
  const { images, labels, n, height, width } = readIdxPair(imagesPath, labelsPath, FASHION_MNIST_CLASSES.length);
  return { name: `fashion-mnist-${split}`, images, labels, n, height, width, channels: 1, classes: [...FASHION_MNIST_CLASSES] };
}

/** Throws unless the fields agree with each other and every label is a valid class index. */
export function validateDataset(ds: ImageDataset): void {
  const what = `data set '${ds.name}'`;
  for (const k of ['n', 'height', 'width', 'channels'] as const) {
    if (!Number.isInteger(ds[k]) || ds[k] <= 0) throw new Error(`${what}: ${k} must be a positive integer, got ${ds[k]}`);
  }
  const bytes = ds.n * ds.height * ds.width * ds.channels;
  if (ds.images.length !== bytes) {
    throw new Error(`${what}: ${ds.images.length} pixel bytes do not match n*height*width*channels = ${ds.n}*${ds.height}*${ds.width}*${ds.channels} = ${bytes}`);
  }
  if (ds.labels) {
    if (ds.labels.length !== ds.n) throw new Error(`${what}: ${ds.labels.length} labels for ${ds.n} images`);
    const k = ds.classes.length;
    if (k === 0) throw new Error(`${what}: has labels but no class names`);
    for (let i = 0; i < ds.n; i++) {
      const l = ds.labels[i];
      if (!(l >= 0 && l < k)) throw new Error(`${what}: label ${l} at index ${i} is out of range 0..${k - 1}`);
    }
  }
}

/** Per-channel mean and standard deviation of the pixels scaled to [0, 1]: the normalization constants. */
