import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { Tensor, tensor, sub, mul, mean, add, backward, tidy, liveTensors, sync, noGrad, tapeLength } from '../nn/index.ts';
import { arenaStats } from '../engine/arena.ts';
import {
  Module, Linear, ReLU, Sequential, Flatten, Identity, materialize, init, torchStateDict, loadTorchStateDict,
  toTorchLayout, fromTorchLayout, type Parameter, type StateBuffer,
} from '../nn/module.ts';
import { SGD } from '../nn/optim.ts';
import { ref as mmRef } from '../kernels/matmul.ts';
import { assertClose, randArr, rng } from './helpers/gradcheck.ts';
import { throwsWith } from './helpers/errors.ts';

const t = suite('nn');

/** A norm-like layer for the buffer hook: gamma/beta parameters and a running mean updated in training. */
class ScaleShift extends Module {
  readonly gamma: Parameter;
  readonly beta: Parameter;
  readonly runningMean: StateBuffer;
  constructor(readonly c: number) {
    super();
    this.gamma = this.param('weight', [c], 'norm', init.ones());
    this.beta = this.param('bias', [c], 'norm', init.zeros());
    this.runningMean = this.buffer('running_mean', [c], 0);
  }
  forward(x: Tensor): Tensor {
    if (this.training) {
      const m = noGrad(() => mean(x, 0));
      this.runningMean.assign(noGrad(() => add(mul(this.runningMean.value, tensor(new Float32Array(this.c).fill(0.9))), mul(m, tensor(new Float32Array(this.c).fill(0.1))))));
      m.dispose();
    }
    return add(mul(x, this.gamma.value), this.beta.value);
  }
}

/** A layer with a conv-layout (HWIO) weight, as Conv2d will declare it. */
class ConvLike extends Module {
  readonly weight: Parameter;
  constructor() {
    super();
    this.weight = this.param('weight', [2, 3, 4, 5], 'weight', init.kaimingNormal(2 * 3 * 4), 'conv');
  }
  forward(x: Tensor): Tensor {
    return x;
  }
}

class Net extends Module {
  readonly body: Sequential;
  readonly norm: ScaleShift;
  readonly head: Linear;
  constructor() {
    super();
    this.body = this.child('body', new Sequential(new Linear(5, 8), new ReLU()));
    this.norm = this.child('norm', new ScaleShift(8));
    this.head = this.child('head', new Linear(8, 3, { bias: false }));
  }
  forward(x: Tensor): Tensor {
    const h = this.body.forward(x);
    const n = this.norm.forward(h);
    return this.head.forward(n);
  }
}

t('declaration: dotted names in PyTorch order, shapes, kinds; nothing on the GPU before materialize', () => {
  const before = liveTensors();
  const net = new Net();
  assert.equal(net.parameterSpecs().map(([n, p]) => [n, p.shape, p.kind]), [
    ['body.0.weight', [5, 8], 'weight'],
    ['body.0.bias', [8], 'bias'],
    ['norm.weight', [8], 'norm'],
    ['norm.bias', [8], 'norm'],
    ['head.weight', [8, 3], 'weight'],
  ]);
  assert.equal(net.bufferSpecs().map(([n]) => n), ['norm.running_mean']);
  assert.equal(net.namedModules().map(([n]) => n), ['', 'body', 'body.0', 'body.1', 'norm', 'head']);
  assert.is(net.children().length, 3);
  assert.is(net.numParameters(), 40 + 8 + 16 + 24);
  assert.is(liveTensors(), before);
  throwsWith(() => net.parameters(), "parameter 'weight' [5, 8] is not materialized", 'materialize(model');
});

t('materialize: one arena for the whole tree, views as parameters, buffers filled; dispose frees all', async () => {
  await sync();
  const live = liveTensors();
  const owned = arenaStats().buffers;
  const net = materialize(new Net(), { seed: 3 });
  assert.ok(net.arena);
  assert.is(net.arena!.segments.length, 5);
  assert.equal(net.parameters(), [...net.arena!.params]);
  assert.equal(net.namedParameters().map(([n]) => n), net.arena!.segments.map((s) => s.name));
  assert.equal([...(await net.norm.gamma.value.toArray())], new Array(8).fill(1));
  assert.equal([...(await net.norm.beta.value.toArray())], new Array(8).fill(0));
  assert.equal([...(await net.buffers()[0].toArray())], new Array(8).fill(0));
  assert.is(net.body.arena, null, 'only the root owns the arena');
  throwsWith(() => materialize(net), 'materialize', 'already materialized');
  throwsWith(() => materialize(net.head), 'already materialized');
  net.dispose();
  await sync();
  assert.is(liveTensors(), live);
  assert.is(arenaStats().buffers, owned);
  throwsWith(() => net.head.weight.value, "'weight'", 'disposed');
  // a disposed model can be materialized again (a new device after device loss) and reloaded
  const fresh = materialize(new Net(), { seed: 3 });
  const sd = await fresh.stateDict();
  materialize(net, { seed: 99 });
  net.loadStateDict(sd);
  assert.equal(await net.stateDict(), sd);
  net.dispose();
  fresh.dispose();
});

t('initialization: Kaiming normal weights, PyTorch-uniform biases, deterministic per seed and name', async () => {
  const a = materialize(new Linear(400, 300), { seed: 7 });
  const w = (await a.weight.value.toArray()) as Float32Array;
  let s = 0;
  let s2 = 0;
  for (const v of w) (s += v), (s2 += v * v);
  const m = s / w.length;
  const std = Math.sqrt(s2 / w.length - m * m);
  assert.ok(Math.abs(m) < 0.002, `mean ${m}`);
  assert.ok(Math.abs(std / Math.sqrt(2 / 400) - 1) < 0.01, `std ${std} vs ${Math.sqrt(2 / 400)}`);
  const b = (await a.bias!.value.toArray()) as Float32Array;
  const bound = 1 / 20;
  assert.ok(b.every((v) => Math.abs(v) <= bound), 'bias within ±1/√in');
  assert.ok(Math.max(...b.map(Math.abs)) > 0.9 * bound, 'bias spread over the range');
  const same = materialize(new Linear(400, 300), { seed: 7 });
  const other = materialize(new Linear(400, 300), { seed: 8 });
  assert.equal(await same.arena!.read(), await a.arena!.read(), 'same seed, same values');
  assert.not.equal(await other.arena!.read(), await a.arena!.read(), 'another seed, other values');
  const z = materialize(new Linear(4, 3, { biasInit: 'zeros' }));
  assert.equal([...(await z.bias!.value.toArray())], [0, 0, 0]);
  for (const x of [a, same, other, z]) x.dispose();
});

t('Linear forward matches float64 (2-D and batched 3-D input); bad inputs are named', async () => {
  const lin = materialize(new Linear(5, 3), { seed: 1 });
  const W = { data: Float64Array.from((await lin.weight.value.toArray()) as Float32Array), shape: [5, 3] };
  const bias = Float64Array.from((await lin.bias!.value.toArray()) as Float32Array);
  for (const shape of [[7, 5], [2, 4, 5]]) {
    const x = randArr(shape, rng(2));
    const want = mmRef.matmul(x, W);
    for (let i = 0; i < want.data.length; i++) want.data[i] += bias[i % 3];
    const xt = tensor(Float32Array.from(x.data), shape);
    const y = noGrad(() => tidy(() => lin.forward(xt)));
    assert.equal(y.shape, want.shape);
    assertClose(await y.toArray(), want.data, 1e-5, `Linear ${shape}`);
    y.dispose();
    xt.dispose();
  }
  const bad = tensor(new Float32Array(8), [2, 4]);
  throwsWith(() => lin.forward(bad), 'Linear(5→3)', '[2, 4]', '[N, 5]');
  bad.dispose();
  lin.dispose();
});

t('Flatten, Identity and Sequential', async () => {
  const x = tensor(Float32Array.from({ length: 24 }, (_, i) => i - 12), [2, 3, 4]);
  const f = new Flatten();
  const y = f.forward(x);
  assert.equal(y.shape, [2, 12]);
  assert.is(new Identity().forward(x), x);
  const s = materialize(new Sequential(new Flatten(), new ReLU(), new Identity()));
  assert.is(s.arena, null, 'no parameters, no arena');
  const z = noGrad(() => tidy(() => s.forward(x)));
  assert.equal([...(await z.toArray())], Array.from({ length: 24 }, (_, i) => Math.max(i - 12, 0)));
  for (const v of [x, y, z]) v.dispose();
});

t('a small MLP trained with SGD reduces its loss', async () => {
  const net = materialize(new Sequential(new Linear(5, 16), new ReLU(), new Linear(16, 3)), { seed: 4 });
  const r = rng(5);
  const x = tensor(Float32Array.from({ length: 32 * 5 }, () => r() * 2 - 1), [32, 5]);
  const y = tensor(Float32Array.from({ length: 32 * 3 }, (_, i) => Math.sin(i)), [32, 3]);
  const opt = new SGD(net, { lr: 0.1, momentum: 0.9 });
  const lossAt = async () => {
    const l = noGrad(() => tidy(() => {
      const d = sub(net.forward(x), y);
      return mean(mul(d, d));
    }));
    const v = await l.item();
    l.dispose();
    return v;
  };
  const first = await lossAt();
  for (let i = 0; i < 30; i++) {
    tidy(() => {
      const d = sub(net.forward(x), y);
      backward(mean(mul(d, d)));
    });
    opt.step();
  }
  const last = await lossAt();
  assert.ok(last < 0.5 * first, `loss ${first} → ${last}`);
  assert.is(tapeLength(), 0);
  assert.ok(net.parameters().every((p) => p.grad === null), 'step() consumed every gradient');
  for (const v of [x, y]) v.dispose();
  opt.dispose();
  net.dispose();
});

t('train()/eval() set the flag on the whole tree; buffers update in training only', async () => {
  const net = materialize(new Net(), { seed: 1 });
  const x = tensor(Float32Array.from({ length: 10 }, (_, i) => i / 10), [2, 5]);
  net.eval();
  assert.ok(net.namedModules().every(([, m]) => !m.training));
  noGrad(() => tidy(() => void net.forward(x)));
  assert.ok([...(await net.norm.runningMean.value.toArray())].every((v) => v === 0), 'eval leaves the running mean');
  net.train();
  assert.ok(net.namedModules().every(([, m]) => m.training));
  const live = liveTensors();
  noGrad(() => tidy(() => void net.forward(x)));
  assert.is(liveTensors(), live, 'the assigned buffer replaced the old one');
  assert.ok([...(await net.norm.runningMean.value.toArray())].some((v) => v !== 0), 'training moved the running mean');
  throwsWith(() => net.norm.runningMean.assign(x), "buffer 'running_mean'", '[2, 5]', 'expected f32 [8]');
  x.dispose();
  net.dispose();
});

t('stateDict round trip with buffers; one arena write', async () => {
  const a = materialize(new Net(), { seed: 1 });
  const b = materialize(new Net(), { seed: 2 });
  const x = tensor(Float32Array.from({ length: 10 }, (_, i) => i), [2, 5]);
  noGrad(() => tidy(() => void a.forward(x))); // moves a's running mean
  const sd = await a.stateDict();
  assert.equal([...sd.keys()], ['body.0.weight', 'body.0.bias', 'norm.weight', 'norm.bias', 'head.weight', 'norm.running_mean']);
  assert.equal(sd.get('head.weight')!.shape, [8, 3]);
  let writes = 0;
  const write = b.arena!.write.bind(b.arena!);
  b.arena!.write = (packed: Float32Array) => (writes++, write(packed));
  b.loadStateDict(sd);
  assert.is(writes, 1, 'one upload for the whole arena');
  const sb = await b.stateDict();
  for (const [n, e] of sd) assert.equal(sb.get(n), e, n);
  a.eval();
  b.eval();
  const ya = noGrad(() => tidy(() => a.forward(x)));
  const yb = noGrad(() => tidy(() => b.forward(x)));
  assert.equal(await yb.toArray(), await ya.toArray());
  // a child's state dict is relative to the child
  const head = await b.head.stateDict();
  assert.equal([...head.keys()], ['weight']);
  for (const v of [x, ya, yb]) v.dispose();
  a.dispose();
  b.dispose();
});

t('loadStateDict reports missing, unexpected and mis-shaped entries and writes nothing then', async () => {
  const net = materialize(new Net(), { seed: 1 });
  const good = await net.stateDict();
  const before = await net.arena!.read();
  const sd = new Map(good);
  sd.delete('norm.bias');
  sd.delete('norm.running_mean');
  sd.set('head.bias', { shape: [3], data: new Float32Array(3) });
  sd.set('body.0.weight', { shape: [8, 5], data: new Float32Array(40).fill(1) });
  throwsWith(() => net.loadStateDict(sd), 'Net.loadStateDict', "missing 2 entries: 'norm.bias', 'norm.running_mean'", "unexpected 1 entry: 'head.bias'",
    "'body.0.weight' has shape [8, 5] in the checkpoint but [5, 8] in the model (this is the PyTorch layout: use loadTorchStateDict)");
  assert.equal(await net.arena!.read(), before, 'nothing written');
  // non-strict: loads what matches, ignores the rest, but shapes must still agree
  const partial = new Map([['head.weight', { shape: [8, 3], data: new Float32Array(24).fill(2) }], ['junk', { shape: [1], data: new Float32Array(1) }]]);
  net.loadStateDict(partial, { strict: false });
  assert.ok([...(await net.head.weight.value.toArray())].every((v) => v === 2));
  assert.equal(await net.body.layers[0].parameters()[0].toArray(), good.get('body.0.weight')!.data, 'others unchanged');
  throwsWith(() => net.loadStateDict(new Map([['head.weight', { shape: [8, 3], data: new Float32Array(5) }]]), { strict: false }), "'head.weight' has 5 values");
  throwsWith(() => new Net().loadStateDict(good), 'not materialized');
  net.dispose();
});

t('PyTorch layouts: Linear [in, out] ↔ [out, in], conv HWIO ↔ OIHW', async () => {
  const net = materialize(new Net(), { seed: 9 });
  const sd = await net.stateDict();
  const torch = await torchStateDict(net);
  const w = sd.get('head.weight')!; // [8, 3]
  const tw = torch.get('head.weight')!; // [3, 8]
  assert.equal(tw.shape, [3, 8]);
  for (let i = 0; i < 8; i++) for (let o = 0; o < 3; o++) assert.is(tw.data[o * 8 + i], w.data[i * 3 + o]);
  assert.equal(torch.get('norm.weight'), sd.get('norm.weight'), 'plain parameters unchanged');
  const other = materialize(new Net(), { seed: 10 });
  loadTorchStateDict(other, torch);
  assert.equal(await other.arena!.read(), await net.arena!.read());
  throwsWith(() => loadTorchStateDict(other, new Map([['head.weight', { shape: [24], data: new Float32Array(24) }]])), 'loadTorchStateDict', "'head.weight'", '[3, 8]');

  const conv = new ConvLike();
  const [KH, KW, C, O] = conv.weight.shape;
  const hwio = { shape: [KH, KW, C, O], data: Float32Array.from({ length: KH * KW * C * O }, (_, i) => i) };
  const oihw = toTorchLayout(hwio, 'conv');
  assert.equal(oihw.shape, [O, C, KH, KW]);
  for (let h = 0; h < KH; h++) for (let x = 0; x < KW; x++) for (let c = 0; c < C; c++) for (let o = 0; o < O; o++) {
    assert.is(oihw.data[((o * C + c) * KH + h) * KW + x], hwio.data[((h * KW + x) * C + c) * O + o]);
  }
  assert.equal(fromTorchLayout(oihw, 'conv'), hwio);
  net.dispose();
  other.dispose();
});

t('declaration errors name the module and the problem', () => {
  class Bad extends Module {
    constructor(kind: number) {
      super();
      this.param('w', [2], 'weight', init.zeros());
      if (kind === 0) this.param('w', [3], 'weight', init.zeros());
      if (kind === 1) this.buffer('a.b', [1]);
      if (kind === 2) this.param('v', [0, 2], 'weight', init.zeros());
    }
    forward(x: Tensor) {
      return x;
    }
  }
  throwsWith(() => new Bad(0), 'Bad', "'w' is already declared");
  throwsWith(() => new Bad(1), 'Bad', "invalid name 'a.b'");
  throwsWith(() => new Bad(2), 'Bad', "parameter 'v'", '[0, 2]');
  throwsWith(() => new Linear(0, 3), 'Linear', 'in=0');
});

t.run();
