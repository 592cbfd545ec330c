// Argument checks shared by the evaluators: feature matrices and label lists (CPU arrays or GPU tensors).

import { gpu } from '../../engine/device.ts';
import { Tensor, fmtShape } from '../../engine/tensor.ts';
import { noGrad } from '../../engine/tape.ts';
import { sum } from '../../kernels/reduce.ts';

export type Labels = Int32Array | Tensor;

/** Throws unless x is a live f32 [rows, D] tensor with rows, D >= 1 that kernels can bind whole. */
export function checkFeatures(what: string, x: Tensor): void {
  if (!(x instanceof Tensor)) throw new Error(`${what} must be a Tensor`);
  x.assertLive(what);
  if (x.dtype !== 'f32' || x.rank !== 2 || x.shape[0] < 1 || x.shape[1] < 1) {
    throw new Error(`${what} must be f32 [rows, D] with rows, D >= 1, got ${x.dtype} ${fmtShape(x.shape)}`);
  }
  const limit = gpu().device.limits.maxStorageBufferBindingSize;
  if (x.byteLength > limit) {
    const mib = (b: number) => `${(b / 2 ** 20).toFixed(0)} MiB`;
    throw new Error(`${what} ${fmtShape(x.shape)} take ${mib(x.byteLength)}, more than a kernel can bind on this device (maxStorageBufferBindingSize ${mib(limit)}); use fewer rows or features`);
  }
}

/** Checks a train and a test feature matrix of one width; returns [train rows, width, test rows]. */
export function checkFeaturePair(what: string, train: Tensor, test: Tensor): [number, number, number] {
  checkFeatures(`${what}: train features`, train);
  checkFeatures(`${what}: test features`, test);
  const [N, D] = train.shape;
  const [M, Dt] = test.shape;
  if (D !== Dt) throw new Error(`${what}: train features ${fmtShape(train.shape)} and test features ${fmtShape(test.shape)} differ in dimension`);
  return [N, D, M];
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

/**
 * Throws if x holds a NaN or an infinity (a diverged encoder), which would otherwise turn into silently wrong
 * predictions. One reduction and one float read back.
 */
export async function assertFinite(what: string, x: Tensor): Promise<void> {
  const total = noGrad(() => sum(x));
  let v: number;
  try {
    v = await total.item();
  } finally {
    total.dispose();
  }
  if (!Number.isFinite(v)) throw new Error(`${what} ${fmtShape(x.shape)} contain NaN or infinite values (their sum is ${v})`);
}
