// The converged linear probe (byol/eval/logreg.ts): the engine's L-BFGS fit reaches the optimum of a float64
// CPU reference of the same objective on synthetic data, and the probe protocol picks the L2 with the best
// held-out accuracy and refits with it.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, liveTensors } from '../nn/index.ts';
import { Rng, deriveSeed } from '../engine/random.ts';
import { fitLogisticRegression, convergedLinearProbe, lbfgs } from '../byol/eval/index.ts';
import { symmetricEigen, PROBE_GTOL } from '../byol/eval/logreg.ts';

const t = suite('logreg');

/** Gaussian classes around random means: overlapping, so the optimum is finite even at l2 = 0. */
function blobs(N: number, D: number, C: number, seed: number, informative = D, spread = 1.5) {
  const r = new Rng(seed);
  const means = Array.from({ length: C }, () => Float64Array.from({ length: D }, (_, d) => (d < informative ? spread * r.normal() : 0)));
  const x = new Float32Array(N * D);
  const y = new Int32Array(N);
  for (let i = 0; i < N; i++) {
    y[i] = r.int(C);
    for (let d = 0; d < D; d++) x[i * D + d] = means[y[i]][d] + r.normal();
  }
  return { x, y };
}

/** The objective of byol/eval/logreg.ts in float64 on the CPU: mean cross-entropy + l2/2 ||W||². */
function refObjective(x: ArrayLike<number>, y: Int32Array, D: number, C: number, l2: number) {
  const N = y.length;
  return async (p: Float64Array) => {
    const g = new Float64Array(p.length);
    let f = 0;
    const z = new Float64Array(C);
    for (let i = 0; i < N; i++) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) {
        let s = p[D * C + c];
        for (let d = 0; d < D; d++) s += x[i * D + d] * p[d * C + c];
        z[c] = s;
        m = Math.max(m, s);
      }
      let se = 0;
      for (let c = 0; c < C; c++) se += Math.exp(z[c] - m);
      f += m + Math.log(se) - z[y[i]];
      for (let c = 0; c < C; c++) {
        const dz = (Math.exp(z[c] - m) / se - (c === y[i] ? 1 : 0)) / N;
        for (let d = 0; d < D; d++) g[d * C + c] += x[i * D + d] * dz;
        g[D * C + c] += dz;
      }
    }
    f /= N;
    for (let k = 0; k < D * C; k++) (f += 0.5 * l2 * p[k] * p[k]), (g[k] += l2 * p[k]);
    return { f, g };
  };
}

function refPredict(x: ArrayLike<number>, n: number, D: number, C: number, p: Float64Array): Int32Array {
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = -Infinity;
    for (let c = 0; c < C; c++) {
      let s = p[D * C + c];
      for (let d = 0; d < D; d++) s += x[i * D + d] * p[d * C + c];
      if (s > best) (best = s), (out[i] = c);
    }
  }
  return out;
}

const acc = (a: Int32Array, b: Int32Array) => a.reduce((s, v, i) => s + (v === b[i] ? 1 : 0), 0) / a.length;

t('the engine fit reaches the float64 optimum (loss, gradient, accuracy)', async () => {
  const before = liveTensors();
  const [N, D, C] = [3000, 12, 4];
  const { x, y } = blobs(N, D, C, 1);
  for (const l2 of [1e-3, 1e-5]) {
    const ref = await lbfgs(refObjective(x, y, D, C, l2), new Float64Array(D * C + C), { gtol: 1e-9, maxIter: 5000 });
    assert.ok(ref.converged, `the float64 reference converges (max |g| ${ref.gradMax})`);
    const xt = tensor(x, [N, D]);
    const fitted = await fitLogisticRegression(xt, y, C, { l2, gtol: 1e-5 });
    xt.dispose();
    assert.ok(fitted.converged, `the engine fit converges (${fitted.reason}, max |g| ${fitted.gradMax})`);
    // judged in float64 at the engine's parameters
    const at = await refObjective(x, y, D, C, l2)(fitted.params);
    const gmax = at.g.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
    assert.ok(at.f - ref.f >= -1e-12, 'the reference is the optimum');
    assert.ok(at.f - ref.f < 1e-5, `l2 ${l2}: loss ${at.f} vs the optimum ${ref.f}`);
    assert.ok(gmax < 2e-5, `l2 ${l2}: float64 gradient at the engine's solution ${gmax}`);
    assert.ok(Math.abs(fitted.loss - ref.f) < 1e-5, `l2 ${l2}: reported loss ${fitted.loss} vs ${ref.f}`);
    const pe = refPredict(x, N, D, C, fitted.params);
    const pr = refPredict(x, N, D, C, ref.x);
    assert.ok(Math.abs(acc(pe, y) - acc(pr, y)) <= 2 / N, 'same train accuracy');
    // an unconverged fit is reported as such
    const xt2 = tensor(x, [N, D]);
    const short = await fitLogisticRegression(xt2, y, C, { l2, gtol: 1e-5, maxIter: 2 });
    xt2.dispose();
    assert.not.ok(short.converged);
    assert.is(short.reason, 'maxIter');
  }
  assert.is(liveTensors(), before, 'no tensors leak');
});

t('the probe picks the L2 with the best held-out accuracy and refits on all train rows', async () => {
  const before = liveTensors();
  // few rows, many uninformative features: small L2 overfits
  const [N, M, D, C, H] = [500, 2000, 80, 3, 200];
  const all = blobs(N + M, D, C, 2, 4, 0.6);
  const x = all.x.subarray(0, N * D);
  const y = all.y.subarray(0, N);
  const xTest = all.x.subarray(N * D);
  const yTest = all.y.subarray(N);
  const grid = [1e-4, 1e-3, 1e-2, 1e-1, 1];
  const xt = tensor(x, [N, D]);
  const xe = tensor(xTest, [M, D]);
  const r = await convergedLinearProbe(xt, y, xe, yTest, { numClasses: C, l2Grid: grid, heldOut: H, seed: 3, log: process.env.LR_DEBUG ? console.log : undefined });
  xt.dispose();
  xe.dispose();
  assert.equal(r.probe.l2_grid, [...grid].sort((a, b) => b - a));
  assert.ok(r.probe.converged, 'every fit converged');

  // the same protocol in float64: split, standardize with the fit rows' statistics, fit each L2, score
  const perm = Int32Array.from(new Rng(deriveSeed(3, 'linearProbe.heldOut')).permutation(N));
  const standardizeWith = (rows: Int32Array, src: ArrayLike<number>, statsRows: ArrayLike<number>, nStats: number) => {
    const mu = new Float64Array(D);
    const sd = new Float64Array(D);
    for (let i = 0; i < nStats; i++) for (let d = 0; d < D; d++) mu[d] += statsRows[i * D + d] / nStats;
    for (let i = 0; i < nStats; i++) for (let d = 0; d < D; d++) sd[d] += (statsRows[i * D + d] - mu[d]) ** 2 / nStats;
    const out = new Float64Array(rows.length * D);
    rows.forEach((row, i) => { for (let d = 0; d < D; d++) out[i * D + d] = (src[row * D + d] - mu[d]) / Math.max(Math.sqrt(sd[d]), 1e-6); });
    return out;
  };
  const fitRows = perm.subarray(0, N - H);
  const valRows = perm.subarray(N - H);
  const fitRaw = Float64Array.from(Array.from(fitRows).flatMap((row) => Array.from(x.subarray(row * D, row * D + D))));
  const xFit = standardizeWith(fitRows, x, fitRaw, N - H);
  const xVal = standardizeWith(valRows, x, fitRaw, N - H);
  const yFit = fitRows.map((i) => y[i]);
  const yVal = valRows.map((i) => y[i]);
  const refHeld: number[] = [];
  for (const l2 of r.probe.l2_grid) {
    const f = await lbfgs(refObjective(xFit, yFit, D, C, l2), new Float64Array(D * C + C), { gtol: 1e-9, maxIter: 5000 });
    refHeld.push(acc(refPredict(xVal, H, D, C, f.x), yVal));
  }
  // at the weakest L2 the optimum is flat (300 rows, 80 features): parameters within gtol of it may still move
  // a few borderline predictions, hence 3 of the 200 held-out rows
  r.probe.held_out_top1.forEach((a, k) => assert.ok(Math.abs(a - refHeld[k]) <= 3.5 / H, `l2 ${r.probe.l2_grid[k]}: held-out ${a} vs float64 ${refHeld[k]}`));
  const bestRef = Math.max(...refHeld);
  const k = r.probe.l2_grid.indexOf(r.probe.chosen_l2);
  assert.is(r.probe.held_out_top1[k], Math.max(...r.probe.held_out_top1), 'the chosen L2 has the best held-out accuracy');
  assert.ok(refHeld[k] >= bestRef - 2 / H, `float64 agrees the chosen L2 is (near) best: ${refHeld[k]} vs ${bestRef}`);
  assert.ok(r.probe.chosen_l2 > Math.min(...grid), 'the data make regularization pay (else this test shows nothing)');
  assert.ok(Math.max(...refHeld) - Math.min(...refHeld) > 0.02, 'held-out accuracy depends on the L2');

  // the refit: all N rows, standardized with their statistics, the chosen L2; test accuracy as float64's
  const allRows = Int32Array.from({ length: N }, (_, i) => i);
  const xAll = standardizeWith(allRows, x, x, N);
  const testRows = Int32Array.from({ length: M }, (_, i) => i);
  const xT = standardizeWith(testRows, xTest, x, N);
  const f = await lbfgs(refObjective(xAll, y, D, C, r.probe.chosen_l2), new Float64Array(D * C + C), { gtol: 1e-9, maxIter: 5000 });
  assert.ok(Math.abs(r.top1 - acc(refPredict(xT, M, D, C, f.x), yTest)) <= 3 / M, `test top-1 ${r.top1}`);
  assert.ok(Math.abs(r.probe.loss - f.f) < 1e-4, `refit loss ${r.probe.loss} vs float64 optimum ${f.f}`);
  assert.is(liveTensors(), before, 'no tensors leak');
});

t('symmetricEigen: A U = U diag(values), U orthonormal, on a random and a rank-deficient matrix', () => {
  const r = new Rng(9);
  const n = 12;
  const B = Float64Array.from({ length: n * 5 }, () => r.normal()); // [n, 5]: B Bᵀ has rank 5
  for (const A of [
    (() => { const m = Float64Array.from({ length: n * n }, () => r.normal()); return m.map((_, k) => m[k] + m[(k % n) * n + Math.floor(k / n)]); })(),
    Float64Array.from({ length: n * n }, (_, k) => { let s = 0; for (let j = 0; j < 5; j++) s += B[Math.floor(k / n) * 5 + j] * B[(k % n) * 5 + j]; return s; }),
  ]) {
    const { values, vectors: U } = symmetricEigen(A, n);
    let scale = 0;
    for (const v of A) scale = Math.max(scale, Math.abs(v));
    for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
      let au = 0;
      let uu = 0;
      for (let k = 0; k < n; k++) (au += A[i * n + k] * U[k * n + j]), (uu += U[k * n + i] * U[k * n + j]);
      assert.ok(Math.abs(au - U[i * n + j] * values[j]) < 1e-10 * scale, `(A U)[${i}, ${j}]`);
      assert.ok(Math.abs(uu - (i === j ? 1 : 0)) < 1e-12, `(Uᵀ U)[${i}, ${j}]`);
    }
  }
});

t('the whitened fit reaches the probe\'s gtol in under half the plain fit\'s iterations on correlated features, and the float64 optimum', async () => {
  const before = liveTensors();
  // features that are mixtures of a few latent ones plus a little noise: strongly correlated, as conv features are
  const [N, D, C, K] = [3000, 24, 4, 6];
  const base = blobs(N, K, C, 5);
  const r = new Rng(6);
  const mix = Float64Array.from({ length: K * D }, () => r.normal());
  const x = new Float32Array(N * D);
  for (let i = 0; i < N; i++) for (let d = 0; d < D; d++) {
    let s = 0.05 * r.normal();
    for (let k = 0; k < K; k++) s += base.x[i * K + k] * mix[k * D + d];
    x[i * D + d] = s;
  }
  const xt = tensor(x, [N, D]);
  const l2 = 1e-4;
  // iterations compared at the probe's own gtol: near 1e-5 the float32 gradient's rounding decides how long the
  // last steps take (the whitened fit's count there moved between 181 and 311 with the summation order alone)
  const fast = await fitLogisticRegression(xt, base.y, C, { l2, gtol: PROBE_GTOL, maxIter: 5000, precondition: false });
  const fastWhite = await fitLogisticRegression(xt, base.y, C, { l2, gtol: PROBE_GTOL, maxIter: 5000 });
  assert.ok(fast.converged && fastWhite.converged, `both converged at gtol ${PROBE_GTOL} (${fast.reason}, ${fastWhite.reason})`);
  assert.ok(fastWhite.iterations * 2 < fast.iterations, `whitened ${fastWhite.iterations} vs plain ${fast.iterations} iterations to gtol ${PROBE_GTOL}`);
  // and both reach the float64 optimum when asked for more
  const plain = await fitLogisticRegression(xt, base.y, C, { l2, gtol: 1e-5, maxIter: 5000, precondition: false });
  const white = await fitLogisticRegression(xt, base.y, C, { l2, gtol: 1e-5, maxIter: 5000 });
  xt.dispose();
  assert.ok(plain.converged && white.converged, `both converged (${plain.reason}, ${white.reason})`);
  const ref = await lbfgs(refObjective(x, base.y, D, C, l2), new Float64Array(D * C + C), { gtol: 1e-9, maxIter: 20000 });
  assert.ok(Math.abs(white.loss - ref.f) < 1e-5 && Math.abs(plain.loss - ref.f) < 1e-5, `losses ${white.loss} and ${plain.loss} vs float64 ${ref.f}`);
  const pw = refPredict(x, N, D, C, white.params);
  const pr = refPredict(x, N, D, C, ref.x);
  assert.ok(acc(pw, pr) > 0.995, 'the whitened fit predicts as the float64 optimum');
  assert.ok(white.gradMax <= 1e-5, `max |gradient| in the original coordinates ${white.gradMax}`);
  assert.is(liveTensors(), before, 'no tensors leak');
});

t('bad arguments are named', async () => {
  const xt = tensor(new Float32Array(20), [10, 2]);
  const y = new Int32Array(10);
  try {
    await convergedLinearProbe(xt, y, xt, y, { numClasses: 2, l2Grid: [] }).then(() => assert.unreachable(), (e) => assert.match(e.message, /l2Grid/));
    await convergedLinearProbe(xt, y, xt, y, { numClasses: 2, heldOut: 10 }).then(() => assert.unreachable(), (e) => assert.match(e.message, /heldOut/));
    await fitLogisticRegression(xt, y, 2, { l2: -1 }).then(() => assert.unreachable(), (e) => assert.match(e.message, /l2/));
  } finally {
    xt.dispose();
  }
});

t.run();
