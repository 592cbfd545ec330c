// kNN vote checks: the GPU vote on given similarities against the float64 vote, for several k and T, exact ties,
// k = N, more classes than one vote pass, the sampled fast path and its fallbacks, the plan for adapters with only
// 16 KiB of workgroup memory, and writing into a slice of a larger tensor (see nn/checks/index.ts).

import { tensor, type Tensor } from '../index.ts';
import { knnVote, ref } from '../../kernels/knn.ts';
import { rng, ensure, ensureEqual, leakFree, type Check } from '../check.ts';

/** Predictions must equal the float64 argmax except where its two best class scores are within `rel`. */
export function assertPredictions(got: ArrayLike<number>, scores: Float64Array, R: number, C: number, what: string, rel = 1e-5): void {
  const want = ref.argmaxRows(scores, R, C);
  for (let r = 0; r < R; r++) {
    if (got[r] === want[r]) continue;
    const row = scores.subarray(r * C, (r + 1) * C);
    const margin = Math.abs(row[want[r]] - row[got[r]]);
    if (!(margin <= rel * Math.max(...row))) {
      throw new Error(`${what}: row ${r} predicted ${got[r]}, reference ${want[r]} (scores ${Array.from(row).map((v) => v.toPrecision(6)).join(', ')})`);
    }
  }
}

interface VoteCase { R: number; N: number; k: number; T: number; C: number; ties?: 'some' | 'all' | 'steps' | 'top'; strided?: boolean }

const voteCases: VoteCase[] = [
  { R: 5, N: 7, k: 3, T: 0.1, C: 3 },
  { R: 9, N: 1000, k: 200, T: 0.1, C: 10, ties: 'some' },
  { R: 4, N: 300, k: 300, T: 0.07, C: 20 }, // k = N, two class blocks
  { R: 6, N: 50, k: 1, T: 0.5, C: 2 },
  { R: 3, N: 2049, k: 64, T: 1, C: 37, ties: 'steps' }, // values on a coarse grid: many exact ties at the k-th
  { R: 4, N: 600, k: 250, T: 0.1, C: 4, ties: 'all' }, // every similarity equal: the first k by index vote
  { R: 2, N: 257, k: 256, T: 0.2, C: 5, ties: 'some' },
  { R: 3, N: 400, k: 50, T: 0.005, C: 6 }, // exp(s / T) alone would overflow f32
  // the sampled fast path (k small against N) and its fallbacks to full passes:
  { R: 3, N: 5000, k: 20, T: 0.1, C: 10, ties: 'some' },
  { R: 3, N: 5000, k: 20, T: 0.1, C: 10, ties: 'top' }, // the 30 largest are equal: the first 20 by index vote
  { R: 2, N: 3000, k: 10, T: 0.1, C: 3, ties: 'all' }, // all keys tie: more candidates than workgroup memory holds
  { R: 2, N: 4000, k: 100, T: 0.1, C: 4, strided: true }, // the 1-in-16 sample holds the largest values only
  { R: 8, N: 4000, k: 8, T: 10, C: 4, strided: true }, // exactly k candidates, all in one top-digit bin
];

async function checkVote(c: VoteCase): Promise<void> {
  const r = rng(c.N + c.k);
  const sims = new Float32Array(c.R * c.N);
  for (let i = 0; i < sims.length; i++) {
    if (c.ties === 'all') sims[i] = 0.375;
    else if (c.ties === 'steps') sims[i] = Math.round((r() * 2 - 1) * 8) / 8;
    else sims[i] = r() * 2 - 1;
    if (c.ties === 'some' && i % 7 === 3) sims[i] = 0.5; // a block of equal values near the k-th largest
    if (c.ties === 'top') sims[i] = i % 167 === 5 ? 0.995 : 0.99 * sims[i];
    if (c.strided) sims[i] = (i % c.N) % 16 === 0 ? 0.9 + 0.1 * r() : -r();
  }
  // classes skewed so that k exceeds some class counts
  const labels = Int32Array.from({ length: c.N }, () => Math.min(c.C - 1, Math.floor(c.C * r() * r())));
  if (c.strided) for (let i = 0; i < c.N; i += 16) labels[i] = (i / 16) % c.C; // the sampled ones: all classes
  if (c.ties === 'top') {
    // the first 20 tied (by index) are 11 of class 1 and 9 of class 0, the other 10 of class 0: taking all 30
    // ties would elect class 0, taking the first 20 elects class 1
    for (let i = 5, j = 0; i < c.N; i += 167, j++) labels[i] = j < 20 ? (j < 11 ? 1 : 0) : 0;
  }
  const s = tensor(sims, [c.R, c.N]);
  const l = tensor(labels, [c.N], { dtype: 'i32' });
  const made: Tensor[] = [s, l];
  try {
    const o = { k: c.k, temperature: c.T, numClasses: c.C };
    const p = knnVote(s, l, o);
    made.push(p);
    ensureEqual(p.shape, [c.R], 'prediction shape');
    ensure(p.dtype === 'i32', `prediction dtype ${p.dtype}, want i32`);
    const got = (await p.toArray()) as Int32Array;
    const scores = ref.knnScores(sims, c.R, c.N, labels, c.k, c.T, c.C);
    assertPredictions(got, scores, c.R, c.C, 'knnVote');
    // the plan for devices with only WebGPU's guaranteed 16 KiB of workgroup memory (fewer candidates and classes per pass)
    const small = knnVote(s, l, { ...o, workgroupBytes: 16384 });
    made.push(small);
    assertPredictions((await small.toArray()) as Int32Array, scores, c.R, c.C, 'knnVote with 16 KiB of workgroup memory');
    // writing into a slice of a larger prediction tensor leaves the rest alone
    const big = tensor(new Int32Array(c.R + 3).fill(-7), [c.R + 3], { dtype: 'i32' });
    made.push(big);
    knnVote(s, l, o, { preds: big, offset: 2 });
    ensureEqual(await big.toArray(), [-7, -7, ...got, -7], 'predictions written at offset 2');
  } finally {
    for (const x of made) x.dispose();
  }
}

export const knnChecks: Check[] = voteCases.map((c) => ({
  name: `knnVote R${c.R} N${c.N} k${c.k} T${c.T} C${c.C}${c.ties ? ` ties:${c.ties}` : ''}${c.strided ? ' strided' : ''} matches the float64 vote`,
  run: () => leakFree(() => checkVote(c)),
}));
