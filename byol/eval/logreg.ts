// The converged linear probe: multinomial logistic regression on standardized frozen features, minimized to a
// gradient-norm tolerance by L-BFGS, with the L2 strength chosen on a held-out part of the train set and the
// model then refit on all of it (the protocol of SimCLR's and BYOL's linear evaluation on small data sets, as
// scikit-learn's LogisticRegression with L-BFGS). The objective and its gradient, the only work that scales with
// the data ([N, D] features), run on the GPU; the L-BFGS recursion over the (D + 1)·C parameters runs on the CPU
// in float64, reading back one loss and one gradient per evaluation. The minimizer is deterministic.
//
//   f(W, b) = mean_n -log softmax(x_n W + b)[y_n] + (l2 / 2) ||W||²      (the bias is not penalized)

import { Tensor, tensor, empty, tidy, keep, fmtShape } from '../../engine/tensor.ts';
import { copyRange, clearRange } from '../../engine/recorder.ts';
import { noGrad } from '../../engine/tape.ts';
import { Rng, deriveSeed } from '../../engine/random.ts';
import { ew } from '../../kernels/elementwise.ts';
import { matmul } from '../../kernels/matmul.ts';
import { mean, sum } from '../../kernels/reduce.ts';
import { argmax, crossEntropyRows } from '../../kernels/softmax.ts';
import { gatherRows } from '../../kernels/gather.ts';
import { checkFeatures, checkFeaturePair, labelArray, assertFinite, top1, type Labels } from './check.ts';

// ---- L-BFGS (CPU, float64) -----------------------------------------------------------------------------

export interface LbfgsOptions {
  /** Stop when max |gradient component| <= gtol (default 1e-5). */
  gtol?: number;
  /**
   * The stopping test's measure of a gradient (default max |component|): a minimizer run in other coordinates
   * (a preconditioned fit) tests the gradient of the original problem.
   */
  gradMaxOf?: (g: Float64Array) => number;
  /** Most iterations (default 1000). */
  maxIter?: number;
  /** Correction pairs kept (default 10). */
  memory?: number;
}

/** Options of a logistic-regression fit: L-BFGS's, and the coordinates it runs in. */
export interface LogRegFitOptions extends LbfgsOptions {
  /** minimize in whitened coordinates (default true; see fit) */
  precondition?: boolean;
}

export interface LbfgsResult {
  x: Float64Array;
  f: number;
  /** max |gradient component| at x */
  gradMax: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
  /** why it stopped: 'gtol', 'maxIter', or 'lineSearch' (no decrease found: f and g agree to rounding only) */
  reason: 'gtol' | 'maxIter' | 'lineSearch';
}

const dot = (a: Float64Array, b: Float64Array) => {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
};
const maxAbs = (a: Float64Array) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

/**
 * Minimizes a smooth function with L-BFGS (two-loop recursion, H0 = (sᵀy / yᵀy) I) and a backtracking line
 * search (halving from step 1) that accepts on Armijo's condition or on the approximate Wolfe conditions (so it
 * still progresses where f is evaluated in float32 and its decrease drowns in rounding). `fg` returns the value
 * and gradient at x.
 */
export async function lbfgs(fg: (x: Float64Array) => Promise<{ f: number; g: Float64Array }>, x0: Float64Array, opts: LbfgsOptions = {}): Promise<LbfgsResult> {
  const gtol = opts.gtol ?? 1e-5;
  const gradMaxOf = opts.gradMaxOf ?? maxAbs;
  const maxIter = opts.maxIter ?? 1000;
  const m = opts.memory ?? 10;
  const n = x0.length;
  let x: Float64Array = Float64Array.from(x0);
  let { f, g }: { f: number; g: Float64Array } = await fg(x);
  let evaluations = 1;
  const S: Float64Array[] = [];
  const Y: Float64Array[] = [];
  const rho: number[] = [];
  let it = 0;
  let failures = 0;
  let reason: LbfgsResult['reason'] = 'maxIter';
  for (; it < maxIter; it++) {
    if (!Number.isFinite(f)) throw new Error(`lbfgs: the objective is ${f} at iteration ${it}`);
    if (gradMaxOf(g) <= gtol) {
      reason = 'gtol';
      break;
    }
    // direction d = -H g
    const q = Float64Array.from(g);
    const alpha = new Array(S.length);
    for (let k = S.length - 1; k >= 0; k--) {
      alpha[k] = rho[k] * dot(S[k], q);
      for (let i = 0; i < n; i++) q[i] -= alpha[k] * Y[k][i];
    }
    const last = S.length - 1;
    const gamma = last >= 0 ? dot(S[last], Y[last]) / dot(Y[last], Y[last]) : 1 / Math.max(1, Math.sqrt(dot(g, g)));
    for (let i = 0; i < n; i++) q[i] *= gamma;
    for (let k = 0; k < S.length; k++) {
      const beta = rho[k] * dot(Y[k], q);
      for (let i = 0; i < n; i++) q[i] += (alpha[k] - beta) * S[k][i];
    }
    let d = q.map((v) => -v);
    let gd = dot(g, d);
    if (!(gd < 0)) {
      // not a descent direction (rounding in the pairs): restart from steepest descent
      S.length = Y.length = rho.length = 0;
      d = g.map((v) => -v / Math.max(1, Math.sqrt(dot(g, g))));
      gd = dot(g, d);
    }
    let step = 1;
    let accepted: { x: Float64Array; f: number; g: Float64Array } | null = null;
    for (let tries = 0; tries < 30; tries++) {
      const xn = x.map((v, i) => v + step * d[i]);
      const r = await fg(xn);
      evaluations++;
      // Armijo; or, where f's decrease is below its float32 rounding (near the optimum of a well-conditioned
      // problem), Hager and Zhang's approximate Wolfe test, which reads the slope along d instead of f
      const slope = dot(r.g, d);
      const armijo = r.f <= f + 1e-4 * step * gd;
      const approxWolfe = r.f <= f + 1e-6 * Math.max(1, Math.abs(f)) && slope >= 0.9 * gd && slope <= -0.8 * gd;
      if (Number.isFinite(r.f) && (armijo || approxWolfe)) {
        accepted = { x: xn, ...r };
        break;
      }
      step *= 0.5;
    }
    if (!accepted) {
      // at the rounding floor of f no step decreases it: retry from steepest descent, but not forever
      if (S.length && ++failures < 3) {
        S.length = Y.length = rho.length = 0;
        continue;
      }
      reason = 'lineSearch';
      break;
    }
    const s = accepted.x.map((v, i) => v - x[i]);
    const y = accepted.g.map((v, i) => v - g[i]);
    const sy = dot(s, y);
    if (sy > 1e-12 * Math.sqrt(dot(s, s) * dot(y, y))) {
      if (S.length === m) (S.shift(), Y.shift(), rho.shift());
      S.push(s);
      Y.push(y);
      rho.push(1 / sy);
    }
    x = accepted.x;
    f = accepted.f;
    g = accepted.g;
  }
  const gradMax = gradMaxOf(g);
  return { x, f, gradMax, iterations: it, evaluations, converged: gradMax <= gtol, reason };
}

// ---- the objective on the GPU --------------------------------------------------------------------------

export interface LogRegFit {
  /** [D, C] row-major, then the C biases: the parameters in the standardized feature space. */
  params: Float64Array;
  loss: number;
  gradMax: number;
  iterations: number;
  evaluations: number;
  converged: boolean;
  reason: LbfgsResult['reason'];
}

// Layout. The data terms are two matmuls with one tiny dimension (C classes) and one huge one (N rows). As
// [N, D]·[D, C] and [D, N]·[N, C] they leave most of each matmul tile idle (C = 10 of 64 columns) and reduce over
// N in few workgroups, so the rows are split into S blocks of n and everything is kept class-major per block:
// logits [S, C, n] = Wᵀ [C, D] · X[s]ᵀ (a batched matmul over the blocks), then one pass (crossEntropyRows) gives
// each row's loss and dlogits = softmax − onehot, and the gradient [S, C, D] = dlogits[s] · X[s] is summed over s.
// The last block is padded with zero rows, labelled −1: out of the loss and the gradient. Blocks of 1024 rows keep
// that sum over s short (59 blocks for 60k rows), while each block's products still sum in chains of at most 1024
// float32 terms.
const BLOCK = 1024;

/** Features as [S, n, D] blocks (zero-padded) and the labels [S, n] (i32, −1 on the padding rows). */
interface Problem {
  x3: Tensor;
  labels: Tensor;
  N: number;
  D: number;
  C: number;
  S: number;
  n: number;
  /** The whitened features and their basis (see fit), made by the first preconditioned fit and kept for the next. */
  whitened?: Whitened;
}

interface Whitened {
  /** z = x M blocks, M = U Λ^(-1/2) */
  z3: Tensor;
  U: Float64Array;
  lambda: Float64Array;
}

function makeProblem(x: Tensor, labels: Int32Array, C: number): Problem {
  const [N, D] = x.shape;
  const n = Math.min(BLOCK, N);
  const S = Math.ceil(N / n);
  const x3 = keep(empty([S, n, D], 'f32', 'logreg.blocks'));
  if (S * n > N) clearRange(x3.binding('logreg'));
  copyRange(x.binding('logreg'), { ...x3.binding('logreg'), size: N * D * 4 }, N * D * 4);
  const l3 = new Int32Array(S * n).fill(-1);
  l3.set(labels.subarray(0, N));
  return { x3, labels: keep(tensor(l3, [S, n], { dtype: 'i32' })), N, D, C, S, n };
}

function disposeProblem(p: Problem): void {
  p.whitened?.z3.dispose();
  p.x3.dispose();
  p.labels.dispose();
}

/** Wᵀ [C, D] and b [C, 1] from the parameters ([D, C] row-major, then C biases). */
function uploadParams(p: Problem, params: Float64Array): { Wt: Tensor; b: Tensor } {
  const { D, C } = p;
  const wt = new Float32Array(C * D);
  for (let d = 0; d < D; d++) for (let c = 0; c < C; c++) wt[c * D + d] = params[d * C + c];
  return { Wt: tensor(wt, [C, D]), b: tensor(Float32Array.from(params.subarray(D * C)), [C, 1]) };
}

/** logits [S, C, n] */
function logitsOf(p: Problem, params: Float64Array): Tensor {
  const { Wt, b } = uploadParams(p, params);
  return ew('logreg.logits', 'a + b', [matmul(Wt, p.x3, false, true), b], [p.S, p.C, p.n]);
}

/**
 * f and its gradient at params: the data terms on the GPU, the L2 term in float64, weighted per feature row by
 * `rowWeight` where given ((l2 / 2) sum_d rowWeight[d] ||W[d]||²).
 */
async function objective(p: Problem, params: Float64Array, l2: number, rowWeight?: Float64Array): Promise<{ f: number; g: Float64Array }> {
  const { D, C, N } = p;
  const out = noGrad(() => tidy(() => {
    const { Wt, b } = uploadParams(p, params);
    // per row: log-sum-exp minus the label's logit, and d(row loss)/d logits = softmax − onehot (0 on padding rows);
    // the 1/N is applied in float64 below
    const { loss, grad: dl } = crossEntropyRows(matmul(Wt, p.x3, false, true), p.labels, { axis: 1, bias: b.share([C]) });
    return [sum(loss), sum(matmul(dl, p.x3), 0), sum(dl, [0, 2])];
  }));
  try {
    const [loss, gWt, gb] = await Promise.all(out.map((t) => t.toArray()));
    const g = new Float64Array(D * C + C);
    let reg = 0;
    for (let d = 0; d < D; d++) {
      const w = rowWeight ? rowWeight[d] : 1;
      for (let c = 0; c < C; c++) {
        const k = d * C + c;
        g[k] = gWt[c * D + d] / N + l2 * w * params[k];
        reg += w * params[k] * params[k];
      }
    }
    for (let c = 0; c < C; c++) g[D * C + c] = gb[c] / N;
    return { f: loss[0] / N + 0.5 * l2 * reg, g };
  } finally {
    for (const t of out) t.dispose();
  }
}

/**
 * Minimizes f in whitened coordinates, which leaves its minimum where it was but makes it far better conditioned:
 * the features' correlations (conv features are strongly correlated) are what slows L-BFGS. With the features'
 * second-moment matrix XᵀX / N = U Λ Uᵀ and M = U Λ^(-1/2), the fit runs on z = x M with weights V (W = M V), so
 * the data term sees decorrelated unit-variance features, and the L2 term becomes (l2 / 2) sum_j ||V[j]||² / λ_j
 * (MᵀM = Λ⁻¹): the same f, so the same minimizer. The stopping test reads f's gradient in W (= U Λ^(1/2) ∂f/∂V),
 * so `gtol` means what it means unpreconditioned, and the result comes back as W.
 */
async function fit(p: Problem, l2: number, init: Float64Array | null, opts: LogRegFitOptions): Promise<LogRegFit> {
  const { D, C } = p;
  if (opts.precondition === false) {
    const r = await lbfgs((x) => objective(p, x, l2), init ?? new Float64Array(D * C + C), opts);
    return { params: r.x, loss: r.f, gradMax: r.gradMax, iterations: r.iterations, evaluations: r.evaluations, converged: r.converged, reason: r.reason };
  }
  // the grid's fits share one problem: its whitening is computed once
  const w = (p.whitened ??= await whitening(p));
  const pz: Problem = { ...p, x3: w.z3, whitened: undefined };
  // W = M V and back: V = Λ^(1/2) Uᵀ W; biases unchanged
  const toV = (a: Float64Array) => {
    const v = Float64Array.from(a);
    for (let j = 0; j < D; j++) for (let c = 0; c < C; c++) {
      let t = 0;
      for (let d = 0; d < D; d++) t += w.U[d * D + j] * a[d * C + c];
      v[j * C + c] = Math.sqrt(w.lambda[j]) * t;
    }
    return v;
  };
  const toW = (v: Float64Array, scale: (j: number) => number) => {
    const a = Float64Array.from(v);
    for (let d = 0; d < D; d++) for (let c = 0; c < C; c++) {
      let t = 0;
      for (let j = 0; j < D; j++) t += w.U[d * D + j] * scale(j) * v[j * C + c];
      a[d * C + c] = t;
    }
    return a;
  };
  const gradW = (gV: Float64Array) => toW(gV, (j) => Math.sqrt(w.lambda[j]));
  const rowWeight = w.lambda.map((l) => 1 / l);
  const x0 = init ? toV(init) : new Float64Array(D * C + C);
  const r = await lbfgs((x) => objective(pz, x, l2, rowWeight), x0, { ...opts, gradMaxOf: (g) => maxAbs(gradW(g)) });
  const params = toW(r.x, (j) => 1 / Math.sqrt(w.lambda[j]));
  return { params, loss: r.f, gradMax: r.gradMax, iterations: r.iterations, evaluations: r.evaluations, converged: r.converged, reason: r.reason };
}

/**
 * The eigenvectors U (columns, [D, D] row-major) and eigenvalues λ of the features' second-moment matrix XᵀX / N
 * (the padded rows are zeros), λ floored at 1e-10 of the largest so that a constant or duplicated feature gets a
 * finite weight, and the whitened blocks z = x U Λ^(-1/2).
 */
async function whitening(p: Problem): Promise<Whitened> {
  const { D, N } = p;
  const gram = noGrad(() => tidy(() => sum(matmul(p.x3, p.x3, true, false), 0)));
  const g32 = await gram.toArray();
  gram.dispose();
  const A = Float64Array.from(g32, (v) => v / N);
  const { vectors: U, values } = symmetricEigen(A, D);
  const top = Math.max(...values, 0);
  const lambda = values.map((l) => Math.max(l, 1e-10 * top, 1e-30));
  const m = new Float32Array(D * D);
  for (let d = 0; d < D; d++) for (let j = 0; j < D; j++) m[d * D + j] = U[d * D + j] / Math.sqrt(lambda[j]);
  const z3 = keep(noGrad(() => tidy(() => matmul(p.x3, tensor(m, [D, D])))));
  return { z3, U, lambda };
}

/** Eigen-decomposition of a symmetric [n, n] matrix (row-major) by cyclic Jacobi rotations, in float64. */
export function symmetricEigen(a0: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(a0);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  const off = () => {
    let s = 0;
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) s += a[i * n + j] ** 2;
    return s;
  };
  let total = 0;
  for (let i = 0; i < n * n; i++) total += a[i] ** 2;
  for (let sweep = 0; sweep < 100 && off() > 1e-30 * total; sweep++) {
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q];
        if (apq === 0) continue;
        const theta = (a[q * n + q] - a[p * n + p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const sn = t * c;
        for (let k = 0; k < n; k++) {
          // columns p and q, then rows p and q
          const akp = a[k * n + p];
          const akq = a[k * n + q];
          a[k * n + p] = c * akp - sn * akq;
          a[k * n + q] = sn * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k];
          const aqk = a[q * n + k];
          a[p * n + k] = c * apk - sn * aqk;
          a[q * n + k] = sn * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p];
          const vkq = v[k * n + q];
          v[k * n + p] = c * vkp - sn * vkq;
          v[k * n + q] = sn * vkp + c * vkq;
        }
      }
    }
  }
  return { values: Float64Array.from({ length: n }, (_, i) => a[i * n + i]), vectors: v };
}

async function predict(p: Problem, params: Float64Array): Promise<Int32Array> {
  const pred = noGrad(() => tidy(() => argmax(logitsOf(p, params), 1)));
  try {
    return ((await pred.toArray()) as Int32Array).subarray(0, p.N);
  } finally {
    pred.dispose();
  }
}

/** Per-feature mean and std of `x` (a constant feature gets std 1e-6, so it standardizes to 0). */
function statsOf(x: Tensor): { mu: Tensor; std: Tensor } {
  return noGrad(() => tidy(() => {
    const mu = mean(x, 0, true);
    const variance = mean(ew('logreg.sqdev', '(a - b) * (a - b)', [x, mu], x.shape), 0, true);
    return { mu, std: ew('logreg.std', 'max(sqrt(a), 1e-6)', [variance], variance.shape) };
  }));
}

const standardize = (x: Tensor, s: { mu: Tensor; std: Tensor }) => noGrad(() => ew('logreg.standardize', '(a - b) / c', [x, s.mu, s.std], x.shape));

/**
 * Fits multinomial logistic regression with L2 strength `l2` on features x [N, D] (used as given: standardize
 * them first) to convergence; returns the parameters and how the minimization ended.
 */
export async function fitLogisticRegression(x: Tensor, labels: Labels, numClasses: number, opts: LogRegFitOptions & { l2: number; init?: Float64Array }): Promise<LogRegFit> {
  const what = 'fitLogisticRegression';
  checkFeatures(`${what}: features`, x);
  if (!(opts.l2 >= 0) || !Number.isFinite(opts.l2)) throw new Error(`${what}: l2 must be a number >= 0, got ${opts.l2}`);
  const y = await labelArray(`${what}: labels`, labels, x.shape[0], numClasses);
  const p = makeProblem(x, y, numClasses);
  try {
    return await fit(p, opts.l2, opts.init ?? null, opts);
  } finally {
    disposeProblem(p);
  }
}

// ---- the probe protocol --------------------------------------------------------------------------------

/**
 * The probe's tolerance on max |gradient| of the mean loss: scikit-learn's default for LogisticRegression with
 * L-BFGS. On 60k x 128 features of an untrained encoder, 1e-5 took 1.7x the iterations and changed no held-out
 * accuracy by more than 0.0002 (bench/eval-time.ts --probe-cache).
 */
export const PROBE_GTOL = 1e-4;

/** L2 strengths tried by default (per-sample mean loss, so 1/(C·N) in scikit-learn's terms). */
export const DEFAULT_L2_GRID = [1e-5, 1e-4, 1e-3, 1e-2];

export interface ConvergedProbeOptions extends LogRegFitOptions {
  numClasses: number;
  /** L2 strengths to choose from (default DEFAULT_L2_GRID). */
  l2Grid?: number[];
  /** Train rows held out to choose the L2 (default 10000, at most a sixth of the train rows). */
  heldOut?: number;
  /** Seeds the held-out split (default 0). */
  seed?: number;
  log?: (s: string) => void;
}

export interface ConvergedProbeResult {
  /** Test accuracy of the refit on all train rows. */
  top1: number;
  trainTop1: number;
  /** The protocol and how it went, for reports. */
  probe: {
    method: 'lbfgs';
    /** minimized in whitened coordinates (the same objective and minimum; fewer iterations) */
    preconditioned: boolean;
    objective: string;
    standardize: string;
    l2_grid: number[];
    held_out: number;
    held_out_top1: number[];
    chosen_l2: number;
    gtol: number;
    /** L-BFGS iterations over all fits (the grid and the refit) */
    iterations: number;
    /** every fit reached max |gradient| <= gtol */
    converged: boolean;
    /** the refit's max |gradient| and objective */
    grad_max: number;
    loss: number;
    seconds: number;
  };
}

/**
 * The converged linear probe: standardize with the train rows' statistics; for each L2 in the grid (largest
 * first, each fit warm-started from the previous one) fit on the train rows minus a seeded held-out set and
 * score on the held-out set; refit with the best L2 (ties: the larger) on all train rows, standardized with
 * their statistics; report test and train accuracy.
 */
export async function convergedLinearProbe(
  trainFeats: Tensor, trainLabels: Labels, testFeats: Tensor, testLabels: Labels, opts: ConvergedProbeOptions,
): Promise<ConvergedProbeResult> {
  const what = 'convergedLinearProbe';
  const t0 = Date.now();
  const [N, D, M] = checkFeaturePair(what, trainFeats, testFeats);
  const C = opts.numClasses;
  if (!Number.isInteger(C) || C < 2) throw new Error(`${what}: numClasses must be an integer >= 2, got ${C}`);
  const grid = [...(opts.l2Grid ?? DEFAULT_L2_GRID)].sort((a, b) => b - a);
  if (!grid.length || grid.some((v) => !(v >= 0) || !Number.isFinite(v))) throw new Error(`${what}: l2Grid must be non-empty numbers >= 0, got [${opts.l2Grid}]`);
  const H = opts.heldOut ?? Math.min(10000, Math.floor(N / 6));
  if (!Number.isInteger(H) || H < 1 || H > N - 1) throw new Error(`${what}: heldOut must be an integer in 1..${N - 1}, got ${H}`);
  const lb: LogRegFitOptions = { gtol: opts.gtol ?? PROBE_GTOL, maxIter: opts.maxIter, memory: opts.memory, precondition: opts.precondition };
  const log = opts.log ?? (() => {});
  const yTrain = await labelArray(`${what}: train labels`, trainLabels, N, C);
  const yTest = await labelArray(`${what}: test labels`, testLabels, M, C);
  await assertFinite(`${what}: train features`, trainFeats);
  await assertFinite(`${what}: test features`, testFeats);

  const owned: Tensor[] = [];
  const own = <T extends Tensor>(t: T) => (owned.push(keep(t)), t);
  const problems: Problem[] = [];
  try {
    // the held-out split
    const perm = Int32Array.from(new Rng(deriveSeed(opts.seed ?? 0, 'linearProbe.heldOut')).permutation(N));
    const permT = own(tensor(perm, [N], { dtype: 'i32' }));
    const fitRaw = own(noGrad(() => gatherRows(trainFeats, permT, 0, N - H)));
    const valRaw = own(noGrad(() => gatherRows(trainFeats, permT, N - H, H)));
    const sFit = statsOf(fitRaw);
    own(sFit.mu);
    own(sFit.std);
    const xFit = own(standardize(fitRaw, sFit));
    const xVal = own(standardize(valRaw, sFit));
    const yFit = perm.subarray(0, N - H).map((i) => yTrain[i]);
    const yVal = perm.subarray(N - H).map((i) => yTrain[i]);
    const pFit = makeProblem(xFit, yFit, C);
    problems.push(pFit);
    const pVal = makeProblem(xVal, yVal, C);
    problems.push(pVal);
    const heldTop1: number[] = [];
    let init: Float64Array | null = null;
    let best = { l2: grid[0], acc: -1, params: null as Float64Array | null };
    let iterations = 0;
    let allConverged = true;
    for (const l2 of grid) {
      const r = await fit(pFit, l2, init, lb);
      iterations += r.iterations;
      allConverged &&= r.converged;
      const acc = top1(await predict(pVal, r.params), yVal);
      heldTop1.push(acc);
      log(`probe: l2 ${l2.toExponential(0)}: held-out top-1 ${acc.toFixed(4)} (${r.iterations} iterations, ${r.converged ? 'converged' : `not converged: ${r.reason}`}, max |grad| ${r.gradMax.toExponential(1)})`);
      if (acc > best.acc) best = { l2, acc, params: r.params };
      init = r.params;
    }
    // the refit on all train rows, warm-started from the chosen fit
    const sAll = statsOf(trainFeats);
    own(sAll.mu);
    own(sAll.std);
    const xAll = own(standardize(trainFeats, sAll));
    const xTest = own(standardize(testFeats, sAll));
    const pAll = makeProblem(xAll, yTrain, C);
    problems.push(pAll);
    const pTest = makeProblem(xTest, yTest, C);
    problems.push(pTest);
    const r = await fit(pAll, best.l2, best.params, lb);
    iterations += r.iterations;
    allConverged &&= r.converged;
    const testTop1 = top1(await predict(pTest, r.params), yTest);
    const trainTop1 = top1(await predict(pAll, r.params), yTrain);
    log(`probe: refit with l2 ${best.l2.toExponential(0)} on ${N}: test top-1 ${testTop1.toFixed(4)} (${r.iterations} iterations, ${r.converged ? 'converged' : `not converged: ${r.reason}`})`);
    return {
      top1: testTop1,
      trainTop1,
      probe: {
        method: 'lbfgs',
        preconditioned: lb.precondition !== false,
        objective: 'mean softmax cross-entropy + l2/2 ||W||^2 (bias not penalized)',
        standardize: 'per feature, train statistics',
        l2_grid: grid,
        held_out: H,
        held_out_top1: heldTop1,
        chosen_l2: best.l2,
        gtol: lb.gtol!,
        iterations,
        converged: allConverged,
        grad_max: r.gradMax,
        loss: r.loss,
        seconds: (Date.now() - t0) / 1000,
      },
    };
  } finally {
    for (const p of problems) disposeProblem(p);
    for (const t of owned) t.dispose();
  }
}
