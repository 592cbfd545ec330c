// Optimizer checks: SGD (with and without momentum), Adam/AdamW and LARS updates over a parameter arena against
// float64 references, four steps each with a changing learning rate, one dispatch per SGD/Adam step and three per
// LARS step (see nn/checks/index.ts). The arena has awkward sizes (1, 3, 257, 1000), one that spans several
// reduction chunks, a weight that starts at zero (LARS falls back to trust 1) and a zero weight that never gets a
// gradient (both norms zero).

import { tensor, recorderStats } from '../index.ts';
import { Arena, type SegmentSpec } from '../../engine/arena.ts';
import { SGD, Adam, LARS, type Optimizer } from '../optim.ts';
import { ref, type RefSeg } from '../../kernels/optim.ts';
import { rng, ensure, leakFree, type Check } from '../check.ts';

export const SPECS: SegmentSpec[] = [
  { name: 'w1', shape: [1], kind: 'weight' },
  { name: 'b3', shape: [3], kind: 'bias' },
  { name: 'gamma', shape: [257], kind: 'norm' },
  { name: 'w1000', shape: [1000], kind: 'weight' },
  { name: 'wbig', shape: [97, 101], kind: 'weight' },
  { name: 'wzero', shape: [40, 25], kind: 'weight' },
  { name: 'wnever', shape: [4], kind: 'weight' },
];
export const ZERO_INIT = new Set(['wzero', 'wnever']);
const NO_GRAD_EVER = 'wnever';

function f32s(n: number, r: () => number, scale: number): Float64Array {
  return Float64Array.from({ length: n }, () => Math.fround((r() * 2 - 1) * scale));
}

/** An arena of SPECS and its float64 mirror. */
export interface OptimSetup {
  arena: Arena;
  segs: RefSeg[];
}

export function optimSetup(seed: number): OptimSetup {
  const arena = new Arena(SPECS, 'test');
  const r = rng(seed);
  const segs = arena.segments.map((s) => ({ kind: s.kind, w: ZERO_INIT.has(s.name) ? new Float64Array(s.size) : f32s(s.size, r, 1), g: new Float64Array(s.size) }));
  const packed = new Float32Array(arena.numel);
  arena.segments.forEach((s, k) => packed.set(segs[k].w, s.packedOffset));
  arena.write(packed);
  return { arena, segs };
}

/** Gives each parameter a fresh random .grad (some missing: they count as zero) and mirrors it in the reference. */
export function setGrads({ arena, segs }: OptimSetup, step: number, r: () => number): void {
  arena.segments.forEach((s, k) => {
    const skip = s.name === NO_GRAD_EVER || (s.name === 'gamma' && step === 1);
    segs[k].g = skip ? new Float64Array(s.size) : f32s(s.size, r, s.name === 'wbig' ? 0.01 : 1);
    if (!skip) arena.params[k].grad = tensor(Float32Array.from(segs[k].g), s.shape);
  });
}

/** Max |got - want| over max |want| for each segment; exact zeros where want is all zero. */
export function assertSegments(got: Float32Array, want: Float64Array[], arena: Arena, tol: number, what: string): void {
  arena.segments.forEach((s, k) => {
    let err = 0;
    let scale = 0;
    for (let i = 0; i < s.size; i++) {
      err = Math.max(err, Math.abs(got[s.packedOffset + i] - want[k][i]));
      scale = Math.max(scale, Math.abs(want[k][i]));
    }
    const rel = scale === 0 ? err : err / scale;
    if (!(rel <= tol)) throw new Error(`${what}, segment ${s.name}: normalized error ${rel.toExponential(2)} > ${tol} (scale ${scale.toExponential(2)})`);
  });
}

async function stateOf(opt: Optimizer, prefix: string, arena: Arena): Promise<Float32Array> {
  const sd = await opt.stateDict();
  const out = new Float32Array(arena.numel);
  for (const s of arena.segments) out.set(sd.get(`${prefix}.${s.name}`)!.data, s.packedOffset);
  return out;
}

const LRS = [0.5, 1.25, 2, 0.75];
const zerosLike = (segs: RefSeg[]) => segs.map((s) => new Float64Array(s.w.length));

function dispatchesOf(fn: () => void): number {
  const d0 = recorderStats().dispatches;
  fn();
  return recorderStats().dispatches - d0;
}

const SGD_CASES = [
  { lr: 0, momentum: 0, weightDecay: 0, exclude: false },
  { lr: 0, momentum: 0.9, weightDecay: 1e-2, exclude: false },
  { lr: 0, momentum: 0.5, weightDecay: 0.1, exclude: true },
];
const sgdChecks: Check[] = SGD_CASES.map((c) => ({
  name: `SGD momentum=${c.momentum} wd=${c.weightDecay} excludeBiasAndNorm=${c.exclude} matches float64 over 4 steps`,
  run: () => leakFree(async () => {
    const S = optimSetup(10);
    const r = rng(11);
    const opt = new SGD(S.arena, { lr: 0.1, momentum: c.momentum, weightDecay: c.weightDecay, excludeBiasAndNorm: c.exclude });
    try {
      const mu = c.momentum > 0 ? zerosLike(S.segs) : null;
      for (let step = 0; step < 4; step++) {
        setGrads(S, step, r);
        const n = dispatchesOf(() => opt.step(LRS[step]));
        ensure(n === 1, `one dispatch per step, got ${n}`);
        ref.sgd(S.segs, mu, { ...c, lr: LRS[step] });
        assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 2e-6, `weights after step ${step + 1}`);
      }
      if (mu) assertSegments(await stateOf(opt, 'momentum', S.arena), mu, S.arena, 2e-6, 'momentum buffer');
      ensure(opt.steps === 4, `opt.steps is ${opt.steps}, want 4`);
      ensure(opt.lr === LRS[3], `opt.lr is ${opt.lr}, want ${LRS[3]}`);
    } finally {
      opt.dispose();
      S.arena.dispose();
    }
  }),
}));

const ADAM_CASES = [
  { weightDecay: 0, decoupled: false, exclude: false, betas: [0.9, 0.999] as [number, number] },
  { weightDecay: 1e-2, decoupled: false, exclude: false, betas: [0.8, 0.99] as [number, number] },
  { weightDecay: 0.1, decoupled: true, exclude: true, betas: [0.9, 0.999] as [number, number] },
];
const adamChecks: Check[] = ADAM_CASES.map((c) => ({
  name: `Adam${c.decoupled ? 'W' : ''} betas=${c.betas} wd=${c.weightDecay} exclude=${c.exclude} matches float64 over 4 steps`,
  run: () => leakFree(async () => {
    const S = optimSetup(20);
    const r = rng(21);
    const opt = new Adam(S.arena, { lr: 1e-3, betas: c.betas, eps: 1e-8, weightDecay: c.weightDecay, decoupled: c.decoupled, excludeBiasAndNorm: c.exclude });
    try {
      const m = zerosLike(S.segs);
      const v = zerosLike(S.segs);
      for (let step = 0; step < 4; step++) {
        setGrads(S, step, r);
        const lr = LRS[step] * 1e-2;
        const n = dispatchesOf(() => opt.step(lr));
        ensure(n === 1, `one dispatch per step, got ${n}`);
        ref.adam(S.segs, m, v, step + 1, { lr, beta1: c.betas[0], beta2: c.betas[1], eps: 1e-8, weightDecay: c.weightDecay, decoupled: c.decoupled, exclude: c.exclude });
        assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 3e-6, `weights after step ${step + 1}`);
      }
      assertSegments(await stateOf(opt, 'exp_avg', S.arena), m, S.arena, 2e-6, 'first moment');
      assertSegments(await stateOf(opt, 'exp_avg_sq', S.arena), v, S.arena, 2e-6, 'second moment');
    } finally {
      opt.dispose();
      S.arena.dispose();
    }
  }),
}));

const LARS_CASES = [
  { momentum: 0.9, weightDecay: 1.5e-6, eta: 1e-3 },
  { momentum: 0.9, weightDecay: 0.05, eta: 1e-3 },
  { momentum: 0.5, weightDecay: 0.1, eta: 0.3 },
];
const larsChecks: Check[] = LARS_CASES.map((c) => ({
  name: `LARS momentum=${c.momentum} wd=${c.weightDecay} eta=${c.eta} matches BYOL's optax chain in float64 over 4 steps`,
  run: () => leakFree(async () => {
    const S = optimSetup(30);
    const r = rng(31);
    const opt = new LARS(S.arena, { lr: 0.2, ...c });
    try {
      const mu = zerosLike(S.segs);
      for (let step = 0; step < 4; step++) {
        setGrads(S, step, r);
        const n = dispatchesOf(() => opt.step(LRS[step]));
        ensure(n === 3, `3 dispatches per step (partial norms, ratios, update), got ${n}`);
        const trust = ref.lars(S.segs, mu, { ...c, lr: LRS[step] });
        if (step === 0) {
          // ||w|| = 0 falls back to trust 1, and bias/norm segments are never adapted
          S.arena.segments.forEach((s, k) => {
            if (s.kind !== 'weight' || ZERO_INIT.has(s.name)) ensure(trust[k] === 1, `${s.name}: trust ${trust[k]}, want 1`);
            else ensure(trust[k] !== 1, `${s.name}: trust 1, want an adapted ratio`);
          });
        }
        // mu carries the trust ratio directly (w moves by only ~eta·lr of itself per step)
        assertSegments(await stateOf(opt, 'momentum', S.arena), mu, S.arena, 2e-6, `momentum after step ${step + 1}`);
        assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 2e-6, `weights after step ${step + 1}`);
      }
    } finally {
      opt.dispose();
      S.arena.dispose();
    }
  }),
}));

export const optimChecks: Check[] = [...sgdChecks, ...adamChecks, ...larsChecks];
