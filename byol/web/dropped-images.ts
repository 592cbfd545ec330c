// Images dropped on the page become an unlabelled ImageDataset: decoded by the browser, resized to size x size
// (cover-cropped to square), converted to grayscale uint8 NHWC.

import type { ImageDataset } from '../data/image-dataset.ts';

export async function imagesFromFiles(files: File[], size: number): Promise<ImageDataset> {
  if (files.length < 2) throw new Error(`need at least 2 images (batch statistics), got ${files.length}`);
  const canvas = new OffscreenCanvas(size, size);
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  if (!ctx) throw new Error('no 2D canvas context');
  const images = new Uint8Array(files.length * size * size);
  for (let i = 0; i < files.length; i++) {
    let bmp: ImageBitmap;
    try {
      bmp = await createImageBitmap(files[i]);
    } catch {
      throw new Error(`${files[i].name} is not a readable image`);
    }
    const side = Math.min(bmp.width, bmp.height);
    ctx.drawImage(bmp, (bmp.width - side) / 2, (bmp.height - side) / 2, side, side, 0, 0, size, size);
    bmp.close();
    const px = ctx.getImageData(0, 0, size, size).data;
    for (let p = 0; p < size * size; p++) images[i * size * size + p] = Math.round(0.2989 * px[4 * p] + 0.587 * px[4 * p + 1] + 0.114 * px[4 * p + 2]);
  }
  return { name: 'dropped images', images, labels: null, n: files.length, height: size, width: size, channels: 1, classes: [] };
}
