// CIFAR-10 binary batches (data_batch_1..5.bin, test_batch.bin): records of 1 label byte + 3072 pixel bytes,
// the pixels channel-major (1024 R, 1024 G, 1024 B, each 32x32 row-major). Converted to NHWC here.

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readBytes } from './idx.ts';
import type { ImageDataset } from './image-dataset.ts';

const SIDE = 32;
const PIXELS = SIDE * SIDE;
const RECORD = 1 + 3 * PIXELS;

export const CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck'];
export const CIFAR10_TRAIN_FILES = ['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'];
export const CIFAR10_TEST_FILES = ['test_batch.bin'];

/** Parses one batch file's bytes into NHWC pixels and labels; `name` is used in every error. */
export function parseCifarBatch(bytes: Uint8Array, name: string, numClasses = 10): { images: Uint8Array; labels: Int32Array } {
  if (bytes.length === 0) throw new Error(`${name}: empty file`);
  if (bytes.length % RECORD !== 0) {
    throw new Error(`${name}: size ${bytes.length} is not a multiple of the CIFAR record size ${RECORD} (1 label byte + 3072 pixel bytes); truncated or not a CIFAR-10 binary batch`);
  }
  const n = bytes.length / RECORD;
  const images = new Uint8Array(n * 3 * PIXELS);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const rec = i * RECORD;
    const label = bytes[rec];
    if (label >= numClasses) throw new Error(`${name}: label ${label} of record ${i} is out of range 0..${numClasses - 1}`);
    labels[i] = label;
    const out = i * 3 * PIXELS;
    for (let p = 0; p < PIXELS; p++) {
      images[out + 3 * p] = bytes[rec + 1 + p];
      images[out + 3 * p + 1] = bytes[rec + 1 + PIXELS + p];
      images[out + 3 * p + 2] = bytes[rec + 1 + 2 * PIXELS + p];
    }
  }
  return { images, labels };
}

/** Loads the train (5 batches) or test split from the folder `cifar-10-batches-bin`. */
export function loadCifar10(dir: string, split: 'train' | 'test'): ImageDataset {
  const files = split === 'train' ? CIFAR10_TRAIN_FILES : CIFAR10_TEST_FILES;
  const parts = files.map((f) => {
    const path = join(dir, f);
    if (!existsSync(path)) {
      throw new Error(`cifar10: ${path} not found (expected the binary version, folder cifar-10-batches-bin with ${files.join(', ')})`);
    }
    return parseCifarBatch(readBytes(path), path);
  });
  const n = parts.reduce((a, p) => a + p.labels.length, 0);
  const images = new Uint8Array(n * 3 * PIXELS);
  const labels = new Int32Array(n);
  let at = 0;
  for (const p of parts) {
    images.set(p.images, at * 3 * PIXELS);
    labels.set(p.labels, at);
    at += p.labels.length;
  }
  return { name: `cifar10-${split}`, images, labels, n, height: SIDE, width: SIDE, channels: 3, classes: classNames(dir) };
}

/** Class names from batches.meta.txt when it is there and lists 10 names, else the standard ones. */
function classNames(dir: string): string[] {
  const meta = join(dir, 'batches.meta.txt');
  if (!existsSync(meta)) return [...CIFAR10_CLASSES];
  const names = readFileSync(meta, 'utf8').split('\n').map((s) => s.trim()).filter(Boolean);
  return names.length === 10 ? names : [...CIFAR10_CLASSES];
}
