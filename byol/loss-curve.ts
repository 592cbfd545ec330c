// A loss curve as a PNG (Node, pngjs): raw and smoothed loss against step, with axes and grid lines. No text
// rendering: the y range and step range are written into the file name's companion metrics.jsonl and final.json.

import { PNG } from 'pngjs';

type RGB = [number, number, number];

function line(png: PNG, x0: number, y0: number, x1: number, y1: number, c: RGB): void {
  const n = Math.max(1, Math.ceil(Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0))));
  for (let i = 0; i <= n; i++) {
    const x = Math.round(x0 + ((x1 - x0) * i) / n);
    const y = Math.round(y0 + ((y1 - y0) * i) / n);
    if (x < 0 || y < 0 || x >= png.width || y >= png.height) continue;
    const o = (y * png.width + x) * 4;
    png.data[o] = c[0];
    png.data[o + 1] = c[1];
    png.data[o + 2] = c[2];
    png.data[o + 3] = 255;
  }
}

/** Draws points (step, loss) and a trailing mean of them; returns PNG bytes. */
export function lossCurvePng(points: { step: number; loss: number }[], width = 640, height = 360): Buffer {
  const png = new PNG({ width, height });
  png.data.fill(255);
  const m = { l: 40, r: 10, t: 10, b: 30 };
  const pts = points.filter((p) => Number.isFinite(p.loss));
  const W = width - m.l - m.r;
  const H = height - m.t - m.b;
  line(png, m.l, m.t, m.l, m.t + H, [0, 0, 0]);
  line(png, m.l, m.t + H, m.l + W, m.t + H, [0, 0, 0]);
  if (pts.length < 2) return PNG.sync.write(png);
  const s0 = pts[0].step;
  const s1 = pts[pts.length - 1].step;
  let lo = Math.min(...pts.map((p) => p.loss));
  let hi = Math.max(...pts.map((p) => p.loss));
  if (hi - lo < 1e-9) (lo -= 0.5), (hi += 0.5);
  const X = (s: number) => m.l + ((s - s0) / Math.max(1, s1 - s0)) * W;
  const Y = (v: number) => m.t + H - ((v - lo) / (hi - lo)) * H;
  for (let g = 1; g < 5; g++) line(png, m.l + 1, m.t + (H * g) / 5, m.l + W, m.t + (H * g) / 5, [230, 230, 230]);
  for (let i = 1; i < pts.length; i++) line(png, X(pts[i - 1].step), Y(pts[i - 1].loss), X(pts[i].step), Y(pts[i].loss), [160, 190, 230]);
  // a trailing mean over ~2.5% of the points: follows the curve without the lag of a slow EMA
  const w = Math.max(1, Math.round(pts.length / 40));
  let acc = 0;
  let prev: { x: number; y: number } | null = null;
  for (let i = 0; i < pts.length; i++) {
    acc += pts[i].loss - (i >= w ? pts[i - w].loss : 0);
    const cur = { x: X(pts[i].step), y: Y(acc / Math.min(i + 1, w)) };
    if (prev) {
      line(png, prev.x, prev.y, cur.x, cur.y, [200, 40, 40]);
      line(png, prev.x, prev.y + 1, cur.x, cur.y + 1, [200, 40, 40]);
    }
    prev = cur;
  }
  return PNG.sync.write(png);
}
