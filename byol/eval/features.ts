// Representations of a whole data set under a frozen encoder, kept on the GPU: each batch is gathered from
// the GpuDataset, normalized, encoded and copied into its rows of one [N, D] tensor, so nothing goes through
// the CPU but the batch indices.

import { Tensor, tensor, empty, tidy, keep, fmtShape, shapeSize } from '../../engine/tensor.ts';
import { noGrad } from '../../engine/tape.ts';
import { copyRange, sync } from '../../engine/recorder.ts';
import { ew } from '../../kernels/elementwise.ts';
import type { GpuDataset } from '../data/gpu-dataset.ts';

export interface ExtractOptions {
  /** Images per encoder call (default 256). */
  batchSize?: number;
  /** Per-channel normalization applied to the [0, 1] pixels before the encoder: (x - mean) / std. */
  normalize?: { mean: number[]; std: number[] };
  /** Only these images, in this order (default: all, in order); row i of the result is image indices[i]. */
  indices?: Int32Array;
  /** Called after each batch has finished on the GPU, with images done so far and the total. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Runs `encoder` over every image of `data` in order (or the images at opts.indices) and returns the features
 * as one [N, D] f32 tensor (owned by the caller). The encoder may return [B, D] or [B, ...] (flattened to D); put it in eval mode
 * first (BatchNorm running statistics). Runs under noGrad; every temporary is freed per batch.
 */
export async function extractFeatures(encoder: (x: Tensor) => Tensor, data: GpuDataset, opts: ExtractOptions = {}): Promise<Tensor> {
  const what = 'extractFeatures';
  const batchSize = opts.batchSize ?? 256;
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`${what}: batchSize must be a positive integer, got ${batchSize}`);
  const norm = opts.normalize;
  if (norm) {
    const c = data.channels;
    if (norm.mean?.length !== c || norm.std?.length !== c) {
      throw new Error(`${what}: normalize needs ${c} means and stds for '${data.name}' (${c} channels), got ${norm.mean?.length} and ${norm.std?.length}`);
    }
    if (norm.std.some((s) => !(s > 0)) || norm.mean.some((m) => !Number.isFinite(m))) {
      throw new Error(`${what}: normalize needs finite means and positive stds, got mean [${norm.mean}] std [${norm.std}]`);
    }
  }
  const indices = opts.indices;
  if (indices !== undefined) {
    if (!(indices instanceof Int32Array) || indices.length === 0) throw new Error(`${what}: indices must be a non-empty Int32Array`);
    for (let i = 0; i < indices.length; i++) {
      if (!(indices[i] >= 0 && indices[i] < data.n)) {
        throw new Error(`${what}: index ${indices[i]} at position ${i} is out of range 0..${data.n - 1} for '${data.name}'`);
      }
    }
  }
  const n = indices ? indices.length : data.n;
  const meanT = norm ? keep(tensor(norm.mean, [data.channels])) : null;
  const stdT = norm ? keep(tensor(norm.std, [data.channels])) : null;
  // assigned inside the tidy() callback, so kept in an object (TypeScript does not track closure writes)
  const acc: { out: Tensor | null; dim: number } = { out: null, dim: 0 };
  try {
    for (let start = 0; start < n; start += batchSize) {
      const count = Math.min(batchSize, n - start);
      const idx = indices ? indices.subarray(start, start + count) : Int32Array.from({ length: count }, (_, i) => start + i);
      noGrad(() => tidy(() => {
        const x = data.gather(idx);
        const xn = meanT && stdT ? ew('extractFeatures.normalize', '(a - b) / c', [x, meanT, stdT], x.shape) : x;
        const y = encoder(xn);
        if (!(y instanceof Tensor)) throw new Error(`${what}: the encoder returned ${String(y)}, expected a Tensor`);
        y.assertLive(what);
        if (y.dtype !== 'f32' || y.rank < 2 || y.shape[0] !== count) {
          throw new Error(`${what}: the encoder returned ${y.dtype} ${fmtShape(y.shape)} for a batch of ${count}, expected f32 [${count}, D]`);
        }
        const d = shapeSize(y.shape.slice(1));
        if (!acc.out) {
          if (d < 1) throw new Error(`${what}: the encoder returned ${fmtShape(y.shape)}, which has no features`);
          acc.dim = d;
          acc.out = keep(empty([n, d], 'f32', what));
        } else if (d !== acc.dim) {
          throw new Error(`${what}: the encoder returned ${fmtShape(y.shape)} at batch row ${start} but ${acc.dim} features per image before`);
        }
        const dst = acc.out.binding(what);
        const bytes = count * d * 4;
        copyRange(y.binding(what), { buffer: dst.buffer, offset: dst.offset + start * d * 4, size: bytes }, bytes);
      }));
      // one submit per batch; waiting keeps the progress honest and surfaces GPU errors at their batch
      await sync();
      opts.onProgress?.(start + count, n);
    }
  } catch (e) {
    acc.out?.dispose();
    throw e;
  } finally {
    meanT?.dispose();
    stdT?.dispose();
  }
  return acc.out!;
}
