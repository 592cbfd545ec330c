// Canvas drawing for the page: a loss curve (raw values and a smoothed line, linear or log axis) and a grid of
// images (NHWC batches, as the augmentation kernels produce them). The pure parts (ticks, smoothing, pixel
// conversion) are exported separately so Node tests can check them without a DOM.

export interface ImageBatch {
  /** NHWC values; f32 in any range (see GridOptions.range) or bytes */
  data: ArrayLike<number>;
  n: number;
  h: number;
  w: number;
  /** 1 (gray), 3 (RGB) or 4 (RGBA) */
  c: number;
}

/** About `count` round tick values covering [lo, hi] (steps of 1, 2 or 5 times a power of ten). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const mag = 10 ** Math.floor(Math.log10((hi - lo) / Math.max(1, count)));
  const steps = [1, 2, 5, 10].map((m) => m * mag);
  const step = steps.reduce((best, s) => (Math.abs((hi - lo) / s - count) < Math.abs((hi - lo) / best - count) ? s : best));
  const ticks: number[] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) ticks.push(Number((k * step).toPrecision(12)));
  return ticks;
}

/** Tick values for a log10 axis spanning [lo, hi] (given as exponents): powers of ten, plus 2× and 5× when few. */
export function logTicks(lo: number, hi: number): number[] {
  const decades: number[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) decades.push(e);
  const inside = (v: number) => Math.log10(v) >= lo - 1e-9 && Math.log10(v) <= hi + 1e-9;
  const mults = hi - lo > 2 ? [1] : [1, 2, 5];
  const out = decades.flatMap((e) => mults.map((m) => Number((m * 10 ** e).toPrecision(3)))).filter(inside);
  return out.length >= 2 ? out : niceTicks(10 ** lo, 10 ** hi, 4);
}

/** Exponential moving average with TensorBoard's debiasing, so the first points are not pulled toward 0. */
export function smooth(values: readonly number[], weight: number): number[] {
  const out: number[] = [];
  let acc = 0;
  let norm = 0;
  for (const v of values) {
    if (!Number.isFinite(v)) {
      out.push(NaN);
      continue;
    }
    acc = acc * weight + (1 - weight) * v;
    norm = norm * weight + (1 - weight);
    out.push(acc / norm);
  }
  return out;
}

/**
 * RGBA bytes of image `i` of an NHWC batch. range: the value mapped to 0 and to 255, or 'auto' for each image's
 * own min and max (for normalized augmentation output).
 */
export function imageToRGBA(batch: ImageBatch, i: number, range: [number, number] | 'auto' = [0, 1]): Uint8ClampedArray<ArrayBuffer> {
  const { data, h, w, c } = batch;
  if (c !== 1 && c !== 3 && c !== 4) throw new Error(`imageToRGBA: images must have 1, 3 or 4 channels, got ${c}`);
  if (data.length < batch.n * h * w * c) throw new Error(`imageToRGBA: ${data.length} values are fewer than [${batch.n}, ${h}, ${w}, ${c}]`);
  const base = i * h * w * c;
  let [lo, hi] = range === 'auto' ? [Infinity, -Infinity] : range;
  if (range === 'auto') {
    for (let k = 0; k < h * w * c; k++) {
      const v = data[base + k];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const scale = hi > lo ? 255 / (hi - lo) : 0;
  const px = new Uint8ClampedArray(h * w * 4);
  for (let p = 0; p < h * w; p++) {
    const at = base + p * c;
    const r = (data[at] - lo) * scale;
    px[p * 4] = r;
    px[p * 4 + 1] = c === 1 ? r : (data[at + 1] - lo) * scale;
    px[p * 4 + 2] = c === 1 ? r : (data[at + 2] - lo) * scale;
    px[p * 4 + 3] = c === 4 ? (data[at + 3] - lo) * scale : 255;
  }
  return px;
}

function fmt(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(1) : String(Number(v.toPrecision(3)));
}

/** Sizes the canvas's backing store to its CSS box times the device pixel ratio and returns a 2-D context in CSS pixels. */
function context(canvas: HTMLCanvasElement): { g: CanvasRenderingContext2D; W: number; H: number } {
  const dpr = globalThis.devicePixelRatio || 1;
  const W = canvas.clientWidth || canvas.width;
  const H = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(W * dpr) || canvas.height !== Math.round(H * dpr)) {
    canvas.width = Math.round(W * dpr);
    canvas.height = Math.round(H * dpr);
  }
  const g = canvas.getContext('2d')!;
  g.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { g, W, H };
}

export interface CurveOptions {
  title?: string;
  /** log10 y axis (only used when every value is positive) */
  logY?: boolean;
  /** EMA weight of the smoothed line (default: more smoothing for longer runs, at most 0.8); 0 draws none */
  smoothing?: number;
  color?: string;
}

/** Draws values against their index (the step), with axes, ticks, a faint raw line and a smoothed line. */
export function drawLossCurve(canvas: HTMLCanvasElement, values: readonly number[], opts: CurveOptions = {}): void {
  const { g, W, H } = context(canvas);
  const color = opts.color ?? '#2563eb';
  const m = { l: 52, r: 14, t: 24, b: 30 };
  g.clearRect(0, 0, W, H);
  g.fillStyle = '#fff';
  g.fillRect(0, 0, W, H);
  g.font = '11px system-ui, sans-serif';
  g.fillStyle = '#334155';
  g.textBaseline = 'alphabetic';
  const finite = values.filter(Number.isFinite);
  const last = values.length ? values[values.length - 1] : NaN;
  g.textAlign = 'left';
  g.fillText(`${opts.title ?? 'loss'}${values.length ? `  ${fmt(last)} at step ${values.length}` : ''}`, m.l, 14);
  if (finite.length === 0) {
    g.textAlign = 'center';
    g.fillStyle = '#94a3b8';
    g.fillText('no data yet', W / 2, H / 2);
    return;
  }
  const log = !!opts.logY && finite.every((v) => v > 0);
  const tf = (v: number) => (log ? Math.log10(v) : v);
  let lo = Math.min(...finite.map(tf));
  let hi = Math.max(...finite.map(tf));
  if (hi - lo < 1e-12) (lo -= 0.5), (hi += 0.5);
  const pad = (hi - lo) * 0.05;
  lo -= pad;
  hi += pad;
  const n = Math.max(2, values.length);
  const px = (i: number) => m.l + ((W - m.l - m.r) * i) / (n - 1);
  const py = (v: number) => m.t + (H - m.t - m.b) * (1 - (tf(v) - lo) / (hi - lo));

  // grid and ticks
  g.strokeStyle = '#e2e8f0';
  g.lineWidth = 1;
  g.fillStyle = '#64748b';
  g.textAlign = 'right';
  g.textBaseline = 'middle';
  const yTicks = log ? logTicks(lo, hi) : niceTicks(lo, hi, 4);
  for (const v of yTicks) {
    const y = Math.round(py(v)) + 0.5;
    g.beginPath();
    g.moveTo(m.l, y);
    g.lineTo(W - m.r, y);
    g.stroke();
    g.fillText(fmt(v), m.l - 6, y);
  }
  g.textAlign = 'center';
  g.textBaseline = 'top';
  for (const s of niceTicks(1, n, 6).filter((s) => Number.isInteger(s) && s >= 1 && s <= n)) {
    const x = Math.round(px(s - 1)) + 0.5;
    g.beginPath();
    g.moveTo(x, m.t);
    g.lineTo(x, H - m.b);
    g.stroke();
    g.fillText(String(s), x, H - m.b + 5);
  }
  g.strokeStyle = '#94a3b8';
  g.strokeRect(m.l + 0.5, m.t + 0.5, W - m.l - m.r, H - m.t - m.b);

  const line = (vs: readonly number[], width: number, alpha: number) => {
    g.save();
    g.beginPath();
    g.rect(m.l, m.t, W - m.l - m.r, H - m.t - m.b);
    g.clip();
    g.strokeStyle = color;
    g.globalAlpha = alpha;
    g.lineWidth = width;
    g.beginPath();
    let pen = false;
    vs.forEach((v, i) => {
      if (!Number.isFinite(v) || (log && v <= 0)) return void (pen = false);
      if (pen) g.lineTo(px(i), py(v));
      else g.moveTo(px(i), py(v));
      pen = true;
    });
    g.stroke();
    g.restore();
  };
  const w = opts.smoothing ?? Math.min(0.8, Math.max(0, 1 - 10 / values.length));
  if (w > 0 && values.length > 10) {
    line(values, 1, 0.3);
    line(smooth(values, w), 2, 1);
  } else line(values, 1.5, 1);
}

export interface GridOptions {
  cols?: number;
  /** CSS pixels per image pixel */
  scale?: number;
  gap?: number;
  range?: [number, number] | 'auto';
  /** one caption per image, drawn under it */
  labels?: string[];
}

/** Draws an NHWC batch as a grid of images (nearest-neighbour upscaling) and sizes the canvas to fit. */
export function drawImageGrid(canvas: HTMLCanvasElement, batch: ImageBatch, opts: GridOptions = {}): void {
  const { n, h, w } = batch;
  const cols = Math.max(1, Math.min(n, opts.cols ?? Math.ceil(Math.sqrt(n))));
  const rows = Math.ceil(n / cols);
  const scale = opts.scale ?? Math.max(1, Math.floor(96 / Math.max(h, w)));
  const gap = opts.gap ?? 6;
  const caption = opts.labels ? 14 : 0;
  const cw = w * scale;
  const ch = h * scale + caption;
  canvas.style.width = `${cols * (cw + gap) + gap}px`;
  canvas.style.height = `${rows * (ch + gap) + gap}px`;
  const { g, W, H } = context(canvas);
  g.clearRect(0, 0, W, H);
  g.fillStyle = '#f1f5f9';
  g.fillRect(0, 0, W, H);
  const tile = document.createElement('canvas');
  tile.width = w;
  tile.height = h;
  const tg = tile.getContext('2d')!;
  g.imageSmoothingEnabled = false;
  g.font = '11px system-ui, sans-serif';
  g.textAlign = 'center';
  g.textBaseline = 'top';
  for (let i = 0; i < n; i++) {
    const x = gap + (i % cols) * (cw + gap);
    const y = gap + Math.floor(i / cols) * (ch + gap);
    tg.putImageData(new ImageData(imageToRGBA(batch, i, opts.range ?? [0, 1]), w, h), 0, 0);
    g.drawImage(tile, x, y, cw, h * scale);
    if (opts.labels?.[i]) {
      g.fillStyle = '#334155';
      g.fillText(opts.labels[i], x + cw / 2, y + h * scale + 2);
    }
  }
}
