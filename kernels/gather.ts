// Row gather: out[i, ...] = x[index[start + i], ...] for any dtype (the bits are copied), in one dispatch. Used
// to draw shuffled minibatches from features that live on the GPU, with the permutation uploaded once per epoch
// and each batch a window [start, start + count) of it. Not differentiable.

import { defineKernel } from '../engine/kernel.ts';
import { Tensor, empty, tensor, fmtShape, shapeSize } from '../engine/tensor.ts';
import { needsGrad } from '../engine/tape.ts';

const WG = 256;

const gatherKernel = defineKernel({
  name: 'gatherRows',
  uniforms: { n: 'u32', rowLen: 'u32', rows: 'u32', start: 'u32' },
  bindings: { x: 'read u32', index: 'read i32', out: 'rw u32' },
  workgroupSize: WG,
  flat: { limit: 'p.n' },
  body: `
  let r = index[p.start + i / p.rowLen];
  // an out-of-range index (possible only from GPU-made indices, not checked on the CPU) gives a zero row
  if (r < 0 || u32(r) >= p.rows) { out[i] = 0u; return; }
  out[i] = x[u32(r) * p.rowLen + i % p.rowLen];`,
});

/**
 * Rows `index[start .. start + count)` of `x` [R, ...] as a new [count, ...] tensor of x's dtype. `index` is an
 * i32 [L] tensor; its values are not checked on the CPU (an out-of-range one yields a zero row).
 */
export function gatherRows(x: Tensor, index: Tensor, start = 0, count = index.size - start): Tensor {
  const op = 'gatherRows';
  x.assertLive(op);
  index.assertLive(op);
  if (x.rank < 1) throw new Error(`${op}: x must have a row dimension, got ${fmtShape(x.shape)}`);
  if (index.dtype !== 'i32' || index.rank !== 1) throw new Error(`${op}: index must be i32 [L], got ${index.dtype} ${fmtShape(index.shape)}`);
  if (!Number.isInteger(start) || !Number.isInteger(count) || start < 0 || count < 0 || start + count > index.size) {
    throw new Error(`${op}: window start ${start}, count ${count} does not fit index ${fmtShape(index.shape)}`);
  }
  if (needsGrad(x)) throw new Error(`${op}: not differentiable; gather from a tensor that does not require grad (or under noGrad)`);
  const rowLen = shapeSize(x.shape.slice(1));
  const out = empty([count, ...x.shape.slice(1)], x.dtype, op);
  if (out.size === 0) return out;
  gatherKernel.launch({ n: out.size, rowLen, rows: x.shape[0], start, x, index, out }, { threads: out.size });
  return out;
}

/**
 * Rows of `x` [R, ...] picked by `indices` (an i32 tensor, or numbers uploaded here): [indices.length, ...], as
 * torch's x[indices] / tf.gather(x, indices). Numbers are checked to lie in [0, R); not differentiable.
 */
export function gather(x: Tensor, indices: Tensor | ArrayLike<number>): Tensor {
  if (indices instanceof Tensor) return gatherRows(x, indices);
  x.assertLive('gather');
  const rows = x.shape[0];
  for (let i = 0; i < indices.length; i++) {
    const r = indices[i];
    if (!Number.isInteger(r) || r < 0 || r >= rows) throw new Error(`gather: index ${r} at position ${i} is out of range for ${fmtShape(x.shape)} (expected an integer in [0, ${rows}))`);
  }
  const index = tensor(Int32Array.from(indices), [indices.length]);
  try {
    return gatherRows(x, index);
  } finally {
    index.dispose();
  }
}

// ---- reference ----------------------------------------------------------------------------------------

export const ref = {
  gatherRows(x: ArrayLike<number>, shape: readonly number[], index: ArrayLike<number>, start: number, count: number): Float64Array {
    const rowLen = shape.slice(1).reduce((a, b) => a * b, 1);
    const out = new Float64Array(count * rowLen);
    for (let i = 0; i < count; i++) {
      const r = index[start + i];
      if (r < 0 || r >= shape[0]) continue;
      for (let j = 0; j < rowLen; j++) out[i * rowLen + j] = x[r * rowLen + j];
    }
    return out;
  },
};
