// A PNG contact sheet of augmentations (Node only: pngjs): row 1 the original images, rows 2 and 3 their
// view1 and view2, so the pipeline can be checked by eye (`byol preview` / docs).

import { writeFileSync } from 'node:fs';
import { PNG } from 'pngjs';
import type { Tensor } from '../engine/tensor.ts';
import type { Rng } from './rng.ts';
import { augmentViews } from './augment.ts';
import type { AugmentConfig, Normalization } from './augment-params.ts';

/** A row of n images, NHWC f32; `normalized` undoes (x - mean) / std for display. */
export interface ImageRow {
  data: Float32Array;
  height: number;
  width: number;
  channels: number;
  normalized?: Normalization | null;
}

export interface GridOptions {
  /** Integer upscaling of every pixel (nearest). Default 3. */
  scale?: number;
  /** Pixels between images. Default 2. */
  gap?: number;
}

/** Encodes rows of images as one PNG (grey background between cells; values clipped to [0, 1]). */
export function imageGridPng(rows: ImageRow[], opts: GridOptions = {}): Buffer {
  const scale = opts.scale ?? 3;
  const gap = opts.gap ?? 2;
  if (rows.length === 0) throw new Error('imageGridPng: no rows');
  const counts = rows.map((r) => r.data.length / (r.height * r.width * r.channels));
  rows.forEach((r, k) => {
    if (!Number.isInteger(counts[k]) || counts[k] === 0) throw new Error(`imageGridPng: row ${k} has ${r.data.length} values, not a whole number of ${r.height}x${r.width}x${r.channels} images`);
    if (r.channels !== 1 && r.channels !== 3) throw new Error(`imageGridPng: row ${k} has ${r.channels} channels (1 or 3 supported)`);
  });
  const cellH = Math.max(...rows.map((r) => r.height)) * scale;
  const cellW = Math.max(...rows.map((r) => r.width)) * scale;
  const cols = Math.max(...counts);
  const width = cols * (cellW + gap) + gap;
  const height = rows.length * (cellH + gap) + gap;
  const png = new PNG({ width, height });
  png.data.fill(96);
  for (let i = 3; i < png.data.length; i += 4) png.data[i] = 255;
  rows.forEach((r, k) => {
    const { height: h, width: w, channels: c } = r;
    for (let n = 0; n < counts[k]; n++) {
      const ox = gap + n * (cellW + gap);
      const oy = gap + k * (cellH + gap);
      for (let y = 0; y < h * scale; y++) {
        for (let x = 0; x < w * scale; x++) {
          const src = ((n * h + Math.floor(y / scale)) * w + Math.floor(x / scale)) * c;
          const dst = ((oy + y) * width + ox + x) * 4;
          for (let ch = 0; ch < 3; ch++) {
            const cc = c === 3 ? ch : 0;
            let v = r.data[src + cc];
            if (r.normalized) v = v * r.normalized.std[cc] + r.normalized.mean[cc];
            png.data[dst + ch] = Math.round(255 * Math.min(1, Math.max(0, v)));
          }
        }
      }
    }
  });
  return PNG.sync.write(png);
}

/**
 * Original / view1 / view2 rows as a PNG, from CPU arrays: images [n, H, W, C] in [0, 1] and the two views
 * [n, OH, OW, C] (normalized with cfg's normalization, if any).
 */
export function augmentationPreviewPng(
  images: Float32Array,
  view1: Float32Array,
  view2: Float32Array,
  dims: { n: number; height: number; width: number; channels: number; outHeight?: number; outWidth?: number },
  cfg: AugmentConfig,
  opts: GridOptions = {},
): Buffer {
  const { height, width, channels } = dims;
  const oh = dims.outHeight ?? height;
  const ow = dims.outWidth ?? width;
  return imageGridPng([
    { data: images, height, width, channels },
    { data: view1, height: oh, width: ow, channels, normalized: cfg.view1.normalize },
    { data: view2, height: oh, width: ow, channels, normalized: cfg.view2.normalize },
  ], opts);
}

/** Augments a GPU batch [n, H, W, C] with `cfg`, reads it back and writes the preview PNG to `path`. */
export async function writeAugmentationPreview(path: string, batch: Tensor, rng: Rng, cfg: AugmentConfig, opts: GridOptions = {}): Promise<void> {
  const [n, height, width, channels] = batch.shape;
  const [v1, v2] = augmentViews(batch, rng, cfg);
  try {
    const a = await batch.toArray();
    const b = await v1.toArray();
    const c = await v2.toArray();
    const dims = { n, height, width, channels, outHeight: v1.shape[1], outWidth: v1.shape[2] };
    writeFileSync(path, augmentationPreviewPng(a as Float32Array, b as Float32Array, c as Float32Array, dims, cfg, opts));
  } finally {
    v1.dispose();
    v2.dispose();
  }
}
