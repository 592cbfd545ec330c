// Evaluation on the GPU: the kNN vote kernel and the kNN monitor against a float64 CPU kNN (several k and T,
// exact ties, k = N, more classes than one vote pass), the row gather, feature extraction against running the
// encoder batch by batch, the linear probe (separable data, random labels, determinism), leaks and errors.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Tensor, tensor, empty, sum, liveTensors, sync, noGrad, tidy, gpu } from '../nn/index.ts';
import { arenaStats } from '../engine/arena.ts';
import { Linear, ReLU, Sequential, Flatten, materialize } from '../nn/module.ts';
import { knnVote, ref as knnRef } from '../kernels/knn.ts';
import { gatherRows } from '../kernels/gather.ts';
import { GpuDataset } from '../byol/data/gpu-dataset.ts';
import type { ImageDataset } from '../byol/data/dataset.ts';
import { extractFeatures, knnAccuracy, knnPredict, l2NormalizeRows, linearProbe } from '../byol/eval/index.ts';
import { rng, assertClose, checkTests } from './helpers/gradcheck.ts';
import { knnChecks, assertPredictions } from '../nn/checks/knn.ts';
import { gatherChecks } from '../nn/checks/gather.ts';
import { throwsWith, rejectsWith } from './helpers/errors.ts';

const t = suite('eval');

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(1 - r())) * Math.cos(2 * Math.PI * r());
}

// ---- kernels/knn.ts: the vote on given similarities --------------------------------------------------------

// the vote checks live in nn/checks/ so that the browser page runs the same checks
checkTests(knnChecks, t);

t('knnVote: ties at the k-th similarity go to the lower index; tied class sums to the lower class', async () => {
  const labels = Int32Array.of(1, 1, 0, 0, 0, 2, 2);
  // row 0: five equal 0.5s; k = 2 takes indices 0 and 1 (class 1); k = 4 takes 0..3 (two each: class 0 wins)
  // row 1: 0.5s at indices 0 (class 1) and 2 (class 0); k = 2 gives equal sums: class 0 wins
  const sims = Float32Array.of(0.5, 0.5, 0.5, 0.5, 0.5, 0.1, -0.2, /**/ 0.5, -1, 0.5, 0.2, 0.1, -0.5, 0.0);
  const s = tensor(sims, [2, 7]);
  const l = tensor(labels, [7], { dtype: 'i32' });
  for (const [k, want] of [[2, [1, 0]], [4, [0, 0]], [1, [1, 1]], [7, [0, 0]]] as const) {
    const p = knnVote(s, l, { k, temperature: 0.3, numClasses: 3 });
    const got = Array.from(await p.toArray());
    assert.equal(got, want, `k = ${k}`);
    assert.equal(got, Array.from(knnRef.argmaxRows(knnRef.knnScores(sims, 2, 7, labels, k, 0.3, 3), 2, 3)), `reference, k = ${k}`);
    p.dispose();
  }
  s.dispose();
  l.dispose();
});

t('knnVote errors name the op and the shapes', () => {
  const s = tensor(new Float32Array(12), [3, 4]);
  const l = tensor(new Int32Array(4), [4], { dtype: 'i32' });
  const l5 = tensor(new Int32Array(5), [5], { dtype: 'i32' });
  throwsWith(() => knnVote(s, l, { k: 5, temperature: 0.1, numClasses: 2 }), 'knnVote', 'k must be', '1..4');
  throwsWith(() => knnVote(s, l, { k: 0, temperature: 0.1, numClasses: 2 }), 'knnVote', 'k must be');
  throwsWith(() => knnVote(s, l5, { k: 2, temperature: 0.1, numClasses: 2 }), 'knnVote', 'i32 [4]', '[5]');
  throwsWith(() => knnVote(s, l, { k: 2, temperature: 0, numClasses: 2 }), 'knnVote', 'temperature');
  throwsWith(() => knnVote(s, l, { k: 2, temperature: 0.1, numClasses: 2 }, { preds: l, offset: 2 }), 'knnVote', 'cannot write 3 predictions at 2');
  throwsWith(() => knnVote(s, l, { k: 2, temperature: 0.1, numClasses: 2, workgroupBytes: 8192 }), 'knnVote', 'workgroup memory', '8192');
  for (const x of [s, l, l5]) x.dispose();
});

// ---- kernels/gather.ts ---------------------------------------------------------------------------------

// the gather check lives in nn/checks/ so that the browser page runs the same checks
checkTests(gatherChecks, t);

t('gatherRows errors name the op and the shapes', async () => {
  const before = liveTensors();
  const xt = tensor(new Float32Array(13 * 6), [13, 3, 2]);
  const it = tensor(Int32Array.of(4, 0, 12, 12, 7, -1, 13, 2), [8], { dtype: 'i32' });
  throwsWith(() => gatherRows(xt, it, 5, 4), 'gatherRows', 'does not fit', '[8]');
  throwsWith(() => gatherRows(xt, xt), 'gatherRows', 'index must be i32');
  const v = tensor([1, 2], [2, 1], { requiresGrad: true });
  throwsWith(() => gatherRows(v, it, 0, 1), 'gatherRows', 'not differentiable');
  for (const a of [xt, it, v]) a.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

// ---- byol/eval/knn.ts ------------------------------------------------------------------------------------

/** float64 kNN on f32 features: cosine similarities in float64, then the reference vote. */
function cpuKnnScores(
  train: Float32Array, N: number, test: Float32Array, M: number, D: number, labels: Int32Array, k: number, T: number, C: number,
): Float64Array {
  const norm = (x: Float32Array, i: number) => {
    let s = 0;
    for (let d = 0; d < D; d++) s += x[i * D + d] ** 2;
    return Math.max(Math.sqrt(s), 1e-12);
  };
  const trNorm = Array.from({ length: N }, (_, j) => norm(train, j));
  const sims = new Float64Array(M * N);
  for (let i = 0; i < M; i++) {
    const ni = norm(test, i);
    for (let j = 0; j < N; j++) {
      let s = 0;
      for (let d = 0; d < D; d++) s += test[i * D + d] * train[j * D + d];
      sims[i * N + j] = s / (ni * trNorm[j]);
    }
  }
  return knnRef.knnScores(sims, M, N, labels, k, T, C);
}

/** Clustered features with a few exact duplicates (of different labels) and a zero row. */
function knnData(N: number, M: number, D: number, C: number, seed: number) {
  const r = rng(seed);
  const centers = Array.from({ length: C }, () => Float32Array.from({ length: D }, () => gauss(r)));
  const make = (n: number) => {
    const x = new Float32Array(n * D);
    const y = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      y[i] = Math.floor(r() * C);
      for (let d = 0; d < D; d++) x[i * D + d] = 0.7 * centers[y[i]][d] + gauss(r);
    }
    return { x, y };
  };
  const train = make(N);
  const test = make(M);
  for (let i = 0; i < N; i += 9) {
    // duplicate row i into row i + 1 with another label: exactly tied similarities
    if (i + 1 < N) {
      train.x.copyWithin((i + 1) * D, i * D, (i + 1) * D);
      train.y[i + 1] = (train.y[i] + 1) % C;
    }
  }
  train.x.fill(0, 4 * D, 5 * D);
  test.x.fill(0, 2 * D, 3 * D);
  return { train, test };
}

for (const [k, T, chunk] of [[1, 0.1, undefined], [10, 0.07, 64], [200, 0.1, 100], [700, 0.5, undefined], [37, 1, 1]] as const) {
  t(`knnAccuracy k=${k} T=${T} chunk=${chunk ?? 'default'} matches a float64 CPU kNN`, async () => {
    const N = 700, M = 130, D = 24, C = 5;
    const { train, test } = knnData(N, M, D, C, 11 + k);
    const before = liveTensors();
    const trainT = tensor(train.x, [N, D]);
    const testT = tensor(test.x, [M, D]);
    const trainY = tensor(train.y, [N], { dtype: 'i32' }); // labels as a tensor here, as an array in knnPredict
    const progress: number[] = [];
    const opts = { k, temperature: T, numClasses: C, chunk, onProgress: (done: number) => progress.push(done) };
    const got = await knnPredict(trainT, train.y, testT, opts);
    const scores = cpuKnnScores(train.x, N, test.x, M, D, train.y, k, T, C);
    assertPredictions(got, scores, M, C, 'knnPredict');
    assert.is(progress[progress.length - 1], M);
    if (chunk) assert.is(progress.length, Math.ceil(M / chunk));
    const want = knnRef.argmaxRows(scores, M, C);
    let refTop1 = 0;
    for (let i = 0; i < M; i++) if (want[i] === test.y[i]) refTop1++;
    const { top1 } = await knnAccuracy(trainT, trainY, testT, test.y, { k, temperature: T, numClasses: C, chunk });
    assert.ok(Math.abs(top1 - refTop1 / M) <= 1 / M, `top1 ${top1} vs reference ${refTop1 / M}`);
    if (k === 10) assert.ok(top1 > 0.5, `clustered data should be easy for kNN, got ${top1}`);
    for (const x of [trainT, testT, trainY]) x.dispose();
    await sync();
    assert.is(liveTensors(), before);
  });
}

t('l2NormalizeRows: unit rows, zero rows stay zero', async () => {
  const x = tensor([3, 4, 0, 0, -1, 0], [3, 2]);
  const y = l2NormalizeRows(x);
  assertClose(await y.toArray(), [0.6, 0.8, 0, 0, -1, 0], 1e-6, 'l2NormalizeRows');
  x.dispose();
  y.dispose();
});

t('knn errors: feature dimensions, label counts and ranges, k, chunk', async () => {
  const before = liveTensors();
  const a = tensor(new Float32Array(40).fill(1), [10, 4]);
  const b = tensor(new Float32Array(15).fill(1), [5, 3]);
  const c = tensor(new Float32Array(20).fill(1), [5, 4]);
  const y10 = new Int32Array(10);
  const y5 = new Int32Array(5);
  await rejectsWith(knnAccuracy(a, y10, b, y5, { numClasses: 2, k: 3 }), 'knn', '[10, 4]', '[5, 3]', 'dimension');
  await rejectsWith(knnAccuracy(a, y5, c, y5, { numClasses: 2, k: 3 }), 'knn: train labels', '5 labels for 10');
  await rejectsWith(knnAccuracy(a, y10, c, y10, { numClasses: 2, k: 3 }), 'knn: test labels', '10 labels for 5');
  assert.is((await knnAccuracy(a, y10, c, y5, { numClasses: 2 })).top1, 1, 'default k: all 10 train rows (all of class 0)');
  await rejectsWith(knnAccuracy(a, y10, c, y5, { numClasses: 2, k: 11 }), 'k must be', '11');
  await rejectsWith(knnAccuracy(a, Int32Array.of(0, 1, 2, 0, 0, 0, 0, 0, 0, 0), c, y5, { numClasses: 2, k: 3 }), 'train labels', 'label 2 at index 2', '0..1');
  await rejectsWith(knnAccuracy(a, y10, c, y5, { numClasses: 2, k: 3, chunk: 0 }), 'chunk');
  const ints = tensor(new Int32Array(4), [1, 4], { dtype: 'i32' });
  await rejectsWith(knnAccuracy(a, y10, ints, Int32Array.of(0), { numClasses: 2, k: 3 }), 'test features', 'f32', 'i32');
  const nan = tensor(Float32Array.of(1, 2, 3, NaN, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20), [5, 4]);
  await rejectsWith(knnAccuracy(a, y10, nan, y5, { numClasses: 2, k: 3 }), 'knn: test features', '[5, 4]', 'NaN or infinite');
  await rejectsWith(linearProbe(nan, y5, c, y5, { numClasses: 2 }), 'linearProbe: train features', 'NaN or infinite');
  // features too large for one storage binding (never written: the check comes first)
  const rows = Math.floor(gpu().device.limits.maxStorageBufferBindingSize / 256) + 1;
  const huge = empty([rows, 64]);
  await rejectsWith(knnAccuracy(huge, new Int32Array(rows), c, y5, { numClasses: 2, k: 3 }), 'knn: train features', `[${rows}, 64]`, 'maxStorageBufferBindingSize');
  for (const x of [a, b, c, ints, nan, huge]) x.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

// ---- byol/eval/features.ts -------------------------------------------------------------------------------

function tinyDataset(n: number, h: number, w: number, c: number, seed: number): ImageDataset {
  const r = rng(seed);
  return {
    name: 'tiny', n, height: h, width: w, channels: c, classes: ['a', 'b', 'c'],
    images: Uint8Array.from({ length: n * h * w * c }, () => Math.floor(r() * 256)),
    labels: Int32Array.from({ length: n }, () => Math.floor(r() * 3)),
  };
}

t('extractFeatures equals the encoder run on each batch (normalized), with progress, no leaks', async () => {
  const ds = tinyDataset(37, 6, 5, 3, 3);
  const gds = new GpuDataset(ds);
  const net = materialize(new Sequential(new Flatten(), new Linear(90, 6), new ReLU()), { seed: 4 }).eval();
  const mean = [0.4, 0.5, 0.6];
  const std = [0.2, 0.25, 0.3];
  const before = liveTensors();
  const progress: [number, number][] = [];
  // the encoder returns [B, 2, 3]: flattened to 6 features
  const encoder = (x: Tensor) => net.forward(x).share([x.shape[0], 2, 3]);
  const feats = await extractFeatures(encoder, gds, { batchSize: 8, normalize: { mean, std }, onProgress: (d, n) => progress.push([d, n]) });
  assert.equal(feats.shape, [37, 6]);
  assert.equal(progress, [[8, 37], [16, 37], [24, 37], [32, 37], [37, 37]]);
  const got = (await feats.toArray()) as Float32Array;
  // expected: normalize on the CPU, run the same network batch by batch
  const want = new Float32Array(37 * 6);
  for (let s = 0; s < 37; s += 8) {
    const b = Math.min(8, 37 - s);
    const x = new Float32Array(b * 90);
    for (let i = 0; i < b * 90; i++) x[i] = (ds.images[s * 90 + i] / 255 - mean[i % 3]) / std[i % 3];
    const y = noGrad(() => tidy(() => net.forward(tensor(x, [b, 6, 5, 3]))));
    want.set((await y.toArray()) as Float32Array, s * 6);
    y.dispose();
  }
  assertClose(got, want, 1e-5, 'features');
  feats.dispose();
  // without normalization, one batch for everything
  const raw = await extractFeatures((x) => net.forward(x), gds);
  assert.equal(raw.shape, [37, 6]);
  const x = Float32Array.from(ds.images, (v) => v / 255);
  const y = noGrad(() => tidy(() => net.forward(tensor(x, [37, 6, 5, 3]))));
  assertClose(await raw.toArray(), await y.toArray(), 1e-5, 'unnormalized features');
  raw.dispose();
  y.dispose();
  // a subset, in the order given
  const pick = Int32Array.of(30, 2, 2, 17, 36);
  const sub = await extractFeatures((x) => net.forward(x), gds, { indices: pick, batchSize: 2 });
  const xs = new Float32Array(5 * 90);
  pick.forEach((k, i) => xs.set(x.subarray(k * 90, (k + 1) * 90), i * 90));
  const ys = noGrad(() => tidy(() => net.forward(tensor(xs, [5, 6, 5, 3]))));
  assertClose(await sub.toArray(), await ys.toArray(), 1e-5, 'features of a subset');
  sub.dispose();
  ys.dispose();
  await sync();
  assert.is(liveTensors(), before);
  net.dispose();
  gds.dispose();
});

t('extractFeatures errors: wrong batch from the encoder, wrong normalization, nothing leaked', async () => {
  const gds = new GpuDataset(tinyDataset(10, 2, 2, 1, 5));
  const before = liveTensors();
  await rejectsWith(extractFeatures((x) => x.share([x.shape[0] * 4]), gds), 'extractFeatures', '[40]', 'expected f32 [10, D]');
  let calls = 0;
  // 4 features for the first batch, 2 for the next
  const changing = (x: Tensor) => (calls++ ? sum(x.share([x.shape[0], 2, 2]), 2) : x.share([x.shape[0], 4]));
  await rejectsWith(extractFeatures(changing, gds, { batchSize: 4 }), 'extractFeatures', 'returned [4, 2] at batch row 4', '4 features per image before');
  await rejectsWith(extractFeatures((x) => x, gds, { normalize: { mean: [0.5, 0.5], std: [1, 1] } }), 'extractFeatures', '1 means and stds', '1 channels');
  await rejectsWith(extractFeatures((x) => x, gds, { normalize: { mean: [0.5], std: [0] } }), 'extractFeatures', 'positive stds');
  await rejectsWith(extractFeatures((x) => x, gds, { batchSize: 0 }), 'extractFeatures', 'batchSize');
  await rejectsWith(extractFeatures((x) => x, gds, { indices: Int32Array.of(3, 10) }), 'extractFeatures', 'index 10 at position 1', '0..9');
  await sync();
  assert.is(liveTensors(), before);
  gds.dispose();
});

// ---- byol/eval/linear-probe.ts ------------------------------------------------------------------------------

/**
 * Points labelled by the argmax of a random linear map, kept only with a margin of 1 between the best and the
 * second class score (separable with room to spare), then offset and scaled per feature; or random labels.
 */
function separable(n: number, D: number, C: number, seed: number, randomLabels = false) {
  const r = rng(seed);
  const W = Float64Array.from({ length: D * C }, () => gauss(r));
  const x = new Float32Array(n * D);
  const y = new Int32Array(n);
  const p = new Float64Array(D);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (;;) {
      for (let d = 0; d < D; d++) p[d] = gauss(r);
      const v = Array.from({ length: C }, (_, c) => p.reduce((s, pd, d) => s + pd * W[d * C + c], 0));
      const sorted = [...v].sort((a, b) => b - a);
      best = v.indexOf(sorted[0]);
      if (randomLabels || sorted[0] - sorted[1] >= 1) break;
    }
    y[i] = randomLabels ? Math.floor(r() * C) : best;
    // far from zero mean and unit scale: the probe standardizes them
    for (let d = 0; d < D; d++) x[i * D + d] = 5 + 30 * p[d] * (1 + d / D);
  }
  return { x, y };
}

t('linearProbe: separable data reaches ~100%, deterministically for a seed; no leaks', async () => {
  const D = 16, C = 4;
  // one labelling map for both sets
  const both = separable(4000, D, C, 1);
  const trX = tensor(both.x.subarray(0, 3000 * D), [3000, D]);
  const teX = tensor(both.x.subarray(3000 * D), [1000, D]);
  const trY = both.y.subarray(0, 3000);
  const teY = tensor(both.y.subarray(3000), [1000], { dtype: 'i32' });
  const before = liveTensors();
  const arenas = arenaStats().buffers;
  const epochsSeen: number[] = [];
  const opts = { numClasses: C, epochs: 20, batchSize: 128, lr: 0.01, seed: 3, onProgress: (e: number) => epochsSeen.push(e) };
  const a = await linearProbe(trX, trY, teX, teY, opts);
  assert.equal(epochsSeen, Array.from({ length: 20 }, (_, i) => i + 1));
  assert.ok(a.trainTop1 >= 0.98, `train top1 ${a.trainTop1}`);
  assert.ok(a.top1 >= 0.97, `test top1 ${a.top1}`);
  const b = await linearProbe(trX, trY, teX, teY, { ...opts, onProgress: undefined });
  assert.equal(b, a, 'same seed, same result');
  const sgd = await linearProbe(trX, trY, teX, teY, { numClasses: C, epochs: 10, batchSize: 128, optimizer: 'sgd', lr: 0.1 });
  assert.ok(sgd.top1 >= 0.95, `SGD test top1 ${sgd.top1}`);
  await sync();
  assert.is(liveTensors(), before);
  assert.is(arenaStats().buffers, arenas, 'model and optimizer state freed');
  for (const x of [trX, teX, teY]) x.dispose();
});

t('linearProbe: random labels stay near chance on test (and are fit above chance on train)', async () => {
  const D = 32, C = 5;
  const tr = separable(600, D, C, 7, true);
  const te = separable(2000, D, C, 8, true);
  const trX = tensor(tr.x, [600, D]);
  const teX = tensor(te.x, [2000, D]);
  const res = await linearProbe(trX, tr.y, teX, te.y, { numClasses: C, epochs: 30, batchSize: 64, lr: 0.01 });
  assert.ok(Math.abs(res.top1 - 1 / C) < 0.05, `test top1 ${res.top1} should be near chance ${1 / C}`);
  assert.ok(res.trainTop1 > 1 / C + 0.05, `train top1 ${res.trainTop1}: 32 features can memorize some of 600 labels`);
  trX.dispose();
  teX.dispose();
});

t('linearProbe errors: dimensions, label counts, options', async () => {
  const before = liveTensors();
  const a = tensor(new Float32Array(40), [10, 4]);
  const b = tensor(new Float32Array(15), [5, 3]);
  const c = tensor(new Float32Array(20), [5, 4]);
  const y10 = new Int32Array(10);
  const y5 = new Int32Array(5);
  await rejectsWith(linearProbe(a, y10, b, y5, { numClasses: 2 }), 'linearProbe', '[10, 4]', '[5, 3]', 'dimension');
  await rejectsWith(linearProbe(a, y5, c, y5, { numClasses: 2 }), 'linearProbe: train labels', '5 labels for 10');
  await rejectsWith(linearProbe(a, y10, c, y10, { numClasses: 2 }), 'linearProbe: test labels', '10 labels for 5');
  await rejectsWith(linearProbe(a, y10, c, Int32Array.of(0, 0, 3, 0, 0), { numClasses: 2 }), 'test labels', 'label 3 at index 2');
  await rejectsWith(linearProbe(a, y10, c, y5, { numClasses: 2, epochs: 0 }), 'linearProbe', 'epochs');
  await rejectsWith(linearProbe(a, y10, c, y5, { numClasses: 2, lr: -1 }), 'linearProbe', 'lr');
  await rejectsWith(linearProbe(a, y10, c, y5, { numClasses: 2, optimizer: 'lbfgs' as 'adam' }), 'linearProbe', 'optimizer');
  for (const x of [a, b, c]) x.dispose();
  await sync();
  assert.is(liveTensors(), before);
});

t.run();
