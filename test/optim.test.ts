import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, sum, mul, sub, mean, backward, tidy, liveTensors, sync, recorderStats, noGrad, tapeLength } from '../nn/index.ts';
import { Arena, arenaStats, type SegmentSpec } from '../engine/arena.ts';
import { SGD, Adam, LARS, segmentNorms, type Optimizer } from '../nn/optim.ts';
import { emaUpdate } from '../nn/ema.ts';
import { Linear, ReLU, Sequential, materialize } from '../nn/module.ts';
import { ref, type RefSeg } from '../kernels/optim.ts';
import { rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('optim');

// awkward sizes (1, 3, 257, 1000), one that spans several reduction chunks, a weight that starts at zero
// (LARS falls back to trust 1) and a zero weight that never gets a gradient (both norms zero)
const SPECS: SegmentSpec[] = [
  { name: 'w1', shape: [1], kind: 'weight' },
  { name: 'b3', shape: [3], kind: 'bias' },
  { name: 'gamma', shape: [257], kind: 'norm' },
  { name: 'w1000', shape: [1000], kind: 'weight' },
  { name: 'wbig', shape: [97, 101], kind: 'weight' },
  { name: 'wzero', shape: [40, 25], kind: 'weight' },
  { name: 'wnever', shape: [4], kind: 'weight' },
];
const ZERO_INIT = new Set(['wzero', 'wnever']);
const NO_GRAD_EVER = 'wnever';

function f32s(n: number, r: () => number, scale: number): Float64Array {
  return Float64Array.from({ length: n }, () => Math.fround((r() * 2 - 1) * scale));
}

interface Setup {
  arena: Arena;
  segs: RefSeg[];
}

function setup(seed: number): Setup {
  const arena = new Arena(SPECS, 'test');
  const r = rng(seed);
  const segs = arena.segments.map((s) => ({ kind: s.kind, w: ZERO_INIT.has(s.name) ? new Float64Array(s.size) : f32s(s.size, r, 1), g: new Float64Array(s.size) }));
  const packed = new Float32Array(arena.numel);
  arena.segments.forEach((s, k) => packed.set(segs[k].w, s.packedOffset));
  arena.write(packed);
  return { arena, segs };
}

/** Gives each parameter a fresh random .grad (some missing: they count as zero) and mirrors it in the reference. */
function setGrads({ arena, segs }: Setup, step: number, r: () => number): void {
  arena.segments.forEach((s, k) => {
    const skip = s.name === NO_GRAD_EVER || (s.name === 'gamma' && step === 1);
    segs[k].g = skip ? new Float64Array(s.size) : f32s(s.size, r, s.name === 'wbig' ? 0.01 : 1);
    if (!skip) arena.params[k].grad = tensor(Float32Array.from(segs[k].g), s.shape);
  });
}

/** Max |got - want| over max |want| for each segment; exact zeros where want is all zero. */
function assertSegments(got: Float32Array, want: Float64Array[], arena: Arena, tol: number, what: string): void {
  arena.segments.forEach((s, k) => {
    let err = 0;
    let scale = 0;
    for (let i = 0; i < s.size; i++) {
      err = Math.max(err, Math.abs(got[s.packedOffset + i] - want[k][i]));
      scale = Math.max(scale, Math.abs(want[k][i]));
    }
    const rel = scale === 0 ? err : err / scale;
    if (!(rel <= tol)) assert.unreachable(`${what}, segment ${s.name}: normalized error ${rel.toExponential(2)} > ${tol} (scale ${scale.toExponential(2)})`);
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

const SGD_CASES = [
  { lr: 0, momentum: 0, weightDecay: 0, exclude: false },
  { lr: 0, momentum: 0.9, weightDecay: 1e-2, exclude: false },
  { lr: 0, momentum: 0.5, weightDecay: 0.1, exclude: true },
];
for (const c of SGD_CASES) {
  t(`SGD momentum=${c.momentum} wd=${c.weightDecay} excludeBiasAndNorm=${c.exclude} matches float64 over 4 steps`, async () => {
    const S = setup(10);
    const r = rng(11);
    const opt = new SGD(S.arena, { lr: 0.1, momentum: c.momentum, weightDecay: c.weightDecay, excludeBiasAndNorm: c.exclude });
    const mu = c.momentum > 0 ? zerosLike(S.segs) : null;
    for (let step = 0; step < 4; step++) {
      setGrads(S, step, r);
      const d0 = recorderStats().dispatches;
      opt.step(LRS[step]);
      assert.is(recorderStats().dispatches - d0, 1, 'one dispatch per step');
      ref.sgd(S.segs, mu, { ...c, lr: LRS[step] });
      assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 2e-6, `weights after step ${step + 1}`);
    }
    if (mu) assertSegments(await stateOf(opt, 'momentum', S.arena), mu, S.arena, 2e-6, 'momentum buffer');
    assert.is(opt.steps, 4);
    assert.is(opt.lr, LRS[3]);
    opt.dispose();
    S.arena.dispose();
  });
}

const ADAM_CASES = [
  { weightDecay: 0, decoupled: false, exclude: false, betas: [0.9, 0.999] as [number, number] },
  { weightDecay: 1e-2, decoupled: false, exclude: false, betas: [0.8, 0.99] as [number, number] },
  { weightDecay: 0.1, decoupled: true, exclude: true, betas: [0.9, 0.999] as [number, number] },
];
for (const c of ADAM_CASES) {
  t(`Adam${c.decoupled ? 'W' : ''} betas=${c.betas} wd=${c.weightDecay} exclude=${c.exclude} matches float64 over 4 steps`, async () => {
    const S = setup(20);
    const r = rng(21);
    const opt = new Adam(S.arena, { lr: 1e-3, betas: c.betas, eps: 1e-8, weightDecay: c.weightDecay, decoupled: c.decoupled, excludeBiasAndNorm: c.exclude });
    const m = zerosLike(S.segs);
    const v = zerosLike(S.segs);
    for (let step = 0; step < 4; step++) {
      setGrads(S, step, r);
      const lr = LRS[step] * 1e-2;
      const d0 = recorderStats().dispatches;
      opt.step(lr);
      assert.is(recorderStats().dispatches - d0, 1, 'one dispatch per step');
      ref.adam(S.segs, m, v, step + 1, { lr, beta1: c.betas[0], beta2: c.betas[1], eps: 1e-8, weightDecay: c.weightDecay, decoupled: c.decoupled, exclude: c.exclude });
      assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 3e-6, `weights after step ${step + 1}`);
    }
    assertSegments(await stateOf(opt, 'exp_avg', S.arena), m, S.arena, 2e-6, 'first moment');
    assertSegments(await stateOf(opt, 'exp_avg_sq', S.arena), v, S.arena, 2e-6, 'second moment');
    opt.dispose();
    S.arena.dispose();
  });
}

const LARS_CASES = [
  { momentum: 0.9, weightDecay: 1.5e-6, eta: 1e-3 },
  { momentum: 0.9, weightDecay: 0.05, eta: 1e-3 },
  { momentum: 0.5, weightDecay: 0.1, eta: 0.3 },
];
for (const c of LARS_CASES) {
  t(`LARS momentum=${c.momentum} wd=${c.weightDecay} eta=${c.eta} matches BYOL's optax chain in float64 over 4 steps`, async () => {
    const S = setup(30);
    const r = rng(31);
    const opt = new LARS(S.arena, { lr: 0.2, ...c });
    const mu = zerosLike(S.segs);
    for (let step = 0; step < 4; step++) {
      setGrads(S, step, r);
      const d0 = recorderStats().dispatches;
      opt.step(LRS[step]);
      assert.is(recorderStats().dispatches - d0, 3, 'partial norms, ratios, update');
      const trust = ref.lars(S.segs, mu, { ...c, lr: LRS[step] });
      if (step === 0) {
        // ||w|| = 0 falls back to trust 1, and bias/norm segments are never adapted
        S.arena.segments.forEach((s, k) => {
          if (s.kind !== 'weight' || ZERO_INIT.has(s.name)) assert.is(trust[k], 1, s.name);
          else assert.ok(trust[k] !== 1, s.name);
        });
      }
      // mu carries the trust ratio directly (w moves by only ~eta·lr of itself per step)
      assertSegments(await stateOf(opt, 'momentum', S.arena), mu, S.arena, 2e-6, `momentum after step ${step + 1}`);
      assertSegments(await S.arena.read(), S.segs.map((s) => s.w), S.arena, 2e-6, `weights after step ${step + 1}`);
    }
    opt.dispose();
    S.arena.dispose();
  });
}

t('LARS first step by hand: bias/norm get plain g, weights get (g + wd·w)·eta·||w||/||g + wd·w||', async () => {
  const arena = new Arena([
    { name: 'w', shape: [2], kind: 'weight' },
    { name: 'b', shape: [2], kind: 'bias' },
    { name: 'n', shape: [2], kind: 'norm' },
    { name: 'z', shape: [2], kind: 'weight' },
  ]);
  arena.write(Float32Array.from([3, 4, 10, 10, 10, 10, 0, 0]));
  const g = [[0.5, -1], [1, 2], [-3, 4], [0.25, 0.5]];
  arena.params.forEach((p, k) => (p.grad = tensor(g[k])));
  const opt = new LARS(arena, { lr: 1, momentum: 0.9, weightDecay: 0.5, eta: 0.1 });
  opt.step();
  // w: u = g + 0.5 w = [2, 1]; ||w|| = 5, ||u|| = √5; trust = 0.1·5/√5 = √5/10; w - u·trust
  const tr = Math.sqrt(5) / 10;
  const want = [3 - 2 * tr, 4 - 1 * tr, 10 - 1, 10 - 2, 10 + 3, 10 - 4, -0.25, -0.5];
  const got = await arena.read();
  want.forEach((x, i) => assert.ok(Math.abs(got[i] - x) < 1e-6, `element ${i}: ${got[i]} vs ${x}`));
  opt.dispose();
  arena.dispose();
});

t('segmentNorms: per-parameter norms of weights and gathered gradients', async () => {
  const S = setup(40);
  setGrads(S, 0, rng(41));
  S.arena.gatherGrads();
  const norms = await segmentNorms(S.arena);
  norms.forEach((n, k) => {
    assert.is(n.name, SPECS[k].name);
    const wn = ref.norm(S.segs[k].w);
    const gn = ref.norm(S.segs[k].g);
    assert.ok(Math.abs(n.param - wn) <= 1e-6 * Math.max(1, wn), `${n.name} ||w|| ${n.param} vs ${wn}`);
    assert.ok(Math.abs(n.grad - gn) <= 1e-6 * Math.max(1, gn), `${n.name} ||g|| ${n.grad} vs ${gn}`);
  });
  S.arena.dispose();
});

t('optimizer state round trip: a restored optimizer continues identically', async () => {
  const A = setup(50);
  const B = setup(50);
  const a = new LARS(A.arena, { lr: 1, weightDecay: 0.01, eta: 0.1 });
  const b = new LARS(B.arena, { lr: 1, weightDecay: 0.01, eta: 0.1 });
  const rA = rng(51);
  setGrads(A, 0, rA);
  a.step();
  B.arena.copyFrom(A.arena);
  b.loadStateDict(await a.stateDict());
  assert.is(b.steps, 1);
  setGrads(A, 1, rng(52));
  setGrads(B, 1, rng(52));
  a.step(0.5);
  b.step(0.5);
  assert.equal(await B.arena.read(), await A.arena.read());
  const sd = await a.stateDict();
  sd.delete('momentum.w1');
  sd.set('extra', { shape: [1], data: new Float32Array(1) });
  throwsWith(() => b.loadStateDict(sd), 'LARS.loadStateDict', 'missing momentum.w1', 'unexpected extra');
  const bad = await a.stateDict();
  bad.set('momentum.b3', { shape: [4], data: new Float32Array(4) });
  throwsWith(() => b.loadStateDict(bad), "'momentum.b3'", '[4]', 'expected [3]');
  for (const x of [a, b]) x.dispose();
  A.arena.dispose();
  B.arena.dispose();
});

t('invalid options and disposed arenas are reported', () => {
  const arena = new Arena(SPECS);
  throwsWith(() => new SGD(arena, { lr: -1 }), 'SGD', 'lr', '-1');
  throwsWith(() => new SGD(arena, { lr: 0.1, momentum: 1 }), 'SGD', 'momentum', '[0, 1)');
  throwsWith(() => new Adam(arena, { lr: 0.1, eps: 0 }), 'Adam', 'eps');
  throwsWith(() => new Adam(arena, { lr: 0.1, betas: [0.9, 1] }), 'Adam', 'betas[1]');
  throwsWith(() => new LARS(arena, { lr: 0.1, eta: NaN }), 'LARS', 'eta');
  throwsWith(() => new LARS({ arena: null }, { lr: 0.1 }), 'LARS', 'materialize');
  const opt = new SGD(arena, { lr: 0.1 });
  throwsWith(() => opt.step(Infinity), 'SGD.step', 'lr');
  arena.dispose();
  throwsWith(() => opt.step(), 'disposed');
  opt.dispose();
});

t('20 training steps with LARS and EMA leak no buffers', async () => {
  const online = materialize(new Sequential(new Linear(6, 16), new ReLU(), new Linear(16, 4)), { seed: 1 });
  const target = materialize(new Sequential(new Linear(6, 16), new ReLU(), new Linear(16, 4)), { seed: 2 });
  target.arena!.copyFrom(online.arena!);
  const x = tensor(Float32Array.from({ length: 5 * 6 }, (_, i) => Math.sin(i)), [5, 6]);
  const opt = new LARS(online, { lr: 0.5, weightDecay: 1e-4 });
  const step = () => {
    tidy(() => {
      const z = noGrad(() => target.forward(x));
      backward(mean(mul(sub(online.forward(x), z), sub(online.forward(x), z))));
    });
    opt.step();
    emaUpdate(target.arena!, online.arena!, 0.99);
  };
  step();
  await sync();
  const live = liveTensors();
  const owned = arenaStats();
  for (let i = 0; i < 20; i++) step();
  await sync();
  assert.is(liveTensors(), live, 'pooled buffers');
  assert.equal(arenaStats(), owned, 'arena buffers');
  assert.is(tapeLength(), 0);
  assert.ok(target.parameters().every((p) => p.grad === null), 'the target got no gradients');
  const loss = noGrad(() => tidy(() => sum(online.forward(x))));
  assert.ok(Number.isFinite(await loss.item()));
  loss.dispose();
  for (const m of [online, target]) m.dispose();
  opt.dispose();
  x.dispose();
});

t.run();
