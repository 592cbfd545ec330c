// The in-memory image set every loader produces, and its statistics. Browser-safe (no file system).

export interface ImageDataset {
  name: string;
  /** n * height * width * channels bytes, NHWC. */
  images: Uint8Array;
  /** n class indices in 0..classes.length-1, or null for unlabelled data. */
  labels: Int32Array | null;
  n: number;
  height: number;
  width: number;
  channels: number;
  /** Class names, index = label; empty for unlabelled data. */
  classes: string[];
}

export function channelStats(ds: ImageDataset): { mean: number[]; std: number[] } {
  const c = ds.channels;
  const sum = new Float64Array(c);
  const sq = new Float64Array(c);
  // per-channel histograms make this exact and fast (integer counts, no float accumulation over 10^7 values)
  const hist = Array.from({ length: c }, () => new Float64Array(256));
  const img = ds.images;
  for (let ch = 0; ch < c; ch++) {
    const h = hist[ch];
    for (let i = ch; i < img.length; i += c) h[img[i]]++;
  }
  const count = img.length / c;
  for (let ch = 0; ch < c; ch++) {
    for (let v = 0; v < 256; v++) {
      sum[ch] += hist[ch][v] * (v / 255);
      sq[ch] += hist[ch][v] * (v / 255) ** 2;
    }
  }
  const mean = [...sum].map((s) => s / count);
  const std = [...sq].map((s, ch) => Math.sqrt(Math.max(0, s / count - mean[ch] ** 2)));
  return { mean, std };
}
