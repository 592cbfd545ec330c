// Minibatches of tensors that already live on the GPU (features, labels, small data sets): the permutation of an
// epoch is uploaded once and each batch is one row gather per tensor (kernels/gather.ts), so a step uploads
// nothing. The counterpart of PyTorch's DataLoader(TensorDataset(x, y), batch_size, shuffle) and tfjs's
// tf.data.zip({x, y}).shuffle().batch() for in-memory data.

import { Tensor, tensor, fmtShape } from '../engine/tensor.ts';
import { Rng, deriveSeed } from '../engine/random.ts';
import { gatherRows } from '../kernels/gather.ts';

export interface BatchesOptions {
  batchSize: number;
  /** Visit the rows in a new random order every epoch (default false: in order). */
  shuffle?: boolean;
  /** Seed of the shuffles; epoch k uses a stream derived from it (default 0). */
  seed?: number;
  /** Skip the last batch when it is smaller than batchSize (default false). */
  dropLast?: boolean;
  /**
   * Dispose each batch's tensors when the next batch is drawn or the loop ends (default true), so a loop leaks
   * nothing; false leaves them to the caller (dispose() or tidy()).
   */
  autoDispose?: boolean;
}

type Batch<T extends Record<string, Tensor>> = { [K in keyof T]: T[K] extends Tensor<infer D> ? Tensor<D> : Tensor };

/**
 * The minibatches of a data set given as tensors with the same number of rows, e.g. `{ x: [N, 784], y: [N] }`.
 * Each `for (const { x, y } of loader)` is one epoch; with shuffle, every epoch has its own seeded order.
 */
export class Batches<T extends Record<string, Tensor>> implements Iterable<Batch<T>> {
  readonly n: number;
  private epoch = 0;

  constructor(readonly data: T, readonly opts: BatchesOptions) {
    const what = 'batches';
    const names = Object.keys(data ?? {});
    if (!names.length) throw new Error(`${what}: expected an object of tensors with the same number of rows, e.g. { x, y }`);
    const { batchSize } = opts ?? ({} as BatchesOptions);
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new Error(`${what}: batchSize must be an integer >= 1, got ${batchSize}`);
    if (opts.seed !== undefined && !Number.isInteger(opts.seed)) throw new Error(`${what}: seed must be an integer, got ${opts.seed}`);
    let n = -1;
    for (const name of names) {
      const t = data[name];
      if (!(t instanceof Tensor)) throw new Error(`${what}: '${name}' is not a Tensor`);
      t.assertLive(what);
      if (t.rank < 1) throw new Error(`${what}: '${name}' has shape ${fmtShape(t.shape)}; it needs a row dimension`);
      if (t.requiresGrad) throw new Error(`${what}: '${name}' requires grad; batches are gathered without gradients (pass data, or detach() it)`);
      if (n < 0) n = t.shape[0];
      else if (t.shape[0] !== n) {
        throw new Error(`${what}: '${name}' has ${t.shape[0]} rows (${fmtShape(t.shape)}) but '${names[0]}' has ${n} (${fmtShape(data[names[0]].shape)})`);
      }
    }
    this.n = n;
  }

  /** Number of batches in one epoch. */
  get length(): number {
    const { batchSize, dropLast } = this.opts;
    return dropLast ? Math.floor(this.n / batchSize) : Math.ceil(this.n / batchSize);
  }

  *[Symbol.iterator](): Iterator<Batch<T>> {
    const { batchSize, shuffle = false, seed = 0, autoDispose = true } = this.opts;
    const epoch = this.epoch++;
    const order = shuffle ? new Rng(deriveSeed(seed, `batches/${epoch}`)).permutation(this.n) : Array.from({ length: this.n }, (_, i) => i);
    const index = tensor(Int32Array.from(order), [this.n]);
    let current: Tensor[] = [];
    const release = () => {
      if (autoDispose) for (const t of current) t.dispose();
      current = [];
    };
    try {
      for (let start = 0, k = 0; k < this.length; k++, start += batchSize) {
        const count = Math.min(batchSize, this.n - start);
        release();
        const batch = {} as Record<string, Tensor>;
        for (const [name, t] of Object.entries(this.data)) current.push((batch[name] = gatherRows(t, index, start, count)));
        yield batch as Batch<T>;
      }
    } finally {
      release();
      index.dispose();
    }
  }
}

/**
 * `for (const { x, y } of batches({ x, y }, { batchSize: 64, shuffle: true, seed: 0 }))`: minibatches of GPU
 * tensors by row (see Batches). Iterate the same object again for the next epoch (a new order when shuffling).
 */
export function batches<T extends Record<string, Tensor>>(data: T, opts: BatchesOptions): Batches<T> {
  return new Batches(data, opts);
}
