// Seeded fuzzing of every public op: random shapes (ranks 0-4, dims 0-9, sometimes incompatible), random dtypes
// and random values (0, ±huge, ±tiny, negatives for log/sqrt/pow). An independent oracle decides whether each
// call is valid; a valid call must match the float64 reference (rounded to f32: NaN and ±Inf at the same
// positions, finite values within a normalized error), an invalid one must throw an Error naming the op (and
// the shapes for shape errors, the dtype for dtype errors). Every case, failed or not, must leave no buffer
// and no tape record behind. Reproduce a failing case from the seed it reports: FUZZ_SEED=<seed> FUZZ_CASES=1
// (network kernels: FUZZ_SEED=<seed - 1000000> FUZZ_NET_CASES=1); FUZZ_CASES/FUZZ_NET_CASES=5000 for a long run.

import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import {
  Tensor, tensor, full, add, sub, mul, div, relu, exp, log, sqrt, neg, addScalar, subScalar, mulScalar, divScalar,
  powScalar, reshape, sum, mean, max, matmul, onesLike, zeros, liveTensors, sync, tapeLength, clearTape, fmtShape,
  type DType,
} from '../nn/index.ts';
import { ref as ewRef } from '../kernels/elementwise.ts';
import { ref as reduceRef } from '../kernels/reduce.ts';
import { ref as mmRef } from '../kernels/matmul.ts';
import { batchNorm, ref as bnRef } from '../kernels/batchnorm.ts';
import { maxPool2d, globalAvgPool, ref as poolRef } from '../kernels/pool.ts';
import { softmax, softmaxCrossEntropy, argmax, ref as smRef } from '../kernels/softmax.ts';
import { conv2d, ref as convRef } from '../kernels/conv2d.ts';
import { cosineLoss, normalizedStd, ref as cosRef } from '../kernels/cosine.ts';
import { broadcastShapes, size, type Arr } from '../engine/ref.ts';
import { rng, relErr, opTest } from './helpers/gradcheck.ts';

const t = suite('fuzz');

const SEED = Number(process.env.FUZZ_SEED ?? 20240611);
const CASES = Number(process.env.FUZZ_CASES ?? 420);
const NET_CASES = Number(process.env.FUZZ_NET_CASES ?? 320);

type R = () => number;
const pick = <T>(r: R, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const int = (r: R, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));

function randShape(r: R, rank = int(r, 0, 4)): number[] {
  // mostly small non-zero dims; a zero dim now and then
  return Array.from({ length: rank }, () => (r() < 0.07 ? 0 : int(r, 1, 9)));
}

type ValueKind = 'general' | 'reduce' | 'matmul';

/** One value, rounded to f32. 'general' includes ±1e30 and ±1e-30 (normal f32: no denormal flushing). */
function randValue(r: R, kind: ValueKind): number {
  const u = r();
  if (u < 0.08) return 0;
  if (kind !== 'matmul' && u < 0.13) return Math.fround((r() < 0.5 ? -1 : 1) * 1e30);
  if (u < 0.18) return Math.fround((r() < 0.5 ? -1 : 1) * 1e-30);
  if (u < 0.28) return int(r, -4, 4); // integers: exact powers, ties in max
  return Math.fround((r() * 2 - 1) * (kind === 'general' ? 4 : 1));
}

function randArr(r: R, shape: number[], kind: ValueKind): Arr {
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) data[i] = randValue(r, kind);
  return { data, shape: [...shape] };
}

const randDtype = (r: R): DType => (r() < 0.06 ? pick(r, ['i32', 'u32'] as const) : 'f32');

/** What a case must do: match `want` (with an error scale), or throw with every part in its message. */
type Expect = { want: Arr; scale?: number; tol: number } | { throws: string[] };

interface Case {
  label: string;
  inputs: { arr: Arr; dtype: DType }[];
  run: (ts: Tensor[]) => Tensor;
  expect: Expect;
}

const finiteMax = (xs: Float64Array) => xs.reduce((m, v) => (Number.isFinite(v) ? Math.max(m, v) : m), 0);
const f32 = (a: Arr): Arr => ({ data: a.data.map(Math.fround), shape: a.shape });
const allF32 = (ins: { dtype: DType }[]) => ins.every((i) => i.dtype === 'f32');
const dtypeError = (op: string, ins: { dtype: DType }[]): Expect => ({ throws: [op, ins.find((i) => i.dtype !== 'f32')!.dtype] });

const UNARY = ['relu', 'exp', 'log', 'sqrt', 'neg'] as const;
const UNARY_FN = { relu, exp, log, sqrt, neg };
const SCALAR_OPS = ['addScalar', 'subScalar', 'mulScalar', 'divScalar', 'powScalar'] as const;
const SCALAR_FN = { addScalar, subScalar, mulScalar, divScalar, powScalar };
const SCALAR_REF: Record<(typeof SCALAR_OPS)[number], (x: Arr, s: number) => Arr> = {
  addScalar: (x, s) => ewRef.unary('addScalar', x, s),
  subScalar: (x, s) => ewRef.unary('addScalar', x, -s),
  mulScalar: (x, s) => ewRef.unary('mulScalar', x, s),
  // the engine multiplies by the f32 reciprocal (as PyTorch's CUDA kernels do); the reference divides
  divScalar: (x, s) => ({ data: x.data.map((v) => v / s), shape: x.shape }),
  powScalar: (x, s) => ewRef.unary('powScalar', x, s),
};
const BINARY = ['add', 'sub', 'mul', 'div'] as const;
const BINARY_FN = { add, sub, mul, div };

function unaryCase(r: R): Case {
  const op = pick(r, UNARY);
  const ins = [{ arr: randArr(r, randShape(r), 'general'), dtype: randDtype(r) }];
  const expect = allF32(ins) ? { want: f32(ewRef.unary(op, ins[0].arr)), tol: 1e-5 } : dtypeError(op, ins);
  return { label: `${op} ${fmtShape(ins[0].arr.shape)}`, inputs: ins, run: ([x]) => UNARY_FN[op](x), expect };
}

function scalarCase(r: R): Case {
  const op = pick(r, SCALAR_OPS);
  const s = op === 'powScalar'
    ? pick(r, [0, 1, 2, 3, 4, -1, -2, -3, 0.5, 1.5, -0.5, 1 / 3])
    : pick(r, [0, 1, -1, 2.5, -7, 1e30, -1e30, 1e-30, 0.1]);
  const ins = [{ arr: randArr(r, randShape(r), 'general'), dtype: randDtype(r) }];
  const expect = allF32(ins) ? { want: f32(SCALAR_REF[op](ins[0].arr, s)), tol: 1e-5 } : dtypeError(op, ins);
  return { label: `${op} ${fmtShape(ins[0].arr.shape)} s=${s}`, inputs: ins, run: ([x]) => SCALAR_FN[op](x, s), expect };
}

/** A shape that broadcasts with `a` most of the time: a suffix of it with some dims 1, sometimes one dim off. */
function partnerShape(r: R, a: number[]): number[] {
  if (r() < 0.15) return randShape(r); // unrelated: usually incompatible
  const keep = int(r, 0, a.length);
  const b = a.slice(a.length - keep).map((d) => (r() < 0.3 ? 1 : d));
  const extra = r() < 0.2 ? randShape(r, int(r, 1, 2)) : [];
  const out = [...extra, ...b].slice(-4);
  if (out.length && r() < 0.12) out[int(r, 0, out.length - 1)] = int(r, 0, 9);
  return out;
}

function binaryCase(r: R): Case {
  const op = pick(r, BINARY);
  let sa = randShape(r);
  let sb = partnerShape(r, sa);
  if (r() < 0.5) [sa, sb] = [sb, sa];
  const ins = [
    { arr: randArr(r, sa, 'general'), dtype: randDtype(r) },
    { arr: randArr(r, sb, 'general'), dtype: randDtype(r) },
  ];
  let expect: Expect;
  let ok = true;
  try {
    broadcastShapes(sa, sb);
  } catch {
    ok = false;
  }
  if (!ok) expect = { throws: [op, fmtShape(sa), fmtShape(sb), 'broadcast'] };
  else if (!allF32(ins)) expect = dtypeError(op, ins);
  else expect = { want: f32(ewRef.binary(op, ins[0].arr, ins[1].arr)), tol: 1e-5 };
  return { label: `${op} ${fmtShape(sa)} ${fmtShape(sb)}`, inputs: ins, run: ([a, b]) => BINARY_FN[op](a, b), expect };
}

function reshapeCase(r: R): Case {
  const shape = randShape(r);
  const n = size(shape);
  let target: number[];
  const u = r();
  if (u < 0.3) target = [n];
  else if (u < 0.6) {
    // a random factorization of n (or of a wrong size)
    target = [];
    let rest = n;
    for (let k = 0; k < 3 && rest > 1; k++) {
      const divisors = [...Array(rest).keys()].map((d) => d + 1).filter((d) => rest % d === 0);
      const d = pick(r, divisors);
      target.push(d);
      rest /= d;
    }
    target.push(rest);
    if (r() < 0.5 && target.length > 1) target[int(r, 0, target.length - 1)] = -1;
  } else if (u < 0.8) target = [...shape].reverse();
  else target = randShape(r); // usually the wrong size
  const ins = [{ arr: randArr(r, shape, 'general'), dtype: randDtype(r) }];
  // the oracle: -1 takes what is left (0 if nothing is left), every dim a non-negative integer, same size
  const resolved = [...target];
  const hole = resolved.indexOf(-1);
  if (hole >= 0) {
    const rest = size(resolved.filter((_, i) => i !== hole));
    resolved[hole] = rest === 0 ? 0 : n / rest;
  }
  const valid = size(resolved) === n && resolved.every((d) => Number.isInteger(d) && d >= 0);
  // reshape is a view of any dtype: the data is whatever the typed array of that dtype holds
  const typed = { f32: Float32Array, i32: Int32Array, u32: Uint32Array }[ins[0].dtype].from(ins[0].arr.data);
  const expect: Expect = valid
    ? { want: { data: Float64Array.from(typed), shape: resolved }, tol: 0 }
    : { throws: ['reshape', fmtShape(shape), fmtShape(target)] };
  return { label: `reshape ${fmtShape(shape)} → ${fmtShape(target)}`, inputs: ins, run: ([x]) => reshape(x, target), expect };
}

function reduceCase(r: R): Case {
  const op = pick(r, ['sum', 'mean', 'max'] as const);
  const shape = randShape(r);
  const rank = shape.length;
  const u = r();
  let axes: number | number[] | undefined;
  if (u < 0.2) axes = undefined;
  else if (u < 0.45) axes = int(r, -rank - 1, rank); // sometimes out of range
  else axes = Array.from({ length: int(r, 0, Math.min(rank, 3)) }, () => int(r, -rank, rank - 1 + (r() < 0.1 ? 1 : 0)));
  const keepDims = r() < 0.5;
  const ins = [{ arr: randArr(r, shape, 'reduce'), dtype: randDtype(r) }];
  const list = axes === undefined ? [...Array(rank).keys()] : typeof axes === 'number' ? [axes] : axes;
  const norm = list.map((a) => (a < 0 ? a + rank : a));
  const label = `${op} ${fmtShape(shape)} axes=${JSON.stringify(axes)} keepDims=${keepDims}`;
  let expect: Expect;
  if (list.some((a) => !(a >= -rank && a < rank))) expect = { throws: [op, 'out of range', fmtShape(shape)] };
  else if (new Set(norm).size !== norm.length) expect = { throws: [op, 'repeated axis'] };
  else if (!allF32(ins)) expect = dtypeError(op, ins);
  else if (op === 'max' && norm.some((a) => shape[a] === 0)) expect = { throws: ['max', 'empty axis', fmtShape(shape)] };
  else {
    const want = f32(reduceRef.reduce(op, ins[0].arr, norm, keepDims));
    // f32 sums are accurate relative to the sum of magnitudes (cancellation is the input's condition, not a bug)
    const absSum = reduceRef.reduce(op === 'mean' ? 'mean' : 'sum', { data: ins[0].arr.data.map(Math.abs), shape }, norm, keepDims);
    const scale = op === 'max' ? 0 : finiteMax(absSum.data); // (a mean over an empty axis is NaN)
    expect = { want, scale, tol: op === 'max' ? 0 : 1e-5 };
  }
  return { label, inputs: ins, run: ([x]) => (op === 'sum' ? sum : op === 'mean' ? mean : max)(x, axes, keepDims), expect };
}

function matmulCase(r: R): Case {
  const transA = r() < 0.5;
  const transB = r() < 0.5;
  const M = int(r, 0, 9), N = int(r, 0, 9), K = int(r, 0, 9);
  const batch = int(r, 0, 4);
  const rankOf = () => (r() < 0.06 ? pick(r, [0, 1, 4]) : r() < 0.6 ? 2 : 3);
  const ra = rankOf(), rb = rankOf();
  const mk = (rank: number, rows: number, cols: number, trans: boolean, b: number) => {
    const core = trans ? [cols, rows] : [rows, cols];
    if (rank === 2) return core;
    if (rank === 3) return [b, ...core];
    return randShape(r, rank);
  };
  const bb = r() < 0.08 ? int(r, 0, 4) : batch; // sometimes a different batch
  const kb = r() < 0.08 ? int(r, 0, 9) : K; // sometimes a different inner dimension
  const sa = mk(ra, M, K, transA, batch);
  const sb = mk(rb, kb, N, transB, bb);
  const ins = [
    { arr: randArr(r, sa, 'matmul'), dtype: randDtype(r) },
    { arr: randArr(r, sb, 'matmul'), dtype: randDtype(r) },
  ];
  const label = `matmul ${fmtShape(sa)}${transA ? 'ᵀ' : ''} · ${fmtShape(sb)}${transB ? 'ᵀ' : ''}`;
  // the oracle, written from the documented rules, not from the engine's code
  const inner = (s: number[], t: boolean) => (t ? s[s.length - 2] : s[s.length - 1]);
  const innerB = (s: number[], t: boolean) => (t ? s[s.length - 1] : s[s.length - 2]);
  let expect: Expect;
  if (!allF32(ins)) expect = dtypeError('matmul', ins);
  else if (ra < 2 || ra > 3 || rb < 2 || rb > 3) expect = { throws: ['matmul', '2-D or 3-D', fmtShape(sa), fmtShape(sb)] };
  else if (inner(sa, transA) !== innerB(sb, transB)) expect = { throws: ['matmul', 'inner', fmtShape(sa), fmtShape(sb)] };
  else if (ra === 3 && rb === 3 && sa[0] !== sb[0]) expect = { throws: ['matmul', 'batch', fmtShape(sa), fmtShape(sb)] };
  else {
    const want = f32(mmRef.matmul(ins[0].arr, ins[1].arr, transA, transB));
    const absA = { data: ins[0].arr.data.map(Math.abs), shape: sa };
    const absB = { data: ins[1].arr.data.map(Math.abs), shape: sb };
    const scale = finiteMax(mmRef.matmul(absA, absB, transA, transB).data);
    expect = { want, scale, tol: 1e-5 };
  }
  return { label, inputs: ins, run: ([a, b]) => matmul(a, b, transA, transB), expect };
}

function fullCase(r: R): Case {
  const shape = r() < 0.1 ? [int(r, 1, 3), -1] : randShape(r);
  const v = pick(r, [0, 1, -2.5, 1e30, 1e-30]);
  const viaOnes = r() < 0.3 && shape.every((d) => d >= 0);
  const valid = shape.every((d) => d >= 0);
  const expect: Expect = valid
    ? { want: { data: new Float64Array(size(shape)).fill(Math.fround(viaOnes ? 1 : v)), shape }, tol: 0 }
    : { throws: ['full', 'invalid shape', fmtShape(shape)] };
  const label = viaOnes ? `onesLike ${fmtShape(shape)}` : `full ${fmtShape(shape)} ${v}`;
  return {
    label,
    inputs: [],
    run: () => {
      if (!viaOnes) return full(shape, v);
      const z = zeros(shape);
      const o = onesLike(z);
      z.dispose();
      return o;
    },
    expect,
  };
}

const GENERATORS = [unaryCase, unaryCase, scalarCase, scalarCase, binaryCase, binaryCase, binaryCase, reshapeCase, reduceCase, reduceCase, matmulCase, matmulCase, fullCase];

/** f32 comparison: NaN and ±Inf where the reference has them, finite values by normalized error. */
function compare(got: ArrayLike<number>, want: Arr, scale: number, tol: number): string | null {
  if (got.length !== want.data.length) return `length ${got.length}, expected ${want.data.length}`;
  const gf: number[] = [];
  const wf: number[] = [];
  for (let i = 0; i < got.length; i++) {
    const g = got[i], w = want.data[i];
    if (Number.isNaN(w) || !Number.isFinite(w)) {
      if (!Object.is(g, w) && !(Number.isNaN(g) && Number.isNaN(w))) return `element ${i}: got ${g}, expected ${w}`;
    } else if (!Number.isFinite(g)) return `element ${i}: got ${g}, expected ${w}`;
    else gf.push(g), wf.push(w);
  }
  const e = relErr(gf, wf, Math.max(1e-3, scale));
  if (!(e <= tol)) {
    let worst = 0;
    for (let i = 0; i < gf.length; i++) if (Math.abs(gf[i] - wf[i]) > Math.abs(gf[worst] - wf[worst])) worst = i;
    return `normalized error ${e.toExponential(2)} > ${tol} (worst finite element: got ${gf[worst]}, expected ${wf[worst]})`;
  }
  return null;
}

async function runCase(c: Case, seed: number, r: R): Promise<void> {
  const where = `case seed ${seed}: ${c.label}`;
  const before = liveTensors();
  const grad = r() < 0.3; // recording must not change results or leave records behind on failure
  const ts = c.inputs.map(({ arr, dtype }) => tensor(arr.data, arr.shape, { dtype, requiresGrad: grad && dtype === 'f32' }));
  let y: Tensor | null = null;
  let error: Error | null = null;
  try {
    y = c.run(ts);
  } catch (e) {
    error = e as Error;
  }
  try {
    await check(c, where, y, error);
  } finally {
    // also after a failed check, so that one failure does not leave tensors or tape records to the next test
    y?.dispose();
    clearTape();
    for (const x of ts) x.dispose();
  }
  assert.is(liveTensors(), before, `${where}: buffers leaked`);
}

async function check(c: Case, where: string, y: Tensor | null, error: Error | null): Promise<void> {
  if ('throws' in c.expect) {
    assert.ok(error, `${where}: expected an error mentioning ${c.expect.throws.join(', ')}, but it returned ${y ? fmtShape(y.shape) : y}`);
    assert.instance(error, Error, where);
    for (const part of c.expect.throws) assert.ok(error!.message.includes(part), `${where}: error message lacks '${part}': ${error!.message}`);
    assert.is(tapeLength(), 0, `${where}: a failed op left a tape record`);
  } else {
    if (error) assert.unreachable(`${where}: valid call threw: ${error.stack}`);
    assert.equal(y!.shape, c.expect.want.shape, `${where}: output shape`);
    const got = await y!.toArray();
    const why = compare(got, c.expect.want, c.expect.scale ?? 0, c.expect.tol);
    if (why) assert.unreachable(`${where}: ${why}`);
  }
}

t(`${CASES} random cases over every public op (seed ${SEED})`, async () => {
  const counts: Record<string, number> = {};
  let errors = 0;
  for (let k = 0; k < CASES; k++) {
    const seed = SEED + k;
    const r = rng(seed);
    const c = pick(r, GENERATORS)(r);
    const op = c.label.split(' ')[0];
    counts[op] = (counts[op] ?? 0) + 1;
    if ('throws' in c.expect) errors++;
    await runCase(c, seed, r);
  }
  await sync();
  // the mix must cover what it claims: every op, and both outcomes
  if (CASES >= 200) for (const op of [...UNARY, ...SCALAR_OPS, ...BINARY, 'reshape', 'sum', 'mean', 'max', 'matmul', 'full']) assert.ok(counts[op], `no case for ${op}`);
  if (CASES >= 200) assert.ok(errors > CASES * 0.1 && errors < CASES * 0.5, `${errors} error cases of ${CASES}`);
});

// ---- the network kernels: batch norm, pooling, softmax, cosine loss ----------------------------------------

/** A 2-D shape [N, K] most of the time, sometimes another rank (an error). */
const rowsShape = (r: R, minRows = 0) => (r() < 0.1 ? randShape(r) : [int(r, minRows, 9), int(r, r() < 0.05 ? 0 : 1, 9)]);

function batchNormCase(r: R): Case {
  const rank = r() < 0.05 ? pick(r, [0, 1]) : int(r, 2, 4);
  const xs = randShape(r, rank);
  const C = xs[rank - 1] ?? 0;
  const wrongC = r() < 0.08;
  const gs = wrongC ? [int(r, 0, 9)] : [C];
  const training = r() < 0.7;
  const withStats = !training || r() < 0.5;
  const relu = r() < 0.3;
  const x = randArr(r, xs, 'matmul');
  if (r() < 0.3) x.data.forEach((v, i) => (x.data[i] = Math.fround(v + 100))); // |mean| >> std
  const gamma = randArr(r, gs, 'matmul');
  const beta = randArr(r, gs, 'matmul');
  const rm = randArr(r, gs, 'matmul');
  const rv = { data: randArr(r, gs, 'matmul').data.map((v) => Math.fround(Math.abs(v) + 0.1)), shape: gs };
  const dt = randDtype(r);
  const ins = [{ arr: x, dtype: dt }, { arr: gamma, dtype: 'f32' as DType }, { arr: beta, dtype: 'f32' as DType }, { arr: rm, dtype: 'f32' as DType }, { arr: rv, dtype: 'f32' as DType }];
  const R = C ? size(xs) / C : 0;
  let expect: Expect;
  if (dt !== 'f32') expect = { throws: ['batchNorm', dt] };
  else if (rank < 2) expect = { throws: ['batchNorm', 'rank', fmtShape(xs)] };
  else if (C === 0) expect = { throws: ['batchNorm', 'no channels', fmtShape(xs)] };
  else if (gs[0] !== C) expect = { throws: ['batchNorm', fmtShape(gs), fmtShape(xs)] };
  else if (training && R < 2) expect = { throws: ['batchNorm', 'more than 1 value per channel', fmtShape(xs)] };
  else {
    const o = { training, relu, runningMean: rm, runningVar: rv };
    // f32 normalization error scales with |x - mean| / std: bounded by sqrt(R) in training, by the data in eval
    expect = { want: f32(bnRef.batchNorm(x, gamma, beta, o)), tol: 1e-5 };
  }
  const label = `batchNorm ${fmtShape(xs)} gamma ${fmtShape(gs)} ${training ? 'train' : 'eval'}${withStats ? '+stats' : ''}${relu ? ' relu' : ''}`;
  return {
    label,
    inputs: ins,
    run: ([tx, tg, tb, tm, tv]) => batchNorm(tx, tg, tb, withStats ? { runningMean: tm, runningVar: tv } : null, { training, relu }),
    expect,
  };
}

function maxPoolCase(r: R): Case {
  const rank = r() < 0.05 ? 3 : 4;
  const xs = rank === 4 ? [int(r, 0, 3), int(r, 0, 9), int(r, 0, 9), int(r, 0, 5)] : randShape(r, 3);
  const k = int(r, 1, 4), s = int(r, 1, 3), pad = int(r, 0, 2);
  const x = randArr(r, xs, 'general');
  const dt = randDtype(r);
  let expect: Expect;
  const [, H, W] = xs;
  const OH = Math.floor((H + 2 * pad - k) / s) + 1, OW = Math.floor((W + 2 * pad - k) / s) + 1;
  if (rank !== 4 || dt !== 'f32') expect = { throws: ['maxPool2d', fmtShape(xs)] };
  else if (2 * pad > k) expect = { throws: ['maxPool2d', 'padding'] };
  else if (OH < 1 || OW < 1 || H === 0 || W === 0) expect = { throws: ['maxPool2d', fmtShape(xs)] };
  else expect = { want: f32(poolRef.maxPool2d(x, k, s, pad)), tol: 0 };
  return { label: `maxPool2d ${fmtShape(xs)} k=${k} s=${s} p=${pad}`, inputs: [{ arr: x, dtype: dt }], run: ([t]) => maxPool2d(t, { kernel: k, stride: s, padding: pad }), expect };
}

function avgPoolCase(r: R): Case {
  const xs = r() < 0.1 ? randShape(r) : [int(r, 0, 3), int(r, 1, 9), int(r, 1, 9), int(r, 0, 6)];
  const x = randArr(r, xs, 'reduce');
  const dt = randDtype(r);
  let expect: Expect;
  if (xs.length !== 4) expect = { throws: ['globalAvgPool', fmtShape(xs)] };
  else if (dt !== 'f32') expect = { throws: [dt] };
  else if (xs[1] * xs[2] === 0) expect = { want: { data: new Float64Array(xs[0] * xs[3]).fill(NaN), shape: [xs[0], xs[3]] }, tol: 0 };
  else {
    const abs = { data: x.data.map(Math.abs), shape: xs };
    expect = { want: f32(poolRef.globalAvgPool(x)), scale: finiteMax(poolRef.globalAvgPool(abs).data), tol: 1e-5 };
  }
  return { label: `globalAvgPool ${fmtShape(xs)}`, inputs: [{ arr: x, dtype: dt }], run: ([t]) => globalAvgPool(t), expect };
}

function softmaxCase(r: R): Case {
  const op = pick(r, ['softmax', 'argmax', 'softmaxCrossEntropy'] as const);
  const dt = randDtype(r);
  if (op !== 'softmaxCrossEntropy') {
    const xs = randShape(r);
    const x = randArr(r, xs, 'general');
    const rank = xs.length;
    const axis = int(r, -rank - 1, rank);
    const ins = [{ arr: x, dtype: dt }];
    let expect: Expect;
    if (dt !== 'f32') expect = { throws: [op, dt] };
    else if (op === 'softmax') {
      expect = rank < 1 || xs[rank - 1] === 0 ? { throws: [op, fmtShape(xs)] } : { want: f32(smRef.softmax(x)), tol: 1e-5 };
    } else if (!(axis >= -rank && axis < rank)) expect = { throws: [op, 'out of range', fmtShape(xs)] };
    else if (xs[(axis + rank) % rank] === 0) expect = { throws: [op, 'empty', fmtShape(xs)] };
    else expect = { want: smRef.argmax(x, axis), tol: 0 };
    const label = `${op} ${fmtShape(xs)}${op === 'argmax' ? ` axis=${axis}` : ''}`;
    return { label, inputs: ins, run: ([t]) => (op === 'softmax' ? softmax(t) : argmax(t, axis)), expect };
  }
  const xs = rowsShape(r);
  const x = randArr(r, xs, 'matmul');
  const [N, K] = xs;
  const labelShape = r() < 0.08 ? randShape(r, int(r, 0, 2)) : [N ?? 0];
  const labelDt: DType = r() < 0.08 ? 'f32' : 'i32';
  const labels = { data: Float64Array.from({ length: size(labelShape) }, () => (r() < 0.05 ? pick(r, [-1, K ?? 0]) : int(r, 0, Math.max(0, (K ?? 1) - 1)))), shape: labelShape };
  let expect: Expect;
  if (dt !== 'f32') expect = { throws: [op, dt] };
  else if (xs.length !== 2 || K === 0) expect = { throws: [op, fmtShape(xs)] };
  else if (labelDt !== 'i32' || labelShape.length !== 1 || labelShape[0] !== N) expect = { throws: [op, 'labels', fmtShape(labelShape)] };
  else if (N === 0) expect = { throws: [op, 'no rows', fmtShape(xs)] };
  else if ([...labels.data].some((l) => l < 0 || l >= K)) expect = { want: { data: Float64Array.of(NaN), shape: [] }, tol: 0 };
  else expect = { want: f32(smRef.softmaxCrossEntropy(x, labels.data)), tol: 1e-5 };
  const ins = [{ arr: x, dtype: dt }, { arr: labels, dtype: labelDt }];
  return { label: `${op} ${fmtShape(xs)} labels ${labelDt} ${fmtShape(labelShape)}`, inputs: ins, run: ([t, l]) => softmaxCrossEntropy(t, l), expect };
}

function convCase(r: R): Case {
  const xRank = r() < 0.05 ? 3 : 4;
  const wRank = r() < 0.05 ? 3 : 4;
  const Cin = int(r, 0, 6);
  const xs = xRank === 4 ? [int(r, 0, 3), int(r, 0, 9), int(r, 0, 9), Cin] : randShape(r, 3);
  const ws = wRank === 4 ? [int(r, 1, 4), int(r, 1, 4), r() < 0.08 ? int(r, 0, 6) : Cin, int(r, r() < 0.05 ? 0 : 1, 6)] : randShape(r, 3);
  const Cout = ws[3] ?? 0;
  const stride = r() < 0.04 ? 0 : int(r, 1, 3);
  const pad = r() < 0.04 ? -1 : int(r, 0, 2);
  const withBias = r() < 0.6;
  const bs = r() < 0.08 ? [int(r, 0, 6)] : [Cout];
  const x = randArr(r, xs, 'matmul');
  const w = randArr(r, ws, 'matmul');
  const b = randArr(r, bs, 'matmul');
  const dt = randDtype(r);
  const ins = [{ arr: x, dtype: dt }, { arr: w, dtype: 'f32' as DType }, { arr: b, dtype: 'f32' as DType }];
  const out = (n: number, k: number) => Math.floor((n + 2 * pad - k) / stride) + 1;
  let expect: Expect;
  if (dt !== 'f32') expect = { throws: ['conv2d', dt] };
  else if (xRank !== 4) expect = { throws: ['conv2d', fmtShape(xs)] };
  else if (wRank !== 4) expect = { throws: ['conv2d', fmtShape(ws)] };
  else if (stride < 1) expect = { throws: ['conv2d', 'stride'] };
  else if (pad < 0) expect = { throws: ['conv2d', 'padding'] };
  else if (ws[2] !== Cin) expect = { throws: ['conv2d', fmtShape(xs), fmtShape(ws)] };
  else if (withBias && bs[0] !== Cout) expect = { throws: ['conv2d', 'bias', fmtShape(bs)] };
  else if (Cout < 1 || out(xs[1], ws[0]) < 1 || out(xs[2], ws[1]) < 1) expect = { throws: ['conv2d', fmtShape(xs), 'too small'] };
  else {
    const abs = (a: Arr) => ({ data: a.data.map(Math.abs), shape: a.shape });
    const want = f32(convRef.conv2d(x, w, withBias ? b : null, stride, pad));
    expect = { want, scale: finiteMax(convRef.conv2d(abs(x), abs(w), withBias ? abs(b) : null, stride, pad).data), tol: 1e-5 };
  }
  const label = `conv2d ${fmtShape(xs)} * ${fmtShape(ws)}${withBias ? ` + ${fmtShape(bs)}` : ''} s=${stride} p=${pad}`;
  return { label, inputs: ins, run: ([tx, tw, tb]) => conv2d(tx, tw, withBias ? tb : null, { stride, padding: pad }), expect };
}

function cosineCase(r: R): Case {
  const op = pick(r, ['cosineLoss', 'normalizedStd'] as const);
  const ps = rowsShape(r);
  const zs = r() < 0.1 ? rowsShape(r) : [...ps];
  const p = randArr(r, ps, 'matmul');
  const z = randArr(r, zs, 'matmul');
  const dt = randDtype(r);
  let expect: Expect;
  if (op === 'cosineLoss') {
    const same = ps.length === 2 && zs.length === 2 && ps[0] === zs[0] && ps[1] === zs[1];
    if (dt !== 'f32') expect = { throws: [op, dt] };
    else if (!same) expect = { throws: [op, fmtShape(ps), fmtShape(zs)] };
    else if (ps[0] === 0 || ps[1] === 0) expect = { throws: [op, 'empty', fmtShape(ps)] };
    else expect = { want: f32(cosRef.cosineLoss(p, z)), scale: 4, tol: 1e-5 }; // 2 - 2cos: error relative to the terms
  } else if (dt !== 'f32') expect = { throws: [op, dt] };
  else if (zs.length !== 2 || zs[0] < 2 || zs[1] < 1) expect = { throws: [op, fmtShape(zs)] };
  else expect = { want: f32(cosRef.normalizedStd(z)), scale: 1, tol: 1e-5 }; // a std of unit vectors' entries
  const ins = [{ arr: p, dtype: dt }, { arr: z, dtype: dt }];
  return { label: `${op} ${fmtShape(ps)} ${fmtShape(zs)}`, inputs: ins, run: ([tp, tz]) => (op === 'cosineLoss' ? cosineLoss(tp, tz) : normalizedStd(tz)), expect };
}

const NET_GENERATORS = [batchNormCase, maxPoolCase, avgPoolCase, softmaxCase, softmaxCase, cosineCase, convCase, convCase];

t(`${NET_CASES} random cases over conv2d, batchNorm, maxPool2d, globalAvgPool, softmax, argmax, softmaxCrossEntropy, cosineLoss, normalizedStd`, async () => {
  const counts: Record<string, number> = {};
  for (let k = 0; k < NET_CASES; k++) {
    const seed = SEED + 1_000_000 + k;
    const r = rng(seed);
    const c = pick(r, NET_GENERATORS)(r);
    const op = c.label.split(' ')[0];
    counts[op] = (counts[op] ?? 0) + 1;
    await runCase(c, seed, r);
  }
  if (NET_CASES < 100) return;
  for (const op of ['conv2d', 'batchNorm', 'maxPool2d', 'globalAvgPool', 'softmax', 'argmax', 'softmaxCrossEntropy', 'cosineLoss', 'normalizedStd']) {
    assert.ok(counts[op], `no case for ${op}`);
  }
});

// ---- regressions: the engine bugs this fuzzer found, pinned down one by one ---------------------------------

t('regression: reducing a run of size-1 axes after another run (sum/max [3,1,4,5] over axes [1,3])', async () => {
  const shape = [3, 1, 4, 5];
  const x = randArr(rng(3), shape, 'reduce');
  const xt = tensor(x.data, shape);
  for (const op of ['sum', 'max'] as const) {
    const y = (op === 'sum' ? sum : max)(xt, [1, 3]);
    const why = compare(await y.toArray(), f32(reduceRef.reduce(op, x, [1, 3])), 5, 1e-5);
    assert.is(why, null, `${op}: ${why}`);
    y.dispose();
  }
  xt.dispose();
});

for (const s of [2, 3, 4, 5, -1, -2, -3, 0, 1]) {
  opTest(`regression: powScalar with negative bases, s=${s} (forward and gradient)`, {
    shapes: [[3, 7]],
    range: [-2, -0.25],
    ref: ([x]) => ewRef.unary('powScalar', x, s),
    refGrad: ([x], dy) => [ewRef.unaryBackward('powScalar', x, dy, s)],
    gpu: ([x]) => powScalar(x, s),
  }, t);
}

t('regression: powScalar edge values follow Math.pow (0^0 = 1, 0^-k = ±Inf, (-8)^(1/3) = NaN)', async () => {
  const v = [0, -0, -8, 8, -1, 2];
  for (const s of [0, -1, -2, -3, 1 / 3, 0.5, -0.5]) {
    const x = tensor(v);
    const y = powScalar(x, s);
    const why = compare(await y.toArray(), f32({ data: Float64Array.from(v.map((a) => Math.pow(a, s))), shape: [6] }), 0, 1e-5);
    assert.is(why, null, `s=${s}: ${why}`);
    x.dispose();
    y.dispose();
  }
});

t('regression: a 2-D operand times an empty batch gives an empty batch', async () => {
  const a = tensor(new Float32Array(6).fill(1), [2, 3]);
  const b = zeros([0, 3, 4]);
  const c = matmul(a, b);
  assert.equal(c.shape, [0, 2, 4]);
  const d = matmul(b, a, true, true);
  assert.equal(d.shape, [0, 4, 2]);
  for (const x of [a, b, c, d]) x.dispose();
});

t('regression: maxPool2d of an image with no rows or columns throws instead of pooling padding', () => {
  const x = zeros([2, 7, 0, 3]);
  assert.throws(() => maxPool2d(x, { kernel: 4, stride: 3, padding: 2 }), /maxPool2d: input \[2, 7, 0, 3\] has an empty spatial dimension/);
  x.dispose();
});

opTest('regression: conv2d with no input channels (an empty tensor bound where the kernel reads vec4s) gives the bias', {
  shapes: [[2, 5, 5, 0], [3, 3, 0, 4], [4]],
  ref: ([x, w, b]) => convRef.conv2d(x, w, b, 1, 1),
  refGrad: ([x, w], dy) => convRef.conv2dBackward(x, w, dy, 1, 1),
  gpu: ([x, w, b]) => conv2d(x, w, b, { stride: 1, padding: 1 }),
}, t);

t('regression: errors name the op that was called (subScalar, divScalar, mean), not the one it delegates to', () => {
  const i = tensor([1, 2], [2], { dtype: 'i32' });
  assert.throws(() => subScalar(i, 1), /^subScalar: expected f32/);
  assert.throws(() => divScalar(i, 2), /^divScalar: expected f32/);
  assert.throws(() => mean(i), /^mean: expected an f32 tensor, got i32 \[2\]/);
  i.dispose();
});

t.run();
