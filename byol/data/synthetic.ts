// A small built-in image set for the browser page and quick tests: ten classes of simple grayscale shapes
// (disc, square, triangle, cross, ring, diamond, bars, X, dots) at random sizes, positions, intensities and
// noise. Deterministic for a seed; needs no files, so it works in any browser.

import { Rng } from '../rng.ts';
import type { ImageDataset } from './image-dataset.ts';

export const SHAPE_CLASSES = ['disc', 'square', 'triangle', 'cross', 'ring', 'diamond', 'horizontal bar', 'vertical bar', 'X', 'two dots'];

type Inside = (u: number, v: number) => boolean; // u, v in [-1, 1] relative to the shape's box

const SHAPES: Inside[] = [
  (u, v) => u * u + v * v <= 1,
  (u, v) => Math.abs(u) <= 0.8 && Math.abs(v) <= 0.8,
  (u, v) => v <= 0.8 && v >= -0.9 + 1.7 * Math.abs(u),
  (u, v) => (Math.abs(u) <= 0.25 && Math.abs(v) <= 1) || (Math.abs(v) <= 0.25 && Math.abs(u) <= 1),
  (u, v) => u * u + v * v <= 1 && u * u + v * v >= 0.4,
  (u, v) => Math.abs(u) + Math.abs(v) <= 1,
  (u, v) => Math.abs(v) <= 0.3 && Math.abs(u) <= 1,
  (u, v) => Math.abs(u) <= 0.3 && Math.abs(v) <= 1,
  (u, v) => (Math.abs(u - v) <= 0.35 || Math.abs(u + v) <= 0.35) && Math.abs(u) <= 1 && Math.abs(v) <= 1,
  (u, v) => (u + 0.5) ** 2 + v * v <= 0.2 || (u - 0.5) ** 2 + v * v <= 0.2,
];

/** `n` images of size x size x 1, labels balanced over the 10 classes. */
export function syntheticShapes(n: number, size = 24, seed = 0, name = 'shapes'): ImageDataset {
  const rng = new Rng(seed);
  const images = new Uint8Array(n * size * size);
  const labels = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const cls = i % SHAPE_CLASSES.length;
    labels[i] = cls;
    const scale = rng.uniform(0.25, 0.45) * size;
    const cx = size / 2 + rng.uniform(-0.2, 0.2) * size;
    const cy = size / 2 + rng.uniform(-0.2, 0.2) * size;
    const angle = rng.uniform(-0.3, 0.3);
    const fg = rng.uniform(0.6, 1);
    const bg = rng.uniform(0, 0.3);
    const cos = Math.cos(angle), sin = Math.sin(angle);
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const dx = (x + 0.5 - cx) / scale, dy = (y + 0.5 - cy) / scale;
        const u = cos * dx + sin * dy, v = -sin * dx + cos * dy;
        const val = (SHAPES[cls](u, v) ? fg : bg) + rng.uniform(-0.08, 0.08);
        images[(i * size + y) * size + x] = Math.max(0, Math.min(255, Math.round(val * 255)));
      }
    }
  }
  return { name, images, labels, n, height: size, width: size, channels: 1, classes: [...SHAPE_CLASSES] };
}
