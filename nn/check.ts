// The engine's correctness checks without a test framework, so that the Node tests (through a thin uvu wrapper,
// test/helpers/gradcheck.ts) and the browser page (byol/web/checks.ts) run the very same checks on their adapter.
// An op check: random inputs; the float64 reference's backward checked against central finite differences of its
// forward; the GPU forward and every input gradient checked against the reference; and every buffer the check
// made returned to the pool. Failures throw plain Errors. Browser-safe: nothing here may import a Node module.

import { Rng } from '../engine/random.ts';
import { Tensor, tensor, backward, tidy, liveTensors, sync, tapeLength } from './index.ts';
import type { Arr } from '../engine/ref.ts';
import { size, normalizedError as relErr } from '../engine/ref.ts';

export { normalizedError as relErr } from '../engine/ref.ts';

/** A named check: resolves when it passes, throws an Error saying what differs when it fails. */
export interface Check {
  name: string;
  run: () => Promise<void>;
}

/** The engine's one seeded generator as a function, so failures reproduce. */
export function rng(seed: number): () => number {
  const r = new Rng(seed);
  return () => r.next();
}

/** Values uniform in [lo, hi), rounded to f32 so the reference sees exactly what the GPU sees. */
export function randArr(shape: number[], r: () => number, lo = -1, hi = 1): Arr {
  const data = new Float64Array(size(shape));
  for (let i = 0; i < data.length; i++) data[i] = Math.fround(lo + (hi - lo) * r());
  return { data, shape: [...shape] };
}

/** Throws `what` unless cond holds. */
export function ensure(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(what);
}

/** Throws unless a and b hold the same numbers (shapes, index lists), naming both. */
export function ensureEqual(got: ArrayLike<number>, want: ArrayLike<number>, what: string): void {
  const same = got.length === want.length && Array.prototype.every.call(got, (v: number, i: number) => Object.is(v, want[i]) || v === want[i]);
  if (!same) throw new Error(`${what}: got [${Array.from(got).join(', ')}], want [${Array.from(want).join(', ')}]`);
}

/** Normalized max error (max |a - b| over max(|b|, floor)) at most tol, else an Error naming the worst element. */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string): void {
  const e = relErr(got, want);
  if (!(e <= tol)) {
    let worst = 0;
    for (let i = 0; i < want.length; i++) if (Math.abs(got[i] - want[i]) > Math.abs(got[worst] - want[worst])) worst = i;
    throw new Error(`${what}: normalized error ${e.toExponential(2)} > ${tol} (length ${want.length} vs ${got.length}; worst at ${worst}: got ${got[worst]}, want ${want[worst]})`);
  }
}

export interface OpCase {
  shapes: number[][];
  /** float64 forward */
  ref: (xs: Arr[]) => Arr;
  /** float64 backward: one gradient per input, given the output gradient */
  refGrad: (xs: Arr[], dy: Arr) => Arr[];
  /** the GPU op under test */
  gpu: (ts: Tensor[]) => Tensor;
  /** normalized error allowed for the GPU vs the reference (forward and gradients) */
  tol?: number;
  /** value range of the inputs, per input or for all */
  range?: [number, number] | [number, number][];
  /** inputs that are not differentiated (e.g. integer-valued) */
  noGrad?: number[];
  seed?: number;
  /** runs before the GPU op and returns what undoes it (e.g. forcing a kernel variant) */
  setup?: () => () => void;
}

export type NamedOpCase = OpCase & { name: string };

/** Checks the reference's gradient against central differences of its own forward. */
export function checkRefGradient(c: OpCase, xs: Arr[], dy: Arr): void {
  const grads = c.refGrad(xs, dy);
  const loss = (ins: Arr[]) => {
    const y = c.ref(ins);
    let s = 0;
    for (let i = 0; i < y.data.length; i++) s += y.data[i] * dy.data[i];
    return s;
  };
  const r = rng(99);
  xs.forEach((x, k) => {
    if (c.noGrad?.includes(k)) return;
    const n = x.data.length;
    const picks = n <= 16 ? [...Array(n).keys()] : Array.from({ length: 16 }, () => Math.floor(r() * n));
    for (const i of picks) {
      const h = 1e-6 * Math.max(1, Math.abs(x.data[i]));
      const plus = xs.map((a) => ({ data: a.data.slice(), shape: a.shape }));
      const minus = xs.map((a) => ({ data: a.data.slice(), shape: a.shape }));
      plus[k].data[i] += h;
      minus[k].data[i] -= h;
      const fd = (loss(plus) - loss(minus)) / (2 * h);
      const an = grads[k].data[i];
      if (!(Math.abs(fd - an) <= 1e-5 * Math.max(1, Math.abs(fd), Math.abs(an)))) {
        throw new Error(`reference gradient of input ${k} at ${i}: analytic ${an} vs finite difference ${fd}`);
      }
    }
  });
}

/** Runs the full check for one op case; returns nothing, throws on any mismatch. */
export async function checkOp(c: OpCase): Promise<void> {
  const undo = c.setup?.();
  try {
    await checkOpOnce(c);
  } finally {
    undo?.();
  }
}

async function checkOpOnce(c: OpCase): Promise<void> {
  const tol = c.tol ?? 1e-5;
  const r = rng(c.seed ?? 1234);
  const xs = c.shapes.map((s, k) => {
    const range = Array.isArray(c.range?.[0]) ? (c.range as [number, number][])[k] : ((c.range as [number, number]) ?? [-1, 1]);
    return randArr(s, r, range[0], range[1]);
  });
  const want = c.ref(xs);
  const dy = randArr(want.shape, r);
  checkRefGradient(c, xs, dy);
  const wantGrads = c.refGrad(xs, dy);

  const before = liveTensors();
  const ts = xs.map((x, k) => tensor(Float32Array.from(x.data), x.shape, { requiresGrad: !c.noGrad?.includes(k) }));
  const y = tidy(() => c.gpu(ts));
  ensureEqual(y.shape, want.shape, 'output shape');
  assertClose(await y.toArray(), want.data, tol, 'forward');
  const dyT = tensor(Float32Array.from(dy.data), dy.shape);
  backward(y, dyT);
  dyT.dispose();
  for (let k = 0; k < ts.length; k++) {
    if (c.noGrad?.includes(k)) continue;
    const g = ts[k].grad;
    ensure(g, `input ${k} got no gradient`);
    ensureEqual(g.shape, xs[k].shape, `gradient ${k} shape`);
    assertClose(await g.toArray(), wantGrads[k].data, tol, `gradient of input ${k}`);
  }
  y.dispose();
  ts.forEach((t) => t.dispose());
  await sync();
  const after = liveTensors();
  ensure(after === before, `every buffer made by the op and its backward was released: ${after} live buffers, ${before} before`);
}

/** The op cases as checks. */
export function opChecks(cases: NamedOpCase[]): Check[] {
  return cases.map((c) => ({ name: c.name, run: () => checkOp(c) }));
}

/** fn, then a check that it left no pooled buffer behind and the tape empty. */
export async function leakFree(fn: () => Promise<void>): Promise<void> {
  await sync();
  const before = liveTensors();
  await fn();
  await sync();
  const after = liveTensors();
  ensure(after === before, `every buffer the check made was released: ${after} live buffers, ${before} before`);
  ensure(tapeLength() === 0, `the tape is empty afterwards (${tapeLength()} records)`);
}
