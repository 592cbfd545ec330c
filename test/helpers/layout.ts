// NCHW <-> NHWC on the CPU, for comparing against PyTorch fixtures.

export function nchwToNhwc(data: ArrayLike<number>, [n, c, h, w]: number[]): Float32Array {
  const out = new Float32Array(n * c * h * w);
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) out[((i * h + y) * w + x) * c + ch] = data[((i * c + ch) * h + y) * w + x];
  return out;
}

/** OIHW -> HWIO (PyTorch conv weight to the engine's). */
export function oihwToHwio(data: ArrayLike<number>, [o, i, h, w]: number[]): Float32Array {
  const out = new Float32Array(o * i * h * w);
  for (let a = 0; a < o; a++)
    for (let b = 0; b < i; b++)
      for (let y = 0; y < h; y++)
        for (let x = 0; x < w; x++) out[((y * w + x) * i + b) * o + a] = data[((a * i + b) * h + y) * w + x];
  return out;
}

export function cosine(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < a.length; i++) {
    ab += a[i] * b[i];
    aa += a[i] * a[i];
    bb += b[i] * b[i];
  }
  if (aa === 0 && bb === 0) return 1;
  return ab / Math.sqrt(aa * bb);
}
