// Rows along the leading axis: concatRows (torch.cat(dim=0)) and sliceRows (torch.narrow(0, ...)) by buffer
// copies; swapHalves (torch.roll(x, N/2, 0)) by one dispatch, which keeps the compute pass open where copies would
// end it. A BYOL step uses them to run both views as one batch and to pair each view's prediction with the other
// view's target.

import { Tensor, empty, zeros, fmtShape } from '../engine/tensor.ts';
import { needsGrad, record } from '../engine/tape.ts';
import { copyRange } from '../engine/recorder.ts';
import { kernel, type Kernel } from '../engine/kernel.ts';

function rowBytes(x: Tensor): number {
  return (x.size / x.shape[0]) * 4;
}

function copyRows(src: Tensor, srcRow: number, dst: Tensor, dstRow: number, rows: number, what: string): void {
  if (rows === 0) return;
  const rb = rowBytes(src);
  const a = src.binding(what);
  const b = dst.binding(what);
  copyRange({ buffer: a.buffer, offset: a.offset + srcRow * rb, size: rows * rb }, { buffer: b.buffer, offset: b.offset + dstRow * rb, size: rows * rb }, rows * rb);
}

/** Stacks tensors of one trailing shape along axis 0: [n1, ...] + [n2, ...] -> [n1 + n2, ...]. */
export function concatRows(xs: readonly Tensor[]): Tensor {
  const op = 'concatRows';
  if (xs.length === 0) throw new Error(`${op}: expected at least one tensor, got none`);
  const first = xs[0];
  for (const x of xs) {
    x.assertLive(op);
    const same = x.rank === first.rank && x.rank >= 1 && x.dtype === first.dtype && x.shape.every((d, i) => i === 0 || d === first.shape[i]);
    if (!same) throw new Error(`${op}: expected tensors of rank >= 1 with one dtype and one trailing shape, got ${xs.map((t) => `${t.dtype} ${fmtShape(t.shape)}`).join(', ')}`);
    if (x.dtype !== 'f32' && x.dtype !== 'i32' && x.dtype !== 'u32') throw new Error(`${op}: unsupported dtype ${x.dtype}`);
  }
  const rows = xs.reduce((n, x) => n + x.shape[0], 0);
  const y = empty([rows, ...first.shape.slice(1)], first.dtype, op);
  let at = 0;
  for (const x of xs) {
    copyRows(x, 0, y, at, x.shape[0], op);
    at += x.shape[0];
  }
  if (needsGrad(...xs)) {
    const counts = xs.map((x) => x.shape[0]);
    record(op, [...xs], y, (dy, _saved, needs) => {
      let r = 0;
      return counts.map((n, i) => {
        const g = needs[i] ? sliceRows(dy, r, n) : null;
        r += n;
        return g;
      });
    });
  }
  return y;
}

/** Rows start .. start + count - 1 of x, a copy: [N, ...] -> [count, ...]. */
export function sliceRows(x: Tensor, start: number, count: number): Tensor {
  const op = 'sliceRows';
  x.assertLive(op);
  if (x.rank < 1) throw new Error(`${op}: expected a tensor of rank >= 1, got ${fmtShape(x.shape)}`);
  const N = x.shape[0];
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > N) {
    throw new Error(`${op}: rows ${start}..${start + count - 1} (start ${start}, count ${count}) are not within x ${fmtShape(x.shape)}`);
  }
  const y = empty([count, ...x.shape.slice(1)], x.dtype, op);
  copyRows(x, start, y, 0, count, op);
  if (needsGrad(x)) {
    record(op, [x], y, (dy) => {
      const dx = zeros(x.shape);
      copyRows(dy, 0, dx, start, count, `${op}.backward`);
      return [dx];
    });
  }
  return y;
}

// 32-bit words, whatever the dtype: a pure copy, so i32/u32 pass through and f32 bit patterns (NaN payloads) too
function swapKernel(vec: boolean): Kernel {
  const T = vec ? 'vec4<u32>' : 'u32';
  return kernel(`rows|swapHalves|${vec}`, () => ({
    name: 'swapHalves',
    uniforms: { n: 'u32', h: 'u32' },
    bindings: { x: `read ${T}`, y: `rw ${T}` },
    workgroupSize: 256,
    flat: { limit: 'p.n' },
    body: '  y[i] = x[select(i + p.h, i - p.h, i >= p.h)];',
  }));
}

/**
 * The two halves of x along axis 0 swapped, a copy: row r of the result is row (r + N/2) mod N of x
 * (torch.roll(x, N/2, 0)); N must be even. Its own inverse, and so its own backward.
 */
export function swapHalves(x: Tensor): Tensor {
  const op = 'swapHalves';
  x.assertLive(op);
  if (x.rank < 1 || x.shape[0] % 2 !== 0) throw new Error(`${op}: expected a tensor with an even number of rows along axis 0, got x ${fmtShape(x.shape)}`);
  const y = empty(x.shape, x.dtype, op);
  const h = x.size / 2; // words in half of the rows: rows are contiguous, so the swap is a shift by h mod 2h
  if (h > 0) {
    const vec = h % 4 === 0;
    const n = vec ? x.size / 4 : x.size;
    swapKernel(vec).launch({ n, h: vec ? h / 4 : h, x, y }, { threads: n });
  }
  if (needsGrad(x)) record(op, [x], y, (dy) => [swapHalves(dy)]);
  return y;
}
