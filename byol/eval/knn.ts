// kNN monitor on frozen features, InstDisc-style (Wu et al. 2018), as in the lightly benchmarks: features are
// L2-normalized, each test row's k = 200 most cosine-similar train rows vote for their class with weight
// exp(sim / T), T = 0.1, and the class with the largest sum is the prediction. Ties at the k-th similarity go to
// the lower train index, so exactly k neighbours vote; ties between class sums go to the lower class.
// Everything runs on the GPU, a chunk of test rows at a time: similarities by one matmul ([chunk, D] x [N, D]ᵀ),
// then kernels/knn.ts selects and votes per row; only the M predictions are read back.

import { gpu } from '../../engine/device.ts';
import { Tensor, tensor, empty, tidy, keep, fmtShape } from '../../engine/tensor.ts';
import { noGrad } from '../../engine/tape.ts';
import { copyRange, sync } from '../../engine/recorder.ts';
import { checkFeatures, checkFeaturePair, labelArray, assertFinite, top1, type Labels } from './check.ts';
import { ew } from '../../kernels/elementwise.ts';
import { sum } from '../../kernels/reduce.ts';
import { matmulRaw } from '../../kernels/matmul.ts';
import { knnVote } from '../../kernels/knn.ts';

export interface KnnOptions {
  /** Neighbours that vote (default 200, or every train row when there are fewer). */
  k?: number;
  /** Temperature of the vote weights exp(sim / T) (default 0.1). */
  temperature?: number;
  numClasses: number;
  /** Test rows per similarity matrix [chunk, N]; default: as many as fit 64 MiB (at most 1024). */
  chunk?: number;
  /** Called after each chunk of test rows has finished on the GPU. */
  onProgress?: (done: number, total: number) => void;
}

/** Rows scaled to unit L2 norm (x / max(‖x‖, 1e-12), as torch.nn.functional.normalize); zero rows stay zero. */
export function l2NormalizeRows(x: Tensor): Tensor {
  if (x.dtype !== 'f32' || x.rank !== 2) throw new Error(`l2NormalizeRows: expected f32 [N, D], got ${x.dtype} ${fmtShape(x.shape)}`);
  return noGrad(() => tidy(() => {
    const sq = sum(ew('l2NormalizeRows.square', 'a * a', [x], x.shape), 1, true);
    return ew('l2NormalizeRows', 'a / max(sqrt(b), 1e-12)', [x, sq], x.shape);
  }));
}

/** Default rows per chunk: a similarity matrix of at most 64 MiB (and the binding limit), 64..1024 rows. */
function defaultChunk(n: number): number {
  const maxBinding = gpu().device.limits.maxStorageBufferBindingSize;
  const rows = Math.floor(Math.min(64 * 2 ** 20, maxBinding) / (4 * n));
  if (rows < 64) return Math.max(1, Math.floor(maxBinding / (4 * n)));
  return Math.min(1024, rows - (rows % 64));
}

/** The kNN predictions [M] for the test rows (see knnAccuracy for the convention). */
export async function knnPredict(train: Tensor, trainLabels: Labels, test: Tensor, opts: KnnOptions): Promise<Int32Array> {
  const what = 'knn';
  const [N, D, M] = checkFeaturePair(what, train, test);
  const k = opts.k ?? Math.min(200, N);
  const temperature = opts.temperature ?? 0.1;
  const C = opts.numClasses;
  if (!Number.isInteger(C) || C < 1) throw new Error(`${what}: numClasses must be a positive integer, got ${C}`);
  if (!Number.isInteger(k) || k < 1 || k > N) throw new Error(`${what}: k must be an integer in 1..${N} (the number of train rows), got ${k}`);
  if (!(temperature > 0) || !Number.isFinite(temperature)) throw new Error(`${what}: temperature must be a positive number, got ${temperature}`);
  const chunk = opts.chunk ?? defaultChunk(N);
  const maxBinding = gpu().device.limits.maxStorageBufferBindingSize;
  if (!Number.isInteger(chunk) || chunk < 1 || chunk > 65535) throw new Error(`${what}: chunk must be an integer in 1..65535, got ${chunk}`);
  if (chunk * N * 4 > maxBinding) {
    throw new Error(`${what}: a similarity chunk of ${chunk} x ${N} floats exceeds the device's storage binding limit (${maxBinding} bytes); use a smaller chunk`);
  }
  const labelsCpu = await labelArray(`${what}: train labels`, trainLabels, N, C);
  await assertFinite(`${what}: train features`, train);
  await assertFinite(`${what}: test features`, test);
  const labelsT = keep(tensor(labelsCpu, [N], { dtype: 'i32' }));
  const trainN = keep(l2NormalizeRows(train));
  const preds = keep(empty([M], 'i32', what));
  try {
    for (let start = 0; start < M; start += chunk) {
      const rows = Math.min(chunk, M - start);
      noGrad(() => tidy(() => {
        const q = empty([rows, D], 'f32', what);
        const src = test.binding(what);
        copyRange({ buffer: src.buffer, offset: src.offset + start * D * 4, size: rows * D * 4 }, q.binding(what), rows * D * 4);
        const sims = matmulRaw(l2NormalizeRows(q), trainN, false, true);
        knnVote(sims, labelsT, { k, temperature, numClasses: C }, { preds, offset: start });
      }));
      await sync();
      opts.onProgress?.(start + rows, M);
    }
    return (await preds.toArray()) as Int32Array;
  } finally {
    labelsT.dispose();
    trainN.dispose();
    preds.dispose();
  }
}

/**
 * Top-1 accuracy of the weighted kNN classifier: cosine similarity, the k (default 200) nearest train rows
 * vote with weight exp(sim / T) (T default 0.1). Labels are Int32Arrays or i32 tensors in 0..numClasses-1.
 */
export async function knnAccuracy(train: Tensor, trainLabels: Labels, test: Tensor, testLabels: Labels, opts: KnnOptions): Promise<{ top1: number }> {
  checkFeatures('knn: test features', test);
  const want = await labelArray('knn: test labels', testLabels, test.shape[0], opts.numClasses);
  const got = await knnPredict(train, trainLabels, test, opts);
  return { top1: top1(got, want) };
}
