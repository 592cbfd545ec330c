import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { tensor, sum, mul, sub, mean, backward, tidy, liveTensors, sync, noGrad, tapeLength } from '../nn/index.ts';
import { Arena, arenaStats } from '../engine/arena.ts';
import { SGD, Adam, LARS, segmentNorms } from '../nn/optim.ts';
import { emaUpdate } from '../nn/ema.ts';
import { Linear, ReLU, Sequential, materialize } from '../nn/module.ts';
import { ref } from '../kernels/optim.ts';
import { rng, checkTests } from './helpers/gradcheck.ts';
import { optimChecks, optimSetup, setGrads, SPECS } from '../nn/checks/optim.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('optim');

// the SGD, Adam and LARS checks live in nn/checks/ so that the browser page runs the same checks
checkTests(optimChecks, t);

const setup = optimSetup;

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
