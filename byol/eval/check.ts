// Argument checks shared by the evaluators: feature matrices and label lists (CPU arrays or GPU tensors).

import { Tensor, fmtShape } from '../../engine/tensor.ts';

export type Labels = Int32Array | Tensor;

/** Throws unless x is a live f32 [rows, D] tensor with rows, D >= 1. */
export function checkFeatures(what: string, x: Tensor): void {
  if (!(x instanceof Tensor)) throw new Error(`${what} must be a Tensor`);
  x.assertLive(what);
  if (x.dtype !== 'f32' || x.rank !== 2 || x.shape[0] < 1 || x.shape[1] < 1) {
    throw new Error(`${what} must be f32 [rows, D] with rows, D >= 1, got ${x.dtype} ${fmtShape(x.shape)}`);
  }
}

/** The labels on the CPU (a tensor is read back), checked: n of them, each in 0..numClasses-1. */
export async function labelArray(what: string, labels: Labels, n: number, numClasses: number): Promise<Int32Array> {
  let arr: Int32Array;
  if (labels instanceof Tensor) {
    labels.assertLive(what);
    if (labels.dtype !== 'i32' || labels.rank !== 1) throw new Error(`${what} must be an i32 tensor [${n}], got ${labels.dtype} ${fmtShape(labels.shape)}`);
    arr = (await labels.toArray()) as Int32Array;
  } else if (labels instanceof Int32Array) arr = labels;
  else throw new Error(`${what} must be an Int32Array or an i32 tensor`);
  if (arr.length !== n) throw new Error(`${what}: ${arr.length} labels for ${n} feature rows`);
  for (let i = 0; i < arr.length; i++) {
    if (!(arr[i] >= 0 && arr[i] < numClasses)) {
      throw new Error(`${what}: label ${arr[i]} at index ${i} is outside 0..${numClasses - 1} (numClasses ${numClasses})`);
    }
  }
  return arr;
}

/** Fraction of positions where the predictions equal the labels. */
export function top1(pred: Int32Array, labels: Int32Array): number {
  let correct = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) correct++;
  return correct / pred.length;
}
