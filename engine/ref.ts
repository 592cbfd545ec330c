// Float64 reference arrays for tests: plain row-major data with a shape. Every kernel family's reference
// forward and backward is written against this, in plain loops, so it can be read and trusted.

export interface Arr {
  data: Float64Array;
  shape: number[];
}

export function arr(data: ArrayLike<number>, shape: number[]): Arr {
  return { data: Float64Array.from(data), shape: [...shape] };
}

export function size(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1] * shape[i + 1];
  return s;
}

/** NumPy broadcasting of two shapes; throws if incompatible. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1;
    const y = b[b.length - r + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`cannot broadcast [${a.join(', ')}] with [${b.join(', ')}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Maps a flat index of `outShape` to the flat index of `inShape` broadcast into it. */
export function broadcastIndex(i: number, outShape: readonly number[], inShape: readonly number[]): number {
  const r = outShape.length;
  const off = r - inShape.length;
  let idx = 0;
  let mul = 1;
  for (let d = r - 1; d >= 0; d--) {
    const c = i % outShape[d];
    i = Math.floor(i / outShape[d]);
    if (d >= off) {
      const n = inShape[d - off];
      if (n !== 1) idx += c * mul;
      mul *= n;
    }
  }
  return idx;
}

/** Sums a gradient of `fromShape` down to the broadcast input shape `toShape`. */
export function sumTo(g: Arr, toShape: readonly number[]): Arr {
  const out = new Float64Array(size(toShape));
  for (let i = 0; i < g.data.length; i++) out[broadcastIndex(i, g.shape, toShape)] += g.data[i];
  return { data: out, shape: [...toShape] };
}

export function map(a: Arr, f: (x: number, i: number) => number): Arr {
  const out = new Float64Array(a.data.length);
  for (let i = 0; i < out.length; i++) out[i] = f(a.data[i], i);
  return { data: out, shape: [...a.shape] };
}

/**
 * Normalized max error: max |a - b| over max(max |b|, floor); NaN anywhere makes it Infinity. The one comparison
 * used by the op tests, the benchmark cross-check and the tile tuner.
 */
export function normalizedError(a: ArrayLike<number>, b: ArrayLike<number>, floor = 1e-3): number {
  if (a.length !== b.length) return Infinity;
  let err = 0;
  let scale = floor;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= err)) err = Number.isNaN(d) ? Infinity : d;
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return err / scale;
}
